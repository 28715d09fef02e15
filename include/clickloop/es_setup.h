/* es_setup: the requests that put an index's mappings in place before
 * documents are written to it, and what each answer means. Pure: no I/O and
 * no clock; the sink (es_sink.h, cl_es_sink_ensure_index) sends the requests,
 * paces the retries and reports the outcome.
 *
 * For an index pattern with a date (%Y %m %d), one step: PUT
 * _index_template/<name> for every index the pattern names (es_doc.h:
 * cl_es_index_template_name/_pattern), with priority 501, above the built-in
 * templates, as Elastic advises for overlapping patterns. Without a date:
 * PUT <index> with the mappings; if the index exists already
 * (resource_already_exists_exception), PUT <index>/_mapping so that missing
 * fields are added and a conflicting mapping is reported; should the index
 * vanish meanwhile (index_not_found_exception), create it again. */
#ifndef CLICKLOOP_ES_SETUP_H
#define CLICKLOOP_ES_SETUP_H

#include <stddef.h>

#include "clickloop/buf.h"
#include "clickloop/common.h"
#include "clickloop/es_bulk.h"

typedef enum {
    CL_ES_SETUP_TEMPLATE,       /* PUT _index_template/<name> */
    CL_ES_SETUP_CREATE_INDEX,   /* PUT <index> */
    CL_ES_SETUP_UPDATE_MAPPING, /* PUT <index>/_mapping, after "already exists" */
} cl_es_setup_step_t;

/* Strings owned, freed by cl_es_setup_free. */
typedef struct cl_es_setup_s {
    cl_es_setup_step_t step;
    char *name;     /* the index or the template */
    char *pattern;  /* CL_ES_SETUP_TEMPLATE only: the wildcard pattern */
    char *mappings; /* JSON object text */
} cl_es_setup_t;

/* The first step for `index_pattern` (the configured index name) and its
 * `mappings_json` (e.g. cl_es_stats_mappings()). Fails, with a sentence in
 * err, for an empty or too long name or mappings that are not one JSON
 * object. */
int cl_es_setup_init(cl_es_setup_t *setup, const char *index_pattern, const char *mappings_json,
                     char err[CL_ERR_LEN]);
void cl_es_setup_free(cl_es_setup_t *setup);

/* The request of the current step, always a PUT: appends its path (from the
 * node's base URL, starting with '/', names percent-encoded) and its JSON
 * body. */
void cl_es_setup_request(const cl_es_setup_t *setup, cl_buf_t *path, cl_buf_t *body);

/* The current step for messages: "index template <name>", "create index
 * <name>" or "mapping of index <name>". */
void cl_es_setup_describe(const cl_es_setup_t *setup, char *out, size_t size);

typedef enum {
    CL_ES_SETUP_DONE,    /* the mappings are in place */
    CL_ES_SETUP_NEXT,    /* the answer calls for another step: send it now */
    CL_ES_SETUP_REFUSED, /* the cluster refused them (a conflicting mapping...) */
    CL_ES_SETUP_RETRY,   /* transient: the same step again after a backoff */
} cl_es_setup_verdict_t;

/* What the classified answer `r` to the current step means; moves to the
 * next step for CL_ES_SETUP_NEXT. */
cl_es_setup_verdict_t cl_es_setup_answer(cl_es_setup_t *setup, const cl_es_request_result_t *r);

#endif

/* es_bulk: the Elasticsearch / OpenSearch `_bulk` protocol, without I/O.
 *
 * - The NDJSON builder frames documents as `index` actions, within a limit of
 *   documents and bytes per request.
 * - The response classifiers decide, in one place, what every HTTP answer
 *   means: each document ends up OK, SUPERSEDED, RETRY or DROP, and a request
 *   refused as a whole is retried, split or dropped.
 * - The retry policy gives the backoff delay.
 *
 * The sink (es_sink.h) does the I/O; unit tests and fuzzers call these
 * directly. Everything here works with Elasticsearch 7.10 - 9 and OpenSearch
 * 1 - 3: only the `index` action, `version_type=external_gte` and
 * `filter_path` are used, which all of them share. */
#ifndef CLICKLOOP_ES_BULK_H
#define CLICKLOOP_ES_BULK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "clickloop/buf.h"
#include "clickloop/common.h"

/* OpenSearch refuses longer `_id`s (Elasticsearch refuses the whole request). */
#define CL_ES_ID_MAX_LEN 512
/* Elasticsearch's limit on index names, in bytes. */
#define CL_ES_INDEX_MAX_LEN 255

/* The query string the sink sends with every `_bulk` request: the response
 * then carries only what the classifier reads (smaller and faster to parse
 * than the full answer with _index, _id, _shards, _seq_no per item). */
#define CL_ES_BULK_FILTER_PATH "filter_path=errors,items.*.status,items.*.error"

/* Append `len` bytes as a JSON string literal, quotes included: `"` and `\`
 * are escaped, control characters (below 0x20, and 0x7f) become \n, \r, \t or
 * \u00XX; other bytes (UTF-8) are copied. */
void cl_es_json_append_string(cl_buf_t *out, const char *s, size_t len);

/* ---- Building a request body ---------------------------------------------- */

/* One document of a bulk request. `source` is one JSON object (built so by
 * construction, es_doc.h; it is not parsed again); its newlines, which in valid JSON
 * can only be whitespace between tokens, are written as spaces so that the
 * NDJSON framing holds. version 0 means none; otherwise the action carries
 * `"version":N,"version_type":"external_gte"` and the cluster keeps whichever
 * copy has the highest version, whatever order the copies arrive in. */
typedef struct cl_es_bulk_doc_s {
    const char *index;
    size_t index_len;
    const char *id;
    size_t id_len;
    const char *source;
    size_t source_len;
    uint64_t version;
} cl_es_bulk_doc_t;

/* A request body under construction: `{"index":{...}}\n<source>\n` per
 * document, every line ending in "\n" including the last. Whoever ends up
 * with `body` (the request that sends it) frees it with cl_buf_free. */
typedef struct cl_es_bulk_s {
    cl_buf_t body;
    size_t docs;
    size_t max_docs;  /* 0: no limit */
    size_t max_bytes; /* 0: no limit */
} cl_es_bulk_t;

void cl_es_bulk_init(cl_es_bulk_t *bulk, size_t max_docs, size_t max_bytes);

/* Append one document if it fits: returns true, or false (the body is left
 * exactly as it was) when the body already holds max_docs documents or the
 * document would take it past max_bytes. The first document always fits, so
 * a document larger than max_bytes travels alone. */
bool cl_es_bulk_add(cl_es_bulk_t *bulk, const cl_es_bulk_doc_t *doc);

/* For JSON that no builder here made (the index mappings at setup) and for
 * the tests of every builder; not for documents on their way out, which are
 * correct by construction. Check that `len` bytes are exactly one JSON object in well-formed UTF-8,
 * whitespace around it allowed: two objects or a stray action would shift
 * the framing of every following document. The JSON check is json-c's
 * (JSON_TOKENER_STRICT), which still lets a few non-RFC 8259 forms through
 * (NaN, single-quoted names); the cluster refuses those for that document
 * alone. Returns 0 or CL_ERR with a sentence in err. */
int cl_es_source_check(const char *source, size_t len, char err[CL_ERR_LEN]);

/* ---- Classifying answers ---------------------------------------------------- */

/* What happens to a request (or to a bulk request as a whole). */
typedef enum {
    CL_ES_REQUEST_OK = 0,  /* 2xx: read the body */
    CL_ES_REQUEST_RETRY,   /* transient: send it again after a backoff */
    CL_ES_REQUEST_REFUSED, /* the cluster refused this content (400, 409, 413, 422...) */
} cl_es_request_outcome_t;

typedef struct cl_es_request_result_s {
    cl_es_request_outcome_t outcome;
    /* Mark the node down for a while: it answered 5xx (or, for transport
     * failures, did not answer; the sink sets this itself then). */
    bool node_failed;
    /* Only an operator can fix it (401/403/407 credentials or privileges,
     * 404/405/1xx/3xx: the URL does not lead to a cluster). Still retried, at
     * the longest backoff, so that a fixed configuration heals by itself. */
    bool needs_operator;
    long http_status;
    /* The cluster's error type (e.g. "resource_already_exists_exception"),
     * "" when the body carries none. */
    char error_type[128];
    /* A sentence: "HTTP 429: es_rejected_execution_exception: rejected
     * execution of ...". */
    char reason[CL_ERR_LEN];
} cl_es_request_result_t;

/* Classify a complete HTTP answer to any request by its status and, for the
 * reason, the `{"error":{"type","reason"},"status"}` body that Elasticsearch
 * and OpenSearch send with errors (any other body is quoted, shortened).
 *   2xx                       OK
 *   408, 429                  RETRY
 *   5xx                       RETRY, node_failed
 *   401, 403, 404, 405, 407,
 *   1xx, 3xx, other non-4xx   RETRY, needs_operator
 *   other 4xx                 REFUSED */
void cl_es_classify_response(long http_status, const char *body, size_t len,
                             cl_es_request_result_t *out);

/* What happens to one document of a bulk request. */
typedef enum {
    CL_ES_ITEM_OK = 0,     /* 2xx: indexed */
    CL_ES_ITEM_SUPERSEDED, /* 409 version_conflict_engine_exception: the index
                            * holds this document at a higher version already */
    CL_ES_ITEM_RETRY,      /* 429, 5xx, 401/403 (privileges), and any
                            * cluster_block_exception (read-only index, disk
                            * flood stage): send it again after a backoff */
    CL_ES_ITEM_DROP,       /* other 4xx (mapping conflicts, invalid index
                            * name...): it cannot be indexed as it is */
} cl_es_item_outcome_t;

typedef struct cl_es_item_result_s {
    cl_es_item_outcome_t outcome;
    int status;   /* the item's HTTP status */
    char *reason; /* NULL when OK; else "HTTP 400: <type>: <reason> (caused by
                     <type>: <reason>)", owned by the bulk result */
} cl_es_item_result_t;

/* What happens to a bulk request as a whole. */
typedef enum {
    CL_ES_BULK_ITEMS = 0, /* see items[], one per document in request order */
    CL_ES_BULK_RETRY,     /* send every document again after a backoff */
    CL_ES_BULK_SPLIT,     /* refused as a whole (400, 413...) with several
                           * documents: send them again in halves, so that
                           * the document at fault ends up alone */
    CL_ES_BULK_DROP,      /* refused as a whole with one document: it fails */
} cl_es_bulk_outcome_t;

typedef struct cl_es_bulk_result_s {
    cl_es_bulk_outcome_t outcome;
    cl_es_request_result_t request; /* the request-level classification */
    cl_es_item_result_t *items;     /* CL_ES_BULK_ITEMS only */
    size_t item_count;
    size_t ok, superseded, retry, drop; /* counts over items[] */
} cl_es_bulk_result_t;

/* Classify the answer to a bulk request of `doc_count` documents. A 2xx body
 * is trusted only if it parses and holds exactly doc_count items, each with
 * a status: otherwise nobody knows which documents were indexed, and the
 * whole request is retried (ids are deterministic, so resending an indexed
 * document is harmless). Every item's status is checked whatever `errors`
 * says. Free the result with cl_es_bulk_result_free(). */
void cl_es_bulk_parse(long http_status, const char *body, size_t len, size_t doc_count,
                      cl_es_bulk_result_t *out);
void cl_es_bulk_result_free(cl_es_bulk_result_t *result);

/* Retry delays: cl_backoff_ms() (common.h). */

#endif

/* es_sink: indexes documents into Elasticsearch / OpenSearch with `_bulk`
 * requests, on the libuv loop, never blocking it.
 *
 * libcurl's multi interface is driven by the loop (curl_uv.h). Submitted
 * documents are copied and
 * queued; up to max_in_flight bulk requests of at most bulk_max_docs
 * documents and bulk_max_bytes bytes run at once, spread round robin over the
 * nodes (es_nodes.h). Every answer is classified by es_bulk.h, and every
 * accepted document ends in exactly one call of the document callback:
 *   INDEXED     the cluster stored it (2xx);
 *   SUPERSEDED  the cluster holds it at a higher version already;
 *   FAILED      it can never be indexed as it is (mapping conflict...), with
 *               the cluster's reason;
 *   CANCELLED   the sink was closed first.
 * Temporary failures (transport errors, timeouts, HTTP 429 and 5xx, for one
 * document or the whole request) are retried with exponential backoff and
 * jitter, forever: while the cluster is down documents wait, so the caller
 * bounds what it submits (cl_es_sink_pending()). A request whose node failed
 * (no answer, timeout, 5xx) goes at once to another node that is not marked
 * down, and waits for the backoff only when none is left. Only the documents
 * that failed are sent again; a request refused as a whole (HTTP 400/413) is
 * split in halves until the document at fault is alone.
 *
 * Ordering: a retried copy of a document may arrive after a newer copy
 * submitted later. Give documents that change over time a `version` that
 * grows with every change (a revision counter, or the update time in ms if
 * the clock never steps back): the cluster then keeps the highest version
 * whatever the arrival order (external_gte versioning).
 *
 * Callbacks never run inside the call that started the operation; they run
 * from the loop. If a call that takes a callback fails, the callback never
 * runs (the libuv convention).
 *
 * The sink logs its own request failures under the module "elasticsearch",
 * once per change of a node's state: "<request> on <node> failed: <why>
 * (HTTP <status>)[, node marked down]; retrying in <ms> ms" at warn (at error
 * when the cluster refused the content or an operator must act: credentials,
 * privileges, certificates, a URL that leads elsewhere); the same failure
 * again on the same node at debug; "<node> answers again" at info.
 * Credentials never appear in messages; a URL's user-info part is shown as
 * "***".
 *
 * The process calls curl_global_init(CURL_GLOBAL_DEFAULT) before creating a
 * sink and curl_global_cleanup() after the loop has closed (main's job). */
#ifndef CLICKLOOP_ES_SINK_H
#define CLICKLOOP_ES_SINK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "clickloop/common.h"
#include "clickloop/config.h"

typedef struct cl_es_sink_s cl_es_sink_t;

/* Strings are copied; the caller may free them after cl_es_sink_new(). */
typedef struct cl_es_sink_params_s {
    const char *const *urls; /* http:// or https:// base URLs, no trailing '/' */
    size_t url_count;
    const char *username; /* basic authentication, or NULL */
    const char *password;
    const char *api_key; /* "Authorization: ApiKey <key>", or NULL */
    const char *ca_file; /* NULL: the system's CA store */
    bool verify_tls;     /* verify certificate and host name */
    uint32_t bulk_max_docs;
    uint64_t bulk_max_bytes;
    uint32_t max_in_flight;      /* bulk requests at once */
    uint64_t request_timeout_ms; /* whole request; connecting gets min(this, 10 s) */
    uint64_t retry_min_backoff_ms;
    uint64_t retry_max_backoff_ms;
    uint64_t node_down_for_ms;
} cl_es_sink_params_t;

/* Parameters from the configuration's elasticsearch section; the strings
 * stay owned by `es`, which must outlive the call to cl_es_sink_new(). */
void cl_es_sink_params_from_config(const cl_config_elasticsearch_t *es, cl_es_sink_params_t *out);

/* Check params; fills err with a sentence naming the field. */
int cl_es_sink_params_validate(const cl_es_sink_params_t *params, char err[CL_ERR_LEN]);

typedef enum {
    CL_ES_DOC_INDEXED = 0,
    CL_ES_DOC_SUPERSEDED,
    CL_ES_DOC_FAILED,
    CL_ES_DOC_CANCELLED,
} cl_es_doc_outcome_t;

/* Called once per accepted document. reason is NULL for INDEXED, else a
 * sentence valid during the call only (for FAILED the cluster's error type
 * and reason, e.g. "HTTP 400: mapper_parsing_exception: failed to parse
 * field [clicks] of type [long] ..."). The callback may submit, and may
 * close the sink. */
typedef void (*cl_es_doc_cb)(void *arg, uint64_t tag, cl_es_doc_outcome_t outcome,
                             const char *reason);

/* Create a sink; no request is made until documents are submitted. */
int cl_es_sink_new(uv_loop_t *loop, const cl_es_sink_params_t *params, cl_es_doc_cb doc_cb,
                   void *doc_arg, cl_es_sink_t **out, char err[CL_ERR_LEN]);

/* One document to index (with the `index` action: it replaces a document of
 * the same id). Everything is copied by cl_es_sink_submit(). */
typedef struct cl_es_doc_s {
    const char *index;  /* 1 - 255 bytes, e.g. from cl_es_index_name() */
    const char *id;     /* 1 - 512 bytes, e.g. from cl_es_doc_id() */
    const char *source; /* one JSON object, e.g. from cl_es_stats_source() */
    size_t source_len;
    uint64_t version; /* 0: none; else 1 - 2^63-1, see "Ordering" above */
    uint64_t tag;     /* handed back to the document callback */
} cl_es_doc_t;

/* Queue n documents. All or nothing: when one is invalid (index or id empty
 * or too long or not UTF-8, source empty, version too large) or the sink is
 * closing, none is queued, CL_ERR is returned, err names the document, and
 * no callback runs for any of them. The source is not parsed: it must be one
 * JSON object by construction (cl_es_stats_source, whose unit tests check
 * it); one that is not fails at the cluster, that document alone. Requests start
 * on the next loop iteration, so documents submitted in one go share
 * requests. */
int cl_es_sink_submit(cl_es_sink_t *sink, const cl_es_doc_t *docs, size_t n, char err[CL_ERR_LEN]);

/* Documents accepted and not yet reported: queued, in flight, or waiting for
 * a retry. */
size_t cl_es_sink_pending(const cl_es_sink_t *sink);

/* Called once with 0 when the index or template is in place, CL_ERR with a
 * message when the cluster refused it (e.g. a mapping that conflicts with an
 * existing index), or CL_ERR_RETRY when the sink closed first. */
typedef void (*cl_es_ensure_cb)(void *arg, int status, const char *message);

/* Make sure documents written to `index_pattern` (the configured index name)
 * get `mappings_json` (e.g. cl_es_stats_mappings()), with the requests of
 * es_setup.h: an index template for a pattern with a date (indices created
 * before keep their mapping), else the index itself, or its mapping if it
 * exists already. Transient failures are retried with backoff until the
 * cluster answers. Call it before submitting documents for that index:
 * otherwise the first document may create the index with a guessed (dynamic)
 * mapping. Fails at once (err says why) for an empty or too long name or
 * mappings that are not one JSON object. */
int cl_es_sink_ensure_index(cl_es_sink_t *sink, const char *index_pattern,
                            const char *mappings_json, cl_es_ensure_cb cb, void *arg,
                            char err[CL_ERR_LEN]);

typedef struct cl_es_sink_stats_s {
    uint64_t requests;         /* bulk requests completed, any outcome */
    uint64_t request_failures; /* bulk requests that failed as a whole */
    uint64_t bytes_sent;       /* bulk request bodies */
    uint64_t docs_submitted;
    uint64_t docs_indexed;
    uint64_t docs_superseded;
    uint64_t docs_retried; /* retries, counted per document and attempt */
    uint64_t docs_failed;
    uint64_t docs_cancelled;
    uint64_t node_failures; /* times a node was marked down */
    size_t docs_pending;
    size_t requests_in_flight; /* bulk and index setup */
    size_t nodes_up;
} cl_es_sink_stats_t;

void cl_es_sink_stats(const cl_es_sink_t *sink, cl_es_sink_stats_t *out);

/* Close: requests in flight are aborted and every document not yet reported
 * is reported CANCELLED (pending index setups get CL_ERR_RETRY), then the
 * handles close, the sink is freed, and cb runs. Whatever the cluster stored
 * of the aborted requests stays stored; the caller sends the cancelled
 * documents again after a restart (ids are deterministic). To drain instead,
 * wait until cl_es_sink_pending() is 0 before closing. Returns CL_ERR if the
 * sink is already closing. */
int cl_es_sink_close(cl_es_sink_t *sink, cl_close_cb cb, void *arg);

#endif

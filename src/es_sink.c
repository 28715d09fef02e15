/* es_sink: `_bulk` indexing over libcurl's multi interface on the libuv loop;
 * see include/clickloop/es_sink.h.
 *
 * Why this file is over 1 000 lines: it holds one concern, the life of a
 * submitted document until its outcome (requests, retries and splits, node
 * failover, cancellation on close), and that does not divide further without
 * spreading the sink's state over files. What is not that concern lives
 * apart: curl_uv.c runs libcurl on the loop, es_setup.c decides the index
 * setup requests, es_bulk.c builds NDJSON and reads the answers, es_nodes.c
 * picks the node.
 *
 * Who runs what:
 * - libcurl runs on the loop through curl_uv.h, which calls on_request_done
 *   for every transfer that ends.
 * - The wake timer runs everything the sink decides itself: starting requests
 *   after a submit (so documents submitted in one loop iteration share
 *   requests), retries whose backoff has passed, and the shutdown.
 *
 * Rules this file keeps, with the library quirks behind them:
 * - CURLOPT_POSTFIELDS does not copy: each request owns its body until its
 *   transfer is done. An empty "Expect:" header stops libcurl from waiting
 *   for a "100 Continue" on large bodies.
 *
 * Logging: the sink logs a request that failed as a whole under the module
 * "elasticsearch", once per change of a node's state: the first failure of a
 * kind at warn (error when an operator must act), the same failure again on
 * the same node at debug, and the node answering again at info. */
#include "clickloop/es_sink.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clickloop/buf.h"
#include "clickloop/curl_uv.h"
#include "clickloop/es_bulk.h"
#include "clickloop/es_doc.h"
#include "clickloop/es_nodes.h"
#include "clickloop/es_setup.h"
#include "clickloop/log.h"
#include "clickloop/utf8.h"

#define LOG_MODULE "elasticsearch"

/* Connecting never gets longer than this, whatever request_timeout says: a
 * node that does not accept a TCP connection in 10 s is down. */
#define CONNECT_TIMEOUT_MAX_MS 10000
/* Backoff attempt used when an operator must act: the longest backoff. */
#define OPERATOR_ATTEMPT 64
/* Response bodies kept in memory: a base plus 8 KiB per document (error
 * reasons quote field values). Larger answers split the request. */
#define RESPONSE_BASE_MAX (16u << 20)
#define RESPONSE_PER_DOC_MAX 8192u

/* ---- Types ---------------------------------------------------------------------------------- */

/* One accepted document; its strings live in the same allocation. */
typedef struct es_entry_s {
    struct es_entry_s *next;
    uint64_t tag;
    uint64_t version;
    char *index;
    size_t index_len;
    char *id;
    size_t id_len;
    char *source;
    size_t source_len;
    unsigned int attempts; /* failed sends so far */
    size_t batch_cap;      /* 0, or the most documents per request after a split */
} es_entry_t;

typedef struct entry_list_s {
    es_entry_t *head, *tail;
    size_t count;
} entry_list_t;

/* Documents that failed together and are due again together. */
typedef struct retry_group_s {
    struct retry_group_s *next; /* by due_ms */
    uint64_t due_ms;
    entry_list_t docs;
} retry_group_t;

/* An index setup (es_setup.h) waiting for its next request or in flight. */
typedef struct ensure_op_s {
    struct ensure_op_s *next; /* waiting list */
    cl_es_setup_t setup;
    unsigned int attempts; /* of the current step */
    uint64_t due_ms;
    cl_es_ensure_cb cb;
    void *arg;
} ensure_op_t;

typedef enum {
    REQUEST_BULK,
    REQUEST_ENSURE,
} request_kind_t;

typedef struct es_request_s {
    struct es_request_s *prev, *next; /* in flight */
    cl_es_sink_t *sink;
    request_kind_t kind;
    CURL *easy;
    size_t node;
    cl_buf_t body; /* alive until the transfer is done: POSTFIELDS does not copy */
    cl_buf_t response;
    size_t response_max;
    bool response_too_large;
    char curl_error[CURL_ERROR_SIZE];
    entry_list_t docs;   /* REQUEST_BULK, in request order */
    ensure_op_t *ensure; /* REQUEST_ENSURE */
} es_request_t;

/* What was last logged about a node: a failure, so that the same failure
 * again is a retry (debug), not news. */
typedef struct node_log_s {
    bool failing;
    int status;       /* CL_ERR or CL_ERR_RETRY */
    long http_status; /* 0 when no answer arrived */
} node_log_t;

typedef enum {
    SINK_OPEN,
    SINK_CLOSING, /* cl_es_sink_close() called; the wake timer shuts down */
    SINK_CLOSED,  /* transfers aborted, handles closing; freed by the last close callback */
} sink_state_t;

struct cl_es_sink_s {
    uv_loop_t *loop;
    sink_state_t state;
    cl_curl_uv_t *curl;
    uv_timer_t wake_timer;     /* starting requests, retries, shutdown */
    bool kick;                 /* wake on the next loop iteration */
    unsigned int open_handles; /* the wake timer and curl, until they are closed */

    char **urls;
    char **display_urls; /* without user-info, for messages */
    size_t url_count;
    char *username;
    char *password;
    char *ca_file;
    bool verify_tls;
    struct curl_slist *bulk_headers;
    struct curl_slist *json_headers;
    size_t bulk_max_docs;
    size_t bulk_max_bytes;
    size_t max_in_flight;
    uint64_t request_timeout_ms;
    uint64_t connect_timeout_ms;
    uint64_t retry_min_backoff_ms;
    uint64_t retry_max_backoff_ms;
    cl_es_nodes_t nodes;
    node_log_t *node_logs; /* per node */

    entry_list_t ready;
    retry_group_t *retries;
    ensure_op_t *ensure_waiting;
    es_request_t *in_flight;
    size_t bulk_in_flight;
    size_t pending;
    cl_es_sink_stats_t stats;
    uint64_t rng;

    cl_es_doc_cb doc_cb;
    void *doc_arg;
    cl_close_cb close_cb;
    void *close_arg;
};

static void sink_arm_wake(cl_es_sink_t *s);
static void sink_dispatch(cl_es_sink_t *s);

/* ---- Small helpers -------------------------------------------------------------------------- */

static void entry_list_push(entry_list_t *l, es_entry_t *e)
{
    e->next = NULL;
    if (l->tail != NULL)
        l->tail->next = e;
    else
        l->head = e;
    l->tail = e;
    l->count++;
}

static es_entry_t *entry_list_pop(entry_list_t *l)
{
    es_entry_t *e = l->head;
    if (e == NULL)
        return NULL;
    l->head = e->next;
    if (l->head == NULL)
        l->tail = NULL;
    l->count--;
    e->next = NULL;
    return e;
}

/* Put `front` (emptied) before the entries of l. */
static void entry_list_prepend(entry_list_t *l, entry_list_t *front)
{
    if (front->head == NULL)
        return;
    front->tail->next = l->head;
    if (l->tail == NULL)
        l->tail = front->tail;
    l->head = front->head;
    l->count += front->count;
    *front = (entry_list_t){0};
}

static void entry_list_append(entry_list_t *l, entry_list_t *back)
{
    if (back->head == NULL)
        return;
    if (l->tail != NULL)
        l->tail->next = back->head;
    else
        l->head = back->head;
    l->tail = back->tail;
    l->count += back->count;
    *back = (entry_list_t){0};
}

static uint32_t sink_random(cl_es_sink_t *s)
{
    /* xorshift64*: jitter only, not security. */
    uint64_t x = s->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    s->rng = x;
    return (uint32_t)((x * 0x2545F4914F6CDD1DULL) >> 32);
}

static size_t min_size(size_t a, size_t b)
{
    return a < b ? a : b;
}

/* The URL with its user-info part (user:password@) replaced by "***". */
static char *display_url(const char *url)
{
    const char *scheme_end = strstr(url, "://");
    const char *host = scheme_end != NULL ? scheme_end + 3 : url;
    const char *at = strchr(host, '@');
    const char *slash = strchr(host, '/');
    if (at == NULL || (slash != NULL && slash < at))
        return cl_xstrdup(url);
    cl_buf_t b;
    cl_buf_init(&b);
    cl_buf_append(&b, url, (size_t)(host - url));
    cl_buf_append_str(&b, "***");
    cl_buf_append_str(&b, at);
    return cl_buf_steal(&b, NULL);
}

static void free_secret(char *s)
{
    if (s == NULL)
        return;
    explicit_bzero(s, strlen(s));
    free(s);
}

static void free_headers(struct curl_slist *list)
{
    /* The Authorization line holds the API key. */
    for (struct curl_slist *h = list; h != NULL; h = h->next)
        explicit_bzero(h->data, strlen(h->data));
    curl_slist_free_all(list);
}

static struct curl_slist *append_header(struct curl_slist *list, const char *line)
{
    struct curl_slist *next = curl_slist_append(list, line);
    if (next == NULL)
        cl_panic("out of memory building HTTP headers");
    return next;
}

/* ---- Parameters ----------------------------------------------------------------------------- */

void cl_es_sink_params_from_config(const cl_config_elasticsearch_t *es, cl_es_sink_params_t *out)
{
    memset(out, 0, sizeof *out);
    out->urls = (const char *const *)es->urls;
    out->url_count = es->url_count;
    out->username = es->username;
    out->password = es->password;
    out->api_key = es->api_key;
    out->ca_file = es->ca_file;
    out->verify_tls = es->verify_tls;
    out->bulk_max_docs = es->bulk_max_docs;
    out->bulk_max_bytes = es->bulk_max_bytes;
    out->max_in_flight = es->max_in_flight;
    out->request_timeout_ms = es->request_timeout_ms;
    out->retry_min_backoff_ms = es->retry_min_backoff_ms;
    out->retry_max_backoff_ms = es->retry_max_backoff_ms;
    out->node_down_for_ms = es->node_down_for_ms;
}

int cl_es_sink_params_validate(const cl_es_sink_params_t *p, char err[CL_ERR_LEN])
{
    if (p->url_count == 0 || p->urls == NULL)
        return cl_errorf(err, "elasticsearch: at least one node URL is needed");
    for (size_t i = 0; i < p->url_count; i++) {
        const char *u = p->urls[i];
        if (u == NULL || (strncmp(u, "http://", 7) != 0 && strncmp(u, "https://", 8) != 0))
            return cl_errorf(err,
                             "elasticsearch: node URL %zu must start with http:// or "
                             "https://",
                             i + 1);
    }
    if ((p->username == NULL) != (p->password == NULL))
        return cl_errorf(err, "elasticsearch: username and password go together");
    if (p->api_key != NULL && p->username != NULL)
        return cl_errorf(err, "elasticsearch: use either an API key or a username and "
                              "password, not both");
    if (p->bulk_max_docs == 0 || p->bulk_max_bytes == 0 || p->max_in_flight == 0)
        return cl_errorf(err, "elasticsearch: bulk_max_docs, bulk_max_bytes and max_in_flight "
                              "must be at least 1");
    if (p->request_timeout_ms == 0 || p->node_down_for_ms == 0)
        return cl_errorf(err, "elasticsearch: request_timeout and node_down_for must be set");
    if (p->retry_min_backoff_ms == 0 || p->retry_max_backoff_ms < p->retry_min_backoff_ms)
        return cl_errorf(err,
                         "elasticsearch: need 0 < retry_min_backoff (%llu ms) <= "
                         "retry_max_backoff (%llu ms)",
                         (unsigned long long)p->retry_min_backoff_ms,
                         (unsigned long long)p->retry_max_backoff_ms);
    return CL_OK;
}

/* ---- Requests ------------------------------------------------------------------------------- */

static size_t on_response_data(char *data, size_t size, size_t nmemb, void *userp)
{
    es_request_t *req = userp;
    size_t len = size * nmemb;
    if (req->response.len + len > req->response_max) {
        req->response_too_large = true;
        return 0; /* libcurl ends the transfer with CURLE_WRITE_ERROR */
    }
    cl_buf_append(&req->response, data, len);
    return len;
}

static es_request_t *request_new(cl_es_sink_t *s, request_kind_t kind)
{
    es_request_t *req = cl_xcalloc(1, sizeof *req);
    req->sink = s;
    req->kind = kind;
    cl_buf_init(&req->body);
    cl_buf_init(&req->response);
    req->node = cl_es_nodes_pick(&s->nodes, uv_now(s->loop));
    return req;
}

static void request_free(es_request_t *req)
{
    cl_buf_free(&req->body);
    cl_buf_free(&req->response);
    free(req);
}

static void on_request_done(CURL *easy, CURLcode rc, void *arg);

/* Start a transfer: `method` to the request's node + `path`, with req->body. */
static void request_send(cl_es_sink_t *s, es_request_t *req, const char *method, const char *path,
                         struct curl_slist *headers)
{
    cl_buf_t url;
    cl_buf_init(&url);
    cl_buf_append_str(&url, s->urls[req->node]);
    cl_buf_append_str(&url, path);

    CURL *e = curl_easy_init();
    if (e == NULL)
        cl_panic("out of memory creating a libcurl handle");
    req->easy = e;
    req->response_max = RESPONSE_BASE_MAX + RESPONSE_PER_DOC_MAX * req->docs.count;
    curl_easy_setopt(e, CURLOPT_URL, url.data); /* copied by libcurl */
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, req->body.data);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body.len);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_response_data);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, req);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, req->curl_error);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)s->request_timeout_ms);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)s->connect_timeout_ms);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    if (s->username != NULL) {
        curl_easy_setopt(e, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
        curl_easy_setopt(e, CURLOPT_USERNAME, s->username);
        curl_easy_setopt(e, CURLOPT_PASSWORD, s->password);
    }
    if (s->ca_file != NULL)
        curl_easy_setopt(e, CURLOPT_CAINFO, s->ca_file);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, s->verify_tls ? 1L : 0L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, s->verify_tls ? 2L : 0L);
    cl_buf_free(&url);

    cl_curl_uv_add(s->curl, e, on_request_done, req);
    CL_DLIST_PUSH(s->in_flight, req);
    s->stats.requests_in_flight++;
}

/* A transfer that ended (or was aborted): out of the in-flight list. */
static void request_detach(cl_es_sink_t *s, es_request_t *req)
{
    curl_easy_cleanup(req->easy);
    req->easy = NULL;
    CL_DLIST_UNLINK(s->in_flight, req);
    s->stats.requests_in_flight--;
    if (req->kind == REQUEST_BULK)
        s->bulk_in_flight--;
}

/* A transfer that ended without a complete HTTP answer. */
static void classify_transport_failure(const es_request_t *req, CURLcode rc,
                                       cl_es_request_result_t *out)
{
    memset(out, 0, sizeof *out);
    out->outcome = CL_ES_REQUEST_RETRY;
    out->node_failed = true;
    switch (rc) {
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT:
        out->needs_operator = true;
        break;
    default:
        break;
    }
    const char *detail = req->curl_error[0] != '\0' ? req->curl_error : curl_easy_strerror(rc);
    snprintf(out->reason, sizeof out->reason, "%s", detail);
}

/* Log a request that failed as a whole (see the top of the file); `request`
 * names it ("bulk", "create index stats"...). */
static void report_failure(cl_es_sink_t *s, const es_request_t *req, const char *request,
                           const cl_es_request_result_t *r, bool marked_down, uint64_t retry_in_ms)
{
    node_log_t *node = &s->node_logs[req->node];
    int status = r->needs_operator || r->outcome == CL_ES_REQUEST_REFUSED ? CL_ERR : CL_ERR_RETRY;
    cl_log_level_t level = status == CL_ERR ? CL_LOG_ERROR : CL_LOG_WARN;
    if (node->failing && node->status == status && node->http_status == r->http_status)
        level = CL_LOG_DEBUG;
    node->failing = true;
    node->status = status;
    node->http_status = r->http_status;
    cl_log(level, LOG_MODULE, "%s on %s failed: %s (HTTP %ld)%s; retrying in %llu ms", request,
           s->display_urls[req->node], r->reason, r->http_status,
           marked_down ? ", node marked down" : "", (unsigned long long)retry_in_ms);
}

/* A request to the node succeeded: say so if its failure was logged. */
static void report_success(cl_es_sink_t *s, const es_request_t *req)
{
    node_log_t *node = &s->node_logs[req->node];
    if (!node->failing)
        return;
    node->failing = false;
    cl_log_info(LOG_MODULE, "%s answers again", s->display_urls[req->node]);
}

/* Node bookkeeping after an answer (or its absence); true when marked down. */
static bool node_feedback(cl_es_sink_t *s, size_t node, const cl_es_request_result_t *r)
{
    if (r->node_failed) {
        cl_es_nodes_mark_down(&s->nodes, node, uv_now(s->loop));
        s->stats.node_failures++;
        return true;
    }
    cl_es_nodes_mark_up(&s->nodes, node);
    return false;
}

/* ---- Documents ------------------------------------------------------------------------------ */

static void doc_report(cl_es_sink_t *s, es_entry_t *e, cl_es_doc_outcome_t outcome,
                       const char *reason)
{
    s->pending--;
    switch (outcome) {
    case CL_ES_DOC_INDEXED:
        s->stats.docs_indexed++;
        break;
    case CL_ES_DOC_SUPERSEDED:
        s->stats.docs_superseded++;
        break;
    case CL_ES_DOC_FAILED:
        s->stats.docs_failed++;
        break;
    case CL_ES_DOC_CANCELLED:
        s->stats.docs_cancelled++;
        break;
    }
    uint64_t tag = e->tag;
    free(e);
    s->doc_cb(s->doc_arg, tag, outcome, reason);
}

/* How long to wait before retry number `attempt` (0 = first) after a
 * request-level failure `r`. When the node failed and another one is up,
 * fail over at once: waiting would only delay documents that a healthy node
 * can take now. Once every node is down, the backoff paces the probing. */
static uint64_t retry_delay(cl_es_sink_t *s, unsigned int attempt, const cl_es_request_result_t *r)
{
    if (r->node_failed && !r->needs_operator &&
        cl_es_nodes_up_count(&s->nodes, uv_now(s->loop)) > 0)
        return 0;
    return cl_backoff_ms(r->needs_operator ? OPERATOR_ATTEMPT : attempt, s->retry_min_backoff_ms,
                         s->retry_max_backoff_ms, sink_random(s));
}

/* Queue `docs` (emptied) for another attempt after the delay that `r` calls
 * for; returns the delay. */
static uint64_t docs_retry_later(cl_es_sink_t *s, entry_list_t *docs,
                                 const cl_es_request_result_t *r)
{
    unsigned int attempt = 0;
    for (es_entry_t *e = docs->head; e != NULL; e = e->next) {
        e->attempts++;
        if (e->attempts > attempt)
            attempt = e->attempts;
    }
    s->stats.docs_retried += docs->count;
    uint64_t delay = retry_delay(s, attempt - 1, r);
    retry_group_t *g = cl_xcalloc(1, sizeof *g);
    g->due_ms = uv_now(s->loop) + delay;
    g->docs = *docs;
    *docs = (entry_list_t){0};
    retry_group_t **pos = &s->retries;
    while (*pos != NULL && (*pos)->due_ms <= g->due_ms)
        pos = &(*pos)->next;
    g->next = *pos;
    *pos = g;
    sink_arm_wake(s);
    return delay;
}

/* Refused as a whole: send the documents again at once, at most half as many
 * per request, so that the one at fault ends up alone. */
static void docs_split(cl_es_sink_t *s, entry_list_t *docs)
{
    size_t cap = (docs->count + 1) / 2;
    for (es_entry_t *e = docs->head; e != NULL; e = e->next)
        e->batch_cap = cap;
    entry_list_prepend(&s->ready, docs);
    s->kick = true;
    sink_arm_wake(s);
}

static void bulk_deliver_items(cl_es_sink_t *s, es_request_t *req, const cl_es_bulk_result_t *r)
{
    entry_list_t retry = {0};
    const char *first_retry_reason = NULL;
    int first_retry_status = 0;
    es_entry_t *e;
    size_t i = 0;
    while ((e = entry_list_pop(&req->docs)) != NULL) {
        const cl_es_item_result_t *item = &r->items[i++];
        switch (item->outcome) {
        case CL_ES_ITEM_OK:
            doc_report(s, e, CL_ES_DOC_INDEXED, NULL);
            break;
        case CL_ES_ITEM_SUPERSEDED:
            doc_report(s, e, CL_ES_DOC_SUPERSEDED, item->reason);
            break;
        case CL_ES_ITEM_DROP:
            doc_report(s, e, CL_ES_DOC_FAILED, item->reason);
            break;
        case CL_ES_ITEM_RETRY:
            if (first_retry_reason == NULL) {
                first_retry_reason = item->reason;
                first_retry_status = item->status;
            }
            e->batch_cap = 0;
            entry_list_push(&retry, e);
            break;
        }
    }
    if (retry.count == 0) {
        report_success(s, req);
        return;
    }
    size_t count = retry.count;
    cl_es_request_result_t summary = {.outcome = CL_ES_REQUEST_RETRY,
                                      .http_status = first_retry_status};
    uint64_t delay = docs_retry_later(s, &retry, &summary);
    snprintf(summary.reason, sizeof summary.reason,
             "%zu of %zu documents refused for now; first: %s", count, r->item_count,
             first_retry_reason);
    report_failure(s, req, "bulk", &summary, false, delay);
}

static void bulk_complete(cl_es_sink_t *s, es_request_t *req, CURLcode rc, long http_status)
{
    cl_es_bulk_result_t r;
    size_t docs = req->docs.count;
    if (rc == CURLE_OK) {
        cl_es_bulk_parse(http_status, req->response.data, req->response.len, docs, &r);
    } else {
        memset(&r, 0, sizeof r);
        classify_transport_failure(req, rc, &r.request);
        r.outcome = CL_ES_BULK_RETRY;
        if (req->response_too_large) {
            r.request.node_failed = false;
            r.outcome = docs > 1 ? CL_ES_BULK_SPLIT : CL_ES_BULK_DROP;
            /* Retried in halves (the answer shrinks with the request); a
             * lone document fails, and the indexer records it in index_error. */
            snprintf(r.request.reason, sizeof r.request.reason,
                     "the bulk answer was larger than %zu bytes, the most clickloop holds for a "
                     "request of %zu document(s)",
                     req->response_max, docs);
        }
    }
    s->stats.requests++;
    bool marked_down = node_feedback(s, req->node, &r.request);
    if (r.outcome != CL_ES_BULK_ITEMS)
        s->stats.request_failures++;

    switch (r.outcome) {
    case CL_ES_BULK_ITEMS:
        bulk_deliver_items(s, req, &r);
        break;
    case CL_ES_BULK_RETRY: {
        uint64_t delay = docs_retry_later(s, &req->docs, &r.request);
        report_failure(s, req, "bulk", &r.request, marked_down, delay);
        break;
    }
    case CL_ES_BULK_SPLIT:
        report_failure(s, req, "bulk", &r.request, marked_down, 0);
        docs_split(s, &req->docs);
        break;
    case CL_ES_BULK_DROP:
        doc_report(s, entry_list_pop(&req->docs), CL_ES_DOC_FAILED, r.request.reason);
        break;
    }
    cl_es_bulk_result_free(&r);
}

static void bulk_start(cl_es_sink_t *s)
{
    es_request_t *req = request_new(s, REQUEST_BULK);
    size_t cap = s->ready.head->batch_cap;
    cl_es_bulk_t bulk;
    cl_es_bulk_init(&bulk, cap > 0 ? min_size(cap, s->bulk_max_docs) : s->bulk_max_docs,
                    s->bulk_max_bytes);
    for (es_entry_t *e = s->ready.head; e != NULL; e = s->ready.head) {
        cl_es_bulk_doc_t doc = {
            .index = e->index,
            .index_len = e->index_len,
            .id = e->id,
            .id_len = e->id_len,
            .source = e->source,
            .source_len = e->source_len,
            .version = e->version,
        };
        if (!cl_es_bulk_add(&bulk, &doc))
            break;
        entry_list_push(&req->docs, entry_list_pop(&s->ready));
    }
    req->body = bulk.body;
    s->bulk_in_flight++;
    s->stats.bytes_sent += req->body.len;
    request_send(s, req, "POST", "/_bulk?" CL_ES_BULK_FILTER_PATH, s->bulk_headers);
}

/* ---- Index setup ---------------------------------------------------------------------------- */

static void ensure_op_free(ensure_op_t *op)
{
    cl_es_setup_free(&op->setup);
    free(op);
}

static void ensure_wait(cl_es_sink_t *s, ensure_op_t *op, uint64_t delay)
{
    op->due_ms = uv_now(s->loop) + delay;
    op->next = s->ensure_waiting;
    s->ensure_waiting = op;
    sink_arm_wake(s);
}

static void ensure_start(cl_es_sink_t *s, ensure_op_t *op)
{
    es_request_t *req = request_new(s, REQUEST_ENSURE);
    req->ensure = op;
    cl_buf_t path;
    cl_buf_init(&path);
    cl_es_setup_request(&op->setup, &path, &req->body);
    request_send(s, req, "PUT", path.data, s->json_headers);
    cl_buf_free(&path);
}

static void ensure_finish(ensure_op_t *op, int status, const char *message)
{
    cl_es_ensure_cb cb = op->cb;
    void *arg = op->arg;
    ensure_op_free(op);
    cb(arg, status, message);
}

static void ensure_complete(cl_es_sink_t *s, es_request_t *req, CURLcode rc, long http_status)
{
    ensure_op_t *op = req->ensure;
    cl_es_request_result_t r;
    if (rc == CURLE_OK)
        cl_es_classify_response(http_status, req->response.data, req->response.len, &r);
    else
        classify_transport_failure(req, rc, &r);
    bool marked_down = node_feedback(s, req->node, &r);
    char what[CL_ERR_LEN / 2];
    cl_es_setup_describe(&op->setup, what, sizeof what);

    switch (cl_es_setup_answer(&op->setup, &r)) {
    case CL_ES_SETUP_NEXT:
        op->attempts = 0;
        ensure_wait(s, op, 0);
        break;
    case CL_ES_SETUP_DONE:
        report_success(s, req);
        ensure_finish(op, CL_OK, "");
        break;
    case CL_ES_SETUP_REFUSED: {
        cl_buf_t message;
        cl_buf_init(&message);
        cl_buf_appendf(&message, "%s refused: %s", what, r.reason);
        report_failure(s, req, what, &r, marked_down, 0);
        ensure_finish(op, CL_ERR, message.data);
        cl_buf_free(&message);
        break;
    }
    case CL_ES_SETUP_RETRY: {
        uint64_t delay = retry_delay(s, op->attempts, &r);
        op->attempts++;
        report_failure(s, req, what, &r, marked_down, delay);
        ensure_wait(s, op, delay);
        break;
    }
    }
}

/* ---- The loop side -------------------------------------------------------------------------- */

static void on_request_done(CURL *easy, CURLcode rc, void *arg)
{
    es_request_t *req = arg;
    cl_es_sink_t *s = req->sink;
    long http_status = 0;
    curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &http_status);
    request_detach(s, req);
    switch (req->kind) {
    case REQUEST_BULK:
        bulk_complete(s, req, rc, http_status);
        break;
    case REQUEST_ENSURE:
        ensure_complete(s, req, rc, http_status);
        break;
    }
    request_free(req);
    sink_dispatch(s);
}

/* Move retry groups and index setups whose time has come, and start as many
 * requests as allowed. */
static void sink_dispatch(cl_es_sink_t *s)
{
    if (s->state != SINK_OPEN)
        return;
    uint64_t now = uv_now(s->loop);
    /* Groups are sorted by due time; the earliest failures go first. */
    entry_list_t due = {0};
    while (s->retries != NULL && s->retries->due_ms <= now) {
        retry_group_t *g = s->retries;
        s->retries = g->next;
        entry_list_append(&due, &g->docs);
        free(g);
    }
    entry_list_prepend(&s->ready, &due);

    ensure_op_t **pos = &s->ensure_waiting;
    while (*pos != NULL) {
        ensure_op_t *op = *pos;
        if (op->due_ms <= now) {
            *pos = op->next;
            ensure_start(s, op);
        } else {
            pos = &op->next;
        }
    }
    while (s->bulk_in_flight < s->max_in_flight && s->ready.head != NULL)
        bulk_start(s);
    sink_arm_wake(s);
}

static void sink_shutdown(cl_es_sink_t *s);

static void on_wake(uv_timer_t *t)
{
    cl_es_sink_t *s = t->data;
    switch (s->state) {
    case SINK_OPEN:
        s->kick = false;
        sink_dispatch(s);
        break;
    case SINK_CLOSING:
        sink_shutdown(s);
        break;
    case SINK_CLOSED:
        break;
    }
}

static void sink_arm_wake(cl_es_sink_t *s)
{
    if (s->state != SINK_OPEN)
        return; /* closing: the shutdown's own wake-up is already set */
    uint64_t now = uv_now(s->loop);
    uint64_t due = UINT64_MAX;
    if (s->kick)
        due = now;
    if (s->retries != NULL && s->retries->due_ms < due)
        due = s->retries->due_ms;
    for (ensure_op_t *op = s->ensure_waiting; op != NULL; op = op->next)
        if (op->due_ms < due)
            due = op->due_ms;
    if (due == UINT64_MAX) {
        uv_timer_stop(&s->wake_timer);
        return;
    }
    uv_timer_start(&s->wake_timer, on_wake, due > now ? due - now : 0, 0);
}

/* ---- Public API ----------------------------------------------------------------------------- */

int cl_es_sink_new(uv_loop_t *loop, const cl_es_sink_params_t *p, cl_es_doc_cb doc_cb,
                   void *doc_arg, cl_es_sink_t **out, char err[CL_ERR_LEN])
{
    if (doc_cb == NULL)
        return cl_errorf(err, "elasticsearch: a document callback is required");
    if (cl_es_sink_params_validate(p, err) != CL_OK)
        return CL_ERR;
    char why[CL_ERR_LEN];
    cl_curl_uv_t *curl;
    if (cl_curl_uv_new(loop, &curl, why) != CL_OK)
        return cl_errorf(err, "elasticsearch: %s", why);

    cl_es_sink_t *s = cl_xcalloc(1, sizeof *s);
    s->loop = loop;
    s->state = SINK_OPEN;
    s->curl = curl;
    uv_timer_init(loop, &s->wake_timer); /* only initialises: cannot fail */
    s->wake_timer.data = s;
    s->open_handles = 2;

    s->url_count = p->url_count;
    s->urls = cl_xcalloc(p->url_count, sizeof *s->urls);
    s->display_urls = cl_xcalloc(p->url_count, sizeof *s->display_urls);
    for (size_t i = 0; i < p->url_count; i++) {
        size_t len = strlen(p->urls[i]);
        while (len > 0 && p->urls[i][len - 1] == '/')
            len--;
        s->urls[i] = cl_xstrndup(p->urls[i], len);
        s->display_urls[i] = display_url(s->urls[i]);
    }
    s->username = p->username != NULL ? cl_xstrdup(p->username) : NULL;
    s->password = p->password != NULL ? cl_xstrdup(p->password) : NULL;
    s->ca_file = p->ca_file != NULL ? cl_xstrdup(p->ca_file) : NULL;
    s->verify_tls = p->verify_tls;
    s->bulk_max_docs = p->bulk_max_docs;
    s->bulk_max_bytes = (size_t)p->bulk_max_bytes;
    s->max_in_flight = p->max_in_flight;
    s->request_timeout_ms = p->request_timeout_ms;
    s->connect_timeout_ms = p->request_timeout_ms < CONNECT_TIMEOUT_MAX_MS ? p->request_timeout_ms
                                                                           : CONNECT_TIMEOUT_MAX_MS;
    s->retry_min_backoff_ms = p->retry_min_backoff_ms;
    s->retry_max_backoff_ms = p->retry_max_backoff_ms;
    cl_es_nodes_init(&s->nodes, p->url_count, p->node_down_for_ms);
    s->node_logs = cl_xcalloc(p->url_count, sizeof *s->node_logs);

    s->bulk_headers = append_header(NULL, "Content-Type: application/x-ndjson");
    s->json_headers = append_header(NULL, "Content-Type: application/json");
    s->bulk_headers = append_header(s->bulk_headers, "Expect:");
    s->json_headers = append_header(s->json_headers, "Expect:");
    if (p->api_key != NULL) {
        cl_buf_t line;
        cl_buf_init(&line);
        cl_buf_appendf(&line, "Authorization: ApiKey %s", p->api_key);
        s->bulk_headers = append_header(s->bulk_headers, line.data);
        s->json_headers = append_header(s->json_headers, line.data);
        explicit_bzero(line.data, line.len);
        cl_buf_free(&line);
    }
    s->rng = uv_hrtime() ^ ((uint64_t)(uintptr_t)s << 16) ^ 0x9E3779B97F4A7C15ULL;
    s->doc_cb = doc_cb;
    s->doc_arg = doc_arg;
    *out = s;
    return CL_OK;
}

static int check_doc(const cl_es_doc_t *d, size_t i, char err[CL_ERR_LEN])
{
    size_t index_len = d->index != NULL ? strlen(d->index) : 0;
    size_t id_len = d->id != NULL ? strlen(d->id) : 0;
    if (index_len == 0 || index_len > CL_ES_INDEX_MAX_LEN)
        return cl_errorf(err,
                         "elasticsearch: document %zu (tag %llu): the index name must be "
                         "1 to %d bytes",
                         i, (unsigned long long)d->tag, CL_ES_INDEX_MAX_LEN);
    if (id_len == 0 || id_len > CL_ES_ID_MAX_LEN)
        return cl_errorf(err,
                         "elasticsearch: document %zu (tag %llu): the id must be 1 to %d "
                         "bytes",
                         i, (unsigned long long)d->tag, CL_ES_ID_MAX_LEN);
    if (cl_utf8_validate(d->index, index_len, NULL) != CL_OK ||
        cl_utf8_validate(d->id, id_len, NULL) != CL_OK)
        return cl_errorf(err,
                         "elasticsearch: document %zu (tag %llu): the index name and id "
                         "must be UTF-8",
                         i, (unsigned long long)d->tag);
    if (d->version > (uint64_t)INT64_MAX)
        return cl_errorf(err,
                         "elasticsearch: document %zu (tag %llu): the version is above "
                         "2^63-1",
                         i, (unsigned long long)d->tag);
    /* The source is built correctly by construction (es_doc.h) and is not
     * parsed again here, on the hot path. */
    if (d->source == NULL || d->source_len == 0)
        return cl_errorf(err, "elasticsearch: document %zu (tag %llu): the source is empty", i,
                         (unsigned long long)d->tag);
    return CL_OK;
}

static es_entry_t *entry_new(const cl_es_doc_t *d)
{
    size_t index_len = strlen(d->index), id_len = strlen(d->id);
    es_entry_t *e = cl_xmalloc(sizeof *e + index_len + id_len + d->source_len + 3);
    memset(e, 0, sizeof *e);
    char *p = (char *)(e + 1);
    e->index = p;
    e->index_len = index_len;
    memcpy(p, d->index, index_len + 1);
    p += index_len + 1;
    e->id = p;
    e->id_len = id_len;
    memcpy(p, d->id, id_len + 1);
    p += id_len + 1;
    e->source = p;
    e->source_len = d->source_len;
    memcpy(p, d->source, d->source_len);
    p[d->source_len] = '\0';
    e->tag = d->tag;
    e->version = d->version;
    return e;
}

int cl_es_sink_submit(cl_es_sink_t *s, const cl_es_doc_t *docs, size_t n, char err[CL_ERR_LEN])
{
    if (s->state != SINK_OPEN)
        return cl_errorf(err, "elasticsearch: the sink is closing");
    for (size_t i = 0; i < n; i++)
        if (check_doc(&docs[i], i, err) != CL_OK)
            return CL_ERR;
    for (size_t i = 0; i < n; i++)
        entry_list_push(&s->ready, entry_new(&docs[i]));
    s->pending += n;
    s->stats.docs_submitted += n;
    if (n > 0) {
        s->kick = true;
        sink_arm_wake(s);
    }
    return CL_OK;
}

size_t cl_es_sink_pending(const cl_es_sink_t *s)
{
    return s->pending;
}

int cl_es_sink_ensure_index(cl_es_sink_t *s, const char *index_pattern, const char *mappings_json,
                            cl_es_ensure_cb cb, void *arg, char err[CL_ERR_LEN])
{
    if (s->state != SINK_OPEN)
        return cl_errorf(err, "elasticsearch: the sink is closing");
    if (cb == NULL)
        return cl_errorf(err, "elasticsearch: index setup needs a callback");
    cl_es_setup_t setup;
    if (cl_es_setup_init(&setup, index_pattern, mappings_json, err) != CL_OK)
        return CL_ERR;
    ensure_op_t *op = cl_xcalloc(1, sizeof *op);
    op->setup = setup;
    op->cb = cb;
    op->arg = arg;
    ensure_wait(s, op, 0);
    return CL_OK;
}

void cl_es_sink_stats(const cl_es_sink_t *s, cl_es_sink_stats_t *out)
{
    *out = s->stats;
    out->docs_pending = s->pending;
    out->nodes_up = cl_es_nodes_up_count(&s->nodes, uv_now(s->loop));
}

/* ---- Closing -------------------------------------------------------------------------------- */

static void sink_free(cl_es_sink_t *s)
{
    for (size_t i = 0; i < s->url_count; i++) {
        free(s->urls[i]);
        free(s->display_urls[i]);
    }
    free(s->urls);
    free(s->display_urls);
    free(s->username);
    free_secret(s->password);
    free(s->ca_file);
    free_headers(s->bulk_headers);
    free_headers(s->json_headers);
    cl_es_nodes_free(&s->nodes);
    free(s->node_logs);
    free(s);
}

static void sink_maybe_free(cl_es_sink_t *s)
{
    if (s->state != SINK_CLOSED || s->open_handles > 0)
        return;
    cl_close_cb cb = s->close_cb;
    void *arg = s->close_arg;
    sink_free(s);
    if (cb != NULL)
        cb(arg);
}

static void on_wake_timer_closed(uv_handle_t *h)
{
    cl_es_sink_t *s = h->data;
    s->open_handles--;
    sink_maybe_free(s);
}

static void on_curl_closed(void *arg)
{
    cl_es_sink_t *s = arg;
    s->open_handles--;
    sink_maybe_free(s);
}

/* Runs from the wake timer, never inside a libcurl call or a callback of
 * ours: abort transfers, report what is left, close libcurl and the timer. */
static void sink_shutdown(cl_es_sink_t *s)
{
    entry_list_t cancelled = {0};
    ensure_op_t *ops = NULL;
    while (s->in_flight != NULL) {
        es_request_t *req = s->in_flight;
        cl_curl_uv_abort(s->curl, req->easy);
        request_detach(s, req);
        entry_list_append(&cancelled, &req->docs);
        if (req->ensure != NULL) {
            req->ensure->next = ops;
            ops = req->ensure;
        }
        request_free(req);
    }

    while (s->retries != NULL) {
        retry_group_t *g = s->retries;
        s->retries = g->next;
        entry_list_append(&cancelled, &g->docs);
        free(g);
    }
    entry_list_append(&cancelled, &s->ready);
    while (s->ensure_waiting != NULL) {
        ensure_op_t *op = s->ensure_waiting;
        s->ensure_waiting = op->next;
        op->next = ops;
        ops = op;
    }

    /* From here on submit and ensure_index refuse, so the callbacks below
     * cannot add work. */
    s->state = SINK_CLOSED;
    es_entry_t *e;
    while ((e = entry_list_pop(&cancelled)) != NULL)
        doc_report(s, e, CL_ES_DOC_CANCELLED, "cancelled: the Elasticsearch sink was closed");
    while (ops != NULL) {
        ensure_op_t *op = ops;
        ops = op->next;
        ensure_finish(op, CL_ERR_RETRY, "cancelled: the Elasticsearch sink was closed");
    }
    cl_curl_uv_close(s->curl, on_curl_closed, s);
    uv_close((uv_handle_t *)&s->wake_timer, on_wake_timer_closed);
}

int cl_es_sink_close(cl_es_sink_t *s, cl_close_cb cb, void *arg)
{
    if (s->state != SINK_OPEN)
        return CL_ERR;
    s->state = SINK_CLOSING;
    s->close_cb = cb;
    s->close_arg = arg;
    /* From the loop: close may be called from a document callback, inside
     * the processing of a finished transfer. */
    uv_timer_start(&s->wake_timer, on_wake, 0, 0);
    return CL_OK;
}

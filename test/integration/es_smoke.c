/* es_smoke: exercises the es_sink module against real Elasticsearch and
 * OpenSearch nodes on one libuv loop. Not a registered test (it needs the
 * servers of deps/services); build with `meson compile -C <build> es_smoke`.
 *
 *   es_smoke [--docs N] [--max-in-flight K] [--bulk-docs D] [URL...]
 *
 * URLs default to http://127.0.0.1:19200 (Elasticsearch 8) and
 * http://127.0.0.1:19201 (OpenSearch 2). For each, in turn, with a node list
 * whose first URL is dead (http://127.0.0.1:1), so that failover is part of
 * every run:
 *  1. index setup: a template for the date-patterned index
 *     clsmoke-stats-%Y.%m.%d and the plain index clsmoke-plain; the plain
 *     index again (it exists: mapping update), then with a conflicting
 *     mapping (must be refused with the cluster's reason);
 *  2. N stats documents (half in each index), among them a 5 KB URL, a 9000
 *     character URL (beyond the keyword's ignore_above) and one document
 *     whose clicks is "abc": that one must fail with the cluster's reason and
 *     every other must be indexed; _count and GET then show each exactly once;
 *  3. the same documents again: same outcomes, same counts (no duplicates);
 *  4. an older version of one document: SUPERSEDED, the stored one unchanged;
 *  5. with only the dead node: documents wait (pending, failures reported),
 *     close reports them CANCELLED;
 *  6. close from inside the first document callback while requests are in
 *     flight: every document is reported exactly once.
 * Then, against a scripted fake cluster served on the same loop, the answers
 * a healthy cluster never gives: no answer (request timeout, retried), 503
 * (node marked down, all retried), 413
 * (split until the culprit is alone, then dropped), an unparsable 200 (all
 * retried), and item-level 429 and 400 (only those retried or failed).
 * Checks between phases use blocking libcurl calls while the loop is idle.
 * Exit status 0 when every check passed and the loop closed cleanly. */
#include <curl/curl.h>
#include <getopt.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clickloop/buf.h"
#include "clickloop/common.h"
#include "clickloop/es_doc.h"
#include "clickloop/es_sink.h"
#include "clickloop/sha256.h"

#define DEAD_URL "http://127.0.0.1:1"
#define PLAIN_INDEX "clsmoke-plain"
#define DATED_INDEX "clsmoke-stats-%Y.%m.%d"
#define TEMPLATE_NAME "clsmoke-stats-yyyy.mm.dd"
#define DAY0_MS INT64_C(1715904000000) /* 2024-05-17T00:00:00Z */
#define HOUR_MS INT64_C(3600000)
#define DAYS 3
#define PHASE_TIMEOUT_MS 180000
#define LONG_URL_LEN 5120
#define HUGE_URL_LEN 9000

/* ---- Harness ---- */

typedef struct {
    char *index;
    char *id;
    cl_buf_t source;
    uint64_t version;
    char *url_hash;
    bool conflict; /* clicks is "abc" */
} smoke_doc_t;

typedef struct {
    uv_loop_t loop;
    uv_timer_t watchdog;
    uv_timer_t pause;
    cl_es_sink_t *sink;
    const char *base;
    int failures;
    size_t outstanding; /* callbacks the running phase waits for */
    bool timed_out;
    /* per-pass document bookkeeping */
    unsigned char *seen; /* callbacks per tag */
    size_t seen_count;
    size_t indexed, superseded, failed, cancelled;
    char failed_reason[2048];
    uint64_t failed_tag;
    bool close_in_callback;
    /* index setup */
    int ensure_status;
    char ensure_message[2048];
    /* events */
    size_t events, node_down_events;
    size_t docs, max_in_flight, bulk_docs;
} smoke_t;

static smoke_t sm;

static void check(bool ok, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void check(bool ok, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "  %s ", ok ? "ok  " : "FAIL");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    if (!ok)
        sm.failures++;
}

static void on_watchdog(uv_timer_t *t)
{
    CL_UNUSED(t);
    sm.timed_out = true;
    uv_stop(&sm.loop);
}

/* Run the loop until `outstanding` callbacks have come (or the watchdog). */
static void run_phase(const char *name)
{
    sm.timed_out = false;
    uv_timer_start(&sm.watchdog, on_watchdog, PHASE_TIMEOUT_MS, 0);
    while (sm.outstanding > 0 && !sm.timed_out)
        uv_run(&sm.loop, UV_RUN_DEFAULT);
    uv_timer_stop(&sm.watchdog);
    check(!sm.timed_out, "%s finished within %d s", name, PHASE_TIMEOUT_MS / 1000);
}

static void phase_step(void)
{
    if (sm.outstanding > 0 && --sm.outstanding == 0)
        uv_stop(&sm.loop);
}

static void on_pause_over(uv_timer_t *t)
{
    CL_UNUSED(t);
    phase_step();
}

static void on_event(void *arg, const cl_es_sink_event_t *ev)
{
    CL_UNUSED(arg);
    sm.events++;
    sm.node_down_events += ev->node_marked_down;
    if (sm.events <= 3)
        fprintf(stderr, "       event: %s on %s: %s (HTTP %ld, %zu docs, %s, retry in %" PRIu64
                        " ms)\n",
                ev->request, ev->node, ev->message, ev->http_status, ev->docs,
                ev->node_marked_down ? "node marked down" : "node up", ev->retry_in_ms);
}

static void on_doc(void *arg, uint64_t tag, cl_es_doc_outcome_t outcome, const char *reason)
{
    CL_UNUSED(arg);
    if (tag < sm.seen_count)
        sm.seen[tag]++;
    switch (outcome) {
    case CL_ES_DOC_INDEXED: sm.indexed++; break;
    case CL_ES_DOC_SUPERSEDED: sm.superseded++; break;
    case CL_ES_DOC_FAILED:
        sm.failed++;
        sm.failed_tag = tag;
        snprintf(sm.failed_reason, sizeof sm.failed_reason, "%s", reason);
        break;
    case CL_ES_DOC_CANCELLED: sm.cancelled++; break;
    }
    if (sm.close_in_callback) {
        sm.close_in_callback = false;
        check(cl_es_sink_close(sm.sink, NULL, NULL) == CL_OK, "close from a document callback");
    }
    phase_step();
}

static void on_ensure(void *arg, int status, const char *message)
{
    CL_UNUSED(arg);
    if (status != CL_OK || sm.ensure_status == CL_OK) {
        sm.ensure_status = status;
        snprintf(sm.ensure_message, sizeof sm.ensure_message, "%s", message);
    }
    phase_step();
}

static void on_sink_closed(void *arg)
{
    CL_UNUSED(arg);
    sm.sink = NULL;
    phase_step();
}

static void reset_counts(size_t tags)
{
    free(sm.seen);
    sm.seen = cl_xcalloc(tags ? tags : 1, 1);
    sm.seen_count = tags;
    sm.indexed = sm.superseded = sm.failed = sm.cancelled = 0;
    sm.failed_reason[0] = '\0';
    sm.events = sm.node_down_events = 0;
}

static size_t tags_seen_once(void)
{
    size_t once = 0;
    for (size_t i = 0; i < sm.seen_count; i++)
        once += sm.seen[i] == 1;
    return once;
}

/* ---- Blocking HTTP for checks (the loop is idle meanwhile) ---- */

static size_t collect(char *data, size_t size, size_t nmemb, void *userp)
{
    cl_buf_append(userp, data, size * nmemb);
    return size * nmemb;
}

static long http(const char *method, const char *url, const char *body, cl_buf_t *out)
{
    CURL *e = curl_easy_init();
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    cl_buf_reset(out);
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, out);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, 30000L);
    if (body != NULL)
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
    long status = 0;
    if (curl_easy_perform(e) == CURLE_OK)
        curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(h);
    curl_easy_cleanup(e);
    return status;
}

static long long json_number_at(const char *text, const char *k1, const char *k2)
{
    json_object *root = json_tokener_parse(text), *v = NULL;
    long long n = -1;
    if (root != NULL && json_object_object_get_ex(root, k1, &v)) {
        if (k2 != NULL && !json_object_object_get_ex(v, k2, &v))
            v = NULL;
        if (v != NULL)
            n = json_object_get_int64(v);
    }
    json_object_put(root);
    return n;
}

static long long count_docs(const char *index, const char *query_string)
{
    cl_buf_t url, out;
    cl_buf_init(&url);
    cl_buf_init(&out);
    cl_buf_appendf(&url, "%s/%s/_count%s%s", sm.base, index, query_string ? "?q=" : "",
                   query_string ? query_string : "");
    long status = http("GET", url.data, NULL, &out);
    long long n = status == 200 ? json_number_at(out.data, "count", NULL) : -1;
    cl_buf_free(&url);
    cl_buf_free(&out);
    return n;
}

/* ---- Documents ---- */

static void make_url(cl_buf_t *url, size_t i)
{
    cl_buf_reset(url);
    if (i == 10) {
        cl_buf_append_str(url, "https://example.com/long?q=");
        while (url->len < LONG_URL_LEN)
            cl_buf_append_char(url, (char)('a' + url->len % 26));
    } else if (i == 30) {
        cl_buf_append_str(url, "https://example.com/huge?q=");
        while (url->len < HUGE_URL_LEN)
            cl_buf_append_char(url, (char)('a' + url->len % 26));
    } else {
        cl_buf_appendf(url, "https://example.com/p/%zu?ref=\"smoke\"&x=\xc3\xa9", i);
    }
}

static smoke_doc_t *make_docs(size_t n)
{
    static const char *const countries[] = {"DE", "US", "FR", "", "JP"};
    smoke_doc_t *docs = cl_xcalloc(n, sizeof *docs);
    cl_buf_t url;
    cl_buf_init(&url);
    for (size_t i = 0; i < n; i++) {
        smoke_doc_t *d = &docs[i];
        bool plain = i < n / 2;
        make_url(&url, i);
        int64_t start = DAY0_MS + (int64_t)(i % (24 * DAYS)) * HOUR_MS;
        cl_es_stats_doc_t s = {
            .window = "1h",
            .window_start_ms = start,
            .window_end_ms = start + HOUR_MS,
            .url = url.data,
            .url_len = url.len,
            .country = countries[i % CL_ARRAY_LEN(countries)],
            .clicks = i + 1,
            .unique_users = i / 2 + 1,
            .time_spent_samples = i % 3,
            .avg_time_spent_ms = 1000.0 + (double)i / 8,
            .updated_at_ms = DAY0_MS + DAYS * 24 * HOUR_MS + (int64_t)i,
        };
        char id[CL_ES_DOC_ID_SIZE], index[CL_ES_INDEX_NAME_SIZE], err[CL_ERR_LEN];
        if (cl_es_stats_doc_id(&s, id, err) != CL_OK ||
            cl_es_index_name(plain ? PLAIN_INDEX : DATED_INDEX, start, index, sizeof index) < 0) {
            fprintf(stderr, "cannot build document %zu: %s\n", i, err);
            exit(2);
        }
        d->id = cl_xstrdup(id);
        d->index = cl_xstrdup(index);
        d->version = (uint64_t)s.updated_at_ms;
        d->url_hash = cl_xmalloc(CL_SHA256_HEX_SIZE);
        cl_sha256_hex(url.data, url.len, d->url_hash);
        cl_buf_init(&d->source);
        if (i == 20) {
            /* Type conflict with the strict mapping: clicks is a long. */
            d->conflict = true;
            cl_buf_appendf(&d->source, "{\"window\":\"1h\",\"window_start\":%" PRId64
                                       ",\"clicks\":\"abc\"}",
                           start);
        } else {
            cl_es_stats_source(&d->source, &s);
        }
    }
    cl_buf_free(&url);
    return docs;
}

static void free_docs(smoke_doc_t *docs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(docs[i].index);
        free(docs[i].id);
        free(docs[i].url_hash);
        cl_buf_free(&docs[i].source);
    }
    free(docs);
}

static cl_es_doc_t sink_doc(const smoke_doc_t *d, uint64_t tag)
{
    cl_es_doc_t doc = {
        .index = d->index,
        .id = d->id,
        .source = d->source.data,
        .source_len = d->source.len,
        .version = d->version,
        .tag = tag,
    };
    return doc;
}

/* Submit all documents, in slices as a caller would, and wait for them. */
static double submit_all(const smoke_doc_t *docs, size_t n, const char *name)
{
    reset_counts(n);
    sm.outstanding = n;
    uint64_t t0 = cl_now_ms();
    size_t slice = 500;
    cl_es_doc_t *batch = cl_xcalloc(slice, sizeof *batch);
    for (size_t at = 0; at < n; at += slice) {
        size_t k = n - at < slice ? n - at : slice;
        for (size_t j = 0; j < k; j++)
            batch[j] = sink_doc(&docs[at + j], at + j);
        char err[CL_ERR_LEN];
        if (cl_es_sink_submit(sm.sink, batch, k, err) != CL_OK)
            check(false, "submit: %s", err);
    }
    free(batch);
    check(cl_es_sink_pending(sm.sink) == n, "%zu documents pending after submit", n);
    run_phase(name);
    uint64_t ms = cl_now_ms() - t0;
    double rate = ms > 0 ? (double)n * 1000.0 / (double)ms : 0;
    fprintf(stderr, "       %s: %zu documents in %" PRIu64 " ms = %.0f docs/s\n", name, n, ms,
            rate);
    return rate;
}

/* ---- Phases ---- */

static cl_es_sink_params_t params(const char *const *urls, size_t count)
{
    cl_es_sink_params_t p = {
        .urls = urls,
        .url_count = count,
        .verify_tls = true,
        .bulk_max_docs = (uint32_t)sm.bulk_docs,
        .bulk_max_bytes = 5u << 20,
        .max_in_flight = (uint32_t)sm.max_in_flight,
        .request_timeout_ms = 30000,
        .retry_min_backoff_ms = 50,
        .retry_max_backoff_ms = 2000,
        /* The shortest allowed: the dead node is probed again every second,
         * so bulk requests meet it too, not only the index setup. */
        .node_down_for_ms = 1000,
        .event_cb = on_event,
    };
    return p;
}

static void open_sink_with(const char *const *urls, size_t count, uint64_t request_timeout_ms)
{
    char err[CL_ERR_LEN];
    cl_es_sink_params_t p = params(urls, count);
    p.request_timeout_ms = request_timeout_ms;
    if (cl_es_sink_new(&sm.loop, &p, on_doc, NULL, &sm.sink, err) != CL_OK) {
        fprintf(stderr, "cl_es_sink_new: %s\n", err);
        exit(2);
    }
}

static void open_sink(const char *const *urls, size_t count)
{
    open_sink_with(urls, count, 30000);
}

static void close_sink(void)
{
    sm.outstanding = 1;
    check(cl_es_sink_close(sm.sink, on_sink_closed, NULL) == CL_OK, "close accepted");
    run_phase("close");
    check(sm.sink == NULL, "close callback ran");
}

static void cleanup_cluster(void)
{
    cl_buf_t url, out;
    cl_buf_init(&url);
    cl_buf_init(&out);
    /* Explicit names: Elasticsearch 8 refuses wildcard deletes by default. */
    cl_buf_appendf(&url, "%s/" PLAIN_INDEX, sm.base);
    for (int d = 0; d < DAYS; d++) {
        char name[CL_ES_INDEX_NAME_SIZE];
        cl_es_index_name(DATED_INDEX, DAY0_MS + d * 24 * HOUR_MS, name, sizeof name);
        cl_buf_appendf(&url, ",%s", name);
    }
    cl_buf_append_str(&url, "?ignore_unavailable=true");
    http("DELETE", url.data, NULL, &out);
    cl_buf_reset(&url);
    cl_buf_appendf(&url, "%s/_index_template/" TEMPLATE_NAME, sm.base);
    http("DELETE", url.data, NULL, &out);
    cl_buf_free(&url);
    cl_buf_free(&out);
}

static void ensure(const char *pattern, const char *mappings, const char *what, int expect)
{
    char err[CL_ERR_LEN];
    sm.ensure_status = CL_OK;
    sm.ensure_message[0] = '\0';
    sm.outstanding = 1;
    if (cl_es_sink_ensure_index(sm.sink, pattern, mappings, on_ensure, NULL, err) != CL_OK) {
        check(false, "%s: %s", what, err);
        return;
    }
    run_phase(what);
    check(sm.ensure_status == expect, "%s: status %d (expected %d) %s", what, sm.ensure_status,
          expect, sm.ensure_message);
}

static void phase_index_setup(void)
{
    const char *mappings = cl_es_stats_mappings();
    ensure(DATED_INDEX, mappings, "index template for " DATED_INDEX, CL_OK);
    ensure(PLAIN_INDEX, mappings, "create index " PLAIN_INDEX, CL_OK);
    ensure(PLAIN_INDEX, mappings, "existing index " PLAIN_INDEX " (mapping update)", CL_OK);
    ensure(PLAIN_INDEX, "{\"properties\":{\"clicks\":{\"type\":\"keyword\"}}}",
           "conflicting mapping for " PLAIN_INDEX, CL_ERR);
    check(strstr(sm.ensure_message, "clicks") != NULL, "the refusal names the field: %s",
          sm.ensure_message);
}

static void check_outcomes(size_t n, const char *pass)
{
    check(tags_seen_once() == n, "%s: every document reported exactly once (%zu of %zu)", pass,
          tags_seen_once(), n);
    check(sm.indexed == n - 1 && sm.failed == 1, "%s: %zu indexed, %zu failed", pass, sm.indexed,
          sm.failed);
    check(sm.failed_tag == 20, "%s: the failed document is the conflicting one (tag %" PRIu64 ")",
          pass, sm.failed_tag);
    check(strstr(sm.failed_reason, "clicks") != NULL &&
              (strstr(sm.failed_reason, "mapper_parsing_exception") != NULL ||
               strstr(sm.failed_reason, "document_parsing_exception") != NULL),
          "%s: reason: %s", pass, sm.failed_reason);
    check(cl_es_sink_pending(sm.sink) == 0, "%s: nothing pending", pass);
}

static void check_cluster(const smoke_doc_t *docs, size_t n, const char *pass)
{
    cl_buf_t url, out;
    cl_buf_init(&url);
    cl_buf_init(&out);
    cl_buf_appendf(&url, "%s/" PLAIN_INDEX ",clsmoke-stats-*/_refresh", sm.base);
    http("POST", url.data, NULL, &out);

    long long plain = count_docs(PLAIN_INDEX, NULL);
    long long dated = count_docs("clsmoke-stats-*", NULL);
    check(plain == (long long)(n / 2 - 1), "%s: %s holds %lld documents (expected %zu)", pass,
          PLAIN_INDEX, plain, n / 2 - 1);
    check(dated == (long long)(n - n / 2), "%s: clsmoke-stats-* hold %lld documents (expected %zu)",
          pass, dated, n - n / 2);

    /* Every document of one window by id: each there once, with its URL. */
    size_t found = 0, probes = 0;
    for (size_t i = 0; i < n; i += 97) {
        if (docs[i].conflict)
            continue;
        probes++;
        cl_buf_reset(&url);
        cl_buf_appendf(&url, "%s/%s/_doc/%s", sm.base, docs[i].index, docs[i].id);
        found += http("GET", url.data, NULL, &out) == 200;
    }
    check(found == probes, "%s: %zu of %zu sampled documents found by id", pass, found, probes);

    cl_buf_reset(&url);
    cl_buf_appendf(&url, "%s/%s/_doc/%s", sm.base, docs[20].index, docs[20].id);
    check(http("GET", url.data, NULL, &out) == 404, "%s: the conflicting document is absent",
          pass);

    cl_buf_reset(&url);
    cl_buf_appendf(&url, "%s/%s/_doc/%s", sm.base, docs[10].index, docs[10].id);
    long st = http("GET", url.data, NULL, &out);
    json_object *root = json_tokener_parse(out.data), *src = NULL, *u = NULL;
    size_t url_len = 0;
    if (root != NULL && json_object_object_get_ex(root, "_source", &src) &&
        json_object_object_get_ex(src, "url", &u))
        url_len = (size_t)json_object_get_string_len(u);
    json_object_put(root);
    check(st == 200 && url_len == LONG_URL_LEN, "%s: the 5 KB URL is stored whole (%zu bytes)",
          pass, url_len);

    char q[128];
    snprintf(q, sizeof q, "url_sha256:%s", docs[10].url_hash);
    check(count_docs(PLAIN_INDEX, q) == 1, "%s: the 5 KB URL is found by url_sha256", pass);
    snprintf(q, sizeof q, "url_sha256:%s", docs[30].url_hash);
    check(count_docs(PLAIN_INDEX, q) == 1,
          "%s: the 9000-character URL (beyond ignore_above) is found by url_sha256", pass);

    cl_buf_reset(&url);
    cl_buf_appendf(&url, "%s/clsmoke-stats-2024.05.18/_mapping", sm.base);
    http("GET", url.data, NULL, &out);
    check(strstr(out.data, "\"dynamic\":\"strict\"") != NULL,
          "%s: the dated index got the template's strict mapping", pass);
    cl_buf_free(&url);
    cl_buf_free(&out);
}

static void phase_older_version(const smoke_doc_t *docs)
{
    smoke_doc_t old = docs[40];
    old.version = docs[40].version - 1;
    reset_counts(1);
    sm.outstanding = 1;
    cl_es_doc_t d = sink_doc(&old, 0);
    char err[CL_ERR_LEN];
    check(cl_es_sink_submit(sm.sink, &d, 1, err) == CL_OK, "submit an older version");
    run_phase("older version");
    check(sm.superseded == 1, "an older version is reported superseded");
}

static void phase_all_nodes_down(void)
{
    static const char *const dead[] = {DEAD_URL};
    open_sink(dead, 1);
    smoke_doc_t *docs = make_docs(10);
    reset_counts(10);
    cl_es_doc_t batch[10];
    for (size_t i = 0; i < 10; i++)
        batch[i] = sink_doc(&docs[i], i);
    char err[CL_ERR_LEN];
    check(cl_es_sink_submit(sm.sink, batch, 10, err) == CL_OK, "submit to a dead cluster");
    sm.outstanding = 1;
    uv_timer_start(&sm.pause, on_pause_over, 600, 0);
    run_phase("waiting with every node down");
    cl_es_sink_stats_t st;
    cl_es_sink_stats(sm.sink, &st);
    check(cl_es_sink_pending(sm.sink) == 10 && sm.indexed + sm.failed == 0,
          "documents wait while every node is down (%zu pending)", cl_es_sink_pending(sm.sink));
    check(sm.events >= 2 && st.node_failures >= 2 && st.nodes_up == 0,
          "failures reported and retried (%zu events, %" PRIu64 " node failures)", sm.events,
          st.node_failures);
    sm.outstanding = 10; /* the cancellations; close_sink adds its own */
    check(cl_es_sink_close(sm.sink, on_sink_closed, NULL) == CL_OK, "close with work pending");
    sm.outstanding++;
    run_phase("close with work pending");
    check(sm.cancelled == 10 && tags_seen_once() == 10,
          "every waiting document is reported cancelled (%zu)", sm.cancelled);
    free_docs(docs, 10);
}

static void phase_close_from_callback(const smoke_doc_t *docs, size_t n)
{
    static const char *urls[1];
    urls[0] = sm.base;
    open_sink(urls, 1);
    reset_counts(n);
    cl_es_doc_t *batch = cl_xcalloc(n, sizeof *batch);
    for (size_t i = 0; i < n; i++)
        batch[i] = sink_doc(&docs[i], i);
    char err[CL_ERR_LEN];
    check(cl_es_sink_submit(sm.sink, batch, n, err) == CL_OK, "submit %zu", n);
    free(batch);
    sm.close_in_callback = true;
    sm.outstanding = n;
    run_phase("close from the first callback");
    check(tags_seen_once() == n, "each of %zu documents reported exactly once (%zu indexed, %zu "
                                 "failed, %zu cancelled)",
          n, sm.indexed, sm.failed, sm.cancelled);
    check(sm.cancelled > 0, "documents in flight and queued were cancelled");
    /* The sink frees itself after its handles close; give the loop a turn. */
    uv_run(&sm.loop, UV_RUN_NOWAIT);
    uv_run(&sm.loop, UV_RUN_NOWAIT);
    sm.sink = NULL;
}

/* ---- A scripted fake cluster ---- */

typedef struct fake_conn_s {
    uv_tcp_t tcp;
    cl_buf_t in;
} fake_conn_t;

typedef struct {
    uv_tcp_t server;
    char url[64];
    unsigned int requests;
    unsigned int hung, answered_503, answered_413, answered_garbage;
    bool retry_me_seen, garble_seen;
    unsigned int open_conns;
} fake_cluster_t;

static fake_cluster_t fake;

static void on_fake_closed(uv_handle_t *h)
{
    fake_conn_t *c = h->data;
    cl_buf_free(&c->in);
    free(c);
    fake.open_conns--;
}

static void on_fake_written(uv_write_t *req, int status)
{
    CL_UNUSED(status);
    free(req->data);
    free(req);
}

static void fake_reply(fake_conn_t *c, int status, const char *reason, const char *body)
{
    cl_buf_t out;
    cl_buf_init(&out);
    cl_buf_appendf(&out,
                   "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: "
                   "%zu\r\n\r\n%s",
                   status, reason, strlen(body), body);
    uv_write_t *w = cl_xmalloc(sizeof *w);
    size_t len;
    w->data = cl_buf_steal(&out, &len);
    uv_buf_t b = uv_buf_init(w->data, (unsigned int)len);
    uv_write(w, (uv_stream_t *)&c->tcp, &b, 1, on_fake_written);
}

/* Answer one bulk request: the script keys on markers in the sources. */
static void fake_answer(fake_conn_t *c, const char *body, size_t len)
{
    fake.requests++;
    size_t docs = 0;
    bool too_large = false, garble = false;
    for (const char *p = body; p < body + len; p = strchr(p, '\n') + 1) {
        if (strncmp(p, "{\"index\":", 9) == 0)
            docs++;
        const char *eol = strchr(p, '\n');
        too_large |= memmem(p, (size_t)(eol - p), "too_large", 9) != NULL;
        garble |= memmem(p, (size_t)(eol - p), "garble_once", 11) != NULL;
    }
    if (fake.requests == 1) {
        fake.hung++; /* no answer: the sink's request timeout must end it */
        return;
    }
    if (fake.requests == 2) {
        fake.answered_503++;
        fake_reply(c, 503, "Service Unavailable", "<html>no shard</html>");
        return;
    }
    if (docs > 4 || too_large) {
        fake.answered_413++;
        fake_reply(c, 413, "Request Entity Too Large", "");
        return;
    }
    if (garble && !fake.garble_seen) {
        fake.garble_seen = true;
        fake.answered_garbage++;
        fake_reply(c, 200, "OK", "{\"errors\":false,\"items\":[");
        return;
    }
    cl_buf_t out;
    cl_buf_init(&out);
    cl_buf_append_str(&out, "{\"errors\":true,\"items\":[");
    size_t i = 0;
    for (const char *p = body; p < body + len; p = strchr(p, '\n') + 1) {
        if (strncmp(p, "{\"index\":", 9) == 0)
            continue;
        const char *eol = strchr(p, '\n');
        size_t n = (size_t)(eol - p);
        if (i++ > 0)
            cl_buf_append_char(&out, ',');
        if (memmem(p, n, "bad_doc", 7) != NULL) {
            cl_buf_append_str(&out, "{\"index\":{\"status\":400,\"error\":{\"type\":"
                                    "\"mapper_parsing_exception\",\"reason\":\"bad_doc\"}}}");
        } else if (memmem(p, n, "retry_me", 8) != NULL && !fake.retry_me_seen) {
            fake.retry_me_seen = true;
            cl_buf_append_str(&out, "{\"index\":{\"status\":429,\"error\":{\"type\":"
                                    "\"es_rejected_execution_exception\",\"reason\":\"busy\"}}}");
        } else {
            cl_buf_append_str(&out, "{\"index\":{\"status\":201}}");
        }
    }
    cl_buf_append_str(&out, "]}");
    fake_reply(c, 200, "OK", out.data);
    cl_buf_free(&out);
}

static void on_fake_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    CL_UNUSED(h);
    buf->base = cl_xmalloc(suggested);
    buf->len = suggested;
}

static void on_fake_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    fake_conn_t *c = stream->data;
    if (nread < 0) {
        free(buf->base);
        uv_close((uv_handle_t *)&c->tcp, on_fake_closed);
        return;
    }
    cl_buf_append(&c->in, buf->base, (size_t)nread);
    free(buf->base);
    for (;;) {
        char *end = strstr(c->in.data, "\r\n\r\n");
        if (end == NULL)
            return;
        const char *cl = strcasestr(c->in.data, "Content-Length:");
        size_t body_len = cl != NULL && cl < end ? strtoul(cl + 15, NULL, 10) : 0;
        size_t head_len = (size_t)(end - c->in.data) + 4;
        if (c->in.len < head_len + body_len)
            return;
        char *body = cl_xstrndup(c->in.data + head_len, body_len);
        fake_answer(c, body, body_len);
        free(body);
        memmove(c->in.data, c->in.data + head_len + body_len,
                c->in.len - head_len - body_len + 1);
        c->in.len -= head_len + body_len;
    }
}

static void on_fake_connection(uv_stream_t *server, int status)
{
    if (status < 0)
        return;
    fake_conn_t *c = cl_xcalloc(1, sizeof *c);
    cl_buf_init(&c->in);
    cl_buf_reserve(&c->in, 0);
    uv_tcp_init(&sm.loop, &c->tcp);
    c->tcp.data = c;
    fake.open_conns++;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) == 0)
        uv_read_start((uv_stream_t *)&c->tcp, on_fake_alloc, on_fake_read);
    else
        uv_close((uv_handle_t *)&c->tcp, on_fake_closed);
}

static void phase_fake_cluster(void)
{
    fprintf(stderr, "== scripted fake cluster\n");
    struct sockaddr_in addr;
    struct sockaddr_storage bound;
    int bound_len = sizeof bound;
    uv_ip4_addr("127.0.0.1", 0, &addr);
    uv_tcp_init(&sm.loop, &fake.server);
    uv_tcp_bind(&fake.server, (const struct sockaddr *)&addr, 0);
    uv_listen((uv_stream_t *)&fake.server, 16, on_fake_connection);
    uv_tcp_getsockname(&fake.server, (struct sockaddr *)&bound, &bound_len);
    snprintf(fake.url, sizeof fake.url, "http://127.0.0.1:%d",
             ntohs(((struct sockaddr_in *)&bound)->sin_port));

    const char *urls[] = {fake.url};
    open_sink_with(urls, 1, 500);
    enum { N = 20 };
    static const char *const markers[N] = {[3] = "bad_doc", [7] = "retry_me",
                                           [11] = "too_large", [15] = "garble_once"};
    cl_buf_t sources[N];
    char ids[N][16];
    cl_es_doc_t batch[N];
    reset_counts(N);
    for (size_t i = 0; i < N; i++) {
        cl_buf_init(&sources[i]);
        cl_buf_appendf(&sources[i], "{\"n\":%zu,\"marker\":\"%s\"}", i,
                       markers[i] ? markers[i] : "");
        snprintf(ids[i], sizeof ids[i], "doc-%zu", i);
        batch[i] = (cl_es_doc_t){.index = "fake", .id = ids[i], .source = sources[i].data,
                                 .source_len = sources[i].len, .tag = i};
    }
    char err[CL_ERR_LEN];
    check(cl_es_sink_submit(sm.sink, batch, N, err) == CL_OK, "submit %d to the fake cluster",
          N);
    sm.outstanding = N;
    run_phase("fake cluster");
    cl_es_sink_stats_t st;
    cl_es_sink_stats(sm.sink, &st);
    check(tags_seen_once() == N, "each document reported exactly once");
    check(sm.indexed == N - 2 && sm.failed == 2, "%zu indexed, %zu failed (bad_doc, too_large)",
          sm.indexed, sm.failed);
    check(sm.seen[3] == 1 && sm.seen[11] == 1, "the culprits were reported");
    check(fake.hung == 1 && fake.answered_503 == 1 && st.node_failures >= 2,
          "the timeout and the 503 marked the node down (%" PRIu64 " times)", st.node_failures);
    check(fake.answered_413 >= 3, "413 split the request down to the culprit (%u answers)",
          fake.answered_413);
    check(fake.answered_garbage == 1 && fake.retry_me_seen && st.docs_retried >= 2 * N + 2,
          "timeout, 503, unparsable 200 and item 429 were retried (%" PRIu64 " retries)",
          st.docs_retried);
    fprintf(stderr, "       %u requests answered; last failure: %s\n", fake.requests,
            sm.failed_reason);
    close_sink();
    for (size_t i = 0; i < N; i++)
        cl_buf_free(&sources[i]);
    uv_close((uv_handle_t *)&fake.server, NULL);
}

static void run_target(const char *base, double *rate_first, double *rate_again)
{
    fprintf(stderr, "== %s\n", base);
    sm.base = base;
    cleanup_cluster();
    const char *urls[] = {DEAD_URL, base};
    open_sink(urls, 2);
    reset_counts(0);
    phase_index_setup();
    check(sm.node_down_events >= 1, "index setup failed over from the dead first node (%zu "
                                    "events)",
          sm.node_down_events);

    smoke_doc_t *docs = make_docs(sm.docs);
    *rate_first = submit_all(docs, sm.docs, "first pass");
    check_outcomes(sm.docs, "first pass");
    check_cluster(docs, sm.docs, "first pass");

    *rate_again = submit_all(docs, sm.docs, "same documents again");
    check_outcomes(sm.docs, "second pass");
    check_cluster(docs, sm.docs, "second pass");

    phase_older_version(docs);

    cl_es_sink_stats_t st;
    cl_es_sink_stats(sm.sink, &st);
    fprintf(stderr,
            "       stats: %" PRIu64 " requests (%" PRIu64 " failed), %" PRIu64
            " bytes, %" PRIu64 " indexed, %" PRIu64 " superseded, %" PRIu64 " retried, %" PRIu64
            " failed, %" PRIu64 " node failures, %zu nodes up\n",
            st.requests, st.request_failures, st.bytes_sent, st.docs_indexed,
            st.docs_superseded, st.docs_retried, st.docs_failed, st.node_failures, st.nodes_up);
    check(st.node_failures >= 1 && st.docs_submitted == 2 * sm.docs + 1,
          "stats count node failures and submissions");
    close_sink();

    phase_all_nodes_down();
    phase_close_from_callback(docs, sm.docs);
    free_docs(docs, sm.docs);
    cleanup_cluster();
}

int main(int argc, char **argv)
{
    static const struct option options[] = {
        {"docs", required_argument, NULL, 'n'},
        {"max-in-flight", required_argument, NULL, 'k'},
        {"bulk-docs", required_argument, NULL, 'b'},
        {NULL, 0, NULL, 0},
    };
    sm.docs = 5000;
    sm.max_in_flight = 2;
    sm.bulk_docs = 1000;
    int c;
    while ((c = getopt_long(argc, argv, "", options, NULL)) != -1) {
        switch (c) {
        case 'n': sm.docs = strtoul(optarg, NULL, 10); break;
        case 'k': sm.max_in_flight = strtoul(optarg, NULL, 10); break;
        case 'b': sm.bulk_docs = strtoul(optarg, NULL, 10); break;
        default:
            fprintf(stderr, "usage: es_smoke [--docs N] [--max-in-flight K] [--bulk-docs D] "
                            "[URL...]\n");
            return 2;
        }
    }
    if (sm.docs < 100) {
        fprintf(stderr, "es_smoke: --docs must be at least 100\n");
        return 2;
    }
    static const char *const default_targets[] = {"http://127.0.0.1:19200",
                                                  "http://127.0.0.1:19201"};
    const char *const *targets = optind < argc ? (const char *const *)argv + optind
                                               : default_targets;
    size_t target_count = optind < argc ? (size_t)(argc - optind) : 2;

    curl_global_init(CURL_GLOBAL_DEFAULT);
    uv_loop_init(&sm.loop);
    uv_timer_init(&sm.loop, &sm.watchdog);
    uv_timer_init(&sm.loop, &sm.pause);
    for (size_t i = 0; i < target_count; i++) {
        double first = 0, again = 0;
        run_target(targets[i], &first, &again);
        fprintf(stderr, "== %s: %.0f docs/s first pass, %.0f docs/s again\n", targets[i], first,
                again);
    }
    phase_fake_cluster();
    uv_close((uv_handle_t *)&sm.watchdog, NULL);
    uv_close((uv_handle_t *)&sm.pause, NULL);
    uv_run(&sm.loop, UV_RUN_DEFAULT);
    check(fake.open_conns == 0, "the fake cluster's connections are closed");
    int rc = uv_loop_close(&sm.loop);
    check(rc == 0, "uv_loop_close() == 0 (%s)", rc == 0 ? "clean" : uv_strerror(rc));
    free(sm.seen);
    curl_global_cleanup();
    fprintf(stderr, "%s: %d failure(s)\n", sm.failures == 0 ? "PASS" : "FAIL", sm.failures);
    return sm.failures == 0 ? 0 : 1;
}

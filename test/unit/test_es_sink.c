/* Unit tests for the loop side of es_sink that need no cluster: parameter
 * and document validation, credentials kept out of messages, transport
 * failure classification, and the life cycle on a real libuv loop (close
 * cancels what is queued; a refused connection is logged once, retried and
 * marks the node down; a node that fails and then answers, against a fake
 * HTTP server, is logged once each way). The file includes es_sink.c to reach its static
 * helpers. Requests against real clusters: the integration tests. */
#include "../../src/es_sink.c"

#include "cl_test.h"
#include "cl_fake_http.h"
#include "cl_log_capture.h"

#define DEAD_URL "http://127.0.0.1:1"

static cl_es_sink_params_t valid_params(const char *const *urls, size_t count)
{
    cl_es_sink_params_t p = {
        .urls = urls,
        .url_count = count,
        .verify_tls = true,
        .bulk_max_docs = 100,
        .bulk_max_bytes = 1 << 20,
        .max_in_flight = 2,
        .request_timeout_ms = 5000,
        .retry_min_backoff_ms = 20,
        .retry_max_backoff_ms = 100,
        .node_down_for_ms = 1000,
    };
    return p;
}

/* ---- Pure helpers ---- */

static void test_display_url_hides_user_info(void)
{
    char *u = display_url("https://elastic:s3cret@es.example:9200");
    CL_ASSERT_STR_EQ("https://***@es.example:9200", u);
    free(u);
    u = display_url("http://127.0.0.1:9200");
    CL_ASSERT_STR_EQ("http://127.0.0.1:9200", u);
    free(u);
    u = display_url("http://proxy.example/es@v8");
    CL_ASSERT_STR_EQ("http://proxy.example/es@v8", u);
    free(u);
}

static void test_transport_failures_retry_and_mark_the_node_down(void)
{
    es_request_t req;
    memset(&req, 0, sizeof req);
    cl_es_request_result_t r;
    classify_transport_failure(&req, CURLE_COULDNT_CONNECT, &r);
    CL_ASSERT_INT_EQ(CL_ES_REQUEST_RETRY, r.outcome);
    CL_ASSERT(r.node_failed);
    CL_ASSERT(!r.needs_operator);
    CL_ASSERT_STR_EQ(curl_easy_strerror(CURLE_COULDNT_CONNECT), r.reason);
    snprintf(req.curl_error, sizeof req.curl_error, "Operation timed out after 30001 ms");
    classify_transport_failure(&req, CURLE_OPERATION_TIMEDOUT, &r);
    CL_ASSERT(r.node_failed);
    CL_ASSERT_STR_EQ("Operation timed out after 30001 ms", r.reason);
}

static void test_certificate_failures_need_an_operator(void)
{
    es_request_t req;
    memset(&req, 0, sizeof req);
    cl_es_request_result_t r;
    classify_transport_failure(&req, CURLE_PEER_FAILED_VERIFICATION, &r);
    CL_ASSERT_INT_EQ(CL_ES_REQUEST_RETRY, r.outcome);
    CL_ASSERT(r.needs_operator);
    classify_transport_failure(&req, CURLE_SSL_CACERT_BADFILE, &r);
    CL_ASSERT(r.needs_operator);
}

static void test_params_validation_names_the_problem(void)
{
    static const char *const urls[] = {"http://127.0.0.1:9200"};
    static const char *const bad_urls[] = {"127.0.0.1:9200"};
    char err[CL_ERR_LEN];
    cl_es_sink_params_t p = valid_params(urls, 1);
    CL_ASSERT_INT_EQ(CL_OK, cl_es_sink_params_validate(&p, err));
    p.url_count = 0;
    CL_ASSERT_INT_EQ(CL_ERR, cl_es_sink_params_validate(&p, err));
    p = valid_params(bad_urls, 1);
    CL_ASSERT_INT_EQ(CL_ERR, cl_es_sink_params_validate(&p, err));
    CL_ASSERT_STR_CONTAINS(err, "http:// or https://");
    p = valid_params(urls, 1);
    p.username = "elastic";
    CL_ASSERT_INT_EQ(CL_ERR, cl_es_sink_params_validate(&p, err));
    p.password = "secret";
    p.api_key = "key";
    CL_ASSERT_INT_EQ(CL_ERR, cl_es_sink_params_validate(&p, err));
    CL_ASSERT(strstr(err, "secret") == NULL && strstr(err, "key\"") == NULL);
    p = valid_params(urls, 1);
    p.retry_min_backoff_ms = 500;
    p.retry_max_backoff_ms = 100;
    CL_ASSERT_INT_EQ(CL_ERR, cl_es_sink_params_validate(&p, err));
    CL_ASSERT_STR_CONTAINS(err, "retry_min_backoff");
}

/* ---- On the loop ---- */

typedef struct {
    size_t indexed, failed, cancelled, other;
    int ensure_status;
    size_t ensure_calls;
    bool closed;
    uv_loop_t *loop;
} recorder_t;

static void record_doc(void *arg, uint64_t tag, cl_es_doc_outcome_t outcome, const char *reason)
{
    recorder_t *r = arg;
    CL_UNUSED(tag);
    switch (outcome) {
    case CL_ES_DOC_INDEXED:
        r->indexed++;
        break;
    case CL_ES_DOC_FAILED:
        r->failed++;
        break;
    case CL_ES_DOC_CANCELLED:
        r->cancelled++;
        CL_ASSERT_STR_CONTAINS(reason, "closed");
        break;
    case CL_ES_DOC_SUPERSEDED:
        r->other++;
        break;
    }
}

static void record_ensure(void *arg, int status, const char *message)
{
    recorder_t *r = arg;
    CL_UNUSED(message);
    r->ensure_status = status;
    r->ensure_calls++;
}

static void record_close(void *arg)
{
    recorder_t *r = arg;
    r->closed = true;
}

static cl_es_doc_t a_doc(const char *id, const char *source, uint64_t tag)
{
    cl_es_doc_t d = {
        .index = "stats", .id = id, .source = source, .source_len = strlen(source), .tag = tag};
    return d;
}

static void test_submit_is_all_or_nothing(void)
{
    static const char *const urls[] = {DEAD_URL};
    uv_loop_t loop;
    uv_loop_init(&loop);
    recorder_t rec = {.loop = &loop};
    cl_es_sink_params_t p = valid_params(urls, 1);
    cl_es_sink_t *sink = NULL;
    char err[CL_ERR_LEN];
    CL_ASSERT_INT_EQ(CL_OK, cl_es_sink_new(&loop, &p, record_doc, &rec, &sink, err));

    char long_id[CL_ES_ID_MAX_LEN + 2];
    memset(long_id, 'x', sizeof long_id - 1);
    long_id[sizeof long_id - 1] = '\0';
    cl_es_doc_t docs[3] = {a_doc("a", "{}", 0), a_doc("b", "", 1), a_doc("c", "{}", 2)};
    CL_ASSERT_INT_EQ(CL_ERR, cl_es_sink_submit(sink, docs, 3, err));
    CL_ASSERT_STR_CONTAINS(err, "document 1 (tag 1)");
    docs[1] = a_doc(long_id, "{}", 1);
    CL_ASSERT_INT_EQ(CL_ERR, cl_es_sink_submit(sink, docs, 3, err));
    CL_ASSERT_STR_CONTAINS(err, "the id must be 1 to 512 bytes");
    docs[1] = a_doc("b", "{}", 1);
    docs[1].version = UINT64_MAX;
    CL_ASSERT_INT_EQ(CL_ERR, cl_es_sink_submit(sink, docs, 3, err));
    CL_ASSERT_INT_EQ(0, cl_es_sink_pending(sink));

    CL_ASSERT_INT_EQ(CL_OK, cl_es_sink_close(sink, record_close, &rec));
    CL_ASSERT_INT_EQ(CL_ERR, cl_es_sink_close(sink, record_close, &rec));
    CL_ASSERT_INT_EQ(CL_ERR, cl_es_sink_submit(sink, docs, 1, err));
    uv_run(&loop, UV_RUN_DEFAULT);
    CL_ASSERT(rec.closed);
    CL_ASSERT_INT_EQ(0, rec.cancelled + rec.indexed + rec.failed);
    CL_ASSERT_INT_EQ(0, uv_loop_close(&loop));
}

static void test_close_cancels_queued_documents_and_index_setups(void)
{
    static const char *const urls[] = {DEAD_URL};
    uv_loop_t loop;
    uv_loop_init(&loop);
    recorder_t rec = {.loop = &loop, .ensure_status = 99};
    cl_es_sink_params_t p = valid_params(urls, 1);
    cl_es_sink_t *sink = NULL;
    char err[CL_ERR_LEN];
    CL_ASSERT_INT_EQ(CL_OK, cl_es_sink_new(&loop, &p, record_doc, &rec, &sink, err));
    cl_es_doc_t docs[3] = {a_doc("a", "{}", 0), a_doc("b", "{}", 1), a_doc("c", "{}", 2)};
    CL_ASSERT_INT_EQ(CL_OK, cl_es_sink_submit(sink, docs, 3, err));
    CL_ASSERT_INT_EQ(CL_OK, cl_es_sink_ensure_index(sink, "stats", cl_es_stats_mappings(),
                                                    record_ensure, &rec, err));
    CL_ASSERT_INT_EQ(CL_ERR,
                     cl_es_sink_ensure_index(sink, "stats", "{\"a\":", record_ensure, &rec, err));
    CL_ASSERT_STR_CONTAINS(err, "mappings for stats are invalid");
    CL_ASSERT_INT_EQ(3, cl_es_sink_pending(sink));
    /* Nothing runs inside the calls: no callback yet. */
    CL_ASSERT_INT_EQ(0, rec.cancelled);
    CL_ASSERT_INT_EQ(CL_OK, cl_es_sink_close(sink, record_close, &rec));
    uv_run(&loop, UV_RUN_DEFAULT);
    CL_ASSERT_INT_EQ(3, rec.cancelled);
    CL_ASSERT_INT_EQ(1, rec.ensure_calls);
    CL_ASSERT_INT_EQ(CL_ERR_RETRY, rec.ensure_status);
    CL_ASSERT(rec.closed);
    CL_ASSERT_INT_EQ(0, uv_loop_close(&loop));
}

static void on_deadline(uv_timer_t *t)
{
    bool *passed = t->data;
    *passed = true;
}

/* Run the loop until `requests` bulk requests failed; false after 5 s. */
static bool run_until_failures(uv_loop_t *loop, cl_es_sink_t *sink, uint64_t requests)
{
    bool passed = false;
    uv_timer_t deadline;
    uv_timer_init(loop, &deadline);
    deadline.data = &passed;
    uv_timer_start(&deadline, on_deadline, 5000, 0);
    cl_es_sink_stats_t st;
    cl_es_sink_stats(sink, &st);
    while (st.request_failures < requests && !passed) {
        uv_run(loop, UV_RUN_ONCE);
        cl_es_sink_stats(sink, &st);
    }
    uv_close((uv_handle_t *)&deadline, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    return st.request_failures >= requests;
}

/* The delay of the first line of `log` that starts with `prefix`. */
static unsigned long long retry_in_ms_of(const char *log, const char *prefix)
{
    const char *line = strstr(log, prefix);
    const char *retry = line != NULL ? strstr(line, "; retrying in ") : NULL;
    return retry != NULL ? strtoull(retry + strlen("; retrying in "), NULL, 10) : 0;
}

static void test_refused_connection_is_retried_logged_once_and_marks_the_node_down(void)
{
    static const char *const urls[] = {DEAD_URL};
    static const char warn_line[] =
        "level=warn module=elasticsearch msg=\"bulk on " DEAD_URL " failed: ";
    static const char debug_line[] =
        "level=debug module=elasticsearch msg=\"bulk on " DEAD_URL " failed: ";
    uv_loop_t loop;
    uv_loop_init(&loop);
    recorder_t rec = {.loop = &loop};
    cl_es_sink_params_t p = valid_params(urls, 1);
    cl_es_sink_t *sink = NULL;
    char err[CL_ERR_LEN];
    cl_log_capture_t log;
    cl_log_capture_start(&log);
    cl_log_set_level(CL_LOG_DEBUG);
    CL_ASSERT_INT_EQ(CL_OK, cl_es_sink_new(&loop, &p, record_doc, &rec, &sink, err));
    cl_es_doc_t doc = a_doc("a", "{\"clicks\":1}", 7);
    CL_ASSERT_INT_EQ(CL_OK, cl_es_sink_submit(sink, &doc, 1, err));
    CL_ASSERT(run_until_failures(&loop, sink, 3));

    cl_es_sink_stats_t st;
    cl_es_sink_stats(sink, &st);
    CL_ASSERT_INT_EQ(3, st.requests);
    CL_ASSERT_INT_EQ(3, st.request_failures);
    CL_ASSERT_INT_EQ(3, st.node_failures);
    CL_ASSERT(st.docs_retried >= 3);
    CL_ASSERT_INT_EQ(0, st.nodes_up);
    CL_ASSERT_INT_EQ(1, cl_es_sink_pending(sink));
    /* The first failure is news; the same failure again is a retry. */
    CL_ASSERT_INT_EQ(1, cl_log_capture_count(&log, warn_line));
    CL_ASSERT_INT_EQ(2, cl_log_capture_count(&log, debug_line));
    CL_ASSERT_INT_EQ(3, cl_log_capture_count(&log, "(HTTP 0), node marked down; retrying in "));
    CL_ASSERT_INT_EQ(0, cl_log_capture_count(&log, "answers again"));
    char *text = cl_log_capture_text(&log);
    unsigned long long delay = retry_in_ms_of(text, warn_line);
    free(text);
    CL_ASSERT(delay >= 10 && delay <= 100);

    CL_ASSERT_INT_EQ(CL_OK, cl_es_sink_close(sink, record_close, &rec));
    uv_run(&loop, UV_RUN_DEFAULT);
    CL_ASSERT_INT_EQ(1, rec.cancelled);
    CL_ASSERT(rec.closed);
    CL_ASSERT_INT_EQ(0, uv_loop_close(&loop));
    cl_log_set_level(CL_LOG_INFO);
    cl_log_capture_end(&log);
}

static bool indexed_reach(const recorder_t *rec, size_t n)
{
    return rec->indexed >= n;
}

/* Run the loop until `n` documents were indexed; false after 5 s. */
static bool run_until_indexed(uv_loop_t *loop, const recorder_t *rec, size_t n)
{
    bool passed = false;
    uv_timer_t deadline;
    uv_timer_init(loop, &deadline);
    deadline.data = &passed;
    uv_timer_start(&deadline, on_deadline, 5000, 0);
    while (!indexed_reach(rec, n) && !passed)
        uv_run(loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&deadline, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    return indexed_reach(rec, n);
}

static void test_a_node_that_fails_then_answers_is_logged_once_each_way(void)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    cl_fake_http_t es = {
        .answers = {{503, "{\"error\":{\"type\":\"unavailable_shards_exception\","
                          "\"reason\":\"busy\"},\"status\":503}"},
                    {200, "{\"errors\":false,\"items\":[{\"index\":{\"status\":201}}]}"}},
        .answer_count = 2,
    };
    cl_fake_http_start(&loop, &es);
    char url[64], failed[128], again[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%u", es.port);
    snprintf(failed, sizeof failed,
             "level=warn module=elasticsearch msg=\"bulk on %s failed: ", url);
    snprintf(again, sizeof again, "level=info module=elasticsearch msg=\"%s answers again\"", url);
    const char *const urls[] = {url};
    recorder_t rec = {.loop = &loop};
    cl_es_sink_params_t p = valid_params(urls, 1);
    cl_es_sink_t *sink = NULL;
    char err[CL_ERR_LEN];
    cl_log_capture_t log;
    cl_log_capture_start(&log);
    CL_ASSERT_INT_EQ(CL_OK, cl_es_sink_new(&loop, &p, record_doc, &rec, &sink, err));
    cl_es_doc_t doc = a_doc("a", "{\"clicks\":1}", 7);
    CL_ASSERT_INT_EQ(CL_OK, cl_es_sink_submit(sink, &doc, 1, err));
    CL_ASSERT(run_until_indexed(&loop, &rec, 1));

    CL_ASSERT_INT_EQ(2, es.requests);
    CL_ASSERT_INT_EQ(0, rec.failed + rec.cancelled + rec.other);
    CL_ASSERT_INT_EQ(1, cl_log_capture_count(&log, failed));
    CL_ASSERT_INT_EQ(1, cl_log_capture_count(&log, "(HTTP 503), node marked down; retrying in "));
    CL_ASSERT_INT_EQ(1, cl_log_capture_count(&log, again));
    cl_es_sink_stats_t st;
    cl_es_sink_stats(sink, &st);
    CL_ASSERT_INT_EQ(2, st.requests);
    CL_ASSERT_INT_EQ(1, st.request_failures);
    CL_ASSERT_INT_EQ(1, st.docs_indexed);
    CL_ASSERT_INT_EQ(1, st.nodes_up);

    CL_ASSERT_INT_EQ(CL_OK, cl_es_sink_close(sink, record_close, &rec));
    cl_fake_http_stop(&es);
    uv_run(&loop, UV_RUN_DEFAULT);
    CL_ASSERT(rec.closed);
    CL_ASSERT_INT_EQ(0, es.open);
    CL_ASSERT_INT_EQ(0, uv_loop_close(&loop));
    cl_log_capture_end(&log);
}

static const cl_test_case_t cases[] = {
    CL_TEST(test_display_url_hides_user_info),
    CL_TEST(test_transport_failures_retry_and_mark_the_node_down),
    CL_TEST(test_certificate_failures_need_an_operator),
    CL_TEST(test_params_validation_names_the_problem),
    CL_TEST(test_submit_is_all_or_nothing),
    CL_TEST(test_close_cancels_queued_documents_and_index_setups),
    CL_TEST(test_refused_connection_is_retried_logged_once_and_marks_the_node_down),
    CL_TEST(test_a_node_that_fails_then_answers_is_logged_once_each_way),
};

CL_TEST_MAIN(cases)

/* Unit tests for the admin server: routing and response formatting (pure),
 * and starting/closing a listener on a loop. The HTTP behaviour against real
 * clients (timeouts, limits, pipelining) is in test/integration/test_admin.py. */
#include "clickloop/admin.h"

#include "cl_test.h"

static void assert_route(const char *method, const char *target, int status, cl_admin_page_t page,
                         bool head)
{
    cl_admin_route_t r = cl_admin_route(method, target, strlen(target));
    if (r.status != status || r.page != page || r.head != head)
        CL_FAIL_("%s %s: expected status %d page %d head %d, got %d %d %d", method, target, status,
                 (int)page, (int)head, r.status, (int)r.page, (int)r.head);
}

static void test_route_get_of_each_page(void)
{
    assert_route("GET", "/healthz", 200, CL_ADMIN_PAGE_HEALTHZ, false);
    assert_route("GET", "/readyz", 200, CL_ADMIN_PAGE_READYZ, false);
    assert_route("GET", "/metrics", 200, CL_ADMIN_PAGE_METRICS, false);
}

static void test_route_head_is_get_without_body(void)
{
    assert_route("HEAD", "/metrics", 200, CL_ADMIN_PAGE_METRICS, true);
    assert_route("HEAD", "/healthz", 200, CL_ADMIN_PAGE_HEALTHZ, true);
}

static void test_route_ignores_query_and_accepts_absolute_form(void)
{
    assert_route("GET", "/metrics?name=x&y", 200, CL_ADMIN_PAGE_METRICS, false);
    assert_route("GET", "http://127.0.0.1:9400/readyz", 200, CL_ADMIN_PAGE_READYZ, false);
}

static void test_route_other_method_on_known_path_is_405(void)
{
    assert_route("POST", "/metrics", 405, CL_ADMIN_PAGE_NONE, false);
    assert_route("DELETE", "/healthz", 405, CL_ADMIN_PAGE_NONE, false);
    assert_route("OPTIONS", "/readyz", 405, CL_ADMIN_PAGE_NONE, false);
}

static void test_route_unknown_path_is_404_whatever_the_method(void)
{
    assert_route("GET", "/", 404, CL_ADMIN_PAGE_NONE, false);
    assert_route("GET", "/metrics/", 404, CL_ADMIN_PAGE_NONE, false);
    assert_route("GET", "/METRICS", 404, CL_ADMIN_PAGE_NONE, false);
    assert_route("POST", "/nope", 404, CL_ADMIN_PAGE_NONE, false);
    assert_route("OPTIONS", "*", 404, CL_ADMIN_PAGE_NONE, false);
}

static void test_route_unparsable_target_is_400(void)
{
    assert_route("GET", "", 400, CL_ADMIN_PAGE_NONE, false);
    assert_route("CONNECT", "example.org:443", 400, CL_ADMIN_PAGE_NONE, false);
}

static char *format(const cl_admin_response_t *r)
{
    cl_buf_t out;
    cl_buf_init(&out);
    cl_admin_format_response(r, &out);
    return cl_buf_steal(&out, NULL);
}

static void test_format_ok_with_body(void)
{
    cl_admin_response_t r = {.status = 200, .body = "ok\n", .body_len = 3};
    char *text = format(&r);
    CL_ASSERT_STR_EQ("HTTP/1.1 200 OK\r\n"
                     "Content-Type: text/plain; charset=utf-8\r\n"
                     "Content-Length: 3\r\n"
                     "Cache-Control: no-store\r\n"
                     "\r\n"
                     "ok\n",
                     text);
    free(text);
}

static void test_format_head_keeps_length_but_not_body(void)
{
    cl_admin_response_t r = {.status = 200,
                             .content_type = CL_METRICS_CONTENT_TYPE,
                             .body = "x 1\n",
                             .body_len = 4,
                             .head = true,
                             .date = "Sun, 06 Nov 1994 08:49:37 GMT"};
    char *text = format(&r);
    CL_ASSERT_STR_EQ("HTTP/1.1 200 OK\r\n"
                     "Date: Sun, 06 Nov 1994 08:49:37 GMT\r\n"
                     "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
                     "Content-Length: 4\r\n"
                     "Cache-Control: no-store\r\n"
                     "\r\n",
                     text);
    free(text);
}

static void test_format_405_with_allow_and_close(void)
{
    cl_admin_response_t r = {.status = 405,
                             .body = "Method Not Allowed\n",
                             .body_len = 19,
                             .allow = "GET, HEAD",
                             .close = true};
    char *text = format(&r);
    CL_ASSERT_STR_EQ("HTTP/1.1 405 Method Not Allowed\r\n"
                     "Content-Type: text/plain; charset=utf-8\r\n"
                     "Content-Length: 19\r\n"
                     "Cache-Control: no-store\r\n"
                     "Allow: GET, HEAD\r\n"
                     "Connection: close\r\n"
                     "\r\n"
                     "Method Not Allowed\n",
                     text);
    free(text);
}

static void test_format_http10_keep_alive_says_so(void)
{
    cl_admin_response_t r = {.status = 503, .http10_keep_alive = true};
    char *text = format(&r);
    CL_ASSERT_STR_CONTAINS(text, "HTTP/1.1 503 Service Unavailable\r\n");
    CL_ASSERT_STR_CONTAINS(text, "Content-Length: 0\r\n");
    CL_ASSERT_STR_CONTAINS(text, "\r\nConnection: keep-alive\r\n\r\n");
    free(text);
}

static void test_format_limit_statuses_have_reason_phrases(void)
{
    static const struct {
        int status;
        const char *line;
    } cases_[] = {
        {400, "HTTP/1.1 400 Bad Request\r\n"},
        {404, "HTTP/1.1 404 Not Found\r\n"},
        {413, "HTTP/1.1 413 Payload Too Large\r\n"},
        {414, "HTTP/1.1 414 URI Too Long\r\n"},
        {431, "HTTP/1.1 431 Request Header Fields Too Large\r\n"},
    };
    for (size_t i = 0; i < CL_ARRAY_LEN(cases_); i++) {
        cl_admin_response_t r = {.status = cases_[i].status, .close = true};
        char *text = format(&r);
        CL_ASSERT_STR_CONTAINS(text, cases_[i].line);
        free(text);
    }
}

/* ---- listener on a loop --------------------------------------------------- */

static void on_closed(void *arg)
{
    (*(int *)arg)++;
}

static void test_start_on_free_port_and_close_cleanly(void)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    cl_metrics_t *m = cl_metrics_new();
    cl_admin_params_t p = {.host = "127.0.0.1", .port = 0};
    cl_admin_t *a = cl_admin_new(&loop, &p, m, NULL, NULL);
    char err[CL_ERR_LEN] = "";
    CL_ASSERT_INT_EQ(CL_OK, cl_admin_start(a, err));
    CL_ASSERT_STR_EQ("", err);
    CL_ASSERT(cl_admin_port(a) != 0);
    int closed = 0;
    cl_admin_close(a, on_closed, &closed);
    CL_ASSERT_INT_EQ(0, closed); /* the callback runs from the loop */
    uv_run(&loop, UV_RUN_DEFAULT);
    CL_ASSERT_INT_EQ(1, closed);
    CL_ASSERT_INT_EQ(0, uv_loop_close(&loop));
    cl_metrics_free(m);
}

static void test_address_in_use_is_reported_with_the_address(void)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    cl_metrics_t *m = cl_metrics_new();
    cl_admin_params_t p = {.host = "127.0.0.1", .port = 0};
    cl_admin_t *first = cl_admin_new(&loop, &p, m, NULL, NULL);
    char err[CL_ERR_LEN] = "";
    CL_ASSERT_INT_EQ(CL_OK, cl_admin_start(first, err));
    p.port = cl_admin_port(first);
    cl_admin_t *second = cl_admin_new(&loop, &p, m, NULL, NULL);
    CL_ASSERT_INT_EQ(CL_ERR, cl_admin_start(second, err));
    char expected[128];
    snprintf(expected, sizeof expected, "cannot listen on 127.0.0.1:%u: address already in use",
             (unsigned)p.port);
    CL_ASSERT_STR_CONTAINS(err, expected);
    int closed = 0;
    cl_admin_close(second, on_closed, &closed);
    cl_admin_close(first, on_closed, &closed);
    uv_run(&loop, UV_RUN_DEFAULT);
    CL_ASSERT_INT_EQ(2, closed);
    CL_ASSERT_INT_EQ(0, uv_loop_close(&loop));
    cl_metrics_free(m);
}

static void test_bad_address_is_reported_with_the_address(void)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    cl_metrics_t *m = cl_metrics_new();
    cl_admin_params_t p = {.host = "::zz", .port = 9400};
    cl_admin_t *a = cl_admin_new(&loop, &p, m, NULL, NULL);
    char err[CL_ERR_LEN] = "";
    CL_ASSERT_INT_EQ(CL_ERR, cl_admin_start(a, err));
    CL_ASSERT_STR_CONTAINS(err, "[::zz]:9400 is not an IP address");
    int closed = 0;
    cl_admin_close(a, on_closed, &closed);
    uv_run(&loop, UV_RUN_DEFAULT);
    CL_ASSERT_INT_EQ(1, closed);
    CL_ASSERT_INT_EQ(0, uv_loop_close(&loop));
    cl_metrics_free(m);
}

static void test_start_on_ipv6_loopback(void)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    cl_metrics_t *m = cl_metrics_new();
    cl_admin_params_t p = {.host = "::1", .port = 0};
    cl_admin_t *a = cl_admin_new(&loop, &p, m, NULL, NULL);
    char err[CL_ERR_LEN] = "";
    int rc = cl_admin_start(a, err);
    /* A host without IPv6 fails with a message naming the address. */
    if (rc != CL_OK)
        CL_ASSERT_STR_CONTAINS(err, "[::1]:0");
    else
        CL_ASSERT(cl_admin_port(a) != 0);
    cl_admin_close(a, NULL, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    CL_ASSERT_INT_EQ(0, uv_loop_close(&loop));
    cl_metrics_free(m);
}

static void test_close_without_start(void)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    cl_metrics_t *m = cl_metrics_new();
    cl_admin_params_t p = {.host = "127.0.0.1", .port = 0};
    cl_admin_t *a = cl_admin_new(&loop, &p, m, NULL, NULL);
    int closed = 0;
    cl_admin_close(a, on_closed, &closed);
    uv_run(&loop, UV_RUN_DEFAULT);
    CL_ASSERT_INT_EQ(1, closed);
    CL_ASSERT_INT_EQ(0, uv_loop_close(&loop));
    cl_metrics_free(m);
}

static void test_server_registers_its_own_metrics(void)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    cl_metrics_t *m = cl_metrics_new();
    cl_admin_params_t p = {.host = "127.0.0.1", .port = 0};
    cl_admin_t *a = cl_admin_new(&loop, &p, m, NULL, NULL);
    cl_buf_t out;
    cl_buf_init(&out);
    cl_metrics_render(m, &out);
    CL_ASSERT_STR_CONTAINS(out.data, "# TYPE clickloop_admin_requests_total counter\n");
    CL_ASSERT_STR_CONTAINS(out.data, "\nclickloop_admin_connections 0\n");
    CL_ASSERT_STR_CONTAINS(out.data, "# TYPE clickloop_event_loop_lag_seconds histogram\n");
    cl_buf_free(&out);
    cl_admin_close(a, NULL, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    CL_ASSERT_INT_EQ(0, uv_loop_close(&loop));
    cl_metrics_free(m);
}

/* cl_admin_answer_bytes: the connection's parsing and answering, on a string. */
static bool not_ready(void *arg, cl_buf_t *missing)
{
    CL_UNUSED(arg);
    cl_buf_append_str(missing, "no partitions");
    return false;
}

static size_t answer_bytes(const char *req, const cl_admin_params_t *p, char **out)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    cl_metrics_t *m = cl_metrics_new();
    cl_admin_t *a = cl_admin_new(&loop, p, m, not_ready, NULL);
    cl_buf_t buf;
    cl_buf_init(&buf);
    size_t n = cl_admin_answer_bytes(a, req, strlen(req), &buf);
    cl_buf_append_char(&buf, '\0');
    *out = cl_buf_steal(&buf, NULL);
    cl_admin_close(a, NULL, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    cl_metrics_free(m);
    return n;
}

static void test_answer_bytes_answers_pipelined_requests_in_order(void)
{
    cl_admin_params_t p = {.host = "127.0.0.1"};
    char *out = NULL;
    size_t n = answer_bytes("GET /readyz HTTP/1.1\r\n\r\n"
                            "HEAD /metrics HTTP/1.1\r\n\r\n"
                            "GET /nope HTTP/1.1\r\n\r\n"
                            "GET /healthz HTTP/1.1\r\n",
                            &p, &out);
    CL_ASSERT_INT_EQ(3, n); /* the last request is incomplete */
    const char *second = strstr(out, "HTTP/1.1 200 OK\r\n");
    const char *third = strstr(out, "HTTP/1.1 404 Not Found\r\n");
    CL_ASSERT(strncmp(out, "HTTP/1.1 503 Service Unavailable\r\n", 34) == 0);
    CL_ASSERT_STR_CONTAINS(out, "not ready: no partitions\n");
    CL_ASSERT(second != NULL && third != NULL && second < third);
    CL_ASSERT(strstr(out, "# TYPE") == NULL); /* HEAD: no body */
    free(out);
}

static void test_answer_bytes_applies_the_limits_and_stops_at_close(void)
{
    cl_admin_params_t p = {.host = "127.0.0.1", .max_header_bytes = 32, .max_body_bytes = 4};
    char *out = NULL;
    CL_ASSERT_INT_EQ(
        1,
        answer_bytes("GET /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa HTTP/1.1\r\n\r\n", &p, &out));
    CL_ASSERT(strncmp(out, "HTTP/1.1 414 ", 13) == 0);
    CL_ASSERT_STR_CONTAINS(out, "Connection: close\r\n");
    free(out);
    CL_ASSERT_INT_EQ(1,
                     answer_bytes("POST /x HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", &p, &out));
    CL_ASSERT(strncmp(out, "HTTP/1.1 413 ", 13) == 0);
    free(out);
    CL_ASSERT_INT_EQ(1, answer_bytes("GARBAGE\r\n\r\nGET /healthz HTTP/1.1\r\n\r\n", &p, &out));
    CL_ASSERT(strncmp(out, "HTTP/1.1 400 ", 13) == 0);
    free(out);
    CL_ASSERT_INT_EQ(1, answer_bytes("GET /x HTTP/1.1\r\nConnection: close\r\n\r\n"
                                     "GET /x HTTP/1.1\r\n\r\n",
                                     &p, &out));
    CL_ASSERT(strncmp(out, "HTTP/1.1 404 ", 13) == 0);
    free(out);
}

static const cl_test_case_t cases[] = {
    CL_TEST(test_route_get_of_each_page),
    CL_TEST(test_route_head_is_get_without_body),
    CL_TEST(test_route_ignores_query_and_accepts_absolute_form),
    CL_TEST(test_route_other_method_on_known_path_is_405),
    CL_TEST(test_route_unknown_path_is_404_whatever_the_method),
    CL_TEST(test_route_unparsable_target_is_400),
    CL_TEST(test_format_ok_with_body),
    CL_TEST(test_format_head_keeps_length_but_not_body),
    CL_TEST(test_format_405_with_allow_and_close),
    CL_TEST(test_format_http10_keep_alive_says_so),
    CL_TEST(test_format_limit_statuses_have_reason_phrases),
    CL_TEST(test_start_on_free_port_and_close_cleanly),
    CL_TEST(test_address_in_use_is_reported_with_the_address),
    CL_TEST(test_bad_address_is_reported_with_the_address),
    CL_TEST(test_start_on_ipv6_loopback),
    CL_TEST(test_close_without_start),
    CL_TEST(test_server_registers_its_own_metrics),
    CL_TEST(test_answer_bytes_answers_pipelined_requests_in_order),
    CL_TEST(test_answer_bytes_applies_the_limits_and_stops_at_close),
};

CL_TEST_MAIN(cases)

/* Unit tests for curl_uv, libcurl's multi interface on a libuv loop: a
 * transfer to a tiny HTTP server (cl_fake_http.h) completes with its status, a
 * refused one with its error, each exactly once; an aborted transfer and the
 * transfers a close ends never call back; a completion callback may close
 * the glue. Every test closes every handle and checks that the loop closes
 * cleanly. */
#include "clickloop/curl_uv.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "cl_test.h"
#include "cl_fake_http.h"

#define DEAD_URL "http://127.0.0.1:1/"

/* ---- Transfers ------------------------------------------------------------------------------ */

typedef struct {
    uv_loop_t loop;
    cl_curl_uv_t *cu;
    unsigned int done;
    CURLcode result;
    long http_status;
    bool close_in_done; /* the completion callback closes the glue */
    bool closed;
} world_t;

static void on_closed(void *arg)
{
    world_t *w = arg;
    w->closed = true;
}

static void on_done(CURL *easy, CURLcode result, void *arg)
{
    world_t *w = arg;
    w->done++;
    w->result = result;
    curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &w->http_status);
    curl_easy_cleanup(easy);
    if (w->close_in_done)
        cl_curl_uv_close(w->cu, on_closed, w);
}

static CURL *easy_for(const char *url)
{
    CURL *e = curl_easy_init();
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, 5000L);
    return e;
}

static void world_open(world_t *w)
{
    char err[CL_ERR_LEN];
    memset(w, 0, sizeof *w);
    uv_loop_init(&w->loop);
    CL_ASSERT_INT_EQ(CL_OK, cl_curl_uv_new(&w->loop, &w->cu, err));
}

/* Close the glue unless a callback did, run the loop dry, check it closes. */
static void world_close(world_t *w)
{
    if (!w->closed && !w->close_in_done)
        cl_curl_uv_close(w->cu, on_closed, w);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    CL_ASSERT(w->closed);
    CL_ASSERT_INT_EQ(0, uv_loop_close(&w->loop));
}

static void test_a_transfer_completes_once_with_the_answer(void)
{
    world_t w;
    world_open(&w);
    cl_fake_http_t server = {.answers = {{204, ""}}, .answer_count = 1};
    cl_fake_http_start(&w.loop, &server);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%u/x", server.port);
    cl_curl_uv_add(w.cu, easy_for(url), on_done, &w);
    CL_ASSERT_INT_EQ(0, w.done); /* never inside the call */
    while (w.done == 0 && uv_run(&w.loop, UV_RUN_ONCE) != 0)
        ;
    CL_ASSERT_INT_EQ(1, w.done);
    CL_ASSERT_INT_EQ(CURLE_OK, w.result);
    CL_ASSERT_INT_EQ(204, w.http_status);
    CL_ASSERT_INT_EQ(1, server.requests);
    cl_fake_http_stop(&server);
    world_close(&w);
    CL_ASSERT_INT_EQ(1, w.done);
    CL_ASSERT_INT_EQ(0, server.open);
}

static void test_a_refused_transfer_completes_once_with_its_error(void)
{
    world_t w;
    world_open(&w);
    cl_curl_uv_add(w.cu, easy_for(DEAD_URL), on_done, &w);
    while (w.done == 0 && uv_run(&w.loop, UV_RUN_ONCE) != 0)
        ;
    CL_ASSERT_INT_EQ(1, w.done);
    CL_ASSERT_INT_EQ(CURLE_COULDNT_CONNECT, w.result);
    CL_ASSERT_INT_EQ(0, w.http_status);
    world_close(&w);
    CL_ASSERT_INT_EQ(1, w.done);
}

static void test_an_aborted_transfer_never_calls_back(void)
{
    world_t w;
    world_open(&w);
    CURL *aborted = easy_for(DEAD_URL);
    cl_curl_uv_add(w.cu, aborted, on_done, &w);
    cl_curl_uv_add(w.cu, easy_for(DEAD_URL), on_done, &w);
    cl_curl_uv_abort(w.cu, aborted);
    curl_easy_cleanup(aborted); /* the handle stays the caller's */
    while (w.done == 0 && uv_run(&w.loop, UV_RUN_ONCE) != 0)
        ;
    world_close(&w);
    CL_ASSERT_INT_EQ(1, w.done);
}

static void test_close_ends_running_transfers_without_their_callbacks(void)
{
    world_t w;
    world_open(&w);
    CURL *a = easy_for(DEAD_URL), *b = easy_for(DEAD_URL);
    cl_curl_uv_add(w.cu, a, on_done, &w);
    cl_curl_uv_add(w.cu, b, on_done, &w);
    world_close(&w);
    CL_ASSERT_INT_EQ(0, w.done);
    curl_easy_cleanup(a);
    curl_easy_cleanup(b);
}

static void test_a_completion_callback_may_close_the_glue(void)
{
    world_t w;
    world_open(&w);
    w.close_in_done = true;
    cl_curl_uv_add(w.cu, easy_for(DEAD_URL), on_done, &w);
    world_close(&w);
    CL_ASSERT_INT_EQ(1, w.done);
}

static const cl_test_case_t cases[] = {
    CL_TEST(test_a_transfer_completes_once_with_the_answer),
    CL_TEST(test_a_refused_transfer_completes_once_with_its_error),
    CL_TEST(test_an_aborted_transfer_never_calls_back),
    CL_TEST(test_close_ends_running_transfers_without_their_callbacks),
    CL_TEST(test_a_completion_callback_may_close_the_glue),
};

int main(int argc, char **argv)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    int rc = cl_test_run(cases, CL_ARRAY_LEN(cases), argc, argv);
    curl_global_cleanup();
    return rc;
}

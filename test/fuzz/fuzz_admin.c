/* libFuzzer target: the admin server's handling of request bytes (src/admin.c,
 * cl_admin_answer_bytes: the parser, its limits, the routes and the pages
 * that a connection runs), on a server that is made but never listens, with a
 * small registry and a readiness callback that says no half of the time.
 * Small limits let the fuzzer reach 414, 431 and 413. Beyond the sanitizers it
 * checks that every answer is a well-formed HTTP/1.1 status line followed by
 * headers, and that some bytes always get an answer or are an incomplete
 * request. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clickloop/admin.h"

static uv_loop_t loop;
static cl_metrics_t *metrics;
static cl_admin_t *admin;
static unsigned calls;

static bool ready(void *arg, cl_buf_t *missing)
{
    CL_UNUSED(arg);
    if (calls++ % 2 == 0)
        return true;
    cl_buf_append_str(missing, "no Kafka partitions assigned");
    return false;
}

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_admin: %s\n", what);
        abort();
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    CL_UNUSED(argc);
    CL_UNUSED(argv);
    check(uv_loop_init(&loop) == 0, "uv_loop_init");
    metrics = cl_metrics_new();
    cl_counter_t *c = cl_metrics_counter(metrics, "fuzz_total", "A counter.", "kind", NULL);
    cl_counter_add(c, CL_LABELS("a\"b\\c\nd"), 3);
    cl_admin_params_t params = {
        .host = "127.0.0.1",
        .max_header_bytes = 256,
        .max_body_bytes = 16,
    };
    admin = cl_admin_new(&loop, &params, metrics, ready, NULL);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cl_buf_t out;
    cl_buf_init(&out);
    size_t n = cl_admin_answer_bytes(admin, (const char *)data, size, &out);
    if (n > 0) {
        check(out.len > 12 && memcmp(out.data, "HTTP/1.1 ", 9) == 0, "no status line");
        int status = atoi(out.data + 9);
        check(status >= 200 && status <= 599, "status out of range");
        check(memmem(out.data, out.len, "\r\n\r\n", 4) != NULL, "headers not ended");
    } else {
        check(out.len == 0, "bytes without a response");
    }
    /* A response per request at most: a request takes at least "GET / HTTP/1.1\r\n\r\n"
     * minus the version (HTTP/0.9 is not accepted) bytes. */
    check(n <= size / 8 + 1, "more responses than requests could fit");
    cl_buf_free(&out);
    return 0;
}

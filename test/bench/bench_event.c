/* Micro-benchmark of the event parser: parses N synthetic events (every field
 * set, URLs of about 100 bytes that differ from event to event) on one core
 * and prints events per second; it fails if the parser refuses one of them.
 * Run by `meson test -C <build> --benchmark` (N = 1 000 000), or by hand as
 * `bench_event [N]`. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clickloop/common.h"
#include "clickloop/event.h"

#define DISTINCT_PAYLOADS 1024

static const char *const paths[] = {"products", "cart",       "checkout",      "search",
                                    "account",  "blog/posts", "help/articles", "categories/shoes"};
static const char *const countries[] = {"US", "de", "FR", "jp", "BR", "in"};
static const char *const browsers[] = {"Chrome", "Firefox", "Safari", "Edge"};

static char *make_payload(unsigned i, size_t *len)
{
    char url[160];
    snprintf(url, sizeof url,
             "https://shop.example.com/%s/item-%06u?utm_source=newsletter&utm_medium=email"
             "&ref=%08x",
             paths[i % CL_ARRAY_LEN(paths)], i * 7919u, i * 2654435761u);
    char buf[1024];
    int n = snprintf(buf, sizeof buf,
                     "{\"event_id\":\"evt-%08u-%04u\",\"user_id\":\"user-%u\","
                     "\"timestamp\":\"2026-11-28T14:%02u:%02u.%03uZ\",\"url\":\"%s\","
                     "\"country\":\"%s\",\"city\":\"Springfield\",\"browser\":\"%s\","
                     "\"os\":\"Linux\",\"device\":\"desktop\","
                     "\"user_agent\":\"Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 "
                     "Firefox/128.0\",\"time_spent_ms\":%u}",
                     i, i % 9973, i % 50000, i % 60, (i / 60) % 60, i % 1000, url,
                     countries[i % CL_ARRAY_LEN(countries)], browsers[i % CL_ARRAY_LEN(browsers)],
                     (i * 37) % 600000);
    *len = (size_t)n;
    return cl_xstrndup(buf, (size_t)n);
}

int main(int argc, char **argv)
{
    long count = argc > 1 ? atol(argv[1]) : 1000000;
    if (count <= 0) {
        fprintf(stderr, "usage: bench_event [N > 0]\n");
        return 2;
    }

    char err[CL_ERR_LEN];
    cl_event_parser_t *parser;
    if (cl_event_parser_new(NULL, 65536, &parser, err) != CL_OK) {
        fprintf(stderr, "bench_event: %s\n", err);
        return 1;
    }
    char *payloads[DISTINCT_PAYLOADS];
    size_t lens[DISTINCT_PAYLOADS];
    size_t total_bytes = 0;
    for (unsigned i = 0; i < DISTINCT_PAYLOADS; i++) {
        payloads[i] = make_payload(i, &lens[i]);
        total_bytes += lens[i];
    }

    uint64_t checksum = 0;
    uint64_t bytes = 0;
    uint64_t start = cl_now_ms();
    for (long i = 0; i < count; i++) {
        size_t k = (size_t)i % DISTINCT_PAYLOADS;
        cl_event_t ev;
        if (cl_event_parse(parser, payloads[k], lens[k], "clicks", 0, i, &ev, err) != CL_OK) {
            fprintf(stderr, "bench_event: payload %zu rejected: %s\n", k, err);
            return 1;
        }
        checksum += (uint64_t)ev.ts_ms + ev.url_len; /* keep the work observable */
        bytes += lens[k];
        cl_event_clear(&ev);
    }
    uint64_t elapsed_ms = cl_now_ms() - start;
    double seconds = (elapsed_ms ? (double)elapsed_ms : 1.0) / 1000.0;

    printf("%ld events in %.3f s: %.0f events/s, %.1f MB/s, %.2f us/event "
           "(mean payload %zu bytes, checksum %" PRIu64 ")\n",
           count, seconds, (double)count / seconds, (double)bytes / seconds / 1e6,
           seconds * 1e6 / (double)count, total_bytes / DISTINCT_PAYLOADS, checksum);

    for (unsigned i = 0; i < DISTINCT_PAYLOADS; i++)
        free(payloads[i]);
    cl_event_parser_free(parser);
    return 0;
}

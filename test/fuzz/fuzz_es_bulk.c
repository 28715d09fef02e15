/* libFuzzer target: the classification of `_bulk` answers (src/es_bulk.c,
 * cl_es_bulk_parse), i.e. whatever an Elasticsearch or OpenSearch node, or
 * something pretending to be one, sends back. The first byte picks the HTTP
 * status, the second the number of documents the request carried; the rest is
 * the body. Beyond the sanitizers it checks the promises of es_bulk.h: items
 * only with a body of exactly doc_count items, counts that add up, a reason
 * for every item that is not OK, terminated reasons. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clickloop/es_bulk.h"

static const long statuses[] = {200, 201, 200, 200, 400, 401, 404, 408, 409,
                                413, 429, 500, 503, 100, 302, 299, 0,   999};

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_es_bulk: %s\n", what);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    long status = statuses[data[0] % (sizeof statuses / sizeof statuses[0])];
    size_t doc_count = data[1] % 24;
    const char *body = (const char *)data + 2;
    size_t len = size - 2;

    cl_es_bulk_result_t r;
    cl_es_bulk_parse(status, body, len, doc_count, &r);
    check(memchr(r.request.reason, '\0', sizeof r.request.reason) != NULL, "reason unterminated");
    check(memchr(r.request.error_type, '\0', sizeof r.request.error_type) != NULL,
          "error_type unterminated");
    if (r.outcome == CL_ES_BULK_ITEMS) {
        check(status >= 200 && status < 300, "items from a non-2xx answer");
        check(r.item_count == doc_count, "item count differs from the documents sent");
        check(r.ok + r.superseded + r.retry + r.drop == r.item_count, "counts do not add up");
        for (size_t i = 0; i < r.item_count; i++) {
            const cl_es_item_result_t *it = &r.items[i];
            check((it->outcome == CL_ES_ITEM_OK) == (it->reason == NULL),
                  "an item's reason does not match its outcome");
        }
    } else {
        check(r.items == NULL && r.item_count == 0, "items outside CL_ES_BULK_ITEMS");
        check(r.outcome != CL_ES_BULK_SPLIT || doc_count > 1, "split of a single document");
    }
    cl_es_bulk_result_free(&r);

    /* The request-level classifier on its own, as the sink calls it for
     * setup requests. */
    cl_es_request_result_t req;
    cl_es_classify_response(status, body, len, &req);
    check(memchr(req.reason, '\0', sizeof req.reason) != NULL, "request reason unterminated");
    return 0;
}

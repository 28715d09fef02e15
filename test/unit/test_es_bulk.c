/* Unit tests for es_bulk: NDJSON framing and limits, JSON escaping, source
 * checks, the classification of bulk answers (request level and per item)
 * and the retry backoff. Sample answers follow what Elasticsearch 8.19 and
 * OpenSearch 2.19 send (with the sink's filter_path). */
#include "clickloop/es_bulk.h"

#include <json-c/json.h>

#include "cl_test.h"

static cl_es_bulk_doc_t doc_of(const char *index, const char *id, const char *source)
{
    cl_es_bulk_doc_t d = {index, strlen(index), id, strlen(id), source, strlen(source), 0};
    return d;
}

static size_t count_lines(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

/* ---- Framing ---- */

static void test_one_document_is_action_line_source_line_each_ending_in_newline(void)
{
    cl_es_bulk_t b;
    cl_es_bulk_init(&b, 10, 1 << 20);
    cl_es_bulk_doc_t d = doc_of("stats", "1h:0:DE:ab", "{\"clicks\":1}");
    CL_ASSERT(cl_es_bulk_add(&b, &d));
    CL_ASSERT_STR_EQ("{\"index\":{\"_index\":\"stats\",\"_id\":\"1h:0:DE:ab\"}}\n{\"clicks\":1}\n",
                     b.body.data);
    CL_ASSERT_INT_EQ(1, b.docs);
    cl_buf_free(&b.body);
}

static void test_every_line_including_the_last_ends_in_newline(void)
{
    cl_es_bulk_t b;
    cl_es_bulk_init(&b, 0, 0);
    for (int i = 0; i < 3; i++) {
        cl_es_bulk_doc_t d = doc_of("i", "x", "{}");
        CL_ASSERT(cl_es_bulk_add(&b, &d));
    }
    CL_ASSERT_INT_EQ(6, count_lines(b.body.data));
    CL_ASSERT_INT_EQ('\n', b.body.data[b.body.len - 1]);
    CL_ASSERT(strstr(b.body.data, "\n\n") == NULL);
    cl_buf_free(&b.body);
}

static void test_newlines_inside_a_pretty_printed_source_become_spaces(void)
{
    cl_es_bulk_t b;
    cl_es_bulk_init(&b, 0, 0);
    cl_es_bulk_doc_t d = doc_of("i", "x", "{\n  \"a\": 1,\r\n  \"b\": \"x\"\n}");
    CL_ASSERT(cl_es_bulk_add(&b, &d));
    CL_ASSERT_INT_EQ(2, count_lines(b.body.data));
    CL_ASSERT_STR_CONTAINS(b.body.data, "\n{   \"a\": 1,    \"b\": \"x\" }\n");
    cl_buf_free(&b.body);
}

static void test_version_asks_for_external_gte(void)
{
    cl_es_bulk_t b;
    cl_es_bulk_init(&b, 0, 0);
    cl_es_bulk_doc_t d = doc_of("i", "x", "{}");
    d.version = 1715904000123ULL;
    CL_ASSERT(cl_es_bulk_add(&b, &d));
    CL_ASSERT_STR_EQ("{\"index\":{\"_index\":\"i\",\"_id\":\"x\",\"version\":1715904000123,"
                     "\"version_type\":\"external_gte\"}}\n{}\n",
                     b.body.data);
    cl_buf_free(&b.body);
}

static void test_index_and_id_are_json_escaped(void)
{
    const char *index = "we\"ird\\idx";
    const char *id = "id\twith\x01"
                     "ctl\nand \xc3\xa9";
    cl_es_bulk_t b;
    cl_es_bulk_init(&b, 0, 0);
    cl_es_bulk_doc_t d = doc_of(index, id, "{}");
    CL_ASSERT(cl_es_bulk_add(&b, &d));
    CL_ASSERT_INT_EQ(2, count_lines(b.body.data));
    /* The action line parses back to exactly the original strings. */
    size_t line_len = (size_t)(strchr(b.body.data, '\n') - b.body.data);
    char *line = strndup(b.body.data, line_len);
    json_object *root = json_tokener_parse(line);
    CL_ASSERT(root != NULL);
    json_object *action = NULL, *v = NULL;
    CL_ASSERT(json_object_object_get_ex(root, "index", &action));
    CL_ASSERT(json_object_object_get_ex(action, "_index", &v));
    CL_ASSERT_STR_EQ(index, json_object_get_string(v));
    CL_ASSERT(json_object_object_get_ex(action, "_id", &v));
    CL_ASSERT_STR_EQ(id, json_object_get_string(v));
    CL_ASSERT_STR_CONTAINS(line, "\\u0001");
    json_object_put(root);
    free(line);
    cl_buf_free(&b.body);
}

static void test_json_string_escapes_quotes_backslashes_and_control_bytes(void)
{
    cl_buf_t out;
    cl_buf_init(&out);
    const char in[] = "a\"b\\c\nd\re\tf\x1fg\x7fh\0i";
    cl_es_json_append_string(&out, in, sizeof in - 1);
    CL_ASSERT_STR_EQ("\"a\\\"b\\\\c\\nd\\re\\tf\\u001fg\\u007fh\\u0000i\"", out.data);
    cl_buf_free(&out);
}

static void test_max_docs_refuses_the_next_document_and_leaves_the_body_alone(void)
{
    cl_es_bulk_t b;
    cl_es_bulk_init(&b, 2, 0);
    cl_es_bulk_doc_t d = doc_of("i", "x", "{}");
    CL_ASSERT(cl_es_bulk_add(&b, &d));
    CL_ASSERT(cl_es_bulk_add(&b, &d));
    size_t len = b.body.len;
    CL_ASSERT(!cl_es_bulk_add(&b, &d));
    CL_ASSERT_INT_EQ(len, b.body.len);
    CL_ASSERT_INT_EQ(2, b.docs);
    cl_buf_free(&b.body);
}

static void test_max_bytes_is_never_exceeded_once_a_document_is_in(void)
{
    cl_es_bulk_doc_t d = doc_of("i", "x", "{\"k\":\"0123456789\"}");
    cl_es_bulk_t probe;
    cl_es_bulk_init(&probe, 0, 0);
    cl_es_bulk_add(&probe, &d);
    size_t one = probe.body.len;
    cl_buf_free(&probe.body);

    cl_es_bulk_t b;
    cl_es_bulk_init(&b, 0, 3 * one); /* exactly three fit */
    CL_ASSERT(cl_es_bulk_add(&b, &d));
    CL_ASSERT(cl_es_bulk_add(&b, &d));
    CL_ASSERT(cl_es_bulk_add(&b, &d));
    CL_ASSERT_INT_EQ(3 * one, b.body.len);
    CL_ASSERT(!cl_es_bulk_add(&b, &d));
    CL_ASSERT_INT_EQ(3 * one, b.body.len);
    CL_ASSERT_INT_EQ(3, b.docs);
    CL_ASSERT_INT_EQ('\n', b.body.data[b.body.len - 1]);
    cl_buf_free(&b.body);
}

static void test_a_document_larger_than_max_bytes_travels_alone(void)
{
    char big[2048];
    memset(big, 'u', sizeof big);
    memcpy(big, "{\"u\":\"", 6);
    memcpy(big + sizeof big - 3, "\"}", 3);
    cl_es_bulk_t b;
    cl_es_bulk_init(&b, 0, 1024);
    cl_es_bulk_doc_t large = doc_of("i", "x", big);
    cl_es_bulk_doc_t small = doc_of("i", "y", "{}");
    CL_ASSERT(cl_es_bulk_add(&b, &large));
    CL_ASSERT(!cl_es_bulk_add(&b, &small));
    CL_ASSERT_INT_EQ(1, b.docs);
    cl_buf_free(&b.body);
    cl_es_bulk_init(&b, 0, 1024);
    CL_ASSERT(cl_es_bulk_add(&b, &small));
    CL_ASSERT(!cl_es_bulk_add(&b, &large));
    CL_ASSERT_INT_EQ(1, b.docs);
    cl_buf_free(&b.body);
}

/* ---- Source checks ---- */

static void test_source_check_accepts_one_object_with_whitespace(void)
{
    char err[CL_ERR_LEN];
    const char *ok = " \n{\"a\":[1,2,{\"b\":null}],\"c\":\"\xc3\xa9\"}\r\n ";
    CL_ASSERT_INT_EQ(CL_OK, cl_es_source_check(ok, strlen(ok), err));
}

static void test_source_check_refuses_what_could_break_the_request(void)
{
    static const struct {
        const char *source;
        const char *why;
    } cases[] = {
        {"", "empty"},
        {"[1,2]", "must be an object"},
        {"\"text\"", "must be an object"},
        {"{\"a\":1} {\"b\":2}", "at byte 8"},
        {"{\"a\":1}\n{\"index\":{}}", "at byte 8"},
        {"{\"a\":1", "not valid JSON"},
        {"{\"a\" 1}", "not valid JSON"},
        {"{\"a\":\"\xff\"}", "not well-formed UTF-8 at byte 6"},
    };
    for (size_t i = 0; i < CL_ARRAY_LEN(cases); i++) {
        char err[CL_ERR_LEN] = "";
        CL_ASSERT_INT_EQ(CL_ERR, cl_es_source_check(cases[i].source, strlen(cases[i].source), err));
        CL_ASSERT_STR_CONTAINS(err, cases[i].why);
    }
}

/* ---- Answers ---- */

static void parse(long status, const char *body, size_t docs, cl_es_bulk_result_t *r)
{
    cl_es_bulk_parse(status, body, body != NULL ? strlen(body) : 0, docs, r);
}

static void test_all_items_created_means_every_document_ok(void)
{
    cl_es_bulk_result_t r;
    parse(200,
          "{\"errors\":false,\"items\":[{\"index\":{\"status\":201}},"
          "{\"index\":{\"status\":200}},{\"index\":{\"status\":201}}]}",
          3, &r);
    CL_ASSERT_INT_EQ(CL_ES_BULK_ITEMS, r.outcome);
    CL_ASSERT_INT_EQ(3, r.item_count);
    CL_ASSERT_INT_EQ(3, r.ok);
    for (size_t i = 0; i < r.item_count; i++) {
        CL_ASSERT_INT_EQ(CL_ES_ITEM_OK, r.items[i].outcome);
        CL_ASSERT(r.items[i].reason == NULL);
    }
    CL_ASSERT(!r.request.node_failed);
    cl_es_bulk_result_free(&r);
}

static const char mixed_body[] =
    "{\"errors\":true,\"items\":["
    "{\"index\":{\"status\":201}},"
    "{\"index\":{\"status\":429,\"error\":{\"type\":\"es_rejected_execution_exception\","
    "\"reason\":\"rejected execution of coordinating operation\"}}},"
    "{\"index\":{\"status\":503,\"error\":{\"type\":\"unavailable_shards_exception\","
    "\"reason\":\"[stats][0] primary shard is not active\"}}},"
    "{\"index\":{\"status\":400,\"error\":{\"type\":\"mapper_parsing_exception\","
    "\"reason\":\"failed to parse field [clicks] of type [long] in document with id 'b'. "
    "Preview of field's value: 'abc'\",\"caused_by\":{\"type\":\"illegal_argument_exception\","
    "\"reason\":\"For input string: \\\"abc\\\"\"}}}},"
    "{\"index\":{\"status\":409,\"error\":{\"type\":\"version_conflict_engine_exception\","
    "\"reason\":\"[a]: version conflict, current version [5] is higher than the one provided "
    "[4]\"}}},"
    "{\"index\":{\"status\":200}}]}";

static void test_mixed_items_are_classified_one_by_one_in_request_order(void)
{
    cl_es_bulk_result_t r;
    parse(200, mixed_body, 6, &r);
    CL_ASSERT_INT_EQ(CL_ES_BULK_ITEMS, r.outcome);
    CL_ASSERT_INT_EQ(6, r.item_count);
    CL_ASSERT_INT_EQ(CL_ES_ITEM_OK, r.items[0].outcome);
    CL_ASSERT_INT_EQ(CL_ES_ITEM_RETRY, r.items[1].outcome);
    CL_ASSERT_INT_EQ(429, r.items[1].status);
    CL_ASSERT_INT_EQ(CL_ES_ITEM_RETRY, r.items[2].outcome);
    CL_ASSERT_INT_EQ(503, r.items[2].status);
    CL_ASSERT_INT_EQ(CL_ES_ITEM_DROP, r.items[3].outcome);
    CL_ASSERT_INT_EQ(CL_ES_ITEM_SUPERSEDED, r.items[4].outcome);
    CL_ASSERT_INT_EQ(CL_ES_ITEM_OK, r.items[5].outcome);
    CL_ASSERT_INT_EQ(2, r.ok);
    CL_ASSERT_INT_EQ(2, r.retry);
    CL_ASSERT_INT_EQ(1, r.drop);
    CL_ASSERT_INT_EQ(1, r.superseded);
    CL_ASSERT_STR_EQ("HTTP 400: mapper_parsing_exception: failed to parse field [clicks] of "
                     "type [long] in document with id 'b'. Preview of field's value: 'abc' "
                     "(caused by illegal_argument_exception: For input string: \"abc\")",
                     r.items[3].reason);
    CL_ASSERT_STR_CONTAINS(r.items[1].reason, "es_rejected_execution_exception");
    /* An item-level 5xx says nothing about the node. */
    CL_ASSERT(!r.request.node_failed);
    cl_es_bulk_result_free(&r);
}

static void test_errors_false_does_not_hide_a_failed_item(void)
{
    cl_es_bulk_result_t r;
    parse(200,
          "{\"errors\":false,\"items\":[{\"index\":{\"status\":201}},{\"index\":{\"status\":400,"
          "\"error\":{\"type\":\"document_parsing_exception\",\"reason\":\"bad\"}}}]}",
          2, &r);
    CL_ASSERT_INT_EQ(CL_ES_BULK_ITEMS, r.outcome);
    CL_ASSERT_INT_EQ(CL_ES_ITEM_DROP, r.items[1].outcome);
    CL_ASSERT_STR_EQ("HTTP 400: document_parsing_exception: bad", r.items[1].reason);
    cl_es_bulk_result_free(&r);
}

static void test_read_only_index_block_is_retried_not_dropped(void)
{
    cl_es_bulk_result_t r;
    parse(200,
          "{\"errors\":true,\"items\":[{\"index\":{\"status\":403,\"error\":{\"type\":"
          "\"cluster_block_exception\",\"reason\":\"index [stats] blocked by: [FORBIDDEN/8/"
          "index write (api)];\"}}},{\"index\":{\"status\":429,\"error\":{\"type\":"
          "\"cluster_block_exception\",\"reason\":\"disk usage exceeded flood-stage "
          "watermark\"}}}]}",
          2, &r);
    CL_ASSERT_INT_EQ(CL_ES_ITEM_RETRY, r.items[0].outcome);
    CL_ASSERT_INT_EQ(CL_ES_ITEM_RETRY, r.items[1].outcome);
    cl_es_bulk_result_free(&r);
}

static void test_a_409_without_version_conflict_is_dropped(void)
{
    cl_es_bulk_result_t r;
    parse(200,
          "{\"errors\":true,\"items\":[{\"create\":{\"status\":409,\"error\":{\"type\":"
          "\"some_other_conflict\",\"reason\":\"x\"}}}]}",
          1, &r);
    CL_ASSERT_INT_EQ(CL_ES_ITEM_DROP, r.items[0].outcome);
    cl_es_bulk_result_free(&r);
}

static void test_413_with_several_documents_splits_the_request(void)
{
    cl_es_bulk_result_t r;
    parse(413, "", 10, &r);
    CL_ASSERT_INT_EQ(CL_ES_BULK_SPLIT, r.outcome);
    CL_ASSERT_INT_EQ(CL_ES_REQUEST_REFUSED, r.request.outcome);
    CL_ASSERT_STR_EQ("HTTP 413: empty response body", r.request.reason);
    CL_ASSERT(!r.request.node_failed);
    CL_ASSERT_INT_EQ(0, r.item_count);
    cl_es_bulk_result_free(&r);
}

static void test_413_with_one_document_drops_it(void)
{
    cl_es_bulk_result_t r;
    parse(413, "<html><body>Request Entity Too Large</body></html>", 1, &r);
    CL_ASSERT_INT_EQ(CL_ES_BULK_DROP, r.outcome);
    CL_ASSERT_STR_EQ("HTTP 413: response body \"<html><body>Request Entity Too "
                     "Large</body></html>\"",
                     r.request.reason);
    cl_es_bulk_result_free(&r);
}

static void test_request_level_400_quotes_the_cluster_error(void)
{
    cl_es_bulk_result_t r;
    parse(400,
          "{\"error\":{\"root_cause\":[{\"type\":\"illegal_argument_exception\",\"reason\":"
          "\"Malformed action/metadata line [1]\"}],\"type\":\"illegal_argument_exception\","
          "\"reason\":\"Malformed action/metadata line [1]\"},\"status\":400}",
          4, &r);
    CL_ASSERT_INT_EQ(CL_ES_BULK_SPLIT, r.outcome);
    CL_ASSERT_STR_EQ("HTTP 400: illegal_argument_exception: Malformed action/metadata line [1]",
                     r.request.reason);
    CL_ASSERT_STR_EQ("illegal_argument_exception", r.request.error_type);
    cl_es_bulk_result_free(&r);
}

static void test_unparsable_200_body_retries_the_whole_request(void)
{
    const char *bodies[] = {
        "{\"errors\":false,\"items\":[{\"index\":{\"status\":201}}", /* truncated */
        "",
        "<html>proxy</html>",
        "{\"errors\":false}",
        "{\"errors\":false,\"items\":{}}",
    };
    for (size_t i = 0; i < CL_ARRAY_LEN(bodies); i++) {
        cl_es_bulk_result_t r;
        parse(200, bodies[i], 1, &r);
        CL_ASSERT_INT_EQ(CL_ES_BULK_RETRY, r.outcome);
        CL_ASSERT_INT_EQ(CL_ES_REQUEST_RETRY, r.request.outcome);
        CL_ASSERT_STR_CONTAINS(r.request.reason, "HTTP 200: ");
        CL_ASSERT_INT_EQ(0, r.item_count);
        CL_ASSERT(r.items == NULL);
        cl_es_bulk_result_free(&r);
    }
}

static void test_wrong_item_count_or_missing_status_retries_the_whole_request(void)
{
    cl_es_bulk_result_t r;
    parse(200, "{\"errors\":false,\"items\":[{\"index\":{\"status\":201}}]}", 2, &r);
    CL_ASSERT_INT_EQ(CL_ES_BULK_RETRY, r.outcome);
    CL_ASSERT_STR_EQ("HTTP 200: the response has 1 items for 2 documents", r.request.reason);
    cl_es_bulk_result_free(&r);

    parse(200,
          "{\"errors\":true,\"items\":[{\"index\":{\"status\":201}},{\"index\":{\"_id\":\"x\"}}]}",
          2, &r);
    CL_ASSERT_INT_EQ(CL_ES_BULK_RETRY, r.outcome);
    CL_ASSERT_STR_EQ("HTTP 200: item 1 of the response has no status", r.request.reason);
    cl_es_bulk_result_free(&r);
}

static void test_429_retries_without_marking_the_node_down(void)
{
    cl_es_bulk_result_t r;
    parse(429,
          "{\"error\":{\"type\":\"es_rejected_execution_exception\",\"reason\":\"queue full\"},"
          "\"status\":429}",
          5, &r);
    CL_ASSERT_INT_EQ(CL_ES_BULK_RETRY, r.outcome);
    CL_ASSERT(!r.request.node_failed);
    CL_ASSERT(!r.request.needs_operator);
    CL_ASSERT_STR_EQ("HTTP 429: es_rejected_execution_exception: queue full", r.request.reason);
    cl_es_bulk_result_free(&r);
}

static void test_5xx_retries_and_marks_the_node_down(void)
{
    const long statuses[] = {500, 502, 503, 504};
    for (size_t i = 0; i < CL_ARRAY_LEN(statuses); i++) {
        cl_es_bulk_result_t r;
        parse(statuses[i], "<html>Bad Gateway</html>", 3, &r);
        CL_ASSERT_INT_EQ(CL_ES_BULK_RETRY, r.outcome);
        CL_ASSERT(r.request.node_failed);
        cl_es_bulk_result_free(&r);
    }
}

static void test_credentials_and_wrong_urls_need_an_operator_and_are_retried(void)
{
    const long statuses[] = {401, 403, 404, 405, 407, 301, 302};
    for (size_t i = 0; i < CL_ARRAY_LEN(statuses); i++) {
        cl_es_request_result_t r;
        cl_es_classify_response(statuses[i], "", 0, &r);
        CL_ASSERT_INT_EQ(CL_ES_REQUEST_RETRY, r.outcome);
        CL_ASSERT(r.needs_operator);
        CL_ASSERT(!r.node_failed);
    }
}

static void test_error_given_as_a_string_is_quoted(void)
{
    cl_es_request_result_t r;
    const char *body = "{\"error\":\"Incorrect HTTP method for uri [/] and method [GET], "
                       "allowed: [POST]\",\"status\":405}";
    cl_es_classify_response(405, body, strlen(body), &r);
    CL_ASSERT_STR_EQ("HTTP 405: Incorrect HTTP method for uri [/] and method [GET], allowed: "
                     "[POST]",
                     r.reason);
    CL_ASSERT_STR_EQ("", r.error_type);
}

static void test_already_exists_is_reported_by_type(void)
{
    cl_es_request_result_t r;
    const char *body = "{\"error\":{\"root_cause\":[],\"type\":"
                       "\"resource_already_exists_exception\",\"reason\":\"index [s/x] already "
                       "exists\",\"index\":\"s\"},\"status\":400}";
    cl_es_classify_response(400, body, strlen(body), &r);
    CL_ASSERT_INT_EQ(CL_ES_REQUEST_REFUSED, r.outcome);
    CL_ASSERT_STR_EQ("resource_already_exists_exception", r.error_type);
}

static void test_long_item_reasons_are_cut_on_a_character_boundary(void)
{
    cl_buf_t body;
    cl_buf_init(&body);
    cl_buf_append_str(&body, "{\"errors\":true,\"items\":[{\"index\":{\"status\":400,\"error\":"
                             "{\"type\":\"t\",\"reason\":\"");
    for (int i = 0; i < 2000; i++)
        cl_buf_append_str(&body, "\xc3\xa9"); /* é, two bytes */
    cl_buf_append_str(&body, "\"}}}]}");
    cl_es_bulk_result_t r;
    cl_es_bulk_parse(200, body.data, body.len, 1, &r);
    CL_ASSERT_INT_EQ(CL_ES_ITEM_DROP, r.items[0].outcome);
    size_t len = strlen(r.items[0].reason);
    CL_ASSERT(len <= 1024);
    CL_ASSERT(len > 1000);
    CL_ASSERT_STR_EQ("...", r.items[0].reason + len - 3);
    CL_ASSERT(((unsigned char)r.items[0].reason[len - 4] & 0xC0) != 0xC0); /* no lead byte left */
    cl_es_bulk_result_free(&r);
    cl_buf_free(&body);
}

/* ---- Backoff ---- */

static void test_backoff_lies_in_half_to_full_delay_and_doubles(void)
{
    for (uint32_t rnd = 0; rnd < 3000; rnd += 7) {
        uint64_t d0 = cl_backoff_ms(0, 200, 30000, rnd);
        CL_ASSERT(d0 >= 100 && d0 <= 200);
        uint64_t d3 = cl_backoff_ms(3, 200, 30000, rnd);
        CL_ASSERT(d3 >= 800 && d3 <= 1600);
        uint64_t d20 = cl_backoff_ms(20, 200, 30000, rnd);
        CL_ASSERT(d20 >= 15000 && d20 <= 30000);
    }
    CL_ASSERT_INT_EQ(100, cl_backoff_ms(0, 200, 30000, 0));
    CL_ASSERT_INT_EQ(200, cl_backoff_ms(0, 200, 30000, 100));
}

static void test_backoff_survives_huge_attempts_and_bounds(void)
{
    uint64_t d = cl_backoff_ms(UINT32_MAX, 10, UINT64_MAX / 2, UINT32_MAX);
    CL_ASSERT(d >= UINT64_MAX / 4 - 1 && d <= UINT64_MAX / 2);
    CL_ASSERT_INT_EQ(50, cl_backoff_ms(64, 100, 50, 0)); /* max < min: min is the cap */
}

static const cl_test_case_t cases[] = {
    CL_TEST(test_one_document_is_action_line_source_line_each_ending_in_newline),
    CL_TEST(test_every_line_including_the_last_ends_in_newline),
    CL_TEST(test_newlines_inside_a_pretty_printed_source_become_spaces),
    CL_TEST(test_version_asks_for_external_gte),
    CL_TEST(test_index_and_id_are_json_escaped),
    CL_TEST(test_json_string_escapes_quotes_backslashes_and_control_bytes),
    CL_TEST(test_max_docs_refuses_the_next_document_and_leaves_the_body_alone),
    CL_TEST(test_max_bytes_is_never_exceeded_once_a_document_is_in),
    CL_TEST(test_a_document_larger_than_max_bytes_travels_alone),
    CL_TEST(test_source_check_accepts_one_object_with_whitespace),
    CL_TEST(test_source_check_refuses_what_could_break_the_request),
    CL_TEST(test_all_items_created_means_every_document_ok),
    CL_TEST(test_mixed_items_are_classified_one_by_one_in_request_order),
    CL_TEST(test_errors_false_does_not_hide_a_failed_item),
    CL_TEST(test_read_only_index_block_is_retried_not_dropped),
    CL_TEST(test_a_409_without_version_conflict_is_dropped),
    CL_TEST(test_413_with_several_documents_splits_the_request),
    CL_TEST(test_413_with_one_document_drops_it),
    CL_TEST(test_request_level_400_quotes_the_cluster_error),
    CL_TEST(test_unparsable_200_body_retries_the_whole_request),
    CL_TEST(test_wrong_item_count_or_missing_status_retries_the_whole_request),
    CL_TEST(test_429_retries_without_marking_the_node_down),
    CL_TEST(test_5xx_retries_and_marks_the_node_down),
    CL_TEST(test_credentials_and_wrong_urls_need_an_operator_and_are_retried),
    CL_TEST(test_error_given_as_a_string_is_quoted),
    CL_TEST(test_already_exists_is_reported_by_type),
    CL_TEST(test_long_item_reasons_are_cut_on_a_character_boundary),
    CL_TEST(test_backoff_lies_in_half_to_full_delay_and_doubles),
    CL_TEST(test_backoff_survives_huge_attempts_and_bounds),
};

CL_TEST_MAIN(cases)

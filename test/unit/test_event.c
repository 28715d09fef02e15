/* Unit tests for the event module: field extraction through flat and nested
 * mappings, every rejection reason, timestamps, the row key, and the calendar
 * arithmetic (common.h) as the timestamp parser and the DATETIME formatter
 * use it. */
#include "clickloop/event.h"

#include <time.h>

#include "cl_test.h"
#include "clickloop/utf8.h"

#define MAX_BYTES 65536
/* 2026-11-28T14:00:00Z */
#define T0 INT64_C(1795874400000)

/* Valid members, to compose payloads that are broken in one place only. */
#define UID "\"user_id\":\"u-1\""
#define TS "\"timestamp\":\"2026-11-28T14:00:00Z\""
#define URL "\"url\":\"https://shop.test/p/1\""
#define REQUIRED UID "," TS "," URL

static cl_event_parser_t *new_parser(const char *const pointers[CL_FIELD_COUNT])
{
    cl_event_parser_t *parser = NULL;
    char err[CL_ERR_LEN] = "";
    if (cl_event_parser_new(pointers, MAX_BYTES, &parser, err) != CL_OK)
        CL_FAIL_("cl_event_parser_new: %s", err);
    return parser;
}

/* Parse `json` with the default mapping, expecting success. */
static int parse_ok(const char *json, cl_event_t *ev)
{
    cl_event_parser_t *parser = new_parser(NULL);
    char reason[CL_ERR_LEN] = "";
    int rc = cl_event_parse(parser, json, strlen(json), "clicks", 3, 42, ev, reason);
    if (rc != CL_OK)
        CL_FAIL_("rejected %s: %s", json, reason);
    cl_event_parser_free(parser);
    return rc;
}

/* Parse `len` bytes with the default mapping, expecting a rejection whose
 * reason contains `expected`. */
static void expect_rejected(const char *json, size_t len, const char *expected)
{
    cl_event_parser_t *parser = new_parser(NULL);
    cl_event_t ev;
    char reason[CL_ERR_LEN] = "";
    int rc = cl_event_parse(parser, json, len, "clicks", 3, 42, &ev, reason);
    if (rc != CL_ERR) {
        CL_FAIL_("accepted %s, expected rejection \"%s\"", json ? json : "(null)", expected);
        cl_event_clear(&ev);
    } else if (strstr(reason, expected) == NULL) {
        CL_FAIL_("payload %s: reason \"%s\" does not contain \"%s\"", json ? json : "(null)",
                 reason, expected);
    } else {
        CL_ASSERT(ev.storage == NULL && ev.row_key == NULL);
    }
    cl_event_parser_free(parser);
}

static int64_t parse_ts(const char *json)
{
    cl_event_t ev;
    int64_t ms = -1;
    if (parse_ok(json, &ev) == CL_OK)
        ms = ev.ts_ms;
    cl_event_clear(&ev);
    return ms;
}

/* ---- accepted events -------------------------------------------------- */

static void test_flat_event_every_field_extracted(void)
{
    const char *json = "{\"event_id\":\"ev-9\",\"user_id\":\"u-1\","
                       "\"timestamp\":\"2026-11-28T14:00:00.250Z\","
                       "\"url\":\"https://shop.test/p/1?q=a%20b\",\"country\":\"de\","
                       "\"city\":\"K\xC3\xB6ln\",\"browser\":\"Firefox\",\"os\":\"Linux\","
                       "\"device\":\"desktop\",\"user_agent\":\"Mozilla/5.0 (X11)\","
                       "\"time_spent_ms\":1500,\"unknown\":{\"ignored\":[1,2]}}";
    cl_event_t ev;
    if (parse_ok(json, &ev) != CL_OK)
        return;
    CL_ASSERT_STR_EQ("e:ev-9", ev.row_key);
    CL_ASSERT_INT_EQ(6, ev.row_key_len);
    CL_ASSERT_STR_EQ("ev-9", ev.event_id);
    CL_ASSERT_STR_EQ("u-1", ev.user_id);
    CL_ASSERT_INT_EQ(T0 + 250, ev.ts_ms);
    CL_ASSERT_STR_EQ("https://shop.test/p/1?q=a%20b", ev.url);
    CL_ASSERT_INT_EQ(strlen("https://shop.test/p/1?q=a%20b"), ev.url_len);
    CL_ASSERT_STR_EQ("DE", ev.country);
    CL_ASSERT_STR_EQ("K\xC3\xB6ln", ev.city);
    CL_ASSERT_STR_EQ("Firefox", ev.browser);
    CL_ASSERT_STR_EQ("Linux", ev.os);
    CL_ASSERT_STR_EQ("desktop", ev.device);
    CL_ASSERT_STR_EQ("Mozilla/5.0 (X11)", ev.user_agent);
    CL_ASSERT_INT_EQ(1500, ev.time_spent_ms);
    CL_ASSERT_STR_EQ("clicks", ev.topic);
    CL_ASSERT_INT_EQ(3, ev.partition);
    CL_ASSERT_INT_EQ(42, ev.offset);
    cl_event_clear(&ev);
}

static const char *const nested_mapping[CL_FIELD_COUNT] = {
    [CL_FIELD_EVENT_ID] = "/meta/id",
    [CL_FIELD_USER_ID] = "/click_data/user/id",
    [CL_FIELD_TIMESTAMP] = "/click_data/ts",
    [CL_FIELD_URL] = "/click_data/url",
    [CL_FIELD_COUNTRY] = "/geo_data/country",
    [CL_FIELD_CITY] = "/geo_data/city",
    [CL_FIELD_BROWSER] = "/user_agent_data/parsed/0",
    [CL_FIELD_OS] = "/user_agent_data/parsed/1",
    [CL_FIELD_DEVICE] = "/user_agent_data/device~1kind",
    [CL_FIELD_USER_AGENT] = "/user_agent_data/raw",
    [CL_FIELD_TIME_SPENT_MS] = "/click_data/time~0spent",
};

static void test_nested_mapping_every_field_extracted(void)
{
    const char *json = "{\"meta\":{\"id\":\"abc\"},"
                       "\"click_data\":{\"user\":{\"id\":77},\"ts\":1795874400.5,"
                       "\"url\":\"/home\",\"time~spent\":12.6},"
                       "\"geo_data\":{\"country\":\"fr\",\"city\":\"Paris\"},"
                       "\"user_agent_data\":{\"parsed\":[\"Safari\",\"iOS\"],"
                       "\"device/kind\":\"phone\",\"raw\":\"UA/1\"}}";
    cl_event_parser_t *parser = new_parser(nested_mapping);
    cl_event_t ev;
    char reason[CL_ERR_LEN] = "";
    int rc = cl_event_parse(parser, json, strlen(json), "t", 0, 0, &ev, reason);
    CL_ASSERT_INT_EQ(CL_OK, rc);
    if (rc == CL_OK) {
        CL_ASSERT_STR_EQ("e:abc", ev.row_key);
        CL_ASSERT_STR_EQ("abc", ev.event_id);
        CL_ASSERT_STR_EQ("77", ev.user_id);
        CL_ASSERT_INT_EQ(T0 + 500, ev.ts_ms);
        CL_ASSERT_STR_EQ("/home", ev.url);
        CL_ASSERT_STR_EQ("FR", ev.country);
        CL_ASSERT_STR_EQ("Paris", ev.city);
        CL_ASSERT_STR_EQ("Safari", ev.browser);
        CL_ASSERT_STR_EQ("iOS", ev.os);
        CL_ASSERT_STR_EQ("phone", ev.device);
        CL_ASSERT_STR_EQ("UA/1", ev.user_agent);
        CL_ASSERT_INT_EQ(13, ev.time_spent_ms);
    }
    cl_event_clear(&ev);
    cl_event_parser_free(parser);
}

static void test_missing_field_reason_names_its_pointer(void)
{
    const char *json = "{\"click_data\":{\"ts\":0,\"url\":\"/\"}}";
    cl_event_parser_t *parser = new_parser(nested_mapping);
    cl_event_t ev;
    char reason[CL_ERR_LEN] = "";
    CL_ASSERT_INT_EQ(CL_ERR, cl_event_parse(parser, json, strlen(json), "t", 0, 0, &ev, reason));
    CL_ASSERT_STR_EQ("user_id (/click_data/user/id): required field is missing", reason);
    cl_event_parser_free(parser);
}

static void test_optional_fields_absent_get_defaults(void)
{
    cl_event_t ev;
    if (parse_ok("{" REQUIRED "}", &ev) != CL_OK)
        return;
    CL_ASSERT(ev.event_id == NULL);
    CL_ASSERT_STR_EQ("", ev.country);
    CL_ASSERT(ev.city == NULL && ev.browser == NULL && ev.os == NULL);
    CL_ASSERT(ev.device == NULL && ev.user_agent == NULL);
    CL_ASSERT_INT_EQ(-1, ev.time_spent_ms);
    cl_event_clear(&ev);
}

static void test_optional_null_means_absent(void)
{
    cl_event_t ev;
    if (parse_ok("{" REQUIRED ",\"country\":null,\"city\":null,\"browser\":null,\"os\":null,"
                 "\"device\":null,\"user_agent\":null,\"time_spent_ms\":null}",
                 &ev) != CL_OK)
        return;
    CL_ASSERT_STR_EQ("", ev.country);
    CL_ASSERT(ev.city == NULL && ev.browser == NULL && ev.os == NULL);
    CL_ASSERT(ev.device == NULL && ev.user_agent == NULL);
    CL_ASSERT_INT_EQ(-1, ev.time_spent_ms);
    cl_event_clear(&ev);
}

static void test_strings_stored_exactly_after_unescaping(void)
{
    cl_event_t ev;
    if (parse_ok("{" UID "," TS ",\"url\":\"a\\\"b\\\\c\\/d\\n\\u00e9\xC3\xA9\\ud83d\\ude00\"}",
                 &ev) != CL_OK)
        return;
    CL_ASSERT_STR_EQ("a\"b\\c/d\n\xC3\xA9\xC3\xA9\xF0\x9F\x98\x80", ev.url);
    cl_event_clear(&ev);
}

static void test_long_url_accepted(void)
{
    static char json[12000];
    char url[10001];
    memset(url, 'x', sizeof url - 1);
    url[sizeof url - 1] = '\0';
    snprintf(json, sizeof json, "{" UID "," TS ",\"url\":\"%s\"}", url);
    cl_event_t ev;
    if (parse_ok(json, &ev) != CL_OK)
        return;
    CL_ASSERT_INT_EQ(10000, ev.url_len);
    CL_ASSERT_STR_EQ(url, ev.url);
    cl_event_clear(&ev);
}

/* The column is a MEDIUMTEXT: a URL one byte longer is refused even when the
 * parser's payload limit would let it through. */
static void test_url_longer_than_its_column_rejected(void)
{
    size_t url_len = CL_EVENT_URL_MAX_LEN + 1;
    size_t cap = url_len + 64;
    char *json = cl_xmalloc(cap);
    int head = snprintf(json, cap, "{" UID "," TS ",\"url\":\"");
    memset(json + head, 'x', url_len);
    memcpy(json + head + url_len, "\"}", 3);
    size_t len = strlen(json);
    cl_event_parser_t *parser = NULL;
    char err[CL_ERR_LEN];
    CL_ASSERT_INT_EQ(CL_OK, cl_event_parser_new(NULL, len, &parser, err));
    cl_event_t ev;
    CL_ASSERT_INT_EQ(CL_ERR, cl_event_parse(parser, json, len, "t", 0, 0, &ev, err));
    CL_ASSERT_STR_EQ("url: 16777216 bytes is over the limit of 16777215 bytes", err);
    json[head + url_len - 1] = '"'; /* one byte shorter: at the limit */
    json[head + url_len] = '}';
    json[head + url_len + 1] = '\0';
    CL_ASSERT_INT_EQ(CL_OK, cl_event_parse(parser, json, len - 1, "t", 0, 0, &ev, err));
    CL_ASSERT_INT_EQ(CL_EVENT_URL_MAX_LEN, ev.url_len);
    cl_event_clear(&ev);
    cl_event_parser_free(parser);
    free(json);
}

static void test_user_id_integer_stored_as_decimal_text(void)
{
    static const struct {
        const char *json_value;
        const char *text;
    } cases[] = {
        {"0", "0"},
        {"-17", "-17"},
        {"9223372036854775807", "9223372036854775807"},
        {"9223372036854775808", "9223372036854775808"}, /* json-c keeps it as uint64 */
        {"18446744073709551614", "18446744073709551614"},
        {"-9223372036854775807", "-9223372036854775807"},
    };
    for (size_t i = 0; i < CL_ARRAY_LEN(cases); i++) {
        char json[256];
        snprintf(json, sizeof json, "{\"user_id\":%s," TS "," URL "}", cases[i].json_value);
        cl_event_t ev;
        if (parse_ok(json, &ev) == CL_OK)
            CL_ASSERT_STR_EQ(cases[i].text, ev.user_id);
        cl_event_clear(&ev);
    }
}

static void test_user_id_integers_json_c_may_have_clamped_rejected(void)
{
    expect_rejected("{\"user_id\":18446744073709551616," TS "," URL "}",
                    strlen("{\"user_id\":18446744073709551616," TS "," URL "}"),
                    "user_id: integer is out of range");
    expect_rejected("{\"user_id\":-9223372036854775809," TS "," URL "}",
                    strlen("{\"user_id\":-9223372036854775809," TS "," URL "}"),
                    "user_id: integer is out of range");
}

static void test_time_spent_fraction_rounded_to_nearest(void)
{
    static const struct {
        const char *value;
        int64_t ms;
    } cases[] = {
        {"0", 0}, {"0.4", 0}, {"0.5", 1}, {"1499.5", 1500}, {"1000000000000", 1000000000000},
    };
    for (size_t i = 0; i < CL_ARRAY_LEN(cases); i++) {
        char json[256];
        snprintf(json, sizeof json, "{" REQUIRED ",\"time_spent_ms\":%s}", cases[i].value);
        cl_event_t ev;
        if (parse_ok(json, &ev) == CL_OK && ev.time_spent_ms != cases[i].ms)
            CL_FAIL_("%s: expected %" PRId64 ", got %" PRId64, cases[i].value, cases[i].ms,
                     ev.time_spent_ms);
        cl_event_clear(&ev);
    }
}

static void test_duplicate_member_last_occurrence_wins(void)
{
    cl_event_t ev;
    if (parse_ok("{" REQUIRED ",\"city\":\"first\",\"city\":\"second\"}", &ev) != CL_OK)
        return;
    CL_ASSERT_STR_EQ("second", ev.city);
    cl_event_clear(&ev);
}

/* What json-c accepts past its limits without failing: numbers beyond a double
 * or int64 in members no field reads are only checked for syntax, and U+FEFF
 * inside a string is text like any other character. */
static void test_hostile_but_valid_json_accepted(void)
{
    static const char *const payloads[] = {
        "{" REQUIRED ",\"x\":1e400,\"y\":-1e400,\"z\":1e-400}",
        "{" REQUIRED ",\"x\":123456789012345678901234567890123456789012345678901234567890}",
        "{" REQUIRED ",\"x\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}",
        "{" REQUIRED ",\"x\":\"\xEF\xBB\xBF\"}",
    };
    for (size_t i = 0; i < CL_ARRAY_LEN(payloads); i++) {
        cl_event_t ev;
        if (parse_ok(payloads[i], &ev) == CL_OK)
            CL_ASSERT_STR_EQ("https://shop.test/p/1", ev.url);
        cl_event_clear(&ev);
    }
    cl_event_t ev;
    if (parse_ok("{" UID ",\"timestamp\":1700000000.5"
                 "000000000000000000000000000000001,"
                 "\"url\":\"\xEF\xBB\xBFx\",\"time_spent_ms\":1e0000000000000000003}",
                 &ev) == CL_OK) {
        CL_ASSERT_INT_EQ(INT64_C(1700000000500), ev.ts_ms);
        CL_ASSERT_STR_EQ("\xEF\xBB\xBFx", ev.url);
        CL_ASSERT_INT_EQ(1000, ev.time_spent_ms);
    }
    cl_event_clear(&ev);
}

static void test_trailing_whitespace_accepted(void)
{
    cl_event_t ev;
    if (parse_ok(" \t\r\n{" REQUIRED "} \t\r\n", &ev) == CL_OK)
        cl_event_clear(&ev);
}

static void test_payload_at_the_limit_accepted(void)
{
    cl_event_parser_t *parser = NULL;
    char err[CL_ERR_LEN];
    const char *json = "{" REQUIRED "}";
    size_t len = strlen(json);
    CL_ASSERT_INT_EQ(CL_OK, cl_event_parser_new(NULL, len, &parser, err));
    cl_event_t ev;
    CL_ASSERT_INT_EQ(CL_OK, cl_event_parse(parser, json, len, "t", 0, 0, &ev, err));
    cl_event_clear(&ev);
    CL_ASSERT_INT_EQ(CL_ERR, cl_event_parse(parser, json, len + 1, "t", 0, 0, &ev, err));
    CL_ASSERT_STR_CONTAINS(err, "over the limit");
    cl_event_parser_free(parser);
}

/* ---- row key ---------------------------------------------------------- */

static void test_row_key_from_event_id(void)
{
    cl_event_t ev;
    if (parse_ok("{\"event_id\":\"7f3a\"," REQUIRED "}", &ev) != CL_OK)
        return;
    CL_ASSERT_STR_EQ("e:7f3a", ev.row_key);
    CL_ASSERT_INT_EQ(6, ev.row_key_len);
    cl_event_clear(&ev);
}

static void test_row_key_derived_from_topic_partition_offset(void)
{
    cl_event_parser_t *parser = new_parser(NULL);
    const char *json = "{" REQUIRED "}";
    cl_event_t ev;
    char reason[CL_ERR_LEN] = "";
    CL_ASSERT_INT_EQ(CL_OK, cl_event_parse(parser, json, strlen(json), "web.clicks-v2", 2147483647,
                                           INT64_C(9223372036854775807), &ev, reason));
    CL_ASSERT_STR_EQ("k:web.clicks-v2:2147483647:9223372036854775807", ev.row_key);
    CL_ASSERT_INT_EQ(strlen("k:web.clicks-v2:2147483647:9223372036854775807"), ev.row_key_len);
    CL_ASSERT(ev.event_id == NULL);
    cl_event_clear(&ev);
    cl_event_parser_free(parser);
}

static void test_row_key_same_message_same_key(void)
{
    cl_event_t a, b;
    if (parse_ok("{" REQUIRED "}", &a) != CL_OK || parse_ok("{" REQUIRED "}", &b) != CL_OK)
        return;
    CL_ASSERT_STR_EQ(a.row_key, b.row_key);
    CL_ASSERT_STR_EQ("k:clicks:3:42", a.row_key);
    cl_event_clear(&a);
    cl_event_clear(&b);
}

static void test_explicit_key_cannot_equal_derived_key(void)
{
    cl_event_t ev;
    if (parse_ok("{\"event_id\":\"k:clicks:3:42\"," REQUIRED "}", &ev) != CL_OK)
        return;
    CL_ASSERT_STR_EQ("e:k:clicks:3:42", ev.row_key);
    cl_event_clear(&ev);
}

/* ---- rejections ------------------------------------------------------- */

typedef struct {
    const char *json;
    const char *reason;
} reject_case_t;

static void test_malformed_payloads_rejected_with_reason(void)
{
    static const reject_case_t cases[] = {
        /* document */
        {"", "empty payload"},
        {"[1,2]", "expected a JSON object, got an array"},
        {"\"clicks\"", "expected a JSON object, got a string"},
        {"42", "expected a JSON object, got a number"},
        {"null", "expected a JSON object, got null"},
        {"true", "expected a JSON object, got a boolean"},
        {"   ", "not valid JSON: unexpected end of data at byte 3"},
        {"{", "not valid JSON: unexpected end of data at byte 1"},
        {"{\"url\":\"abc", "not valid JSON: unexpected end of data"},
        {"{" REQUIRED "} x", "not valid JSON: unexpected character at byte 83"},
        {"{" REQUIRED "}{}", "not valid JSON: unexpected character at byte 82"},
        {"{\"a\" 1}", "not valid JSON: object property name separator ':' expected at byte 5"},
        {"{" REQUIRED ",}", "not valid JSON"},
        {"{" REQUIRED ",\"x\":NaN}", "not valid JSON: NaN at byte 86 is not a JSON number"},
        {"{" REQUIRED ",\"x\":-Infinity}",
         "not valid JSON: -Infinity at byte 86 is not a JSON number"},
        {"{" REQUIRED ",\"x\":Infinity}",
         "not valid JSON: Infinity at byte 86 is not a JSON number"},
        {"{" REQUIRED ",\"x\":+Infinity}",
         "not valid JSON: +Infinity at byte 86 is not a JSON number"},
        {"{" REQUIRED ",\"x\":+NaN}", "not valid JSON: +NaN at byte 86 is not a JSON number"},
        {"{" REQUIRED ",\"x\":-NaN}", "not valid JSON: -NaN at byte 86 is not a JSON number"},
        {"{" REQUIRED ",\"x\":+1}", "not valid JSON: unexpected character at byte 86 ('+')"},
        {"{" REQUIRED ",\"x\":-x}", "not valid JSON: number expected at byte 87 ('x')"},
        {"{" REQUIRED ",\"x\":-.5}", "not valid JSON: a number needs a digit after '-' at byte 86"},
        {"{" REQUIRED ",'x':1}", "not valid JSON: unexpected '''"},
        {"{" REQUIRED ",\"x\":1.}", "not valid JSON: a number needs digits after '.'"},
        {"{" REQUIRED ",\"x\":-01}", "not valid JSON: leading zero in a number at byte 87"},
        {"{" REQUIRED ",\"x\":[00]}", "not valid JSON: leading zero in a number at byte 87"},
        {"{" REQUIRED ",\"x\":\"a\tb\"}", "unescaped control character U+0009"},
        {"{" REQUIRED "}\f", "not valid JSON: unexpected character at byte 82"},
        {"{" REQUIRED ",\"x\":\"\x01\"}", "unescaped control character U+0001 in a string at "
                                          "byte 87"},
        {"{" REQUIRED ",\"x\":\"\\u0000\"}", "\\u0000 (NUL) at byte 87 is not accepted"},
        {"{" REQUIRED ",\"x\\u0000y\":1}", "\\u0000 (NUL)"},
        {"{" REQUIRED ",\"x\":\"\\ud800\"}", "not valid UTF-8: unpaired surrogate escape \\ud800"},
        {"{" REQUIRED ",\"x\":\"\\udc00\"}", "unpaired surrogate escape \\udc00"},
        {"{" REQUIRED ",\"x\":\"\\ud800\\u0041\"}", "unpaired surrogate escape \\ud800"},
        {"{\"url\":\"caf\xC0\xA9\"}", "not valid UTF-8 at byte 11: overlong encoding"},
        {"{\"url\":\"\xED\xA0\x80\"}", "not valid UTF-8 at byte 8: UTF-16 surrogate"},
        {"{\"url\":\"\xF0\x9F\x98\"}", "not valid UTF-8 at byte 8"},
        {"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
         "not valid JSON: nesting too deep at byte 32 (more than 32 levels of objects and arrays)"},
        /* a byte order mark, before the text or after whitespace */
        {"\xEF\xBB\xBF{" REQUIRED "}",
         "a UTF-8 byte order mark (EF BB BF) at byte 0; RFC 8259 forbids"},
        {" \xEF\xBB\xBF{" REQUIRED "}", "a UTF-8 byte order mark (EF BB BF) at byte 1"},
        {"{" REQUIRED "}\xEF\xBB\xBF", "a UTF-8 byte order mark (EF BB BF) at byte 82"},
        {"{" REQUIRED "}\x01", "not valid JSON: unexpected character at byte 82 (byte 0x01)"},
        /* event_id */
        {"{\"event_id\":\"\"," REQUIRED "}", "event_id: must be a non-empty string"},
        {"{\"event_id\":null," REQUIRED "}", "event_id: must be a non-empty string"},
        {"{\"event_id\":7," REQUIRED "}", "event_id: expected a string, got a number"},
        /* user_id */
        {"{" TS "," URL "}", "user_id (/user_id): required field is missing"},
        {"{\"user_id\":null," TS "," URL "}", "user_id: must not be null"},
        {"{\"user_id\":\"\"," TS "," URL "}", "user_id: must not be empty"},
        {"{\"user_id\":true," TS "," URL "}",
         "user_id: expected a string or an integer, got a boolean"},
        {"{\"user_id\":1.5," TS "," URL "}", "user_id: expected a string or an integer, got a "
                                             "number with a fraction"},
        {"{\"user_id\":1e3," TS "," URL "}", "user_id: expected a string or an integer"},
        /* timestamp */
        {"{" UID "," URL "}", "timestamp (/timestamp): required field is missing"},
        {"{" UID ",\"timestamp\":null," URL "}", "timestamp: must not be null"},
        {"{" UID ",\"timestamp\":\"\"," URL "}", "timestamp: must not be empty"},
        {"{" UID ",\"timestamp\":\"2026-11-28T14:00:00\"," URL "}",
         "timestamp: no time zone in \"2026-11-28T14:00:00\""},
        {"{" UID ",\"timestamp\":\"2023-02-29T10:00:00Z\"," URL "}",
         "timestamp: 2023-02 has no day 29 in \"2023-02-29T10:00:00Z\""},
        {"{" UID ",\"timestamp\":\"yesterday\"," URL "}",
         "timestamp: expected an RFC 3339 date-time"},
        {"{" UID ",\"timestamp\":-5," URL "}", "timestamp: must not be negative"},
        {"{" UID ",\"timestamp\":-0.5," URL "}", "timestamp: must not be negative"},
        {"{" UID ",\"timestamp\":1e400," URL "}",
         "timestamp: \"1e400\" is out of range (beyond a double"},
        {"{" UID ",\"timestamp\":-1E+400," URL "}", "timestamp: \"-1E+400\" is out of range"},
        {"{" UID ",\"timestamp\":NaN," URL "}", "NaN at byte 29 is not a JSON number"},
        {"{" UID ",\"timestamp\":9223372036854775808," URL "}",
         "timestamp: integer is out of range"},
        {"{" UID ",\"timestamp\":-99999999999999999999," URL "}",
         "timestamp: integer is out of range"},
        {"{" UID ",\"timestamp\":253402300800000," URL "}",
         "timestamp: 253402300800000 is later than 9999-12-31T23:59:59.999Z"},
        {"{" UID ",\"timestamp\":1e300," URL "}", "is later than 9999-12-31T23:59:59.999Z"},
        {"{" UID ",\"timestamp\":{}," URL "}",
         "timestamp: expected a string or a number, got an object"},
        {"{" UID ",\"timestamp\":false," URL "}", "got a boolean"},
        /* url */
        {"{" UID "," TS "}", "url (/url): required field is missing"},
        {"{" UID "," TS ",\"url\":null}", "url: must not be null"},
        {"{" UID "," TS ",\"url\":\"\"}", "url: must not be empty"},
        {"{" UID "," TS ",\"url\":[]}", "url: expected a string, got an array"},
        /* country */
        {"{" REQUIRED ",\"country\":\"USA\"}",
         "country: expected a 2-letter ISO 3166-1 code, got \"USA\""},
        {"{" REQUIRED ",\"country\":\"U1\"}", "country: expected a 2-letter ISO 3166-1 code"},
        {"{" REQUIRED ",\"country\":\"\xC3\xA9\"}", "country: expected a 2-letter"},
        {"{" REQUIRED ",\"country\":\"\"}", "country: must not be empty"},
        {"{" REQUIRED ",\"country\":49}", "country: expected a string, got a number"},
        /* other optional strings */
        {"{" REQUIRED ",\"city\":5}", "city: expected a string, got a number"},
        {"{" REQUIRED ",\"browser\":\"\"}", "browser: must not be empty"},
        {"{" REQUIRED ",\"os\":{}}", "os: expected a string, got an object"},
        {"{" REQUIRED ",\"device\":true}", "device: expected a string, got a boolean"},
        {"{" REQUIRED ",\"user_agent\":[\"x\"]}", "user_agent: expected a string, got an array"},
        /* time_spent_ms */
        {"{" REQUIRED ",\"time_spent_ms\":-1}", "time_spent_ms: must not be negative"},
        {"{" REQUIRED ",\"time_spent_ms\":-0.4}", "time_spent_ms: must not be negative"},
        {"{" REQUIRED ",\"time_spent_ms\":\"12\"}",
         "time_spent_ms: expected a number, got a string"},
        {"{" REQUIRED ",\"time_spent_ms\":1000000000001}",
         "time_spent_ms: 1000000000001 is over the limit"},
        {"{" REQUIRED ",\"time_spent_ms\":1e13}",
         "time_spent_ms: 10000000000000 is over the limit"},
        {"{" REQUIRED ",\"time_spent_ms\":1e999}", "time_spent_ms: \"1e999\" is out of range"},
        {"{" REQUIRED ",\"time_spent_ms\":99999999999999999999}",
         "time_spent_ms: integer is out of range"},
    };
    for (size_t i = 0; i < CL_ARRAY_LEN(cases); i++)
        expect_rejected(cases[i].json, strlen(cases[i].json), cases[i].reason);
}

static void test_null_message_is_empty_payload(void)
{
    expect_rejected(NULL, 0, "empty payload");
}

static void test_nul_byte_after_object_rejected(void)
{
    const char json[] = "{" REQUIRED "}\0{}";
    expect_rejected(json, sizeof json - 1,
                    "not valid JSON: unexpected data after the value at byte 82");
}

static void test_raw_nul_inside_string_rejected(void)
{
    const char json[] = "{" REQUIRED ",\"x\":\"a\0b\"}";
    expect_rejected(json, sizeof json - 1, "not valid JSON");
}

static void test_payload_over_limit_reason_gives_both_sizes(void)
{
    static char big[70001];
    memset(big, ' ', sizeof big - 1);
    expect_rejected(big, 70000, "payload is 70000 bytes, over the limit of 65536");
}

static void test_field_length_limits(void)
{
    static const struct {
        const char *field;
        size_t limit;
    } cases[] = {
        {"event_id", CL_EVENT_ID_MAX_LEN},
        {"user_id", CL_EVENT_USER_ID_MAX_LEN},
        {"city", CL_EVENT_TEXT_MAX_LEN},
        {"browser", CL_EVENT_TEXT_MAX_LEN},
        {"os", CL_EVENT_TEXT_MAX_LEN},
        {"device", CL_EVENT_TEXT_MAX_LEN},
        {"user_agent", CL_EVENT_USER_AGENT_MAX_LEN},
    };
    static char value[CL_EVENT_USER_AGENT_MAX_LEN + 2];
    static char json[CL_EVENT_USER_AGENT_MAX_LEN + 512];
    for (size_t i = 0; i < CL_ARRAY_LEN(cases); i++) {
        for (size_t len = cases[i].limit; len <= cases[i].limit + 1; len++) {
            memset(value, 'v', len);
            value[len] = '\0';
            /* The field goes last: for user_id, the last occurrence wins. */
            snprintf(json, sizeof json, "{" REQUIRED ",\"%s\":\"%s\"}", cases[i].field, value);
            if (len == cases[i].limit) {
                cl_event_t ev;
                if (parse_ok(json, &ev) == CL_OK)
                    cl_event_clear(&ev);
            } else {
                char expected[128];
                snprintf(expected, sizeof expected, "%s: %zu bytes is over the limit of %zu bytes",
                         cases[i].field, len, cases[i].limit);
                expect_rejected(json, strlen(json), expected);
            }
        }
    }
}

static void test_reason_quotes_values_escaped_and_shortened(void)
{
    cl_event_parser_t *parser = new_parser(NULL);
    const char *json = "{" REQUIRED ",\"country\":\"a\\\"b\\n\xC3\xA9"
                       "0123456789012345678901234567890123456789012345678\"}";
    cl_event_t ev;
    char reason[CL_ERR_LEN] = "";
    CL_ASSERT_INT_EQ(CL_ERR, cl_event_parse(parser, json, strlen(json), "t", 0, 0, &ev, reason));
    /* 48 bytes shown: a " b \n é (2 bytes) and 42 digits */
    CL_ASSERT_STR_EQ("country: expected a 2-letter ISO 3166-1 code, got "
                     "\"a\\\"b\\u000a\xC3\xA9"
                     "012345678901234567890123456789012345678901\"...",
                     reason);
    cl_event_parser_free(parser);
}

static void test_reason_never_cuts_a_utf8_sequence(void)
{
    cl_event_parser_t *parser = new_parser(NULL);
    /* 47 ASCII bytes then a 2-byte letter straddling the 48-byte cut */
    const char *json = "{" REQUIRED ",\"country\":\""
                       "01234567890123456789012345678901234567890123456\xC3\xA9xyz\"}";
    cl_event_t ev;
    char reason[CL_ERR_LEN] = "";
    CL_ASSERT_INT_EQ(CL_ERR, cl_event_parse(parser, json, strlen(json), "t", 0, 0, &ev, reason));
    CL_ASSERT_STR_CONTAINS(reason, "got \"01234567890123456789012345678901234567890123456\"...");
    size_t bad;
    CL_ASSERT_INT_EQ(CL_OK, cl_utf8_validate(reason, strlen(reason), &bad));
    cl_event_parser_free(parser);
}

static void test_parser_reusable_after_rejections(void)
{
    cl_event_parser_t *parser = new_parser(NULL);
    char reason[CL_ERR_LEN];
    cl_event_t ev;
    const char *bad[] = {"{\"a\":", "[1]", "{\"x\":\"\\ud800\"}", "{\"a\":[{\"b\":"};
    for (size_t i = 0; i < CL_ARRAY_LEN(bad); i++)
        CL_ASSERT_INT_EQ(CL_ERR,
                         cl_event_parse(parser, bad[i], strlen(bad[i]), "t", 0, 0, &ev, reason));
    const char *good = "{" REQUIRED "}";
    CL_ASSERT_INT_EQ(CL_OK, cl_event_parse(parser, good, strlen(good), "t", 0, 1, &ev, reason));
    CL_ASSERT_STR_EQ("u-1", ev.user_id);
    cl_event_clear(&ev);
    cl_event_parser_free(parser);
}

static void test_event_clear_is_idempotent(void)
{
    cl_event_t ev;
    if (parse_ok("{" REQUIRED "}", &ev) != CL_OK)
        return;
    cl_event_clear(&ev);
    CL_ASSERT(ev.row_key == NULL && ev.storage == NULL);
    cl_event_clear(&ev);
}

/* ---- parser construction ---------------------------------------------- */

static void test_parser_rejects_malformed_mapping_naming_the_field(void)
{
    const char *pointers[CL_FIELD_COUNT] = {[CL_FIELD_CITY] = "geo/city"};
    cl_event_parser_t *parser = NULL;
    char err[CL_ERR_LEN] = "";
    CL_ASSERT_INT_EQ(CL_ERR, cl_event_parser_new(pointers, MAX_BYTES, &parser, err));
    CL_ASSERT_STR_CONTAINS(err, "mapping for city: JSON Pointer \"geo/city\" must be empty or "
                                "start with '/'");
    CL_ASSERT(parser == NULL);

    const char *tilde[CL_FIELD_COUNT] = {[CL_FIELD_OS] = "/ua/o~s"};
    CL_ASSERT_INT_EQ(CL_ERR, cl_event_parser_new(tilde, MAX_BYTES, &parser, err));
    CL_ASSERT_STR_CONTAINS(err, "mapping for os: JSON Pointer \"/ua/o~s\" has '~' at byte 5");
}

static void test_parser_rejects_whole_document_pointer(void)
{
    const char *pointers[CL_FIELD_COUNT] = {[CL_FIELD_URL] = ""};
    cl_event_parser_t *parser = NULL;
    char err[CL_ERR_LEN] = "";
    CL_ASSERT_INT_EQ(CL_ERR, cl_event_parser_new(pointers, MAX_BYTES, &parser, err));
    CL_ASSERT_STR_CONTAINS(err, "mapping for url: the empty JSON Pointer names the whole document");
}

static void test_parser_rejects_unusable_max_bytes(void)
{
    cl_event_parser_t *parser = NULL;
    char err[CL_ERR_LEN] = "";
    CL_ASSERT_INT_EQ(CL_ERR, cl_event_parser_new(NULL, 0, &parser, err));
    CL_ASSERT_STR_CONTAINS(err, "maximum payload size 0 is outside");
    CL_ASSERT_INT_EQ(CL_ERR, cl_event_parser_new(NULL, (size_t)INT32_MAX, &parser, err));
}

/* ---- timestamps ------------------------------------------------------- */

typedef struct {
    const char *text;
    int64_t ms;
} ts_case_t;

static void test_timestamp_string_forms(void)
{
    static const ts_case_t cases[] = {
        {"2026-11-28T14:00:00Z", T0},
        {"2026-11-28T14:00:00z", T0},
        {"2026-11-28t14:00:00Z", T0},
        {"2026-11-28 14:00:00Z", T0},
        {"2026-11-28T14:00:00+00:00", T0},
        {"2026-11-28T14:00:00-00:00", T0},
        {"2026-11-28T14:00:00.123+01:00", T0 - 3600000 + 123},
        {"2026-11-28T14:00:00-05:30", T0 + 19800000},
        {"2026-11-28T14:00:00+0530", T0 - 19800000},
        {"2026-11-28T14:00:00+23:59", T0 - 86340000},
        {"2026-11-28T14:00:00.1Z", T0 + 100},
        {"2026-11-28T14:00:00.12Z", T0 + 120},
        {"2026-11-28T14:00:00.000Z", T0},
        {"2026-11-28T14:00:00.123456789Z", T0 + 123},
        {"2026-11-28T14:00:00.9999999Z", T0 + 999},
        {"1970-01-01T00:00:00Z", 0},
        {"1970-01-01T01:00:00+01:00", 0},
        {"9999-12-31T23:59:59.999Z", CL_DATETIME_MAX_MS},
        {"2024-02-29T12:00:00Z", INT64_C(1709208000000)},
        {"2000-02-29T00:00:00Z", INT64_C(951782400000)},
        {"2016-12-31T23:59:60Z", INT64_C(1483228799999)}, /* leap second clamped */
        {"2017-01-01T00:59:60+01:00", INT64_C(1483228799999)},
    };
    for (size_t i = 0; i < CL_ARRAY_LEN(cases); i++) {
        char reason[CL_ERR_LEN] = "";
        int64_t ms = -1;
        int rc = cl_event_parse_timestamp_string(cases[i].text, strlen(cases[i].text), &ms, reason);
        if (rc != CL_OK) {
            CL_FAIL_("%s: rejected: %s", cases[i].text, reason);
        } else if (ms != cases[i].ms) {
            CL_FAIL_("%s: expected %" PRId64 ", got %" PRId64, cases[i].text, cases[i].ms, ms);
        }
    }
}

typedef struct {
    const char *text;
    const char *reason;
} ts_bad_case_t;

static void test_timestamp_string_rejections(void)
{
    static const ts_bad_case_t cases[] = {
        {"2023-02-29T00:00:00Z", "2023-02 has no day 29"},
        {"2100-02-29T00:00:00Z", "2100-02 has no day 29"},
        {"2026-04-31T00:00:00Z", "2026-04 has no day 31"},
        {"2026-11-00T00:00:00Z", "2026-11 has no day 0"},
        {"2026-13-01T00:00:00Z", "month 13 is out of range"},
        {"2026-00-01T00:00:00Z", "month 0 is out of range"},
        {"2026-11-28T24:00:00Z", "hour 24 is out of range"},
        {"2026-11-28T14:60:00Z", "minute 60 is out of range"},
        {"2026-11-28T14:00:61Z", "second 61 is out of range"},
        {"2026-11-28T14:00:00", "no time zone in \"2026-11-28T14:00:00\""},
        {"2026-11-28T14:00:00.123", "no time zone"},
        {"2026-11-28T14:00:00.Z", "no digits after the decimal point"},
        {"2026-11-28T14:00:00 Z",
         "expected a time zone (Z or +hh:mm) at byte 19 in \"2026-11-28T14:00:00 Z\""},
        {"2026-11-28T14:00:00+01", "expected a time zone"},
        {"2026-11-28T14:00:00+1:00", "expected a time zone"},
        {"2026-11-28T14:00:00Z ", "unexpected text after the time zone"},
        {"2026-11-28T14:00:00+01:00:00", "unexpected text after the time zone"},
        {"2026-11-28T14:00:00+24:00", "time zone offset is out of range"},
        {"2026-11-28T14:00:00+01:60", "time zone offset is out of range"},
        {"2026-11-28", "expected an RFC 3339 date-time"},
        {"2026-11-28T14:00Z", "expected an RFC 3339 date-time"},
        {"2026/11/28T14:00:00Z", "expected an RFC 3339 date-time"},
        {"2026-11-28X14:00:00Z", "expected an RFC 3339 date-time"},
        {"12026-11-28T14:00:00Z", "expected an RFC 3339 date-time"},
        {" 2026-11-28T14:00:00Z", "expected an RFC 3339 date-time"},
        {"1969-12-31T23:59:59Z", "year 1969 is outside 1970..9999"},
        {"0000-01-01T00:00:00Z", "year 0 is outside"},
        {"1969-12-31T23:30:00-01:00", "year 1969 is outside"}, /* checked as written */
        {"1970-01-01T00:30:00+01:00", "instant earlier than 1970-01-01T00:00:00Z"},
        {"9999-12-31T23:00:00-02:00", "instant later than 9999-12-31T23:59:59.999Z"},
    };
    for (size_t i = 0; i < CL_ARRAY_LEN(cases); i++) {
        char reason[CL_ERR_LEN] = "";
        int64_t ms = -1;
        if (cl_event_parse_timestamp_string(cases[i].text, strlen(cases[i].text), &ms, reason) !=
            CL_ERR)
            CL_FAIL_("%s: accepted as %" PRId64, cases[i].text, ms);
        else if (strstr(reason, cases[i].reason) == NULL)
            CL_FAIL_("%s: reason \"%s\" does not contain \"%s\"", cases[i].text, reason,
                     cases[i].reason);
    }
}

static void test_timestamp_numbers_seconds_or_milliseconds_by_magnitude(void)
{
    static const ts_case_t cases[] = {
        {"1795874400", T0},
        {"1795874400123", T0 + 123},
        {"1795874400.123", T0 + 123},
        {"1795874400.5", T0 + 500},
        {"1795874400.9999", T0 + 999},
        {"1795874400123.9", T0 + 123},
        {"1795874400.0", T0},
        {"1.7958744e9", T0},
        {"0", 0},
        {"99999999999", INT64_C(99999999999000)}, /* just below 1e11: seconds */
        {"100000000000", INT64_C(100000000000)},  /* 1e11: milliseconds */
        {"99999999999.5", INT64_C(99999999999500)},
        {"253402300799999", CL_DATETIME_MAX_MS},
        {"99999999999.999", INT64_C(99999999999999)},
        {"253402300799.999", INT64_C(253402300799)}, /* >= 1e11, so milliseconds */
    };
    for (size_t i = 0; i < CL_ARRAY_LEN(cases); i++) {
        char json[256];
        snprintf(json, sizeof json, "{" UID ",\"timestamp\":%s," URL "}", cases[i].text);
        int64_t ms = parse_ts(json);
        if (ms != cases[i].ms)
            CL_FAIL_("%s: expected %" PRId64 ", got %" PRId64, cases[i].text, cases[i].ms, ms);
    }
}

/* Every day from 1970-01-01 to 9999-12-31: formatting then parsing gives the
 * same instant, and consecutive days are consecutive dates. */
static void test_calendar_round_trips_every_day(void)
{
    int64_t last_day = CL_DATETIME_MAX_MS / 86400000;
    char previous[CL_DATETIME_SIZE] = "";
    for (int64_t day = 0; day <= last_day; day++) {
        int64_t ms = day * 86400000 + 45296789; /* 12:34:56.789 */
        char text[CL_DATETIME_SIZE + 1];
        CL_ASSERT_INT_EQ(CL_OK, cl_datetime_format(ms, text));
        if (strcmp(previous, text) >= 0) {
            CL_FAIL_("day %" PRId64 ": \"%s\" does not follow \"%s\"", day, text, previous);
            return;
        }
        memcpy(previous, text, sizeof previous);
        text[10] = 'T';
        text[23] = 'Z';
        text[24] = '\0';
        int64_t back = -1;
        char reason[CL_ERR_LEN];
        if (cl_event_parse_timestamp_string(text, 24, &back, reason) != CL_OK || back != ms) {
            CL_FAIL_("day %" PRId64 ": %s parsed as %" PRId64 " (%s)", day, text, back, reason);
            return;
        }
    }
}

/* The C library is an independent oracle for the civil-date arithmetic. */
static void test_calendar_agrees_with_timegm(void)
{
    for (int year = 1970; year <= 9999; year += 7) {
        for (int month = 1; month <= 12; month++) {
            struct tm tm = {.tm_year = year - 1900,
                            .tm_mon = month - 1,
                            .tm_mday = 28,
                            .tm_hour = 23,
                            .tm_min = 59,
                            .tm_sec = 59};
            int64_t expected = (int64_t)timegm(&tm) * 1000;
            char text[32];
            snprintf(text, sizeof text, "%04d-%02d-28T23:59:59Z", year, month);
            int64_t ms = -1;
            char reason[CL_ERR_LEN];
            if (cl_event_parse_timestamp_string(text, strlen(text), &ms, reason) != CL_OK ||
                ms != expected) {
                CL_FAIL_("%s: expected %" PRId64 ", got %" PRId64, text, expected, ms);
                return;
            }
        }
    }
}

/* ---- event-time window ------------------------------------------------- */

#define DAY_MS INT64_C(86400000)
/* 2026-12-04T18:00:00.000Z */
#define NOW_MS INT64_C(1796407200000)

static const cl_event_time_window_t default_window = {400 * DAY_MS, 3600000};

static void test_time_window_accepts_both_edges_exactly(void)
{
    char reason[CL_ERR_LEN] = "";
    CL_ASSERT_INT_EQ(CL_OK, cl_event_check_time_window(NOW_MS, NOW_MS, &default_window, reason));
    CL_ASSERT_INT_EQ(
        CL_OK, cl_event_check_time_window(NOW_MS - 400 * DAY_MS, NOW_MS, &default_window, reason));
    CL_ASSERT_INT_EQ(CL_OK,
                     cl_event_check_time_window(NOW_MS + 3600000, NOW_MS, &default_window, reason));
    CL_ASSERT_STR_EQ("", reason);
}

static void test_time_window_rejects_one_millisecond_too_old(void)
{
    char reason[CL_ERR_LEN] = "";
    CL_ASSERT_INT_EQ(CL_ERR, cl_event_check_time_window(NOW_MS - 400 * DAY_MS - 1, NOW_MS,
                                                        &default_window, reason));
    CL_ASSERT_STR_EQ("timestamp: 2025-10-30T17:59:59.999Z is 34560000001 ms before its arrival "
                     "at 2026-12-04T18:00:00.000Z, more than ingest.max_event_age "
                     "(34560000000 ms) allows",
                     reason);
    CL_ASSERT_INT_EQ(CL_ERR, cl_event_check_time_window(0, NOW_MS, &default_window, reason));
    CL_ASSERT_STR_CONTAINS(reason, "1970-01-01T00:00:00.000Z");
}

static void test_time_window_rejects_one_millisecond_too_far_ahead(void)
{
    char reason[CL_ERR_LEN] = "";
    CL_ASSERT_INT_EQ(CL_ERR,
                     cl_event_check_time_window(NOW_MS + 3600001, NOW_MS, &default_window, reason));
    CL_ASSERT_STR_EQ("timestamp: 2026-12-04T19:00:00.001Z is 3600001 ms after its arrival at "
                     "2026-12-04T18:00:00.000Z, more than ingest.max_future_skew (3600000 ms) "
                     "allows",
                     reason);
    CL_ASSERT_INT_EQ(
        CL_ERR, cl_event_check_time_window(CL_DATETIME_MAX_MS, NOW_MS, &default_window, reason));
    CL_ASSERT_STR_CONTAINS(reason, "9999-12-31T23:59:59.999Z");
}

static void test_time_window_of_zero_skew_and_a_century(void)
{
    char reason[CL_ERR_LEN];
    cl_event_time_window_t w = {36500 * DAY_MS, 0};
    CL_ASSERT_INT_EQ(CL_OK, cl_event_check_time_window(NOW_MS, NOW_MS, &w, reason));
    CL_ASSERT_INT_EQ(CL_ERR, cl_event_check_time_window(NOW_MS + 1, NOW_MS, &w, reason));
    CL_ASSERT_INT_EQ(CL_OK, cl_event_check_time_window(0, NOW_MS, &w, reason));
}

static const cl_test_case_t cases[] = {
    CL_TEST(test_flat_event_every_field_extracted),
    CL_TEST(test_nested_mapping_every_field_extracted),
    CL_TEST(test_missing_field_reason_names_its_pointer),
    CL_TEST(test_optional_fields_absent_get_defaults),
    CL_TEST(test_optional_null_means_absent),
    CL_TEST(test_strings_stored_exactly_after_unescaping),
    CL_TEST(test_long_url_accepted),
    CL_TEST(test_url_longer_than_its_column_rejected),
    CL_TEST(test_user_id_integer_stored_as_decimal_text),
    CL_TEST(test_user_id_integers_json_c_may_have_clamped_rejected),
    CL_TEST(test_time_spent_fraction_rounded_to_nearest),
    CL_TEST(test_duplicate_member_last_occurrence_wins),
    CL_TEST(test_hostile_but_valid_json_accepted),
    CL_TEST(test_trailing_whitespace_accepted),
    CL_TEST(test_payload_at_the_limit_accepted),
    CL_TEST(test_row_key_from_event_id),
    CL_TEST(test_row_key_derived_from_topic_partition_offset),
    CL_TEST(test_row_key_same_message_same_key),
    CL_TEST(test_explicit_key_cannot_equal_derived_key),
    CL_TEST(test_malformed_payloads_rejected_with_reason),
    CL_TEST(test_null_message_is_empty_payload),
    CL_TEST(test_nul_byte_after_object_rejected),
    CL_TEST(test_raw_nul_inside_string_rejected),
    CL_TEST(test_payload_over_limit_reason_gives_both_sizes),
    CL_TEST(test_field_length_limits),
    CL_TEST(test_reason_quotes_values_escaped_and_shortened),
    CL_TEST(test_reason_never_cuts_a_utf8_sequence),
    CL_TEST(test_parser_reusable_after_rejections),
    CL_TEST(test_event_clear_is_idempotent),
    CL_TEST(test_parser_rejects_malformed_mapping_naming_the_field),
    CL_TEST(test_parser_rejects_whole_document_pointer),
    CL_TEST(test_parser_rejects_unusable_max_bytes),
    CL_TEST(test_timestamp_string_forms),
    CL_TEST(test_timestamp_string_rejections),
    CL_TEST(test_timestamp_numbers_seconds_or_milliseconds_by_magnitude),
    CL_TEST(test_calendar_round_trips_every_day),
    CL_TEST(test_calendar_agrees_with_timegm),
    CL_TEST(test_time_window_accepts_both_edges_exactly),
    CL_TEST(test_time_window_rejects_one_millisecond_too_old),
    CL_TEST(test_time_window_rejects_one_millisecond_too_far_ahead),
    CL_TEST(test_time_window_of_zero_skew_and_a_century),
};

CL_TEST_MAIN(cases)

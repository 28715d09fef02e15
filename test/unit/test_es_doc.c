/* Unit tests for es_doc: window labels, deterministic document ids, index
 * names from date patterns, template names and patterns, the stats mapping
 * and the stats source (which must match the mapping field for field). */
#include "clickloop/es_doc.h"

#include <json-c/json.h>
#include <math.h>

#include "cl_test.h"

#define HASH_EXAMPLE_COM "0f115db062b7c0dd030b16878c99dea5c354b49dc37b38eb8846179c7783e9d7"

static void test_window_labels_use_the_largest_whole_unit(void)
{
    static const struct {
        uint64_t ms;
        const char *label;
    } cases[] = {
        {86400000, "1d"},    {7 * 86400000ULL, "7d"}, {3600000, "1h"},
        {6 * 3600000, "6h"}, {90 * 60000, "90m"},     {60000, "1m"},
        {30000, "30s"},      {250, "250ms"},          {36 * 3600000, "36h"},
    };
    char out[CL_ES_WINDOW_LABEL_SIZE];
    for (size_t i = 0; i < CL_ARRAY_LEN(cases); i++) {
        CL_ASSERT_INT_EQ(CL_OK, cl_es_window_label(cases[i].ms, out));
        CL_ASSERT_STR_EQ(cases[i].label, out);
    }
    CL_ASSERT_INT_EQ(CL_ERR, cl_es_window_label(0, out));
    CL_ASSERT_INT_EQ(CL_OK, cl_es_window_label(UINT64_MAX, out));
    CL_ASSERT_STR_EQ("18446744073709551615ms", out);
}

static void test_doc_id_is_window_start_country_and_url_hash(void)
{
    char id[CL_ES_DOC_ID_SIZE], err[CL_ERR_LEN];
    const char *url = "https://example.com/";
    CL_ASSERT_INT_EQ(CL_OK, cl_es_doc_id("1h", 1715904000000, "DE", url, strlen(url), id, err));
    CL_ASSERT_STR_EQ("1h:1715904000000:DE:" HASH_EXAMPLE_COM, id);
}

static void test_doc_id_writes_an_unknown_country_as_dash(void)
{
    char id[CL_ES_DOC_ID_SIZE], err[CL_ERR_LEN];
    const char *url = "https://example.com/";
    CL_ASSERT_INT_EQ(CL_OK, cl_es_doc_id("1d", 0, "", url, strlen(url), id, err));
    CL_ASSERT_STR_EQ("1d:0:-:" HASH_EXAMPLE_COM, id);
    CL_ASSERT_INT_EQ(CL_OK, cl_es_doc_id("1d", 0, NULL, url, strlen(url), id, err));
    CL_ASSERT_STR_EQ("1d:0:-:" HASH_EXAMPLE_COM, id);
}

static void test_doc_id_from_a_known_hash_is_the_same_id(void)
{
    char id[CL_ES_DOC_ID_SIZE], from_hash[CL_ES_DOC_ID_SIZE], err[CL_ERR_LEN];
    const char *url = "https://example.com/";
    CL_ASSERT_INT_EQ(CL_OK, cl_es_doc_id("1h", 5, "unknown", url, strlen(url), id, err));
    CL_ASSERT_STR_EQ("1h:5:unknown:" HASH_EXAMPLE_COM, id);
    /* The stats table keeps the hash in upper case. */
    const char *upper = "0F115DB062B7C0DD030B16878C99DEA5C354B49DC37B38EB8846179C7783E9D7";
    CL_ASSERT_INT_EQ(CL_OK, cl_es_doc_id_from_hash("1h", 5, "unknown", upper, from_hash, err));
    CL_ASSERT_STR_EQ(id, from_hash);
    CL_ASSERT_INT_EQ(CL_ERR, cl_es_doc_id_from_hash("1h", 5, "DE", "0f11", from_hash, err));
    CL_ASSERT_STR_CONTAINS(err, "64 hex digits");
    CL_ASSERT_INT_EQ(CL_ERR,
                     cl_es_doc_id_from_hash("1h", 5, "DE", HASH_EXAMPLE_COM "0", from_hash, err));
    CL_ASSERT_INT_EQ(CL_ERR, cl_es_doc_id_from_hash("1h", 5, "DE", NULL, from_hash, err));
}

static void test_doc_id_stays_short_for_a_huge_url_and_differs_per_url(void)
{
    size_t len = 100000;
    char *url = malloc(len);
    memset(url, 'a', len);
    char id1[CL_ES_DOC_ID_SIZE], id2[CL_ES_DOC_ID_SIZE], err[CL_ERR_LEN];
    CL_ASSERT_INT_EQ(CL_OK, cl_es_doc_id("1h", 1, "US", url, len, id1, err));
    url[len - 1] = 'b';
    CL_ASSERT_INT_EQ(CL_OK, cl_es_doc_id("1h", 1, "US", url, len, id2, err));
    CL_ASSERT(strlen(id1) < 512);
    CL_ASSERT(strcmp(id1, id2) != 0);
    free(url);
}

static void test_doc_id_longest_parts_fit_the_buffer(void)
{
    char id[CL_ES_DOC_ID_SIZE], err[CL_ERR_LEN];
    CL_ASSERT_INT_EQ(CL_OK, cl_es_doc_id("9999999999999999999999", INT64_MIN, "ABCDEFGHIJKLMNOP",
                                         "u", 1, id, err));
    CL_ASSERT_INT_EQ(CL_ES_DOC_ID_SIZE - 1, strlen(id));
}

static void test_doc_id_refuses_parts_that_could_collide(void)
{
    char id[CL_ES_DOC_ID_SIZE], err[CL_ERR_LEN];
    CL_ASSERT_INT_EQ(CL_ERR, cl_es_doc_id("1h:2", 0, "DE", "u", 1, id, err));
    CL_ASSERT_STR_CONTAINS(err, "window label");
    CL_ASSERT_INT_EQ(CL_ERR, cl_es_doc_id("", 0, "DE", "u", 1, id, err));
    CL_ASSERT_INT_EQ(CL_ERR, cl_es_doc_id("1H", 0, "DE", "u", 1, id, err));
    CL_ASSERT_INT_EQ(CL_ERR, cl_es_doc_id("1h", 0, "D:E", "u", 1, id, err));
    CL_ASSERT_STR_CONTAINS(err, "country");
    CL_ASSERT_INT_EQ(CL_ERR, cl_es_doc_id("1h", 0, "-", "u", 1, id, err));
    CL_ASSERT_INT_EQ(CL_ERR, cl_es_doc_id("1h", 0, "ABCDEFGHIJKLMNOPQ", "u", 1, id, err));
    CL_ASSERT_INT_EQ(CL_ERR, cl_es_doc_id("1h", 0, "DE", NULL, 0, id, err));
}

static void test_index_name_fills_in_the_utc_date_of_the_window_start(void)
{
    char out[CL_ES_INDEX_NAME_SIZE];
    /* 2024-05-17T23:59:59.999Z */
    CL_ASSERT_INT_EQ(25,
                     cl_es_index_name("clickstream-stats-%Y.%m", 1715990399999, out, sizeof out));
    CL_ASSERT_STR_EQ("clickstream-stats-2024.05", out);
    CL_ASSERT(cl_es_index_name("s-%Y%m%d", 1715990399999, out, sizeof out) > 0);
    CL_ASSERT_STR_EQ("s-20240517", out);
    CL_ASSERT(cl_es_index_name("s-%Y%m%d", 1715990400000, out, sizeof out) > 0);
    CL_ASSERT_STR_EQ("s-20240518", out);
    CL_ASSERT(cl_es_index_name("s-%d.%m.%Y", 951782400000, out, sizeof out) > 0); /* leap day */
    CL_ASSERT_STR_EQ("s-29.02.2000", out);
    CL_ASSERT(cl_es_index_name("s-%Y-%m-%d", 0, out, sizeof out) > 0);
    CL_ASSERT_STR_EQ("s-1970-01-01", out);
    CL_ASSERT(cl_es_index_name("s-%Y-%m-%d", -1, out, sizeof out) > 0);
    CL_ASSERT_STR_EQ("s-1969-12-31", out);
    CL_ASSERT(cl_es_index_name("s-%Y-%m-%d", 253402300799999, out, sizeof out) > 0);
    CL_ASSERT_STR_EQ("s-9999-12-31", out);
}

static void test_index_name_without_pattern_is_copied(void)
{
    char out[CL_ES_INDEX_NAME_SIZE];
    CL_ASSERT_INT_EQ(17, cl_es_index_name("clickstream-stats", 1715990399999, out, sizeof out));
    CL_ASSERT_STR_EQ("clickstream-stats", out);
    CL_ASSERT(!cl_es_index_has_date("clickstream-stats"));
    CL_ASSERT(cl_es_index_has_date("clickstream-stats-%Y"));
}

static void test_index_name_refuses_what_does_not_fit(void)
{
    char out[8];
    CL_ASSERT_INT_EQ(CL_ERR, cl_es_index_name("stats-%Y", 0, out, sizeof out));
    CL_ASSERT_INT_EQ(6, cl_es_index_name("s-%Y", 0, out, sizeof out));
    CL_ASSERT_STR_EQ("s-1970", out);
    CL_ASSERT_INT_EQ(CL_ERR, cl_es_index_name("s-%Y", 253402300800000, out, sizeof out));
}

static void test_template_pattern_and_name_follow_the_index_name(void)
{
    char out[CL_ES_INDEX_NAME_SIZE];
    CL_ASSERT_INT_EQ(21, cl_es_index_template_pattern("clickstream-stats-%Y.%m", out, sizeof out));
    CL_ASSERT_STR_EQ("clickstream-stats-*.*", out);
    CL_ASSERT(cl_es_index_template_pattern("s-%Y%m%d", out, sizeof out) > 0);
    CL_ASSERT_STR_EQ("s-*", out);
    CL_ASSERT(cl_es_index_template_name("clickstream-stats-%Y.%m", out, sizeof out) > 0);
    CL_ASSERT_STR_EQ("clickstream-stats-yyyy.mm", out);
    CL_ASSERT(cl_es_index_template_name("s-%Y%m%d", out, sizeof out) > 0);
    CL_ASSERT_STR_EQ("s-yyyymmdd", out);
}

static json_object *parse_or_null(const char *text)
{
    json_tokener *tok = json_tokener_new();
    json_object *obj = json_tokener_parse_ex(tok, text, (int)strlen(text));
    bool ok = json_tokener_get_error(tok) == json_tokener_success;
    json_tokener_free(tok);
    if (!ok) {
        json_object_put(obj);
        return NULL;
    }
    return obj;
}

static void test_mapping_is_strict_and_keeps_long_urls_indexable(void)
{
    json_object *m = parse_or_null(cl_es_stats_mappings());
    CL_ASSERT(m != NULL);
    json_object *v = NULL, *props = NULL, *url = NULL;
    CL_ASSERT(json_object_object_get_ex(m, "dynamic", &v));
    CL_ASSERT_STR_EQ("strict", json_object_get_string(v));
    CL_ASSERT(json_object_object_get_ex(m, "properties", &props));
    CL_ASSERT(json_object_object_get_ex(props, "url", &url));
    CL_ASSERT(json_object_object_get_ex(url, "ignore_above", &v));
    /* 8191 UTF-16 units take at most 3 bytes each in UTF-8: under Lucene's
     * 32766-byte term limit. */
    CL_ASSERT(json_object_get_int(v) * 3 <= 32766);
    CL_ASSERT(json_object_object_get_ex(props, "url_sha256", &v));
    json_object_put(m);
}

static cl_es_stats_doc_t sample_doc(void)
{
    cl_es_stats_doc_t d = {
        .window = "1h",
        .window_start_ms = 1715904000000,
        .window_end_ms = 1715907600000,
        .url = "https://example.com/",
        .url_len = 20,
        .country = "DE",
        .clicks = 42,
        .unique_users = 7,
        .time_spent_samples = 3,
        .avg_time_spent_ms = 1234.5,
        .updated_at_ms = 1715907600123,
    };
    return d;
}

static void test_source_has_exactly_the_mapped_fields(void)
{
    cl_es_stats_doc_t d = sample_doc();
    cl_buf_t out;
    cl_buf_init(&out);
    cl_es_stats_source(&out, &d);
    CL_ASSERT_STR_EQ("{\"window\":\"1h\",\"window_start\":1715904000000,\"window_end\":"
                     "1715907600000,\"url\":\"https://example.com/\",\"url_sha256\":"
                     "\"" HASH_EXAMPLE_COM "\",\"country\":\"DE\",\"clicks\":42,\"unique_users\":7,"
                     "\"time_spent_samples\":3,\"avg_time_spent_ms\":1234.500,\"updated_at\":"
                     "1715907600123}",
                     out.data);
    json_object *src = parse_or_null(out.data);
    json_object *m = parse_or_null(cl_es_stats_mappings());
    json_object *props = NULL;
    CL_ASSERT(src != NULL && m != NULL);
    json_object_object_get_ex(m, "properties", &props);
    CL_ASSERT_INT_EQ(json_object_object_length(props), json_object_object_length(src));
    json_object_object_foreach(src, key, value)
    {
        CL_UNUSED(value);
        if (!json_object_object_get_ex(props, key, NULL))
            CL_ASSERT_STR_EQ("a mapped field", key);
    }
    json_object_put(src);
    json_object_put(m);
    cl_buf_free(&out);
}

static void test_source_writes_unknowns_as_null_and_escapes_the_url(void)
{
    cl_es_stats_doc_t d = sample_doc();
    d.country = "";
    d.time_spent_samples = 0;
    d.url = "https://e.com/\"q\"\\\n";
    d.url_len = strlen(d.url);
    cl_buf_t out;
    cl_buf_init(&out);
    cl_es_stats_source(&out, &d);
    CL_ASSERT_STR_CONTAINS(out.data, "\"country\":null");
    CL_ASSERT_STR_CONTAINS(out.data, "\"avg_time_spent_ms\":null");
    json_object *src = parse_or_null(out.data);
    json_object *url = NULL;
    CL_ASSERT(src != NULL);
    json_object_object_get_ex(src, "url", &url);
    CL_ASSERT_STR_EQ(d.url, json_object_get_string(url));
    json_object_put(src);
    cl_buf_free(&out);
}

static bool field_is(json_object *src, const char *key, json_type type)
{
    json_object *v = NULL;
    return json_object_object_get_ex(src, key, &v) && json_object_is_type(v, type);
}

static int64_t field_int(json_object *src, const char *key)
{
    json_object *v = NULL;
    json_object_object_get_ex(src, key, &v);
    return json_object_get_int64(v);
}

/* The sink does not parse documents again before sending them (es_sink.h):
 * what guards the builder is this test. Documents at every edge (each byte
 * value in the URL, multi-byte text, extreme numbers, non-finite averages,
 * absent countries) must pass the check the sink once made and give back,
 * parsed, the values they were built from. */
static void test_every_generated_source_is_one_json_object_that_round_trips(void)
{
    char url[2 * 256 + 64];
    size_t url_len = 0;
    for (int c = 1; c < 256; c++) {
        if (c >= 0x80) /* well-formed UTF-8 only, as the utf8mb4 column holds */
            continue;
        url[url_len++] = (char)c;
    }
    memcpy(url + url_len, "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 9);
    url_len += 9;
    url[url_len] = '\0';
    const double averages[] = {0.0, 1234.5, 1e300, -0.0, NAN, INFINITY};
    const char *const countries[] = {"DE", "", NULL, "ABCDEFGHIJKLMNOP"};
    const int64_t starts[] = {0, INT64_MIN, INT64_MAX, -86400000};
    const uint64_t counts[] = {0, 1, UINT64_MAX};
    size_t built = 0;
    for (size_t a = 0; a < CL_ARRAY_LEN(averages); a++)
        for (size_t c = 0; c < CL_ARRAY_LEN(countries); c++)
            for (size_t t = 0; t < CL_ARRAY_LEN(starts); t++)
                for (size_t n = 0; n < CL_ARRAY_LEN(counts); n++) {
                    cl_es_stats_doc_t d = sample_doc();
                    d.url = url;
                    d.url_len = url_len;
                    d.country = countries[c];
                    d.window_start_ms = d.window_end_ms = d.updated_at_ms = starts[t];
                    d.clicks = d.unique_users = d.time_spent_samples = counts[n];
                    d.avg_time_spent_ms = averages[a];
                    cl_buf_t out;
                    cl_buf_init(&out);
                    cl_es_stats_source(&out, &d);
                    built++;
                    char err[CL_ERR_LEN];
                    if (cl_es_source_check(out.data, out.len, err) != CL_OK ||
                        memchr(out.data, '\n', out.len) != NULL) {
                        CL_FAIL_("document %zu: %s in %s", built, err, out.data);
                        cl_buf_free(&out);
                        return;
                    }
                    json_object *src = parse_or_null(out.data);
                    json_object *v = NULL;
                    CL_ASSERT(json_object_object_get_ex(src, "url", &v));
                    CL_ASSERT_INT_EQ(url_len, json_object_get_string_len(v));
                    CL_ASSERT(memcmp(url, json_object_get_string(v), url_len) == 0);
                    CL_ASSERT_INT_EQ(starts[t], field_int(src, "window_start"));
                    CL_ASSERT_INT_EQ(starts[t], field_int(src, "updated_at"));
                    CL_ASSERT(json_object_object_get_ex(src, "clicks", &v));
                    CL_ASSERT(json_object_get_uint64(v) == counts[n]);
                    bool has_country = countries[c] != NULL && countries[c][0] != '\0';
                    CL_ASSERT(
                        field_is(src, "country", has_country ? json_type_string : json_type_null));
                    bool has_avg = counts[n] > 0 && isfinite(averages[a]);
                    CL_ASSERT(field_is(src, "avg_time_spent_ms",
                                       has_avg ? json_type_double : json_type_null));
                    json_object_put(src);
                    cl_buf_free(&out);
                }
    CL_ASSERT_INT_EQ(6 * 4 * 4 * 3, built);
}

static void test_stats_doc_id_matches_doc_id(void)
{
    cl_es_stats_doc_t d = sample_doc();
    char id[CL_ES_DOC_ID_SIZE], err[CL_ERR_LEN];
    CL_ASSERT_INT_EQ(CL_OK, cl_es_stats_doc_id(&d, id, err));
    CL_ASSERT_STR_EQ("1h:1715904000000:DE:" HASH_EXAMPLE_COM, id);
    d.url_sha256_hex = "0F115DB062B7C0DD030B16878C99DEA5C354B49DC37B38EB8846179C7783E9D7";
    CL_ASSERT_INT_EQ(CL_OK, cl_es_stats_doc_id(&d, id, err));
    CL_ASSERT_STR_EQ("1h:1715904000000:DE:" HASH_EXAMPLE_COM, id);
    cl_buf_t out;
    cl_buf_init(&out);
    cl_es_stats_source(&out, &d);
    CL_ASSERT_STR_CONTAINS(out.data, "\"url_sha256\":\"" HASH_EXAMPLE_COM "\"");
    cl_buf_free(&out);
}

static const cl_test_case_t cases[] = {
    CL_TEST(test_window_labels_use_the_largest_whole_unit),
    CL_TEST(test_doc_id_is_window_start_country_and_url_hash),
    CL_TEST(test_doc_id_writes_an_unknown_country_as_dash),
    CL_TEST(test_doc_id_from_a_known_hash_is_the_same_id),
    CL_TEST(test_doc_id_stays_short_for_a_huge_url_and_differs_per_url),
    CL_TEST(test_doc_id_longest_parts_fit_the_buffer),
    CL_TEST(test_doc_id_refuses_parts_that_could_collide),
    CL_TEST(test_index_name_fills_in_the_utc_date_of_the_window_start),
    CL_TEST(test_index_name_without_pattern_is_copied),
    CL_TEST(test_index_name_refuses_what_does_not_fit),
    CL_TEST(test_template_pattern_and_name_follow_the_index_name),
    CL_TEST(test_mapping_is_strict_and_keeps_long_urls_indexable),
    CL_TEST(test_source_has_exactly_the_mapped_fields),
    CL_TEST(test_source_writes_unknowns_as_null_and_escapes_the_url),
    CL_TEST(test_every_generated_source_is_one_json_object_that_round_trips),
    CL_TEST(test_stats_doc_id_matches_doc_id),
};

CL_TEST_MAIN(cases)

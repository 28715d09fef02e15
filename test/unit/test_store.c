/* Unit tests for the pure parts of the store module: batch SQL, what the
 * event parser hands it, and migrations. No server: the batch builder gets
 * its escaping function passed in. */
#include "clickloop/store.h"

#include "clickloop/event.h"

#include <ctype.h>

#include "cl_test.h"

static cl_store_row_t row_with_everything(void)
{
    cl_store_row_t r = {
        .row_key = "e:ev1",
        .row_key_len = 5,
        .event_id = "ev1",
        .user_id = "u1",
        .ts_ms = INT64_C(1700000000123),
        .url = "https://a.example/x?q=1",
        .url_len = 23,
        .country = "FR",
        .city = "Paris",
        .browser = "Firefox",
        .time_spent_ms = 1500,
        .topic = "clicks",
        .partition = 0,
        .offset = 10,
    };
    return r;
}

static cl_store_row_t row_with_nulls(void)
{
    cl_store_row_t r = {
        .row_key = "k:clicks:1:7",
        .row_key_len = 12,
        .user_id = "u'2",
        .ts_ms = 0,
        .url = "http://b/",
        .url_len = 9,
        .time_spent_ms = -1,
        .topic = "clicks",
        .partition = 1,
        .offset = 7,
    };
    return r;
}

/* Build, expecting success; the caller frees the buffer. */
static cl_buf_t build(const cl_store_row_t *rows, size_t n, const cl_store_rejected_t *rej,
                      size_t m, cl_store_escape_fn escape)
{
    cl_buf_t b;
    cl_buf_init(&b);
    char err[CL_ERR_LEN] = "";
    int rc = cl_store_build_batch_sql(&b, rows, n, rej, m, escape, err);
    if (rc != CL_OK)
        fprintf(stderr, "    build failed: %s\n", err);
    CL_ASSERT_INT_EQ(CL_OK, rc);
    return b;
}

static void test_two_event_batch_with_nulls(void)
{
    cl_store_row_t rows[2] = {row_with_nulls(), row_with_everything()};
    cl_buf_t b = build(rows, 2, NULL, 0, cl_db_escape_string);
    CL_ASSERT_STR_EQ(
        "START TRANSACTION;\n"
        "INSERT INTO click_data (row_key,event_id,user_id,event_time,url,time_spent_ms,"
        "kafka_topic,kafka_partition,kafka_offset) VALUES "
        "(_binary'e:ev1','ev1','u1','2023-11-14 22:13:20.123','https://a.example/x?q=1',1500,"
        "'clicks',0,10),"
        "(_binary'k:clicks:1:7',NULL,'u\\'2','1970-01-01 00:00:00.000','http://b/',NULL,"
        "'clicks',1,7) ON DUPLICATE KEY UPDATE row_key=row_key;\n"
        "INSERT INTO agg_pending (row_key,user_id,event_time) VALUES "
        "(_binary'e:ev1','u1','2023-11-14 22:13:20.123'),"
        "(_binary'k:clicks:1:7','u\\'2','1970-01-01 00:00:00.000') "
        "ON DUPLICATE KEY UPDATE row_key=row_key;\n"
        "INSERT INTO geo_data (row_key,country,city) VALUES (_binary'e:ev1','FR','Paris') "
        "ON DUPLICATE KEY UPDATE row_key=row_key;\n"
        "INSERT INTO user_agent_data (row_key,browser,os,device,user_agent) VALUES "
        "(_binary'e:ev1','Firefox',NULL,NULL,NULL) ON DUPLICATE KEY UPDATE row_key=row_key;\n"
        "COMMIT",
        b.data);
    cl_buf_free(&b);
}

static void test_values_escape_quotes_backslashes_and_nul_bytes(void)
{
    cl_store_row_t r = row_with_nulls();
    r.user_id = "a'b\\c\"d";
    r.url = "x\0y\nz"; /* the NUL is part of the value: url carries a length */
    r.url_len = 5;
    r.city = "O'Hare";
    cl_buf_t b = build(&r, 1, NULL, 0, cl_db_escape_string);
    CL_ASSERT_STR_CONTAINS(b.data, ",'a\\'b\\\\c\\\"d',");
    CL_ASSERT_STR_CONTAINS(b.data, ",'x\\0y\\nz',");
    CL_ASSERT_STR_CONTAINS(b.data, "(_binary'k:clicks:1:7',NULL,'O\\'Hare')");
    CL_ASSERT_INT_EQ(strlen(b.data), b.len); /* no raw NUL in the statement */
    cl_buf_free(&b);
}

/* Marks every byte it was handed: proves each value went through escaping. */
static size_t shouting_escape(char *to, const char *from, size_t len)
{
    for (size_t i = 0; i < len; i++)
        to[i] = (char)toupper((unsigned char)from[i]);
    to[len] = '\0';
    return len;
}

static void test_every_value_goes_through_the_escape_function(void)
{
    cl_store_row_t r = row_with_everything();
    memcpy(r.country, "fr", 3);
    cl_store_rejected_t rej = {"clicks", 3, 4, "payload", 7, "reason"};
    cl_buf_t b = build(&r, 1, &rej, 1, shouting_escape);
    const char *raw[] = {"'e:ev1'", "'ev1'",     "'u1'",      "'https://", "'clicks'",
                         "'Paris'", "'Firefox'", "'payload'", "'reason'",  "'fr'"};
    for (size_t i = 0; i < CL_ARRAY_LEN(raw); i++) {
        if (strstr(b.data, raw[i]) != NULL)
            CL_FAIL_("unescaped value %s in %s", raw[i], b.data);
    }
    CL_ASSERT_STR_CONTAINS(b.data, "_binary'E:EV1'");
    CL_ASSERT_STR_CONTAINS(b.data, "('CLICKS',3,4,_binary'PAYLOAD','REASON')");
    cl_buf_free(&b);
}

static void test_empty_batch_appends_nothing(void)
{
    cl_buf_t b = build(NULL, 0, NULL, 0, cl_db_escape_string);
    CL_ASSERT_INT_EQ(0, b.len);
    cl_buf_free(&b);
}

static void test_rejected_only_batch_keeps_raw_bytes(void)
{
    cl_store_rejected_t rej = {"clicks", 2, 99, "\xff\xfe'{", 4, "not JSON"};
    cl_buf_t b = build(NULL, 0, &rej, 1, cl_db_escape_string);
    CL_ASSERT_STR_EQ("START TRANSACTION;\n"
                     "INSERT INTO rejected_events (kafka_topic,kafka_partition,kafka_offset,"
                     "payload,reason) VALUES ('clicks',2,99,_binary'\xff\xfe\\'{','not JSON') "
                     "ON DUPLICATE KEY UPDATE id=id;\n"
                     "COMMIT",
                     b.data);
    cl_buf_free(&b);
}

static void test_rejected_tombstone_stores_null_payload(void)
{
    cl_store_rejected_t rej = {"clicks", 0, 1, NULL, 0, "empty payload"};
    cl_buf_t b = build(NULL, 0, &rej, 1, cl_db_escape_string);
    CL_ASSERT_STR_CONTAINS(b.data, "('clicks',0,1,NULL,'empty payload')");
    cl_buf_free(&b);
}

static void test_rejected_reason_is_made_storable(void)
{
    char reason[3000];
    memset(reason, 'x', sizeof reason - 1);
    reason[sizeof reason - 1] = '\0';
    reason[0] = '\xff'; /* ill-formed byte: becomes '?' */
    cl_store_rejected_t rej = {"clicks", 0, 1, NULL, 0, reason};
    cl_buf_t b = build(NULL, 0, &rej, 1, cl_db_escape_string);
    char want[1100];
    snprintf(want, sizeof want, ",'?%.*s')", CL_STORE_REASON_MAX_CHARS - 1, reason + 1);
    CL_ASSERT_STR_CONTAINS(b.data, want);
    cl_buf_free(&b);
}

static void test_rows_and_rejected_are_written_in_key_order(void)
{
    cl_store_row_t rows[3] = {row_with_nulls(), row_with_everything(), row_with_everything()};
    rows[2].row_key = "e:ev0";
    cl_store_rejected_t rej[3] = {
        {"b", 0, 5, NULL, 0, "r"}, {"a", 1, 1, NULL, 0, "r"}, {"a", 0, 9, NULL, 0, "r"}};
    cl_buf_t b = build(rows, 3, rej, 3, cl_db_escape_string);
    const char *k0 = strstr(b.data, "(_binary'e:ev0'");
    const char *k1 = strstr(b.data, "(_binary'e:ev1'");
    const char *k2 = strstr(b.data, "(_binary'k:clicks:1:7'");
    CL_ASSERT(k0 != NULL && k1 != NULL && k2 != NULL && k0 < k1 && k1 < k2);
    CL_ASSERT_STR_CONTAINS(b.data, "VALUES ('a',0,9,NULL,'r'),('a',1,1,NULL,'r'),('b',0,5,");
    cl_buf_free(&b);
}

static void test_batch_with_a_malformed_rejected_event_is_refused_naming_it(void)
{
    cl_store_row_t rows[1] = {row_with_everything()};
    cl_store_rejected_t rej[2] = {{"clicks", 0, 1, "x", 1, "r"}, {NULL, 0, 2, "y", 1, "r"}};
    cl_buf_t b;
    cl_buf_init(&b);
    char err[CL_ERR_LEN];
    CL_ASSERT_INT_EQ(CL_ERR,
                     cl_store_build_batch_sql(&b, rows, 1, rej, 2, cl_db_escape_string, err));
    CL_ASSERT_STR_CONTAINS(err, "batch rejected event 1: topic is missing");
    CL_ASSERT_INT_EQ(0, b.len);
    rej[1].topic = "clicks";
    rej[1].reason = NULL;
    CL_ASSERT_INT_EQ(CL_ERR,
                     cl_store_build_batch_sql(&b, rows, 1, rej, 2, cl_db_escape_string, err));
    CL_ASSERT_STR_CONTAINS(err, "batch rejected event 1: reason is missing");
    cl_buf_free(&b);
}

/* The event parser is the one validation of a row (store.h): what it accepts
 * at each of its limits must fit the column, counted as the column counts. */
static size_t utf8_chars(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += ((unsigned char)*s & 0xC0) != 0x80;
    return n;
}

static void fill(char *out, const char *unit, size_t bytes)
{
    size_t k = strlen(unit);
    out[0] = '\0';
    for (size_t n = 0; n + k <= bytes; n += k)
        strcat(out, unit);
}

static void test_events_the_parser_accepts_at_its_limits_fit_the_columns(void)
{
    static char id[CL_EVENT_ID_MAX_LEN + 1], user[CL_EVENT_USER_ID_MAX_LEN + 2],
        city[CL_EVENT_TEXT_MAX_LEN + 1], agent[CL_EVENT_USER_AGENT_MAX_LEN + 1], json[16 * 1024];
    fill(id, "\xc3\xa9", CL_EVENT_ID_MAX_LEN);            /* 64 x é */
    fill(user, "\xe2\x82\xac", CL_EVENT_USER_ID_MAX_LEN); /* 85 x € and an a */
    strcat(user, "a");
    fill(city, "ab", CL_EVENT_TEXT_MAX_LEN);
    fill(agent, "\xf0\x9f\x98\x80", CL_EVENT_USER_AGENT_MAX_LEN); /* 1024 x U+1F600 */
    snprintf(json, sizeof json,
             "{\"event_id\":\"%s\",\"user_id\":\"%s\",\"timestamp\":\"9999-12-31T23:59:59.999Z\","
             "\"url\":\"https://a.example/\",\"country\":\"fr\",\"city\":\"%s\",\"browser\":\"%s\","
             "\"os\":\"%s\",\"device\":\"%s\",\"user_agent\":\"%s\",\"time_spent_ms\":1}",
             id, user, city, city, city, city, agent);
    cl_event_parser_t *parser = NULL;
    char err[CL_ERR_LEN];
    CL_ASSERT_INT_EQ(CL_OK, cl_event_parser_new(NULL, sizeof json, &parser, err));
    cl_event_t ev;
    if (cl_event_parse(parser, json, strlen(json), "clicks", 3, 42, &ev, err) != CL_OK) {
        CL_FAIL_("parse: %s", err);
        cl_event_parser_free(parser);
        return;
    }

    CL_ASSERT(ev.row_key_len <= CL_STORE_ROW_KEY_MAX_BYTES);
    CL_ASSERT(utf8_chars(ev.event_id) <= CL_STORE_EVENT_ID_MAX_CHARS);
    CL_ASSERT(utf8_chars(ev.user_id) <= CL_STORE_USER_ID_MAX_CHARS);
    CL_ASSERT(utf8_chars(ev.city) <= CL_STORE_TEXT_MAX_CHARS);
    CL_ASSERT(utf8_chars(ev.device) <= CL_STORE_TEXT_MAX_CHARS);
    CL_ASSERT(utf8_chars(ev.user_agent) <= CL_STORE_USER_AGENT_MAX_CHARS);
    CL_ASSERT(ev.ts_ms <= CL_DATETIME_MAX_MS);
    CL_ASSERT(utf8_chars(ev.topic) <= CL_STORE_TOPIC_MAX_CHARS);

    cl_store_row_t row = {
        .row_key = ev.row_key,
        .row_key_len = ev.row_key_len,
        .event_id = ev.event_id,
        .user_id = ev.user_id,
        .ts_ms = ev.ts_ms,
        .url = ev.url,
        .url_len = ev.url_len,
        .city = ev.city,
        .browser = ev.browser,
        .os = ev.os,
        .device = ev.device,
        .user_agent = ev.user_agent,
        .time_spent_ms = ev.time_spent_ms,
        .topic = ev.topic,
        .partition = ev.partition,
        .offset = ev.offset,
    };
    memcpy(row.country, ev.country, sizeof row.country);
    cl_buf_t b = build(&row, 1, NULL, 0, cl_db_escape_string);
    CL_ASSERT_STR_CONTAINS(b.data, "'9999-12-31 23:59:59.999'");
    CL_ASSERT_STR_CONTAINS(b.data, ",'FR',");
    CL_ASSERT(b.len <= CL_STORE_BATCH_SQL_BASE_BYTES + cl_store_row_sql_bytes(&row));
    cl_buf_free(&b);
    cl_event_clear(&ev);

    /* One character more than a column holds is the parser's to refuse. */
    strcat(user, "e");
    snprintf(json, sizeof json, "{\"user_id\":\"%s\",\"timestamp\":1,\"url\":\"u\"}", user);
    CL_ASSERT_INT_EQ(CL_ERR, cl_event_parse(parser, json, strlen(json), "clicks", 3, 43, &ev, err));
    CL_ASSERT_STR_CONTAINS(err, "user_id: 257 bytes is over the limit of 256 bytes");
    cl_event_parser_free(parser);
}

/* Every value of a row made of quote-heavy strings: each byte escapes to two. */
static cl_store_row_t quote_heavy_row(char *text, size_t len, int64_t offset)
{
    memset(text, '\'', len);
    text[len] = '\0';
    cl_store_row_t r = row_with_everything();
    r.row_key = text;
    r.row_key_len = len < 100 ? len : 100;
    r.event_id = NULL;
    r.user_id = text + len - (len < 200 ? len : 200);
    r.url = text;
    r.url_len = len;
    r.city = r.browser = r.os = r.device = text + len - (len < 1000 ? len : 1000);
    r.user_agent = r.city;
    r.offset = offset;
    return r;
}

/* What the fixed parts (punctuation, numbers) of a batch may add to the SQL
 * without the bound being loose: the base, and 96 bytes per table of a row. */
#define SLACK(n_items) (CL_STORE_BATCH_SQL_BASE_BYTES + (n_items)*4 * 96)

static void test_sql_bytes_bound_the_built_batch_closely(void)
{
    static char text[3][2001];
    cl_store_row_t rows[5] = {row_with_everything(), row_with_nulls(),
                              quote_heavy_row(text[0], 2000, 1), quote_heavy_row(text[1], 7, 2),
                              quote_heavy_row(text[2], 3, 3)};
    cl_store_rejected_t rej[2] = {{"clicks", 2, 99, "\xff\xfe'{\"\\", 6, "not JSON: 'x'"},
                                  {"clicks", 0, 1, NULL, 0, "empty payload"}};
    size_t bound = CL_STORE_BATCH_SQL_BASE_BYTES;
    for (size_t i = 0; i < CL_ARRAY_LEN(rows); i++)
        bound += cl_store_row_sql_bytes(&rows[i]);
    for (size_t i = 0; i < CL_ARRAY_LEN(rej); i++)
        bound += cl_store_rejected_sql_bytes(&rej[i]);
    cl_buf_t b = build(rows, CL_ARRAY_LEN(rows), rej, CL_ARRAY_LEN(rej), cl_db_escape_string);
    if (b.len > bound || bound - b.len > SLACK(7))
        fprintf(stderr, "    built %zu bytes, bound %zu\n", b.len, bound);
    CL_ASSERT(b.len <= bound);
    CL_ASSERT(bound - b.len <= SLACK(7));
    cl_buf_free(&b);
}

static void test_sql_bytes_count_escaping_and_every_table(void)
{
    static char quotes[1001], letters[1001];
    cl_store_row_t heavy = quote_heavy_row(quotes, 1000, 1);
    cl_store_row_t plain = quote_heavy_row(letters, 1000, 1);
    memset(letters, 'a', 1000);
    /* The same lengths, each quote escaped to two bytes, in every table: the
     * key (100 bytes) four times, user_id (200) twice, url (1000) once, city
     * and the four user agent fields (1000 each) once. */
    CL_ASSERT_INT_EQ(cl_store_row_sql_bytes(&plain) + 4 * 100 + 2 * 200 + 1000 + 5 * 1000,
                     cl_store_row_sql_bytes(&heavy));
    /* The row key is written to four tables (with geo and user agent data). */
    cl_store_row_t a = row_with_everything(), b = a;
    b.row_key_len = a.row_key_len - 1;
    CL_ASSERT_INT_EQ(cl_store_row_sql_bytes(&b) + 4, cl_store_row_sql_bytes(&a));
    cl_store_rejected_t rej = {"clicks", 0, 1, "''''", 4, "r"};
    cl_store_rejected_t rej_plain = {"clicks", 0, 1, "aaaa", 4, "r"};
    CL_ASSERT_INT_EQ(cl_store_rejected_sql_bytes(&rej_plain) + 4,
                     cl_store_rejected_sql_bytes(&rej));
}

static void test_migration_from_zero_creates_every_table_and_records_the_version(void)
{
    cl_buf_t b;
    cl_buf_init(&b);
    char err[CL_ERR_LEN];
    CL_ASSERT_INT_EQ(CL_OK, cl_store_migration_sql(0, &b, err));
    const char *tables[] = {"click_data", "geo_data", "user_agent_data", "rejected_events"};
    for (size_t i = 0; i < CL_ARRAY_LEN(tables); i++) {
        char want[64];
        snprintf(want, sizeof want, "CREATE TABLE IF NOT EXISTS %s (", tables[i]);
        CL_ASSERT_STR_CONTAINS(b.data, want);
    }
    CL_ASSERT_STR_CONTAINS(b.data, "user_id VARCHAR(256) NOT NULL");
    CL_ASSERT_STR_CONTAINS(b.data, "KEY idx_click_user_time (user_id, event_time)");
    CL_ASSERT_STR_CONTAINS(b.data, "UNIQUE KEY uq_rejected_coordinates (kafka_topic, "
                                   "kafka_partition, kafka_offset)");
    CL_ASSERT_STR_CONTAINS(b.data,
                           "ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin");
    CL_ASSERT_STR_CONTAINS(b.data, "INSERT INTO clickloop_schema (id, version) VALUES (1, 1) ");
    CL_ASSERT(b.data[b.len - 1] != ';'); /* no empty trailing statement */
    cl_buf_free(&b);
}

static void test_migration_from_one_adds_the_aggregation_tables_only(void)
{
    cl_buf_t b;
    cl_buf_init(&b);
    char err[CL_ERR_LEN];
    CL_ASSERT_INT_EQ(CL_OK, cl_store_migration_sql(1, &b, err));
    CL_ASSERT(strstr(b.data, "CREATE TABLE IF NOT EXISTS click_data") == NULL);
    CL_ASSERT_STR_CONTAINS(b.data, "CREATE TABLE IF NOT EXISTS agg_pending (");
    CL_ASSERT_STR_CONTAINS(b.data, "CREATE TABLE IF NOT EXISTS agg_dirty (");
    CL_ASSERT_STR_CONTAINS(b.data, "CREATE TABLE IF NOT EXISTS agg_stats (");
    CL_ASSERT_STR_CONTAINS(b.data, "PRIMARY KEY (window_ms, window_start, url_hash, country)");
    CL_ASSERT_STR_CONTAINS(b.data, "KEY idx_agg_stats_needs_index (needs_index)");
    /* Events stored before aggregation existed are queued for it. */
    CL_ASSERT_STR_CONTAINS(b.data, "INSERT INTO agg_pending (row_key, user_id, event_time) "
                                   "SELECT * FROM (SELECT row_key, user_id, event_time FROM "
                                   "click_data) c ON DUPLICATE KEY UPDATE");
    CL_ASSERT_STR_CONTAINS(b.data, "INSERT INTO clickloop_schema (id, version) VALUES (1, 2) ");
    cl_buf_free(&b);
}

static void test_migration_from_three_adds_the_retention_state_only(void)
{
    cl_buf_t b;
    cl_buf_init(&b);
    char err[CL_ERR_LEN];
    CL_ASSERT_INT_EQ(CL_OK, cl_store_migration_sql(3, &b, err));
    /* Version 4 ends where the next migration begins. */
    char *next = strstr(b.data, ";\nCREATE TABLE IF NOT EXISTS agg_done");
    CL_ASSERT(next != NULL);
    *next = '\0';
    CL_ASSERT_STR_EQ("CREATE TABLE IF NOT EXISTS retention_state ("
                     "id TINYINT UNSIGNED NOT NULL DEFAULT 1, "
                     "pruned_before DATETIME(3) NOT NULL, "
                     "PRIMARY KEY (id), "
                     "CONSTRAINT retention_state_single_row CHECK (id = 1)) "
                     "ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin "
                     "ROW_FORMAT=DYNAMIC;\n"
                     "INSERT INTO clickloop_schema (id, version) VALUES (1, 4) "
                     "ON DUPLICATE KEY UPDATE version = VALUES(version), "
                     "applied_at = CURRENT_TIMESTAMP(3)",
                     b.data);
    cl_buf_free(&b);
}

/* Incremental aggregation: the new tables, the events aggregated so far
 * recorded as done (stored and no longer pending), and every aggregated
 * window marked for the recomputation that builds its users. */
static void test_migration_from_four_records_done_events_and_marks_aggregated_windows(void)
{
    cl_buf_t b;
    cl_buf_init(&b);
    char err[CL_ERR_LEN];
    CL_ASSERT_INT_EQ(CL_OK, cl_store_migration_sql(4, &b, err));
    const char *done = strstr(b.data, "CREATE TABLE IF NOT EXISTS agg_done (");
    const char *users = strstr(b.data, "CREATE TABLE IF NOT EXISTS agg_users (");
    const char *held = strstr(b.data, "CREATE TABLE IF NOT EXISTS agg_held (");
    const char *fill = strstr(b.data, "INSERT INTO agg_done (row_key) SELECT * FROM (SELECT "
                                      "c.row_key FROM click_data c WHERE NOT EXISTS (SELECT 1 "
                                      "FROM agg_pending p WHERE p.row_key = c.row_key)) d");
    const char *mark = strstr(b.data, "INSERT INTO agg_dirty (window_ms, window_start, marked_at) "
                                      "SELECT * FROM (SELECT DISTINCT window_ms, window_start, "
                                      "NOW(6) FROM agg_stats) w");
    const char *version =
        strstr(b.data, "INSERT INTO clickloop_schema (id, version) VALUES (1, 5)");
    CL_ASSERT(done != NULL && users != NULL && held != NULL && fill != NULL && mark != NULL &&
              version != NULL);
    CL_ASSERT(done < fill && fill < mark && mark < version);
    /* Window start first: retention prunes old windows by a key range. */
    CL_ASSERT_STR_CONTAINS(users, "PRIMARY KEY (window_start, window_ms, url_hash, country, "
                                  "user_id))");
    cl_buf_free(&b);
}

static void test_migration_from_zero_runs_every_migration_in_order(void)
{
    cl_buf_t b;
    cl_buf_init(&b);
    char err[CL_ERR_LEN];
    CL_ASSERT_INT_EQ(CL_OK, cl_store_migration_sql(0, &b, err));
    const char *v1 = strstr(b.data, "VALUES (1, 1) ");
    const char *pending = strstr(b.data, "agg_pending");
    const char *v2 = strstr(b.data, "VALUES (1, 2) ");
    const char *convert = strstr(b.data, "ALTER TABLE click_data CONVERT TO");
    const char *v3 = strstr(b.data, "VALUES (1, 3) ");
    const char *state = strstr(b.data, "CREATE TABLE IF NOT EXISTS retention_state");
    const char *v4 = strstr(b.data, "VALUES (1, 4) ");
    CL_ASSERT(v1 != NULL && pending != NULL && v2 != NULL && v1 < pending && pending < v2);
    CL_ASSERT(convert != NULL && v3 != NULL && v2 < convert && convert < v3);
    CL_ASSERT(state != NULL && v4 != NULL && v3 < state && state < v4);
    cl_buf_free(&b);
}

static void test_migration_from_two_converts_every_table_to_the_no_pad_collation(void)
{
    cl_buf_t b;
    cl_buf_init(&b);
    char err[CL_ERR_LEN];
    CL_ASSERT_INT_EQ(CL_OK, cl_store_migration_sql(2, &b, err));
    /* The first table it creates belongs to migration 4. */
    const char *create = strstr(b.data, "CREATE TABLE");
    const char *v3 = strstr(b.data, "VALUES (1, 3) ");
    CL_ASSERT(create != NULL && v3 != NULL && v3 < create);
    const char *tables[] = {"clickloop_schema", "click_data",  "geo_data",  "user_agent_data",
                            "rejected_events",  "agg_pending", "agg_dirty", "agg_stats"};
    for (size_t i = 0; i < CL_ARRAY_LEN(tables); i++) {
        char want[128];
        snprintf(want, sizeof want,
                 "ALTER TABLE %s CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin",
                 tables[i]);
        CL_ASSERT_STR_CONTAINS(b.data, want);
    }
    CL_ASSERT_STR_CONTAINS(b.data, "INSERT INTO clickloop_schema (id, version) VALUES (1, 3) ");
    cl_buf_free(&b);
}

/* The users that trailing spaces merged are found by comparing user_id under
 * the old collation, so the statement must come before the conversion. */
static void test_migration_from_two_requeues_merged_users_before_converting(void)
{
    cl_buf_t b;
    cl_buf_init(&b);
    char err[CL_ERR_LEN];
    CL_ASSERT_INT_EQ(CL_OK, cl_store_migration_sql(2, &b, err));
    const char *requeue = strstr(b.data, "INSERT INTO agg_pending (row_key, user_id, event_time) "
                                         "SELECT * FROM (SELECT row_key, user_id, event_time "
                                         "FROM click_data WHERE user_id IN (SELECT user_id FROM "
                                         "click_data WHERE user_id LIKE '% ')) c "
                                         "ON DUPLICATE KEY UPDATE");
    const char *convert = strstr(b.data, "ALTER TABLE click_data CONVERT TO");
    CL_ASSERT(requeue != NULL && convert != NULL && requeue < convert);
    cl_buf_free(&b);
}

/* utf8mb4_bin ignores trailing spaces ("pad" = "pad "). */
static void test_no_table_is_created_with_a_pad_space_collation(void)
{
    cl_buf_t b;
    cl_buf_init(&b);
    char err[CL_ERR_LEN];
    CL_ASSERT_INT_EQ(CL_OK, cl_store_migration_sql(0, &b, err));
    CL_ASSERT(strstr(b.data, "utf8mb4_bin") == NULL);
    cl_buf_free(&b);
}

static void test_every_event_is_queued_for_aggregation_in_the_same_transaction(void)
{
    cl_store_row_t r = row_with_everything();
    cl_buf_t b = build(&r, 1, NULL, 0, cl_db_escape_string);
    const char *click = strstr(b.data, "INSERT INTO click_data");
    const char *pending = strstr(b.data, "INSERT INTO agg_pending (row_key,user_id,event_time) "
                                         "VALUES (_binary'e:ev1','u1','2023-11-14 22:13:20.123') "
                                         "ON DUPLICATE KEY UPDATE row_key=row_key;\n");
    const char *commit = strstr(b.data, "COMMIT");
    CL_ASSERT(click != NULL && pending != NULL && commit != NULL && click < pending &&
              pending < commit);
    cl_buf_free(&b);
}

static void test_rejected_only_batch_queues_nothing_for_aggregation(void)
{
    cl_store_rejected_t rej = {"clicks", 2, 99, "x", 1, "not JSON"};
    cl_buf_t b = build(NULL, 0, &rej, 1, cl_db_escape_string);
    CL_ASSERT(strstr(b.data, "agg_pending") == NULL);
    cl_buf_free(&b);
}

static void test_migration_from_the_latest_version_is_empty(void)
{
    cl_buf_t b;
    cl_buf_init(&b);
    char err[CL_ERR_LEN];
    CL_ASSERT_INT_EQ(CL_OK, cl_store_migration_sql(CL_STORE_SCHEMA_VERSION, &b, err));
    CL_ASSERT_INT_EQ(0, b.len);
    cl_buf_free(&b);
}

static void test_migration_from_a_newer_version_is_refused(void)
{
    cl_buf_t b;
    cl_buf_init(&b);
    char err[CL_ERR_LEN];
    CL_ASSERT_INT_EQ(CL_ERR, cl_store_migration_sql(CL_STORE_SCHEMA_VERSION + 1, &b, err));
    CL_ASSERT_STR_CONTAINS(err, "database schema version 6 is unknown to this clickloop, which "
                                "knows versions 0 to 5");
    CL_ASSERT_INT_EQ(CL_ERR, cl_store_migration_sql(-1, &b, err));
    cl_buf_free(&b);
}

static const cl_test_case_t cases[] = {
    CL_TEST(test_two_event_batch_with_nulls),
    CL_TEST(test_values_escape_quotes_backslashes_and_nul_bytes),
    CL_TEST(test_every_value_goes_through_the_escape_function),
    CL_TEST(test_empty_batch_appends_nothing),
    CL_TEST(test_rejected_only_batch_keeps_raw_bytes),
    CL_TEST(test_rejected_tombstone_stores_null_payload),
    CL_TEST(test_rejected_reason_is_made_storable),
    CL_TEST(test_rows_and_rejected_are_written_in_key_order),
    CL_TEST(test_batch_with_a_malformed_rejected_event_is_refused_naming_it),
    CL_TEST(test_events_the_parser_accepts_at_its_limits_fit_the_columns),
    CL_TEST(test_sql_bytes_bound_the_built_batch_closely),
    CL_TEST(test_sql_bytes_count_escaping_and_every_table),
    CL_TEST(test_migration_from_zero_creates_every_table_and_records_the_version),
    CL_TEST(test_migration_from_one_adds_the_aggregation_tables_only),
    CL_TEST(test_migration_from_three_adds_the_retention_state_only),
    CL_TEST(test_migration_from_four_records_done_events_and_marks_aggregated_windows),
    CL_TEST(test_migration_from_zero_runs_every_migration_in_order),
    CL_TEST(test_migration_from_two_converts_every_table_to_the_no_pad_collation),
    CL_TEST(test_migration_from_two_requeues_merged_users_before_converting),
    CL_TEST(test_no_table_is_created_with_a_pad_space_collation),
    CL_TEST(test_every_event_is_queued_for_aggregation_in_the_same_transaction),
    CL_TEST(test_rejected_only_batch_queues_nothing_for_aggregation),
    CL_TEST(test_migration_from_the_latest_version_is_empty),
    CL_TEST(test_migration_from_a_newer_version_is_refused),
};

CL_TEST_MAIN(cases)

/* Property test of the SQL batch builder against the real MariaDB: random
 * values go through cl_store_build_batch_sql (src/store.c) and its escaping
 * (cl_db_escape_string) into the schema of cl_store_migration_sql, and come
 * back unchanged, byte for byte.
 *
 * What is random follows what each column stores (store.c's schema):
 *  - binary columns (row_key VARBINARY, payload LONGBLOB): any bytes, all 256
 *    values, NUL, ill-formed UTF-8; payloads up to 200 KB, or NULL;
 *  - text columns (utf8mb4): well-formed UTF-8 without NUL (what event.h
 *    guarantees), 1- to 4-byte characters, control characters, quotes,
 *    backslashes, ^Z, `%`, `_`, U+2028, U+FEFF, U+10FFFF, up to each column's
 *    limit; the url (MEDIUMTEXT) up to 100 KB;
 *  - the rest: instants over the whole DATETIME(3) range, numbers, NULLs.
 *
 * It runs in a database of its own (clickloop_prop_<random>, dropped at the
 * end), reads back with the blocking Connector/C API and reports the first
 * differing byte of the first value that came back changed. The seed is
 * printed; CLICKLOOP_RANDOM_SEED=<seed> repeats a run, CLICKLOOP_SQL_BATCHES
 * sets the number of batches (default 24, a few thousand values).
 * Server: 127.0.0.1, CLICKLOOP_MARIADB_PORT (13306), user and password
 * clickloop. */
#include <inttypes.h>
#include <mysql.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clickloop/buf.h"
#include "clickloop/db.h"
#include "clickloop/store.h"

#define ROWS_PER_BATCH 60
#define REJECTED_PER_BATCH 25

/* ---- random values ------------------------------------------------------ */

static uint64_t rng_state;

static uint64_t rnd(void)
{
    /* splitmix64: small, seedable, good enough to pick test values. */
    uint64_t z = (rng_state += UINT64_C(0x9E3779B97F4A7C15));
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

static uint64_t below(uint64_t n)
{
    return n == 0 ? 0 : rnd() % n;
}

/* A length up to max, mostly short, sometimes at or near the limit. */
static size_t rnd_len(size_t max)
{
    switch (below(8)) {
    case 0:
        return max;
    case 1:
        return max - below(max < 4 ? max + 1 : 4);
    case 2:
        return below(max + 1);
    default:
        return below((max < 40 ? max : 40) + 1);
    }
}

/* `len` bytes of any value, NUL and all. */
static char *rnd_bytes(size_t len)
{
    static const char special[] = {'\0', '\'', '"', '\\', '\n', '\r', '\x1a', '%', '_', '\xff'};
    char *s = cl_xmalloc(len + 1);
    for (size_t i = 0; i < len; i++)
        s[i] = below(3) == 0 ? special[below(sizeof special)] : (char)below(256);
    s[len] = '\0';
    return s;
}

static size_t put_utf8(char *out, uint32_t cp)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

static uint32_t rnd_code_point(void)
{
    static const uint32_t special[] = {'\'',   '"',    '\\',   '\n',   '\r',   '\t',    0x1A,
                                       '%',    '_',    ' ',    0x7F,   0x85,   0xA0,    0x2028,
                                       0xFEFF, 0xFFFD, 0xFFFF, 0xD7FF, 0xE000, 0x1F600, 0x10FFFF};
    uint32_t cp;
    switch (below(6)) {
    case 0:
        return special[below(sizeof special / sizeof special[0])];
    case 1:
        return 1 + (uint32_t)below(0x7F); /* ASCII, control characters too, never NUL */
    case 2:
        return 0x80 + (uint32_t)below(0x800 - 0x80);
    case 3:
        do
            cp = 0x800 + (uint32_t)below(0x10000 - 0x800);
        while (cp >= 0xD800 && cp <= 0xDFFF); /* surrogates are not characters */
        return cp;
    case 4:
        return 0x10000 + (uint32_t)below(0x110000 - 0x10000);
    default:
        return 0x20 + (uint32_t)below(0x5F);
    }
}

/* Well-formed UTF-8 of at most max_chars characters and max_bytes bytes, at
 * least min_chars characters, no NUL. */
static char *rnd_text(size_t min_chars, size_t max_chars, size_t max_bytes, size_t *out_len)
{
    size_t chars = rnd_len(max_chars);
    if (chars < min_chars)
        chars = min_chars;
    char *s = cl_xmalloc(4 * chars + 1);
    size_t len = 0;
    for (size_t i = 0; i < chars; i++) {
        char enc[4];
        size_t n = put_utf8(enc, rnd_code_point());
        if (len + n > max_bytes)
            break;
        memcpy(s + len, enc, n);
        len += n;
    }
    s[len] = '\0';
    if (out_len != NULL)
        *out_len = len;
    return s;
}

/* An optional text value: NULL a fourth of the time, else non-empty. */
static char *rnd_opt_text(size_t max_chars, size_t max_bytes)
{
    return below(4) == 0 ? NULL : rnd_text(1, max_chars, max_bytes, NULL);
}

/* ---- a batch ------------------------------------------------------------- */

typedef struct {
    cl_store_row_t rows[ROWS_PER_BATCH];
    cl_store_rejected_t rejected[REJECTED_PER_BATCH];
} batch_t;

static void make_batch(batch_t *b, unsigned batch_no)
{
    memset(b, 0, sizeof *b);
    for (size_t i = 0; i < ROWS_PER_BATCH; i++) {
        cl_store_row_t *r = &b->rows[i];
        /* Any bytes, made unique by a prefix of the batch and row numbers
         * (which are bytes too: NUL among them). */
        size_t key_len = 3 + rnd_len(CL_STORE_ROW_KEY_MAX_BYTES - 3);
        char *key = rnd_bytes(key_len);
        key[0] = (char)batch_no;
        key[1] = (char)(i >> 8);
        key[2] = (char)i;
        r->row_key = key;
        r->row_key_len = key_len;
        r->event_id = rnd_opt_text(CL_STORE_EVENT_ID_MAX_CHARS, 128);
        r->user_id = rnd_text(1, CL_STORE_USER_ID_MAX_CHARS, 256, NULL);
        r->ts_ms = (int64_t)below((uint64_t)CL_DATETIME_MAX_MS + 1);
        r->url = below(12) == 0 ? rnd_text(20000, 30000, 100000, &r->url_len)
                                : rnd_text(1, 300, 100000, &r->url_len);
        if (below(3) != 0) {
            r->country[0] = (char)('A' + below(26));
            r->country[1] = (char)('A' + below(26));
        }
        r->city = rnd_opt_text(CL_STORE_TEXT_MAX_CHARS, 1024);
        r->browser = rnd_opt_text(CL_STORE_TEXT_MAX_CHARS, 1024);
        r->os = rnd_opt_text(CL_STORE_TEXT_MAX_CHARS, 1024);
        r->device = rnd_opt_text(CL_STORE_TEXT_MAX_CHARS, 1024);
        r->user_agent = rnd_opt_text(CL_STORE_USER_AGENT_MAX_CHARS, 4096);
        r->time_spent_ms = below(3) == 0 ? -1 : (int64_t)below(UINT64_C(1000000000001));
        r->topic = rnd_text(1, 60, 255, NULL);
        r->partition = (int32_t)below(INT32_MAX);
        r->offset = (int64_t)below(INT64_MAX);
    }
    for (size_t i = 0; i < REJECTED_PER_BATCH; i++) {
        cl_store_rejected_t *r = &b->rejected[i];
        r->topic = rnd_text(1, CL_STORE_TOPIC_MAX_CHARS, 1020, NULL);
        r->partition = (int32_t)below(INT32_MAX);
        /* Unique coordinates: the offset carries the batch and the index. */
        r->offset = (int64_t)(batch_no * 1000 + i);
        if (below(10) == 0) {
            r->payload = NULL; /* a tombstone */
        } else {
            r->payload_len = below(10) == 0 ? 100000 + below(100000) : rnd_len(300);
            r->payload = rnd_bytes(r->payload_len);
        }
        r->reason = rnd_text(1, CL_STORE_REASON_MAX_CHARS, 4096, NULL);
    }
}

static void free_batch(batch_t *b)
{
    for (size_t i = 0; i < ROWS_PER_BATCH; i++) {
        cl_store_row_t *r = &b->rows[i];
        const char *owned[] = {r->row_key, r->event_id, r->user_id, r->url,        r->city,
                               r->browser, r->os,       r->device,  r->user_agent, r->topic};
        for (size_t k = 0; k < sizeof owned / sizeof owned[0]; k++)
            free((char *)owned[k]);
    }
    for (size_t i = 0; i < REJECTED_PER_BATCH; i++) {
        free((char *)b->rejected[i].topic);
        free((char *)b->rejected[i].payload);
        free((char *)b->rejected[i].reason);
    }
}

/* ---- the server ----------------------------------------------------------- */

static MYSQL *db;
static char db_name[64];
static unsigned long values_compared;
static unsigned long mismatches;

static void die_sql(const char *what)
{
    fprintf(stderr, "sql_roundtrip: %s: %s (%u)\n", what, mysql_error(db), mysql_errno(db));
    if (db_name[0] != '\0') {
        char sql[128];
        snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS `%s`", db_name);
        mysql_query(db, sql);
    }
    printf("0 passed, 1 failed\n");
    exit(1);
}

/* Run a multi-statement text, draining every result. */
static void run_sql(const char *sql, size_t len, const char *what)
{
    if (mysql_real_query(db, sql, (unsigned long)len) != 0)
        die_sql(what);
    int status;
    do {
        MYSQL_RES *res = mysql_store_result(db);
        if (res != NULL)
            mysql_free_result(res);
        else if (mysql_field_count(db) != 0)
            die_sql(what);
        status = mysql_next_result(db);
        if (status > 0)
            die_sql(what);
    } while (status == 0);
}

static void connect_db(void)
{
    const char *port_env = getenv("CLICKLOOP_MARIADB_PORT");
    unsigned port = port_env != NULL ? (unsigned)atoi(port_env) : 13306;
    db = mysql_init(NULL);
    mysql_options(db, MYSQL_SET_CHARSET_NAME, "utf8mb4");
    if (mysql_real_connect(db, "127.0.0.1", "clickloop", "clickloop", NULL, port, NULL,
                           CLIENT_MULTI_STATEMENTS) == NULL)
        die_sql("connect");
    /* The session db.c sets up: cl_db_escape_string relies on backslash
     * escapes (no NO_BACKSLASH_ESCAPES) and utf8mb4. */
    const char *setup = "SET SESSION sql_mode='STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION', "
                        "time_zone='+00:00'";
    run_sql(setup, strlen(setup), "session setup");
}

/* ---- comparing ------------------------------------------------------------ */

/* `got` (len, or NULL) must equal `want` (want_len, or NULL) byte for byte. */
static void expect(const char *table, const char *column, size_t row, const char *want,
                   size_t want_len, const char *got, unsigned long got_len)
{
    values_compared++;
    if (want == NULL && got == NULL)
        return;
    if (want != NULL && got != NULL && want_len == got_len && memcmp(want, got, want_len) == 0)
        return;
    if (mismatches++ >= 5)
        return;
    if (want == NULL || got == NULL) {
        fprintf(stderr, "  %s.%s, row %zu: expected %s, got %s\n", table, column, row,
                want ? "a value" : "NULL", got ? "a value" : "NULL");
        return;
    }
    size_t at = 0;
    while (at < want_len && at < got_len && want[at] == got[at])
        at++;
    fprintf(stderr,
            "  %s.%s, row %zu: %zu bytes sent, %lu read back; first difference at byte %zu "
            "(sent 0x%02x, read 0x%02x)\n",
            table, column, row, want_len, got_len, at, at < want_len ? (unsigned char)want[at] : 0,
            at < got_len ? (unsigned char)got[at] : 0);
}

static void expect_num(const char *table, const char *column, size_t row, int64_t want,
                       bool want_null, const char *got)
{
    char buf[32];
    snprintf(buf, sizeof buf, "%" PRId64, want);
    expect(table, column, row, want_null ? NULL : buf, strlen(buf), got,
           got != NULL ? (unsigned long)strlen(got) : 0);
}

static int compare_row_keys(const void *a, const void *b)
{
    const cl_store_row_t *x = *(const cl_store_row_t *const *)a;
    const cl_store_row_t *y = *(const cl_store_row_t *const *)b;
    size_t n = x->row_key_len < y->row_key_len ? x->row_key_len : y->row_key_len;
    int c = memcmp(x->row_key, y->row_key, n);
    return c != 0 ? c : (x->row_key_len > y->row_key_len) - (x->row_key_len < y->row_key_len);
}

static MYSQL_RES *select_all(const char *sql)
{
    if (mysql_query(db, sql) != 0)
        die_sql(sql);
    MYSQL_RES *res = mysql_store_result(db);
    if (res == NULL)
        die_sql(sql);
    return res;
}

/* Everything in the tables must be exactly what was sent. */
static void check_tables(batch_t *batches, unsigned n)
{
    size_t n_rows = (size_t)n * ROWS_PER_BATCH;
    const cl_store_row_t **rows = cl_xcalloc(n_rows, sizeof *rows);
    for (size_t i = 0; i < n_rows; i++)
        rows[i] = &batches[i / ROWS_PER_BATCH].rows[i % ROWS_PER_BATCH];
    /* ORDER BY row_key on a VARBINARY is byte order, as memcmp. */
    qsort(rows, n_rows, sizeof *rows, compare_row_keys);

    MYSQL_RES *res = select_all(
        "SELECT c.row_key, c.event_id, c.user_id, "
        "TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', c.event_time) DIV 1000, c.url, "
        "c.time_spent_ms, c.kafka_topic, c.kafka_partition, c.kafka_offset, g.country, g.city, "
        "u.browser, u.os, u.device, u.user_agent, g.row_key IS NOT NULL, u.row_key IS NOT NULL "
        "FROM click_data c LEFT JOIN geo_data g ON g.row_key = c.row_key "
        "LEFT JOIN user_agent_data u ON u.row_key = c.row_key ORDER BY c.row_key");
    if (mysql_num_rows(res) != n_rows) {
        fprintf(stderr, "  click_data: %zu rows sent, %llu read back\n", n_rows,
                (unsigned long long)mysql_num_rows(res));
        mismatches++;
    }
    MYSQL_ROW row;
    for (size_t i = 0; i < n_rows && (row = mysql_fetch_row(res)) != NULL; i++) {
        const unsigned long *len = mysql_fetch_lengths(res);
        const cl_store_row_t *r = rows[i];
        const char *texts[] = {r->event_id, r->user_id};
        expect("click_data", "row_key", i, r->row_key, r->row_key_len, row[0], len[0]);
        expect("click_data", "event_id", i, texts[0], texts[0] ? strlen(texts[0]) : 0, row[1],
               len[1]);
        expect("click_data", "user_id", i, texts[1], strlen(texts[1]), row[2], len[2]);
        expect_num("click_data", "event_time", i, r->ts_ms, false, row[3]);
        expect("click_data", "url", i, r->url, r->url_len, row[4], len[4]);
        expect_num("click_data", "time_spent_ms", i, r->time_spent_ms, r->time_spent_ms < 0,
                   row[5]);
        expect("click_data", "kafka_topic", i, r->topic, strlen(r->topic), row[6], len[6]);
        expect_num("click_data", "kafka_partition", i, r->partition, false, row[7]);
        expect_num("click_data", "kafka_offset", i, r->offset, false, row[8]);
        bool geo = r->country[0] != '\0' || r->city != NULL;
        bool ua = r->browser != NULL || r->os != NULL || r->device != NULL || r->user_agent != NULL;
        expect_num("geo_data", "(present)", i, geo, false, row[15]);
        expect_num("user_agent_data", "(present)", i, ua, false, row[16]);
        expect("geo_data", "country", i, r->country[0] ? r->country : NULL, 2, row[9], len[9]);
        const char *more[] = {r->city, r->browser, r->os, r->device, r->user_agent};
        const char *names[] = {"city", "browser", "os", "device", "user_agent"};
        for (size_t k = 0; k < 5; k++)
            expect(k == 0 ? "geo_data" : "user_agent_data", names[k], i, more[k],
                   more[k] ? strlen(more[k]) : 0, row[10 + k], len[10 + k]);
    }
    mysql_free_result(res);
    free(rows);

    /* Rejected events, by their unique offset (batch * 1000 + index). */
    res = select_all("SELECT kafka_offset, kafka_topic, kafka_partition, payload, reason "
                     "FROM rejected_events ORDER BY kafka_offset");
    size_t n_rejected = (size_t)n * REJECTED_PER_BATCH;
    if (mysql_num_rows(res) != n_rejected) {
        fprintf(stderr, "  rejected_events: %zu rows sent, %llu read back\n", n_rejected,
                (unsigned long long)mysql_num_rows(res));
        mismatches++;
    }
    for (size_t i = 0; i < n_rejected && (row = mysql_fetch_row(res)) != NULL; i++) {
        const unsigned long *len = mysql_fetch_lengths(res);
        const cl_store_rejected_t *r =
            &batches[i / REJECTED_PER_BATCH].rejected[i % REJECTED_PER_BATCH];
        expect_num("rejected_events", "kafka_offset", i, r->offset, false, row[0]);
        expect("rejected_events", "kafka_topic", i, r->topic, strlen(r->topic), row[1], len[1]);
        expect_num("rejected_events", "kafka_partition", i, r->partition, false, row[2]);
        expect("rejected_events", "payload", i, r->payload, r->payload_len, row[3], len[3]);
        expect("rejected_events", "reason", i, r->reason, strlen(r->reason), row[4], len[4]);
    }
    mysql_free_result(res);
}

int main(void)
{
    const char *seed_env = getenv("CLICKLOOP_RANDOM_SEED");
    uint64_t seed = seed_env != NULL ? strtoull(seed_env, NULL, 10)
                                     : (uint64_t)time(NULL) ^ ((uint64_t)clock() << 32);
    const char *batches_env = getenv("CLICKLOOP_SQL_BATCHES");
    unsigned n = batches_env != NULL ? (unsigned)atoi(batches_env) : 24;
    if (n == 0 || n > 250)
        n = 24;
    printf("sql_roundtrip: seed %" PRIu64 " (repeat with CLICKLOOP_RANDOM_SEED=%" PRIu64
           "), %u batches\n",
           seed, seed, n);
    fflush(stdout);
    rng_state = seed;

    connect_db();
    snprintf(db_name, sizeof db_name, "clickloop_prop_%016" PRIx64, rnd());
    char sql[160];
    snprintf(sql, sizeof sql, "CREATE DATABASE `%s` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin",
             db_name);
    run_sql(sql, strlen(sql), "create database");
    if (mysql_select_db(db, db_name) != 0)
        die_sql("use database");

    /* The migrations record their version in clickloop_schema, which the
     * store's (private) bootstrap statement creates before it runs them. */
    const char *bootstrap = "CREATE TABLE clickloop_schema (id TINYINT UNSIGNED NOT NULL DEFAULT 1 "
                            "PRIMARY KEY, version INT NOT NULL, applied_at DATETIME(3) NOT NULL "
                            "DEFAULT CURRENT_TIMESTAMP(3))";
    run_sql(bootstrap, strlen(bootstrap), "bootstrap");
    char err[CL_ERR_LEN];
    cl_buf_t text;
    cl_buf_init(&text);
    if (cl_store_migration_sql(0, &text, err) != CL_OK) {
        fprintf(stderr, "sql_roundtrip: %s\n", err);
        return 1;
    }
    run_sql(text.data, text.len, "migrations");

    batch_t *batches = cl_xcalloc(n, sizeof *batches);
    for (unsigned b = 0; b < n; b++) {
        make_batch(&batches[b], b);
        cl_buf_reset(&text);
        if (cl_store_build_batch_sql(&text, batches[b].rows, ROWS_PER_BATCH, batches[b].rejected,
                                     REJECTED_PER_BATCH, cl_db_escape_string, err) != CL_OK) {
            fprintf(stderr, "sql_roundtrip: batch %u: %s\n", b, err);
            mismatches++;
            break;
        }
        run_sql(text.data, text.len, "a batch");
    }
    cl_buf_free(&text);
    check_tables(batches, n);

    snprintf(sql, sizeof sql, "DROP DATABASE `%s`", db_name);
    run_sql(sql, strlen(sql), "drop database");
    mysql_close(db);
    for (unsigned b = 0; b < n; b++)
        free_batch(&batches[b]);
    free(batches);

    printf("sql_roundtrip: %lu values compared, %lu changed on the way\n", values_compared,
           mismatches);
    printf("%d passed, %d failed\n", mismatches == 0 ? 1 : 0, mismatches == 0 ? 0 : 1);
    return mismatches == 0 ? 0 : 1;
}

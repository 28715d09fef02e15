/* db_smoke: exercises the db and store modules against a real MariaDB on one
 * libuv loop. Not a registered test (it needs a server and may reset tables);
 * build with `meson compile -C <build> db_smoke`.
 *
 *   db_smoke [options] smoke     migrate, escaping round trip, concurrent and
 *                                redelivered batches, rejected bytes, errors,
 *                                KILL of the pool's connections mid-run,
 *                                cancel on close
 *   db_smoke [options] bench     --batches N of --rows R, --inflight K at a time
 *   db_smoke [options] soak      --seconds S of continuous batches (kill and
 *                                restart the server meanwhile); checks counts
 *   db_smoke [options] badauth   wrong password: the pool reports it, retries
 *   db_smoke [options] timeout   a query longer than the 1 s read timeout is
 *                                reported as retryable and the pool reconnects
 *
 * Options: --host --port --socket --user --password --database, --reset
 * (drop clickloop's tables first). Exit status 0 when every check passed and
 * the loop closed cleanly. */
#include <getopt.h>
#include <inttypes.h>
#include <mysql.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clickloop/common.h"
#include "clickloop/db.h"
#include "clickloop/store.h"

/* ---- Harness ---- */

typedef struct {
    uv_loop_t loop;
    cl_db_params_t params;
    cl_db_pool_t *pool;
    cl_store_t *store;
    cl_db_conn_t *killer;
    bool reset;
    const char *mode;
    int step;
    int pending;
    int failures;
    uint64_t t0;
    /* bench / soak */
    int batches, rows_per_batch, inflight_max, seconds;
    int next_batch, done_batches, inflight;
    uint64_t bench_t0;
    uint64_t expected_rows;
    uv_timer_t timer;
    bool stop_submitting;
    /* per-check scratch */
    long long counts[16]; /* result columns of the last check query, in order */
    char text[16][256];
    unsigned int ncols;
    unsigned int retry_batches;
    int cancel_status;
    uint64_t cancel_t0, cancel_ms;
    unsigned int auth_failures;
    int auth_status;
    uint64_t lost_before;
} smoke_t;

static smoke_t S;

static void advance(void);

static double elapsed(void) { return (double)(cl_now_ms() - S.t0) / 1000.0; }

#define CHECK(cond, ...)                                                                       \
    do {                                                                                       \
        if (cond) {                                                                            \
            printf("[%7.3f] PASS ", elapsed());                                                \
        } else {                                                                               \
            printf("[%7.3f] FAIL ", elapsed());                                                \
            S.failures++;                                                                      \
        }                                                                                      \
        printf(__VA_ARGS__);                                                                   \
        printf("\n");                                                                          \
        fflush(stdout);                                                                        \
    } while (0)

static void note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void note(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("[%7.3f] ", elapsed());
    vprintf(fmt, ap);
    printf("\n");
    fflush(stdout);
    va_end(ap);
}

static void on_pool_event(const cl_db_pool_event_t *ev, void *arg)
{
    CL_UNUSED(arg);
    const char *what = ev->type == CL_DB_POOL_EVENT_CONNECTED        ? "connected"
                       : ev->type == CL_DB_POOL_EVENT_CONNECT_FAILED ? "connect failed"
                                                                     : "lost";
    note("pool event: conn %u %s (%u up) status=%d error=%u %s retry_in=%" PRIu64 "ms",
         ev->conn_index, what, ev->connected, ev->status, ev->error_code, ev->message,
         ev->retry_in_ms);
    if (ev->type == CL_DB_POOL_EVENT_CONNECT_FAILED) {
        S.auth_failures++;
        S.auth_status = ev->status;
    }
}

/* A query whose rows land in S.counts / S.text by column. */
static void collect_row(void *arg, unsigned int statement, unsigned int fields,
                        const char *const *values, const unsigned long *lengths)
{
    CL_UNUSED(arg);
    CL_UNUSED(statement);
    CL_UNUSED(lengths);
    for (unsigned int i = 0; i < fields && S.ncols < CL_ARRAY_LEN(S.counts); i++, S.ncols++) {
        S.counts[S.ncols] = values[i] != NULL ? atoll(values[i]) : -1;
        snprintf(S.text[S.ncols], sizeof S.text[0], "%s", values[i] != NULL ? values[i] : "(null)");
    }
}

typedef struct {
    const char *what;
    int expect_status;
    unsigned int expect_code;
    char *sql; /* owned, freed after done */
} query_ctx_t;

static void query_done(void *arg, const cl_db_result_t *r)
{
    query_ctx_t *q = arg;
    if (q->expect_status == CL_OK)
        CHECK(r->status == CL_OK, "%s (status %d %s)", q->what, r->status, r->message);
    else
        CHECK(r->status == q->expect_status && r->error_code == q->expect_code,
              "%s -> status %d, error %u: %s", q->what, r->status, r->error_code, r->message);
    free(q->sql);
    free(q);
    if (--S.pending == 0)
        advance();
}

static const cl_db_query_handlers_t collect_handlers = {collect_row, query_done};

static void pool_query(const char *what, const char *sql, int expect_status,
                       unsigned int expect_code)
{
    char err[CL_ERR_LEN];
    query_ctx_t *q = cl_xcalloc(1, sizeof *q);
    q->what = what;
    q->expect_status = expect_status;
    q->expect_code = expect_code;
    q->sql = cl_xstrdup(sql);
    S.pending++;
    S.ncols = 0;
    if (cl_db_pool_query(S.pool, q->sql, strlen(q->sql), &collect_handlers, q, err) != CL_OK) {
        CHECK(false, "%s: %s", what, err);
        free(q->sql);
        free(q);
        S.pending--;
    }
}

static void conn_query(const char *what, const char *sql, int expect_status,
                       unsigned int expect_code)
{
    char err[CL_ERR_LEN];
    query_ctx_t *q = cl_xcalloc(1, sizeof *q);
    q->what = what;
    q->expect_status = expect_status;
    q->expect_code = expect_code;
    q->sql = cl_xstrdup(sql);
    S.pending++;
    S.ncols = 0;
    if (cl_db_conn_query(S.killer, q->sql, strlen(q->sql), &collect_handlers, q, err) != CL_OK) {
        CHECK(false, "%s: %s", what, err);
        free(q->sql);
        free(q);
        S.pending--;
    }
}

/* ---- Batches ---- */

typedef struct {
    char key[96];
    char user[64];
    char url[128];
} gen_row_t;

static void make_rows(const char *prefix, int batch, int n, gen_row_t *g, cl_store_row_t *rows)
{
    for (int i = 0; i < n; i++) {
        snprintf(g[i].key, sizeof g[i].key, "%s:%d:%d", prefix, batch, i);
        snprintf(g[i].user, sizeof g[i].user, "user'\"\\\xc3\xa9\xf0\x9f\x98\x80%d", i % 97);
        snprintf(g[i].url, sizeof g[i].url, "https://example.com/p?i=%d&q='x'\\y", i);
        cl_store_row_t *r = &rows[i];
        memset(r, 0, sizeof *r);
        r->row_key = g[i].key;
        r->row_key_len = strlen(g[i].key);
        r->event_id = i % 2 == 0 ? g[i].key : NULL;
        r->user_id = g[i].user;
        r->ts_ms = INT64_C(1764338400000) + (int64_t)batch * 100000 + i;
        r->url = g[i].url;
        r->url_len = strlen(g[i].url);
        if (i % 2 == 0) {
            memcpy(r->country, "DE", 3);
            r->city = "K\xc3\xb6ln";
        }
        if (i % 3 == 0) {
            r->browser = "Firefox";
            r->user_agent = "Mozilla/5.0 (X11; Linux x86_64)";
        }
        r->time_spent_ms = i % 5 == 0 ? -1 : i * 10;
        r->topic = "clicks";
        r->partition = batch % 4;
        r->offset = (int64_t)batch * 100000 + i;
    }
}

typedef void (*batch_done_fn)(const cl_store_batch_result_t *r, int batch);

typedef struct {
    int batch;
    batch_done_fn fn;
} batch_ctx_t;

static void on_batch_done(void *arg, const cl_store_batch_result_t *r)
{
    batch_ctx_t *b = arg;
    b->fn(r, b->batch);
    free(b);
}

static int submit_batch(const char *prefix, int batch, int n, const cl_store_rejected_t *rej,
                        size_t m, batch_done_fn fn)
{
    gen_row_t *g = cl_xcalloc((size_t)n + 1, sizeof *g);
    cl_store_row_t *rows = cl_xcalloc((size_t)n + 1, sizeof *rows);
    make_rows(prefix, batch, n, g, rows);
    batch_ctx_t *ctx = cl_xcalloc(1, sizeof *ctx);
    ctx->batch = batch;
    ctx->fn = fn;
    char err[CL_ERR_LEN];
    int rc = cl_store_write_batch(S.store, rows, (size_t)n, rej, m, on_batch_done, ctx, err);
    /* The SQL is built: the inputs can go right away. */
    free(g);
    free(rows);
    if (rc != CL_OK) {
        CHECK(false, "write_batch %s/%d: %s", prefix, batch, err);
        free(ctx);
    }
    return rc;
}

static const char bad_payload[] = "{\"user\":\"\xff\xfe\x00\x27\\\"}";
static const cl_store_rejected_t rejected_one = {
    "clicks", 3, 424242, bad_payload, sizeof bad_payload - 1, "payload is not UTF-8 at byte 9"};

/* ---- smoke ---- */

static void smoke_batch_done(const cl_store_batch_result_t *r, int batch)
{
    CHECK(r->status == CL_OK, "batch %d stored: %" PRIu64 " rows affected in %u attempt(s) %s",
          batch, r->rows_affected, r->attempts, r->message);
    if (r->attempts > 1)
        S.retry_batches++;
    if (--S.pending == 0)
        advance();
}

static void migrate_done(void *arg, const cl_store_migrate_result_t *r)
{
    int expect_from = (int)(intptr_t)arg;
    CHECK(r->status == CL_OK && (expect_from < 0 || r->from_version == expect_from) &&
              r->to_version == CL_STORE_SCHEMA_VERSION,
          "migrate from %d to %d (%s)", r->from_version, r->to_version, r->message);
    if (--S.pending == 0)
        advance();
}

static void start_migrate(int expect_from)
{
    char err[CL_ERR_LEN];
    S.pending++;
    if (cl_store_migrate(S.store, migrate_done, (void *)(intptr_t)expect_from, err) != CL_OK) {
        CHECK(false, "migrate: %s", err);
        S.pending--;
    }
}

/* Escaping round trip: the server must decode every escaped string back to
 * the exact bytes. */
#define ESCAPE_CASES 64
static char escape_expected[ESCAPE_CASES][2 * 300 + 1];
static int escape_mismatches;

static void escape_row(void *arg, unsigned int statement, unsigned int fields,
                       const char *const *values, const unsigned long *lengths)
{
    CL_UNUSED(arg);
    CL_UNUSED(lengths);
    if (statement >= ESCAPE_CASES || fields != 1 || values[0] == NULL ||
        strcmp(values[0], escape_expected[statement]) != 0)
        escape_mismatches++;
}

static void escape_done(void *arg, const cl_db_result_t *r)
{
    char *sql = arg;
    free(sql);
    CHECK(r->status == CL_OK && escape_mismatches == 0 && r->statements == ESCAPE_CASES,
          "escaping round trip of %d random binary strings: %d mismatches (%s)", ESCAPE_CASES,
          escape_mismatches, r->message);
    if (--S.pending == 0)
        advance();
}

static void start_escape_roundtrip(void)
{
    static const cl_db_query_handlers_t h = {escape_row, escape_done};
    cl_buf_t b;
    cl_buf_init(&b);
    uint32_t x = 12345;
    for (int i = 0; i < ESCAPE_CASES; i++) {
        char raw[300];
        size_t len = i == 0 ? 256 : (size_t)(x % 300);
        for (size_t j = 0; j < len; j++) {
            x = x * 1103515245u + 12345u;
            raw[j] = i == 0 ? (char)j : (char)("\0\n\r\\'\"\032%_a\xc3\xa9\xff"[(x >> 16) % 14]);
        }
        for (size_t j = 0; j < len; j++)
            snprintf(escape_expected[i] + 2 * j, 3, "%02X", (unsigned char)raw[j]);
        escape_expected[i][2 * len] = '\0';
        char esc[2 * 300 + 1];
        cl_db_escape_string(esc, raw, len);
        cl_buf_appendf(&b, "%sSELECT HEX(_binary'%s')", i == 0 ? "" : ";", esc);
    }
    char err[CL_ERR_LEN];
    S.pending++;
    char *sql = cl_buf_steal(&b, NULL);
    if (cl_db_pool_query(S.pool, sql, strlen(sql), &h, sql, err) != CL_OK) {
        CHECK(false, "escape round trip: %s", err);
        free(sql);
        S.pending--;
    }
}

static void on_killer_event(cl_db_conn_t *conn, cl_db_conn_event_t ev, const cl_db_error_t *e,
                            void *arg)
{
    CL_UNUSED(conn);
    CL_UNUSED(arg);
    CHECK(ev == CL_DB_CONN_EVENT_CONNECTED, "standalone connection event %d: %s", ev, e->message);
    if (--S.pending == 0)
        advance();
}

/* KILL every connection of the clickloop user except the killer's own. */
static char kill_sql[4096];
static void kill_row(void *arg, unsigned int statement, unsigned int fields,
                     const char *const *values, const unsigned long *lengths)
{
    CL_UNUSED(arg);
    CL_UNUSED(statement);
    CL_UNUSED(fields);
    CL_UNUSED(lengths);
    size_t len = strlen(kill_sql);
    snprintf(kill_sql + len, sizeof kill_sql - len, "%sKILL CONNECTION %s", len ? ";" : "",
             values[0]);
}

static void kill_done(void *arg, const cl_db_result_t *r);
static void kill_list_done(void *arg, const cl_db_result_t *r)
{
    static const cl_db_query_handlers_t h = {NULL, kill_done};
    CL_UNUSED(arg);
    char err[CL_ERR_LEN];
    note("killing pool connections: %s (%s)", kill_sql, r->message);
    if (kill_sql[0] == '\0' ||
        cl_db_conn_query(S.killer, kill_sql, strlen(kill_sql), &h, NULL, err) != CL_OK)
        kill_done(NULL, r);
}

static void kill_done(void *arg, const cl_db_result_t *r)
{
    CL_UNUSED(arg);
    note("KILL done: status %d %s", r->status, r->message);
}

static void start_killing(void)
{
    static const cl_db_query_handlers_t h = {kill_row, kill_list_done};
    static const char sql[] = "SELECT ID FROM information_schema.PROCESSLIST WHERE "
                              "USER = 'clickloop' AND ID <> CONNECTION_ID()";
    char err[CL_ERR_LEN];
    kill_sql[0] = '\0';
    if (cl_db_conn_query(S.killer, sql, strlen(sql), &h, NULL, err) != CL_OK)
        note("cannot list connections: %s", err);
}

static int kill_batches_done;
static void kill_batch_done(const cl_store_batch_result_t *r, int batch)
{
    if (r->status != CL_OK || batch < 2)
        CHECK(r->status == CL_OK, "batch %d under KILL: %u attempt(s) %s", batch, r->attempts,
              r->message);
    if (r->attempts > 1) {
        S.retry_batches++;
        note("batch %d needed %u attempts", batch, r->attempts);
    }
    if (++kill_batches_done == 1)
        start_killing(); /* while the others are in flight */
    if (--S.pending == 0)
        advance();
}

static void cancel_done(void *arg, const cl_db_result_t *r)
{
    CL_UNUSED(arg);
    S.cancel_status = r->status;
    S.cancel_ms = cl_now_ms() - S.cancel_t0;
    note("in-flight SELECT SLEEP(10) completed on close: status %d after %" PRIu64 " ms: %s",
         r->status, S.cancel_ms, r->message);
}

static void on_closed(void *arg)
{
    note("%s closed", (const char *)arg);
}

static void close_everything(void)
{
    if (S.store != NULL)
        cl_store_close(S.store, on_closed, "store");
    if (S.pool != NULL)
        cl_db_pool_close(S.pool, on_closed, "pool");
    if (S.killer != NULL)
        cl_db_conn_close(S.killer, on_closed, "standalone connection");
    S.store = NULL;
    S.pool = NULL;
    S.killer = NULL;
}

static void on_cancel_timer(uv_timer_t *t)
{
    CL_UNUSED(t);
    S.cancel_t0 = cl_now_ms();
    uv_close((uv_handle_t *)&S.timer, NULL);
    close_everything();
}

static void on_idle_kill_timer(uv_timer_t *t)
{
    uv_timer_stop(t);
    advance();
}

static void smoke_step(void)
{
    switch (S.step++) {
    case 0: {
        char err[CL_ERR_LEN];
        cl_store_params_t sp = {.retry_min_ms = 50, .retry_max_ms = 2000};
        if (cl_store_new(&S.loop, S.pool, &sp, &S.store, err) != CL_OK) {
            CHECK(false, "store: %s", err);
            return;
        }
        S.pending++;
        if (cl_db_conn_new(&S.loop, &S.params, on_killer_event, NULL, &S.killer, err) != CL_OK ||
            cl_db_conn_connect(S.killer, err) != CL_OK) {
            CHECK(false, "standalone connection: %s", err);
            S.pending--;
        }
        if (S.reset)
            pool_query("drop tables",
                       "DROP TABLE IF EXISTS click_data, geo_data, user_agent_data, "
                       "rejected_events, clickloop_schema",
                       CL_OK, 0);
        break;
    }
    case 1:
        start_migrate(S.reset ? 0 : -1);
        break;
    case 2:
        start_migrate(CL_STORE_SCHEMA_VERSION); /* again: nothing to do */
        break;
    case 3:
        conn_query("session settings",
                   "SELECT @@session.sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION', "
                   "@@session.time_zone = '+00:00', @@character_set_client = 'utf8mb4'",
                   CL_OK, 0);
        break;
    case 4:
        CHECK(S.counts[0] == 1 && S.counts[1] == 1 && S.counts[2] == 1,
              "session has strict sql_mode, UTC time zone, utf8mb4");
        start_escape_roundtrip();
        break;
    case 5:
        /* Three batches at once: A, B (with a rejected event), and A again
         * (redelivered) plus the same rejected event. */
        S.pending += 3;
        if (submit_batch("smoke", 1, 1000, NULL, 0, smoke_batch_done) != CL_OK)
            S.pending--;
        if (submit_batch("smoke", 2, 1000, &rejected_one, 1, smoke_batch_done) != CL_OK)
            S.pending--;
        if (submit_batch("smoke", 1, 1000, &rejected_one, 1, smoke_batch_done) != CL_OK)
            S.pending--;
        if (S.pending == 0)
            advance();
        break;
    case 6:
        pool_query("count rows",
                   "SELECT COUNT(*), COUNT(DISTINCT row_key) FROM click_data WHERE row_key LIKE "
                   "'smoke:%';SELECT COUNT(*) FROM geo_data WHERE row_key LIKE 'smoke:%';"
                   "SELECT COUNT(*) FROM user_agent_data WHERE row_key LIKE 'smoke:%';"
                   "SELECT COUNT(*), HEX(MAX(payload)) FROM rejected_events",
                   CL_OK, 0);
        break;
    case 7: {
        char hex[2 * sizeof bad_payload + 1];
        for (size_t i = 0; i < sizeof bad_payload - 1; i++)
            snprintf(hex + 2 * i, 3, "%02X", (unsigned char)bad_payload[i]);
        CHECK(S.counts[0] == 2000 && S.counts[1] == 2000,
              "click_data has %lld rows, %lld distinct (want 2000: redelivery added none)",
              S.counts[0], S.counts[1]);
        CHECK(S.counts[2] == 1000 && S.counts[3] == 668,
              "geo_data %lld rows (want 1000), user_agent_data %lld rows (want 668)", S.counts[2],
              S.counts[3]);
        CHECK(S.counts[4] == 1 && strcmp(S.text[5], hex) == 0,
              "rejected_events has %lld row with the raw invalid UTF-8 payload (%s)", S.counts[4],
              S.text[5]);
        pool_query("read one row back",
                   "SELECT user_id = 'user\\'\"\\\\\xc3\xa9\xf0\x9f\x98\x80" "7', "
                   "url = 'https://example.com/p?i=7&q=\\'x\\'\\\\y', "
                   "event_time = '2025-11-28 14:01:40.007', time_spent_ms IS NULL "
                   "FROM click_data WHERE row_key = 'smoke:1:7'",
                   CL_OK, 0);
        break;
    }
    case 8:
        CHECK(S.counts[0] == 1 && S.counts[1] == 1 && S.counts[2] == 1 && S.counts[3] == 0,
              "row smoke:1:7 reads back byte-exact (user_id, url, DATETIME(3) in UTC, "
              "time_spent_ms)");
        pool_query("syntax error is permanent", "SELEC 1", CL_ERR, 1064);
        pool_query("missing table is permanent", "SELECT * FROM no_such_table", CL_ERR, 1146);
        conn_query("failed statement inside a transaction",
                   "START TRANSACTION;INSERT INTO geo_data (row_key) VALUES ('tx-leak');"
                   "SELECT * FROM no_such_table;COMMIT",
                   CL_ERR, 1146);
        break;
    case 9:
        conn_query("same connection afterwards",
                   "START TRANSACTION;COMMIT;"
                   "SELECT COUNT(*) FROM geo_data WHERE row_key = 'tx-leak'",
                   CL_OK, 0);
        break;
    case 10:
        CHECK(S.counts[0] == 0,
              "the half-done transaction was rolled back, not committed by the next "
              "START TRANSACTION (%lld rows)",
              S.counts[0]);
        /* 20 batches while the pool's connections are killed. */
        S.retry_batches = 0;
        for (int i = 0; i < 20; i++) {
            S.pending++;
            if (submit_batch("kill", i, 1000, NULL, 0, kill_batch_done) != CL_OK)
                S.pending--;
        }
        break;
    case 11: {
        cl_db_pool_stats_t st;
        cl_db_pool_stats(S.pool, &st);
        CHECK(st.connections_lost >= 1 && S.retry_batches >= 1,
              "pool lost %" PRIu64 " connections, made %" PRIu64 " reconnect attempts; %u "
              "batches were retried",
              st.connections_lost, st.reconnect_attempts, S.retry_batches);
        pool_query("count after kill",
                   "SELECT COUNT(*), COUNT(DISTINCT row_key) FROM click_data WHERE row_key LIKE "
                   "'kill:%'",
                   CL_OK, 0);
        break;
    }
    case 12: {
        CHECK(S.counts[0] == 20000 && S.counts[1] == 20000,
              "after KILL and retries click_data has %lld kill: rows, %lld distinct (want 20000)",
              S.counts[0], S.counts[1]);
        cl_db_pool_stats_t st;
        cl_db_pool_stats(S.pool, &st);
        CHECK(cl_db_pool_healthy(S.pool) && st.connected == 3, "pool healthy, %u of 3 connected",
              st.connected);
        cl_store_stats_t ss;
        cl_store_stats(S.store, &ss);
        note("store stats: %" PRIu64 " batches stored, %" PRIu64 " retries, %" PRIu64
             " rows affected, %zu in flight",
             ss.batches_stored, ss.batch_retries, ss.rows_affected, ss.in_flight);
        /* Kill the pool's connections while they are idle: the pool must
         * notice without running a query. */
        S.lost_before = st.connections_lost;
        start_killing();
        uv_timer_init(&S.loop, &S.timer);
        uv_timer_start(&S.timer, on_idle_kill_timer, 600, 0);
        break;
    }
    case 13: {
        cl_db_pool_stats_t st;
        cl_db_pool_stats(S.pool, &st);
        CHECK(st.connections_lost == S.lost_before + 3 && st.connected == 3,
              "idle connections killed by the server were noticed without a query and "
              "replaced (%" PRIu64 " more lost, %u connected)",
              st.connections_lost - S.lost_before, st.connected);
        /* Close while a query is in flight: it must be cancelled promptly. */
        static const cl_db_query_handlers_t h = {NULL, cancel_done};
        char err[CL_ERR_LEN];
        S.cancel_status = 99;
        if (cl_db_pool_query(S.pool, "SELECT SLEEP(10)", 16, &h, NULL, err) != CL_OK)
            CHECK(false, "sleep query: %s", err);
        uv_timer_start(&S.timer, on_cancel_timer, 300, 0);
        break;
    }
    default:
        break;
    }
}

/* ---- bench / soak ---- */

static void pump(void);

static void bench_batch_done(const cl_store_batch_result_t *r, int batch)
{
    if (r->status != CL_OK)
        CHECK(false, "batch %d: %s", batch, r->message);
    if (r->attempts > 1)
        S.retry_batches++;
    S.inflight--;
    S.done_batches++;
    pump();
}

static void pump(void)
{
    bool soak = strcmp(S.mode, "soak") == 0;
    while (!S.stop_submitting && S.inflight < S.inflight_max &&
           (soak || S.next_batch < S.batches)) {
        int b = S.next_batch++;
        S.inflight++;
        /* In soak mode every 5th batch re-sends an earlier one. */
        int which = soak && b % 5 == 4 ? b - 3 : b;
        if (which == b)
            S.expected_rows += (uint64_t)S.rows_per_batch;
        if (submit_batch(S.mode, which, S.rows_per_batch, NULL, 0, bench_batch_done) != CL_OK) {
            S.inflight--;
            S.stop_submitting = true;
        }
    }
    if (S.inflight == 0 && (S.stop_submitting || S.next_batch >= S.batches))
        advance();
}

static void on_soak_tick(uv_timer_t *t)
{
    CL_UNUSED(t);
    cl_db_pool_stats_t st;
    cl_db_pool_stats(S.pool, &st);
    cl_store_stats_t ss;
    cl_store_stats(S.store, &ss);
    note("soak: %d batches done, %d in flight, %u/%u connected, lost %" PRIu64
         ", reconnect attempts %" PRIu64 ", connect failures %" PRIu64 ", batch retries %" PRIu64,
         S.done_batches, S.inflight, st.connected, st.size, st.connections_lost,
         st.reconnect_attempts, st.connect_failures, ss.batch_retries);
    if (elapsed() >= S.seconds && !S.stop_submitting) {
        S.stop_submitting = true;
        uv_timer_stop(&S.timer);
        uv_close((uv_handle_t *)&S.timer, NULL);
        if (S.inflight == 0)
            advance();
    }
}

static void bench_step(void)
{
    bool soak = strcmp(S.mode, "soak") == 0;
    char sql[256];
    switch (S.step++) {
    case 0: {
        char err[CL_ERR_LEN];
        cl_store_params_t sp = {.retry_min_ms = 100, .retry_max_ms = 2000};
        cl_store_new(&S.loop, S.pool, &sp, &S.store, err);
        if (S.reset)
            pool_query("drop tables",
                       "DROP TABLE IF EXISTS click_data, geo_data, user_agent_data, "
                       "rejected_events, clickloop_schema",
                       CL_OK, 0);
        else
            advance();
        break;
    }
    case 1:
        start_migrate(-1);
        break;
    case 2:
        snprintf(sql, sizeof sql, "DELETE FROM click_data WHERE row_key LIKE '%s:%%'", S.mode);
        pool_query("clear previous run", sql, CL_OK, 0);
        break;
    case 3:
        S.bench_t0 = cl_now_ms();
        if (soak) {
            uv_timer_init(&S.loop, &S.timer);
            uv_timer_start(&S.timer, on_soak_tick, 1000, 1000);
        }
        pump();
        break;
    case 4: {
        uint64_t ms = cl_now_ms() - S.bench_t0;
        uint64_t rows = (uint64_t)S.done_batches * (uint64_t)S.rows_per_batch;
        note("%s: %d batches of %d rows (%" PRIu64 " rows) with %d in flight in %" PRIu64
             " ms: %.0f rows/s, %.1f ms per batch; %u batches retried",
             S.mode, S.done_batches, S.rows_per_batch, rows, S.inflight_max, ms,
             ms ? (double)rows * 1000.0 / (double)ms : 0.0,
             (double)ms / (S.done_batches ? S.done_batches : 1), S.retry_batches);
        snprintf(sql, sizeof sql,
                 "SELECT COUNT(*), COUNT(DISTINCT row_key) FROM click_data WHERE row_key LIKE "
                 "'%s:%%'",
                 S.mode);
        pool_query("count", sql, CL_OK, 0);
        break;
    }
    case 5:
        CHECK((uint64_t)S.counts[0] == S.expected_rows && S.counts[1] == S.counts[0],
              "%s: %lld rows, %lld distinct, want %" PRIu64, S.mode, S.counts[0], S.counts[1],
              S.expected_rows);
        close_everything();
        break;
    default:
        break;
    }
}

/* ---- timeout ---- */

static void timeout_query_done(void *arg, const cl_db_result_t *r)
{
    CL_UNUSED(arg);
    uint64_t ms = cl_now_ms() - S.cancel_t0;
    CHECK(r->status == CL_ERR_RETRY && ms >= 900 && ms < 2500,
          "SELECT SLEEP(5) with a 1 s read timeout ended after %" PRIu64 " ms: status %d, %s", ms,
          r->status, r->message);
}

static void on_timeout_check(uv_timer_t *t)
{
    CL_UNUSED(t);
    cl_db_pool_stats_t st;
    cl_db_pool_stats(S.pool, &st);
    CHECK(st.connections_lost == 1 && st.connected == 1,
          "the timed-out connection was replaced (%" PRIu64 " lost, %u connected)",
          st.connections_lost, st.connected);
    uv_close((uv_handle_t *)&S.timer, NULL);
    close_everything();
}

static void start_timeout_mode(void)
{
    static const cl_db_query_handlers_t h = {NULL, timeout_query_done};
    char err[CL_ERR_LEN];
    S.cancel_t0 = cl_now_ms();
    if (cl_db_pool_query(S.pool, "SELECT SLEEP(5)", 15, &h, NULL, err) != CL_OK)
        CHECK(false, "sleep: %s", err);
    uv_timer_init(&S.loop, &S.timer);
    uv_timer_start(&S.timer, on_timeout_check, 2500, 0);
}

/* ---- badauth ---- */

static void on_badauth_timer(uv_timer_t *t)
{
    CL_UNUSED(t);
    CHECK(S.auth_failures >= 1 && S.auth_status == CL_ERR,
          "wrong password reported %u time(s) as needing an operator (status %d)",
          S.auth_failures, S.auth_status);
    uv_close((uv_handle_t *)&S.timer, NULL);
    close_everything();
}

static void advance(void)
{
    if (strcmp(S.mode, "smoke") == 0)
        smoke_step();
    else if (strcmp(S.mode, "bench") == 0 || strcmp(S.mode, "soak") == 0)
        bench_step();
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"host", required_argument, NULL, 'h'},     {"port", required_argument, NULL, 'P'},
        {"socket", required_argument, NULL, 'S'},   {"user", required_argument, NULL, 'u'},
        {"password", required_argument, NULL, 'p'}, {"database", required_argument, NULL, 'D'},
        {"reset", no_argument, NULL, 'r'},          {"batches", required_argument, NULL, 'b'},
        {"rows", required_argument, NULL, 'n'},     {"inflight", required_argument, NULL, 'k'},
        {"seconds", required_argument, NULL, 's'},  {"pool", required_argument, NULL, 'c'},
        {NULL, 0, NULL, 0},
    };
    unsigned int pool_size = 3;
    S.params = (cl_db_params_t){
        .host = "127.0.0.1",
        .port = 13399,
        .user = "clickloop",
        .password = "clickloop",
        .database = "clickloop",
        .connect_timeout_ms = 3000,
        .read_timeout_ms = 30000,
        .write_timeout_ms = 30000,
        .backoff_min_ms = 100,
        .backoff_max_ms = 3000,
    };
    S.batches = 100;
    S.rows_per_batch = 1000;
    S.inflight_max = 3;
    S.seconds = 30;
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'h': S.params.host = optarg; break;
        case 'P': S.params.port = (unsigned)atoi(optarg); break;
        case 'S': S.params.unix_socket = optarg; break;
        case 'u': S.params.user = optarg; break;
        case 'p': S.params.password = optarg; break;
        case 'D': S.params.database = optarg; break;
        case 'r': S.reset = true; break;
        case 'b': S.batches = atoi(optarg); break;
        case 'n': S.rows_per_batch = atoi(optarg); break;
        case 'k': S.inflight_max = atoi(optarg); break;
        case 's': S.seconds = atoi(optarg); break;
        case 'c': pool_size = (unsigned)atoi(optarg); break;
        default: return 2;
        }
    }
    S.mode = optind < argc ? argv[optind] : "smoke";
    signal(SIGPIPE, SIG_IGN);
    if (mysql_library_init(0, NULL, NULL) != 0)
        return 1;
    S.t0 = cl_now_ms();
    uv_loop_init(&S.loop);

    char err[CL_ERR_LEN];
    if (strcmp(S.mode, "badauth") == 0)
        S.params.password = "definitely-wrong";
    if (strcmp(S.mode, "timeout") == 0) {
        S.params.read_timeout_ms = 1000;
        pool_size = 1;
    }
    if (cl_db_pool_open(&S.loop, &S.params, pool_size, on_pool_event, NULL, &S.pool, err) !=
        CL_OK) {
        fprintf(stderr, "pool: %s\n", err);
        return 1;
    }
    if (strcmp(S.mode, "badauth") == 0) {
        uv_timer_init(&S.loop, &S.timer);
        uv_timer_start(&S.timer, on_badauth_timer, 1500, 0);
    } else if (strcmp(S.mode, "timeout") == 0) {
        start_timeout_mode();
    } else {
        advance();
    }
    uv_run(&S.loop, UV_RUN_DEFAULT);

    if (strcmp(S.mode, "smoke") == 0)
        CHECK(S.cancel_status == CL_ERR_RETRY && S.cancel_ms < 1000,
              "closing the pool cancelled the in-flight query in %" PRIu64 " ms (status %d)",
              S.cancel_ms, S.cancel_status);
    int rc = uv_loop_close(&S.loop);
    CHECK(rc == 0, "uv_loop_close() == 0 (%s)", rc == 0 ? "ok" : uv_strerror(rc));
    mysql_library_end();
    printf("%s: %d failure(s)\n", S.mode, S.failures);
    return S.failures == 0 ? 0 : 1;
}

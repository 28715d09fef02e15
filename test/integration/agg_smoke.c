/* agg_smoke: checks the aggregate module against a running MariaDB, with the
 * expected aggregates computed in C by brute force, then times an
 * incremental run against a full recompute. Not a registered test (it needs
 * a server and creates a database): build with
 * `meson compile -C <build> agg_smoke`.
 *
 *   agg_smoke [--host H] [--port P] [--user U] [--password W]
 *             [--database clickloop_aggsmoke] [--events N] [--no-bench] [--keep]
 *
 * It creates the database (dropped at the end unless --keep), migrates it
 * with cl_store_migrate, and stores events with cl_store_write_batch, as
 * clickloop does. Steps:
 *   1. a generated clickstream with known answers (users, URLs differing
 *      only in case, countries with missing ones, gaps below, at and above
 *      the session timeout, explicit time_spent_ms, same-millisecond ties,
 *      window boundaries, an event on 9999-12-31) -> one run -> agg_stats
 *      equals the brute force; the index read side parses and marks rows
 *   2. nothing new -> a run changes nothing; a redelivered batch -> nothing
 *      (its events are in agg_done)
 *   3. late events into old windows -> exactly the rows whose values change
 *      get a new version, and only they need indexing again
 *   4. another session holds the lock -> the run is skipped
 *   5. bench: N events (default 1,000,000) over 60 days, then the time of a
 *      full recompute and of incremental runs after 1,000 new events.
 * Exit status 0 when every check passed and the loop closed cleanly. */
#include <getopt.h>
#include <inttypes.h>
#include <mysql.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clickloop/aggregate.h"
#include "clickloop/common.h"
#include "clickloop/db.h"
#include "clickloop/store.h"

#define HOUR INT64_C(3600000)
#define DAY INT64_C(86400000)
#define TIMEOUT_MS INT64_C(1800000)
/* 2024-05-17 00:00:00 UTC */
#define T0 INT64_C(1715904000000)

static const uint64_t windows[] = {15 * 60000, HOUR, DAY};
#define N_WINDOWS (sizeof windows / sizeof windows[0])

static const char *const urls[] = {
    "https://shop.example/a",         "https://shop.example/A", /* differ only in case */
    "https://shop.example/b?q='x'\\", "https://shop.example/\xc3\xa9t\xc3\xa9",
    "https://news.example/",          "https://news.example/long/path/with/many/segments",
};
#define N_URLS (sizeof urls / sizeof urls[0])
/* "" = no geo row; "-" = a geo row with a city but no country. */
static const char *const countries[] = {"DE", "FR", "US", "", "-"};
#define N_COUNTRIES (sizeof countries / sizeof countries[0])

/* Gaps between a user's consecutive events: ties, around the timeout, long. */
static const int64_t gaps[] = {
    0, 1, 5000, 600000, TIMEOUT_MS - 1, TIMEOUT_MS, TIMEOUT_MS + 1, 7200000, 45000, 20 * 60000};
#define N_GAPS (sizeof gaps / sizeof gaps[0])

typedef struct {
    char key[40];
    char user[48];
    int64_t ts;
    int url;
    int country;
    int64_t time_spent; /* -1: none */
} event_t;

typedef struct {
    uint64_t window_ms;
    int64_t start;
    const char *url;
    size_t url_len;
    char country[17];
    uint64_t clicks, users, sum, samples, version;
} agg_t;

static struct {
    uv_loop_t loop;
    cl_db_params_t params;
    const char *database;
    cl_db_pool_t *admin; /* connected to information_schema: creates the database */
    cl_db_pool_t *pool;  /* the store's */
    cl_store_t *store;
    cl_aggregator_t *agg;
    cl_db_conn_t *other; /* a second session holding the lock */
    int step;
    int failures;
    bool keep, bench;
    size_t bench_events;
    uint64_t t0;
    event_t *events;
    size_t n_events, cap_events;
    /* rows read back from agg_stats */
    agg_t *rows;
    size_t n_rows;
    char **row_strings; /* url copies owned by rows */
    agg_t *before;      /* agg_stats before the late events */
    size_t n_before;
    agg_t *expected_before; /* brute force before the late events */
    size_t n_expected_before;
    cl_aggregator_run_result_t last; /* copy of the last run result */
    char last_message[CL_ERR_LEN];
    long long scalar;
    /* index read side */
    cl_aggregate_indexed_t *indexed;
    size_t n_indexed;
    /* batch writing */
    size_t write_next, write_end, write_inflight, write_done;
    bool write_bench;
    uint64_t bench_load_ms;
    uint64_t full_ms, incr_ms, incr_late_ms;
    cl_buf_t sql;
} S;

static void advance(void);

static double elapsed(void)
{
    return (double)(cl_now_ms() - S.t0) / 1000.0;
}

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        printf("[%7.3f] %s ", elapsed(), (cond) ? "PASS" : "FAIL");                                \
        if (!(cond))                                                                               \
            S.failures++;                                                                          \
        printf(__VA_ARGS__);                                                                       \
        printf("\n");                                                                              \
        fflush(stdout);                                                                            \
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

static uint64_t rng_state = 0x9E3779B97F4A7C15ULL;
static uint32_t rnd(uint32_t n)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (uint32_t)(((rng_state * 0x2545F4914F6CDD1DULL) >> 32) % n);
}

/* ---- Queries ---- */

typedef void (*row_fn)(unsigned int fields, const char *const *values,
                       const unsigned long *lengths);

typedef struct {
    row_fn row;
    char *sql;
    const char *what;
    bool advance_after;
} query_t;

static void on_query_row(void *arg, unsigned int statement, unsigned int fields,
                         const char *const *values, const unsigned long *lengths)
{
    query_t *q = arg;
    CL_UNUSED(statement);
    if (q->row != NULL)
        q->row(fields, values, lengths);
}

static void on_query_done(void *arg, const cl_db_result_t *r)
{
    query_t *q = arg;
    if (r->status != CL_OK)
        CHECK(false, "%s: %s", q->what, r->message);
    free(q->sql);
    bool next = q->advance_after;
    free(q);
    if (next)
        advance();
}

static const cl_db_query_handlers_t query_handlers = {on_query_row, on_query_done};

static void query_on(cl_db_pool_t *pool, const char *what, const char *sql, row_fn row)
{
    char err[CL_ERR_LEN];
    query_t *q = cl_xcalloc(1, sizeof *q);
    q->row = row;
    q->sql = cl_xstrdup(sql);
    q->what = what;
    q->advance_after = true;
    if (cl_db_pool_query(pool, q->sql, strlen(q->sql), &query_handlers, q, err) != CL_OK) {
        CHECK(false, "%s: %s", what, err);
        free(q->sql);
        free(q);
    }
}

static void query(const char *what, const char *sql, row_fn row)
{
    query_on(S.pool, what, sql, row);
}

static void scalar_row(unsigned int fields, const char *const *values, const unsigned long *lengths)
{
    CL_UNUSED(lengths);
    S.scalar = fields > 0 && values[0] != NULL ? atoll(values[0]) : -1;
}

/* ---- Events ---- */

static event_t *add_event(void)
{
    if (S.n_events == S.cap_events) {
        S.cap_events = S.cap_events ? 2 * S.cap_events : 1024;
        S.events = cl_xrealloc(S.events, S.cap_events * sizeof *S.events);
    }
    event_t *e = &S.events[S.n_events++];
    memset(e, 0, sizeof *e);
    snprintf(e->key, sizeof e->key, "e:%zu", S.n_events);
    e->time_spent = -1;
    return e;
}

static void to_row(const event_t *e, cl_store_row_t *r)
{
    memset(r, 0, sizeof *r);
    r->row_key = e->key;
    r->row_key_len = strlen(e->key);
    r->user_id = e->user;
    r->ts_ms = e->ts;
    r->url = urls[e->url];
    r->url_len = strlen(urls[e->url]);
    const char *c = countries[e->country];
    if (strcmp(c, "-") == 0) {
        r->city = "Nowhere";
    } else {
        snprintf(r->country, sizeof r->country, "%s", c);
    }
    r->time_spent_ms = e->time_spent;
    r->topic = "clicks";
    r->partition = 0;
    r->offset = (int64_t)(e - S.events);
}

/* Sessions of several users around T0 + 23h (the day boundary) and inside
 * the hours before it. */
static void generate_known_clickstream(void)
{
    const char *names[] = {"alice", "bob",   "carol", "d'avid\\", "\xc3\xa9mile",
                           "frank", "Alice", "grace", "heidi",    "ivan"};
    for (size_t u = 0; u < CL_ARRAY_LEN(names); u++) {
        int64_t t = T0 + 21 * HOUR + (int64_t)rnd(3 * 3600) * 1000 + rnd(1000);
        int n = 8 + (int)rnd(25);
        for (int i = 0; i < n; i++) {
            event_t *e = add_event();
            snprintf(e->user, sizeof e->user, "%s", names[u]);
            e->ts = t;
            e->url = (int)rnd(N_URLS);
            e->country = (int)rnd(N_COUNTRIES);
            if (rnd(4) == 0)
                e->time_spent = rnd(3) == 0 ? 0 : rnd(100000);
            t += gaps[rnd(N_GAPS)];
        }
    }
    /* Same-millisecond ties whose keys sort differently as bytes than as
     * numbers ("e:tie10" < "e:tie9"). */
    const char *tie_keys[] = {"e:tie9", "e:tie10", "e:tie1"};
    for (size_t i = 0; i < CL_ARRAY_LEN(tie_keys); i++) {
        event_t *e = add_event();
        snprintf(e->key, sizeof e->key, "%s", tie_keys[i]);
        snprintf(e->user, sizeof e->user, "tie");
        e->ts = T0 + 22 * HOUR - 1;
        e->url = (int)i % 2;
        e->country = 0;
    }
    event_t *e = add_event(); /* next click of the ties, 10 s later, next hour */
    snprintf(e->user, sizeof e->user, "tie");
    e->ts = T0 + 22 * HOUR + 9999;
    e->url = 2;
    e->country = 1;
    for (int i = 0; i < 2; i++) { /* see add_late_events */
        e = add_event();
        snprintf(e->user, sizeof e->user, "late");
        e->ts = T0 + (i == 0 ? 9 * HOUR + 50 * 60000 : 12 * HOUR);
        e->url = 0;
        e->country = 0;
    }
    /* The last millisecond a DATETIME holds: date arithmetic must not overflow. */
    for (int i = 0; i < 2; i++) {
        e = add_event();
        snprintf(e->user, sizeof e->user, "edge");
        e->ts = CL_STORE_TS_MAX_MS - 1 + i;
        e->url = 4;
        e->country = 2;
    }
}

/* ---- Brute force ---- */

static int cmp_bytes(const char *a, size_t la, const char *b, size_t lb)
{
    int c = memcmp(a, b, la < lb ? la : lb);
    return c != 0 ? c : (la > lb) - (la < lb);
}

static int cmp_user_time_key(const void *pa, const void *pb)
{
    const event_t *a = *(const event_t *const *)pa, *b = *(const event_t *const *)pb;
    int c = strcmp(a->user, b->user);
    if (c != 0)
        return c;
    if (a->ts != b->ts)
        return a->ts < b->ts ? -1 : 1;
    return cmp_bytes(a->key, strlen(a->key), b->key, strlen(b->key));
}

typedef struct {
    uint64_t window_ms;
    int64_t start;
    int url;
    const char *country;
    const char *user;
    int64_t spent; /* -1: none */
} contribution_t;

static int cmp_contribution(const void *pa, const void *pb)
{
    const contribution_t *a = pa, *b = pb;
    if (a->window_ms != b->window_ms)
        return a->window_ms < b->window_ms ? -1 : 1;
    if (a->start != b->start)
        return a->start < b->start ? -1 : 1;
    int c = cmp_bytes(urls[a->url], strlen(urls[a->url]), urls[b->url], strlen(urls[b->url]));
    if (c != 0)
        return c;
    c = strcmp(a->country, b->country);
    return c != 0 ? c : strcmp(a->user, b->user);
}

static int cmp_agg(const void *pa, const void *pb)
{
    const agg_t *a = pa, *b = pb;
    if (a->window_ms != b->window_ms)
        return a->window_ms < b->window_ms ? -1 : 1;
    if (a->start != b->start)
        return a->start < b->start ? -1 : 1;
    int c = cmp_bytes(a->url, a->url_len, b->url, b->url_len);
    return c != 0 ? c : strcmp(a->country, b->country);
}

/* Window start by repeated stepping from an aligned point: deliberately not
 * the formula the module uses. */
static int64_t brute_window_start(int64_t t, uint64_t w)
{
    int64_t start = (t / (int64_t)w) * (int64_t)w;
    while (start > t)
        start -= (int64_t)w;
    while (start + (int64_t)w <= t)
        start += (int64_t)w;
    return start;
}

/* The aggregates of S.events, sorted by key. */
static agg_t *brute_force(size_t *n_out)
{
    size_t n = S.n_events;
    const event_t **by_user = cl_xcalloc(n, sizeof *by_user);
    for (size_t i = 0; i < n; i++)
        by_user[i] = &S.events[i];
    qsort(by_user, n, sizeof *by_user, cmp_user_time_key);
    contribution_t *c = cl_xcalloc(n * N_WINDOWS, sizeof *c);
    size_t nc = 0;
    for (size_t i = 0; i < n; i++) {
        const event_t *e = by_user[i];
        int64_t spent = e->time_spent;
        if (spent < 0 && i + 1 < n && strcmp(by_user[i + 1]->user, e->user) == 0 &&
            by_user[i + 1]->ts - e->ts <= TIMEOUT_MS)
            spent = by_user[i + 1]->ts - e->ts;
        const char *country = countries[e->country];
        if (country[0] == '\0' || strcmp(country, "-") == 0)
            country = "unknown";
        for (size_t w = 0; w < N_WINDOWS; w++)
            c[nc++] = (contribution_t){
                windows[w], brute_window_start(e->ts, windows[w]), e->url, country, e->user, spent};
    }
    qsort(c, nc, sizeof *c, cmp_contribution);
    agg_t *out = cl_xcalloc(nc + 1, sizeof *out);
    size_t m = 0;
    for (size_t i = 0; i < nc; i++) {
        bool same_group = i > 0 && c[i].window_ms == c[i - 1].window_ms &&
                          c[i].start == c[i - 1].start && c[i].url == c[i - 1].url &&
                          strcmp(c[i].country, c[i - 1].country) == 0;
        if (!same_group) {
            agg_t *a = &out[m++];
            a->window_ms = c[i].window_ms;
            a->start = c[i].start;
            a->url = urls[c[i].url];
            a->url_len = strlen(a->url);
            snprintf(a->country, sizeof a->country, "%s", c[i].country);
        }
        agg_t *a = &out[m - 1];
        a->clicks++;
        if (!same_group || strcmp(c[i].user, c[i - 1].user) != 0)
            a->users++;
        if (c[i].spent >= 0) {
            a->sum += (uint64_t)c[i].spent;
            a->samples++;
        }
    }
    free(c);
    free(by_user);
    qsort(out, m, sizeof *out, cmp_agg);
    *n_out = m;
    return out;
}

/* ---- Reading agg_stats ---- */

static void free_rows(void)
{
    for (size_t i = 0; i < S.n_rows; i++)
        free(S.row_strings[i]);
    free(S.row_strings);
    free(S.rows);
    S.rows = NULL;
    S.row_strings = NULL;
    S.n_rows = 0;
}

static void stats_row(unsigned int fields, const char *const *v, const unsigned long *len)
{
    if (fields != 9)
        return;
    S.rows = cl_xrealloc(S.rows, (S.n_rows + 1) * sizeof *S.rows);
    S.row_strings = cl_xrealloc(S.row_strings, (S.n_rows + 1) * sizeof *S.row_strings);
    agg_t *a = &S.rows[S.n_rows];
    char *url = cl_xstrndup(v[2], len[2]);
    S.row_strings[S.n_rows++] = url;
    a->window_ms = strtoull(v[0], NULL, 10);
    a->start = strtoll(v[1], NULL, 10);
    a->url = url;
    a->url_len = len[2];
    snprintf(a->country, sizeof a->country, "%s", v[3]);
    a->clicks = strtoull(v[4], NULL, 10);
    a->users = strtoull(v[5], NULL, 10);
    a->sum = strtoull(v[6], NULL, 10);
    a->samples = strtoull(v[7], NULL, 10);
    a->version = strtoull(v[8], NULL, 10);
}

static void read_stats(void)
{
    free_rows();
    query("read agg_stats",
          "SELECT window_ms, TIMESTAMPDIFF(MICROSECOND, TIMESTAMP'1970-01-01 00:00:00', "
          "window_start) DIV 1000, url, country, clicks, unique_users, time_spent_sum, "
          "time_spent_samples, version FROM agg_stats",
          stats_row);
}

static const agg_t *find_agg(const agg_t *rows, size_t n, const agg_t *key)
{
    return bsearch(key, rows, n, sizeof *rows, cmp_agg);
}

static bool same_values(const agg_t *a, const agg_t *b)
{
    return a->clicks == b->clicks && a->users == b->users && a->sum == b->sum &&
           a->samples == b->samples;
}

/* agg_stats (S.rows) equals the brute force; mismatches are printed. */
static void compare_with_brute_force(const char *what, agg_t **expected_out, size_t *n_out)
{
    size_t n;
    agg_t *expected = brute_force(&n);
    qsort(S.rows, S.n_rows, sizeof *S.rows, cmp_agg);
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        const agg_t *got = find_agg(S.rows, S.n_rows, &expected[i]);
        if (got == NULL || !same_values(got, &expected[i])) {
            if (bad++ < 10)
                printf("    expected %" PRIu64 " @%" PRId64 " %.*s %s: clicks %" PRIu64
                       " users %" PRIu64 " sum %" PRIu64 " samples %" PRIu64 "; got %s%" PRIu64
                       "/%" PRIu64 "/%" PRIu64 "/%" PRIu64 "\n",
                       expected[i].window_ms, expected[i].start, (int)expected[i].url_len,
                       expected[i].url, expected[i].country, expected[i].clicks, expected[i].users,
                       expected[i].sum, expected[i].samples, got == NULL ? "(missing) " : "",
                       got ? got->clicks : 0, got ? got->users : 0, got ? got->sum : 0,
                       got ? got->samples : 0);
        }
    }
    CHECK(bad == 0 && n == S.n_rows, "%s: agg_stats has %zu rows, brute force %zu, %zu differ",
          what, S.n_rows, n, bad);
    if (expected_out != NULL) {
        *expected_out = expected;
        *n_out = n;
    } else {
        free(expected);
    }
}

/* ---- Writing events ---- */

static void write_some(void);

static void on_batch(void *arg, const cl_store_batch_result_t *r)
{
    CL_UNUSED(arg);
    if (r->status != CL_OK)
        CHECK(false, "batch: %s", r->message);
    S.write_inflight--;
    S.write_done++;
    write_some();
}

#define BATCH_ROWS 5000
#define BENCH_USERS 20000
#define BENCH_URLS 2000
#define BENCH_SPAN (60 * DAY)

/* Bench event i: spread over 60 days, URLs skewed towards the first ones. */
static void bench_event(size_t i, size_t total, int64_t base, event_t *e, char *url_buf,
                        size_t url_size)
{
    memset(e, 0, sizeof *e);
    snprintf(e->key, sizeof e->key, "b:%zu", i);
    uint32_t user = rnd(BENCH_USERS);
    snprintf(e->user, sizeof e->user, "user-%" PRIu32, user);
    e->ts = base + (int64_t)((double)i / (double)total * (double)BENCH_SPAN) + rnd(60000);
    uint32_t u = rnd(BENCH_URLS);
    u = u * u / BENCH_URLS; /* skewed: a few URLs get most clicks */
    snprintf(url_buf, url_size, "https://shop.example/product/%" PRIu32, u);
    e->country = (int)rnd(N_COUNTRIES);
    e->time_spent = rnd(5) == 0 ? (int64_t)rnd(120000) : -1;
}

static void write_bench_batch(size_t from, size_t to)
{
    size_t n = to - from;
    event_t *ev = cl_xcalloc(n, sizeof *ev);
    char(*url)[64] = cl_xcalloc(n, sizeof *url);
    cl_store_row_t *rows = cl_xcalloc(n, sizeof *rows);
    for (size_t i = 0; i < n; i++) {
        bench_event(from + i, S.bench_events, T0 - BENCH_SPAN, &ev[i], url[i], sizeof url[i]);
        memset(&rows[i], 0, sizeof rows[i]);
        rows[i].row_key = ev[i].key;
        rows[i].row_key_len = strlen(ev[i].key);
        rows[i].user_id = ev[i].user;
        rows[i].ts_ms = ev[i].ts;
        rows[i].url = url[i];
        rows[i].url_len = strlen(url[i]);
        const char *c = countries[ev[i].country];
        if (c[0] != '\0' && c[0] != '-')
            snprintf(rows[i].country, sizeof rows[i].country, "%s", c);
        rows[i].time_spent_ms = ev[i].time_spent;
        rows[i].topic = "bench";
        rows[i].offset = (int64_t)(from + i);
    }
    char err[CL_ERR_LEN];
    if (cl_store_write_batch(S.store, rows, n, NULL, 0, on_batch, NULL, err) != CL_OK)
        CHECK(false, "write bench batch: %s", err);
    else
        S.write_inflight++;
    free(rows);
    free(url);
    free(ev);
}

static void write_some(void)
{
    char err[CL_ERR_LEN];
    while (S.write_inflight < 4 && S.write_next < S.write_end) {
        size_t from = S.write_next;
        size_t to = from + BATCH_ROWS < S.write_end ? from + BATCH_ROWS : S.write_end;
        S.write_next = to;
        if (S.write_bench) {
            write_bench_batch(from, to);
            continue;
        }
        cl_store_row_t *rows = cl_xcalloc(to - from, sizeof *rows);
        for (size_t i = from; i < to; i++)
            to_row(&S.events[i], &rows[i - from]);
        if (cl_store_write_batch(S.store, rows, to - from, NULL, 0, on_batch, NULL, err) != CL_OK)
            CHECK(false, "write batch: %s", err);
        else
            S.write_inflight++;
        free(rows);
    }
    if (S.write_inflight == 0 && S.write_next >= S.write_end)
        advance();
}

static void write_events(size_t from, size_t to, bool bench)
{
    S.write_next = from;
    S.write_end = to;
    S.write_bench = bench;
    write_some();
}

/* ---- Runs ---- */

static void on_run(void *arg, const cl_aggregator_run_result_t *r)
{
    CL_UNUSED(arg);
    S.last = *r;
    snprintf(S.last_message, sizeof S.last_message, "%s", r->message);
    S.last.message = S.last_message;
    note("run: status %d%s, %" PRIu64 " events claimed, %" PRIu64 " windows, %" PRIu64
         " events scanned, %" PRIu64 " rows changed, %" PRIu64 " ms %s",
         r->status, r->skipped_locked ? " (skipped: locked)" : "", r->events_claimed,
         r->windows_recomputed, r->events_scanned, r->rows_changed, r->duration_ms, r->message);
    advance();
}

static void run_now(void)
{
    char err[CL_ERR_LEN];
    if (cl_aggregator_run_now(S.agg, on_run, NULL, err) != CL_OK) {
        CHECK(false, "run_now: %s", err);
        advance();
    }
}

/* ---- Index read side ---- */

static void index_row(unsigned int fields, const char *const *v, const unsigned long *len)
{
    cl_aggregate_stat_t st;
    char err[CL_ERR_LEN];
    if (cl_aggregate_parse_stat(fields, v, len, &st, err) != CL_OK) {
        CHECK(false, "parse index row: %s", err);
        return;
    }
    S.indexed = cl_xrealloc(S.indexed, (S.n_indexed + 1) * sizeof *S.indexed);
    S.indexed[S.n_indexed].key = st.key;
    S.indexed[S.n_indexed].version = st.version;
    S.n_indexed++;
}

/* ---- Script ---- */

static void on_migrated(void *arg, const cl_store_migrate_result_t *r)
{
    CL_UNUSED(arg);
    CHECK(r->status == CL_OK, "migrate %d -> %d %s", r->from_version, r->to_version, r->message);
    advance();
}

static void on_other_event(cl_db_conn_t *conn, cl_db_conn_event_t ev, const cl_db_error_t *e,
                           void *arg)
{
    CL_UNUSED(conn);
    CL_UNUSED(arg);
    /* Only the outcome of the connect moves the script on: a later LOST
     * (the server restarted) must not. */
    if (S.step != 20)
        return;
    if (ev == CL_DB_CONN_EVENT_CONNECT_FAILED)
        CHECK(false, "second session: %s", e->message);
    advance();
}

static void on_other_done(void *arg, const cl_db_result_t *r)
{
    CL_UNUSED(arg);
    if (r->status != CL_OK)
        CHECK(false, "second session query: %s", r->message);
    advance();
}

static const cl_db_query_handlers_t other_handlers = {NULL, on_other_done};

static void on_closed(void *arg)
{
    CL_UNUSED(arg);
}

static int cancelled_status = 1;
static int cancelled_calls;

static void on_cancelled_run(void *arg, const cl_aggregator_run_result_t *r)
{
    CL_UNUSED(arg);
    cancelled_status = r->status;
    cancelled_calls++;
}

static void on_aggregator_closed(void *arg)
{
    CL_UNUSED(arg);
    S.agg = NULL;
    advance();
}

static void finish(void)
{
    if (S.agg != NULL)
        cl_aggregator_close(S.agg, on_closed, NULL);
    if (S.store != NULL)
        cl_store_close(S.store, on_closed, NULL);
    if (S.pool != NULL)
        cl_db_pool_close(S.pool, on_closed, NULL);
    if (S.other != NULL)
        cl_db_conn_close(S.other, on_closed, NULL);
    S.agg = NULL;
    S.store = NULL;
    S.pool = NULL;
    S.other = NULL;
}

static cl_aggregate_spec_t smoke_spec(void)
{
    cl_aggregate_spec_t spec = {windows, N_WINDOWS, TIMEOUT_MS, 0};
    return spec;
}

static void full_recompute(void)
{
    char err[CL_ERR_LEN];
    cl_aggregate_spec_t spec = smoke_spec();
    cl_buf_reset(&S.sql);
    cl_aggregate_full_recompute_sql(&S.sql, &spec, err);
    query("mark every window dirty", S.sql.data, NULL);
}

static void check_versions_after_late_events(agg_t *expected, size_t n)
{
    qsort(S.rows, S.n_rows, sizeof *S.rows, cmp_agg);
    size_t wrong = 0, bumped = 0, changed = 0;
    for (size_t i = 0; i < n; i++) {
        const agg_t *old_exp = find_agg(S.expected_before, S.n_expected_before, &expected[i]);
        const agg_t *old_row = find_agg(S.before, S.n_before, &expected[i]);
        const agg_t *now = find_agg(S.rows, S.n_rows, &expected[i]);
        bool should_change = old_exp == NULL || !same_values(old_exp, &expected[i]);
        uint64_t old_version = old_row != NULL ? old_row->version : 0;
        bool did_bump = now != NULL && now->version != old_version;
        changed += should_change;
        bumped += did_bump;
        if (now == NULL || did_bump != should_change || (did_bump && now->version <= old_version)) {
            if (wrong++ < 10)
                printf("    %" PRIu64 " @%" PRId64 " %.*s %s: version %" PRIu64 " -> %" PRIu64
                       ", values %s\n",
                       expected[i].window_ms, expected[i].start, (int)expected[i].url_len,
                       expected[i].url, expected[i].country, old_version, now ? now->version : 0,
                       should_change ? "changed" : "unchanged");
        }
    }
    CHECK(wrong == 0 && changed > 0,
          "late events: exactly the %zu rows whose values changed got a new version (%zu bumped)",
          changed, bumped);
    CHECK(S.last.rows_changed == changed, "the run reports %" PRIu64 " rows changed, expected %zu",
          S.last.rows_changed, changed);
}

/* Late events into hours 9 and 10, long closed: "late" clicked at 09:50
 * (no time spent) and next at 12:00, so 09:50 had no dwell time; a late
 * click at 10:00 gives it 10 minutes, which changes its own, older windows
 * too. A second late event lands alone in hour 3. */
static void add_late_events(void)
{
    event_t *e = add_event();
    snprintf(e->user, sizeof e->user, "late");
    e->ts = T0 + 10 * HOUR;
    e->url = 1;
    e->country = 1;
    e = add_event();
    snprintf(e->user, sizeof e->user, "late-2");
    e->ts = T0 + 3 * HOUR + 1234;
    e->url = 5;
    e->country = 3;
}

static void advance(void)
{
    char err[CL_ERR_LEN];
    char sql[512];
    switch (S.step++) {
    case 0:
        snprintf(sql, sizeof sql, "CREATE DATABASE IF NOT EXISTS %s", S.database);
        query_on(S.admin, "create database", sql, NULL);
        break;
    case 1: {
        cl_db_params_t p = S.params;
        p.database = S.database;
        cl_store_params_t sp = {.retry_min_ms = 50, .retry_max_ms = 2000};
        if (cl_db_pool_open(&S.loop, &p, 4, NULL, NULL, &S.pool, err) != CL_OK ||
            cl_store_new(&S.loop, S.pool, &sp, &S.store, err) != CL_OK) {
            CHECK(false, "open: %s", err);
            finish();
            return;
        }
        query("reset tables",
              "DROP TABLE IF EXISTS click_data, geo_data, user_agent_data, rejected_events, "
              "agg_pending, agg_dirty, agg_stats, clickloop_schema",
              NULL);
        break;
    }
    case 2:
        cl_store_migrate(S.store, on_migrated, NULL, err);
        break;
    case 3: {
        cl_db_params_t p = S.params;
        p.database = S.database;
        p.read_timeout_ms = 600000; /* a full recompute of the bench table */
        cl_aggregator_params_t ap = {
            .db = p, .spec = smoke_spec(), .interval_ms = 3600000, .on_run = NULL};
        if (cl_aggregator_new(&S.loop, &ap, &S.agg, err) != CL_OK) {
            CHECK(false, "aggregator: %s", err);
            finish();
            return;
        }
        note("step 1: known clickstream");
        generate_known_clickstream();
        /* One batch arrives out of order: the last rows first. */
        write_events(S.n_events / 2, S.n_events, false);
        break;
    }
    case 4:
        write_events(0, S.n_events / 2, false);
        break;
    case 5:
        note("%zu events stored", S.n_events);
        run_now();
        break;
    case 6:
        CHECK(S.last.status == CL_OK && S.last.events_claimed == S.n_events,
              "first run aggregated every event (%" PRIu64 ")", S.last.events_claimed);
        read_stats();
        break;
    case 7:
        compare_with_brute_force("first run", NULL, NULL);
        query("url_hash is SHA-256 of url",
              "SELECT COUNT(*) FROM agg_stats WHERE url_hash <> UNHEX(SHA2(url, 256)) "
              "OR version < 1700000000000000 OR needs_index <> 1 OR indexed_version <> 0",
              scalar_row);
        break;
    case 8:
        CHECK(S.scalar == 0, "every row has url_hash = SHA2(url), a time-based version, needs "
                             "indexing");
        cl_buf_reset(&S.sql);
        cl_aggregate_index_select_sql(&S.sql, 100000, NULL, err);
        query("index select", S.sql.data, index_row);
        break;
    case 9:
        CHECK(S.n_indexed == S.n_rows, "the index select returns %zu rows of %zu", S.n_indexed,
              S.n_rows);
        cl_buf_reset(&S.sql);
        if (S.n_indexed > 0)
            cl_aggregate_mark_indexed_sql(&S.sql, S.indexed, S.n_indexed, err);
        else
            cl_buf_append_str(&S.sql, "DO 0");
        query("mark indexed", S.sql.data, NULL);
        break;
    case 10:
        query("nothing needs indexing",
              "SELECT COUNT(*) FROM agg_stats WHERE needs_index <> 0 OR indexed_version <> version",
              scalar_row);
        break;
    case 11:
        CHECK(S.scalar == 0, "after marking, no row needs indexing (%lld do)", S.scalar);
        note("step 2: a run with nothing new, then a redelivered batch");
        run_now();
        break;
    case 12:
        CHECK(S.last.status == CL_OK && S.last.events_claimed == 0 &&
                  S.last.windows_recomputed == 0 && S.last.rows_changed == 0,
              "an idle run does nothing");
        write_events(0, 50, false);
        break;
    case 13:
        run_now();
        break;
    case 14:
        /* Claimed again, found in agg_done: not counted twice. */
        CHECK(S.last.status == CL_OK && S.last.events_claimed == 50 &&
                  S.last.windows_recomputed == 0 && S.last.rows_changed == 0,
              "a redelivered batch is claimed and changes no row");
        note("step 3: late events into old windows");
        read_stats();
        break;
    case 15: {
        S.before = S.rows;
        S.n_before = S.n_rows;
        qsort(S.before, S.n_before, sizeof *S.before, cmp_agg);
        S.rows = NULL;
        for (size_t i = 0; i < S.n_before; i++)
            S.row_strings[i] = NULL; /* now owned through S.before */
        free(S.row_strings);
        S.row_strings = NULL;
        S.n_rows = 0;
        S.expected_before = brute_force(&S.n_expected_before);
        size_t first = S.n_events;
        add_late_events();
        write_events(first, S.n_events, false);
        break;
    }
    case 16:
        run_now();
        break;
    case 17:
        read_stats();
        break;
    case 18: {
        agg_t *expected;
        size_t n;
        compare_with_brute_force("after late events", &expected, &n);
        check_versions_after_late_events(expected, n);
        free(expected);
        query("rows needing indexing again", "SELECT COUNT(*) FROM agg_stats WHERE needs_index = 1",
              scalar_row);
        break;
    }
    case 19:
        CHECK(S.scalar == (long long)S.last.rows_changed,
              "exactly the changed rows need indexing again (%lld)", S.scalar);
        note("step 4: another session holds the lock");
        {
            cl_db_params_t p = S.params;
            p.database = S.database;
            if (cl_db_conn_new(&S.loop, &p, on_other_event, NULL, &S.other, err) != CL_OK ||
                cl_db_conn_connect(S.other, err) != CL_OK)
                CHECK(false, "second session: %s", err);
        }
        break;
    case 20:
        if (cl_db_conn_query(S.other, cl_aggregate_lock_sql(), strlen(cl_aggregate_lock_sql()),
                             &other_handlers, NULL, err) != CL_OK)
            CHECK(false, "lock from a second session: %s", err);
        break;
    case 21:
        run_now();
        break;
    case 22:
        CHECK(S.last.status == CL_OK && S.last.skipped_locked,
              "the run is skipped while another session holds the lock");
        if (cl_db_conn_query(S.other, cl_aggregate_unlock_sql(), strlen(cl_aggregate_unlock_sql()),
                             &other_handlers, NULL, err) != CL_OK)
            CHECK(false, "unlock from a second session: %s", err);
        break;
    case 23:
        cl_db_conn_close(S.other, on_closed, NULL);
        S.other = NULL;
        run_now();
        break;
    case 24:
        CHECK(S.last.status == CL_OK && !S.last.skipped_locked, "and runs once it is released");
        if (!S.bench) {
            S.step = 90;
            advance();
            return;
        }
        note("step 5: bench with %zu events over 60 days", S.bench_events);
        query("empty tables for the bench",
              "DELETE FROM click_data; DELETE FROM geo_data; DELETE FROM agg_pending; "
              "DELETE FROM agg_stats; DELETE FROM agg_dirty",
              NULL);
        break;
    case 25:
        S.bench_load_ms = cl_now_ms();
        write_events(0, S.bench_events, true);
        break;
    case 26:
        note("stored %zu events in %.1f s", S.bench_events,
             (double)(cl_now_ms() - S.bench_load_ms) / 1000.0);
        /* As if all of it had been aggregated: the bench times what follows. */
        query("forget the queue", "TRUNCATE agg_pending; ANALYZE TABLE click_data, geo_data", NULL);
        break;
    case 27:
        full_recompute();
        break;
    case 28:
        S.full_ms = cl_now_ms();
        run_now();
        break;
    case 29:
        S.full_ms = cl_now_ms() - S.full_ms;
        CHECK(S.last.status == CL_OK,
              "full recompute: %" PRIu64 " windows, %" PRIu64 " events scanned, %" PRIu64
              " rows, %.1f s (marking included)",
              S.last.windows_recomputed, S.last.events_scanned, S.last.rows_changed,
              (double)S.full_ms / 1000.0);
        cl_buf_reset(&S.sql);
        cl_buf_appendf(&S.sql,
                       "SELECT SUM(s <> (SELECT COUNT(*) FROM click_data)) + (COUNT(*) <> %zu) "
                       "FROM (SELECT window_ms, SUM(clicks) s FROM agg_stats GROUP BY window_ms) t",
                       N_WINDOWS);
        query("clicks per window size add up to the events", S.sql.data, scalar_row);
        break;
    case 30:
        CHECK(S.scalar == 0, "every window size counts every event once");
        /* 1,000 new events in the last minutes of the stream. */
        S.write_bench = true;
        {
            size_t base = S.bench_events;
            S.bench_events += 1000;
            rng_state ^= 0x1234;
            S.write_next = base;
            S.write_end = base + 1000;
            /* bench_event places event i at i/total of the span: the new ones land at the end. */
            write_some();
        }
        break;
    case 31:
        run_now();
        break;
    case 32:
        S.incr_ms = S.last.duration_ms;
        CHECK(S.last.status == CL_OK && S.last.events_claimed == 1000,
              "incremental run after 1000 recent events: %" PRIu64 " windows, %" PRIu64
              " events scanned, %" PRIu64 " rows, %" PRIu64 " ms",
              S.last.windows_recomputed, S.last.events_scanned, S.last.rows_changed,
              S.last.duration_ms);
        {
            /* 990 recent events and 10 late ones spread over the 60 days. */
            cl_buf_reset(&S.sql);
            cl_buf_appendf(&S.sql,
                           "INSERT INTO click_data (row_key, user_id, event_time, url, "
                           "kafka_topic, kafka_partition, kafka_offset) "
                           "SELECT CONCAT('late:', seq), CONCAT('user-', seq * 7), "
                           "TIMESTAMP'1970-01-01 00:00:00' + INTERVAL (%" PRId64
                           " - seq * 5 * 86400000 - 3600000) * 1000 MICROSECOND, "
                           "'https://shop.example/product/1', 'bench', 1, seq "
                           "FROM seq_1_to_10; "
                           "INSERT INTO agg_pending SELECT row_key, user_id, event_time "
                           "FROM click_data WHERE row_key LIKE 'late:%%'",
                           T0);
            query("10 late events", S.sql.data, NULL);
        }
        break;
    case 33: {
        size_t base = S.bench_events;
        S.bench_events += 990;
        S.write_bench = true;
        S.write_next = base;
        S.write_end = base + 990;
        write_some();
        break;
    }
    case 34:
        run_now();
        break;
    case 35:
        S.incr_late_ms = S.last.duration_ms;
        CHECK(S.last.status == CL_OK && S.last.events_claimed == 1000,
              "incremental run after 990 recent + 10 late events: %" PRIu64 " windows, %" PRIu64
              " events scanned, %" PRIu64 " rows, %" PRIu64 " ms",
              S.last.windows_recomputed, S.last.events_scanned, S.last.rows_changed,
              S.last.duration_ms);
        note("BENCH full recompute %.1f s; incremental (1000 recent) %.3f s = %.1f%%; "
             "incremental (990 recent + 10 late) %.3f s = %.1f%%",
             (double)S.full_ms / 1000.0, (double)S.incr_ms / 1000.0,
             100.0 * (double)S.incr_ms / (double)S.full_ms, (double)S.incr_late_ms / 1000.0,
             100.0 * (double)S.incr_late_ms / (double)S.full_ms);
        S.step = 90;
        advance();
        break;
    case 90:
        /* Closing during a run cancels it; its callback still runs once. */
        if (cl_aggregator_run_now(S.agg, on_cancelled_run, NULL, err) != CL_OK)
            CHECK(false, "run before close: %s", err);
        cl_aggregator_close(S.agg, on_aggregator_closed, NULL);
        break;
    case 91:
        CHECK(cancelled_calls == 1 && cancelled_status == CL_ERR_RETRY,
              "closing cancels the run in progress (%d call, status %d)", cancelled_calls,
              cancelled_status);
        S.step = 100;
        advance();
        break;
    case 100:
        finish();
        if (!S.keep) {
            snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s", S.database);
            query_on(S.admin, "drop database", sql, NULL);
        } else {
            advance();
        }
        break;
    case 101:
        cl_db_pool_close(S.admin, on_closed, NULL);
        S.admin = NULL;
        break;
    default:
        break;
    }
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"host", required_argument, NULL, 'h'},
        {"port", required_argument, NULL, 'P'},
        {"user", required_argument, NULL, 'u'},
        {"password", required_argument, NULL, 'p'},
        {"database", required_argument, NULL, 'd'},
        {"events", required_argument, NULL, 'n'},
        {"no-bench", no_argument, NULL, 'B'},
        {"keep", no_argument, NULL, 'k'},
        {NULL, 0, NULL, 0},
    };
    S.params = (cl_db_params_t){
        .host = "127.0.0.1",
        .port = 13306,
        .user = "clickloop",
        .password = "clickloop",
        .database = "information_schema",
        .connect_timeout_ms = 5000,
        .read_timeout_ms = 60000,
        .write_timeout_ms = 60000,
        .backoff_min_ms = 100,
        .backoff_max_ms = 2000,
    };
    S.database = "clickloop_aggsmoke";
    S.bench = true;
    S.bench_events = 1000000;
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'h':
            S.params.host = optarg;
            break;
        case 'P':
            S.params.port = (unsigned)atoi(optarg);
            break;
        case 'u':
            S.params.user = optarg;
            break;
        case 'p':
            S.params.password = optarg;
            break;
        case 'd':
            S.database = optarg;
            break;
        case 'n':
            S.bench_events = (size_t)strtoull(optarg, NULL, 10);
            break;
        case 'B':
            S.bench = false;
            break;
        case 'k':
            S.keep = true;
            break;
        default:
            fprintf(stderr, "usage: agg_smoke [--host H] [--port P] [--user U] [--password W] "
                            "[--database clickloop_NAME] [--events N] [--no-bench] [--keep]\n");
            return 2;
        }
    }
    if (strncmp(S.database, "clickloop_", 10) != 0) {
        fprintf(stderr, "agg_smoke: the database name must start with clickloop_ (it is "
                        "dropped at the end)\n");
        return 2;
    }
    S.t0 = cl_now_ms();
    cl_buf_init(&S.sql);
    mysql_library_init(0, NULL, NULL);
    uv_loop_init(&S.loop);
    char err[CL_ERR_LEN];
    if (cl_db_pool_open(&S.loop, &S.params, 1, NULL, NULL, &S.admin, err) != CL_OK) {
        fprintf(stderr, "agg_smoke: %s\n", err);
        return 1;
    }
    advance();
    uv_run(&S.loop, UV_RUN_DEFAULT);
    int closed = uv_loop_close(&S.loop);
    CHECK(closed == 0, "the loop closed cleanly");
    free_rows();
    for (size_t i = 0; i < S.n_before; i++)
        free((char *)S.before[i].url);
    free(S.before);
    free(S.expected_before);
    free(S.indexed);
    free(S.events);
    cl_buf_free(&S.sql);
    mysql_library_end();
    printf("%s: %d check(s) failed\n", S.failures == 0 ? "OK" : "FAILED", S.failures);
    return S.failures == 0 ? 0 : 1;
}

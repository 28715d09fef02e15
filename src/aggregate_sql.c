/* aggregate_sql: the pure builders of the aggregation SQL (the runner that
 * issues it is aggregate.c); see include/clickloop/aggregate_sql.h for the
 * rules.
 *
 * How a run computes, in SQL (cl_aggregate_run_sql):
 *   agg_run_claim   the pending events
 *   agg_run_prev    the times of the same users' previous events where a
 *                   claimed event can change their dwell time, found by LAG
 *                   over the session timeout before each claimed event
 *                   (agg_run_prev_range)
 *   agg_run_marks   windows an operator marked in agg_dirty
 *   agg_run_dirty   every (size, start) window to recompute, once the
 *                   frozen ones (retention, see aggregate.h) are taken out
 *                   and counted in @cl_agg_windows_frozen
 *   agg_run_range   those windows, each stretched by one session timeout
 *                   (the next click of an event near the end may lie past
 *                   it), merged into disjoint ranges
 *   agg_run_events  the events in those ranges with their time spent (LEAD
 *                   over the user's events) and country
 *   agg_run_result  the aggregates of the dirty windows that differ from
 *                   agg_stats
 * then agg_stats is upserted from agg_run_result and the claimed rows are
 * deleted, all in one transaction.
 *
 * Quirks defended against:
 * - Date arithmetic that leaves the DATETIME range is an error in strict
 *   mode (ER_DATETIME_FUNCTION_OVERFLOW), not a NULL: a single event at
 *   9999-12-31 would fail every run forever. Times are therefore computed in
 *   epoch milliseconds and converted back only when clamped into range, and
 *   window ends are inclusive (the last millisecond), which always exists.
 * - A join with bounds taken from a table ("range checked for each record")
 *   always walks the event_time index and looks every row up in the
 *   clustered index, ten times slower than a table scan when the ranges
 *   cover most of the table (a full recompute). The event scan is therefore
 *   a prepared statement whose WHERE holds the ranges as literals, and the
 *   optimizer picks range scans or a table scan by cost.
 * - A correlated lookup of each claimed event's predecessor through
 *   idx_click_user_time uses only its user_id part ("ref"; the event_time
 *   bounds are filtered, not ranged, whatever the form: MAX, ORDER BY ...
 *   LIMIT 1, a join, BETWEEN on user_id), so it reads every event of the
 *   user: over 6 minutes for 1,000 events of a user with 200,000. The
 *   predecessors are therefore found by a range scan like the main one.
 * - In `INSERT ... SELECT ... FROM a JOIN b ON ... ON DUPLICATE KEY`, the
 *   parser takes the second ON for the join: the SELECT is wrapped in a
 *   derived table.
 * - Named locks outlive ROLLBACK and failed statements: the lock is released
 *   by its own query after every run, whatever the run's outcome. */
#include "clickloop/aggregate_sql.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clickloop/retention.h"
#include "clickloop/store.h"
#include "clickloop/utf8.h"

/* ---- Window arithmetic ----------------------------------------------------- */

int cl_aggregate_spec_check(const cl_aggregate_spec_t *spec, char err[CL_ERR_LEN])
{
    if (spec->window_count == 0 || spec->windows_ms == NULL)
        return cl_errorf(err, "aggregate: at least one window size is needed");
    for (size_t i = 0; i < spec->window_count; i++) {
        uint64_t w = spec->windows_ms[i];
        if (w == 0 || w > CL_AGG_MAX_WINDOW_MS)
            return cl_errorf(
                err, "aggregate: window size %" PRIu64 " ms is outside 1 ms .. %" PRIu64 " ms", w,
                CL_AGG_MAX_WINDOW_MS);
        for (size_t j = 0; j < i; j++) {
            if (spec->windows_ms[j] == w)
                return cl_errorf(err, "aggregate: window size %" PRIu64 " ms is listed twice", w);
        }
    }
    if (spec->session_timeout_ms == 0 || spec->session_timeout_ms > CL_AGG_MAX_SESSION_TIMEOUT_MS)
        return cl_errorf(
            err, "aggregate: session timeout %" PRIu64 " ms is outside 1 ms .. %" PRIu64 " ms",
            spec->session_timeout_ms, CL_AGG_MAX_SESSION_TIMEOUT_MS);
    return CL_OK;
}

int64_t cl_aggregate_frozen_before_ms(int64_t now_ms, uint32_t raw_days)
{
    return raw_days == 0 ? CL_AGG_NOTHING_FROZEN
                         : cl_retention_cutoff_ms(now_ms, raw_days) + CL_AGG_RETENTION_MARGIN_MS;
}

/* ---- SQL pieces ------------------------------------------------------------ */

#define EPOCH "TIMESTAMP'1970-01-01 00:00:00'"
#define LOCK_NAME "CONCAT('clickloop.aggregate.', DATABASE())"
#define TEXT_TABLE " DEFAULT CHARSET=utf8mb4 COLLATE=" CL_STORE_TEXT_COLLATION
#define WORK_TABLES                                                                                \
    "agg_run_claim, agg_run_isle, agg_run_nb, agg_run_lead, agg_run_aff, agg_run_cell, "           \
    "agg_run_newuser, agg_run_delta, agg_run_marks, agg_run_dirty, agg_run_range, "                \
    "agg_run_events, agg_run_result"

/* The events of a run, of click_data c (see append_neighbourhood): not
 * pending (aggregated), pending and aggregated (delivered again), or claimed.
 * k is the claim, d the agg_done row of a pending event (NULL for a new
 * one). */
#define SET_FILTER                                                                                 \
    "LEFT JOIN agg_run_claim k ON k.row_key = c.row_key "                                          \
    "LEFT JOIN agg_pending p ON p.row_key = c.row_key "                                            \
    "LEFT JOIN agg_done d ON d.row_key = p.row_key "                                               \
    "WHERE (p.row_key IS NULL OR d.row_key IS NOT NULL OR k.row_key IS NOT NULL)"

const char *cl_aggregate_lock_sql(void)
{
    return "SELECT GET_LOCK(" LOCK_NAME ", 0)";
}

const char *cl_aggregate_unlock_sql(void)
{
    return "DO RELEASE_LOCK(" LOCK_NAME ")";
}

void cl_aggregate_sql_ms(cl_buf_t *b, const char *datetime)
{
    cl_buf_appendf(b, "(TIMESTAMPDIFF(MICROSECOND, " EPOCH ", %s) DIV 1000)", datetime);
}

/* DATETIME of a millisecond expression that is known to be in range. */
static void append_datetime_open(cl_buf_t *b)
{
    cl_buf_append_str(b, EPOCH " + INTERVAL (");
}
static void append_datetime_close(cl_buf_t *b)
{
    cl_buf_append_str(b, ") * 1000 MICROSECOND");
}

void cl_aggregate_sql_datetime(cl_buf_t *b, int64_t ms)
{
    append_datetime_open(b);
    cl_buf_appendf(b, "%" PRId64, ms);
    append_datetime_close(b);
}

/* The start (DATETIME) of the window of size `size` (a BIGINT expression)
 * holding `datetime`: floor(ms / size) * size; MOD keeps the dividend's sign. */
static void append_window_start(cl_buf_t *b, const char *datetime, const char *size)
{
    append_datetime_open(b);
    cl_buf_append_str(b, "(");
    cl_aggregate_sql_ms(b, datetime);
    cl_buf_appendf(b, " DIV %s - (", size);
    cl_aggregate_sql_ms(b, datetime);
    cl_buf_appendf(b, " MOD %s < 0)) * %s", size, size);
    append_datetime_close(b);
}

/* (SELECT <w1> AS window_ms UNION ALL SELECT <w2> ...) */
static void append_sizes(cl_buf_t *b, const cl_aggregate_spec_t *spec)
{
    for (size_t i = 0; i < spec->window_count; i++)
        cl_buf_appendf(b, "%s%" PRIu64 "%s", i == 0 ? "(SELECT " : " UNION ALL SELECT ",
                       spec->windows_ms[i], i == 0 ? " AS window_ms" : "");
    cl_buf_append_char(b, ')');
}

/* Statements are separated by ";\n"; `count` numbers them for the caller. */
static void begin_statement(cl_buf_t *b, unsigned int *count)
{
    if (*count > 0)
        cl_buf_append_str(b, ";\n");
    (*count)++;
}

static void statement(cl_buf_t *b, unsigned int *count, const char *text)
{
    begin_statement(b, count);
    cl_buf_append_str(b, text);
}

/* ---- The run --------------------------------------------------------------- */

/* Gaps and islands: merge the intervals [s, e] (DATETIME columns of
 * `intervals`, a derived table) into ranges of `table`; in (s, e) order an
 * interval starts a new range unless it begins at most 1 ms after the end of
 * the interval before it. The ranges only ever serve as a predicate (an OR of
 * BETWEENs), so every island covering its members is enough: for intervals of
 * one length (the previous-event ranges) this merges exactly, for mixed
 * lengths it may leave some ranges overlapping, which costs nothing.
 * Comparing with the previous row (LAG) rather than with the running maximum
 * of all earlier ends matters: MariaDB 10.11 computes
 * MAX() OVER (ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) in time
 * quadratic in the rows (40 000 claimed events: 30 s; 1 000 000: hours),
 * LAG in linear time (1 000 000 rows: about 4 s).
 * The intervals are made distinct first, so that (s, e) orders them totally:
 * the LAG and the running SUM are two sorts, and with two equal intervals
 * (two users' events in one millisecond) they could order the pair
 * differently; the interval that does not start an island then came first,
 * two islands began at one s, and the insert into the range table failed
 * on its key in every run. */
static void append_merge_ranges(cl_buf_t *b, unsigned int *count, const char *table,
                                const char *intervals)
{
    begin_statement(b, count);
    cl_buf_appendf(b,
                   "INSERT INTO %s (range_start, range_last) SELECT MIN(s), MAX(e) FROM ("
                   "SELECT s, e, SUM(starts) OVER (ORDER BY s, e ROWS UNBOUNDED PRECEDING) "
                   "AS island FROM (SELECT s, e, CASE WHEN ",
                   table);
    cl_aggregate_sql_ms(b, "s");
    cl_buf_append_str(b, " <= LAG(");
    cl_aggregate_sql_ms(b, "e");
    cl_buf_appendf(b,
                   ") OVER (ORDER BY s, e) + 1 "
                   "THEN 0 ELSE 1 END AS starts FROM (SELECT DISTINCT s, e FROM %s w) d) x) y "
                   "GROUP BY island",
                   intervals);
}

/* Run `head` + "<c.event_time in the ranges of range_table>" + `tail` as a
 * prepared statement: the ranges go into its text as literals (see the top
 * of this file), assembled by the server. */
static void append_range_scan(cl_buf_t *b, unsigned int *count, const char *name, const char *head,
                              const char *range_table, const char *tail)
{
    size_t head_len = strlen(head), tail_len = strlen(tail);
    char *head_literal = cl_xmalloc(2 * head_len + 1);
    char *tail_literal = cl_xmalloc(2 * tail_len + 1);
    cl_db_escape_string(head_literal, head, head_len);
    cl_db_escape_string(tail_literal, tail, tail_len);
    begin_statement(b, count);
    cl_buf_appendf(b,
                   "SET @%s_sql = CONCAT('%s', (SELECT COALESCE(GROUP_CONCAT("
                   "CONCAT('c.event_time BETWEEN ''', range_start, ''' AND ''', range_last, "
                   "'''') ORDER BY range_start SEPARATOR ' OR '), 'FALSE') FROM %s), '%s')",
                   name, head_literal, range_table, tail_literal);
    free(head_literal);
    free(tail_literal);
    begin_statement(b, count);
    cl_buf_appendf(b, "PREPARE %s FROM @%s_sql", name, name);
    begin_statement(b, count);
    cl_buf_appendf(b, "EXECUTE %s", name);
    begin_statement(b, count);
    cl_buf_appendf(b, "DEALLOCATE PREPARE %s", name);
}

static const char *const create_work_tables[] = {
    "CREATE TEMPORARY TABLE agg_run_claim (row_key VARBINARY(400) NOT NULL, "
    "user_id VARCHAR(256) NOT NULL, event_time DATETIME(3) NOT NULL, "
    "PRIMARY KEY (row_key))" TEXT_TABLE,
    "CREATE TEMPORARY TABLE agg_run_isle (user_id VARCHAR(256) NOT NULL, "
    "lo DATETIME(3) NOT NULL, hi DATETIME(3) NOT NULL, PRIMARY KEY (user_id, lo))" TEXT_TABLE,
    "CREATE TEMPORARY TABLE agg_run_nb (row_key VARBINARY(400) NOT NULL, "
    "user_id VARCHAR(256) NOT NULL, event_time DATETIME(3) NOT NULL, "
    "is_new TINYINT NOT NULL, PRIMARY KEY (row_key))" TEXT_TABLE,
    "CREATE TEMPORARY TABLE agg_run_lead (row_key VARBINARY(400) NOT NULL, "
    "is_new TINYINT NOT NULL, new_spent BIGINT NULL, old_spent BIGINT NULL, "
    "PRIMARY KEY (row_key))",
    "CREATE TEMPORARY TABLE agg_run_aff (row_key VARBINARY(400) NOT NULL, "
    "user_id VARCHAR(256) NOT NULL, event_time DATETIME(3) NOT NULL, is_new TINYINT NOT NULL, "
    "url_hash BINARY(32) NOT NULL, country VARCHAR(16) NOT NULL, d_sum BIGINT NOT NULL, "
    "d_samples BIGINT NOT NULL, PRIMARY KEY (row_key))" TEXT_TABLE,
    "CREATE TEMPORARY TABLE agg_run_cell (window_ms BIGINT NOT NULL, "
    "window_start DATETIME(3) NOT NULL, url_hash BINARY(32) NOT NULL, "
    "country VARCHAR(16) NOT NULL, user_id VARCHAR(256) NOT NULL, "
    "row_key VARBINARY(400) NOT NULL, is_new TINYINT NOT NULL, d_sum BIGINT NOT NULL, "
    "d_samples BIGINT NOT NULL, PRIMARY KEY (row_key, window_ms), "
    "KEY (window_ms, window_start))" TEXT_TABLE,
    "CREATE TEMPORARY TABLE agg_run_newuser (window_start DATETIME(3) NOT NULL, "
    "window_ms BIGINT NOT NULL, url_hash BINARY(32) NOT NULL, country VARCHAR(16) NOT NULL, "
    "user_id VARCHAR(256) NOT NULL, "
    "PRIMARY KEY (window_start, window_ms, url_hash, country, user_id))" TEXT_TABLE,
    "CREATE TEMPORARY TABLE agg_run_delta (window_ms BIGINT NOT NULL, "
    "window_start DATETIME(3) NOT NULL, url_hash BINARY(32) NOT NULL, "
    "country VARCHAR(16) NOT NULL, clicks BIGINT NOT NULL, unique_users BIGINT NOT NULL, "
    "time_spent_sum DECIMAL(38,0) NOT NULL, time_spent_samples BIGINT NOT NULL, "
    "any_key VARBINARY(400) NOT NULL, "
    "PRIMARY KEY (window_ms, window_start, url_hash, country))" TEXT_TABLE,
    "CREATE TEMPORARY TABLE agg_run_marks (window_ms BIGINT NOT NULL, "
    "window_start DATETIME(3) NOT NULL, marked_at DATETIME(6) NOT NULL, "
    "PRIMARY KEY (window_ms, window_start))",
    "CREATE TEMPORARY TABLE agg_run_dirty (window_ms BIGINT NOT NULL, "
    "window_start DATETIME(3) NOT NULL, window_last DATETIME(3) NOT NULL, "
    "PRIMARY KEY (window_ms, window_start))",
    "CREATE TEMPORARY TABLE agg_run_range (range_start DATETIME(3) NOT NULL, "
    "range_last DATETIME(3) NOT NULL, PRIMARY KEY (range_start))",
    "CREATE TEMPORARY TABLE agg_run_events (row_key VARBINARY(400) NOT NULL, "
    "user_id VARCHAR(256) NOT NULL, event_time DATETIME(3) NOT NULL, "
    "url_hash BINARY(32) NOT NULL, country VARCHAR(16) NOT NULL, spent_ms BIGINT NULL, "
    "PRIMARY KEY (row_key), KEY (event_time))" TEXT_TABLE,
    "CREATE TEMPORARY TABLE agg_run_result (window_ms BIGINT NOT NULL, "
    "window_start DATETIME(3) NOT NULL, url_hash BINARY(32) NOT NULL, "
    "country VARCHAR(16) NOT NULL, clicks BIGINT NOT NULL, unique_users BIGINT NOT NULL, "
    "time_spent_sum DECIMAL(38,0) NOT NULL, time_spent_samples BIGINT NOT NULL, "
    "any_key VARBINARY(400) NOT NULL, "
    "PRIMARY KEY (window_ms, window_start, url_hash, country))" TEXT_TABLE,
};

/* The claim: at most `limit` pending events (0: none), in key order, leaving
 * out the ones held after failing alone (agg_held). */
static void append_claim(cl_buf_t *b, unsigned int *count, size_t limit)
{
    if (limit == 0)
        return;
    begin_statement(b, count);
    cl_buf_appendf(b,
                   "INSERT INTO agg_run_claim (row_key, user_id, event_time) "
                   "SELECT p.row_key, p.user_id, p.event_time FROM agg_pending p "
                   "WHERE NOT EXISTS (SELECT 1 FROM agg_held h WHERE h.row_key = p.row_key) "
                   "ORDER BY p.row_key LIMIT %zu",
                   limit);
}

static void append_claim_marks(cl_buf_t *b, unsigned int *count, size_t limit)
{
    if (limit == 0)
        return;
    begin_statement(b, count);
    /* Newest first: recent windows are the ones people look at. */
    cl_buf_appendf(b,
                   "INSERT INTO agg_run_marks (window_ms, window_start, marked_at) "
                   "SELECT window_ms, window_start, marked_at FROM agg_dirty "
                   "ORDER BY window_start DESC, window_ms LIMIT %zu",
                   limit);
}

/* The bound retention recorded (retention_state, see retention.h) plus the
 * margin, in ms: a scalar subquery, NULL while there is no row. A plain read
 * (READ COMMITTED, no lock), so it never waits for retention's upsert. */
static void append_pruned_bound(cl_buf_t *b)
{
    cl_buf_append_str(b, "(SELECT ");
    cl_aggregate_sql_ms(b, "pruned_before");
    cl_buf_appendf(b, " + %" PRId64 " FROM retention_state WHERE id = 1)",
                   CL_AGG_RETENTION_MARGIN_MS);
}

/* @cl_agg_frozen_before: windows starting before it (ms) are frozen; the
 * larger of frozen_before_ms (the current policy) and the bound retention
 * recorded, which still holds after raw_days was raised or retention
 * switched off (frozen_before_ms CL_AGG_NOTHING_FROZEN): the table is read
 * on every run. With neither it is NULL and nothing compares below it. The
 * comparison is in milliseconds, so any bound works, in the DATETIME range
 * or not. Variables outlive the run in the session: all are set on every
 * run. */
static void append_frozen_bound(cl_buf_t *b, unsigned int *count, int64_t frozen_before_ms)
{
    begin_statement(b, count);
    cl_buf_append_str(b, "SET @cl_agg_frozen_before = ");
    if (frozen_before_ms == CL_AGG_NOTHING_FROZEN) {
        append_pruned_bound(b);
    } else {
        /* GREATEST is NULL if an argument is: no row leaves the policy's bound. */
        cl_buf_appendf(b, "GREATEST(%" PRId64 ", COALESCE(", frozen_before_ms);
        append_pruned_bound(b);
        cl_buf_appendf(b, ", %" PRId64 "))", frozen_before_ms);
    }
}

/* "<later> - <earlier>" in ms, on two DATETIME expressions. */
static void append_gap(cl_buf_t *b, const char *later, const char *earlier)
{
    cl_buf_append_str(b, "(");
    cl_aggregate_sql_ms(b, later);
    cl_buf_append_str(b, " - ");
    cl_aggregate_sql_ms(b, earlier);
    cl_buf_append_str(b, ")");
}

/* IF(gap <= timeout, gap, NULL): the dwell time from `earlier` to `later`
 * (NULL when later is NULL or too far). */
static void append_dwell(cl_buf_t *b, const char *later, const char *earlier, uint64_t timeout_ms)
{
    cl_buf_append_str(b, "IF(");
    append_gap(b, later, earlier);
    cl_buf_appendf(b, " <= %" PRIu64 ", ", timeout_ms);
    append_gap(b, later, earlier);
    cl_buf_append_str(b, ", NULL)");
}

/* A DATETIME `datetime` moved by `delta_ms`, clamped into the DATETIME
 * range. */
static void append_moved(cl_buf_t *b, const char *datetime, int64_t delta_ms)
{
    append_datetime_open(b);
    cl_buf_appendf(b, "%s(", delta_ms < 0 ? "GREATEST" : "LEAST");
    cl_aggregate_sql_ms(b, datetime);
    cl_buf_appendf(b, " + (%" PRId64 "), %" PRId64 ")", delta_ms,
                   delta_ms < 0 ? CL_DATETIME_MIN_MS : CL_DATETIME_MAX_MS);
    append_datetime_close(b);
}

/* The neighbourhood of the claimed events: each user's stored events within
 * one session timeout of one of the user's claimed events. Only there can a
 * claimed event find its next click, or be the next click of an earlier
 * one. The intervals [t - timeout, t + timeout] of one user are merged into
 * islands (gaps and islands by LAG; the intervals are distinct and, being
 * of one length up to the clamping at the ends of the DATETIME range, their
 * ends grow with their starts, so the previous end is the running maximum
 * and the islands are disjoint). Each island is then one index range of
 * idx_click_user_time: the join compares user_id by >= and <=, not =, which
 * keeps MariaDB from a "ref" lookup on the user_id part alone (that walks
 * every event of the user) and makes it plan a range per island ("range
 * checked for each record"). The set the run works on is the aggregated
 * events (agg_done) plus the claimed ones that are new; other pending
 * events, stored meanwhile or not claimed, are left out everywhere, as if
 * they had not arrived yet. An event that is not pending is aggregated
 * (SET_FILTER): agg_done is looked up only for pending ones (through the
 * pending row's key, NULL otherwise, which skips the lookup), to tell a
 * redelivered, aggregated event from a new one. agg_done grows with
 * click_data and outgrows the buffer pool; agg_pending stays small and
 * cached: with 10 000 000 events stored and a 256 MiB buffer pool, looking
 * every neighbour up in agg_done took 2.4 s of a 2.9 s run of 1 000 events. */
static void append_neighbourhood(cl_buf_t *b, unsigned int *count, uint64_t timeout_ms)
{
    int64_t t = (int64_t)timeout_ms;
    begin_statement(b, count);
    cl_buf_append_str(b, "INSERT INTO agg_run_isle (user_id, lo, hi) "
                         "SELECT user_id, MIN(s), MAX(e) FROM ("
                         "SELECT user_id, s, e, SUM(starts) OVER (PARTITION BY user_id "
                         "ORDER BY s, e ROWS UNBOUNDED PRECEDING) AS island FROM ("
                         "SELECT user_id, s, e, CASE WHEN ");
    cl_aggregate_sql_ms(b, "s");
    cl_buf_append_str(b, " <= LAG(");
    cl_aggregate_sql_ms(b, "e");
    cl_buf_append_str(b, ") OVER (PARTITION BY user_id ORDER BY s, e) + 1 THEN 0 ELSE 1 END "
                         "AS starts FROM (SELECT DISTINCT user_id, ");
    append_moved(b, "event_time", -t);
    cl_buf_append_str(b, " AS s, ");
    append_moved(b, "event_time", t);
    cl_buf_append_str(b, " AS e FROM agg_run_claim) d) x) y GROUP BY user_id, island");

    statement(b, count,
              "INSERT INTO agg_run_nb (row_key, user_id, event_time, is_new) "
              "SELECT c.row_key, c.user_id, c.event_time, "
              "k.row_key IS NOT NULL AND d.row_key IS NULL "
              "FROM agg_run_isle i STRAIGHT_JOIN click_data c FORCE INDEX (idx_click_user_time) "
              "ON c.user_id >= i.user_id AND c.user_id <= i.user_id "
              "AND c.event_time BETWEEN i.lo AND i.hi " SET_FILTER);
}

/* The events whose time spent the claim changes, with the change:
 * - every new event: it counts, with its own time_spent_ms or its dwell
 *   time to its next click (LEAD over the neighbourhood, where a next click
 *   within the timeout always lies);
 * - every aggregated event whose next click is now a new event within the
 *   timeout (then everything between them is in the same island) and which
 *   has no time_spent_ms of its own: its dwell time was the gap to its next
 *   aggregated click (LEAD over the aggregated events alone; if that click
 *   lies outside the island it is more than a timeout away, and LEAD finds
 *   none or one further still, which is the same answer) and is now the gap
 *   to the new one.
 * An aggregated event whose next click across an island boundary is new is
 * more than a timeout from it (the new event's interval starts past the
 * boundary) and changes nothing: the condition leaves it out. */
static void append_affected(cl_buf_t *b, unsigned int *count, uint64_t timeout_ms)
{
    begin_statement(b, count);
    cl_buf_append_str(b, "INSERT INTO agg_run_lead (row_key, is_new, new_spent) "
                         "SELECT row_key, is_new, new_spent FROM (SELECT row_key, is_new, "
                         "next_is_new, ");
    append_dwell(b, "next_time", "event_time", timeout_ms);
    cl_buf_append_str(b, " AS new_spent FROM (SELECT row_key, event_time, is_new, "
                         "LEAD(event_time) OVER w AS next_time, LEAD(is_new) OVER w AS next_is_new "
                         "FROM agg_run_nb WINDOW w AS (PARTITION BY user_id "
                         "ORDER BY event_time, row_key)) a) x "
                         "WHERE is_new = 1 OR (next_is_new = 1 AND new_spent IS NOT NULL)");

    begin_statement(b, count);
    cl_buf_append_str(b, "UPDATE agg_run_lead l JOIN (SELECT row_key, ");
    append_dwell(b, "next_time", "event_time", timeout_ms);
    cl_buf_append_str(b, " AS spent FROM (SELECT row_key, event_time, LEAD(event_time) OVER "
                         "(PARTITION BY user_id ORDER BY event_time, row_key) AS next_time "
                         "FROM agg_run_nb WHERE is_new = 0) a) o ON o.row_key = l.row_key "
                         "SET l.old_spent = o.spent WHERE l.is_new = 0");

    statement(b, count,
              "INSERT INTO agg_run_aff (row_key, user_id, event_time, is_new, url_hash, country, "
              "d_sum, d_samples) "
              "SELECT c.row_key, c.user_id, c.event_time, l.is_new, UNHEX(SHA2(c.url, 256)), "
              "COALESCE(g.country, 'unknown'), "
              "IF(l.is_new = 1, COALESCE(c.time_spent_ms, l.new_spent, 0), "
              "COALESCE(l.new_spent, 0) - COALESCE(l.old_spent, 0)), "
              "IF(l.is_new = 1, COALESCE(c.time_spent_ms, l.new_spent) IS NOT NULL, "
              "(l.new_spent IS NOT NULL) - (l.old_spent IS NOT NULL)) "
              "FROM agg_run_lead l STRAIGHT_JOIN click_data c ON c.row_key = l.row_key "
              "LEFT JOIN geo_data g ON g.row_key = l.row_key "
              "WHERE l.is_new = 1 OR c.time_spent_ms IS NULL");
}

/* The changes per (window, URL, country): each affected event in each of
 * its windows, less the frozen windows (counted) and the windows recomputed
 * whole in this run (marked); then the users new to their cell (a row of
 * agg_users each), then the sums. */
static void append_deltas(cl_buf_t *b, unsigned int *count, const cl_aggregate_spec_t *spec)
{
    begin_statement(b, count);
    cl_buf_append_str(b, "INSERT INTO agg_run_cell (window_ms, window_start, url_hash, country, "
                         "user_id, row_key, is_new, d_sum, d_samples) "
                         "SELECT s.window_ms, ");
    append_window_start(b, "a.event_time", "s.window_ms");
    cl_buf_append_str(b, ", a.url_hash, a.country, a.user_id, a.row_key, a.is_new, a.d_sum, "
                         "a.d_samples FROM agg_run_aff a CROSS JOIN ");
    append_sizes(b, spec);
    cl_buf_append_str(b, " s");

    begin_statement(b, count);
    cl_buf_append_str(b, "SET @cl_agg_windows_frozen = (SELECT COUNT(*) FROM (SELECT DISTINCT "
                         "window_ms, window_start FROM agg_run_cell WHERE ");
    cl_aggregate_sql_ms(b, "window_start");
    cl_buf_append_str(b, " < @cl_agg_frozen_before) f)");
    begin_statement(b, count);
    cl_buf_append_str(b, "DELETE FROM agg_run_cell WHERE ");
    cl_aggregate_sql_ms(b, "window_start");
    cl_buf_append_str(b, " < @cl_agg_frozen_before");
    statement(b, count,
              "DELETE c FROM agg_run_marks m STRAIGHT_JOIN agg_run_cell c "
              "ON c.window_ms = m.window_ms AND c.window_start = m.window_start");

    statement(b, count,
              "INSERT INTO agg_run_newuser (window_start, window_ms, url_hash, country, user_id) "
              "SELECT DISTINCT c.window_start, c.window_ms, c.url_hash, c.country, c.user_id "
              "FROM agg_run_cell c WHERE c.is_new = 1 AND NOT EXISTS (SELECT 1 FROM agg_users u "
              "WHERE u.window_start = c.window_start AND u.window_ms = c.window_ms "
              "AND u.url_hash = c.url_hash AND u.country = c.country AND u.user_id = c.user_id)");
    statement(b, count,
              "INSERT INTO agg_users (window_start, window_ms, url_hash, country, user_id) "
              "SELECT window_start, window_ms, url_hash, country, user_id FROM agg_run_newuser");
    statement(b, count,
              "INSERT INTO agg_run_delta (window_ms, window_start, url_hash, country, clicks, "
              "unique_users, time_spent_sum, time_spent_samples, any_key) "
              "SELECT c.window_ms, c.window_start, c.url_hash, c.country, SUM(c.is_new), "
              "COALESCE(MAX(n.users), 0), SUM(c.d_sum), SUM(c.d_samples), MIN(c.row_key) "
              "FROM agg_run_cell c LEFT JOIN (SELECT window_ms, window_start, url_hash, country, "
              "COUNT(*) AS users FROM agg_run_newuser "
              "GROUP BY window_ms, window_start, url_hash, country) n "
              "ON n.window_ms = c.window_ms AND n.window_start = c.window_start "
              "AND n.url_hash = c.url_hash AND n.country = c.country "
              "GROUP BY c.window_ms, c.window_start, c.url_hash, c.country");
    statement(b, count,
              "DELETE FROM agg_run_delta WHERE clicks = 0 AND unique_users = 0 "
              "AND time_spent_sum = 0 AND time_spent_samples = 0");
}

/* Marked windows (agg_dirty, claimed in bounded numbers) are recomputed
 * whole: the frozen ones are taken out (counted), the others stretched by
 * one session timeout (the next click of an event near the end may lie past
 * it), merged into ranges, scanned, and their aggregates compared with
 * agg_stats; their rows of agg_users are rebuilt. */
static void append_marked_windows(cl_buf_t *b, unsigned int *count, uint64_t timeout_ms)
{
    begin_statement(b, count);
    cl_buf_append_str(b, "INSERT INTO agg_run_dirty (window_ms, window_start, window_last) "
                         "SELECT window_ms, window_start, ");
    append_datetime_open(b);
    cl_buf_append_str(b, "LEAST(");
    cl_aggregate_sql_ms(b, "window_start");
    cl_buf_appendf(b, " + window_ms - 1, %" PRId64 ")", CL_DATETIME_MAX_MS);
    append_datetime_close(b);
    cl_buf_append_str(b, " FROM agg_run_marks WHERE @cl_agg_frozen_before IS NULL OR ");
    cl_aggregate_sql_ms(b, "window_start");
    cl_buf_append_str(b, " >= @cl_agg_frozen_before");
    statement(b, count,
              "SET @cl_agg_windows_frozen = @cl_agg_windows_frozen + "
              "(SELECT COUNT(*) FROM agg_run_marks) - ROW_COUNT()");

    cl_buf_t intervals;
    cl_buf_init(&intervals);
    cl_buf_append_str(&intervals, "(SELECT window_start AS s, ");
    append_datetime_open(&intervals);
    cl_buf_append_str(&intervals, "LEAST(");
    cl_aggregate_sql_ms(&intervals, "window_last");
    cl_buf_appendf(&intervals, " + %" PRIu64 ", %" PRId64 ")", timeout_ms, CL_DATETIME_MAX_MS);
    append_datetime_close(&intervals);
    cl_buf_append_str(&intervals, " AS e FROM agg_run_dirty)");
    append_merge_ranges(b, count, "agg_run_range", intervals.data);
    cl_buf_free(&intervals);

    /* The events of the ranges with their time spent and country: the
     * aggregated ones and the new claimed ones (the set of the run). */
    cl_buf_t head;
    cl_buf_init(&head);
    cl_buf_append_str(&head, "INSERT INTO agg_run_events (row_key, user_id, event_time, url_hash, "
                             "country, spent_ms) "
                             "SELECT x.row_key, x.user_id, x.event_time, x.url_hash, "
                             "COALESCE(g.country, 'unknown'), COALESCE(x.time_spent_ms, ");
    append_dwell(&head, "x.next_time", "x.event_time", timeout_ms);
    cl_buf_append_str(&head, ") FROM (SELECT c.row_key, c.user_id, c.event_time, "
                             "UNHEX(SHA2(c.url, 256)) AS url_hash, c.time_spent_ms, "
                             "LEAD(c.event_time) OVER (PARTITION BY c.user_id "
                             "ORDER BY c.event_time, c.row_key) AS next_time "
                             "FROM click_data c " SET_FILTER " AND (");
    append_range_scan(b, count, "cl_agg_events", head.data, "agg_run_range",
                      ")) x LEFT JOIN geo_data g ON g.row_key = x.row_key");
    cl_buf_free(&head);

    statement(b, count,
              "INSERT INTO agg_run_result (window_ms, window_start, url_hash, country, clicks, "
              "unique_users, time_spent_sum, time_spent_samples, any_key) "
              "SELECT a.window_ms, a.window_start, a.url_hash, a.country, a.clicks, "
              "a.unique_users, a.time_spent_sum, a.time_spent_samples, a.any_key FROM ("
              "SELECT d.window_ms, d.window_start, e.url_hash, e.country, COUNT(*) AS clicks, "
              "COUNT(DISTINCT e.user_id) AS unique_users, "
              "COALESCE(SUM(e.spent_ms), 0) AS time_spent_sum, "
              "COUNT(e.spent_ms) AS time_spent_samples, MIN(e.row_key) AS any_key "
              "FROM agg_run_dirty d JOIN agg_run_events e "
              "ON e.event_time BETWEEN d.window_start AND d.window_last "
              "GROUP BY d.window_ms, d.window_start, e.url_hash, e.country) a "
              "LEFT JOIN agg_stats s ON s.window_ms = a.window_ms "
              "AND s.window_start = a.window_start AND s.url_hash = a.url_hash "
              "AND s.country = a.country "
              "WHERE s.window_ms IS NULL OR s.clicks <> a.clicks "
              "OR s.unique_users <> a.unique_users OR s.time_spent_sum <> a.time_spent_sum "
              "OR s.time_spent_samples <> a.time_spent_samples");
    statement(b, count,
              "DELETE u FROM agg_run_dirty d STRAIGHT_JOIN agg_users u "
              "ON u.window_start = d.window_start AND u.window_ms = d.window_ms");
    statement(b, count,
              "INSERT INTO agg_users (window_start, window_ms, url_hash, country, user_id) "
              "SELECT DISTINCT d.window_start, d.window_ms, e.url_hash, e.country, e.user_id "
              "FROM agg_run_dirty d JOIN agg_run_events e "
              "ON e.event_time BETWEEN d.window_start AND d.window_last");
}

/* Only changed rows reach these statements, so every update is a new
 * version. Versions are the run's time in microseconds since the epoch, and
 * at least one more than before: they grow even across a rebuild of
 * agg_stats, so an index that keeps the highest version (external_gte)
 * accepts the rebuilt rows. The URL is read once per row, by primary key,
 * from one of its events. The deltas add to the row (a row that only loses
 * time spent, with no click of its own in the run, must exist already); the
 * recomputed windows replace it. */
static void append_upserts(cl_buf_t *b, unsigned int *count)
{
    static const char head[] =
        "INSERT INTO agg_stats (window_ms, window_start, url_hash, country, url, clicks, "
        "unique_users, time_spent_sum, time_spent_samples, version, indexed_version, "
        "needs_index, updated_at) "
        "SELECT * FROM (SELECT r.window_ms, r.window_start, r.url_hash, r.country, c.url, "
        "r.clicks, r.unique_users, r.time_spent_sum, r.time_spent_samples, "
        "TIMESTAMPDIFF(MICROSECOND, " EPOCH ", NOW(6)) AS version, "
        "0 AS indexed_version, 1 AS needs_index, NOW(3) AS updated_at ";
    static const char common[] =
        "version = GREATEST(agg_stats.version + 1, VALUES(version)), needs_index = 1, "
        "updated_at = VALUES(updated_at)";
    begin_statement(b, count);
    cl_buf_appendf(b,
                   "%sFROM agg_run_delta r JOIN click_data c ON c.row_key = r.any_key "
                   "WHERE r.clicks > 0 OR EXISTS (SELECT 1 FROM agg_stats s "
                   "WHERE s.window_ms = r.window_ms AND s.window_start = r.window_start "
                   "AND s.url_hash = r.url_hash AND s.country = r.country)) n "
                   "ON DUPLICATE KEY UPDATE clicks = agg_stats.clicks + VALUES(clicks), "
                   "unique_users = agg_stats.unique_users + VALUES(unique_users), "
                   "time_spent_sum = agg_stats.time_spent_sum + VALUES(time_spent_sum), "
                   "time_spent_samples = agg_stats.time_spent_samples + "
                   "VALUES(time_spent_samples), %s",
                   head, common);
    begin_statement(b, count);
    cl_buf_appendf(b,
                   "%sFROM agg_run_result r JOIN click_data c ON c.row_key = r.any_key) n "
                   "ON DUPLICATE KEY UPDATE clicks = VALUES(clicks), "
                   "unique_users = VALUES(unique_users), "
                   "time_spent_sum = VALUES(time_spent_sum), "
                   "time_spent_samples = VALUES(time_spent_samples), %s",
                   head, common);
}

int cl_aggregate_run_sql(cl_buf_t *out, const cl_aggregate_run_plan_t *plan,
                         unsigned int *summary_statement, char err[CL_ERR_LEN])
{
    const cl_aggregate_spec_t *spec = plan->spec;
    if (cl_aggregate_spec_check(spec, err) != CL_OK)
        return CL_ERR;
    unsigned int n = 0;
    /* The scan of marked windows grows with the number of ranges. The
     * implicit temporary tables of a run (GROUP BY, DISTINCT, window
     * functions over rows holding a user_id of up to 1 KiB) outgrow the
     * 16 MiB default with a full claim and would move to disk: measured on
     * a claim of 50 000 events, the aggregation by cell took 2.0 s on disk
     * and 0.36 s in memory, the users' islands 1.1 s and 0.45 s. The bound is
     * per table and per session, and only the aggregator's session has it. */
    statement(out, &n,
              "SET SESSION group_concat_max_len = 1073741824, tmp_table_size = 134217728, "
              "max_heap_table_size = 134217728");
    statement(out, &n, "DROP TEMPORARY TABLE IF EXISTS " WORK_TABLES);
    for (size_t i = 0; i < CL_ARRAY_LEN(create_work_tables); i++)
        statement(out, &n, create_work_tables[i]);
    statement(out, &n, "SET TRANSACTION ISOLATION LEVEL READ COMMITTED");
    statement(out, &n, "START TRANSACTION");
    append_claim(out, &n, plan->claim_limit);
    append_claim_marks(out, &n, plan->marks_limit);
    append_frozen_bound(out, &n, plan->frozen_before_ms);
    append_neighbourhood(out, &n, spec->session_timeout_ms);
    append_affected(out, &n, spec->session_timeout_ms);
    append_deltas(out, &n, spec);
    append_marked_windows(out, &n, spec->session_timeout_ms);
    append_upserts(out, &n);
    /* The claimed events are aggregated now (those already were, delivered
     * again, stay as they are); a window marked again during the run keeps
     * its mark. */
    statement(out, &n,
              "INSERT INTO agg_done (row_key) SELECT k.row_key FROM agg_run_claim k "
              "STRAIGHT_JOIN click_data c ON c.row_key = k.row_key "
              "WHERE NOT EXISTS (SELECT 1 FROM agg_done d WHERE d.row_key = k.row_key)");
    statement(out, &n,
              "DELETE p FROM agg_run_claim c STRAIGHT_JOIN agg_pending p "
              "ON p.row_key = c.row_key");
    statement(out, &n,
              "DELETE d FROM agg_run_marks m STRAIGHT_JOIN agg_dirty d "
              "ON d.window_ms = m.window_ms AND d.window_start = m.window_start "
              "AND d.marked_at = m.marked_at");
    *summary_statement = n;
    statement(
        out, &n,
        "SELECT (SELECT COUNT(*) FROM agg_run_claim), "
        "(SELECT COUNT(*) FROM (SELECT DISTINCT window_ms, window_start FROM agg_run_delta) w) "
        "+ (SELECT COUNT(*) FROM agg_run_dirty), "
        "(SELECT COUNT(*) FROM agg_run_nb) + (SELECT COUNT(*) FROM agg_run_events), "
        "(SELECT COUNT(*) FROM agg_run_delta) + (SELECT COUNT(*) FROM agg_run_result), "
        "@cl_agg_windows_frozen");
    statement(out, &n, "COMMIT");
    statement(out, &n, "DROP TEMPORARY TABLE IF EXISTS " WORK_TABLES);
    return CL_OK;
}

char *cl_aggregate_sql_reason(const char *reason, size_t max_chars,
                              size_t (*escape)(char *to, const char *from, size_t len))
{
    size_t len;
    char *text = cl_utf8_sanitize(reason, max_chars, &len);
    char *escaped = cl_xmalloc(2 * len + 1);
    escape(escaped, text, len);
    free(text);
    return escaped;
}

int cl_aggregate_hold_sql(cl_buf_t *out, const char *reason,
                          size_t (*escape)(char *to, const char *from, size_t len),
                          char err[CL_ERR_LEN])
{
    if (reason == NULL)
        return cl_errorf(err, "aggregate: holding an event needs a reason");
    char *escaped = cl_aggregate_sql_reason(reason, CL_AGG_HELD_REASON_MAX_CHARS, escape);
    /* The same event a run with claim_limit 1 claims (append_claim). */
    cl_buf_appendf(out,
                   "SET @cl_agg_hold = (SELECT p.row_key FROM agg_pending p WHERE NOT EXISTS "
                   "(SELECT 1 FROM agg_held h WHERE h.row_key = p.row_key) "
                   "ORDER BY p.row_key LIMIT 1);\n"
                   "INSERT INTO agg_held (row_key, reason) SELECT @cl_agg_hold, '%s' FROM DUAL "
                   "WHERE @cl_agg_hold IS NOT NULL;\n"
                   "SELECT @cl_agg_hold FROM DUAL WHERE @cl_agg_hold IS NOT NULL",
                   escaped);
    free(escaped);
    return CL_OK;
}

const char *cl_aggregate_drop_mark_sql(void)
{
    /* The mark a run with marks_limit 1 claims (append_claim_marks). */
    return "DELETE FROM agg_dirty ORDER BY window_start DESC, window_ms LIMIT 1";
}

int cl_aggregate_full_recompute_sql(cl_buf_t *out, const cl_aggregate_spec_t *spec,
                                    char err[CL_ERR_LEN])
{
    if (cl_aggregate_spec_check(spec, err) != CL_OK)
        return CL_ERR;
    cl_buf_append_str(out, "INSERT INTO agg_dirty (window_ms, window_start, marked_at) "
                           "SELECT m.window_ms, m.window_start, NOW(6) FROM ("
                           "SELECT DISTINCT s.window_ms, ");
    append_window_start(out, "c.event_time", "s.window_ms");
    cl_buf_append_str(out, " AS window_start FROM click_data c CROSS JOIN ");
    append_sizes(out, spec);
    cl_buf_append_str(out, " s) m ON DUPLICATE KEY UPDATE marked_at = VALUES(marked_at)");
    return CL_OK;
}

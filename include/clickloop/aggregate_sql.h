/* aggregate_sql: the SQL of the aggregation of the stored events into
 * agg_stats, by tumbling event-time window, URL and country, computed inside
 * MariaDB: pure builders (no I/O), issued by the runner in aggregate.h.
 *
 * A header of its own because two modules build on it: the runner
 * (aggregate.c) and the indexer's reads (agg_stats.h), which must not depend
 * on the runner.
 *
 * What a row of agg_stats holds, for one (window size, window start, URL,
 * country):
 *   clicks              events in the window
 *   unique_users        distinct user_id among them (exact)
 *   time_spent_sum      sum of the events' time spent, in ms
 *   time_spent_samples  events that have a time spent
 * An event's time spent is its own time_spent_ms when present; otherwise its
 * dwell time, the gap to the same user's next event (any URL) when that gap
 * is at most the session timeout; otherwise it has none and stays out of the
 * average (the last click of a session, typically).
 *
 * Rules the SQL and every independent check of it share:
 * - Windows are [start, start + size) in UTC, with start a multiple of the
 *   size counted from 1970-01-01 00:00:00 UTC (floored for earlier times).
 *   Sizes that divide a day therefore align to UTC midnight; whole-day sizes
 *   (7d) align to the epoch, a Thursday.
 * - A user's events are ordered by (event_time, row_key), row_key compared
 *   as bytes. Two events of one user in the same millisecond are thus
 *   ordered by row key: the first gets a dwell time of 0 ms.
 * - The gap bound is inclusive: a gap equal to the session timeout counts.
 * - URLs are compared as bytes (grouped by url_hash = SHA-256 of the URL).
 * - An event without a country (no geo_data row, or a NULL country) counts
 *   under the country "unknown".
 * - A window that starts before the retention cutoff plus a margin of an
 *   hour (CL_AGG_RETENTION_MARGIN_MS) is frozen: its raw rows are gone or
 *   going, in part if the window straddles the cutoff, so a recomputation
 *   would overwrite a correct aggregate with a smaller one. The cutoff is the
 *   later of the current one (with retention on, retention.raw_days > 0:
 *   cl_retention_cutoff_ms, now minus raw_days days) and the one retention
 *   recorded when it last deleted events (retention_state.pruned_before,
 *   retention.h), which stays after raw_days is raised or retention is
 *   switched off: deleted rows do not come back. With neither (retention off
 *   and never run), nothing is frozen. A run never recomputes a frozen
 *   window; a late event that touches only frozen windows (its own, or those
 *   of the user's previous click) is stored, claimed and consumed, and
 *   changes no aggregate. A window starting at or after the cutoff needs only
 *   rows after it (the look-ahead for dwell times goes forward), all still
 *   there.
 *
 * Incremental runs: the store's batch transaction queues every new event in
 * agg_pending (store.h), so the queue is complete in commit order; a run
 * claims at most a bounded number of them and adds what they change to
 * agg_stats, so that its cost follows the events it takes in, not the size
 * of the windows they fall in:
 * - agg_done holds the key of every aggregated event. The events a run
 *   works on are those plus the claimed ones not among them ("new"); an
 *   event delivered again after it was aggregated is queued again by the
 *   store, claimed, found in agg_done, and changes nothing. Pending events
 *   the run did not claim are left out of every statement, as if they had
 *   not arrived.
 * - clicks are additive: each new event adds one to its cell in each window.
 * - unique users: agg_users holds the distinct users of every cell (window
 *   size, window start, URL, country); a new event whose user is not yet in
 *   its cell adds the row and one unique user. Exact for every window size.
 * - time spent: only a new event and the user's previous click (in
 *   (event_time, row_key) order) can change, and only within one session
 *   timeout of the new event. The run reads each claimed user's events in
 *   [t - timeout, t + timeout] around the claimed times through
 *   idx_click_user_time, gives each new event its time spent, and moves the
 *   previous click's dwell time from its old next click to the new one.
 * Windows an operator marked in agg_dirty are recomputed whole instead (and
 * their agg_users rows rebuilt); the changes of claimed events to marked
 * windows are left to that recomputation. Frozen windows (above) are set
 * aside, counted, and their marks consumed. All of it in one READ COMMITTED
 * transaction that also records the claimed events in agg_done and removes
 * them from agg_pending: READ COMMITTED keeps the reads of click_data free of
 * gap locks, so ingestion never waits for a run.
 *
 * A run that fails on the data (CL_DB_ERROR_DATA in db.h: a value refused,
 * a constraint, a trigger, a duplicate key) is retried with half the claim,
 * down to a
 * single event; an event that fails alone is held (agg_held, with the
 * server's error) and never claimed again until an operator deletes its
 * agg_held row; a marked window that fails alone loses its mark. Everything
 * else goes on. Other failures (the operator's: a missing table, missing
 * privileges, a read-only server, a full disk; or unclassified ones) hold
 * everything back and are retried at every interval. */
#ifndef CLICKLOOP_AGGREGATE_SQL_H
#define CLICKLOOP_AGGREGATE_SQL_H

#include <stddef.h>
#include <stdint.h>

#include "clickloop/buf.h"
#include "clickloop/common.h"

/* What agg_held.reason holds, in characters. */
#define CL_AGG_HELD_REASON_MAX_CHARS 1024
/* Largest window and session timeout accepted: keeps the SQL arithmetic far
 * from any overflow. The configuration allows at most 31 days. */
#define CL_AGG_MAX_WINDOW_MS (UINT64_C(366) * 86400000)
#define CL_AGG_MAX_SESSION_TIMEOUT_MS (UINT64_C(7) * 86400000)

/* frozen_before_ms when retention is off: the current policy freezes no
 * window (the bound retention recorded still does, see the rules above). */
#define CL_AGG_NOTHING_FROZEN INT64_MIN

/* How far past the retention cutoff windows are frozen already. Retention
 * takes its cutoff from its own clock when it runs, possibly later than the
 * aggregator or on another instance whose clock runs ahead: a window starting
 * just past the aggregator's cutoff may be losing its first rows at that very
 * moment. An hour covers the time between two runs and any sane clock skew. */
#define CL_AGG_RETENTION_MARGIN_MS INT64_C(3600000)

/* The start before which the current policy freezes windows at wall-clock
 * time now_ms (ms since the epoch, UTC) with retention.raw_days = raw_days:
 * the retention cutoff (cl_retention_cutoff_ms) plus
 * CL_AGG_RETENTION_MARGIN_MS, or CL_AGG_NOTHING_FROZEN for 0 (retention
 * off). The run SQL adds the bound retention recorded. */
int64_t cl_aggregate_frozen_before_ms(int64_t now_ms, uint32_t raw_days);

/* What to aggregate over. */
typedef struct cl_aggregate_spec_s {
    const uint64_t *windows_ms;  /* window sizes, distinct, each 1 .. CL_AGG_MAX_WINDOW_MS */
    size_t window_count;         /* at least 1 */
    uint64_t session_timeout_ms; /* 1 .. CL_AGG_MAX_SESSION_TIMEOUT_MS */
    /* Windows taken from agg_dirty per run, oldest first; 0 takes all. With
     * a bound, a full recompute of a large table proceeds over several runs
     * of bounded length instead of one long transaction. */
    size_t max_marked_windows;
} cl_aggregate_spec_t;

/* Check a spec; err names the problem. */
int cl_aggregate_spec_check(const cl_aggregate_spec_t *spec, char err[CL_ERR_LEN]);

/* The query that takes the aggregation lock without waiting: one row, one
 * column, "1" when taken, "0" when another session holds it. The lock name
 * includes the database name, so clickloops on different databases of one
 * server do not exclude each other. Static text. */
const char *cl_aggregate_lock_sql(void);
/* Releases it (DO RELEASE_LOCK: no result set). Static text. */
const char *cl_aggregate_unlock_sql(void);

/* Statement index (0-based) in the run SQL of the SELECT that reports the
 * run, as one row of CL_AGG_SUMMARY_FIELDS columns: events claimed, windows
 * changed or recomputed, events read, agg_stats rows changed, windows left
 * frozen. */
#define CL_AGG_SUMMARY_FIELDS 5

/* Most events one run claims: bounds a run's length and its transaction
 * while a backlog is worked off, and is where the halving on failure
 * starts. */
#define CL_AGG_MAX_CLAIM 50000

/* What one run does. */
typedef struct cl_aggregate_run_plan_s {
    const cl_aggregate_spec_t *spec;
    /* Windows starting before the larger of this (ms since the epoch;
     * CL_AGG_NOTHING_FROZEN: no bound of its own) and
     * retention_state.pruned_before + CL_AGG_RETENTION_MARGIN_MS (read by
     * the run; no row: no bound) are frozen. */
    int64_t frozen_before_ms;
    size_t claim_limit; /* pending events to claim, in key order; 0: none */
    size_t marks_limit; /* marked windows to recompute, newest first; 0: none */
} cl_aggregate_run_plan_t;

/* Append the SQL of one run (session settings, temporary work tables, then
 * the transaction described at the top of this file, ending in COMMIT) for
 * the multi-statement API, and set *summary_statement to the index of the
 * summary SELECT. The text depends only on the plan: a runner builds it for
 * each run, as the frozen bound moves with the clock. */
int cl_aggregate_run_sql(cl_buf_t *out, const cl_aggregate_run_plan_t *plan,
                         unsigned int *summary_statement, char err[CL_ERR_LEN]);

/* Append the statements that hold the first claimable pending event (the one
 * a run with claim_limit 1 claims) with `reason` in agg_held, so that no run
 * claims it again. `escape` as in store.h. */
int cl_aggregate_hold_sql(cl_buf_t *out, const char *reason,
                          size_t (*escape)(char *to, const char *from, size_t len),
                          char err[CL_ERR_LEN]);

/* Append the statement that removes the mark a run with marks_limit 1
 * recomputes (the newest). */
const char *cl_aggregate_drop_mark_sql(void);

/* Append one statement that marks every window of every configured size
 * that holds at least one event as dirty, so that the following runs
 * recompute everything. For an operator after changing the window sizes or
 * the session timeout, or to repair agg_stats; safe to run at any time, also
 * from the mariadb client. It scans click_data once. */
int cl_aggregate_full_recompute_sql(cl_buf_t *out, const cl_aggregate_spec_t *spec,
                                    char err[CL_ERR_LEN]);

/* ---- Pure: pieces shared with agg_stats.c -------------------------------- */

/* Append the milliseconds since the epoch of the DATETIME expression
 * `datetime` (exact for any date). */
void cl_aggregate_sql_ms(cl_buf_t *b, const char *datetime);
/* Append the DATETIME(3) of `ms` (milliseconds since the epoch, within
 * CL_DATETIME_MIN_MS .. CL_DATETIME_MAX_MS). */
void cl_aggregate_sql_datetime(cl_buf_t *b, int64_t ms);
/* A reason for a text column: ill-formed UTF-8 as '?', cut at max_chars
 * characters, escaped with `escape` for a quoted literal. The caller frees it. */
char *cl_aggregate_sql_reason(const char *reason, size_t max_chars,
                              size_t (*escape)(char *to, const char *from, size_t len));

#endif

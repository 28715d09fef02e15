/* aggregate: periodic aggregation of the stored events into agg_stats, by
 * tumbling event-time window, URL and country, computed inside MariaDB.
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
 * Rules the SQL and every independent check of it (test/integration/
 * test_agg_random.py, test_aggregate.py) share:
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
 * everything back and are retried at every interval.
 *
 * The runner (cl_aggregator_t) issues that SQL from the loop on a pool of one
 * connection of its own, never two runs at once, and with several clickloop
 * instances on one database only one aggregates at a time: each run first
 * takes the MariaDB named lock "clickloop.aggregate.<database>" with
 * GET_LOCK(..., 0) and is skipped when another session holds it.
 *
 * The read side, for the indexer: agg_stats rows with needs_index = 1 are
 * the ones whose latest version is neither indexed nor failed permanently.
 * Send `version` with each document (as an external version, so that an
 * older version arriving late cannot overwrite a newer one), then record the
 * outcome per (key, version) with the builders below. A version is the
 * time of the run that wrote it, in microseconds since the epoch, and grows
 * by at least one with every change of the row. */
#ifndef CLICKLOOP_AGGREGATE_H
#define CLICKLOOP_AGGREGATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "clickloop/buf.h"
#include "clickloop/common.h"
#include "clickloop/db_pool.h"

/* Hex digits of url_hash and the NUL. */
#define CL_AGG_URL_HASH_HEX_SIZE 65
/* Longest country value ("unknown" or ISO 3166-1 alpha-2); the column holds 16. */
#define CL_AGG_COUNTRY_MAX_LEN 16
/* What agg_held.reason holds, in characters. */
#define CL_AGG_HELD_REASON_MAX_CHARS 1024
/* What agg_stats.index_error holds, in characters. */
#define CL_AGG_INDEX_ERROR_MAX_CHARS 1024
/* Largest window and session timeout accepted: keeps the SQL arithmetic far
 * from any overflow. The configuration allows at most 31 days. */
#define CL_AGG_MAX_WINDOW_MS (UINT64_C(366) * 86400000)
#define CL_AGG_MAX_SESSION_TIMEOUT_MS (UINT64_C(7) * 86400000)

/* ---- Pure: window arithmetic ------------------------------------------- */

/* Start of the window of size window_ms (> 0) holding the instant ms, both
 * in milliseconds since the Unix epoch: the largest multiple of window_ms
 * not after ms (floored for negative ms). */
int64_t cl_aggregate_window_start(int64_t ms, uint64_t window_ms);

/* A window size's label ("1h", "7d") is the document's: cl_es_window_label. */

/* ---- Pure: the run and recompute SQL ------------------------------------ */

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

/* ---- Pure: the read side for the indexer -------------------------------- */

/* The key of an agg_stats row as the indexer carries it. */
typedef struct cl_aggregate_key_s {
    uint64_t window_ms;
    int64_t window_start_ms;
    char url_hash_hex[CL_AGG_URL_HASH_HEX_SIZE]; /* 64 hex digits, either case */
    char country[CL_AGG_COUNTRY_MAX_LEN + 1];
} cl_aggregate_key_t;

/* One row of the index SELECT, parsed. Strings point into the row the db
 * module handed over and are valid only as long as it is. */
typedef struct cl_aggregate_stat_s {
    cl_aggregate_key_t key; /* url_hash_hex in upper case */
    const char *url;
    size_t url_len;
    uint64_t clicks;
    uint64_t unique_users;
    uint64_t time_spent_sum;
    uint64_t time_spent_samples;
    uint64_t version;
    int64_t updated_at_ms;
} cl_aggregate_stat_t;

/* Columns of the index SELECT, in this order: window_ms, window_start (epoch
 * ms), url_hash (hex), country, url, clicks, unique_users, time_spent_sum,
 * time_spent_samples, version, updated_at (epoch ms). */
#define CL_AGG_INDEX_FIELDS 11

/* Append a SELECT of at most `limit` (> 0) rows needing indexing, in key
 * order, starting after `after` (NULL: from the first). Passing the last key
 * of one page as `after` of the next lets the indexer fetch more while the
 * previous page is still in flight. Uses KEY idx_agg_stats_needs_index. */
int cl_aggregate_index_select_sql(cl_buf_t *out, size_t limit, const cl_aggregate_key_t *after,
                                  char err[CL_ERR_LEN]);

/* Parse one row of that SELECT. */
int cl_aggregate_parse_stat(unsigned int field_count, const char *const *values,
                            const unsigned long *lengths, cl_aggregate_stat_t *out,
                            char err[CL_ERR_LEN]);

/* A version of a row that the index now holds. */
typedef struct cl_aggregate_indexed_s {
    cl_aggregate_key_t key;
    uint64_t version;
} cl_aggregate_indexed_t;

/* Append one UPDATE recording that the index holds these versions:
 * indexed_version becomes the larger of its value and the version sent (so
 * an old acknowledgement arriving late changes nothing), needs_index stays 1
 * only if the row changed again meanwhile, index_error is cleared. n > 0. */
int cl_aggregate_mark_indexed_sql(cl_buf_t *out, const cl_aggregate_indexed_t *items, size_t n,
                                  char err[CL_ERR_LEN]);

/* Append one UPDATE recording that the index refused this version for good
 * (a 4xx other than 409/429): index_error gets `reason` (ill-formed UTF-8
 * becomes '?', cut at CL_AGG_INDEX_ERROR_MAX_CHARS characters) and
 * needs_index becomes 0 unless the row changed again meanwhile, so that the
 * indexer stops sending a document that cannot succeed. `escape` as in
 * store.h (cl_db_escape_string). */
int cl_aggregate_mark_failed_sql(cl_buf_t *out, const cl_aggregate_key_t *key, uint64_t version,
                                 const char *reason,
                                 size_t (*escape)(char *to, const char *from, size_t len),
                                 char err[CL_ERR_LEN]);

/* ---- The runner on the loop --------------------------------------------- */

typedef struct cl_aggregator_s cl_aggregator_t;

/* The outcome of one run, valid during the callback only. */
typedef struct cl_aggregator_run_result_s {
    /* 0: done (or skipped because another instance holds the lock); CL_ERR:
     * a permanent SQL error (a bug or a schema that drifted); CL_ERR_RETRY:
     * the connection failed or the aggregator closed. A failed run changed
     * nothing: the next run does its work. */
    int status;
    bool skipped_locked; /* another session aggregates; nothing was done */
    bool manual;         /* started by cl_aggregator_run_now */
    unsigned int error_code;
    const char *message;         /* "" on success */
    uint64_t events_claimed;     /* new events taken from agg_pending */
    uint64_t windows_recomputed; /* (size, start) pairs recomputed */
    uint64_t events_scanned;     /* events read to recompute them */
    uint64_t rows_changed;       /* agg_stats rows inserted or changed */
    uint64_t windows_frozen;     /* (size, start) pairs touched but frozen */
    uint64_t duration_ms;        /* from taking the lock to the end */
    /* Failures in a row, this one included (0 after a success). */
    uint64_t consecutive_failures;
    /* A failure unlike the one before in its episode (the first failure,
     * or another error): worth a log line; repeats of one failure, also
     * between the successful runs that isolate it, are not. */
    bool new_failure;
    /* The end of an episode of failures: the first success with nothing left
     * to isolate, after recovered_after failed runs. */
    uint64_t recovered_after;
    /* Isolation after a failure on the data: the event held (its row key,
     * sanitized, "" if none) or the marked window dropped by this run. */
    const char *held_row_key;
    bool mark_dropped;
} cl_aggregator_run_result_t;

typedef void (*cl_aggregator_run_cb)(void *arg, const cl_aggregator_run_result_t *result);
typedef void (*cl_aggregator_close_cb)(void *arg);

typedef struct cl_aggregator_params_s {
    /* Connection of its own (a pool of one). The read timeout bounds the
     * longest statement of a run: give it room for the largest window to
     * recompute. Strings are copied. */
    cl_db_params_t db;
    cl_aggregate_spec_t spec; /* the array is copied */
    uint64_t interval_ms;     /* > 0 */
    /* retention.raw_days: windows older than that are frozen (see the rules
     * above); 0: retention is off, and only the windows before the bound
     * retention recorded earlier stay frozen. */
    uint32_t retention_raw_days;
    /* Called after every run, timer-started or manual (main logs it); may be
     * NULL. */
    cl_aggregator_run_cb on_run;
    void *on_run_arg;
    /* Connection events of its pool; may be NULL. */
    cl_db_pool_event_cb on_db_event;
    void *db_event_arg;
} cl_aggregator_params_t;

/* The bounds a full recompute (marked windows) works in: it proceeds over
 * several runs of bounded length rather than one long transaction. */
#define CL_AGG_MAX_MARKED_WINDOWS 200
/* A run's statements scan whole windows: they get far more room than an
 * ingest batch needs before the connection counts as lost (and the server
 * aborts them at the same bound, so that a run cut short does not go on
 * holding the aggregation lock). */
#define CL_AGG_MIN_READ_TIMEOUT_MS 600000u

struct cl_config_s;
/* The `aggregation` section, the connection of `mariadb` with its read
 * timeout raised to CL_AGG_MIN_READ_TIMEOUT_MS and the statement bound set to
 * it, and retention.raw_days; the callbacks are the caller's to set. */
void cl_aggregator_params_from_config(const struct cl_config_s *config,
                                      cl_aggregator_params_t *params);

/* Failed runs in a row after which the aggregator counts as failing
 * (readiness says so): one failure may be a blip, three are a state. */
#define CL_AGG_FAILING_AFTER 3

typedef struct cl_aggregator_stats_s {
    uint64_t runs; /* completed with status 0 and the lock taken */
    uint64_t runs_failed;
    uint64_t skipped_locked;     /* another session held the lock */
    uint64_t skipped_busy;       /* the timer fired during a run */
    uint64_t events_claimed;     /* summed over runs */
    uint64_t windows_recomputed; /* summed over runs */
    uint64_t rows_changed;       /* summed over runs */
    uint64_t windows_frozen;     /* summed over runs */
    uint64_t last_duration_ms;
    uint64_t events_held;   /* events held after failing alone (agg_held) */
    uint64_t marks_dropped; /* marked windows dropped after failing alone */
    uint64_t consecutive_failures;
    size_t claim_limit; /* of the next run: halved on failures of the data */
    /* Failing: CL_AGG_FAILING_AFTER runs in a row have failed; last_error
     * says how (valid until the next run ends). */
    bool failing;
    const char *last_error;
    bool running;
} cl_aggregator_stats_t;

/* Create an aggregator and start connecting its pool; no run starts before
 * cl_aggregator_start or cl_aggregator_run_now. */
int cl_aggregator_new(uv_loop_t *loop, const cl_aggregator_params_t *params, cl_aggregator_t **out,
                      char err[CL_ERR_LEN]);

/* Run every interval from now on. A tick that finds a run in progress is
 * skipped (counted in skipped_busy): runs never overlap. */
int cl_aggregator_start(cl_aggregator_t *agg, char err[CL_ERR_LEN]);

/* Start a run now. cb (may be NULL) runs once with its outcome, after
 * on_run. Returns CL_ERR_RETRY (cb never runs) while a run is in progress. */
int cl_aggregator_run_now(cl_aggregator_t *agg, cl_aggregator_run_cb cb, void *arg,
                          char err[CL_ERR_LEN]);

/* Change the interval (configuration reload); the next run is one new
 * interval from now. */
void cl_aggregator_set_interval(cl_aggregator_t *agg, uint64_t interval_ms);

/* Change retention.raw_days (configuration reload); applies from the next
 * run. */
void cl_aggregator_set_retention_days(cl_aggregator_t *agg, uint32_t raw_days);

void cl_aggregator_stats(const cl_aggregator_t *agg, cl_aggregator_stats_t *out);

/* Stop the timer, cancel a run in progress (its transaction rolls back and
 * its events stay queued; its callbacks get CL_ERR_RETRY), close the pool
 * and free. cb runs once everything is closed. */
int cl_aggregator_close(cl_aggregator_t *agg, cl_aggregator_close_cb cb, void *arg);

#endif

/* aggregate: the runner that issues the aggregation SQL (aggregate_sql.c)
 * from the loop: the named lock, the run, the isolation of failures on the
 * data; see include/clickloop/aggregate.h. */
#include "clickloop/aggregate.h"
#include "clickloop/config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clickloop/dbjob.h"
#include "clickloop/log.h"
#include "clickloop/utf8.h"

/* ---- The runner ---------------------------------------------------------------- */

typedef enum {
    AGG_IDLE = 0,
    AGG_LOCKING,   /* GET_LOCK in flight */
    AGG_RUNNING,   /* the run's transaction in flight */
    AGG_ISOLATING, /* holding an event or dropping a mark after a failure */
    AGG_UNLOCKING, /* RELEASE_LOCK in flight */
} agg_state_t;

/* Where the isolation of a failure on the data stands. Failures halve the
 * claim (and the marks) down to one; then the event is tried alone, then
 * the marked window alone, and whichever fails alone is set aside. */
typedef enum {
    ISO_NONE = 0,   /* normal runs, with the current limits */
    ISO_EVENT_ONLY, /* next run: one event, no mark */
    ISO_MARK_ONLY,  /* next run: one mark, no event */
} iso_state_t;

struct cl_aggregator_s {
    cl_dbjob_t *job;          /* the timer and the connection */
    agg_state_t state;        /* the step of the run in progress; closing is the job's */
    cl_aggregate_spec_t spec; /* its windows_ms is windows_copy */
    uint64_t *windows_copy;
    uint32_t retention_raw_days;
    cl_buf_t run_sql; /* built for each run (the frozen bound moves); alive while it is in flight */
    unsigned int summary_statement;
    /* Isolation of failures on the data (aggregate.h). */
    size_t claim_limit;
    size_t marks_limit;
    size_t marks_max; /* spec.max_marked_windows, or no bound */
    iso_state_t iso;
    char held_key[512];          /* 100 characters of UTF-8 at most */
    char last_error[CL_ERR_LEN]; /* of the episode of failures in progress */
    unsigned int last_error_code;
    uint64_t episode_failures;
    cl_aggregator_run_cb on_run;
    void *on_run_arg;
    /* The run in progress. */
    uint64_t started_at;
    int lock_value; /* -1: NULL or not read */
    cl_aggregator_run_result_t result;
    char message[CL_ERR_LEN];
    cl_aggregator_stats_t stats;
    cl_close_cb close_cb;
    void *close_arg;
};

static bool closing(const cl_aggregator_t *agg)
{
    return cl_dbjob_state(agg->job) == CL_DBJOB_CLOSING;
}

static void log_run(const cl_aggregator_t *agg, const cl_aggregator_run_result_t *r);

static void run_finish(cl_aggregator_t *agg)
{
    cl_aggregator_run_result_t r = agg->result;
    r.message = agg->message;
    r.held_row_key = agg->held_key;
    r.duration_ms = cl_now_ms() - agg->started_at;
    /* An episode of failures lasts from the first failure until a run
     * succeeds with nothing being isolated and the limits back where they
     * started: the successes of an isolation in progress do not end it, so
     * that one failure repeated while it is being isolated is reported
     * once. */
    if (r.status == CL_OK && !r.skipped_locked) {
        agg->stats.consecutive_failures = 0;
        if (agg->episode_failures > 0 && agg->iso == ISO_NONE &&
            agg->claim_limit == CL_AGG_MAX_CLAIM && agg->marks_limit == agg->marks_max) {
            r.recovered_after = agg->episode_failures;
            agg->episode_failures = 0;
            agg->last_error[0] = '\0';
            agg->last_error_code = 0;
        }
    } else if (r.status != CL_OK && !closing(agg)) {
        agg->stats.consecutive_failures++;
        r.new_failure = agg->episode_failures == 0 || agg->last_error_code != r.error_code ||
                        strcmp(agg->last_error, agg->message) != 0;
        agg->episode_failures++;
        agg->last_error_code = r.error_code;
        snprintf(agg->last_error, sizeof agg->last_error, "%s", agg->message);
    }
    r.consecutive_failures = agg->stats.consecutive_failures;
    agg->stats.failing = agg->stats.consecutive_failures >= CL_AGG_FAILING_AFTER;
    agg->stats.claim_limit = agg->claim_limit;
    if (r.held_row_key[0] != '\0')
        agg->stats.events_held++;
    if (r.mark_dropped)
        agg->stats.marks_dropped++;
    if (r.status == CL_OK && !r.skipped_locked) {
        agg->stats.runs++;
        agg->stats.events_claimed += r.events_claimed;
        agg->stats.windows_recomputed += r.windows_recomputed;
        agg->stats.rows_changed += r.rows_changed;
        agg->stats.windows_frozen += r.windows_frozen;
        agg->stats.last_duration_ms = r.duration_ms;
    } else if (r.skipped_locked) {
        agg->stats.skipped_locked++;
    } else {
        agg->stats.runs_failed++;
    }
    agg->stats.running = false;
    agg->state = AGG_IDLE;
    cl_dbjob_run_end(agg->job);
    log_run(agg, &r);
    if (agg->on_run != NULL)
        agg->on_run(agg->on_run_arg, &r);
}

/* One line per change of state, not per run: a failure that repeats says so
 * once (the metrics and /readyz show it goes on). A run cancelled by a close
 * is expected, not worth a warning. */
static void log_run(const cl_aggregator_t *agg, const cl_aggregator_run_result_t *r)
{
    if (r->held_row_key[0] != '\0')
        cl_log_error("aggregate",
                     "event %s failed aggregation alone and is held (agg_held, with the "
                     "error); other events go on; delete its agg_held row to retry it: %s",
                     r->held_row_key, r->message);
    if (r->mark_dropped)
        cl_log_error("aggregate",
                     "a marked window failed its recomputation alone and its mark was "
                     "dropped; others go on: %s",
                     r->message);
    if (r->status != CL_OK) {
        bool quiet = closing(agg) || !r->new_failure;
        cl_log(quiet                 ? CL_LOG_DEBUG
               : r->status == CL_ERR ? CL_LOG_ERROR
                                     : CL_LOG_WARN,
               "aggregate", "aggregation run failed (%llu in a row): %s; the next run %s",
               (unsigned long long)r->consecutive_failures, r->message,
               r->status == CL_ERR ? "isolates what failed or retries it" : "picks its work up");
        return;
    }
    if (r->recovered_after > 0)
        cl_log_info("aggregate",
                    "aggregation recovered: runs succeed again with full claims after %llu "
                    "failed run(s)",
                    (unsigned long long)r->recovered_after);
    if (r->skipped_locked) {
        cl_log_debug("aggregate", "another instance holds the aggregation lock; run skipped");
        return;
    }
    cl_log(r->events_claimed > 0 || r->windows_recomputed > 0 ? CL_LOG_INFO : CL_LOG_DEBUG,
           "aggregate",
           "aggregation run: %llu new events, %llu windows recomputed (%llu events scanned), "
           "%llu rows changed in %llu ms",
           (unsigned long long)r->events_claimed, (unsigned long long)r->windows_recomputed,
           (unsigned long long)r->events_scanned, (unsigned long long)r->rows_changed,
           (unsigned long long)r->duration_ms);
    if (r->windows_frozen > 0)
        cl_log_debug("aggregate",
                     "aggregation run: %llu windows left as they were: they start within an "
                     "hour after the retention cutoff (retention.raw_days = %u, or the cutoff "
                     "retention last deleted by, if later) or before (frozen)",
                     (unsigned long long)r->windows_frozen, (unsigned)agg->retention_raw_days);
}

static void record_failure(cl_aggregator_t *agg, const cl_db_result_t *res, const char *what)
{
    if (agg->result.status != CL_OK)
        return; /* keep the first failure */
    agg->result.status = res->status;
    agg->result.error_code = res->error_code;
    cl_errorf(agg->message, "%s: %s", what, res->message);
}

static void on_unlocked(void *arg, const cl_db_result_t *res)
{
    cl_aggregator_t *agg = arg;
    /* A failed release matters little: the server releases the lock with
     * the session, and a lost connection is one. Report it all the same. */
    if (res->status != CL_OK)
        record_failure(agg, res, "releasing the aggregation lock");
    run_finish(agg);
}

static const cl_db_query_handlers_t unlock_handlers = {NULL, on_unlocked};

static void unlock(cl_aggregator_t *agg)
{
    char err[CL_ERR_LEN];
    agg->state = AGG_UNLOCKING;
    const char *sql = cl_aggregate_unlock_sql();
    if (cl_dbjob_query(agg->job, sql, strlen(sql), &unlock_handlers, agg, err) != CL_OK) {
        cl_db_result_t r = {.status = CL_ERR_RETRY, .message = err};
        record_failure(agg, &r, "releasing the aggregation lock");
        run_finish(agg);
    }
}

static void on_run_row(void *arg, unsigned int statement, unsigned int field_count,
                       const char *const *values, const unsigned long *lengths)
{
    cl_aggregator_t *agg = arg;
    CL_UNUSED(lengths);
    if (statement != agg->summary_statement || field_count != CL_AGG_SUMMARY_FIELDS)
        return;
    uint64_t *fields[CL_AGG_SUMMARY_FIELDS] = {
        &agg->result.events_claimed, &agg->result.windows_recomputed, &agg->result.events_scanned,
        &agg->result.rows_changed, &agg->result.windows_frozen};
    for (unsigned int i = 0; i < field_count; i++)
        *fields[i] = values[i] != NULL ? strtoull(values[i], NULL, 10) : 0;
}

/* After a successful run: limits grow back, and an isolation in progress
 * moves on (the event alone passed: try the mark alone; that passed too:
 * only their combination failed, start over). */
static void isolation_after_success(cl_aggregator_t *agg)
{
    if (agg->iso == ISO_EVENT_ONLY) {
        agg->iso = ISO_MARK_ONLY;
        return;
    }
    agg->iso = ISO_NONE;
    agg->claim_limit =
        agg->claim_limit * 2 > CL_AGG_MAX_CLAIM ? CL_AGG_MAX_CLAIM : agg->claim_limit * 2;
    agg->marks_limit =
        agg->marks_limit * 2 > agg->marks_max ? agg->marks_max : agg->marks_limit * 2;
}

static void on_isolated_row(void *arg, unsigned int statement, unsigned int field_count,
                            const char *const *values, const unsigned long *lengths)
{
    cl_aggregator_t *agg = arg;
    CL_UNUSED(statement);
    if (field_count != 1 || values[0] == NULL)
        return;
    CL_UNUSED(lengths);
    /* For a log line: valid UTF-8, the first 100 characters (a row key ends at
     * a NUL byte here, which no event id holds: the parser refuses it). */
    size_t len;
    char *key = cl_utf8_sanitize(values[0], 100, &len);
    snprintf(agg->held_key, sizeof agg->held_key, "%.*s", (int)len, key);
    free(key);
}

static void on_isolated(void *arg, const cl_db_result_t *res)
{
    cl_aggregator_t *agg = arg;
    if (res->status != CL_OK) {
        /* The failure stays as reported; the isolation is tried again. */
        agg->held_key[0] = '\0';
        agg->result.mark_dropped = false;
    } else {
        agg->iso = ISO_NONE;
    }
    if (closing(agg)) {
        run_finish(agg);
        return;
    }
    unlock(agg);
}

static const cl_db_query_handlers_t isolate_handlers = {on_isolated_row, on_isolated};

/* A run failed on its data: halve the work, or set aside what failed alone.
 * Returns true when an isolating statement went out (it unlocks after). */
static bool isolate(cl_aggregator_t *agg)
{
    char err[CL_ERR_LEN];
    const char *sql = NULL;
    if (agg->iso == ISO_EVENT_ONLY) { /* the run claimed one event, no mark */
        cl_buf_reset(&agg->run_sql);
        if (cl_aggregate_hold_sql(&agg->run_sql, agg->message, cl_db_escape_string, err) != CL_OK)
            return false;
        sql = agg->run_sql.data;
    } else if (agg->iso == ISO_MARK_ONLY) { /* one mark, no event */
        sql = cl_aggregate_drop_mark_sql();
        agg->result.mark_dropped = true;
    } else {
        if (agg->claim_limit <= 1 && agg->marks_limit <= 1)
            agg->iso = ISO_EVENT_ONLY;
        agg->claim_limit = agg->claim_limit > 1 ? agg->claim_limit / 2 : 1;
        agg->marks_limit = agg->marks_limit > 1 ? agg->marks_limit / 2 : 1;
        return false;
    }
    agg->state = AGG_ISOLATING;
    if (cl_dbjob_query(agg->job, sql, strlen(sql), &isolate_handlers, agg, err) != CL_OK) {
        agg->result.mark_dropped = false;
        return false;
    }
    return true;
}

static void on_run_done(void *arg, const cl_db_result_t *res)
{
    cl_aggregator_t *agg = arg;
    if (res->status != CL_OK) {
        /* The db module rolled the transaction back (or the server did, with
         * the connection): the claimed events are still pending. */
        record_failure(agg, res, "aggregation run");
        agg->result.events_claimed = agg->result.windows_recomputed = 0;
        agg->result.events_scanned = agg->result.rows_changed = 0;
        agg->result.windows_frozen = 0;
    } else {
        isolation_after_success(agg);
    }
    if (closing(agg)) {
        run_finish(agg);
        return;
    }
    /* Only a failure on the data is isolated (db.h classifies): what an
     * operator must fix, or an error nobody classified, holds everything
     * back rather than setting innocent events aside one by one. */
    if (res->status == CL_ERR && cl_db_error_classify(res->error_code) == CL_DB_ERROR_DATA &&
        isolate(agg))
        return;
    unlock(agg);
}

static const cl_db_query_handlers_t run_handlers = {on_run_row, on_run_done};

static void on_lock_row(void *arg, unsigned int statement, unsigned int field_count,
                        const char *const *values, const unsigned long *lengths)
{
    cl_aggregator_t *agg = arg;
    CL_UNUSED(statement);
    CL_UNUSED(lengths);
    if (field_count == 1 && values[0] != NULL)
        agg->lock_value = (int)strtol(values[0], NULL, 10);
}

static void on_locked(void *arg, const cl_db_result_t *res)
{
    cl_aggregator_t *agg = arg;
    char err[CL_ERR_LEN];
    if (res->status != CL_OK) {
        record_failure(agg, res, "taking the aggregation lock");
        run_finish(agg);
        return;
    }
    if (closing(agg) || agg->lock_value != 1) {
        if (closing(agg)) {
            cl_db_result_t r = {.status = CL_ERR_RETRY, .message = "the aggregator closed"};
            record_failure(agg, &r, "cancelled");
        } else if (agg->lock_value == 0) {
            agg->result.skipped_locked = true;
        } else {
            cl_db_result_t r = {.status = CL_ERR_RETRY, .message = "GET_LOCK returned NULL"};
            record_failure(agg, &r, "taking the aggregation lock");
        }
        /* When closing, the lock goes with the session. */
        run_finish(agg);
        return;
    }
    /* The bound is taken now, with the lock held, as late as possible. */
    cl_buf_reset(&agg->run_sql);
    cl_aggregate_run_plan_t plan = {
        .spec = &agg->spec,
        .frozen_before_ms = cl_aggregate_frozen_before_ms(cl_wall_ms(), agg->retention_raw_days),
        .claim_limit = agg->iso == ISO_MARK_ONLY    ? 0
                       : agg->iso == ISO_EVENT_ONLY ? 1
                                                    : agg->claim_limit,
        .marks_limit = agg->iso == ISO_EVENT_ONLY  ? 0
                       : agg->iso == ISO_MARK_ONLY ? 1
                                                   : agg->marks_limit,
    };
    if (cl_aggregate_run_sql(&agg->run_sql, &plan, &agg->summary_statement, err) != CL_OK) {
        cl_db_result_t r = {.status = CL_ERR, .message = err};
        record_failure(agg, &r, "building the aggregation run");
        unlock(agg);
        return;
    }
    agg->state = AGG_RUNNING;
    if (cl_dbjob_query(agg->job, agg->run_sql.data, agg->run_sql.len, &run_handlers, agg, err) !=
        CL_OK) {
        cl_db_result_t r = {.status = CL_ERR_RETRY, .message = err};
        record_failure(agg, &r, "aggregation run");
        run_finish(agg);
    }
}

static const cl_db_query_handlers_t lock_handlers = {on_lock_row, on_locked};

/* The job starts a run (a tick). */
static void on_job_run(void *arg, bool manual)
{
    cl_aggregator_t *agg = arg;
    char err[CL_ERR_LEN];
    memset(&agg->result, 0, sizeof agg->result);
    agg->message[0] = '\0';
    agg->held_key[0] = '\0';
    CL_UNUSED(manual);
    agg->lock_value = -1;
    agg->started_at = cl_now_ms();
    agg->state = AGG_LOCKING;
    agg->stats.running = true;
    const char *sql = cl_aggregate_lock_sql();
    if (cl_dbjob_query(agg->job, sql, strlen(sql), &lock_handlers, agg, err) != CL_OK) {
        cl_db_result_t r = {.status = CL_ERR_RETRY, .message = err};
        record_failure(agg, &r, "taking the aggregation lock");
        run_finish(agg);
    }
}

void cl_aggregator_params_from_config(const cl_config_t *c, cl_aggregator_params_t *p)
{
    memset(p, 0, sizeof *p);
    cl_db_params_from_config(c, &p->db);
    p->db.label = "aggregation";
    p->spec.windows_ms = c->aggregation.windows_ms;
    p->spec.window_count = c->aggregation.window_count;
    p->spec.session_timeout_ms = c->aggregation.session_timeout_ms;
    p->spec.max_marked_windows = CL_AGG_MAX_MARKED_WINDOWS;
    if (p->db.read_timeout_ms < CL_AGG_MIN_READ_TIMEOUT_MS)
        p->db.read_timeout_ms = CL_AGG_MIN_READ_TIMEOUT_MS;
    /* A run is safe to abort: it rolls back and the next one starts over. */
    p->db.max_statement_ms = p->db.read_timeout_ms;
    p->interval_ms = c->aggregation.interval_ms;
    p->retention_raw_days = c->retention.raw_days;
}

int cl_aggregator_new(uv_loop_t *loop, const cl_aggregator_params_t *params, cl_aggregator_t **out,
                      char err[CL_ERR_LEN])
{
    if (params->interval_ms == 0)
        return cl_errorf(err, "aggregate: the interval must be at least 1 ms");
    if (cl_aggregate_spec_check(&params->spec, err) != CL_OK)
        return CL_ERR;
    cl_aggregator_t *agg = cl_xcalloc(1, sizeof *agg);
    cl_dbjob_params_t jp = {
        .db = params->db,
        .interval_ms = params->interval_ms,
        .handlers = {.run = on_job_run},
        .arg = agg,
    };
    if (cl_dbjob_new(loop, &jp, &agg->job, err) != CL_OK) {
        free(agg);
        return CL_ERR;
    }
    agg->spec = params->spec;
    agg->windows_copy = cl_xmalloc(params->spec.window_count * sizeof *agg->windows_copy);
    memcpy(agg->windows_copy, params->spec.windows_ms,
           params->spec.window_count * sizeof *agg->windows_copy);
    agg->spec.windows_ms = agg->windows_copy;
    agg->retention_raw_days = params->retention_raw_days;
    agg->claim_limit = CL_AGG_MAX_CLAIM;
    agg->marks_max =
        params->spec.max_marked_windows > 0 ? params->spec.max_marked_windows : SIZE_MAX;
    agg->marks_limit = agg->marks_max;
    agg->stats.claim_limit = agg->claim_limit;
    cl_buf_init(&agg->run_sql);
    agg->on_run = params->on_run;
    agg->on_run_arg = params->on_run_arg;
    *out = agg;
    return CL_OK;
}

int cl_aggregator_start(cl_aggregator_t *agg, char err[CL_ERR_LEN])
{
    if (cl_dbjob_start(agg->job, err) != CL_OK)
        return cl_errorf(err, "aggregate: closing");
    return CL_OK;
}

void cl_aggregator_set_interval(cl_aggregator_t *agg, uint64_t interval_ms)
{
    cl_dbjob_set_interval(agg->job, interval_ms);
}

void cl_aggregator_set_retention_days(cl_aggregator_t *agg, uint32_t raw_days)
{
    agg->retention_raw_days = raw_days;
}

void cl_aggregator_stats(const cl_aggregator_t *agg, cl_aggregator_stats_t *out)
{
    cl_dbjob_stats_t js;
    cl_dbjob_stats(agg->job, &js);
    *out = agg->stats;
    out->skipped_busy = js.ticks_skipped;
    out->last_error = agg->last_error;
}

static void on_job_closed(void *arg)
{
    cl_aggregator_t *agg = arg;
    cl_close_cb cb = agg->close_cb;
    void *cb_arg = agg->close_arg;
    cl_buf_free(&agg->run_sql);
    free(agg->windows_copy);
    free(agg);
    if (cb != NULL)
        cb(cb_arg);
}

int cl_aggregator_close(cl_aggregator_t *agg, cl_close_cb cb, void *arg)
{
    if (closing(agg))
        return CL_ERR;
    agg->close_cb = cb;
    agg->close_arg = arg;
    /* The run in flight ends cancelled (CL_ERR_RETRY) while run_sql is alive,
     * before the job's close callback. */
    return cl_dbjob_close(agg->job, on_job_closed, agg);
}

/* retention: deletion of old raw events in small batches; see
 * include/clickloop/retention.h.
 *
 * The batch SQL keeps the keys of the events it takes in a temporary table,
 * retention_batch, because the children must be deleted by the same keys and
 * a multi-table DELETE takes no LIMIT. Each DELETE's ROW_COUNT() lands in a
 * session variable, so the summary SELECT reports what each table lost.
 *
 * Quirks defended against:
 * - A DELETE ... WHERE rejected_at < x ORDER BY id LIMIT n walks the primary
 *   key from its start and, once the old rows are gone, on to the end of the
 *   table looking for more: a full scan every run. The first id that is not
 *   old is therefore read first into a variable; the range optimizer takes a
 *   user variable as a constant, so the DELETE becomes a primary-key range.
 * - The pruned bound (retention_state) is upserted with INSERT ... SELECT
 *   ... WHERE so that the condition on the session variable decides in the
 *   server, within the same transaction; a SELECT that yields no row
 *   inserts and locks nothing.
 * - A MEMORY temporary table has fixed-size rows and a 16 MiB default limit:
 *   100 000 keys of VARBINARY(400) would not fit. The default engine is
 *   used. */
#include "clickloop/retention.h"
#include "clickloop/config.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clickloop/dbjob.h"
#include "clickloop/log.h"
#include "clickloop/store.h"

#define MS_PER_DAY INT64_C(86400000)

/* Pause between the batches of a run: the loop and the server's other
 * sessions get their turn. */
#define BATCH_PAUSE_MS 10

static const char *const table_names[CL_RETENTION_TABLE_COUNT] = {
    "click_data",      "geo_data", "user_agent_data", "agg_pending",
    "rejected_events", "agg_done", "agg_users",
};

/* Session variables that carry each DELETE's row count to the summary. */
static const char *const count_vars[CL_RETENTION_TABLE_COUNT] = {
    "@cl_retention_click_data",  "@cl_retention_geo_data",        "@cl_retention_user_agent_data",
    "@cl_retention_agg_pending", "@cl_retention_rejected_events", "@cl_retention_agg_done",
    "@cl_retention_agg_users",
};

const char *cl_retention_table_name(cl_retention_table_t table)
{
    return (unsigned)table < CL_RETENTION_TABLE_COUNT ? table_names[table] : "unknown";
}

/* ---- Pure ------------------------------------------------------------------ */

int64_t cl_retention_cutoff_ms(int64_t now_ms, uint32_t raw_days)
{
    return now_ms - (int64_t)raw_days * MS_PER_DAY;
}

static void statement(cl_buf_t *b, unsigned int *count, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void statement(cl_buf_t *b, unsigned int *count, const char *fmt, ...)
{
    if (*count > 0)
        cl_buf_append_str(b, ";\n");
    (*count)++;
    char text[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    cl_buf_append_str(b, text);
}

/* Delete the rows of `table` whose keys are in retention_batch. */
static void delete_children(cl_buf_t *b, unsigned int *n, cl_retention_table_t table)
{
    statement(b, n, "DELETE t FROM retention_batch k STRAIGHT_JOIN %s t ON t.row_key = k.row_key",
              table_names[table]);
    statement(b, n, "SET %s = ROW_COUNT()", count_vars[table]);
}

int cl_retention_batch_sql(cl_buf_t *out, int64_t cutoff_ms, uint32_t batch_rows,
                           unsigned int *summary_statement, char err[CL_ERR_LEN])
{
    char cutoff[CL_DATETIME_SIZE];
    if (batch_rows == 0 || batch_rows > CL_RETENTION_MAX_BATCH_ROWS)
        return cl_errorf(err, "retention: batch_rows must be between 1 and %u, got %" PRIu32,
                         CL_RETENTION_MAX_BATCH_ROWS, batch_rows);
    if (cl_datetime_format(cutoff_ms, cutoff) != CL_OK)
        return cl_errorf(err, "retention: the cutoff %" PRId64 " ms is outside the DATETIME range",
                         cutoff_ms);
    unsigned int n = 0;
    /* Session-wide, so it also holds for the autocommit statements below. */
    statement(out, &n, "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED");
    /* Created once per connection; a reconnect gets a new one. */
    statement(out, &n,
              "CREATE TEMPORARY TABLE IF NOT EXISTS retention_batch "
              "(row_key VARBINARY(400) NOT NULL, PRIMARY KEY (row_key))");
    statement(out, &n, "DELETE FROM retention_batch");
    statement(out, &n, "START TRANSACTION");
    statement(out, &n,
              "INSERT INTO retention_batch (row_key) SELECT row_key FROM click_data "
              "FORCE INDEX (idx_click_event_time) WHERE event_time < '%s' "
              "ORDER BY event_time LIMIT %" PRIu32,
              cutoff, batch_rows);
    /* Children first: a crash in between can never leave a child without
     * its click_data row (nor can anything else: it is one transaction). */
    delete_children(out, &n, CL_RETENTION_GEO_DATA);
    delete_children(out, &n, CL_RETENTION_USER_AGENT_DATA);
    delete_children(out, &n, CL_RETENTION_AGG_PENDING);
    delete_children(out, &n, CL_RETENTION_AGG_DONE);
    delete_children(out, &n, CL_RETENTION_CLICK_DATA);
    /* Last before COMMIT, and only when events went: the row lock is held
     * for the commit alone, and a batch that deletes nothing writes nothing.
     * Another instance's batch waits here at most for that commit; nothing
     * else writes the row, and the aggregator's read takes no lock. */
    statement(out, &n,
              "INSERT INTO retention_state (id, pruned_before) SELECT 1, '%s' FROM DUAL "
              "WHERE %s > 0 ON DUPLICATE KEY UPDATE "
              "pruned_before = GREATEST(pruned_before, VALUES(pruned_before))",
              cutoff, count_vars[CL_RETENTION_CLICK_DATA]);
    statement(out, &n, "COMMIT");
    /* A window starting before the cutoff is frozen (aggregate.h): its
     * users are never looked up again. */
    statement(
        out, &n,
        "DELETE FROM agg_users WHERE window_start < '%s' ORDER BY window_start LIMIT %" PRIu32,
        cutoff, batch_rows);
    statement(out, &n, "SET %s = ROW_COUNT()", count_vars[CL_RETENTION_AGG_USERS]);
    statement(out, &n,
              "SET @cl_retention_bound = (SELECT id FROM rejected_events "
              "WHERE rejected_at >= '%s' ORDER BY id LIMIT 1)",
              cutoff);
    statement(out, &n,
              "DELETE FROM rejected_events WHERE id < COALESCE(@cl_retention_bound, %" PRId64
              ") AND rejected_at < '%s' ORDER BY id LIMIT %" PRIu32,
              INT64_MAX, cutoff, batch_rows);
    statement(out, &n, "SET %s = ROW_COUNT()", count_vars[CL_RETENTION_REJECTED_EVENTS]);
    *summary_statement = n;
    statement(out, &n, "SELECT %s, %s, %s, %s, %s, %s, %s", count_vars[0], count_vars[1],
              count_vars[2], count_vars[3], count_vars[4], count_vars[5], count_vars[6]);
    return CL_OK;
}

/* ---- The runner -------------------------------------------------------------- */

/* The outcome of one run, as it is logged. */
typedef struct {
    /* 0: done; CL_ERR: a permanent SQL error; CL_ERR_RETRY: the connection
     * failed, a lock wait or deadlock ended a batch, or the runner closed. The
     * batches before the failed one stay deleted; the next run goes on. */
    int status;
    unsigned int error_code;
    const char *message; /* "" on success */
    int64_t cutoff_ms;
    uint64_t batches;
    uint64_t rows_deleted[CL_RETENTION_TABLE_COUNT];
    uint64_t duration_ms;
} run_result_t;

struct cl_retention_s {
    cl_dbjob_t *job; /* the timer, the pause between batches, the connection */
    uint32_t raw_days;
    uint32_t batch_rows;
    uint64_t interval_ms;
    /* The run in progress. */
    cl_buf_t sql; /* alive while its batch is in flight */
    unsigned int summary_statement;
    bool have_summary;
    uint64_t batch_rows_deleted[CL_RETENTION_TABLE_COUNT];
    uint64_t started_at;
    run_result_t result;
    char message[CL_ERR_LEN];
    cl_retention_stats_t stats;
    cl_close_cb close_cb;
    void *close_arg;
};

static bool closing(const cl_retention_t *rt)
{
    return cl_dbjob_state(rt->job) == CL_DBJOB_CLOSING;
}

static int check_policy(uint32_t raw_days, uint32_t batch_rows, uint64_t interval_ms,
                        char err[CL_ERR_LEN])
{
    if (raw_days == 0 || raw_days > CL_RETENTION_MAX_DAYS)
        return cl_errorf(err, "retention: raw_days must be between 1 and %u, got %" PRIu32,
                         CL_RETENTION_MAX_DAYS, raw_days);
    if (batch_rows == 0 || batch_rows > CL_RETENTION_MAX_BATCH_ROWS)
        return cl_errorf(err, "retention: batch_rows must be between 1 and %u, got %" PRIu32,
                         CL_RETENTION_MAX_BATCH_ROWS, batch_rows);
    if (interval_ms == 0)
        return cl_errorf(err, "retention: the interval must be at least 1 ms");
    return CL_OK;
}

/* A failure says so at every run (runs are far apart); a run cancelled by a
 * close is expected, not worth a warning. */
static void log_run(const cl_retention_t *rt, const run_result_t *r)
{
    const uint64_t *d = r->rows_deleted;
    if (r->status != CL_OK) {
        cl_log(closing(rt)           ? CL_LOG_DEBUG
               : r->status == CL_ERR ? CL_LOG_ERROR
                                     : CL_LOG_WARN,
               "retention", "retention run failed: %s; the next run goes on", r->message);
        return;
    }
    cl_log(d[CL_RETENTION_CLICK_DATA] > 0 || d[CL_RETENTION_REJECTED_EVENTS] > 0 ? CL_LOG_INFO
                                                                                 : CL_LOG_DEBUG,
           "retention",
           "retention run: %llu events (%llu geo, %llu user agent, %llu pending rows) and %llu "
           "rejected events older than %u days deleted in %llu batch(es), %llu ms",
           (unsigned long long)d[CL_RETENTION_CLICK_DATA],
           (unsigned long long)d[CL_RETENTION_GEO_DATA],
           (unsigned long long)d[CL_RETENTION_USER_AGENT_DATA],
           (unsigned long long)d[CL_RETENTION_AGG_PENDING],
           (unsigned long long)d[CL_RETENTION_REJECTED_EVENTS], rt->raw_days,
           (unsigned long long)r->batches, (unsigned long long)r->duration_ms);
}

static void run_finish(cl_retention_t *rt, int status, unsigned int error_code, const char *why)
{
    run_result_t r = rt->result;
    r.status = status;
    r.error_code = error_code;
    cl_errorf(rt->message, "%s", why);
    r.message = rt->message;
    r.duration_ms = cl_now_ms() - rt->started_at;
    if (status == CL_OK)
        rt->stats.runs++;
    else
        rt->stats.runs_failed++;
    cl_dbjob_run_end(rt->job);
    log_run(rt, &r);
}

static void on_batch_row(void *arg, unsigned int statement, unsigned int field_count,
                         const char *const *values, const unsigned long *lengths)
{
    cl_retention_t *rt = arg;
    CL_UNUSED(lengths);
    if (statement != rt->summary_statement || field_count != CL_RETENTION_TABLE_COUNT)
        return;
    for (unsigned int i = 0; i < field_count; i++) {
        /* ROW_COUNT() is -1 after a statement that failed to run; it never
         * reaches here then (the query fails), but a NULL or "-1" reads as 0. */
        long long v = values[i] != NULL ? strtoll(values[i], NULL, 10) : 0;
        rt->batch_rows_deleted[i] = v > 0 ? (uint64_t)v : 0;
    }
    rt->have_summary = true;
}

static void on_batch_done(void *arg, const cl_db_result_t *res)
{
    cl_retention_t *rt = arg;
    cl_buf_free(&rt->sql);
    if (res->status != CL_OK || !rt->have_summary) {
        char why[CL_ERR_LEN];
        cl_errorf(why, "deleting old events: %s",
                  res->status != CL_OK ? res->message : "the batch reported no row counts");
        run_finish(rt, res->status != CL_OK ? res->status : CL_ERR, res->error_code, why);
        return;
    }
    for (int i = 0; i < CL_RETENTION_TABLE_COUNT; i++) {
        rt->result.rows_deleted[i] += rt->batch_rows_deleted[i];
        rt->stats.rows_deleted[i] += rt->batch_rows_deleted[i];
    }
    rt->result.batches++;
    rt->stats.batches++;
    /* A full batch may have left more behind; a short one found the end. */
    bool more = rt->batch_rows_deleted[CL_RETENTION_CLICK_DATA] >= rt->batch_rows ||
                rt->batch_rows_deleted[CL_RETENTION_REJECTED_EVENTS] >= rt->batch_rows ||
                rt->batch_rows_deleted[CL_RETENTION_AGG_USERS] >= rt->batch_rows;
    if (closing(rt) || !more) {
        run_finish(rt, CL_OK, 0, "");
        return;
    }
    cl_dbjob_pause(rt->job, BATCH_PAUSE_MS);
}

static const cl_db_query_handlers_t batch_handlers = {on_batch_row, on_batch_done};

static void run_batch(cl_retention_t *rt)
{
    char err[CL_ERR_LEN];
    cl_buf_init(&rt->sql);
    rt->have_summary = false;
    memset(rt->batch_rows_deleted, 0, sizeof rt->batch_rows_deleted);
    if (cl_retention_batch_sql(&rt->sql, rt->result.cutoff_ms, rt->batch_rows,
                               &rt->summary_statement, err) != CL_OK ||
        cl_dbjob_query(rt->job, rt->sql.data, rt->sql.len, &batch_handlers, rt, err) != CL_OK) {
        cl_buf_free(&rt->sql);
        run_finish(rt, CL_ERR, 0, err);
    }
}

/* The pause between two batches is over, or the job closed during it. */
static void on_job_resume(void *arg, int status)
{
    cl_retention_t *rt = arg;
    if (status != CL_OK) {
        run_finish(rt, CL_ERR_RETRY, 0, "cancelled: retention closed");
        return;
    }
    run_batch(rt);
}

static void on_job_run(void *arg, bool manual)
{
    cl_retention_t *rt = arg;
    CL_UNUSED(manual);
    memset(&rt->result, 0, sizeof rt->result);
    rt->started_at = cl_now_ms();
    rt->result.cutoff_ms = cl_retention_cutoff_ms(cl_wall_ms(), rt->raw_days);
    run_batch(rt);
}

void cl_retention_params_from_config(const cl_config_t *c, cl_retention_params_t *p)
{
    memset(p, 0, sizeof *p);
    cl_db_params_from_config(c, &p->db);
    p->db.label = "retention";
    p->raw_days = c->retention.raw_days;
    p->batch_rows = c->retention.batch_rows;
    p->interval_ms = c->retention.interval_ms;
}

int cl_retention_new(uv_loop_t *loop, const cl_retention_params_t *params, cl_retention_t **out,
                     char err[CL_ERR_LEN])
{
    if (check_policy(params->raw_days, params->batch_rows, params->interval_ms, err) != CL_OK)
        return CL_ERR;
    cl_retention_t *rt = cl_xcalloc(1, sizeof *rt);
    cl_dbjob_params_t jp = {
        .db = params->db,
        .interval_ms = params->interval_ms,
        .handlers = {.run = on_job_run, .resume = on_job_resume},
        .arg = rt,
    };
    if (cl_dbjob_new(loop, &jp, &rt->job, err) != CL_OK) {
        free(rt);
        return CL_ERR;
    }
    rt->raw_days = params->raw_days;
    rt->batch_rows = params->batch_rows;
    rt->interval_ms = params->interval_ms;
    *out = rt;
    return CL_OK;
}

int cl_retention_start(cl_retention_t *rt, char err[CL_ERR_LEN])
{
    if (cl_dbjob_start(rt->job, err) != CL_OK)
        return cl_errorf(err, "retention: closing");
    return CL_OK;
}

int cl_retention_set_policy(cl_retention_t *rt, uint32_t raw_days, uint32_t batch_rows,
                            uint64_t interval_ms, char err[CL_ERR_LEN])
{
    if (check_policy(raw_days, batch_rows, interval_ms, err) != CL_OK)
        return CL_ERR;
    rt->raw_days = raw_days;
    rt->batch_rows = batch_rows;
    if (interval_ms != rt->interval_ms) {
        rt->interval_ms = interval_ms;
        cl_dbjob_set_interval(rt->job, interval_ms);
    }
    return CL_OK;
}

void cl_retention_stats(const cl_retention_t *rt, cl_retention_stats_t *out)
{
    cl_dbjob_stats_t js;
    cl_dbjob_stats(rt->job, &js);
    *out = rt->stats;
    out->ticks_skipped = js.ticks_skipped;
    out->running = js.state == CL_DBJOB_RUNNING || js.state == CL_DBJOB_PAUSED;
}

static void on_job_closed(void *arg)
{
    cl_retention_t *rt = arg;
    cl_close_cb cb = rt->close_cb;
    void *cb_arg = rt->close_arg;
    free(rt);
    if (cb != NULL)
        cb(cb_arg);
}

int cl_retention_close(cl_retention_t *rt, cl_close_cb cb, void *arg)
{
    if (closing(rt))
        return CL_ERR;
    rt->close_cb = cb;
    rt->close_arg = arg;
    /* A run paused between batches ends in the job's resume (cancelled); one
     * with a batch in flight ends in that batch's done callback, which runs
     * (CL_ERR_RETRY) before the job's close callback: the SQL text is still
     * alive. */
    return cl_dbjob_close(rt->job, on_job_closed, rt);
}

/* dbjob: the periodic database job (timer, own connection, one run at a
 * time, asynchronous close); see include/clickloop/dbjob.h for the policies.
 *
 * Two timers: `tick` starts runs, `pause` ends a pause within a run. The job
 * is freed when the pool has closed (after the cancelled statement's done
 * callback) and both timers' close callbacks have run. */
#include "clickloop/dbjob.h"

#include <stdlib.h>

struct cl_dbjob_s {
    uv_loop_t *loop;
    cl_db_pool_t *pool;
    uv_timer_t tick;
    uv_timer_t pause;
    int open_handles;
    cl_dbjob_state_t state;
    uint64_t interval_ms;
    cl_dbjob_handlers_t handlers;
    void *arg;
    cl_dbjob_stats_t stats;
    cl_close_cb close_cb;
    void *close_arg;
};

static void begin_run(cl_dbjob_t *job, bool manual)
{
    job->state = CL_DBJOB_RUNNING;
    job->stats.runs++;
    job->handlers.run(job->arg, manual);
}

static void on_tick(uv_timer_t *t)
{
    cl_dbjob_t *job = t->data;
    switch (job->state) {
    case CL_DBJOB_IDLE:
        begin_run(job, false);
        break;
    case CL_DBJOB_RUNNING:
    case CL_DBJOB_PAUSED:
        job->stats.ticks_skipped++;
        break;
    case CL_DBJOB_CLOSING:
        break;
    }
}

static void on_pause_over(uv_timer_t *t)
{
    cl_dbjob_t *job = t->data;
    if (job->state != CL_DBJOB_PAUSED)
        return;
    job->state = CL_DBJOB_RUNNING;
    job->handlers.resume(job->arg, CL_OK);
}

int cl_dbjob_new(uv_loop_t *loop, const cl_dbjob_params_t *params, cl_dbjob_t **out,
                 char err[CL_ERR_LEN])
{
    if (params->interval_ms == 0)
        return cl_errorf(err, "the interval must be at least 1 ms");
    if (params->handlers.run == NULL)
        return cl_errorf(err, "a job needs a run handler");
    cl_db_pool_t *pool;
    if (cl_db_pool_open(loop, &params->db, 1, &pool, err) != CL_OK)
        return CL_ERR;
    cl_dbjob_t *job = cl_xcalloc(1, sizeof *job);
    job->loop = loop;
    job->pool = pool;
    job->interval_ms = params->interval_ms;
    job->handlers = params->handlers;
    job->arg = params->arg;
    uv_timer_init(loop, &job->tick);
    job->tick.data = job;
    uv_timer_init(loop, &job->pause);
    job->pause.data = job;
    job->open_handles = 2;
    *out = job;
    return CL_OK;
}

int cl_dbjob_start(cl_dbjob_t *job, char err[CL_ERR_LEN])
{
    if (job->state == CL_DBJOB_CLOSING)
        return cl_errorf(err, "closing");
    uv_timer_start(&job->tick, on_tick, 0, job->interval_ms);
    return CL_OK;
}

int cl_dbjob_run_now(cl_dbjob_t *job, char err[CL_ERR_LEN])
{
    switch (job->state) {
    case CL_DBJOB_IDLE:
        begin_run(job, true);
        return CL_OK;
    case CL_DBJOB_RUNNING:
    case CL_DBJOB_PAUSED:
        cl_errorf(err, "a run is in progress");
        return CL_ERR_RETRY;
    case CL_DBJOB_CLOSING:
        break;
    }
    return cl_errorf(err, "closing");
}

void cl_dbjob_run_end(cl_dbjob_t *job)
{
    switch (job->state) {
    case CL_DBJOB_RUNNING:
    case CL_DBJOB_PAUSED:
        uv_timer_stop(&job->pause);
        job->state = CL_DBJOB_IDLE;
        return;
    case CL_DBJOB_CLOSING:
        return;
    case CL_DBJOB_IDLE:
        break;
    }
    cl_panic("dbjob: a run ended that never started");
}

void cl_dbjob_pause(cl_dbjob_t *job, uint64_t delay_ms)
{
    if (job->state != CL_DBJOB_RUNNING || job->handlers.resume == NULL)
        cl_panic("dbjob: a pause outside a run, or without a resume handler");
    job->state = CL_DBJOB_PAUSED;
    uv_timer_start(&job->pause, on_pause_over, delay_ms, 0);
}

int cl_dbjob_query(cl_dbjob_t *job, const char *sql, size_t len,
                   const cl_db_query_handlers_t *handlers, void *arg, char err[CL_ERR_LEN])
{
    if (job->state == CL_DBJOB_CLOSING)
        return cl_errorf(err, "closing");
    return cl_db_pool_query(job->pool, sql, len, handlers, arg, err);
}

void cl_dbjob_set_interval(cl_dbjob_t *job, uint64_t interval_ms)
{
    if (interval_ms == 0 || job->state == CL_DBJOB_CLOSING)
        return;
    job->interval_ms = interval_ms;
    if (uv_is_active((uv_handle_t *)&job->tick))
        uv_timer_start(&job->tick, on_tick, interval_ms, interval_ms);
}

cl_dbjob_state_t cl_dbjob_state(const cl_dbjob_t *job)
{
    return job->state;
}

void cl_dbjob_stats(const cl_dbjob_t *job, cl_dbjob_stats_t *out)
{
    *out = job->stats;
    out->state = job->state;
}

static void on_timer_closed(uv_handle_t *h)
{
    cl_dbjob_t *job = h->data;
    if (--job->open_handles > 0)
        return;
    cl_close_cb cb = job->close_cb;
    void *arg = job->close_arg;
    free(job);
    if (cb != NULL)
        cb(arg);
}

static void on_pool_closed(void *arg)
{
    cl_dbjob_t *job = arg;
    uv_close((uv_handle_t *)&job->tick, on_timer_closed);
    uv_close((uv_handle_t *)&job->pause, on_timer_closed);
}

int cl_dbjob_close(cl_dbjob_t *job, cl_close_cb cb, void *arg)
{
    if (job->state == CL_DBJOB_CLOSING)
        return CL_ERR;
    bool paused = job->state == CL_DBJOB_PAUSED;
    job->state = CL_DBJOB_CLOSING;
    job->close_cb = cb;
    job->close_arg = arg;
    uv_timer_stop(&job->tick);
    uv_timer_stop(&job->pause);
    if (paused)
        job->handlers.resume(job->arg, CL_ERR_RETRY);
    /* Cancels the statement in flight: its done callback runs (CL_ERR_RETRY)
     * before the pool's close callback, while the owner's SQL is alive. */
    if (cl_db_pool_close(job->pool, on_pool_closed, job) != CL_OK)
        on_pool_closed(job);
    return CL_OK;
}

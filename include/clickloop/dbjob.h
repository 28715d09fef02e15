/* dbjob: a periodic database job on the loop, the machinery the aggregator,
 * retention and the indexer share: an interval timer, a connection of the
 * job's own, runs that never overlap, and a close that waits for the
 * statement in flight. The owner supplies what a run does.
 *
 * The connection is a pool of one (db.h): it brings the reconnect with
 * backoff, and statements issued while it is down wait for it rather than
 * fail. The db module reports the connection's events itself.
 *
 * Policies, the same for every job:
 * - First run: at start. cl_dbjob_start arms the timer with no delay, so the
 *   first run begins on the next loop iteration (its first statement waits
 *   in the pool until the connection is up), then one every interval.
 * - Busy tick: a tick that finds a run in progress (or paused) is skipped and
 *   counted (ticks_skipped); the next run starts at the next tick. Runs never
 *   overlap and never queue up.
 * - A manual run (cl_dbjob_run_now) starts at once when no run is in
 *   progress, and is refused (CL_ERR_RETRY) otherwise; it does not move the
 *   timer.
 * - Interval change: in place; the next tick is one new interval from now.
 * - Close: no run starts any more; a paused run ends (resume gets
 *   CL_ERR_RETRY); the statement in flight is cancelled by the pool's close
 *   (its done callback gets CL_ERR_RETRY and its transaction rolls back);
 *   the job is freed in the close callbacks of its handles, then cb runs. An
 *   owner that must finish its statements rather than cancel them (the
 *   indexer's acknowledgements) waits for them before closing the job.
 *
 * The job never logs: its owner logs its runs (log.h). */
#ifndef CLICKLOOP_DBJOB_H
#define CLICKLOOP_DBJOB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "clickloop/common.h"
#include "clickloop/db.h"
#include "clickloop/db_pool.h"

typedef struct cl_dbjob_s cl_dbjob_t;

typedef enum {
    CL_DBJOB_IDLE = 0, /* no run in progress */
    CL_DBJOB_RUNNING,  /* a run in progress: its statements in flight, or about to be */
    CL_DBJOB_PAUSED,   /* a run in progress, waiting out cl_dbjob_pause's delay */
    CL_DBJOB_CLOSING,  /* closing: no run starts, no statement is accepted */
} cl_dbjob_state_t;

/* What a run does, supplied by the owner; `arg` is the params' arg. */
typedef struct cl_dbjob_handlers_s {
    /* A run begins (a tick, or cl_dbjob_run_now with manual = true). Issue
     * its statements with cl_dbjob_query, and end it with cl_dbjob_run_end,
     * from inside this call if there is nothing to do. */
    void (*run)(void *arg, bool manual);
    /* Optional, for owners that call cl_dbjob_pause: the delay is over and the
     * run goes on (status CL_OK), or the job closed meanwhile (CL_ERR_RETRY):
     * the run is over, and cl_dbjob_run_end is not needed. */
    void (*resume)(void *arg, int status);
} cl_dbjob_handlers_t;

typedef struct cl_dbjob_params_s {
    cl_db_params_t db;    /* the job's own connection; strings copied */
    uint64_t interval_ms; /* > 0 */
    cl_dbjob_handlers_t handlers;
    void *arg;
} cl_dbjob_params_t;

typedef struct cl_dbjob_stats_s {
    cl_dbjob_state_t state;
    uint64_t runs;          /* runs started, by ticks and manually */
    uint64_t ticks_skipped; /* ticks that found a run in progress */
} cl_dbjob_stats_t;

/* Create a job and start connecting; no run starts before cl_dbjob_start or
 * cl_dbjob_run_now. */
int cl_dbjob_new(uv_loop_t *loop, const cl_dbjob_params_t *params, cl_dbjob_t **out,
                 char err[CL_ERR_LEN]);

/* Run at the next loop iteration, then every interval (again from now when
 * called again). CL_ERR when closing. */
int cl_dbjob_start(cl_dbjob_t *job, char err[CL_ERR_LEN]);

/* Start a run now (handlers.run is called from inside this call, with manual
 * = true). CL_ERR_RETRY while a run is in progress, CL_ERR when closing; the
 * run callback is not called then. */
int cl_dbjob_run_now(cl_dbjob_t *job, char err[CL_ERR_LEN]);

/* The owner's run is over: the next tick may start another. Ignored while
 * closing (the run was cancelled); a programming error when no run is in
 * progress. */
void cl_dbjob_run_end(cl_dbjob_t *job);

/* Wait `delay_ms` within the run in progress (yielding to the loop between
 * two steps of one run), then call handlers.resume. */
void cl_dbjob_pause(cl_dbjob_t *job, uint64_t delay_ms);

/* Issue `sql` on the job's connection, as cl_db_pool_query (queued while the
 * connection is down or busy; `sql` alive until done). Allowed outside runs
 * too (the indexer's acknowledgements); refused while closing. */
int cl_dbjob_query(cl_dbjob_t *job, const char *sql, size_t len,
                   const cl_db_query_handlers_t *handlers, void *arg, char err[CL_ERR_LEN]);

/* Change the interval in place (0 is ignored): when started, the next tick is
 * one new interval from now. */
void cl_dbjob_set_interval(cl_dbjob_t *job, uint64_t interval_ms);

cl_dbjob_state_t cl_dbjob_state(const cl_dbjob_t *job);
void cl_dbjob_stats(const cl_dbjob_t *job, cl_dbjob_stats_t *out);

/* Close as described at the top; cb (may be NULL) runs once everything is
 * closed and freed. CL_ERR when already closing. */
int cl_dbjob_close(cl_dbjob_t *job, cl_close_cb cb, void *arg);

#endif

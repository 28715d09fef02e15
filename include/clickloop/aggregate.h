/* aggregate: the runner of the aggregation (cl_aggregator_t): it issues the
 * SQL of aggregate_sql.h (which states the rules) from the loop, as a
 * periodic database job (dbjob.h). It logs its runs itself (component
 * "aggregate"): one line per change of state, failures that repeat once.
 *
 * It issues that SQL from the loop on a connection of its own (a dbjob),
 * never two runs at once, and with several clickloop
 * instances on one database only one aggregates at a time: each run first
 * takes the MariaDB named lock "clickloop.aggregate.<database>" with
 * GET_LOCK(..., 0) and is skipped when another session holds it. */
#ifndef CLICKLOOP_AGGREGATE_H
#define CLICKLOOP_AGGREGATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "clickloop/aggregate_sql.h"
#include "clickloop/common.h"
#include "clickloop/db_pool.h"

typedef struct cl_aggregator_s cl_aggregator_t;

/* The outcome of one run, valid during the callback only. */
typedef struct cl_aggregator_run_result_s {
    /* 0: done (or skipped because another instance holds the lock); CL_ERR:
     * a permanent SQL error (a bug or a schema that drifted); CL_ERR_RETRY:
     * the connection failed or the aggregator closed. A failed run changed
     * nothing: the next run does its work. */
    int status;
    bool skipped_locked; /* another session aggregates; nothing was done */
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

typedef struct cl_aggregator_params_s {
    /* Connection of its own (its dbjob's). The read timeout bounds the
     * longest statement of a run: give it room for the largest window to
     * recompute. Strings are copied. */
    cl_db_params_t db;
    cl_aggregate_spec_t spec; /* the array is copied */
    uint64_t interval_ms;     /* > 0 */
    /* retention.raw_days: windows older than that are frozen (see the rules
     * in aggregate_sql.h); 0: retention is off, and only the windows before the bound
     * retention recorded earlier stay frozen. */
    uint32_t retention_raw_days;
    /* Called after every run, once the aggregator has logged it (for
     * telemetry, and to kick the indexer); may be NULL. */
    cl_aggregator_run_cb on_run;
    void *on_run_arg;
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

/* Create an aggregator and start connecting; no run starts before
 * cl_aggregator_start or cl_aggregator_run_now. */
int cl_aggregator_new(uv_loop_t *loop, const cl_aggregator_params_t *params, cl_aggregator_t **out,
                      char err[CL_ERR_LEN]);

/* Run now, then every interval (the job's first-run policy, dbjob.h). A tick
 * that finds a run in progress is skipped (counted in skipped_busy): runs
 * never overlap. */
int cl_aggregator_start(cl_aggregator_t *agg, char err[CL_ERR_LEN]);

/* Change the interval (configuration reload); the next run is one new
 * interval from now. */
void cl_aggregator_set_interval(cl_aggregator_t *agg, uint64_t interval_ms);

/* Change retention.raw_days (configuration reload); applies from the next
 * run. */
void cl_aggregator_set_retention_days(cl_aggregator_t *agg, uint32_t raw_days);

void cl_aggregator_stats(const cl_aggregator_t *agg, cl_aggregator_stats_t *out);

/* Stop the timer, cancel a run in progress (its transaction rolls back and
 * its events stay queued; its callbacks get CL_ERR_RETRY), close the job
 * and free. cb runs once everything is closed. */
int cl_aggregator_close(cl_aggregator_t *agg, cl_close_cb cb, void *arg);

#endif

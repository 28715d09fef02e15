/* retention: deletes raw events older than `retention.raw_days` days, a small
 * batch at a time, so that the tables stay bounded without ever holding up
 * ingestion.
 *
 * What goes: click_data rows whose event_time lies before the cutoff (now
 * minus raw_days days, UTC), with the geo_data, user_agent_data and
 * agg_pending and agg_done rows of the same row keys, rejected_events rows
 * whose rejected_at lies before it, and the agg_users rows (aggregate.h) of
 * windows starting before it, which are frozen and never counted again. The aggregates in agg_stats
 * stay: they outlive the events they were computed from. An event deleted while still pending
 * aggregation is simply never aggregated (its windows were old anyway);
 * deleting its agg_pending row keeps that queue bounded.
 *
 * One batch is one multi-statement query (cl_retention_batch_sql): one
 * transaction deletes up to batch_rows events, children first, picked through
 * idx_click_event_time in event-time order, and, when it deleted any, raises
 * retention_state.pruned_before to the cutoff (never lowers it). That row
 * outlives the policy: the aggregator keeps the windows before it frozen even
 * after raw_days is raised or retention is switched off, since their rows
 * stay deleted (aggregate.h). Then one statement deletes up to batch_rows
 * agg_users rows (a key range: the key begins with the window start) and one
 * up to batch_rows rejected events in id order, below the first id that is not old
 * (rejected events arrive in id order, so the old ones are a prefix and the
 * scan stays a primary-key range instead of the whole table). Both run in READ
 * COMMITTED: no gap locks, and reads take no locks, so the writers of new
 * events never wait for a deletion; only a redelivery of an event being
 * deleted waits, for one short transaction.
 *
 * The runner (cl_retention_t) runs every `interval` (the first run at start)
 * as a periodic database job (dbjob.h) with a connection of its own. A run
 * goes on batch after batch, yielding to the loop between them (the job's
 * pause), while a batch still deletes batch_rows events or rejected events; a
 * run never overlaps another. It logs its runs itself (component
 * "retention"). */
#ifndef CLICKLOOP_RETENTION_H
#define CLICKLOOP_RETENTION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "clickloop/buf.h"
#include "clickloop/common.h"
#include "clickloop/db_pool.h"

/* The tables a batch deletes from, in the order of its summary row. */
typedef enum {
    CL_RETENTION_CLICK_DATA = 0,
    CL_RETENTION_GEO_DATA,
    CL_RETENTION_USER_AGENT_DATA,
    CL_RETENTION_AGG_PENDING,
    CL_RETENTION_REJECTED_EVENTS,
    CL_RETENTION_AGG_DONE,
    CL_RETENTION_AGG_USERS,
    CL_RETENTION_TABLE_COUNT,
} cl_retention_table_t;

/* Largest raw_days and batch_rows accepted (the configuration's limits). */
#define CL_RETENTION_MAX_DAYS 36500u
#define CL_RETENTION_MAX_BATCH_ROWS 100000u

/* The table's name ("click_data", ...), for logs and metric labels. */
const char *cl_retention_table_name(cl_retention_table_t table);

/* ---- Pure ----------------------------------------------------------------- */

/* The cutoff for `raw_days` (1 .. CL_RETENTION_MAX_DAYS) at wall-clock time
 * `now_ms` (ms since the epoch, UTC): rows strictly older are deleted. */
int64_t cl_retention_cutoff_ms(int64_t now_ms, uint32_t raw_days);

/* Append the SQL of one batch (statements separated by ";\n", for the
 * multi-statement API) that deletes at most batch_rows (1 ..
 * CL_RETENTION_MAX_BATCH_ROWS) events older than cutoff_ms with their child
 * rows, recording the cutoff in retention_state.pruned_before in the same
 * transaction when it deleted an event (the larger of the two is kept), then
 * at most batch_rows rejected events older than it, and set
 * *summary_statement to the index of the SELECT that reports, as one row of
 * CL_RETENTION_TABLE_COUNT columns in cl_retention_table_t order, the rows it
 * deleted from each table. CL_ERR for arguments out of range (cutoff outside
 * the DATETIME range). */
int cl_retention_batch_sql(cl_buf_t *out, int64_t cutoff_ms, uint32_t batch_rows,
                           unsigned int *summary_statement, char err[CL_ERR_LEN]);

/* ---- The runner on the loop ------------------------------------------------ */

typedef struct cl_retention_s cl_retention_t;

typedef struct cl_retention_params_s {
    cl_db_params_t db;    /* its own connection (a dbjob); strings copied */
    uint32_t raw_days;    /* 1 .. CL_RETENTION_MAX_DAYS */
    uint32_t batch_rows;  /* 1 .. CL_RETENTION_MAX_BATCH_ROWS */
    uint64_t interval_ms; /* > 0 */
} cl_retention_params_t;

struct cl_config_s;
/* The `retention` section and the connection of `mariadb`; the callbacks
 * are the caller's to set. */
void cl_retention_params_from_config(const struct cl_config_s *config,
                                     cl_retention_params_t *params);

typedef struct cl_retention_stats_s {
    uint64_t runs; /* completed with status 0 */
    uint64_t runs_failed;
    uint64_t batches; /* committed */
    uint64_t rows_deleted[CL_RETENTION_TABLE_COUNT];
    uint64_t ticks_skipped; /* intervals that found the previous run still going */
    bool running;
} cl_retention_stats_t;

/* Create and start connecting; nothing is deleted before cl_retention_start. */
int cl_retention_new(uv_loop_t *loop, const cl_retention_params_t *params, cl_retention_t **out,
                     char err[CL_ERR_LEN]);

/* Run now, then every interval. */
int cl_retention_start(cl_retention_t *rt, char err[CL_ERR_LEN]);

/* Change the policy in place (configuration reload): raw_days and batch_rows
 * apply from the next run and the next batch, the interval from now (the
 * next run is one new interval away). CL_ERR, changing nothing, for values out
 * of range. */
int cl_retention_set_policy(cl_retention_t *rt, uint32_t raw_days, uint32_t batch_rows,
                            uint64_t interval_ms, char err[CL_ERR_LEN]);

void cl_retention_stats(const cl_retention_t *rt, cl_retention_stats_t *out);

/* Stop the timers, cancel a batch in flight (its transaction rolls back),
 * close the job and free; cb runs once everything is closed. CL_ERR when
 * already closing. */
int cl_retention_close(cl_retention_t *rt, cl_close_cb cb, void *arg);

#endif

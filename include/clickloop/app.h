/* app: the supervisor of clickloop's parts: it starts them from the
 * configuration, applies a reload and stops them, with one mechanism for
 * every part.
 *
 * The parts (reload.h's CL_PART_*, plus the admin listener) are one table in
 * app.c: for each, whether the configuration runs it, how it starts and the
 * order in which its modules close. Ingest is the MariaDB pool, the store
 * (the schema is migrated first: every other part waits for it), the event
 * parser, the pipeline and the Kafka consumer; the aggregator, the indexer
 * (with its Elasticsearch sink) and retention are one periodic job each; the
 * admin listener serves /healthz, /readyz and /metrics from start-up to the
 * last moment of a shutdown.
 *
 *   start-up   every wanted part starts; a part that needs the schema starts
 *              once ingest has migrated it.
 *   reload     the file is read and checked again; if anything is wrong the
 *              process goes on with the configuration it has. Otherwise each
 *              changed setting is applied in place by the part that owns it,
 *              or the parts it restarts are stopped (ingest drains first:
 *              consumption paused, batches in flight written, the consumer
 *              closed, which commits their offsets) and started again from
 *              the new configuration. Readiness says "restarting" meanwhile;
 *              the admin listener keeps serving.
 *   shutdown   every part stops: ingest drains as above, the indexer lets the
 *              bulk requests in flight finish (not the documents waiting for a
 *              retry while the cluster is down: they stay marked in MariaDB),
 *              the admin listener closes last. The exit status is 0, or 1 when
 *              the drain timeout ran out with ingest batches unwritten (they
 *              are consumed again after the restart) or a part could not
 *              start. A second shutdown request exits at once.
 *
 * The app logs the lifecycle (start, stop, reload, restart); the parts log
 * what happens inside them (log.h). */
#ifndef CLICKLOOP_APP_H
#define CLICKLOOP_APP_H

#include <uv.h>

#include "clickloop/common.h"
#include "clickloop/config.h"

typedef struct cl_app_s cl_app_t;

/* Make the app on `loop` with a loaded, valid configuration, which it owns
 * from now on; `config_path` (borrowed, kept alive by the caller) is read
 * again by cl_app_reload(). `on_closed` runs once when every part and the
 * admin listener have closed after a shutdown: the caller closes its own
 * handles then, so that the loop ends. */
cl_app_t *cl_app_new(uv_loop_t *loop, const char *config_path, cl_config_t *config,
                     cl_close_cb on_closed, void *arg);

/* Start the admin listener and every part the configuration runs. A failure
 * is logged and begins a shutdown with exit status 1. */
void cl_app_start(cl_app_t *app);

/* Read the configuration file again and apply it (SIGHUP). While starting or
 * restarting, the reload waits until that is complete; while shutting down
 * it is ignored. */
void cl_app_reload(cl_app_t *app);

/* Stop everything (SIGTERM, SIGINT; `why` names the cause in the log). A
 * second call exits the process at once with status 1. */
void cl_app_shutdown(cl_app_t *app, const char *why);

/* The exit status, once on_closed ran. */
int cl_app_exit_code(const cl_app_t *app);

/* Free after on_closed ran. */
void cl_app_free(cl_app_t *app);

#endif

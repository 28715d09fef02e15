/* app_parts: what the app's supervisor (app.c) and its parts (app_parts.c)
 * share; private to those two files. app.c owns the lifecycle and the one
 * close path, app_parts.c the table of parts: how each starts, the steps in
 * which it stops, what a drain timeout cuts short, what it applies in place. */
#ifndef CLICKLOOP_APP_PARTS_H
#define CLICKLOOP_APP_PARTS_H

#include <stdbool.h>
#include <uv.h>

#include "clickloop/app.h"
#include "clickloop/buf.h"
#include "clickloop/metrics.h"
#include "clickloop/reload.h"
#include "clickloop/telemetry.h"

typedef enum {
    APP_STARTING = 0, /* parts starting (schema migration) */
    APP_RUNNING,
    APP_RESTARTING, /* reload: the affected parts stopping, then starting again */
    APP_DRAINING,   /* shutdown: parts stopping */
    APP_CLOSING,    /* every part closed */
} app_state_t;

typedef enum {
    PART_DOWN = 0,
    PART_STARTING, /* ingest only: schema migration in flight */
    PART_UP,
    PART_STOPPING,
} part_state_t;

/* The parts, in start order (and stop order: ingest stops consuming first).
 * Their bits are reload.h's CL_PART_* for the four a reload may restart. */
enum { P_ADMIN, P_INGEST, P_AGGREGATOR, P_INDEXER, P_RETENTION, P_COUNT };
#define BIT_ADMIN (1u << 8)

/* The modules the parts are made of, each closed by cl_app_close_module(). */
typedef enum {
    M_POOL,
    M_STORE,
    M_PIPELINE,
    M_SOURCE,
    M_AGGREGATOR,
    M_SINK,
    M_INDEXER,
    M_RETENTION,
    M_ADMIN,
    M_COUNT
} module_id_t;

typedef struct module_s {
    cl_app_t *app;
    module_id_t id;
    void *obj;
    bool closing;
    bool retired; /* a sink replaced by a reload: the record is freed once closed */
} module_t;

typedef struct part_s part_t;
typedef struct part_def_s part_def_t;

struct part_s {
    const part_def_t *def;
    part_state_t state;
    bool was_up;   /* stopping: it had started completely */
    bool finish;   /* stopping for a shutdown: requests in flight may finish */
    bool stepping; /* inside step_part(): completions wait for it */
    /* The current stop step waits for work in flight to finish (ingest's
     * drain, the sink's requests): what a drain timeout cuts short. */
    bool draining;
    bool again;    /* wanted again by a reload while it was stopping */
    unsigned step; /* next stop step */
    unsigned wait; /* closes and waits of the current step not yet complete */
};

struct part_def_s {
    const char *name;
    unsigned bit;
    unsigned needs; /* parts up before this one starts */
    /* Create and start; on return the part is up, or STARTING until it calls
     * part_started(). CL_ERR: the app shuts down (whatever was created is
     * closed by the stop steps). */
    int (*start)(cl_app_t *app, part_t *part);
    /* Begin stop step number part->step - 1 (closes through close_module,
     * waits through part->wait); false when no step is left. */
    bool (*stop_step)(cl_app_t *app, part_t *part);
    /* The drain timeout ran out: stop waiting for what may never finish. */
    void (*force)(cl_app_t *app, part_t *part);
    /* Apply the settings of a reload that this part takes in place. */
    void (*apply)(cl_app_t *app, const cl_reload_plan_t *plan, const cl_config_t *old);
};

struct cl_app_s {
    uv_loop_t *loop;
    const char *config_path;
    cl_config_t *config;
    app_state_t state;
    int exit_code;
    cl_close_cb on_closed;
    void *on_closed_arg;

    part_t parts[P_COUNT];
    module_t mod[M_COUNT];
    cl_event_parser_t *parser; /* ingest's; freed, not closed */

    unsigned to_start;      /* parts waiting for the parts they need */
    unsigned restart_parts; /* parts a reload stops, to start again once all are down */
    uint64_t restart_began_ms;
    bool stopping_parts; /* inside stop_parts(): completions wait for its end */
    bool reload_pending; /* reload while starting or restarting: once running */
    bool drain_forced;   /* the drain timeout ran out */

    /* Restarts of ingest after fatal consumer errors (cl_app_ingest_fatal):
     * how many came in a row, each within CL_APP_FATAL_AGAIN_MS of the
     * previous restart's end, and when that end was. */
    unsigned fatal_restarts;
    uint64_t fatal_restart_done_ms;
    uv_timer_t fatal_timer;

    cl_metrics_t *metrics;
    cl_telemetry_t *telemetry;
    uv_timer_t drain_timer;
    uv_timer_t sink_timer;
    unsigned open_timers;
    bool libraries; /* the MariaDB and curl libraries are initialised */
};

extern const part_def_t cl_app_parts[P_COUNT];

#define POOL(app) ((cl_db_pool_t *)(app)->mod[M_POOL].obj)
#define STORE(app) ((cl_store_t *)(app)->mod[M_STORE].obj)
#define PIPELINE(app) ((cl_pipeline_t *)(app)->mod[M_PIPELINE].obj)
#define SOURCE(app) ((cl_kafka_source_t *)(app)->mod[M_SOURCE].obj)
#define AGGREGATOR(app) ((cl_aggregator_t *)(app)->mod[M_AGGREGATOR].obj)
#define SINK(app) ((cl_es_sink_t *)(app)->mod[M_SINK].obj)
#define INDEXER(app) ((cl_indexer_t *)(app)->mod[M_INDEXER].obj)
#define RETENTION(app) ((cl_retention_t *)(app)->mod[M_RETENTION].obj)
#define ADMIN(app) ((cl_admin_t *)(app)->mod[M_ADMIN].obj)

/* A module was created (obj may be NULL when its creation failed). */
void cl_app_set_module(cl_app_t *app, module_id_t id, void *obj);
/* Close `m` as part of its part's current step (or, retired, on its own):
 * the part waits for it. */
void cl_app_close_module(cl_app_t *app, module_t *m);
/* One close or wait of the part's current step completed. */
void cl_app_wait_done(cl_app_t *app, part_t *p);
int cl_app_start_part(cl_app_t *app, part_t *p);
/* A part that started asynchronously (STARTING) is up. */
void cl_app_part_started(cl_app_t *app, part_t *p);
void cl_app_stop_part(cl_app_t *app, part_t *p, bool finish);
void cl_app_begin_shutdown(cl_app_t *app, const char *why, int exit_code);
/* The Kafka consumer of ingest cannot go on (a fatal librdkafka error):
 * restart ingest from the committed offsets, after a backoff; exit 1 when
 * the restarts keep failing. */
void cl_app_ingest_fatal(void *app, const char *message);
/* The admin listener's /readyz verdict. */
bool cl_app_readiness(void *arg, cl_buf_t *missing);

#endif

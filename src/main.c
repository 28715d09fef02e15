/* clickloop: command line, wiring and signals. Only this file decides what to
 * print; the modules return errors and main logs them.
 *
 * main runs four parts (reload.h): ingest (MariaDB pool, store, event parser,
 * pipeline, Kafka consumer), the aggregator, the indexer with its
 * Elasticsearch sink, and retention. One start path creates them from the
 * configuration and one stop path closes them, and both serve three callers:
 *
 *   start-up   start every part: the pool connects, the schema is migrated,
 *              then ingest consumes and the other parts begin.
 *   SIGHUP     the file is read and checked again; if anything is wrong the
 *              process goes on with the configuration it has. Otherwise each
 *              changed setting is applied in place, or the parts that use it
 *              are stopped (ingest drains first: consumption paused, batches
 *              in flight written, the consumer closed, which commits their
 *              offsets) and started again from the new configuration. Readiness
 *              says "restarting" meanwhile; the admin listener keeps serving.
 *   SIGTERM    every part stops: ingest drains as above, the indexer lets the
 *   SIGINT     bulk requests in flight finish (not the documents waiting for a
 *              retry while the cluster is down: they stay marked in MariaDB).
 *              Exit 0 once everything is closed, or 1 when the drain timeout
 *              ran out with ingest batches still unwritten (they are consumed
 *              again after the restart). A second signal exits at once. */
#include <curl/curl.h>
#include <getopt.h>
#include <mysql.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>
#include <uv.h>

#include "cl_version.h"
#include "clickloop/admin.h"
#include "clickloop/aggregate.h"
#include "clickloop/config.h"
#include "clickloop/db.h"
#include "clickloop/es_sink.h"
#include "clickloop/event.h"
#include "clickloop/indexer.h"
#include "clickloop/kafka_source.h"
#include "clickloop/log.h"
#include "clickloop/pipeline.h"
#include "clickloop/reload.h"
#include "clickloop/retention.h"
#include "clickloop/store.h"
#include "clickloop/telemetry.h"

/* How often a shutdown looks whether the sink has finished its requests. */
#define SINK_IDLE_CHECK_MS 20
/* After the drain timeout forced everything closed, how long closing may take
 * before the process exits regardless (a consumer that cannot leave its
 * group, a socket that does not close). */
#define CLOSE_GRACE_MS 5000

typedef enum {
    APP_STARTING = 0, /* parts starting (schema migration) */
    APP_RUNNING,
    APP_RESTARTING, /* reload: the affected parts stopping, then starting again */
    APP_DRAINING,   /* signal received: parts stopping */
    APP_CLOSING,    /* every part closed; main's own handles closing */
} app_state_t;

typedef enum {
    PART_DOWN = 0,
    PART_STARTING, /* ingest only: schema migration in flight */
    PART_UP,
    PART_STOPPING,
} part_state_t;

typedef struct {
    uv_loop_t *loop;
    const char *config_path;
    cl_config_t *config;
    app_state_t state;
    int exit_code;

    part_state_t ingest;
    bool ingest_draining; /* stopping: waiting for the pipeline to drain */
    cl_db_pool_t *pool;
    cl_store_t *store;
    cl_event_parser_t *parser;
    cl_pipeline_t *pipeline;
    cl_kafka_source_t *source;

    part_state_t aggregation;
    cl_aggregator_t *aggregator;

    part_state_t indexing;
    bool sink_draining; /* stopping: waiting for the sink's requests in flight */
    cl_es_sink_t *sink;
    cl_indexer_t *indexer;
    unsigned retired_sinks; /* sinks replaced by a reload, still closing */

    part_state_t retention_part;
    bool retention_again; /* switched off and on again before it had closed */
    cl_retention_t *retention;

    unsigned after_schema;  /* parts to start once the schema is migrated */
    unsigned restart_parts; /* parts a reload stops, to start again once all are down */
    uint64_t restart_began_ms;
    bool stopping_parts; /* inside stop_parts(): completions wait for its end */
    bool reload_pending; /* SIGHUP while starting or restarting: reload once running */
    bool drain_forced;   /* the drain timeout ran out */

    cl_metrics_t *metrics;
    cl_telemetry_t *telemetry;
    /* Modules handed to cl_telemetry_retire() that are still closing. */
    cl_telemetry_sources_t retired;
    cl_admin_t *admin;
    uv_signal_t sig_term, sig_int, sig_hup;
    uv_timer_t drain_timer;
    uv_timer_t sink_timer;
} app_t;

static void usage(FILE *out)
{
    fprintf(out,
            "usage: clickloop --config FILE\n"
            "       clickloop --check-config FILE\n"
            "       clickloop --version | --help\n"
            "\n"
            "  -c, --config FILE        run the service with this JSON configuration\n"
            "  -C, --check-config FILE  validate FILE: every problem is printed on stderr as\n"
            "                           'file: json.path: problem'; exit 0 if valid, 1 if not\n"
            "  -V, --version            print the version and exit\n"
            "  -h, --help               print this help and exit\n"
            "\n"
            "Signals: SIGTERM/SIGINT drain and exit (a second one exits at once);\n"
            "SIGHUP re-reads the configuration and applies what changed.\n"
            "Configuration reference: docs/configuration.md\n");
}

static cl_config_t *load_config(const char *path)
{
    cl_config_t *config = NULL;
    cl_config_errors_t errs;
    if (cl_config_load_file(path, NULL, &config, &errs) != CL_OK) {
        for (size_t i = 0; i < errs.count; i++)
            fprintf(stderr, "%s\n", errs.messages[i]);
        config = NULL;
    }
    cl_config_errors_free(&errs);
    return config;
}

static void pipeline_params_from_config(const cl_config_t *c, cl_telemetry_t *t,
                                        cl_pipeline_params_t *p)
{
    cl_pipeline_params_from_config(c, p);
    p->on_batch_committed = cl_telemetry_batch_committed;
    p->on_batch_committed_arg = t;
}

static void apply_log_config(const cl_config_t *c)
{
    cl_log_set_level(c->log.level);
    cl_log_set_format(c->log.format);
}

/* Tell telemetry which modules exist right now (they come and go); modules
 * already retired (closing, their counts kept) are not read again. */
static void update_telemetry(app_t *app)
{
    const cl_telemetry_sources_t *r = &app->retired;
#define LIVE(field) (app->field == r->field ? NULL : app->field)
    cl_telemetry_sources_t s = {
        .pipeline = LIVE(pipeline),
        .source = LIVE(source),
        .pool = LIVE(pool),
        .store = LIVE(store),
        .aggregator = LIVE(aggregator),
        .sink = LIVE(sink),
        .indexer = LIVE(indexer),
        .retention = LIVE(retention),
    };
#undef LIVE
    cl_telemetry_set_sources(app->telemetry, &s);
}

/* Keep the final counts of a module about to close (see telemetry.h). */
static void retire(app_t *app, const cl_telemetry_sources_t *going)
{
    cl_telemetry_retire(app->telemetry, going);
#define KEEP(field)                                                                                \
    do {                                                                                           \
        if (going->field != NULL)                                                                  \
            app->retired.field = going->field;                                                     \
    } while (0)
    KEEP(pipeline);
    KEEP(source);
    KEEP(pool);
    KEEP(store);
    KEEP(aggregator);
    KEEP(indexer);
    KEEP(retention);
#undef KEEP
    update_telemetry(app);
}

static void on_pool_event(const cl_db_pool_event_t *ev, void *arg)
{
    CL_UNUSED(arg);
    switch (ev->type) {
    case CL_DB_POOL_EVENT_CONNECTED:
        cl_log_info("db", "connection %u up (%u connected)", ev->conn_index, ev->connected);
        break;
    case CL_DB_POOL_EVENT_CONNECT_FAILED:
    case CL_DB_POOL_EVENT_LOST:
        cl_log(ev->status == CL_ERR ? CL_LOG_ERROR : CL_LOG_WARN, "db",
               "connection %u %s: %s (error %u)%s; retrying in %llu ms", ev->conn_index,
               ev->type == CL_DB_POOL_EVENT_LOST ? "lost" : "failed", ev->message, ev->error_code,
               ev->status == CL_ERR ? " - check the mariadb settings" : "",
               (unsigned long long)ev->retry_in_ms);
        break;
    }
}

/* ======================================================================== */
/* Stopping parts                                                            */
/* ======================================================================== */

static void start_parts(app_t *app, unsigned parts);
static void begin_shutdown(app_t *app, const char *why, int exit_code);
static void reload(app_t *app);

static part_state_t *part_state(app_t *app, unsigned part)
{
    switch (part) {
    case CL_PART_INGEST:
        return &app->ingest;
    case CL_PART_AGGREGATOR:
        return &app->aggregation;
    case CL_PART_INDEXER:
        return &app->indexing;
    default:
        return &app->retention_part;
    }
}

static bool parts_down(app_t *app, unsigned parts)
{
    for (unsigned part = 1; part <= CL_PARTS_ALL; part <<= 1) {
        if ((parts & part) != 0 && *part_state(app, part) != PART_DOWN)
            return false;
    }
    return true;
}

static void on_handle_closed(uv_handle_t *h)
{
    CL_UNUSED(h);
}

static void close_app_handles(app_t *app)
{
    if (app->admin != NULL) {
        cl_admin_close(app->admin, NULL, NULL);
        app->admin = NULL;
    }
    uv_close((uv_handle_t *)&app->sig_term, on_handle_closed);
    uv_close((uv_handle_t *)&app->sig_int, on_handle_closed);
    uv_close((uv_handle_t *)&app->sig_hup, on_handle_closed);
    uv_close((uv_handle_t *)&app->drain_timer, on_handle_closed);
    uv_close((uv_handle_t *)&app->sink_timer, on_handle_closed);
}

/* A part finished stopping (or one of several did): go on with whatever
 * waited for it. */
static void parts_changed(app_t *app)
{
    if (app->stopping_parts)
        return; /* stop_parts() looks again when it is done */
    switch (app->state) {
    case APP_DRAINING:
        if (!parts_down(app, CL_PARTS_ALL) || app->retired_sinks > 0)
            return;
        app->state = APP_CLOSING;
        uv_timer_stop(&app->drain_timer);
        close_app_handles(app);
        break;
    case APP_RESTARTING: {
        if (!parts_down(app, app->restart_parts))
            return;
        uv_timer_stop(&app->drain_timer);
        char names[128];
        cl_reload_describe_parts(app->restart_parts, names, sizeof names);
        cl_log_info("main",
                    "restart: %s stopped after %llu ms; starting with the new "
                    "configuration",
                    names, (unsigned long long)(cl_now_ms() - app->restart_began_ms));
        unsigned parts = app->restart_parts;
        app->restart_parts = 0;
        app->drain_forced = false;
        start_parts(app, parts);
        break;
    }
    case APP_STARTING:
    case APP_RUNNING:
    case APP_CLOSING:
        break;
    }
}

static void part_down(app_t *app, unsigned part)
{
    *part_state(app, part) = PART_DOWN;
    parts_changed(app);
}

/* ---- ingest ------------------------------------------------------------------ */

static void maybe_ingest_down(app_t *app)
{
    if (app->ingest != PART_STOPPING || app->pool != NULL || app->store != NULL ||
        app->pipeline != NULL || app->source != NULL)
        return;
    if (app->parser != NULL) {
        cl_event_parser_free(app->parser);
        app->parser = NULL;
    }
    part_down(app, CL_PART_INGEST);
}

static void on_pool_closed(void *arg)
{
    app_t *app = arg;
    app->pool = app->retired.pool = NULL;
    update_telemetry(app);
    maybe_ingest_down(app);
}

static void on_pipeline_closed(void *arg)
{
    app_t *app = arg;
    app->pipeline = app->retired.pipeline = NULL;
    update_telemetry(app);
    maybe_ingest_down(app);
}

/* The store completes every batch it still holds before this runs, so the
 * pipeline has seen all of them and nothing is in flight any more. */
static void on_store_closed(void *arg)
{
    app_t *app = arg;
    app->store = app->retired.store = NULL;
    update_telemetry(app);
    if (app->pipeline != NULL) {
        retire(app, &(cl_telemetry_sources_t){.pipeline = app->pipeline});
        cl_pipeline_close(app->pipeline, on_pipeline_closed, app);
    } else {
        maybe_ingest_down(app);
    }
}

static void close_store_and_pool(app_t *app)
{
    retire(app, &(cl_telemetry_sources_t){.store = app->store, .pool = app->pool});
    if (app->store == NULL || cl_store_close(app->store, on_store_closed, app) != CL_OK)
        on_store_closed(app);
    /* The pool closes right away (store.h: that is what ends queries stuck on
     * a dead server). */
    if (app->pool != NULL && cl_db_pool_close(app->pool, on_pool_closed, app) != CL_OK)
        on_pool_closed(app);
}

static void on_source_closed(void *arg)
{
    app_t *app = arg;
    if (app->source != NULL)
        cl_log_info("main", "Kafka consumer closed, stored offsets committed");
    app->source = app->retired.source = NULL;
    update_telemetry(app);
    if (app->pipeline != NULL)
        cl_pipeline_set_source(app->pipeline, NULL);
    close_store_and_pool(app);
}

/* Consumer first (leaving the group commits the offsets stored so far), then
 * store and pool, then the pipeline. */
static void close_ingest(app_t *app)
{
    if (app->source != NULL) {
        retire(app, &(cl_telemetry_sources_t){.source = app->source});
        cl_kafka_source_close(app->source, on_source_closed, app);
    } else {
        on_source_closed(app);
    }
}

static void on_ingest_drained(void *arg)
{
    app_t *app = arg;
    if (!app->ingest_draining)
        return; /* the drain timeout went on without it */
    app->ingest_draining = false;
    cl_pipeline_stats_t st;
    cl_pipeline_get_stats(app->pipeline, &st);
    cl_log_info("main", "drained: %llu events stored, %llu rejected in %llu batches",
                (unsigned long long)st.stored, (unsigned long long)st.rejected,
                (unsigned long long)st.batches);
    close_ingest(app);
}

static void stop_ingest(app_t *app)
{
    part_state_t was = app->ingest;
    if (was == PART_DOWN || was == PART_STOPPING)
        return;
    app->ingest = PART_STOPPING;
    if (was == PART_UP && app->pipeline != NULL) {
        app->ingest_draining = true;
        cl_pipeline_drain(app->pipeline, on_ingest_drained, app);
        return;
    }
    /* Starting (the schema migration in flight) or only partly started:
     * nothing was consumed that would need writing. */
    close_ingest(app);
}

/* ---- aggregator ------------------------------------------------------------------- */

static void on_aggregator_closed(void *arg)
{
    app_t *app = arg;
    app->aggregator = app->retired.aggregator = NULL;
    update_telemetry(app);
    part_down(app, CL_PART_AGGREGATOR);
}

/* A run in progress rolls back; its events stay queued for the next one. */
static void stop_aggregator(app_t *app)
{
    if (app->aggregation == PART_DOWN || app->aggregation == PART_STOPPING)
        return;
    app->aggregation = PART_STOPPING;
    if (app->aggregator == NULL) {
        on_aggregator_closed(app);
        return;
    }
    retire(app, &(cl_telemetry_sources_t){.aggregator = app->aggregator});
    if (cl_aggregator_close(app->aggregator, on_aggregator_closed, app) != CL_OK)
        on_aggregator_closed(app);
}

/* ---- indexer and sink -------------------------------------------------------------- */

static void on_indexer_closed(void *arg)
{
    app_t *app = arg;
    app->indexer = app->retired.indexer = NULL;
    update_telemetry(app);
    part_down(app, CL_PART_INDEXER);
}

/* The indexer goes last: the documents of every sink it used report to it
 * until that sink has closed. It then writes the acknowledgements it holds. */
static void maybe_close_indexer(app_t *app)
{
    if (app->indexing != PART_STOPPING || app->sink != NULL || app->retired_sinks > 0)
        return;
    if (app->indexer == NULL) {
        part_down(app, CL_PART_INDEXER);
        return;
    }
    if (app->indexer == app->retired.indexer)
        return; /* closing already */
    retire(app, &(cl_telemetry_sources_t){.indexer = app->indexer});
    if (cl_indexer_close(app->indexer, on_indexer_closed, app) != CL_OK)
        on_indexer_closed(app);
}

static void on_sink_closed(void *arg)
{
    app_t *app = arg;
    app->sink = app->retired.sink = NULL;
    update_telemetry(app);
    maybe_close_indexer(app);
}

/* Requests in flight are aborted and their documents reported CANCELLED:
 * their rows stay marked for indexing in MariaDB. */
static void close_sink(app_t *app)
{
    uv_timer_stop(&app->sink_timer);
    app->sink_draining = false;
    if (app->sink == NULL) {
        maybe_close_indexer(app);
        return;
    }
    if (app->sink == app->retired.sink)
        return; /* closing already: on_sink_closed goes on */
    cl_es_sink_t *sink = app->sink;
    if (app->indexer != NULL)
        cl_indexer_set_sink(app->indexer, NULL);
    cl_telemetry_retire(app->telemetry, &(cl_telemetry_sources_t){.sink = sink});
    /* app->sink stays set until closed (telemetry no longer reads it): the
     * indexer waits for it. */
    app->retired.sink = sink;
    update_telemetry(app);
    if (cl_es_sink_close(sink, on_sink_closed, app) != CL_OK)
        on_sink_closed(app);
}

static bool sink_idle(const cl_es_sink_t *sink)
{
    cl_es_sink_stats_t st;
    cl_es_sink_stats(sink, &st);
    /* Documents waiting for a retry while every node is down would keep the
     * process for the whole drain timeout: they stay marked in MariaDB. */
    return st.requests_in_flight == 0 && (st.docs_pending == 0 || st.nodes_up == 0);
}

static void on_sink_check(uv_timer_t *t)
{
    app_t *app = t->data;
    if (app->sink == NULL || sink_idle(app->sink))
        close_sink(app);
}

static void stop_indexing(app_t *app, bool finish_requests)
{
    if (app->indexing == PART_DOWN || app->indexing == PART_STOPPING)
        return;
    app->indexing = PART_STOPPING;
    if (finish_requests && app->sink != NULL && app->indexer != NULL) {
        /* No new page is read; the documents already submitted go on, and
         * their outcomes still reach the indexer. */
        cl_indexer_set_sink(app->indexer, NULL);
        app->sink_draining = true;
        uv_timer_start(&app->sink_timer, on_sink_check, 0, SINK_IDLE_CHECK_MS);
        return;
    }
    close_sink(app);
}

static void on_retired_sink_closed(void *arg)
{
    app_t *app = arg;
    app->retired_sinks--;
    maybe_close_indexer(app);
    parts_changed(app);
}

/* ---- retention ---------------------------------------------------------------------- */

static int start_retention(app_t *app);

static void on_retention_closed(void *arg)
{
    app_t *app = arg;
    app->retention = app->retired.retention = NULL;
    update_telemetry(app);
    part_down(app, CL_PART_RETENTION);
    bool again = app->retention_again;
    app->retention_again = false;
    /* Switched on again while it closed (and not started meanwhile by a
     * restart that waited for it). */
    if (again && app->state == APP_RUNNING && app->retention_part == PART_DOWN &&
        app->config->retention.raw_days > 0 && start_retention(app) != CL_OK &&
        app->retention == NULL)
        app->retention_part = PART_DOWN;
}

static void stop_retention(app_t *app)
{
    if (app->retention_part == PART_DOWN || app->retention_part == PART_STOPPING)
        return;
    app->retention_part = PART_STOPPING;
    if (app->retention == NULL) {
        on_retention_closed(app);
        return;
    }
    retire(app, &(cl_telemetry_sources_t){.retention = app->retention});
    if (cl_retention_close(app->retention, on_retention_closed, app) != CL_OK)
        on_retention_closed(app);
}

/* ---- all of them --------------------------------------------------------------------- */

/* finish_requests: let the sink's bulk requests in flight finish (shutdown)
 * rather than abort them (restart). */
static void stop_parts(app_t *app, unsigned parts, bool finish_requests)
{
    app->stopping_parts = true;
    if (parts & CL_PART_INGEST)
        stop_ingest(app);
    if (parts & CL_PART_AGGREGATOR)
        stop_aggregator(app);
    if (parts & CL_PART_INDEXER)
        stop_indexing(app, finish_requests);
    if (parts & CL_PART_RETENTION)
        stop_retention(app);
    app->stopping_parts = false;
    parts_changed(app);
}

static void on_drain_timeout(uv_timer_t *t)
{
    app_t *app = t->data;
    if (app->drain_forced) {
        /* Forced closing did not finish either: nothing left to wait for. */
        cl_log_error("main", "closing did not finish %d ms after the drain timeout; exiting now",
                     CLOSE_GRACE_MS);
        _exit(1);
    }
    app->drain_forced = true;
    unsigned long long timeout = (unsigned long long)app->config->shutdown.drain_timeout_ms;
    bool restarting = app->state == APP_RESTARTING;
    if (app->ingest_draining) {
        cl_pipeline_stats_t st;
        cl_pipeline_get_stats(app->pipeline, &st);
        if (restarting) {
            cl_log_warn("main",
                        "restart: drain timeout of %llu ms ran out with %zu events still "
                        "in flight; they stay uncommitted and Kafka delivers them again",
                        timeout, st.in_flight);
        } else {
            cl_log_error("main",
                         "drain timeout of %llu ms ran out with %zu events still in "
                         "flight; they stay uncommitted and Kafka will deliver them again",
                         timeout, st.in_flight);
            app->exit_code = 1;
        }
        app->ingest_draining = false;
        close_ingest(app);
    }
    if (app->sink_draining) {
        cl_es_sink_stats_t st;
        cl_es_sink_stats(app->sink, &st);
        cl_log_warn("main",
                    "drain timeout of %llu ms ran out with %zu aggregate document(s) "
                    "not yet indexed; they stay marked in MariaDB and are sent after the restart",
                    timeout, st.docs_pending);
        close_sink(app);
    }
    if (!restarting && app->state != APP_CLOSING)
        uv_timer_start(&app->drain_timer, on_drain_timeout, CLOSE_GRACE_MS, 0);
}

static void begin_shutdown(app_t *app, const char *why, int exit_code)
{
    if (app->state == APP_DRAINING || app->state == APP_CLOSING) {
        cl_log_warn("main", "%s again: exiting at once", why);
        _exit(1);
    }
    if (exit_code != 0)
        app->exit_code = exit_code;
    cl_log_info("main", "%s: draining (timeout %llu ms)", why,
                (unsigned long long)app->config->shutdown.drain_timeout_ms);
    app->state = APP_DRAINING;
    /* A restart in progress starts nothing again. */
    app->restart_parts = 0;
    app->after_schema = 0;
    app->drain_forced = false;
    uv_timer_start(&app->drain_timer, on_drain_timeout, app->config->shutdown.drain_timeout_ms, 0);
    stop_parts(app, CL_PARTS_ALL, true);
}

/* ======================================================================== */
/* Starting parts                                                            */
/* ======================================================================== */

static int start_ingest_stream(app_t *app)
{
    char err[CL_ERR_LEN];
    const cl_config_t *c = app->config;
    if (cl_event_parser_new((const char *const *)c->ingest.mapping,
                            (size_t)c->ingest.max_event_bytes, &app->parser, err) != CL_OK) {
        cl_log_error("main", "ingest.mapping: %s", err);
        return CL_ERR;
    }
    cl_pipeline_params_t pp;
    pipeline_params_from_config(c, app->telemetry, &pp);
    app->pipeline = cl_pipeline_new(app->loop, &pp, app->parser, app->store);

    const char **names = cl_xcalloc(c->kafka.property_count + 1, sizeof(char *));
    const char **values = cl_xcalloc(c->kafka.property_count + 1, sizeof(char *));
    for (size_t i = 0; i < c->kafka.property_count; i++) {
        names[i] = c->kafka.properties[i].name;
        values[i] = c->kafka.properties[i].value;
    }
    cl_kafka_source_params_t kp = {
        .brokers = c->kafka.brokers,
        .group_id = c->kafka.group_id,
        .topics = (const char *const *)c->kafka.topics,
        .topic_count = c->kafka.topic_count,
        .property_names = names,
        .property_values = values,
        .property_count = c->kafka.property_count,
        .poll_interval_ms = c->kafka.poll_interval_ms,
        .max_messages_per_tick = 2000,
    };
    int rc = cl_kafka_source_new(app->loop, &kp, cl_pipeline_kafka_handlers(), app->pipeline,
                                 &app->source, err);
    free(names);
    free(values);
    update_telemetry(app);
    if (rc != CL_OK) {
        app->source = NULL;
        cl_log_error("main", "%s", err);
        return CL_ERR;
    }
    cl_pipeline_set_source(app->pipeline, app->source);
    if (cl_kafka_source_start(app->source, err) != CL_OK) {
        cl_log_error("main", "%s", err);
        return CL_ERR;
    }
    cl_log_info("main", "consuming %zu topic(s) from %s as group %s", c->kafka.topic_count,
                c->kafka.brokers, c->kafka.group_id);
    return CL_OK;
}

/* The aggregator logs its runs; what is left here is the owner's part. */
static void on_aggregation_run(void *arg, const cl_aggregator_run_result_t *r)
{
    app_t *app = arg;
    cl_telemetry_aggregation_run(app->telemetry, r);
    if (r->status == CL_OK && r->rows_changed > 0 && app->indexer != NULL &&
        app->indexing == PART_UP)
        cl_indexer_kick(app->indexer);
}

static int start_aggregator(app_t *app)
{
    char err[CL_ERR_LEN];
    const cl_config_t *c = app->config;
    cl_aggregator_params_t ap;
    cl_aggregator_params_from_config(c, &ap);
    ap.on_run = on_aggregation_run;
    ap.on_run_arg = app;
    app->aggregation = PART_UP;
    if (cl_aggregator_new(app->loop, &ap, &app->aggregator, err) != CL_OK) {
        app->aggregator = NULL;
        cl_log_error("main", "aggregation: %s", err);
        return CL_ERR;
    }
    update_telemetry(app);
    if (cl_aggregator_start(app->aggregator, err) != CL_OK) {
        cl_log_error("main", "aggregation: %s", err);
        return CL_ERR;
    }
    cl_log_info("main", "aggregating every %llu ms",
                (unsigned long long)c->aggregation.interval_ms);
    return CL_OK;
}

static void on_sink_event(void *arg, const cl_es_sink_event_t *ev)
{
    CL_UNUSED(arg);
    cl_log(ev->status == CL_ERR ? CL_LOG_ERROR : CL_LOG_WARN, "elasticsearch",
           "%s on %s failed: %s (HTTP %ld)%s; retrying in %llu ms", ev->request, ev->node,
           ev->message, ev->http_status, ev->node_marked_down ? ", node marked down" : "",
           (unsigned long long)ev->retry_in_ms);
}

static int new_sink(app_t *app, cl_es_sink_t **out, char err[CL_ERR_LEN])
{
    cl_es_sink_params_t sp;
    cl_es_sink_params_from_config(&app->config->elasticsearch, &sp);
    sp.event_cb = on_sink_event;
    sp.event_arg = app;
    return cl_es_sink_new(app->loop, &sp, cl_indexer_doc_cb, app->indexer, out, err);
}

static int start_indexing(app_t *app)
{
    char err[CL_ERR_LEN];
    const cl_config_t *c = app->config;
    cl_indexer_params_t ip;
    cl_indexer_params_from_config(c, &ip);
    app->indexing = PART_UP;
    if (cl_indexer_new(app->loop, &ip, &app->indexer, err) != CL_OK) {
        app->indexer = NULL;
        cl_log_error("main", "%s", err);
        return CL_ERR;
    }
    if (new_sink(app, &app->sink, err) != CL_OK) {
        app->sink = NULL;
        cl_log_error("main", "elasticsearch: %s", err);
        return CL_ERR;
    }
    cl_indexer_set_sink(app->indexer, app->sink);
    update_telemetry(app);
    if (cl_indexer_start(app->indexer, err) != CL_OK) {
        cl_log_error("main", "elasticsearch: %s", err);
        return CL_ERR;
    }
    cl_log_info("main", "indexing aggregates into %s", c->elasticsearch.index);
    return CL_OK;
}

static int start_retention(app_t *app)
{
    char err[CL_ERR_LEN];
    const cl_config_t *c = app->config;
    cl_retention_params_t rp;
    cl_retention_params_from_config(c, &rp);
    app->retention_part = PART_UP;
    if (cl_retention_new(app->loop, &rp, &app->retention, err) != CL_OK) {
        app->retention = NULL;
        cl_log_error("main", "%s", err);
        return CL_ERR;
    }
    update_telemetry(app);
    if (cl_retention_start(app->retention, err) != CL_OK) {
        cl_log_error("main", "%s", err);
        return CL_ERR;
    }
    cl_log_info("main", "deleting raw events older than %u days every %llu ms",
                c->retention.raw_days, (unsigned long long)c->retention.interval_ms);
    return CL_OK;
}

/* Everything but the pool and the schema: those come first (ingest's
 * start_ingest_store), because every other part reads or writes the tables. */
static void start_after_schema(app_t *app, unsigned parts)
{
    int rc = CL_OK;
    if ((parts & CL_PART_INGEST) && start_ingest_stream(app) != CL_OK)
        rc = CL_ERR;
    if (rc == CL_OK && (parts & CL_PART_AGGREGATOR) && start_aggregator(app) != CL_OK)
        rc = CL_ERR;
    if (rc == CL_OK && (parts & CL_PART_INDEXER) && start_indexing(app) != CL_OK)
        rc = CL_ERR;
    if (rc == CL_OK && (parts & CL_PART_RETENTION) && start_retention(app) != CL_OK)
        rc = CL_ERR;
    if (rc != CL_OK) {
        begin_shutdown(app, "cannot start", 1);
        return;
    }
    if (app->state == APP_RESTARTING)
        cl_log_info("main", "restart complete in %llu ms",
                    (unsigned long long)(cl_now_ms() - app->restart_began_ms));
    app->state = APP_RUNNING;
    if (app->reload_pending)
        reload(app);
}

static void on_migrated(void *arg, const cl_store_migrate_result_t *r)
{
    app_t *app = arg;
    if (app->ingest != PART_STARTING)
        return; /* stopped meanwhile: closing the store ended the wait */
    if (r->status != CL_OK) {
        cl_log_error("main", "schema migration failed: %s", r->message);
        app->ingest = PART_UP;
        begin_shutdown(app, "cannot start", 1);
        return;
    }
    if (r->from_version != r->to_version)
        cl_log_info("main", "schema migrated from version %d to %d", r->from_version,
                    r->to_version);
    app->ingest = PART_UP;
    unsigned parts = app->after_schema | CL_PART_INGEST;
    app->after_schema = 0;
    start_after_schema(app, parts);
}

/* The pool, the store and the schema migration; on_migrated goes on. */
static int start_ingest_store(app_t *app)
{
    char err[CL_ERR_LEN];
    cl_db_params_t dbp;
    cl_db_params_from_config(app->config, &dbp);
    cl_store_params_t sp;
    cl_store_params_from_config(app->config, &sp);
    app->ingest = PART_STARTING;
    if (cl_db_pool_open(app->loop, &dbp, app->config->mariadb.pool_size, on_pool_event, app,
                        &app->pool, err) != CL_OK) {
        app->pool = NULL;
        cl_log_error("main", "%s", err);
        return CL_ERR;
    }
    update_telemetry(app);
    if (cl_store_new(app->loop, app->pool, &sp, &app->store, err) != CL_OK) {
        app->store = NULL;
        cl_log_error("main", "%s", err);
        return CL_ERR;
    }
    update_telemetry(app);
    if (cl_store_migrate(app->store, on_migrated, app, err) != CL_OK) {
        cl_log_error("main", "%s", err);
        return CL_ERR;
    }
    return CL_OK;
}

/* Start the parts the configuration runs among `parts`: start-up, and the
 * second half of a reload's restart. */
static void start_parts(app_t *app, unsigned parts)
{
    parts &= cl_reload_parts_wanted(app->config);
    if (parts & CL_PART_INGEST) {
        app->after_schema = parts & ~(unsigned)CL_PART_INGEST;
        if (start_ingest_store(app) != CL_OK)
            begin_shutdown(app, "cannot start", 1);
        return;
    }
    start_after_schema(app, parts);
}

/* ======================================================================== */
/* Admin listener                                                            */
/* ======================================================================== */

/* /readyz: ready while running with partitions assigned, MariaDB up and taking
 * ingest batches. */
static bool readiness(void *arg, cl_buf_t *missing)
{
    app_t *app = arg;
    bool ok = true;
    switch (app->state) {
    case APP_RUNNING:
        break;
    case APP_STARTING:
        cl_buf_append_str(missing, "starting (schema migration)\n");
        ok = false;
        break;
    case APP_RESTARTING:
        cl_buf_append_str(missing, "restarting (applying a new configuration)\n");
        ok = false;
        break;
    case APP_DRAINING:
    case APP_CLOSING:
        cl_buf_append_str(missing, "shutting down\n");
        ok = false;
        break;
    }
    if (app->pool == NULL || !cl_db_pool_healthy(app->pool)) {
        cl_buf_append_str(missing, "no MariaDB connection\n");
        ok = false;
    }
    if (app->source == NULL || cl_kafka_source_assigned_count(app->source) == 0) {
        cl_buf_append_str(missing, "no Kafka partitions assigned\n");
        ok = false;
    }
    if (app->aggregator != NULL) {
        cl_aggregator_stats_t as;
        cl_aggregator_stats(app->aggregator, &as);
        if (as.failing) {
            cl_buf_appendf(missing, "aggregation failing (%llu runs in a row): %s\n",
                           (unsigned long long)as.consecutive_failures, as.last_error);
            ok = false;
        }
    }
    const char *blocked = app->store != NULL ? cl_store_blocked(app->store) : NULL;
    if (blocked != NULL) {
        cl_buf_appendf(missing, "MariaDB refuses ingest batches (retrying): %s\n", blocked);
        ok = false;
    }
    return ok;
}

/* The admin listener may hold many connections (and librdkafka and the pool
 * need descriptors too): use the hard limit. */
static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static int start_admin_at(app_t *app, const char *host, uint16_t port, const char *listen,
                          char err[CL_ERR_LEN])
{
    cl_admin_params_t ap = {.host = host, .port = port};
    app->admin = cl_admin_new(app->loop, &ap, app->metrics, readiness, app);
    if (cl_admin_start(app->admin, err) != CL_OK) {
        cl_admin_close(app->admin, NULL, NULL);
        app->admin = NULL;
        return CL_ERR;
    }
    cl_log_info("main", "admin listener on %s (/healthz, /readyz, /metrics)", listen);
    return CL_OK;
}

static int start_admin(app_t *app, char err[CL_ERR_LEN])
{
    const cl_config_admin_t *a = &app->config->admin;
    return a->enabled ? start_admin_at(app, a->host, a->port, a->listen, err) : CL_OK;
}

/* The address the listener had before a reload moved it, to go back to if
 * the new one cannot be bound. */
typedef struct {
    app_t *app;
    char *host;
    uint16_t port;
    char *listen;
} admin_move_t;

static void on_old_admin_closed(void *arg)
{
    admin_move_t *m = arg;
    app_t *app = m->app;
    char err[CL_ERR_LEN];
    if (app->state != APP_DRAINING && app->state != APP_CLOSING && start_admin(app, err) != CL_OK) {
        cl_log_error("main", "admin.listen: %s", err);
        char again[CL_ERR_LEN];
        if (m->host == NULL)
            cl_log_error("main", "admin listener off until a reload sets a usable address");
        else if (start_admin_at(app, m->host, m->port, m->listen, again) == CL_OK)
            cl_log_warn("main", "admin listener kept on %s", m->listen);
        else
            cl_log_error("main", "admin listener off: %s", again);
    }
    free(m->host);
    free(m->listen);
    free(m);
}

/* Close the listener, then listen on the configured address. The close is
 * asynchronous, so the same port can be bound again afterwards. */
static void move_admin(app_t *app, const char *old_host, uint16_t old_port, const char *old_listen)
{
    char err[CL_ERR_LEN];
    if (app->admin == NULL) {
        if (start_admin(app, err) != CL_OK)
            cl_log_error("main", "admin.listen: %s", err);
        return;
    }
    admin_move_t *m = cl_xcalloc(1, sizeof *m);
    m->app = app;
    m->host = old_host != NULL ? cl_xstrdup(old_host) : NULL;
    m->port = old_port;
    m->listen = old_listen != NULL ? cl_xstrdup(old_listen) : NULL;
    cl_admin_t *old = app->admin;
    app->admin = NULL;
    cl_admin_close(old, on_old_admin_closed, m);
}

/* ======================================================================== */
/* Reload                                                                    */
/* ======================================================================== */

static void on_change(void *arg, const char *name, unsigned restart)
{
    CL_UNUSED(arg);
    if (restart == 0) {
        cl_log_info("config", "%s changed: applied in place", name);
        return;
    }
    char parts[128];
    cl_reload_describe_parts(restart, parts, sizeof parts);
    cl_log_info("config", "%s changed: applied by reconnecting %s", name, parts);
}

typedef struct {
    const char *path;
    int count;
} preflight_t;

static void on_preflight_problem(void *arg, const char *message)
{
    preflight_t *p = arg;
    cl_log_error("config", "%s: %s", p->path, message);
    p->count++;
}

/* The Elasticsearch connection settings changed: attach a new sink to the
 * running indexer and close the old one. Its documents in flight are
 * cancelled and stay marked in MariaDB; the indexer sends them again. */
static void replace_sink(app_t *app)
{
    char err[CL_ERR_LEN];
    if (app->indexing != PART_UP || app->indexer == NULL || app->sink == NULL)
        return;
    cl_es_sink_t *sink;
    if (new_sink(app, &sink, err) != CL_OK) {
        cl_log_error("config", "elasticsearch: %s; still using the previous connection settings",
                     err);
        return;
    }
    cl_es_sink_t *old = app->sink;
    cl_indexer_set_sink(app->indexer, sink);
    cl_telemetry_retire(app->telemetry, &(cl_telemetry_sources_t){.sink = old});
    app->sink = sink;
    update_telemetry(app);
    app->retired_sinks++;
    if (cl_es_sink_close(old, on_retired_sink_closed, app) != CL_OK)
        app->retired_sinks--;
    if (cl_indexer_start(app->indexer, err) != CL_OK)
        cl_log_error("config", "elasticsearch: %s", err);
}

/* A new retention policy for the running job; switching retention on or off
 * starts or stops it (no drain needed: a batch cut short rolls back). */
static void apply_retention(app_t *app)
{
    char err[CL_ERR_LEN];
    const cl_config_retention_t *r = &app->config->retention;
    switch (app->retention_part) {
    case PART_UP:
        if (r->raw_days == 0)
            stop_retention(app);
        else if (cl_retention_set_policy(app->retention, r->raw_days, r->batch_rows, r->interval_ms,
                                         err) != CL_OK)
            cl_log_error("config", "%s", err);
        break;
    case PART_DOWN:
        if (r->raw_days > 0 && start_retention(app) != CL_OK && app->retention == NULL)
            app->retention_part = PART_DOWN;
        break;
    case PART_STOPPING:
        app->retention_again = r->raw_days > 0;
        break;
    case PART_STARTING:
        break;
    }
}

static void apply_in_place(app_t *app, const cl_reload_plan_t *plan, const cl_config_t *old)
{
    const cl_config_t *c = app->config;
    if (plan->ingest_params && app->ingest == PART_UP && app->pipeline != NULL &&
        !(plan->restart & CL_PART_INGEST)) {
        cl_pipeline_params_t pp;
        pipeline_params_from_config(c, app->telemetry, &pp);
        cl_pipeline_set_params(app->pipeline, &pp);
    }
    /* Batches queue in the pool, so the pipeline follows the new size as is. */
    if (plan->pool_size && app->ingest == PART_UP && app->pool != NULL &&
        !(plan->restart & CL_PART_INGEST)) {
        char err[CL_ERR_LEN];
        cl_db_pool_stats_t ps;
        cl_db_pool_stats(app->pool, &ps);
        if (cl_db_pool_resize(app->pool, c->mariadb.pool_size, err) == CL_OK)
            cl_log_info("db", "pool resized from %u to %u connections", ps.size,
                        (unsigned)c->mariadb.pool_size);
        else
            cl_log_error("config", "mariadb.pool_size: %s", err);
    }
    if (plan->aggregation_interval && app->aggregation == PART_UP && app->aggregator != NULL &&
        !(plan->restart & CL_PART_AGGREGATOR))
        cl_aggregator_set_interval(app->aggregator, c->aggregation.interval_ms);
    if (plan->sink && !(plan->restart & CL_PART_INDEXER))
        replace_sink(app);
    /* The aggregator freezes the windows retention prunes: it learns the new
     * raw_days before retention deletes by it. A stopping one may take it too
     * (it is only a field); a new one reads the configuration. */
    if (plan->retention && app->aggregator != NULL)
        cl_aggregator_set_retention_days(app->aggregator, c->retention.raw_days);
    if (plan->retention && !(plan->restart & CL_PART_RETENTION))
        apply_retention(app);
    if (plan->admin)
        move_admin(app, old->admin.host, old->admin.port, old->admin.listen);
}

static void begin_restart(app_t *app, unsigned parts)
{
    char names[128];
    cl_reload_describe_parts(parts, names, sizeof names);
    cl_log_info("main", "restarting %s to apply the new configuration", names);
    app->state = APP_RESTARTING;
    app->restart_parts = parts;
    app->restart_began_ms = cl_now_ms();
    app->drain_forced = false;
    uv_timer_start(&app->drain_timer, on_drain_timeout, app->config->shutdown.drain_timeout_ms, 0);
    stop_parts(app, parts, false);
}

static void reload(app_t *app)
{
    if (app->state == APP_DRAINING || app->state == APP_CLOSING) {
        cl_log_warn("config", "SIGHUP ignored: shutting down");
        return;
    }
    if (app->state != APP_RUNNING) {
        cl_log_info("config", "SIGHUP: the reload waits until the %s is complete",
                    app->state == APP_STARTING ? "start" : "restart");
        app->reload_pending = true;
        return;
    }
    app->reload_pending = false;
    cl_config_t *next = NULL;
    cl_config_errors_t errs;
    if (cl_config_load_file(app->config_path, NULL, &next, &errs) != CL_OK) {
        for (size_t i = 0; i < errs.count; i++)
            cl_log_error("config", "%s", errs.messages[i]);
        cl_log_error("config",
                     "reload rejected: %zu problem(s); still running on the previous "
                     "configuration",
                     errs.count);
        cl_telemetry_config_reload(app->telemetry, false);
        cl_config_errors_free(&errs);
        return;
    }
    cl_config_errors_free(&errs);
    preflight_t pf = {.path = app->config_path, .count = 0};
    cl_reload_preflight(next, on_preflight_problem, &pf);
    if (pf.count > 0) {
        cl_log_error("config",
                     "reload rejected: %d problem(s); still running on the previous "
                     "configuration",
                     pf.count);
        cl_telemetry_config_reload(app->telemetry, false);
        cl_config_free(next);
        return;
    }
    /* First, so that the lines below follow the new level and format. */
    apply_log_config(next);
    cl_reload_plan_t plan;
    cl_reload_plan(app->config, next, &plan, on_change, app);
    /* Modules copied what they keep of the configuration (strings included),
     * so the old one can go once the in-place changes are made. */
    cl_config_t *old = app->config;
    app->config = next;
    apply_in_place(app, &plan, old);
    cl_config_free(old);
    cl_log_info("config", "reloaded %s: %d setting(s) changed", app->config_path, plan.changes);
    cl_telemetry_config_reload(app->telemetry, true);
    if (plan.restart != 0)
        begin_restart(app, plan.restart);
}

static void on_signal(uv_signal_t *h, int signum)
{
    app_t *app = h->data;
    if (signum == SIGHUP)
        reload(app);
    else
        begin_shutdown(app, signum == SIGTERM ? "SIGTERM" : "SIGINT", 0);
}

/* ======================================================================== */
/* main                                                                      */
/* ======================================================================== */

static int run(const char *config_path)
{
    app_t app;
    memset(&app, 0, sizeof app);
    app.config_path = config_path;
    app.config = load_config(config_path);
    if (app.config == NULL)
        return 1;
    apply_log_config(app.config);
    cl_log_info("main", "clickloop %s starting with %s", CL_VERSION, config_path);

    if (mysql_library_init(0, NULL, NULL) != 0) {
        cl_log_error("main", "cannot initialise the MariaDB client library");
        cl_config_free(app.config);
        return 1;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    uv_loop_t loop;
    uv_loop_init(&loop);
    app.loop = &loop;
    uv_signal_init(&loop, &app.sig_term);
    uv_signal_init(&loop, &app.sig_int);
    uv_signal_init(&loop, &app.sig_hup);
    app.sig_term.data = app.sig_int.data = app.sig_hup.data = &app;
    uv_signal_start(&app.sig_term, on_signal, SIGTERM);
    uv_signal_start(&app.sig_int, on_signal, SIGINT);
    uv_signal_start(&app.sig_hup, on_signal, SIGHUP);
    uv_timer_init(&loop, &app.drain_timer);
    app.drain_timer.data = &app;
    uv_timer_init(&loop, &app.sink_timer);
    app.sink_timer.data = &app;
    raise_fd_limit();
    app.metrics = cl_metrics_new();
    app.telemetry = cl_telemetry_new(app.metrics);

    char err[CL_ERR_LEN];
    if (start_admin(&app, err) != CL_OK) {
        cl_log_error("main", "%s", err);
        begin_shutdown(&app, "cannot start", 1);
    } else {
        start_parts(&app, CL_PARTS_ALL);
    }

    uv_run(&loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&loop) != 0)
        cl_log_warn("main", "event loop closed with handles still open");
    cl_telemetry_free(app.telemetry);
    cl_metrics_free(app.metrics);
    cl_config_free(app.config);
    curl_global_cleanup();
    mysql_library_end();
    cl_log_info("main", "exiting with status %d", app.exit_code);
    return app.exit_code;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"check-config", required_argument, NULL, 'C'},
        {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *config_path = NULL;
    int c;
    while ((c = getopt_long(argc, argv, "c:C:Vh", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            config_path = optarg;
            break;
        case 'C': {
            cl_config_t *config = load_config(optarg);
            if (config == NULL)
                return 1;
            printf("%s: valid\n", optarg);
            cl_config_free(config);
            return 0;
        }
        case 'V':
            printf("clickloop %s\n", CL_VERSION);
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (config_path == NULL || optind != argc) {
        usage(stderr);
        return 2;
    }
    /* A closed peer must surface as an error code, not kill the process. */
    signal(SIGPIPE, SIG_IGN);
    return run(config_path);
}

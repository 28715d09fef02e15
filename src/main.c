/* clickloop: command line, wiring and signals. Only this file decides what to
 * print; the modules return errors and main logs them.
 *
 * Start-up: load the config, open the MariaDB pool, migrate the schema, then
 * create the ingest pipeline and the Kafka source and subscribe.
 * Shutdown (SIGTERM/SIGINT): pause consumption, let the pipeline write what it
 * holds, close the consumer (which commits the stored offsets and leaves the
 * group), close the store and the pool, and exit 0 — or 1 when the drain
 * timeout runs out first. A second signal exits at once. */
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
#include "clickloop/store.h"
#include "clickloop/telemetry.h"

/* A batch's SQL text is at most about twice its payload bytes (escaping), so
 * 4 MiB of payload keeps it well under MariaDB's default 16 MiB packet. */
#define CL_BATCH_MAX_BYTES (4u * 1024u * 1024u)

typedef enum {
    APP_STARTING = 0, /* migrating the schema */
    APP_RUNNING,
    APP_DRAINING,     /* signal received: writing what is in flight */
    APP_CLOSING,      /* closing modules and handles */
} app_state_t;

typedef struct {
    uv_loop_t *loop;
    const char *config_path;
    cl_config_t *config;
    cl_db_pool_t *pool;
    cl_store_t *store;
    cl_event_parser_t *parser;
    cl_pipeline_t *pipeline;
    cl_kafka_source_t *source;
    cl_aggregator_t *aggregator;
    bool aggregator_closing;
    cl_es_sink_t *sink;
    cl_indexer_t *indexer;
    cl_metrics_t *metrics;
    cl_telemetry_t *telemetry;
    cl_admin_t *admin;
    uv_signal_t sig_term, sig_int, sig_hup;
    uv_timer_t drain_timer;
    app_state_t state;
    int exit_code;
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
            "SIGHUP re-reads the configuration.\n"
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

static void db_params_from_config(const cl_config_t *c, cl_db_params_t *p)
{
    memset(p, 0, sizeof *p);
    p->host = c->mariadb.host;
    p->port = c->mariadb.port;
    p->unix_socket = c->mariadb.socket;
    p->user = c->mariadb.user;
    p->password = c->mariadb.password;
    p->database = c->mariadb.database;
    p->connect_timeout_ms = (unsigned)c->mariadb.connect_timeout_ms;
    p->read_timeout_ms = (unsigned)c->mariadb.read_timeout_ms;
    p->write_timeout_ms = (unsigned)c->mariadb.write_timeout_ms;
    p->backoff_min_ms = (unsigned)c->mariadb.reconnect_min_backoff_ms;
    p->backoff_max_ms = (unsigned)c->mariadb.reconnect_max_backoff_ms;
}

static void pipeline_params_from_config(const cl_config_t *c, cl_telemetry_t *t,
                                        cl_pipeline_params_t *p)
{
    memset(p, 0, sizeof *p);
    p->on_batch_committed = cl_telemetry_batch_committed;
    p->on_batch_committed_arg = t;
    p->batch_max_events = c->ingest.batch_max_events;
    p->batch_max_delay_ms = c->ingest.batch_max_delay_ms;
    p->max_in_flight_events = c->ingest.max_in_flight_events;
    p->batch_max_bytes = CL_BATCH_MAX_BYTES;
    p->max_rejected_payload_bytes = (size_t)c->ingest.max_event_bytes;
}

static void apply_log_config(const cl_config_t *c)
{
    cl_log_set_level(c->log.level);
    cl_log_set_format(c->log.format);
}

/* ---- shutdown ------------------------------------------------------------ */

/* Tell telemetry which modules exist right now (they come and go). */
static void update_telemetry(app_t *app)
{
    cl_telemetry_sources_t s = {
        .pipeline = app->pipeline,
        .source = app->source,
        .pool = app->pool,
        .store = app->store,
        .aggregator = app->aggregator,
        .sink = app->sink,
        .indexer = app->indexer,
    };
    cl_telemetry_set_sources(app->telemetry, &s);
}

static void on_handle_closed(uv_handle_t *h)
{
    CL_UNUSED(h);
}

static void on_admin_closed(void *arg)
{
    app_t *app = arg;
    app->admin = NULL;
}

static void close_app_handles(app_t *app)
{
    if (app->admin != NULL)
        cl_admin_close(app->admin, on_admin_closed, app);
    uv_close((uv_handle_t *)&app->sig_term, on_handle_closed);
    uv_close((uv_handle_t *)&app->sig_int, on_handle_closed);
    uv_close((uv_handle_t *)&app->sig_hup, on_handle_closed);
    uv_close((uv_handle_t *)&app->drain_timer, on_handle_closed);
}

/* Closing order: consumer (commits stored offsets), then store and pool (the
 * store completes what it still holds, so batches reach the pipeline before it
 * goes), then the pipeline, then main's own handles. */
static void maybe_close_app_handles(app_t *app)
{
    if (app->pool == NULL && app->store == NULL && app->pipeline == NULL &&
        app->aggregator == NULL && app->sink == NULL && app->indexer == NULL)
        close_app_handles(app);
}

static void on_aggregator_closed(void *arg)
{
    app_t *app = arg;
    app->aggregator = NULL;
    update_telemetry(app);
    maybe_close_app_handles(app);
}

/* Aggregation is stopped as soon as shutdown begins: a run in progress rolls
 * back and its events stay queued for the next start. */
static void close_aggregator(app_t *app)
{
    cl_aggregator_t *agg = app->aggregator;
    if (agg == NULL || app->aggregator_closing)
        return;
    app->aggregator_closing = true;
    /* Keep app->aggregator set until closed, so the app waits for it. */
    if (cl_aggregator_close(agg, on_aggregator_closed, app) != CL_OK)
        on_aggregator_closed(app);
}

static void on_indexer_closed(void *arg)
{
    app_t *app = arg;
    app->indexer = NULL;
    update_telemetry(app);
    maybe_close_app_handles(app);
}

/* The sink closes first: documents still in flight are cancelled and their
 * rows stay marked for indexing in MariaDB, to be sent after a restart. Then
 * the indexer writes the acknowledgements it collected. */
static void on_sink_closed(void *arg)
{
    app_t *app = arg;
    app->sink = NULL;
    update_telemetry(app);
    if (app->indexer == NULL || cl_indexer_close(app->indexer, on_indexer_closed, app) != CL_OK)
        on_indexer_closed(app);
}

static void close_indexing(app_t *app)
{
    if (app->sink != NULL) {
        cl_indexer_set_sink(app->indexer, NULL);
        if (cl_es_sink_close(app->sink, on_sink_closed, app) != CL_OK)
            on_sink_closed(app);
    } else if (app->indexer != NULL) {
        on_sink_closed(app);
    }
}

static void on_pool_closed(void *arg)
{
    app_t *app = arg;
    app->pool = NULL;
    update_telemetry(app);
    maybe_close_app_handles(app);
}

static void on_pipeline_closed(void *arg)
{
    app_t *app = arg;
    app->pipeline = NULL;
    update_telemetry(app);
    maybe_close_app_handles(app);
}

static void on_store_closed(void *arg)
{
    app_t *app = arg;
    app->store = NULL;
    update_telemetry(app);
    if (app->pipeline != NULL)
        cl_pipeline_close(app->pipeline, on_pipeline_closed, app);
    else
        maybe_close_app_handles(app);
}

static void close_store_and_pool(app_t *app)
{
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
    app->source = NULL;
    update_telemetry(app);
    if (app->pipeline != NULL)
        cl_pipeline_set_source(app->pipeline, NULL);
    close_store_and_pool(app);
}

static void finish_shutdown(app_t *app)
{
    if (app->state == APP_CLOSING)
        return;
    app->state = APP_CLOSING;
    uv_timer_stop(&app->drain_timer);
    close_aggregator(app);
    close_indexing(app);
    if (app->source != NULL)
        cl_kafka_source_close(app->source, on_source_closed, app);
    else
        on_source_closed(app);
}

static void on_drained(void *arg)
{
    app_t *app = arg;
    cl_pipeline_stats_t st;
    cl_pipeline_get_stats(app->pipeline, &st);
    cl_log_info("main", "drained: %llu events stored, %llu rejected in %llu batches",
                (unsigned long long)st.stored, (unsigned long long)st.rejected,
                (unsigned long long)st.batches);
    finish_shutdown(app);
}

static void on_drain_timeout(uv_timer_t *t)
{
    app_t *app = t->data;
    cl_log_error("main", "drain timeout of %llu ms ran out with events still in flight; they "
                 "stay uncommitted and Kafka will deliver them again",
                 (unsigned long long)app->config->shutdown.drain_timeout_ms);
    app->exit_code = 1;
    finish_shutdown(app);
}

static void begin_shutdown(app_t *app, const char *why)
{
    if (app->state == APP_DRAINING || app->state == APP_CLOSING) {
        cl_log_warn("main", "%s again: exiting at once", why);
        _exit(1);
    }
    cl_log_info("main", "%s: draining (timeout %llu ms)", why,
                (unsigned long long)app->config->shutdown.drain_timeout_ms);
    bool starting = app->state == APP_STARTING;
    app->state = APP_DRAINING;
    close_aggregator(app);
    uv_timer_start(&app->drain_timer, on_drain_timeout, app->config->shutdown.drain_timeout_ms,
                   0);
    if (starting || app->pipeline == NULL) {
        finish_shutdown(app);
        return;
    }
    if (app->source != NULL)
        cl_kafka_source_set_paused(app->source, true);
    cl_pipeline_drain(app->pipeline, on_drained, app);
}

/* ---- reload -------------------------------------------------------------- */

static void log_changed(const char *name, void *data)
{
    CL_UNUSED(data);
    /* Settings that take effect in place; the others need a restart (for now). */
    static const char *const in_place[] = {
        "log.", "ingest.batch_max_events", "ingest.batch_max_delay", "ingest.max_in_flight_events",
    };
    for (size_t i = 0; i < CL_ARRAY_LEN(in_place); i++) {
        if (strncmp(name, in_place[i], strlen(in_place[i])) == 0) {
            cl_log_info("config", "%s changed: applied", name);
            return;
        }
    }
    cl_log_warn("config", "%s changed: takes effect after a restart", name);
}

static void reload(app_t *app)
{
    cl_config_t *next = NULL;
    cl_config_errors_t errs;
    if (cl_config_load_file(app->config_path, NULL, &next, &errs) != CL_OK) {
        for (size_t i = 0; i < errs.count; i++)
            cl_log_error("config", "%s", errs.messages[i]);
        cl_log_error("config", "reload rejected: %zu problem(s); still running on the previous "
                     "configuration", errs.count);
        cl_telemetry_config_reload(app->telemetry, false);
        cl_config_errors_free(&errs);
        return;
    }
    cl_config_errors_free(&errs);
    int changes = cl_config_diff(app->config, next, log_changed, app);
    apply_log_config(next);
    if (app->pipeline != NULL) {
        cl_pipeline_params_t pp;
        pipeline_params_from_config(next, app->telemetry, &pp);
        cl_pipeline_set_params(app->pipeline, &pp);
    }
    cl_log_info("config", "reloaded %s: %d setting(s) changed", app->config_path, changes);
    cl_telemetry_config_reload(app->telemetry, true);
    /* Modules keep pointers into the old config (strings for the consumer and
     * the pool were copied at creation), so swapping is safe. */
    cl_config_free(app->config);
    app->config = next;
}

static void on_signal(uv_signal_t *h, int signum)
{
    app_t *app = h->data;
    if (signum == SIGHUP)
        reload(app);
    else
        begin_shutdown(app, signum == SIGTERM ? "SIGTERM" : "SIGINT");
}

/* ---- start-up ------------------------------------------------------------ */

static int start_ingest(app_t *app)
{
    char err[CL_ERR_LEN];
    const cl_config_t *c = app->config;
    if (cl_event_parser_new((const char *const *)c->ingest.mapping, (size_t)c->ingest.max_event_bytes,
                            &app->parser, err) != CL_OK) {
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
    if (rc != CL_OK) {
        cl_log_error("main", "%s", err);
        return CL_ERR;
    }
    cl_pipeline_set_source(app->pipeline, app->source);
    if (cl_kafka_source_start(app->source, err) != CL_OK) {
        cl_log_error("main", "%s", err);
        return CL_ERR;
    }
    update_telemetry(app);
    cl_log_info("main", "consuming %zu topic(s) from %s as group %s", c->kafka.topic_count,
                c->kafka.brokers, c->kafka.group_id);
    return CL_OK;
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

static void on_aggregation_run(void *arg, const cl_aggregator_run_result_t *r)
{
    app_t *app = arg;
    cl_telemetry_aggregation_run(app->telemetry, r);
    if (r->status != CL_OK) {
        cl_log(r->status == CL_ERR ? CL_LOG_ERROR : CL_LOG_WARN, "aggregate",
               "aggregation run failed: %s; the next run picks its work up", r->message);
        return;
    }
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
    if (r->rows_changed > 0 && app->indexer != NULL)
        cl_indexer_kick(app->indexer);
}

static void on_sink_event(void *arg, const cl_es_sink_event_t *ev)
{
    CL_UNUSED(arg);
    cl_log(ev->status == CL_ERR ? CL_LOG_ERROR : CL_LOG_WARN, "elasticsearch",
           "%s on %s failed: %s (HTTP %ld)%s; retrying in %llu ms", ev->request, ev->node,
           ev->message, ev->http_status, ev->node_marked_down ? ", node marked down" : "",
           (unsigned long long)ev->retry_in_ms);
}

static int start_aggregation(app_t *app)
{
    char err[CL_ERR_LEN];
    const cl_config_t *c = app->config;
    if (c->elasticsearch.present) {
        cl_indexer_params_t ip;
        memset(&ip, 0, sizeof ip);
        db_params_from_config(c, &ip.db);
        ip.index = c->elasticsearch.index;
        ip.page_rows = c->elasticsearch.bulk_max_docs;
        /* Enough to keep every bulk slot busy, and no more in memory. */
        ip.max_pending_docs = (size_t)c->elasticsearch.bulk_max_docs *
                              c->elasticsearch.max_in_flight * 2;
        ip.poll_interval_ms = 1000;
        ip.on_db_event = on_pool_event;
        if (cl_indexer_new(app->loop, &ip, &app->indexer, err) != CL_OK) {
            cl_log_error("main", "%s", err);
            return CL_ERR;
        }
        cl_es_sink_params_t sp;
        cl_es_sink_params_from_config(&c->elasticsearch, &sp);
        sp.event_cb = on_sink_event;
        sp.event_arg = app;
        if (cl_es_sink_new(app->loop, &sp, cl_indexer_doc_cb, app->indexer, &app->sink, err) !=
            CL_OK) {
            cl_log_error("main", "elasticsearch: %s", err);
            return CL_ERR;
        }
        cl_indexer_set_sink(app->indexer, app->sink);
        if (cl_indexer_start(app->indexer, err) != CL_OK) {
            cl_log_error("main", "elasticsearch: %s", err);
            return CL_ERR;
        }
    }
    cl_aggregator_params_t ap;
    memset(&ap, 0, sizeof ap);
    db_params_from_config(c, &ap.db);
    ap.spec.windows_ms = c->aggregation.windows_ms;
    ap.spec.window_count = c->aggregation.window_count;
    ap.spec.session_timeout_ms = c->aggregation.session_timeout_ms;
    /* A full recompute (marked windows) proceeds over several runs of bounded
     * length rather than one long transaction. */
    ap.spec.max_marked_windows = 200;
    /* A run's statements scan whole windows: give them far more room than an
     * ingest batch needs before the connection counts as lost. */
    if (ap.db.read_timeout_ms < 600000)
        ap.db.read_timeout_ms = 600000;
    ap.interval_ms = c->aggregation.interval_ms;
    ap.on_run = on_aggregation_run;
    ap.on_run_arg = app;
    ap.on_db_event = on_pool_event;
    if (cl_aggregator_new(app->loop, &ap, &app->aggregator, err) != CL_OK ||
        cl_aggregator_start(app->aggregator, err) != CL_OK) {
        cl_log_error("main", "aggregation: %s", err);
        return CL_ERR;
    }
    update_telemetry(app);
    cl_log_info("main", "aggregating every %llu ms%s", (unsigned long long)c->aggregation.interval_ms,
                c->elasticsearch.present ? ", indexing into Elasticsearch" : "");
    return CL_OK;
}

static void on_migrated(void *arg, const cl_store_migrate_result_t *r)
{
    app_t *app = arg;
    if (app->state != APP_STARTING)
        return;
    if (r->status != CL_OK) {
        cl_log_error("main", "schema migration failed: %s", r->message);
        app->exit_code = 1;
        finish_shutdown(app);
        return;
    }
    if (r->from_version != r->to_version)
        cl_log_info("main", "schema migrated from version %d to %d", r->from_version,
                    r->to_version);
    app->state = APP_RUNNING;
    if (start_ingest(app) != CL_OK ||
        (app->config->aggregation.enabled && start_aggregation(app) != CL_OK)) {
        app->exit_code = 1;
        app->state = APP_DRAINING;
        finish_shutdown(app);
    }
}


/* /readyz: ready while running with partitions assigned and MariaDB up. */
static bool readiness(void *arg, cl_buf_t *missing)
{
    app_t *app = arg;
    bool ok = true;
    if (app->state != APP_RUNNING) {
        cl_buf_append_str(missing, app->state == APP_STARTING ? "starting (schema migration)\n"
                                                               : "shutting down\n");
        ok = false;
    }
    if (app->pool == NULL || !cl_db_pool_healthy(app->pool)) {
        cl_buf_append_str(missing, "no MariaDB connection\n");
        ok = false;
    }
    if (app->source == NULL || cl_kafka_source_assigned_count(app->source) == 0) {
        cl_buf_append_str(missing, "no Kafka partitions assigned\n");
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

static int start_admin(app_t *app, char err[CL_ERR_LEN])
{
    if (!app->config->admin.enabled)
        return CL_OK;
    cl_admin_params_t ap = {.host = app->config->admin.host, .port = app->config->admin.port};
    app->admin = cl_admin_new(app->loop, &ap, app->metrics, readiness, app);
    if (cl_admin_start(app->admin, err) != CL_OK)
        return CL_ERR;
    cl_log_info("main", "admin listener on %s (/healthz, /readyz, /metrics)",
                app->config->admin.listen);
    return CL_OK;
}

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
    raise_fd_limit();
    app.metrics = cl_metrics_new();
    app.telemetry = cl_telemetry_new(app.metrics);

    char err[CL_ERR_LEN];
    cl_db_params_t dbp;
    db_params_from_config(app.config, &dbp);
    cl_store_params_t sp = {0};
    if (cl_db_pool_open(&loop, &dbp, app.config->mariadb.pool_size, on_pool_event, &app, &app.pool,
                        err) != CL_OK ||
        cl_store_new(&loop, app.pool, &sp, &app.store, err) != CL_OK ||
        cl_store_migrate(app.store, on_migrated, &app, err) != CL_OK ||
        start_admin(&app, err) != CL_OK) {
        cl_log_error("main", "%s", err);
        app.exit_code = 1;
        finish_shutdown(&app);
    }

    update_telemetry(&app);
    uv_run(&loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&loop) != 0)
        cl_log_warn("main", "event loop closed with handles still open");
    if (app.parser != NULL)
        cl_event_parser_free(app.parser);
    cl_telemetry_free(app.telemetry);
    cl_metrics_free(app.metrics);
    cl_config_free(app.config);
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

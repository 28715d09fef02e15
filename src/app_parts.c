/* app_parts: the parts the app runs, one row each in cl_app_parts[]; see
 * app_parts.h. */
#include "app_parts.h"

#include <stdlib.h>
#include <string.h>

#include "clickloop/admin.h"
#include "clickloop/aggregate.h"
#include "clickloop/db.h"
#include "clickloop/db_pool.h"
#include "clickloop/es_sink.h"
#include "clickloop/event.h"
#include "clickloop/indexer.h"
#include "clickloop/kafka_source.h"
#include "clickloop/log.h"
#include "clickloop/pipeline.h"
#include "clickloop/retention.h"
#include "clickloop/store.h"

/* How often a shutdown looks whether the sink has finished its requests. */
#define SINK_IDLE_CHECK_MS 20

/* ======================================================================== */
/* Ingest: pool, store and schema, then parser, pipeline and consumer        */
/* ======================================================================== */

static void pipeline_params(const cl_app_t *app, cl_pipeline_params_t *p)
{
    cl_pipeline_params_from_config(app->config, p);
    p->on_batch_committed = cl_telemetry_batch_committed;
    p->on_batch_committed_arg = app->telemetry;
    p->on_fatal = cl_app_ingest_fatal;
    p->on_fatal_arg = (void *)app;
}

static int start_ingest_stream(cl_app_t *app)
{
    char err[CL_ERR_LEN];
    const cl_config_t *c = app->config;
    if (cl_event_parser_new((const char *const *)c->ingest.mapping,
                            (size_t)c->ingest.max_event_bytes, &app->parser, err) != CL_OK) {
        cl_log_error("main", "ingest.mapping: %s", err);
        return CL_ERR;
    }
    cl_pipeline_params_t pp;
    pipeline_params(app, &pp);
    cl_app_set_module(app, M_PIPELINE, cl_pipeline_new(app->loop, &pp, app->parser, STORE(app)));

    cl_kafka_source_params_t kp;
    cl_kafka_source_params_from_config(c, &kp);
    cl_kafka_source_t *src = NULL;
    int rc =
        cl_kafka_source_new(app->loop, &kp, cl_pipeline_kafka_handlers(), PIPELINE(app), &src, err);
    cl_app_set_module(app, M_SOURCE, rc == CL_OK ? src : NULL);
    if (rc != CL_OK) {
        cl_log_error("main", "%s", err);
        return CL_ERR;
    }
    cl_pipeline_set_source(PIPELINE(app), src);
    if (cl_kafka_source_start(src, err) != CL_OK) {
        cl_log_error("main", "%s", err);
        return CL_ERR;
    }
    cl_log_info("main", "consuming %zu topic(s) from %s as group %s", c->kafka.topic_count,
                c->kafka.brokers, c->kafka.group_id);
    return CL_OK;
}

static void on_migrated(void *arg, const cl_store_migrate_result_t *r)
{
    cl_app_t *app = arg;
    part_t *p = &app->parts[P_INGEST];
    if (p->state != PART_STARTING)
        return; /* stopped meanwhile: closing the store ended the wait */
    p->state = PART_UP;
    if (r->status != CL_OK) {
        cl_log_error("main", "schema migration failed: %s", r->message);
        cl_app_begin_shutdown(app, "cannot start", 1);
        return;
    }
    if (r->from_version != r->to_version)
        cl_log_info("main", "schema migrated from version %d to %d", r->from_version,
                    r->to_version);
    if (start_ingest_stream(app) != CL_OK) {
        cl_app_begin_shutdown(app, "cannot start", 1);
        return;
    }
    cl_app_part_started(app, p);
}

/* The pool, the store and the schema migration; on_migrated goes on. */
static int ingest_start(cl_app_t *app, part_t *p)
{
    char err[CL_ERR_LEN];
    cl_db_params_t dbp;
    cl_db_params_from_config(app->config, &dbp);
    dbp.label = "ingest";
    cl_store_params_t sp;
    cl_store_params_from_config(app->config, &sp);
    p->state = PART_STARTING;
    cl_db_pool_t *pool = NULL;
    int rc = cl_db_pool_open(app->loop, &dbp, app->config->mariadb.pool_size, &pool, err);
    cl_app_set_module(app, M_POOL, rc == CL_OK ? pool : NULL);
    if (rc != CL_OK) {
        cl_log_error("main", "%s", err);
        return CL_ERR;
    }
    cl_store_t *store = NULL;
    rc = cl_store_new(app->loop, pool, &sp, &store, err);
    cl_app_set_module(app, M_STORE, rc == CL_OK ? store : NULL);
    if (rc != CL_OK || cl_store_migrate(store, on_migrated, app, err) != CL_OK) {
        cl_log_error("main", "%s", err);
        return CL_ERR;
    }
    return CL_OK;
}

static void on_ingest_drained(void *arg)
{
    cl_app_t *app = arg;
    if (!app->parts[P_INGEST].draining)
        return; /* the drain timeout went on without it */
    app->parts[P_INGEST].draining = false;
    cl_pipeline_stats_t st;
    cl_pipeline_get_stats(PIPELINE(app), &st);
    cl_log_info("main", "drained: %llu events stored, %llu rejected in %llu batches",
                (unsigned long long)st.stored, (unsigned long long)st.rejected,
                (unsigned long long)st.batches);
    cl_app_wait_done(app, &app->parts[P_INGEST]);
}

/* Drain (consumption paused, batches in flight written), then the consumer
 * (leaving the group commits the offsets stored so far), then store and pool
 * (the pool closes right away: store.h, that is what ends queries stuck on a
 * dead server), then the pipeline, which has seen every batch by then. */
static bool ingest_stop_step(cl_app_t *app, part_t *p)
{
    switch (p->step) {
    case 1:
        /* A start cut short (the schema migration in flight) consumed
         * nothing that would need writing. */
        if (p->was_up && PIPELINE(app) != NULL) {
            app->parts[P_INGEST].draining = true;
            p->wait++;
            cl_pipeline_drain(PIPELINE(app), on_ingest_drained, app);
        }
        return true;
    case 2:
        cl_app_close_module(app, &app->mod[M_SOURCE]);
        return true;
    case 3:
        if (PIPELINE(app) != NULL)
            cl_pipeline_set_source(PIPELINE(app), NULL);
        cl_app_close_module(app, &app->mod[M_STORE]);
        cl_app_close_module(app, &app->mod[M_POOL]);
        return true;
    case 4:
        cl_app_close_module(app, &app->mod[M_PIPELINE]);
        return true;
    default:
        cl_event_parser_free(app->parser);
        app->parser = NULL;
        return false;
    }
}

static void ingest_force(cl_app_t *app, part_t *p)
{
    if (!app->parts[P_INGEST].draining)
        return;
    unsigned long long timeout = (unsigned long long)app->config->shutdown.drain_timeout_ms;
    cl_pipeline_stats_t st;
    cl_pipeline_get_stats(PIPELINE(app), &st);
    if (app->state == APP_RESTARTING) {
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
    app->parts[P_INGEST].draining = false;
    cl_app_wait_done(app, p);
}

static void ingest_apply(cl_app_t *app, const cl_reload_plan_t *plan, const cl_config_t *old)
{
    CL_UNUSED(old);
    if (app->parts[P_INGEST].state != PART_UP)
        return;
    if (plan->ingest_params && PIPELINE(app) != NULL) {
        cl_pipeline_params_t pp;
        pipeline_params(app, &pp);
        cl_pipeline_set_params(PIPELINE(app), &pp);
    }
    /* Batches queue in the pool, so the pipeline follows the new size as is. */
    if (plan->pool_size && POOL(app) != NULL) {
        char err[CL_ERR_LEN];
        cl_db_pool_stats_t ps;
        cl_db_pool_stats(POOL(app), &ps);
        if (cl_db_pool_resize(POOL(app), app->config->mariadb.pool_size, err) == CL_OK)
            cl_log_info("db", "pool resized from %u to %u connections", ps.size,
                        (unsigned)app->config->mariadb.pool_size);
        else
            cl_log_error("config", "mariadb.pool_size: %s", err);
    }
}

/* ======================================================================== */
/* The aggregator, the indexer with its sink, retention                      */
/* ======================================================================== */

/* The aggregator logs its runs itself; the app counts them and tells the
 * indexer when there is something new to send. */
static void on_aggregation_run(void *arg, const cl_aggregator_run_result_t *r)
{
    cl_app_t *app = arg;
    cl_telemetry_aggregation_run(app->telemetry, r);
    if (r->status == CL_OK && r->rows_changed > 0 && INDEXER(app) != NULL &&
        app->parts[P_INDEXER].state == PART_UP)
        cl_indexer_kick(INDEXER(app));
}

static int aggregator_start(cl_app_t *app, part_t *p)
{
    CL_UNUSED(p);
    char err[CL_ERR_LEN];
    cl_aggregator_params_t ap;
    cl_aggregator_params_from_config(app->config, &ap);
    ap.on_run = on_aggregation_run;
    ap.on_run_arg = app;
    cl_aggregator_t *agg = NULL;
    int rc = cl_aggregator_new(app->loop, &ap, &agg, err);
    cl_app_set_module(app, M_AGGREGATOR, rc == CL_OK ? agg : NULL);
    if (rc != CL_OK || cl_aggregator_start(agg, err) != CL_OK) {
        cl_log_error("main", "aggregation: %s", err);
        return CL_ERR;
    }
    cl_log_info("main", "aggregating every %llu ms",
                (unsigned long long)app->config->aggregation.interval_ms);
    return CL_OK;
}

/* A run in progress rolls back; its events stay queued for the next one. */
static bool aggregator_stop_step(cl_app_t *app, part_t *p)
{
    if (p->step > 1)
        return false;
    cl_app_close_module(app, &app->mod[M_AGGREGATOR]);
    return true;
}

static void aggregator_apply(cl_app_t *app, const cl_reload_plan_t *plan, const cl_config_t *old)
{
    CL_UNUSED(old);
    if (AGGREGATOR(app) == NULL || app->mod[M_AGGREGATOR].closing)
        return;
    if (plan->aggregation_interval && app->parts[P_AGGREGATOR].state == PART_UP)
        cl_aggregator_set_interval(AGGREGATOR(app), app->config->aggregation.interval_ms);
    /* The aggregator freezes the windows retention prunes: it learns the new
     * raw_days before retention deletes by it. */
    if (plan->retention)
        cl_aggregator_set_retention_days(AGGREGATOR(app), app->config->retention.raw_days);
}

static int new_sink(cl_app_t *app, cl_es_sink_t **out, char err[CL_ERR_LEN])
{
    cl_es_sink_params_t sp;
    cl_es_sink_params_from_config(&app->config->elasticsearch, &sp);
    return cl_es_sink_new(app->loop, &sp, cl_indexer_doc_cb, INDEXER(app), out, err);
}

static int indexer_start(cl_app_t *app, part_t *p)
{
    CL_UNUSED(p);
    char err[CL_ERR_LEN];
    cl_indexer_params_t ip;
    cl_indexer_params_from_config(app->config, &ip);
    cl_indexer_t *ix = NULL;
    int rc = cl_indexer_new(app->loop, &ip, &ix, err);
    cl_app_set_module(app, M_INDEXER, rc == CL_OK ? ix : NULL);
    if (rc != CL_OK) {
        cl_log_error("main", "%s", err);
        return CL_ERR;
    }
    cl_es_sink_t *sink = NULL;
    rc = new_sink(app, &sink, err);
    cl_app_set_module(app, M_SINK, rc == CL_OK ? sink : NULL);
    if (rc != CL_OK) {
        cl_log_error("main", "elasticsearch: %s", err);
        return CL_ERR;
    }
    cl_indexer_set_sink(ix, sink);
    if (cl_indexer_start(ix, err) != CL_OK) {
        cl_log_error("main", "elasticsearch: %s", err);
        return CL_ERR;
    }
    cl_log_info("main", "indexing aggregates into %s", app->config->elasticsearch.index);
    return CL_OK;
}

static bool sink_idle(const cl_es_sink_t *sink)
{
    cl_es_sink_stats_t st;
    cl_es_sink_stats(sink, &st);
    /* Documents waiting for a retry while every node is down would keep the
     * process for the whole drain timeout: they stay marked in MariaDB. */
    return st.requests_in_flight == 0 && (st.docs_pending == 0 || st.nodes_up == 0);
}

static void sink_drained(cl_app_t *app)
{
    uv_timer_stop(&app->sink_timer);
    app->parts[P_INDEXER].draining = false;
    cl_app_wait_done(app, &app->parts[P_INDEXER]);
}

static void on_sink_check(uv_timer_t *t)
{
    cl_app_t *app = t->data;
    if (app->parts[P_INDEXER].draining && (SINK(app) == NULL || sink_idle(SINK(app))))
        sink_drained(app);
}

/* Shutting down, the bulk requests in flight finish (no new page is read;
 * their outcomes still reach the indexer); restarting, they are aborted and
 * their documents reported CANCELLED: their rows stay marked in MariaDB. The
 * indexer goes last: the documents of every sink it used report to it until
 * that sink has closed (a sink replaced by a reload is waited for too). It
 * then writes the acknowledgements it holds. */
static bool indexer_stop_step(cl_app_t *app, part_t *p)
{
    switch (p->step) {
    case 1:
        if (p->finish && SINK(app) != NULL && INDEXER(app) != NULL) {
            cl_indexer_set_sink(INDEXER(app), NULL);
            app->parts[P_INDEXER].draining = true;
            p->wait++;
            uv_timer_start(&app->sink_timer, on_sink_check, 0, SINK_IDLE_CHECK_MS);
        }
        return true;
    case 2:
        if (INDEXER(app) != NULL)
            cl_indexer_set_sink(INDEXER(app), NULL);
        cl_app_close_module(app, &app->mod[M_SINK]);
        return true;
    case 3:
        cl_app_close_module(app, &app->mod[M_INDEXER]);
        return true;
    default:
        return false;
    }
}

static void indexer_force(cl_app_t *app, part_t *p)
{
    CL_UNUSED(p);
    if (!app->parts[P_INDEXER].draining)
        return;
    cl_es_sink_stats_t st;
    cl_es_sink_stats(SINK(app), &st);
    cl_log_warn("main",
                "drain timeout of %llu ms ran out with %zu aggregate document(s) "
                "not yet indexed; they stay marked in MariaDB and are sent after the restart",
                (unsigned long long)app->config->shutdown.drain_timeout_ms, st.docs_pending);
    sink_drained(app);
}

/* The Elasticsearch connection settings changed: attach a new sink to the
 * running indexer and close the old one. Its documents in flight are
 * cancelled and stay marked in MariaDB; the indexer sends them again. */
static void indexer_apply(cl_app_t *app, const cl_reload_plan_t *plan, const cl_config_t *old)
{
    CL_UNUSED(old);
    char err[CL_ERR_LEN];
    if (!plan->sink || app->parts[P_INDEXER].state != PART_UP || INDEXER(app) == NULL ||
        SINK(app) == NULL)
        return;
    cl_es_sink_t *sink;
    if (new_sink(app, &sink, err) != CL_OK) {
        cl_log_error("config", "elasticsearch: %s; still using the previous connection settings",
                     err);
        return;
    }
    module_t *old_sink = cl_xcalloc(1, sizeof *old_sink);
    *old_sink = app->mod[M_SINK];
    old_sink->retired = true;
    cl_indexer_set_sink(INDEXER(app), sink);
    cl_app_set_module(app, M_SINK, sink);
    cl_app_close_module(app, old_sink);
    if (cl_indexer_start(INDEXER(app), err) != CL_OK)
        cl_log_error("config", "elasticsearch: %s", err);
}

static int retention_start(cl_app_t *app, part_t *p)
{
    CL_UNUSED(p);
    char err[CL_ERR_LEN];
    const cl_config_t *c = app->config;
    cl_retention_params_t rp;
    cl_retention_params_from_config(c, &rp);
    cl_retention_t *rt = NULL;
    int rc = cl_retention_new(app->loop, &rp, &rt, err);
    cl_app_set_module(app, M_RETENTION, rc == CL_OK ? rt : NULL);
    if (rc != CL_OK || cl_retention_start(rt, err) != CL_OK) {
        cl_log_error("main", "%s", err);
        return CL_ERR;
    }
    cl_log_info("main", "deleting raw events older than %u days every %llu ms",
                c->retention.raw_days, (unsigned long long)c->retention.interval_ms);
    return CL_OK;
}

/* A batch cut short rolls back: no drain needed. */
static bool retention_stop_step(cl_app_t *app, part_t *p)
{
    if (p->step > 1)
        return false;
    cl_app_close_module(app, &app->mod[M_RETENTION]);
    return true;
}

/* A new retention policy for the running job; switching retention on or off
 * starts or stops it. */
static void retention_apply(cl_app_t *app, const cl_reload_plan_t *plan, const cl_config_t *old)
{
    CL_UNUSED(old);
    char err[CL_ERR_LEN];
    if (!plan->retention)
        return;
    const cl_config_retention_t *r = &app->config->retention;
    part_t *p = &app->parts[P_RETENTION];
    switch (p->state) {
    case PART_UP:
        if (r->raw_days == 0)
            cl_app_stop_part(app, p, false);
        else if (cl_retention_set_policy(RETENTION(app), r->raw_days, r->batch_rows, r->interval_ms,
                                         err) != CL_OK)
            cl_log_error("config", "%s", err);
        break;
    case PART_DOWN:
        if (r->raw_days > 0 && cl_app_start_part(app, p) != CL_OK)
            cl_app_stop_part(app, p, false);
        break;
    case PART_STOPPING:
        p->again = r->raw_days > 0;
        break;
    case PART_STARTING:
        break;
    }
}

/* ======================================================================== */
/* The admin listener                                                        */
/* ======================================================================== */

/* /readyz: ready while running with partitions assigned, MariaDB up and taking
 * ingest batches, and the aggregation not failing. */
bool cl_app_readiness(void *arg, cl_buf_t *missing)
{
    cl_app_t *app = arg;
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
    if (POOL(app) == NULL || app->mod[M_POOL].closing || !cl_db_pool_healthy(POOL(app))) {
        cl_buf_append_str(missing, "no MariaDB connection\n");
        ok = false;
    }
    if (SOURCE(app) == NULL || app->mod[M_SOURCE].closing ||
        cl_kafka_source_assigned_count(SOURCE(app)) == 0) {
        cl_buf_append_str(missing, "no Kafka partitions assigned\n");
        ok = false;
    }
    char stopped_list[1024];
    size_t stopped = SOURCE(app) != NULL
                         ? cl_kafka_source_stopped(SOURCE(app), stopped_list, sizeof stopped_list)
                         : 0;
    if (stopped > 0) {
        cl_buf_appendf(missing,
                       "%zu Kafka partition(s) stopped (%s): the committed offset is missing or "
                       "no longer on the broker and auto.offset.reset is error\n",
                       stopped, stopped_list);
        ok = false;
    }
    if (AGGREGATOR(app) != NULL) {
        cl_aggregator_stats_t as;
        cl_aggregator_stats(AGGREGATOR(app), &as);
        if (as.failing) {
            cl_buf_appendf(missing, "aggregation failing (%llu runs in a row): %s\n",
                           (unsigned long long)as.consecutive_failures, as.last_error);
            ok = false;
        }
    }
    uint64_t age_ms;
    char which[256];
    if (PIPELINE(app) != NULL && !app->mod[M_PIPELINE].closing &&
        cl_pipeline_oldest_unwritten(PIPELINE(app), &age_ms, which, sizeof which) &&
        age_ms > app->config->ingest.max_unwritten_age_ms) {
        cl_buf_appendf(missing,
                       "the oldest unwritten ingest batch is %llu s old (%s; "
                       "ingest.max_unwritten_age %llu s)\n",
                       (unsigned long long)(age_ms / 1000), which,
                       (unsigned long long)(app->config->ingest.max_unwritten_age_ms / 1000));
        ok = false;
    }
    const char *blocked = STORE(app) != NULL ? cl_store_blocked(STORE(app)) : NULL;
    if (blocked != NULL) {
        cl_buf_appendf(missing, "MariaDB refuses ingest batches (retrying): %s\n", blocked);
        ok = false;
    }
    return ok;
}

static int admin_listen(cl_app_t *app, const char *host, uint16_t port, const char *listen,
                        char err[CL_ERR_LEN])
{
    cl_admin_params_t ap = {.host = host, .port = port};
    cl_admin_t *admin = cl_admin_new(app->loop, &ap, app->metrics, cl_app_readiness, app);
    if (cl_admin_start(admin, err) != CL_OK) {
        cl_admin_close(admin, NULL, NULL);
        return CL_ERR;
    }
    cl_app_set_module(app, M_ADMIN, admin);
    if (port == 0) /* the system picked one: say which */
        cl_log_info("main", "admin listener on %s, port %u (/healthz, /readyz, /metrics)", listen,
                    (unsigned)cl_admin_port(admin));
    else
        cl_log_info("main", "admin listener on %s (/healthz, /readyz, /metrics)", listen);
    return CL_OK;
}

static int admin_start(cl_app_t *app, part_t *p)
{
    CL_UNUSED(p);
    char err[CL_ERR_LEN];
    const cl_config_admin_t *a = &app->config->admin;
    if (admin_listen(app, a->host, a->port, a->listen, err) != CL_OK) {
        cl_log_error("main", "%s", err);
        return CL_ERR;
    }
    return CL_OK;
}

static bool admin_stop_step(cl_app_t *app, part_t *p)
{
    if (p->step > 1)
        return false;
    cl_app_close_module(app, &app->mod[M_ADMIN]);
    return true;
}

/* The address the listener had before a reload moved it, to go back to if
 * the new one cannot be bound. */
typedef struct {
    cl_app_t *app;
    char *host;
    uint16_t port;
    char *listen;
} admin_move_t;

static void on_old_admin_closed(void *arg)
{
    admin_move_t *m = arg;
    cl_app_t *app = m->app;
    const cl_config_admin_t *a = &app->config->admin;
    char err[CL_ERR_LEN];
    part_t *p = &app->parts[P_ADMIN];
    bool live = app->state != APP_DRAINING && app->state != APP_CLOSING;
    if (live && a->enabled && admin_listen(app, a->host, a->port, a->listen, err) != CL_OK) {
        cl_log_error("main", "admin.listen: %s", err);
        char again[CL_ERR_LEN];
        if (m->host == NULL)
            cl_log_error("main", "admin listener off until a reload sets a usable address");
        else if (admin_listen(app, m->host, m->port, m->listen, again) == CL_OK)
            cl_log_warn("main", "admin listener kept on %s", m->listen);
        else
            cl_log_error("main", "admin listener off: %s", again);
    }
    /* Off now (switched off, or no address could be bound): a reload that
     * sets a usable address starts it again. */
    if (live && p->state == PART_UP && ADMIN(app) == NULL)
        p->state = PART_DOWN;
    free(m->host);
    free(m->listen);
    free(m);
}

/* Close the listener, then listen on the configured address. The close is
 * asynchronous, so the same port can be bound again afterwards. */
static void admin_apply(cl_app_t *app, const cl_reload_plan_t *plan, const cl_config_t *old)
{
    char err[CL_ERR_LEN];
    if (!plan->admin)
        return;
    part_t *p = &app->parts[P_ADMIN];
    const cl_config_admin_t *a = &app->config->admin;
    if (p->state == PART_DOWN) {
        if (a->enabled && admin_listen(app, a->host, a->port, a->listen, err) != CL_OK)
            cl_log_error("main", "admin.listen: %s", err);
        else if (a->enabled)
            p->state = PART_UP;
        return;
    }
    if (p->state != PART_UP || ADMIN(app) == NULL)
        return;
    admin_move_t *m = cl_xcalloc(1, sizeof *m);
    m->app = app;
    m->host = old->admin.host != NULL ? cl_xstrdup(old->admin.host) : NULL;
    m->port = old->admin.port;
    m->listen = old->admin.listen != NULL ? cl_xstrdup(old->admin.listen) : NULL;
    cl_admin_t *admin = ADMIN(app);
    cl_app_set_module(app, M_ADMIN, NULL);
    cl_admin_close(admin, on_old_admin_closed, m);
}

/* ======================================================================== */
/* The table                                                                 */
/* ======================================================================== */

const part_def_t cl_app_parts[P_COUNT] = {
    [P_ADMIN] = {.name = "admin listener",
                 .bit = BIT_ADMIN,
                 .start = admin_start,
                 .stop_step = admin_stop_step,
                 .apply = admin_apply},
    [P_INGEST] = {.name = "ingest",
                  .bit = CL_PART_INGEST,
                  .start = ingest_start,
                  .stop_step = ingest_stop_step,
                  .force = ingest_force,
                  .apply = ingest_apply},
    /* The other parts read and write the tables whose schema ingest
     * migrates. */
    [P_AGGREGATOR] = {.name = "aggregator",
                      .bit = CL_PART_AGGREGATOR,
                      .needs = CL_PART_INGEST,
                      .start = aggregator_start,
                      .stop_step = aggregator_stop_step,
                      .apply = aggregator_apply},
    [P_INDEXER] = {.name = "indexer",
                   .bit = CL_PART_INDEXER,
                   .needs = CL_PART_INGEST,
                   .start = indexer_start,
                   .stop_step = indexer_stop_step,
                   .force = indexer_force,
                   .apply = indexer_apply},
    [P_RETENTION] = {.name = "retention",
                     .bit = CL_PART_RETENTION,
                     .needs = CL_PART_INGEST,
                     .start = retention_start,
                     .stop_step = retention_stop_step,
                     .apply = retention_apply},
};

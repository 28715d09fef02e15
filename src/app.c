/* app: the supervisor of clickloop's parts; see include/clickloop/app.h.
 *
 * One mechanism for every part. A part is a row of `parts[]`: whether the
 * configuration wants it, the parts it needs up before it starts, how it
 * starts, the steps in which it stops, what a drain timeout cuts short and
 * the settings it applies in place. Stopping a part runs its steps in order;
 * a step begins closes (or a wait, such as ingest's drain) and the next step
 * begins when every one of them has completed. Every module is closed by
 * cl_app_close_module(): its telemetry is retired first (its counts are kept) and
 * its slot is cleared when its close completes. The app's own state says
 * which caller the stops serve: a shutdown, or a reload's restart that
 * starts the parts again once they are all down. */
#include "clickloop/app.h"

#include <curl/curl.h>
#include <mysql.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "app_parts.h"
#include "clickloop/admin.h"
#include "clickloop/aggregate.h"
#include "clickloop/db.h"
#include "clickloop/db_pool.h"
#include "clickloop/es_sink.h"
#include "clickloop/indexer.h"
#include "clickloop/kafka_source.h"
#include "clickloop/log.h"
#include "clickloop/pipeline.h"
#include "clickloop/retention.h"
#include "clickloop/store.h"

/* After the drain timeout forced everything closed, how long closing may take
 * before the process exits regardless (a consumer that cannot leave its
 * group, a socket that does not close). */
#define CLOSE_GRACE_MS 5000
/* Restarts of ingest after fatal consumer errors: the backoff before each
 * (doubling from the minimum, jittered), and when they count as failing: a
 * fatal error within CL_APP_FATAL_AGAIN_MS of the previous restart's end
 * counts as the same trouble; after CL_APP_FATAL_MAX_RESTARTS such restarts
 * in a row the process exits 1, so that a supervisor sees it. */
#define CL_APP_FATAL_BACKOFF_MIN_MS 1000u
#define CL_APP_FATAL_BACKOFF_MAX_MS 30000u
#define CL_APP_FATAL_AGAIN_MS 60000u
#define CL_APP_FATAL_MAX_RESTARTS 5u

static void start_parts(cl_app_t *app, unsigned bits);

/* ======================================================================== */
/* Modules: telemetry and the one close path                                 */
/* ======================================================================== */

static int close_pool(void *o, cl_close_cb cb, void *arg)
{
    return cl_db_pool_close(o, cb, arg);
}
static int close_store(void *o, cl_close_cb cb, void *arg)
{
    return cl_store_close(o, cb, arg);
}
static int close_pipeline(void *o, cl_close_cb cb, void *arg)
{
    cl_pipeline_close(o, cb, arg);
    return CL_OK;
}
static int close_source(void *o, cl_close_cb cb, void *arg)
{
    cl_kafka_source_close(o, cb, arg);
    return CL_OK;
}
static int close_aggregator(void *o, cl_close_cb cb, void *arg)
{
    return cl_aggregator_close(o, cb, arg);
}
static int close_sink(void *o, cl_close_cb cb, void *arg)
{
    return cl_es_sink_close(o, cb, arg);
}
static int close_indexer(void *o, cl_close_cb cb, void *arg)
{
    return cl_indexer_close(o, cb, arg);
}
static int close_retention(void *o, cl_close_cb cb, void *arg)
{
    return cl_retention_close(o, cb, arg);
}
static int close_admin(void *o, cl_close_cb cb, void *arg)
{
    cl_admin_close(o, cb, arg);
    return CL_OK;
}

static const struct {
    unsigned part;
    int (*close)(void *obj, cl_close_cb cb, void *arg);
} modules[M_COUNT] = {
    [M_POOL] = {P_INGEST, close_pool},
    [M_STORE] = {P_INGEST, close_store},
    [M_PIPELINE] = {P_INGEST, close_pipeline},
    [M_SOURCE] = {P_INGEST, close_source},
    [M_AGGREGATOR] = {P_AGGREGATOR, close_aggregator},
    [M_SINK] = {P_INDEXER, close_sink},
    [M_INDEXER] = {P_INDEXER, close_indexer},
    [M_RETENTION] = {P_RETENTION, close_retention},
    [M_ADMIN] = {P_ADMIN, close_admin},
};

/* One module in telemetry's terms (the admin listener is not a source). */
static void telemetry_field(cl_telemetry_sources_t *s, module_id_t id, void *obj)
{
    switch (id) {
    case M_POOL:
        s->pool = obj;
        break;
    case M_STORE:
        s->store = obj;
        break;
    case M_PIPELINE:
        s->pipeline = obj;
        break;
    case M_SOURCE:
        s->source = obj;
        break;
    case M_AGGREGATOR:
        s->aggregator = obj;
        break;
    case M_SINK:
        s->sink = obj;
        break;
    case M_INDEXER:
        s->indexer = obj;
        break;
    case M_RETENTION:
        s->retention = obj;
        break;
    case M_ADMIN:
    case M_COUNT:
        break;
    }
}

/* Tell telemetry which modules exist right now; closing ones were retired
 * (their final counts kept) and are not read again. */
static void update_telemetry(cl_app_t *app)
{
    cl_telemetry_sources_t s;
    memset(&s, 0, sizeof s);
    for (int i = 0; i < M_COUNT; i++) {
        if (app->mod[i].obj != NULL && !app->mod[i].closing)
            telemetry_field(&s, (module_id_t)i, app->mod[i].obj);
    }
    cl_telemetry_set_sources(app->telemetry, &s);
}

/* A module was created (obj may be NULL when its creation failed). */
void cl_app_set_module(cl_app_t *app, module_id_t id, void *obj)
{
    app->mod[id].obj = obj;
    app->mod[id].closing = false;
    update_telemetry(app);
}

static void on_module_closed(void *arg)
{
    module_t *m = arg;
    cl_app_t *app = m->app;
    part_t *p = &app->parts[modules[m->id].part];
    if (m->retired) {
        free(m);
    } else {
        m->obj = NULL;
        m->closing = false;
        update_telemetry(app);
    }
    cl_app_wait_done(app, p);
}

/* Close `m` as part of its part's current step (or, retired, on its own):
 * the part waits for it. */
void cl_app_close_module(cl_app_t *app, module_t *m)
{
    if (m->obj == NULL || m->closing)
        return;
    cl_telemetry_sources_t going;
    memset(&going, 0, sizeof going);
    telemetry_field(&going, m->id, m->obj);
    cl_telemetry_retire(app->telemetry, &going);
    m->closing = true;
    update_telemetry(app);
    app->parts[modules[m->id].part].wait++;
    if (modules[m->id].close(m->obj, on_module_closed, m) != CL_OK)
        on_module_closed(m);
}

/* ======================================================================== */
/* Parts: the generic start and stop                                         */
/* ======================================================================== */

static bool parts_down(const cl_app_t *app, unsigned bits)
{
    for (int i = 0; i < P_COUNT; i++) {
        if ((bits & cl_app_parts[i].bit) != 0 && app->parts[i].state != PART_DOWN)
            return false;
    }
    return true;
}

static unsigned parts_up(const cl_app_t *app)
{
    unsigned bits = 0;
    for (int i = 0; i < P_COUNT; i++) {
        if (app->parts[i].state == PART_UP)
            bits |= cl_app_parts[i].bit;
    }
    return bits;
}

/* The parts a configuration runs: reload.h says which of the four, and the
 * admin listener runs while it is enabled. */
static unsigned parts_wanted(const cl_config_t *c)
{
    return cl_reload_parts_wanted(c) | (c->admin.enabled ? BIT_ADMIN : 0u);
}

static void close_app_timers(cl_app_t *app);

/* A part finished stopping (or one of several did): go on with whatever
 * waited for it. */
static void parts_changed(cl_app_t *app)
{
    if (app->stopping_parts)
        return; /* stop_parts() looks again when it is done */
    switch (app->state) {
    case APP_DRAINING:
        if (!parts_down(app, CL_PARTS_ALL))
            return;
        /* The admin listener answers "shutting down" to the last moment. */
        if (app->parts[P_ADMIN].state != PART_DOWN) {
            cl_app_stop_part(app, &app->parts[P_ADMIN], true);
            return;
        }
        app->state = APP_CLOSING;
        uv_timer_stop(&app->drain_timer);
        close_app_timers(app);
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
        unsigned bits = app->restart_parts;
        app->restart_parts = 0;
        app->drain_forced = false;
        start_parts(app, bits);
        break;
    }
    case APP_STARTING:
    case APP_RUNNING:
    case APP_CLOSING:
        break;
    }
}

int cl_app_start_part(cl_app_t *app, part_t *p)
{
    cl_log_debug("main", "%s starting", p->def->name);
    p->state = PART_UP;
    p->again = false;
    return p->def->start(app, p);
}

static void part_down(cl_app_t *app, part_t *p)
{
    cl_log_debug("main", "%s stopped", p->def->name);
    p->state = PART_DOWN;
    bool again = p->again;
    p->again = false;
    /* Wanted again by a reload while it closed (and not started meanwhile by
     * a restart that waited for it). */
    if (again && app->state == APP_RUNNING && (parts_wanted(app->config) & p->def->bit) != 0 &&
        cl_app_start_part(app, p) != CL_OK)
        cl_app_stop_part(app, p, false);
    parts_changed(app);
}

/* Run the part's stop steps while nothing of the current one is pending. */
static void step_part(cl_app_t *app, part_t *p)
{
    if (p->stepping)
        return;
    p->stepping = true;
    while (p->wait == 0) {
        p->step++;
        if (!p->def->stop_step(app, p)) {
            p->stepping = false;
            part_down(app, p);
            return;
        }
    }
    p->stepping = false;
}

void cl_app_wait_done(cl_app_t *app, part_t *p)
{
    p->wait--;
    if (p->state == PART_STOPPING && p->wait == 0)
        step_part(app, p);
}

void cl_app_stop_part(cl_app_t *app, part_t *p, bool finish)
{
    if (p->state == PART_DOWN || p->state == PART_STOPPING)
        return;
    p->was_up = p->state == PART_UP;
    p->state = PART_STOPPING;
    p->finish = finish;
    p->step = 0;
    if (p->wait == 0)
        step_part(app, p);
}

/* finish: let requests in flight finish (shutdown) rather than abort them
 * (restart). */
static void stop_parts(cl_app_t *app, unsigned bits, bool finish)
{
    app->stopping_parts = true;
    for (int i = 0; i < P_COUNT; i++) {
        if (bits & cl_app_parts[i].bit)
            cl_app_stop_part(app, &app->parts[i], finish);
    }
    app->stopping_parts = false;
    parts_changed(app);
}

static void all_started(cl_app_t *app)
{
    if (app->state == APP_RESTARTING)
        cl_log_info("main", "restart complete in %llu ms",
                    (unsigned long long)(cl_now_ms() - app->restart_began_ms));
    app->state = APP_RUNNING;
    app->fatal_restart_done_ms = cl_now_ms();
    if (app->reload_pending)
        cl_app_reload(app);
}

/* Start the parts waiting in to_start whose needs are up, in table order. */
static void start_ready(cl_app_t *app)
{
    for (int i = 0; i < P_COUNT; i++) {
        part_t *p = &app->parts[i];
        if ((app->to_start & p->def->bit) == 0 || (p->def->needs & ~parts_up(app)) != 0)
            continue;
        app->to_start &= ~p->def->bit;
        if (cl_app_start_part(app, p) != CL_OK) {
            cl_app_begin_shutdown(app, "cannot start", 1);
            return;
        }
    }
    if (app->to_start != 0 || app->state == APP_RUNNING)
        return;
    for (int i = 0; i < P_COUNT; i++) {
        if (app->parts[i].state == PART_STARTING)
            return;
    }
    all_started(app);
}

/* A part that started asynchronously is up. */
void cl_app_part_started(cl_app_t *app, part_t *p)
{
    p->state = PART_UP;
    start_ready(app);
}

/* Start the parts the configuration runs among `bits`: start-up, and the
 * second half of a reload's restart. */
static void start_parts(cl_app_t *app, unsigned bits)
{
    app->to_start |= bits & parts_wanted(app->config);
    start_ready(app);
}

static void on_drain_timeout(uv_timer_t *t)
{
    cl_app_t *app = t->data;
    if (app->drain_forced) {
        /* Forced closing did not finish either: nothing left to wait for. */
        cl_log_error("main", "closing did not finish %d ms after the drain timeout; exiting now",
                     CLOSE_GRACE_MS);
        _exit(1);
    }
    app->drain_forced = true;
    for (int i = 0; i < P_COUNT; i++) {
        part_t *p = &app->parts[i];
        if (p->state == PART_STOPPING && p->def->force != NULL)
            p->def->force(app, p);
    }
    if (app->state != APP_RESTARTING && app->state != APP_CLOSING)
        uv_timer_start(&app->drain_timer, on_drain_timeout, CLOSE_GRACE_MS, 0);
}

void cl_app_begin_shutdown(cl_app_t *app, const char *why, int exit_code)
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
    app->to_start = 0;
    app->drain_forced = false;
    uv_timer_start(&app->drain_timer, on_drain_timeout, app->config->shutdown.drain_timeout_ms, 0);
    stop_parts(app, CL_PARTS_ALL, true);
}

/* ======================================================================== */
/* Fatal consumer errors                                                     */
/* ======================================================================== */

static void begin_restart(cl_app_t *app, unsigned bits, const char *why);

static void on_fatal_timer(uv_timer_t *t)
{
    cl_app_t *app = t->data;
    if (app->state == APP_DRAINING || app->state == APP_CLOSING)
        return;
    if (app->state != APP_RUNNING) {
        /* A start or a reload's restart is under way: after it. */
        uv_timer_start(&app->fatal_timer, on_fatal_timer, CL_APP_FATAL_BACKOFF_MIN_MS, 0);
        return;
    }
    cl_telemetry_ingest_restart(app->telemetry);
    begin_restart(app, CL_PART_INGEST, "from the committed offsets after a fatal consumer error");
}

void cl_app_ingest_fatal(void *arg, const char *message)
{
    cl_app_t *app = arg;
    /* Stopping anyway, a restart already scheduled, or the consumer that
     * failed is being closed (it may report again meanwhile). */
    if (app->state == APP_DRAINING || app->state == APP_CLOSING ||
        uv_is_active((uv_handle_t *)&app->fatal_timer) || app->parts[P_INGEST].state != PART_UP)
        return;
    uint64_t now = cl_now_ms();
    if (app->fatal_restarts > 0 && now - app->fatal_restart_done_ms > CL_APP_FATAL_AGAIN_MS)
        app->fatal_restarts = 0; /* the last restart held: a new trouble */
    if (app->fatal_restarts >= CL_APP_FATAL_MAX_RESTARTS) {
        cl_log_error("main",
                     "the Kafka consumer failed fatally again after %u restarts of ingest: %s; "
                     "exiting",
                     app->fatal_restarts, message);
        cl_app_begin_shutdown(app, "fatal consumer errors", 1);
        return;
    }
    uint64_t delay = cl_backoff_ms(app->fatal_restarts, CL_APP_FATAL_BACKOFF_MIN_MS,
                                   CL_APP_FATAL_BACKOFF_MAX_MS, (uint32_t)(now * 2654435761u));
    app->fatal_restarts++;
    cl_log_error("main",
                 "ingest restarts from the committed offsets in %llu ms (restart %u in a row)",
                 (unsigned long long)delay, app->fatal_restarts);
    uv_timer_start(&app->fatal_timer, on_fatal_timer, delay, 0);
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
    char names[128];
    cl_reload_describe_parts(restart, names, sizeof names);
    cl_log_info("config", "%s changed: applied by reconnecting %s", name, names);
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

static void apply_log_config(const cl_config_t *c)
{
    cl_log_set_level(c->log.level);
    cl_log_set_format(c->log.format);
}

static void begin_restart(cl_app_t *app, unsigned bits, const char *why)
{
    char names[128];
    cl_reload_describe_parts(bits, names, sizeof names);
    cl_log_info("main", "restarting %s %s", names, why);
    app->state = APP_RESTARTING;
    app->restart_parts = bits;
    app->restart_began_ms = cl_now_ms();
    app->drain_forced = false;
    uv_timer_start(&app->drain_timer, on_drain_timeout, app->config->shutdown.drain_timeout_ms, 0);
    stop_parts(app, bits, false);
}

void cl_app_reload(cl_app_t *app)
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
     * so the old one can go once the in-place changes are made. A part that
     * restarts takes its settings from the new configuration instead. */
    cl_config_t *old = app->config;
    app->config = next;
    for (int i = 0; i < P_COUNT; i++) {
        if ((plan.restart & cl_app_parts[i].bit) == 0 && cl_app_parts[i].apply != NULL)
            cl_app_parts[i].apply(app, &plan, old);
    }
    cl_config_free(old);
    cl_log_info("config", "reloaded %s: %d setting(s) changed", app->config_path, plan.changes);
    cl_telemetry_config_reload(app->telemetry, true);
    if (plan.restart != 0)
        begin_restart(app, plan.restart, "to apply the new configuration");
}

/* ======================================================================== */
/* The app                                                                   */
/* ======================================================================== */

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

static void on_timer_closed(uv_handle_t *h)
{
    cl_app_t *app = h->data;
    if (--app->open_timers == 0 && app->on_closed != NULL)
        app->on_closed(app->on_closed_arg);
}

static void close_app_timers(cl_app_t *app)
{
    uv_close((uv_handle_t *)&app->drain_timer, on_timer_closed);
    uv_close((uv_handle_t *)&app->sink_timer, on_timer_closed);
    uv_close((uv_handle_t *)&app->fatal_timer, on_timer_closed);
}

cl_app_t *cl_app_new(uv_loop_t *loop, const char *config_path, cl_config_t *config,
                     cl_close_cb on_closed, void *arg)
{
    cl_app_t *app = cl_xcalloc(1, sizeof *app);
    app->loop = loop;
    app->config_path = config_path;
    app->config = config;
    app->on_closed = on_closed;
    app->on_closed_arg = arg;
    for (int i = 0; i < P_COUNT; i++)
        app->parts[i].def = &cl_app_parts[i];
    for (int i = 0; i < M_COUNT; i++) {
        app->mod[i].app = app;
        app->mod[i].id = (module_id_t)i;
    }
    uv_timer_init(loop, &app->drain_timer);
    uv_timer_init(loop, &app->sink_timer);
    uv_timer_init(loop, &app->fatal_timer);
    app->drain_timer.data = app->sink_timer.data = app->fatal_timer.data = app;
    app->open_timers = 3;
    app->metrics = cl_metrics_new();
    app->telemetry = cl_telemetry_new(app->metrics);
    apply_log_config(config);
    return app;
}

void cl_app_start(cl_app_t *app)
{
    raise_fd_limit();
    if (mysql_library_init(0, NULL, NULL) != 0) {
        cl_log_error("main", "cannot initialise the MariaDB client library");
        cl_app_begin_shutdown(app, "cannot start", 1);
        return;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    app->libraries = true;
    start_parts(app, CL_PARTS_ALL | BIT_ADMIN);
}

void cl_app_shutdown(cl_app_t *app, const char *why)
{
    cl_app_begin_shutdown(app, why, 0);
}

int cl_app_exit_code(const cl_app_t *app)
{
    return app->exit_code;
}

void cl_app_free(cl_app_t *app)
{
    if (app == NULL)
        return;
    cl_telemetry_free(app->telemetry);
    cl_metrics_free(app->metrics);
    cl_config_free(app->config);
    if (app->libraries) {
        curl_global_cleanup();
        mysql_library_end();
    }
    free(app);
}

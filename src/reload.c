/* reload: the plan for applying a new configuration, and the library checks
 * made before anything stops; see include/clickloop/reload.h. */
#include "clickloop/reload.h"

#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <string.h>

#include "clickloop/aggregate.h"
#include "clickloop/es_sink.h"
#include "clickloop/event.h"

unsigned cl_reload_parts_wanted(const cl_config_t *c)
{
    unsigned parts = CL_PART_INGEST;
    if (c->aggregation.enabled) {
        parts |= CL_PART_AGGREGATOR;
        if (c->elasticsearch.present)
            parts |= CL_PART_INDEXER;
    }
    if (c->retention.raw_days > 0)
        parts |= CL_PART_RETENTION;
    return parts;
}

void cl_reload_describe_parts(unsigned parts, char *out, size_t size)
{
    static const struct {
        unsigned part;
        const char *name;
    } names[] = {
        {CL_PART_INGEST, "ingest"},
        {CL_PART_AGGREGATOR, "aggregator"},
        {CL_PART_INDEXER, "indexer"},
        {CL_PART_RETENTION, "retention"},
    };
    size_t used = 0;
    if (size == 0)
        return;
    out[0] = '\0';
    for (size_t i = 0; i < CL_ARRAY_LEN(names); i++) {
        if ((parts & names[i].part) == 0)
            continue;
        int n = snprintf(out + used, size - used, "%s%s", used > 0 ? ", " : "", names[i].name);
        if (n < 0 || (size_t)n >= size - used)
            return; /* truncated, still terminated */
        used += (size_t)n;
    }
}

/* ---- The plan ----------------------------------------------------------------- */

typedef struct {
    cl_reload_plan_t *plan;
    unsigned wanted; /* parts running in either configuration */
    cl_reload_change_cb cb;
    void *arg;
    unsigned restart; /* with cb: the whole plan's restarts (second pass) */
} planner_t;

/* Records what the rule of a changed setting asks for and returns the parts
 * it restarts, before they are filtered by what runs. The rule comes from the
 * configuration's field table, where every setting has one. */
static unsigned apply_rule(cl_reload_plan_t *plan, const char *name,
                           const cl_config_reload_rule_t *rule)
{
    switch (rule->apply) {
    case CL_APPLY_RESTART:
        return rule->parts;
    case CL_APPLY_LOG:
        plan->log = true;
        return 0;
    case CL_APPLY_INGEST_PARAMS:
        plan->ingest_params = true;
        return 0;
    case CL_APPLY_POOL_SIZE:
        plan->pool_size = true;
        return 0;
    case CL_APPLY_AGGREGATION_INTERVAL:
        plan->aggregation_interval = true;
        return 0;
    case CL_APPLY_SINK:
        plan->sink = true;
        return 0;
    case CL_APPLY_ADMIN:
        plan->admin = true;
        return 0;
    case CL_APPLY_RETENTION:
        plan->retention = true;
        return 0;
    case CL_APPLY_WHEN_READ:
        return 0;
    }
    cl_panic("reload: setting %s has no reload rule in the configuration table", name);
}

static void on_difference(const char *name, const cl_config_reload_rule_t *rule, void *data)
{
    planner_t *p = data;
    unsigned restart = apply_rule(p->plan, name, rule) & p->wanted;
    p->plan->restart |= restart;
    if (p->cb == NULL)
        return;
    /* A setting applied in place by a part that restarts anyway is applied
     * by that restart: the new part starts from the new configuration, and
     * the application skips the in-place step. */
    if (rule->apply != CL_APPLY_RESTART)
        restart = rule->parts & p->restart;
    p->cb(p->arg, name, restart);
}

void cl_reload_plan(const cl_config_t *old, const cl_config_t *next, cl_reload_plan_t *plan,
                    cl_reload_change_cb cb, void *arg)
{
    memset(plan, 0, sizeof *plan);
    planner_t p = {
        .plan = plan,
        .wanted = cl_reload_parts_wanted(old) | cl_reload_parts_wanted(next),
    };
    plan->changes = cl_config_diff(old, next, on_difference, &p);
    if (cb == NULL)
        return;
    /* Report each change once the whole plan is known, so that an in-place
     * setting of a part that restarts anyway is reported as the restart. */
    cl_reload_plan_t scratch;
    memset(&scratch, 0, sizeof scratch);
    p.plan = &scratch;
    p.cb = cb;
    p.arg = arg;
    p.restart = plan->restart;
    cl_config_diff(old, next, on_difference, &p);
}

/* ---- Preflight ------------------------------------------------------------------ */

/* Kafka properties whose values are credentials: the same rule as config.c,
 * whose messages never show them either. */
static bool kafka_property_is_secret(const char *name)
{
    return strcasestr(name, "password") != NULL || strcasestr(name, "secret") != NULL ||
           strcasestr(name, "sasl.oauthbearer.config") != NULL ||
           strcasestr(name, "ssl.key.pem") != NULL;
}

static int check_kafka_property(rd_kafka_conf_t *conf, const char *setting, const char *name,
                                const char *value, void (*problem)(void *, const char *), void *arg)
{
    char errstr[512], msg[CL_ERR_LEN + 600];
    if (rd_kafka_conf_set(conf, name, value, errstr, sizeof errstr) == RD_KAFKA_CONF_OK)
        return 0;
    /* librdkafka quotes the value it refused: not for a secret. */
    if (kafka_property_is_secret(name))
        snprintf(msg, sizeof msg, "%s: librdkafka refuses the value", setting);
    else
        snprintf(msg, sizeof msg, "%s: librdkafka refuses it: %s", setting, errstr);
    problem(arg, msg);
    return 1;
}

static int preflight_kafka(const cl_config_kafka_t *k, void (*problem)(void *, const char *),
                           void *arg)
{
    int problems = 0;
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    for (size_t i = 0; i < k->property_count; i++) {
        char setting[600];
        snprintf(setting, sizeof setting, "kafka.properties[\"%s\"]", k->properties[i].name);
        problems += check_kafka_property(conf, setting, k->properties[i].name,
                                         k->properties[i].value, problem, arg);
    }
    problems +=
        check_kafka_property(conf, "kafka.brokers", "bootstrap.servers", k->brokers, problem, arg);
    problems += check_kafka_property(conf, "kafka.group_id", "group.id", k->group_id, problem, arg);
    rd_kafka_conf_destroy(conf);
    return problems;
}

static int report(void (*problem)(void *, const char *), void *arg, const char *prefix,
                  const char *err)
{
    char msg[CL_ERR_LEN + 64];
    snprintf(msg, sizeof msg, "%s: %s", prefix, err);
    problem(arg, msg);
    return 1;
}

int cl_reload_preflight(const cl_config_t *c, void (*problem)(void *arg, const char *message),
                        void *arg)
{
    char err[CL_ERR_LEN];
    int problems = preflight_kafka(&c->kafka, problem, arg);

    cl_event_parser_t *parser = NULL;
    if (cl_event_parser_new((const char *const *)c->ingest.mapping,
                            (size_t)c->ingest.max_event_bytes, &parser, err) != CL_OK)
        problems += report(problem, arg, "ingest.mapping", err);
    else
        cl_event_parser_free(parser);

    if (c->aggregation.enabled) {
        cl_aggregate_spec_t spec = {
            .windows_ms = c->aggregation.windows_ms,
            .window_count = c->aggregation.window_count,
            .session_timeout_ms = c->aggregation.session_timeout_ms,
        };
        if (cl_aggregate_spec_check(&spec, err) != CL_OK)
            problems += report(problem, arg, "aggregation", err);
    }
    if (c->elasticsearch.present) {
        cl_es_sink_params_t sp;
        cl_es_sink_params_from_config(&c->elasticsearch, &sp);
        if (cl_es_sink_params_validate(&sp, err) != CL_OK)
            problems += report(problem, arg, "elasticsearch", err);
    }
    return problems;
}

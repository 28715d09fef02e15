/* Unit tests for the reload plan: which settings apply in place and which
 * restart which parts, only parts that run are restarted, and the preflight
 * names refused Kafka properties without ever showing a secret value. */
#include "clickloop/reload.h"

#include <stdbool.h>
#include <stdio.h>

#include "cl_test.h"

/* A configuration is built from a variant: each test changes the sections
 * it is about (a key may not repeat in a file, so sections are replaced
 * whole, not added). The base variant runs ingest, aggregator and indexer. */
#define BASE_KAFKA "\"kafka\": {\"brokers\": \"127.0.0.1:9092\", \"topics\": [\"clicks\"]%s}"
#define BASE_MARIADB                                                                               \
    "\"mariadb\": {\"host\": \"%s\", \"user\": \"u\", \"database\": \"d\", \"pool_size\": %d}"

typedef struct {
    const char *kafka_extra; /* appended inside "kafka" */
    const char *host;
    int pool_size;
    const char *ingest;      /* whole "ingest" section */
    const char *aggregation; /* whole "aggregation" section */
    const char *es;          /* whole "elasticsearch" section, or "" */
    const char *admin;
    const char *log;
    const char *retention;
} variant_t;

static variant_t base_variant(void)
{
    variant_t v = {
        .kafka_extra = "",
        .host = "127.0.0.1",
        .pool_size = 4,
        .ingest = "\"ingest\": {\"batch_max_events\": 1000}",
        .aggregation = "\"aggregation\": {\"enabled\": true, \"windows\": [\"1h\"]}",
        .es = ", \"elasticsearch\": {\"urls\": [\"http://127.0.0.1:9200\"]}",
        .admin = "\"admin\": {\"listen\": \"127.0.0.1:9400\"}",
        .log = "\"log\": {\"level\": \"info\"}",
        .retention = "\"retention\": {\"raw_days\": 0}",
    };
    return v;
}

static cl_config_t *make(const variant_t *v)
{
    char kafka[512], mariadb[512], json[4096];
    snprintf(kafka, sizeof kafka, BASE_KAFKA, v->kafka_extra);
    snprintf(mariadb, sizeof mariadb, BASE_MARIADB, v->host, v->pool_size);
    snprintf(json, sizeof json, "{%s, %s, %s, %s%s, %s, %s, %s}", kafka, mariadb, v->ingest,
             v->aggregation, v->es, v->admin, v->log, v->retention);
    cl_config_t *c = NULL;
    cl_config_errors_t errs;
    if (cl_config_load_string(json, "test.json", NULL, &c, &errs) != CL_OK) {
        for (size_t i = 0; i < errs.count; i++)
            fprintf(stderr, "    config: %s\n", errs.messages[i]);
        CL_FAIL_("test configuration does not load: %s", json);
    }
    cl_config_errors_free(&errs);
    return c;
}

/* What the change callback heard. */
typedef struct {
    int calls;
    char names[16][128];
    unsigned restart[16];
} heard_t;

static void on_change(void *arg, const char *name, unsigned restart)
{
    heard_t *h = arg;
    if (h->calls < 16) {
        snprintf(h->names[h->calls], sizeof h->names[0], "%s", name);
        h->restart[h->calls] = restart;
    }
    h->calls++;
}

static cl_reload_plan_t plan_for(const variant_t *a, const variant_t *b, heard_t *heard)
{
    cl_config_t *ca = make(a), *cb = make(b);
    cl_reload_plan_t plan;
    memset(&plan, 0, sizeof plan);
    if (ca != NULL && cb != NULL)
        cl_reload_plan(ca, cb, &plan, heard != NULL ? on_change : NULL, heard);
    cl_config_free(ca);
    cl_config_free(cb);
    return plan;
}

/* ---- in place ---------------------------------------------------------------- */

static void test_batch_size_and_log_level_apply_in_place(void)
{
    variant_t a = base_variant(), b = base_variant();
    b.ingest = "\"ingest\": {\"batch_max_events\": 50, \"batch_max_delay\": \"1s\"}";
    b.log = "\"log\": {\"level\": \"debug\", \"format\": \"json\"}";
    heard_t heard = {0};
    cl_reload_plan_t p = plan_for(&a, &b, &heard);
    CL_ASSERT_INT_EQ(0, p.restart);
    CL_ASSERT(p.ingest_params);
    CL_ASSERT(p.log);
    CL_ASSERT_INT_EQ(4, p.changes);
    CL_ASSERT_INT_EQ(4, heard.calls);
    CL_ASSERT_STR_EQ("ingest.batch_max_events", heard.names[0]);
    CL_ASSERT_STR_EQ("ingest.batch_max_delay", heard.names[1]);
    CL_ASSERT_STR_EQ("log.level", heard.names[2]);
    CL_ASSERT_STR_EQ("log.format", heard.names[3]);
    for (int i = 0; i < 4; i++)
        CL_ASSERT_INT_EQ(0, heard.restart[i]);
}

static void test_event_time_window_applies_in_place(void)
{
    variant_t a = base_variant(), b = base_variant();
    b.ingest = "\"ingest\": {\"batch_max_events\": 1000, \"max_event_age\": \"30d\", "
               "\"max_future_skew\": \"5m\"}";
    heard_t heard = {0};
    cl_reload_plan_t p = plan_for(&a, &b, &heard);
    CL_ASSERT_INT_EQ(0, p.restart);
    CL_ASSERT(p.ingest_params);
    CL_ASSERT_INT_EQ(2, heard.calls);
    CL_ASSERT_STR_EQ("ingest.max_event_age", heard.names[0]);
    CL_ASSERT_STR_EQ("ingest.max_future_skew", heard.names[1]);
}

static void test_packet_limit_restarts_ingest_only(void)
{
    variant_t a = base_variant(), b = base_variant();
    /* The variant has no field for it: the setting follows the host. */
    b.host = "127.0.0.1\", \"max_allowed_packet\": \"4MB";
    CL_ASSERT_INT_EQ(CL_PART_INGEST, plan_for(&a, &b, NULL).restart);
}

static void test_pool_size_resizes_the_pool_in_place(void)
{
    variant_t a = base_variant(), b = base_variant();
    b.pool_size = 8;
    heard_t heard = {0};
    cl_reload_plan_t p = plan_for(&a, &b, &heard);
    CL_ASSERT_INT_EQ(0, p.restart);
    CL_ASSERT(p.pool_size);
    CL_ASSERT(!p.ingest_params);
    CL_ASSERT_INT_EQ(1, heard.calls);
    CL_ASSERT_STR_EQ("mariadb.pool_size", heard.names[0]);
    CL_ASSERT_INT_EQ(0, heard.restart[0]);
}

static void test_elasticsearch_connection_settings_replace_the_sink_in_place(void)
{
    variant_t a = base_variant(), b = base_variant();
    b.es = ", \"elasticsearch\": {\"urls\": [\"http://127.0.0.1:9201\"], \"api_key\": \"k\", "
           "\"bulk_max_docs\": 10, \"retry_min_backoff\": \"1s\"}";
    cl_reload_plan_t p = plan_for(&a, &b, NULL);
    CL_ASSERT_INT_EQ(0, p.restart);
    CL_ASSERT(p.sink);
    CL_ASSERT_INT_EQ(4, p.changes);
}

static void test_admin_interval_and_retention_policy_apply_in_place(void)
{
    variant_t a = base_variant(), b = base_variant();
    a.retention = "\"retention\": {\"raw_days\": 30}";
    b.retention = "\"retention\": {\"raw_days\": 7, \"batch_rows\": 10, \"interval\": \"5s\"}";
    b.admin = "\"admin\": {\"listen\": \"127.0.0.1:9401\"}";
    b.aggregation = "\"aggregation\": {\"enabled\": true, \"windows\": [\"1h\"], "
                    "\"interval\": \"1s\"}";
    cl_reload_plan_t p = plan_for(&a, &b, NULL);
    CL_ASSERT_INT_EQ(0, p.restart);
    CL_ASSERT(p.admin);
    CL_ASSERT(p.retention);
    CL_ASSERT(p.aggregation_interval);
}

static void test_identical_configurations_change_nothing(void)
{
    variant_t a = base_variant();
    heard_t heard = {0};
    cl_reload_plan_t p = plan_for(&a, &a, &heard);
    CL_ASSERT_INT_EQ(0, p.changes);
    CL_ASSERT_INT_EQ(0, heard.calls);
    CL_ASSERT_INT_EQ(0, p.restart);
    CL_ASSERT(!p.log && !p.ingest_params && !p.pool_size && !p.sink && !p.admin && !p.retention);
}

/* ---- restarts ------------------------------------------------------------------ */

/* The new pool of the restart has the new size; main resizes nothing. */
static void test_pool_size_with_kafka_or_host_changes_still_restarts(void)
{
    variant_t a = base_variant(), b = base_variant();
    b.pool_size = 2;
    b.kafka_extra = ", \"properties\": {\"fetch.wait.max.ms\": 100}";
    heard_t heard = {0};
    cl_reload_plan_t p = plan_for(&a, &b, &heard);
    CL_ASSERT_INT_EQ(CL_PART_INGEST, p.restart);
    CL_ASSERT(p.pool_size);
    /* Reported as applied by the restart, which opens the new pool. */
    CL_ASSERT_INT_EQ(2, heard.calls);
    for (int i = 0; i < heard.calls; i++)
        CL_ASSERT_INT_EQ(CL_PART_INGEST, heard.restart[i]);
    b = base_variant();
    b.pool_size = 2;
    b.host = "127.0.0.2";
    p = plan_for(&a, &b, NULL);
    CL_ASSERT_INT_EQ(CL_PART_INGEST | CL_PART_AGGREGATOR | CL_PART_INDEXER, p.restart);
}

static void test_mariadb_host_restarts_every_running_part(void)
{
    variant_t a = base_variant(), b = base_variant();
    b.host = "127.0.0.2";
    CL_ASSERT_INT_EQ(CL_PART_INGEST | CL_PART_AGGREGATOR | CL_PART_INDEXER,
                     plan_for(&a, &b, NULL).restart);
    /* With retention on and aggregation off, those are the parts. */
    a.aggregation = b.aggregation = "\"aggregation\": {\"enabled\": false}";
    a.retention = b.retention = "\"retention\": {\"raw_days\": 3}";
    CL_ASSERT_INT_EQ(CL_PART_INGEST | CL_PART_RETENTION, plan_for(&a, &b, NULL).restart);
}

static void test_kafka_settings_and_mapping_restart_ingest(void)
{
    variant_t a = base_variant(), b = base_variant();
    b.kafka_extra = ", \"properties\": {\"fetch.wait.max.ms\": 100}";
    CL_ASSERT_INT_EQ(CL_PART_INGEST, plan_for(&a, &b, NULL).restart);
    b = base_variant();
    b.ingest = "\"ingest\": {\"batch_max_events\": 1000, \"mapping\": {\"url\": \"/u\"}}";
    CL_ASSERT_INT_EQ(CL_PART_INGEST, plan_for(&a, &b, NULL).restart);
    b.ingest = "\"ingest\": {\"batch_max_events\": 1000, \"max_event_bytes\": \"1MB\"}";
    CL_ASSERT_INT_EQ(CL_PART_INGEST, plan_for(&a, &b, NULL).restart);
}

static void test_index_and_windows_restart_their_parts(void)
{
    variant_t a = base_variant(), b = base_variant();
    b.es = ", \"elasticsearch\": {\"urls\": [\"http://127.0.0.1:9200\"], \"index\": \"other\"}";
    CL_ASSERT_INT_EQ(CL_PART_INDEXER, plan_for(&a, &b, NULL).restart);
    b = base_variant();
    b.aggregation = "\"aggregation\": {\"enabled\": true, \"windows\": [\"1h\", \"1d\"]}";
    CL_ASSERT_INT_EQ(CL_PART_AGGREGATOR, plan_for(&a, &b, NULL).restart);
}

static void test_switching_aggregation_off_stops_aggregator_and_indexer(void)
{
    variant_t a = base_variant(), b = base_variant();
    b.aggregation = "\"aggregation\": {\"enabled\": false}";
    b.es = "";
    heard_t heard = {0};
    cl_reload_plan_t p = plan_for(&a, &b, &heard);
    CL_ASSERT_INT_EQ(CL_PART_AGGREGATOR | CL_PART_INDEXER, p.restart);
    /* The windows change is seen but restarts nothing more. */
    CL_ASSERT(heard.calls >= 2);
}

static void test_settings_of_parts_that_do_not_run_apply_in_place(void)
{
    variant_t a = base_variant(), b = base_variant();
    a.aggregation = b.aggregation = "\"aggregation\": {\"enabled\": false, \"windows\": [\"1h\"]}";
    b.aggregation = "\"aggregation\": {\"enabled\": false, \"windows\": [\"1d\"]}";
    b.es = ", \"elasticsearch\": {\"urls\": [\"http://127.0.0.1:9200\"], \"index\": \"x\"}";
    heard_t heard = {0};
    cl_reload_plan_t p = plan_for(&a, &b, &heard);
    CL_ASSERT_INT_EQ(0, p.restart);
    CL_ASSERT_INT_EQ(2, heard.calls);
    CL_ASSERT_INT_EQ(0, heard.restart[0]);
    CL_ASSERT_INT_EQ(0, heard.restart[1]);
}

static void test_switching_retention_on_or_off_applies_in_place(void)
{
    variant_t a = base_variant(), b = base_variant();
    b.retention = "\"retention\": {\"raw_days\": 10}";
    cl_reload_plan_t on = plan_for(&a, &b, NULL), off = plan_for(&b, &a, NULL);
    CL_ASSERT_INT_EQ(0, on.restart);
    CL_ASSERT(on.retention);
    CL_ASSERT_INT_EQ(0, off.restart);
    CL_ASSERT(off.retention);
}

static void test_parts_wanted_follow_the_configuration(void)
{
    variant_t v = base_variant();
    cl_config_t *c = make(&v);
    CL_ASSERT_INT_EQ(CL_PART_INGEST | CL_PART_AGGREGATOR | CL_PART_INDEXER,
                     cl_reload_parts_wanted(c));
    cl_config_free(c);
    v.aggregation = "\"aggregation\": {\"enabled\": false}";
    v.retention = "\"retention\": {\"raw_days\": 1}";
    c = make(&v);
    CL_ASSERT_INT_EQ(CL_PART_INGEST | CL_PART_RETENTION, cl_reload_parts_wanted(c));
    cl_config_free(c);
}

static void test_describe_parts_joins_names(void)
{
    char out[128];
    cl_reload_describe_parts(CL_PART_INGEST | CL_PART_INDEXER, out, sizeof out);
    CL_ASSERT_STR_EQ("ingest, indexer", out);
    cl_reload_describe_parts(CL_PARTS_ALL, out, sizeof out);
    CL_ASSERT_STR_EQ("ingest, aggregator, indexer, retention", out);
    cl_reload_describe_parts(0, out, sizeof out);
    CL_ASSERT_STR_EQ("", out);
    char small[8];
    cl_reload_describe_parts(CL_PARTS_ALL, small, sizeof small);
    CL_ASSERT(strlen(small) < sizeof small);
}

/* ---- preflight ------------------------------------------------------------------ */

typedef struct {
    int count;
    char text[4096];
} problems_t;

static void on_problem(void *arg, const char *message)
{
    problems_t *p = arg;
    p->count++;
    size_t used = strlen(p->text);
    snprintf(p->text + used, sizeof p->text - used, "%s\n", message);
}

static void test_preflight_accepts_a_valid_configuration(void)
{
    variant_t v = base_variant();
    v.kafka_extra = ", \"properties\": {\"session.timeout.ms\": 10000}";
    cl_config_t *c = make(&v);
    problems_t p = {0};
    CL_ASSERT_INT_EQ(0, cl_reload_preflight(c, on_problem, &p));
    CL_ASSERT_INT_EQ(0, p.count);
    cl_config_free(c);
}

static void test_preflight_names_every_property_librdkafka_refuses(void)
{
    variant_t v = base_variant();
    v.kafka_extra = ", \"properties\": {\"no.such.property\": 1, \"session.timeout.ms\": "
                    "\"soon\", \"sasl.password\": \"x\", \"ssl.key.password\": \"s3cr3t-value\"}";
    cl_config_t *c = make(&v);
    problems_t p = {0};
    int n = cl_reload_preflight(c, on_problem, &p);
    /* sasl.password and ssl.key.password are known properties: accepted. */
    CL_ASSERT_INT_EQ(2, n);
    CL_ASSERT_STR_CONTAINS(p.text, "kafka.properties[\"no.such.property\"]");
    CL_ASSERT_STR_CONTAINS(p.text, "kafka.properties[\"session.timeout.ms\"]");
    CL_ASSERT(strstr(p.text, "s3cr3t-value") == NULL);
    cl_config_free(c);
}

static void test_preflight_never_shows_a_refused_secret_value(void)
{
    variant_t v = base_variant();
    /* An enum-like property whose name makes it secret, given a bad value. */
    v.kafka_extra = ", \"properties\": {\"my.secret.thing\": \"hunter2-value\"}";
    cl_config_t *c = make(&v);
    problems_t p = {0};
    CL_ASSERT_INT_EQ(1, cl_reload_preflight(c, on_problem, &p));
    CL_ASSERT_STR_CONTAINS(p.text, "kafka.properties[\"my.secret.thing\"]: librdkafka refuses");
    CL_ASSERT(strstr(p.text, "hunter2-value") == NULL);
    cl_config_free(c);
}

static const cl_test_case_t cases[] = {
    CL_TEST(test_batch_size_and_log_level_apply_in_place),
    CL_TEST(test_event_time_window_applies_in_place),
    CL_TEST(test_packet_limit_restarts_ingest_only),
    CL_TEST(test_pool_size_resizes_the_pool_in_place),
    CL_TEST(test_elasticsearch_connection_settings_replace_the_sink_in_place),
    CL_TEST(test_admin_interval_and_retention_policy_apply_in_place),
    CL_TEST(test_identical_configurations_change_nothing),
    CL_TEST(test_pool_size_with_kafka_or_host_changes_still_restarts),
    CL_TEST(test_mariadb_host_restarts_every_running_part),
    CL_TEST(test_kafka_settings_and_mapping_restart_ingest),
    CL_TEST(test_index_and_windows_restart_their_parts),
    CL_TEST(test_switching_aggregation_off_stops_aggregator_and_indexer),
    CL_TEST(test_settings_of_parts_that_do_not_run_apply_in_place),
    CL_TEST(test_switching_retention_on_or_off_applies_in_place),
    CL_TEST(test_parts_wanted_follow_the_configuration),
    CL_TEST(test_describe_parts_joins_names),
    CL_TEST(test_preflight_accepts_a_valid_configuration),
    CL_TEST(test_preflight_names_every_property_librdkafka_refuses),
    CL_TEST(test_preflight_never_shows_a_refused_secret_value),
};

CL_TEST_MAIN(cases)

/* Unit tests for the reload plan: which settings apply in place and which
 * restart which parts, only parts that run are restarted, every setting of
 * the configuration's field table is planned as its rule says, and the
 * preflight names refused Kafka properties without ever showing a secret
 * value. The file includes config.c to walk the field table. */
#include "../../src/config.c"
#include "config_load.h"

#include "clickloop/reload.h"

#include <stdbool.h>
#include <stdio.h>

#include "cl_test.h"

#ifndef CL_SOURCE_ROOT
#error "CL_SOURCE_ROOT must name the source tree (set in test/meson.build)"
#endif

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
    if (load_string(json, "test.json", NULL, &c, &errs) != CL_OK) {
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

/* ---- every setting through the planner ------------------------------------------ */

/* The walk changes one setting at a time, in a JSON document, to another
 * valid value, loads both documents and plans the reload: the plan must name
 * exactly what the setting's table line says. It starts from several bases,
 * because some values are valid only beside others: the shipped example, two
 * configurations with every section and setting given (elasticsearch takes
 * either a username and password or an api_key), and the example with
 * aggregation off, where the elasticsearch section may go. Each change is
 * planned once alone and once beside a change that restarts every part. */
#define FULL_CONFIG                                                                                \
    "{\"kafka\": {\"brokers\": \"127.0.0.1:9092\", \"group_id\": \"g\", \"topics\": [\"clicks\", " \
    "\"views\"], \"properties\": {\"session.timeout.ms\": 10000}, \"poll_interval\": \"50ms\"},"   \
    " \"mariadb\": {\"host\": \"127.0.0.1\", \"port\": 3306, \"socket\": \"/run/m.sock\", "        \
    "\"user\": \"u\", \"password\": \"p\", \"database\": \"d\", \"pool_size\": 4, "                \
    "\"connect_timeout\": \"5s\", \"read_timeout\": \"30s\", \"write_timeout\": \"30s\", "         \
    "\"reconnect_min_backoff\": \"100ms\", \"reconnect_max_backoff\": \"30s\", "                   \
    "\"max_allowed_packet\": \"16MB\"},"                                                           \
    " \"ingest\": {\"batch_max_events\": 500, \"batch_max_delay\": \"100ms\", "                    \
    "\"max_in_flight_events\": 5000, \"max_in_flight_bytes\": \"32MB\", \"max_unwritten_age\": "   \
    "\"30s\", \"max_event_bytes\": "                                                               \
    "\"32KB\", \"max_event_age\": \"30d\", "                                                       \
    "\"max_future_skew\": \"10m\", \"mapping\": {\"event_id\": \"/id\", \"url\": \"/page/url\"}}," \
    " \"aggregation\": {\"enabled\": true, \"interval\": \"5s\", \"windows\": [\"1h\"], "          \
    "\"session_timeout\": \"20m\"},"                                                               \
    " \"elasticsearch\": {\"urls\": [\"http://127.0.0.1:9200\", \"http://127.0.0.1:9201\"], "      \
    "\"index\": \"stats-%Y.%m\", \"username\": \"elastic\", \"password\": \"pw\", "                \
    "\"ca_file\": \"/etc/ssl/ca.pem\", \"verify_tls\": false, \"bulk_max_docs\": 500, "            \
    "\"bulk_max_bytes\": \"2MB\", \"max_in_flight\": 4, \"request_timeout\": \"10s\", "            \
    "\"retry_min_backoff\": \"100ms\", \"retry_max_backoff\": \"10s\", \"node_down_for\": "        \
    "\"20s\"},"                                                                                    \
    " \"admin\": {\"listen\": \"127.0.0.1:9400\"}, \"log\": {\"level\": \"warn\", \"format\": "    \
    "\"json\"}, \"retention\": {\"raw_days\": 30, \"batch_rows\": 500, \"interval\": \"30s\"},"    \
    " \"shutdown\": {\"drain_timeout\": \"10s\"}}"

/* What the walk saw of one table line. */
typedef struct {
    bool changed;    /* planned at least once */
    bool every_part; /* a restart planned while every part it names runs */
} seen_t;

typedef struct {
    seen_t fields[CL_ARRAY_LEN(sections)][32];
    bool presence[CL_ARRAY_LEN(sections)];
} coverage_t;

static json_object *parse_json(const char *text)
{
    json_object *doc = json_tokener_parse(text);
    if (doc == NULL)
        CL_FAIL_("test document does not parse: %.80s", text);
    return doc;
}

static json_object *read_example(void)
{
    FILE *f = fopen(CL_SOURCE_ROOT "/config.example.json", "rb");
    if (f == NULL) {
        CL_FAIL_("cannot open config.example.json");
        return NULL;
    }
    cl_buf_t text;
    cl_buf_init(&text);
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        cl_buf_append(&text, chunk, n);
    fclose(f);
    cl_buf_append_char(&text, '\0');
    json_object *doc = parse_json(text.data);
    cl_buf_free(&text);
    return doc;
}

/* NULL when the document is not a valid configuration. */
static cl_config_t *load_doc(json_object *doc)
{
    cl_config_t *c = NULL;
    load_string(json_object_to_json_string_ext(doc, JSON_C_TO_STRING_PLAIN), "walk.json", NULL, &c,
                NULL);
    return c;
}

/* The section object of doc named key, created when absent. */
static json_object *section_of(json_object *doc, const char *key)
{
    json_object *sec = NULL;
    if (!json_object_object_get_ex(doc, key, &sec)) {
        sec = json_object_new_object();
        json_object_object_add(doc, key, sec);
    }
    return sec;
}

static json_object *string_array(const char *a, const char *b)
{
    json_object *list = json_object_new_array();
    json_object_array_add(list, json_object_new_string(a));
    if (b != NULL)
        json_object_array_add(list, json_object_new_string(b));
    return list;
}

static json_object *duration_ms(uint64_t ms)
{
    char text[32];
    snprintf(text, sizeof text, "%" PRIu64 "ms", ms);
    return json_object_new_string(text);
}

/* Other values for a setting of kind f->kind, in the order tried; some may be
 * invalid beside the other settings of a base, or equal to its value. Returns
 * how many were written to out. */
static size_t candidates(const field_t *f, json_object **out)
{
    size_t n = 0;
    switch (f->kind) {
    case KIND_STRING:
        out[n++] = json_object_new_string("alt");
        out[n++] = json_object_new_string("/run/alt.sock");
        break;
    case KIND_BOOL:
        out[n++] = json_object_new_boolean(1);
        out[n++] = json_object_new_boolean(0);
        break;
    case KIND_PORT:
        out[n++] = json_object_new_int64(3307);
        out[n++] = json_object_new_int64(3308);
        break;
    case KIND_INTEGER:
    case KIND_SIZE:
        out[n++] = json_object_new_int64((int64_t)f->min);
        out[n++] = json_object_new_int64((int64_t)f->max);
        out[n++] = json_object_new_int64((int64_t)f->min + 1);
        break;
    case KIND_DURATION:
        out[n++] = duration_ms(f->min);
        out[n++] = duration_ms(f->max);
        out[n++] = duration_ms(f->min + 1);
        break;
    case KIND_STRING_LIST:
        out[n++] = string_array("alt", NULL);
        out[n++] = string_array("http://127.0.0.2:9200", NULL);
        break;
    case KIND_DURATION_LIST:
        out[n++] = string_array("1d", NULL);
        out[n++] = string_array("30m", "1d");
        break;
    case KIND_ENUM:
        for (size_t i = 0; f->names[i] != NULL; i++)
            out[n++] = json_object_new_string(f->names[i]);
        break;
    case KIND_LISTEN:
        out[n++] = json_object_new_string("127.0.0.1:9555");
        out[n++] = json_object_new_string("127.0.0.1:9556");
        break;
    case KIND_PROPERTIES:
    case KIND_MAPPING:
        break; /* changed entry by entry */
    }
    return n;
}

/* The in-place steps a plan asks for, one bit per cl_config_apply_t. */
static unsigned in_place_steps(const cl_reload_plan_t *p)
{
    return (unsigned)p->log << CL_APPLY_LOG | (unsigned)p->ingest_params << CL_APPLY_INGEST_PARAMS |
           (unsigned)p->pool_size << CL_APPLY_POOL_SIZE |
           (unsigned)p->aggregation_interval << CL_APPLY_AGGREGATION_INTERVAL |
           (unsigned)p->sink << CL_APPLY_SINK | (unsigned)p->admin << CL_APPLY_ADMIN |
           (unsigned)p->retention << CL_APPLY_RETENTION;
}

/* Plans old -> next, where only `name` differs, and checks the plan against
 * the table's rule. Returns false (and checks nothing) when the value did
 * not change; sets *every_part for a restart while all its parts run. */
static bool check_one_change(const cl_config_t *old, const cl_config_t *next, const char *name,
                             const cl_config_reload_rule_t *rule, bool *every_part)
{
    heard_t heard = {0};
    cl_reload_plan_t plan;
    cl_reload_plan(old, next, &plan, on_change, &heard);
    if (plan.changes == 0)
        return false;
    unsigned wanted = cl_reload_parts_wanted(old) | cl_reload_parts_wanted(next);
    bool restarts = rule->apply == CL_APPLY_RESTART;
    unsigned want_restart = restarts ? rule->parts & wanted : 0;
    unsigned want_steps = restarts || rule->apply == CL_APPLY_WHEN_READ ? 0 : 1u << rule->apply;
    if (plan.changes != 1 || heard.calls != 1 || strcmp(heard.names[0], name) != 0)
        CL_FAIL_("%s: %d changes, first heard \"%s\"", name, plan.changes, heard.names[0]);
    if (plan.restart != want_restart)
        CL_FAIL_("%s: restarts 0x%x, the table says 0x%x", name, plan.restart, want_restart);
    if (in_place_steps(&plan) != want_steps)
        CL_FAIL_("%s: in-place steps 0x%x, the table says 0x%x", name, in_place_steps(&plan),
                 want_steps);
    if (heard.restart[0] != want_restart)
        CL_FAIL_("%s: reported as applied by 0x%x, expected 0x%x", name, heard.restart[0],
                 want_restart);
    *every_part = restarts && (rule->parts & wanted) == rule->parts;
    return true;
}

/* The change of `name` in doc again, now beside a change that restarts
 * every running part (a new database): a setting applied in place is then
 * reported as applied by its owner's restart, and its step stays in the plan
 * (the application skips it for a part that restarts). */
static void check_beside_a_restart(const cl_config_t *old, json_object *doc, const char *name,
                                   const cl_config_reload_rule_t *rule)
{
    json_object *both = NULL;
    json_object_deep_copy(doc, &both, NULL);
    const char *companion = strcmp(name, "mariadb.database") == 0 ? "user" : "database";
    json_object_object_add(section_of(both, "mariadb"), companion,
                           json_object_new_string("walk_companion"));
    cl_config_t *next = load_doc(both);
    heard_t heard = {0};
    cl_reload_plan_t plan;
    memset(&plan, 0, sizeof plan);
    if (next != NULL)
        cl_reload_plan(old, next, &plan, on_change, &heard);
    else
        CL_FAIL_("%s: no longer loads beside a new mariadb.%s", name, companion);
    unsigned wanted = next != NULL ? cl_reload_parts_wanted(old) | cl_reload_parts_wanted(next) : 0;
    bool restarts = rule->apply == CL_APPLY_RESTART;
    unsigned want_steps = restarts || rule->apply == CL_APPLY_WHEN_READ ? 0 : 1u << rule->apply;
    unsigned want_reported = rule->parts & wanted; /* every running part restarts */
    int at = -1;
    for (int i = 0; i < heard.calls && i < 16; i++) {
        if (strcmp(heard.names[i], name) == 0)
            at = i;
    }
    if (next != NULL && (plan.changes != 2 || at < 0))
        CL_FAIL_("%s beside mariadb.%s: %d changes", name, companion, plan.changes);
    else if (next != NULL && heard.restart[at] != want_reported)
        CL_FAIL_("%s beside a restart of everything: reported as applied by 0x%x, expected 0x%x",
                 name, heard.restart[at], want_reported);
    if (next != NULL && plan.restart != (CL_PARTS_ALL & wanted))
        CL_FAIL_("%s beside mariadb.%s: restarts 0x%x", name, companion, plan.restart);
    if (next != NULL && in_place_steps(&plan) != want_steps)
        CL_FAIL_("%s beside a restart: in-place steps 0x%x, the table says 0x%x", name,
                 in_place_steps(&plan), want_steps);
    cl_config_free(next);
    json_object_put(both);
}

/* Sets doc's value at section.key (or ingest.mapping.key, or adds a Kafka
 * property) in a copy of base, loads it and checks the plan; true when some
 * valid, different value was planned. Takes value. */
static bool try_value(json_object *base, const cl_config_t *old, const char *section,
                      const char *key, json_object *value, const char *name,
                      const cl_config_reload_rule_t *rule, seen_t *seen)
{
    json_object *doc = NULL;
    json_object_deep_copy(base, &doc, NULL);
    json_object_object_add(section_of(doc, section), key, value);
    cl_config_t *next = load_doc(doc);
    bool every_part = false;
    bool planned = next != NULL && check_one_change(old, next, name, rule, &every_part);
    if (planned) {
        seen->changed = true;
        seen->every_part = seen->every_part || every_part;
        check_beside_a_restart(old, doc, name, rule);
    }
    cl_config_free(next);
    json_object_put(doc);
    return planned;
}

static void walk_field(json_object *base, const cl_config_t *old, const section_t *sec,
                       const field_t *f, seen_t *seen)
{
    char name[128];
    if (f->kind == KIND_PROPERTIES) {
        json_object *doc = NULL;
        json_object_deep_copy(base, &doc, NULL);
        json_object *kafka = section_of(doc, sec->key);
        json_object *props = section_of(kafka, f->key);
        json_object_get(props);
        json_object_put(doc);
        json_object_object_add(props, "fetch.wait.max.ms", json_object_new_int64(7));
        try_value(base, old, sec->key, f->key, props, "kafka.properties[\"fetch.wait.max.ms\"]",
                  &f->reload, seen);
        return;
    }
    if (f->kind == KIND_MAPPING) {
        for (int m = 0; m < CL_FIELD_COUNT; m++) {
            json_object *doc = NULL;
            json_object_deep_copy(base, &doc, NULL);
            json_object *mapping = section_of(section_of(doc, sec->key), f->key);
            json_object_get(mapping);
            json_object_put(doc);
            snprintf(name, sizeof name, "/alt_%s", event_field_names[m]);
            json_object_object_add(mapping, event_field_names[m], json_object_new_string(name));
            snprintf(name, sizeof name, "ingest.mapping.%s", event_field_names[m]);
            try_value(base, old, sec->key, f->key, mapping, name, &f->reload, seen);
        }
        return;
    }
    json_object *values[16];
    size_t n = candidates(f, values);
    snprintf(name, sizeof name, "%s.%s", sec->key, f->key);
    size_t i = 0;
    while (i < n && !try_value(base, old, sec->key, f->key, values[i], name, &f->reload, seen))
        i++;
    for (i = i < n ? i + 1 : n; i < n; i++)
        json_object_put(values[i]);
}

/* A section that may be absent is removed as a whole. */
static void walk_presence(json_object *base, const cl_config_t *old, const section_t *sec,
                          bool *seen)
{
    json_object *doc = NULL;
    json_object_deep_copy(base, &doc, NULL);
    json_object_object_del(doc, sec->key);
    cl_config_t *next = load_doc(doc);
    bool every_part = false;
    if (next != NULL && check_one_change(old, next, sec->key, &sec->presence_reload, &every_part))
        *seen = true;
    cl_config_free(next);
    json_object_put(doc);
}

static void walk_base(json_object *base, coverage_t *cov)
{
    cl_config_t *old = load_doc(base);
    if (old == NULL) {
        CL_FAIL_("a base of the walk does not load: %.200s",
                 json_object_to_json_string_ext(base, JSON_C_TO_STRING_PLAIN));
        return;
    }
    for (size_t s = 0; s < CL_ARRAY_LEN(sections); s++) {
        const section_t *sec = &sections[s];
        for (size_t i = 0; i < sec->field_count; i++)
            walk_field(base, old, sec, &sec->fields[i], &cov->fields[s][i]);
        if (sec->has_presence)
            walk_presence(base, old, sec, &cov->presence[s]);
    }
    cl_config_free(old);
}

static void test_every_setting_is_planned_as_its_table_line_says(void)
{
    static coverage_t cov;
    memset(&cov, 0, sizeof cov);
    json_object *bases[4] = {read_example(), parse_json(FULL_CONFIG), parse_json(FULL_CONFIG)};
    if (bases[0] == NULL || bases[1] == NULL)
        return;
    json_object *es = section_of(bases[2], "elasticsearch");
    json_object_object_del(es, "username");
    json_object_object_del(es, "password");
    json_object_object_add(es, "api_key", json_object_new_string("key"));
    json_object_deep_copy(bases[0], &bases[3], NULL);
    json_object_object_add(section_of(bases[3], "aggregation"), "enabled",
                           json_object_new_boolean(0));
    for (size_t b = 0; b < CL_ARRAY_LEN(bases); b++)
        walk_base(bases[b], &cov);

    for (size_t s = 0; s < CL_ARRAY_LEN(sections); s++) {
        const section_t *sec = &sections[s];
        for (size_t i = 0; i < sec->field_count; i++) {
            const seen_t *seen = &cov.fields[s][i];
            if (!seen->changed)
                CL_FAIL_("%s.%s: no base took another valid value", sec->key, sec->fields[i].key);
            else if (sec->fields[i].reload.apply == CL_APPLY_RESTART && !seen->every_part)
                CL_FAIL_("%s.%s: never changed while every part it restarts runs", sec->key,
                         sec->fields[i].key);
        }
        if (sec->has_presence && !cov.presence[s])
            CL_FAIL_("section %s: never removed from a base", sec->key);
    }
    for (size_t b = 0; b < CL_ARRAY_LEN(bases); b++)
        json_object_put(bases[b]);
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
    CL_TEST(test_every_setting_is_planned_as_its_table_line_says),
    CL_TEST(test_preflight_accepts_a_valid_configuration),
    CL_TEST(test_preflight_names_every_property_librdkafka_refuses),
    CL_TEST(test_preflight_never_shows_a_refused_secret_value),
};

CL_TEST_MAIN(cases)

/* Unit tests for the configuration loader: broken files are rejected with one
 * message per problem naming its JSON path, defaults fill what is absent,
 * ${ENV} expansion never shows what it expanded to, secrets never appear in
 * messages, the shipped example files load, and every setting of the field
 * table carries a reload rule. The file includes config.c to walk that
 * table. */
#include "../../src/config.c"
#include "config_load.h"

#include <stdbool.h>

#include "cl_test.h"

#ifndef CL_SOURCE_ROOT
#error "CL_SOURCE_ROOT must name the source tree (set in test/meson.build)"
#endif

/* ---- helpers ------------------------------------------------------------- */

typedef struct {
    const char *name;
    const char *value;
} env_var_t;

static const env_var_t test_env[] = {
    {"DB_PASSWORD", "hunter2-secret"},
    {"DB_NAME", "bad-name!"},
    {"DB_USER", "ingest"},
    {"EMPTY", ""},
    {"KAFKA_HOST", "kafka1"},
    {"KAFKA_PORT", "9092"},
    {"SASL_PASSWORD", "sasl-secret-value"},
    {NULL, NULL},
};

static const char *fake_env_lookup(const char *name, void *data)
{
    for (const env_var_t *v = data; v->name != NULL; v++) {
        if (strcmp(v->name, name) == 0)
            return v->value;
    }
    return NULL;
}

static const cl_config_load_opts_t fake_env = {fake_env_lookup, (void *)test_env};

static int load(const char *json, cl_config_t **config, cl_config_errors_t *errs)
{
    return load_string(json, "test.json", &fake_env, config, errs);
}

static bool messages_contain(const cl_config_errors_t *errs, const char *needle)
{
    for (size_t i = 0; i < errs->count; i++) {
        if (strstr(errs->messages[i], needle) != NULL)
            return true;
    }
    return false;
}

static void print_messages(const cl_config_errors_t *errs)
{
    for (size_t i = 0; i < errs->count; i++)
        fprintf(stderr, "      message: %s\n", errs->messages[i]);
}

#define KAFKA_OK "\"kafka\": {\"brokers\": \"k:9092\", \"topics\": [\"clicks\"]}"
#define MARIADB_OK "\"mariadb\": {\"user\": \"u\", \"database\": \"db\"}"
#define ES_OK "\"elasticsearch\": {\"urls\": [\"http://es:9200\"]}"
/* A valid configuration with `extra` (which starts with a comma) appended. */
#define VALID_WITH(extra) "{" KAFKA_OK ", " MARIADB_OK ", " ES_OK extra "}"
#define VALID VALID_WITH("")
/* Valid configurations whose kafka, mariadb or elasticsearch section holds
 * only `keys` besides what that section requires (or, for the _RAW forms,
 * exactly `keys`). */
#define KAFKA_RAW(keys) "{\"kafka\": {" keys "}, " MARIADB_OK ", " ES_OK "}"
#define KAFKA_WITH(keys) KAFKA_RAW("\"brokers\": \"k\", \"topics\": [\"t\"], " keys)
#define MARIADB_RAW(keys) "{" KAFKA_OK ", \"mariadb\": {" keys "}, " ES_OK "}"
#define MARIADB_WITH(keys) MARIADB_RAW("\"user\": \"u\", \"database\": \"db\", " keys)
#define ES_RAW(keys) "{" KAFKA_OK ", " MARIADB_OK ", \"elasticsearch\": {" keys "}}"
#define ES_WITH(keys) ES_RAW("\"urls\": [\"http://e\"], " keys)

/* ---- broken configurations ------------------------------------------------- */

typedef struct {
    const char *json;
    const char *where;   /* JSON path (or location) in "test.json: <where>: " */
    const char *problem; /* text the message must contain */
} broken_case_t;

static const broken_case_t broken_cases[] = {
    /* kafka */
    {KAFKA_RAW("\"brokers\": 42, \"topics\": [\"t\"]"), "kafka.brokers",
     "expected a non-empty string, got 42"},
    {KAFKA_RAW("\"brokers\": \"k\", \"topics\": [\"a\", \"\"]"), "kafka.topics[1]",
     "expected a non-empty string, got \"\""},
    {KAFKA_RAW("\"brokers\": \"k\", \"topics\": []"), "kafka.topics",
     "expected a non-empty array of strings, got an empty array"},
    {KAFKA_RAW("\"brokers\": \"k\", \"topics\": [\"a\", \"a\"]"), "kafka.topics[1]",
     "duplicate of kafka.topics[0]"},
    {KAFKA_RAW("\"brokers\": \"k\""), "kafka.topics", "required key is missing"},
    {KAFKA_WITH("\"brokerz\": \"k\""), "kafka.brokerz", "unknown key"},
    {KAFKA_WITH("\"properties\": {\"group.id\": \"g\"}"), "kafka.properties[\"group.id\"]",
     "set by clickloop; use kafka.group_id"},
    {KAFKA_WITH("\"properties\": {\"enable.auto.offset.store\": true}"),
     "kafka.properties[\"enable.auto.offset.store\"]", "set by clickloop"},
    {KAFKA_WITH("\"properties\": {\"enable.auto.commit\": false}"),
     "kafka.properties[\"enable.auto.commit\"]", "set by clickloop; clickloop commits"},
    {KAFKA_WITH("\"properties\": {\"enable.partition.eof\": true}"),
     "kafka.properties[\"enable.partition.eof\"]", "set by clickloop"},
    {KAFKA_WITH("\"properties\": {\"log.queue\": false}"), "kafka.properties[\"log.queue\"]",
     "set by clickloop"},
    {KAFKA_WITH("\"properties\": {\"linger.ms\": {}}"), "kafka.properties[\"linger.ms\"]",
     "expected a string, number or boolean, got an object"},
    {KAFKA_WITH("\"properties\": {\"\": 1}"), "kafka.properties[\"\"]",
     "property name must not be empty"},
    {KAFKA_WITH("\"poll_interval\": \"20s\""), "kafka.poll_interval",
     "must be between 1ms and 10s, got \"20s\""},
    {KAFKA_WITH("\"poll_interval\": \"100\""), "kafka.poll_interval",
     "expected a duration such as"},
    {KAFKA_WITH("\"poll_interval\": 100"), "kafka.poll_interval",
     "expected a duration such as \"250ms\", \"10s\", \"30m\", \"1h\" or \"1d\", got 100"},
    /* mariadb */
    {MARIADB_RAW("\"database\": \"db\""), "mariadb.user", "required key is missing"},
    {MARIADB_WITH("\"pool_size\": 0"), "mariadb.pool_size", "must be between 1 and 64, got 0"},
    {MARIADB_WITH("\"pool_size\": 4.0"), "mariadb.pool_size", "expected an integer, got 4.0"},
    {MARIADB_WITH("\"port\": 70000"), "mariadb.port", "must be between 1 and 65535, got 70000"},
    {MARIADB_WITH("\"port\": \"3306\""), "mariadb.port", "expected an integer, got \"3306\""},
    {MARIADB_RAW("\"user\": \"u\", \"database\": \"click-loop\""), "mariadb.database",
     "may only contain letters, digits, _ and $, got \"click-loop\""},
    {MARIADB_WITH("\"socket\": \"my.sock\""), "mariadb.socket", "must be an absolute path"},
    {MARIADB_WITH("\"connect_timeout\": \"500ms\""), "mariadb.connect_timeout",
     "must be between 1s and 1h, got \"500ms\""},
    {MARIADB_WITH("\"reconnect_min_backoff\": \"1m\", \"reconnect_max_backoff\": \"30s\""),
     "mariadb.reconnect_max_backoff", "must not be shorter than mariadb.reconnect_min_backoff"},
    {MARIADB_RAW("\"user\": \"u\\u0000x\", \"database\": \"db\""), "mariadb.user",
     "must not contain a NUL character"},
    {"{" KAFKA_OK ", \"mariadb\": \"db\", " ES_OK "}", "mariadb", "expected an object, got \"db\""},
    /* ingest */
    {VALID_WITH(", \"ingest\": {\"max_in_flight_events\": 500}"), "ingest.max_in_flight_events",
     "must be at least ingest.batch_max_events (1000), got 500"},
    {VALID_WITH(", \"ingest\": {\"max_in_flight_events\": 20000000}"),
     "ingest.max_in_flight_events", "must be between 1 and 10000000, got 20000000"},
    {VALID_WITH(", \"ingest\": {\"max_event_bytes\": \"32MB\"}"), "ingest.max_event_bytes",
     "must be between 64B and 16MB, got \"32MB\""},
    {VALID_WITH(", \"ingest\": {\"max_event_bytes\": 10}"), "ingest.max_event_bytes",
     "must be between 64B and 16MB, got 10"},
    {VALID_WITH(", \"ingest\": {\"max_event_bytes\": \"5 MB\"}"), "ingest.max_event_bytes",
     "expected a size"},
    {VALID_WITH(", \"ingest\": {\"max_event_age\": \"0s\"}"), "ingest.max_event_age",
     "must be between 1s and 3660000d, got \"0s\""},
    {VALID_WITH(", \"ingest\": {\"max_event_age\": \"3660001d\"}"), "ingest.max_event_age",
     "must be between 1s and 3660000d"},
    {VALID_WITH(", \"ingest\": {\"max_future_skew\": \"1 h\"}"), "ingest.max_future_skew",
     "expected a duration"},
    {VALID_WITH(", \"ingest\": {\"max_future_skew\": 60}"), "ingest.max_future_skew",
     "expected a duration"},
    {MARIADB_WITH("\"max_allowed_packet\": \"1KB\""), "mariadb.max_allowed_packet",
     "must be between 64KB and 1GB, got \"1KB\""},
    {VALID_WITH(", \"ingest\": {\"mapping\": {\"url\": \"\"}}"), "ingest.mapping.url",
     "must not be \"\", which points to the whole event"},
    {VALID_WITH(", \"ingest\": {\"mapping\": {\"url\": \"url\"}}"), "ingest.mapping.url",
     "must be a JSON Pointer starting with \"/\", got \"url\""},
    {VALID_WITH(", \"ingest\": {\"mapping\": {\"url\": \"/a~2b\"}}"), "ingest.mapping.url",
     "\"~\" must be followed by 0 or 1"},
    {VALID_WITH(", \"ingest\": {\"mapping\": {\"referrer\": \"/ref\"}}"), "ingest.mapping.referrer",
     "unknown event field (known fields: event_id, user_id"},
    {VALID_WITH(", \"ingest\": {\"mapping\": [\"/url\"]}"), "ingest.mapping",
     "expected an object of event field names to JSON Pointers, got an array"},
    /* aggregation */
    {VALID_WITH(", \"aggregation\": {\"windows\": [\"7m\"]}"), "aggregation.windows[0]",
     "must divide 1d evenly"},
    {VALID_WITH(", \"aggregation\": {\"windows\": [\"36h\"]}"), "aggregation.windows[0]",
     "or be a whole number of days, got \"36h\""},
    {VALID_WITH(", \"aggregation\": {\"windows\": [\"1h\", \"60m\"]}"), "aggregation.windows[1]",
     "the same duration as aggregation.windows[0], got \"60m\""},
    {VALID_WITH(", \"aggregation\": {\"windows\": [\"30s\"]}"), "aggregation.windows[0]",
     "must be between 1m and 31d, got \"30s\""},
    {VALID_WITH(", \"aggregation\": {\"windows\": []}"), "aggregation.windows",
     "expected a non-empty array of durations, got an empty array"},
    {VALID_WITH(", \"aggregation\": {\"enabled\": \"yes\"}"), "aggregation.enabled",
     "expected true or false, got \"yes\""},
    /* elasticsearch */
    {"{" KAFKA_OK ", " MARIADB_OK "}", "elasticsearch",
     "required key is missing (needed when aggregation.enabled is true)"},
    {ES_RAW(""), "elasticsearch.urls", "required key is missing"},
    {ES_RAW("\"urls\": [\"es:9200\"]"), "elasticsearch.urls[0]",
     "must be an http:// or https:// URL with a host, got \"es:9200\""},
    {ES_WITH("\"index\": \"Clicks\""), "elasticsearch.index", "must be lowercase, got \"Clicks\""},
    {ES_WITH("\"index\": \"stats-%H\""), "elasticsearch.index",
     "may only use the date patterns %Y, %m and %d"},
    {ES_WITH("\"index\": \"_stats\""), "elasticsearch.index", "must not start with -, _ or +"},
    {ES_WITH("\"index\": \"my stats\""), "elasticsearch.index", "must not contain spaces"},
    {ES_WITH("\"username\": \"elastic\""), "elasticsearch.password",
     "required key is missing (needed when elasticsearch.username is set)"},
    {ES_WITH("\"username\": \"e\", \"password\": \"p\", \"api_key\": \"k\""),
     "elasticsearch.api_key", "cannot be combined with elasticsearch.username"},
    {ES_WITH("\"retry_min_backoff\": \"1m\", \"retry_max_backoff\": \"1s\""),
     "elasticsearch.retry_max_backoff", "must not be shorter than elasticsearch.retry_min_backoff"},
    {ES_WITH("\"bulk_max_bytes\": \"512B\""), "elasticsearch.bulk_max_bytes",
     "must be between 1KB and 100MB, got \"512B\""},
    /* admin, log, retention, shutdown */
    {VALID_WITH(", \"admin\": {\"listen\": \"localhost:9400\"}"), "admin.listen",
     "host must be an IP address"},
    {VALID_WITH(", \"admin\": {\"listen\": \"127.0.0.1:65536\"}"), "admin.listen",
     "port must be between 0 and 65535, got \"127.0.0.1:65536\""},
    {VALID_WITH(", \"admin\": {\"listen\": \"::1:9400\"}"), "admin.listen",
     "must write an IPv6 address in brackets"},
    {VALID_WITH(", \"admin\": {\"listen\": \"9400\"}"), "admin.listen", "expected \"host:port\""},
    {VALID_WITH(", \"log\": {\"level\": \"verbose\"}"), "log.level",
     "expected one of debug, info, warn, error, got \"verbose\""},
    {VALID_WITH(", \"retention\": {\"raw_days\": -1}"), "retention.raw_days",
     "must be between 0 and 36500, got -1"},
    {VALID_WITH(", \"shutdown\": {\"drain_timeout\": \"2h\"}"), "shutdown.drain_timeout",
     "must be between 1s and 1h, got \"2h\""},
    /* the document itself */
    {VALID_WITH(", \"metrics\": {}"), "metrics", "unknown key"},
    {"[1, 2]", "(top level)", "expected an object, got an array"},
    {MARIADB_WITH("\"pool_size\": 2,\n \"pool_size\": 3"), "mariadb.pool_size",
     "duplicate key at line 2, column 2 (first at line 1, column 99)"},
    {"{\n  \"kafka\": {\n    \"brokers\": \"k\",\n  }\n}", "line 4, column 3",
     "invalid JSON: unexpected character"},
    {"{\n  \"kafka\": {\n    \"brokers\": \"k\"", "line 3, column 19",
     "invalid JSON: unexpected end of data"},
    {"{\"kafka\": {'brokers': \"k\"}}", "line 1, column 12",
     "invalid JSON: strings must be in double quotes"},
    {"{\"kafka\": {\"brokers\": NaN}}", "line 1, column 23",
     "invalid JSON: \"NaN\" is not a JSON value"},
    {"", "line 1, column 1", "invalid JSON: unexpected end of data"},
};

static void test_each_broken_config_is_rejected_with_its_path(void)
{
    for (size_t i = 0; i < CL_ARRAY_LEN(broken_cases); i++) {
        const broken_case_t *c = &broken_cases[i];
        cl_config_t *config = (cl_config_t *)1;
        cl_config_errors_t errs;
        int rc = load(c->json, &config, &errs);
        char prefix[256];
        snprintf(prefix, sizeof prefix, "test.json: %s: ", c->where);
        if (rc != CL_ERR || config != NULL || errs.count != 1 ||
            strncmp(errs.messages[0], prefix, strlen(prefix)) != 0 ||
            strstr(errs.messages[0], c->problem) == NULL) {
            CL_FAIL_("case %zu (%s): expected one message \"%s...%s\", got rc %d and %zu "
                     "message(s)",
                     i, c->where, prefix, c->problem, rc, errs.count);
            print_messages(&errs);
        }
        cl_config_free(config == (cl_config_t *)1 ? NULL : config);
        cl_config_errors_free(&errs);
    }
    CL_ASSERT(CL_ARRAY_LEN(broken_cases) >= 20);
}

static void test_every_independent_problem_is_reported(void)
{
    const char *json = "{\"kafka\": {\"brokers\": 42, \"topics\": [\"t\"]},"
                       " \"mariadb\": {\"user\": \"u\", \"database\": \"db\", \"pool_size\": 0},"
                       " \"log\": {\"level\": \"loud\"}, " ES_OK "}";
    cl_config_t *config = NULL;
    cl_config_errors_t errs;
    CL_ASSERT_INT_EQ(CL_ERR, load(json, &config, &errs));
    CL_ASSERT(config == NULL);
    CL_ASSERT_INT_EQ(3, errs.count);
    if (errs.count == 3) {
        CL_ASSERT_STR_EQ("test.json: kafka.brokers: expected a non-empty string, got 42",
                         errs.messages[0]);
        CL_ASSERT_STR_EQ("test.json: mariadb.pool_size: must be between 1 and 64, got 0",
                         errs.messages[1]);
        CL_ASSERT_STR_EQ("test.json: log.level: expected one of debug, info, warn, error, got "
                         "\"loud\"",
                         errs.messages[2]);
    }
    cl_config_errors_free(&errs);
}

static void test_missing_required_sections_each_reported(void)
{
    cl_config_t *config = NULL;
    cl_config_errors_t errs;
    CL_ASSERT_INT_EQ(CL_ERR, load("{}", &config, &errs));
    CL_ASSERT_INT_EQ(3, errs.count);
    CL_ASSERT(messages_contain(&errs, "test.json: kafka: required key is missing"));
    CL_ASSERT(messages_contain(&errs, "test.json: mariadb: required key is missing"));
    CL_ASSERT(messages_contain(&errs, "test.json: elasticsearch: required key is missing"));
    cl_config_errors_free(&errs);
}

/* ---- defaults -------------------------------------------------------------- */

static void test_defaults_fill_every_absent_setting(void)
{
    cl_config_t *c = NULL;
    cl_config_errors_t errs;
    CL_ASSERT_INT_EQ(CL_OK, load(VALID, &c, &errs));
    CL_ASSERT_INT_EQ(0, errs.count);
    if (c == NULL) {
        print_messages(&errs);
        cl_config_errors_free(&errs);
        return;
    }
    CL_ASSERT_STR_EQ("test.json", c->source);
    CL_ASSERT_STR_EQ("k:9092", c->kafka.brokers);
    CL_ASSERT_STR_EQ("clickloop", c->kafka.group_id);
    CL_ASSERT_INT_EQ(1, c->kafka.topic_count);
    CL_ASSERT_STR_EQ("clicks", c->kafka.topics[0]);
    CL_ASSERT_INT_EQ(0, c->kafka.property_count);
    CL_ASSERT_INT_EQ(100, c->kafka.poll_interval_ms);

    CL_ASSERT_STR_EQ("127.0.0.1", c->mariadb.host);
    CL_ASSERT_INT_EQ(3306, c->mariadb.port);
    CL_ASSERT(c->mariadb.socket == NULL);
    CL_ASSERT_STR_EQ("", c->mariadb.password);
    CL_ASSERT_INT_EQ(4, c->mariadb.pool_size);
    CL_ASSERT_INT_EQ(5000, c->mariadb.connect_timeout_ms);
    CL_ASSERT_INT_EQ(30000, c->mariadb.read_timeout_ms);
    CL_ASSERT_INT_EQ(30000, c->mariadb.write_timeout_ms);
    CL_ASSERT_INT_EQ(100, c->mariadb.reconnect_min_backoff_ms);
    CL_ASSERT_INT_EQ(30000, c->mariadb.reconnect_max_backoff_ms);
    CL_ASSERT_INT_EQ(INT64_C(1) << 30, c->mariadb.max_allowed_packet);

    CL_ASSERT_INT_EQ(1000, c->ingest.batch_max_events);
    CL_ASSERT_INT_EQ(200, c->ingest.batch_max_delay_ms);
    CL_ASSERT_INT_EQ(50000, c->ingest.max_in_flight_events);
    CL_ASSERT_INT_EQ(65536, c->ingest.max_event_bytes);
    CL_ASSERT_INT_EQ(INT64_C(400) * 86400000, c->ingest.max_event_age_ms);
    CL_ASSERT_INT_EQ(3600000, c->ingest.max_future_skew_ms);
    CL_ASSERT_STR_EQ("/event_id", c->ingest.mapping[CL_FIELD_EVENT_ID]);
    CL_ASSERT_STR_EQ("/time_spent_ms", c->ingest.mapping[CL_FIELD_TIME_SPENT_MS]);

    CL_ASSERT(c->aggregation.enabled);
    CL_ASSERT_INT_EQ(10000, c->aggregation.interval_ms);
    CL_ASSERT_INT_EQ(1, c->aggregation.window_count);
    CL_ASSERT_INT_EQ(3600000, c->aggregation.windows_ms[0]);
    CL_ASSERT_INT_EQ(1800000, c->aggregation.session_timeout_ms);

    CL_ASSERT(c->elasticsearch.present);
    CL_ASSERT_STR_EQ("http://es:9200", c->elasticsearch.urls[0]);
    CL_ASSERT_STR_EQ("clickstream-stats", c->elasticsearch.index);
    CL_ASSERT(!c->elasticsearch.index_has_date);
    CL_ASSERT(c->elasticsearch.username == NULL && c->elasticsearch.password == NULL);
    CL_ASSERT(c->elasticsearch.api_key == NULL && c->elasticsearch.ca_file == NULL);
    CL_ASSERT(c->elasticsearch.verify_tls);
    CL_ASSERT_INT_EQ(1000, c->elasticsearch.bulk_max_docs);
    CL_ASSERT_INT_EQ(5 * 1024 * 1024, c->elasticsearch.bulk_max_bytes);
    CL_ASSERT_INT_EQ(2, c->elasticsearch.max_in_flight);
    CL_ASSERT_INT_EQ(30000, c->elasticsearch.request_timeout_ms);
    CL_ASSERT_INT_EQ(200, c->elasticsearch.retry_min_backoff_ms);
    CL_ASSERT_INT_EQ(30000, c->elasticsearch.retry_max_backoff_ms);
    CL_ASSERT_INT_EQ(30000, c->elasticsearch.node_down_for_ms);

    CL_ASSERT(!c->admin.enabled);
    CL_ASSERT(c->admin.listen == NULL && c->admin.host == NULL);
    CL_ASSERT_INT_EQ(CL_LOG_INFO, c->log.level);
    CL_ASSERT_INT_EQ(CL_LOG_FORMAT_LOGFMT, c->log.format);
    CL_ASSERT_INT_EQ(0, c->retention.raw_days);
    CL_ASSERT_INT_EQ(1000, c->retention.batch_rows);
    CL_ASSERT_INT_EQ(60000, c->retention.interval_ms);
    CL_ASSERT_INT_EQ(30000, c->shutdown.drain_timeout_ms);
    cl_config_free(c);
    cl_config_errors_free(&errs);
}

static void test_elasticsearch_optional_when_aggregation_disabled(void)
{
    cl_config_t *c = NULL;
    cl_config_errors_t errs;
    CL_ASSERT_INT_EQ(
        CL_OK,
        load("{" KAFKA_OK ", " MARIADB_OK ", \"aggregation\": {\"enabled\": false}}", &c, &errs));
    CL_ASSERT(c != NULL && !c->elasticsearch.present && c->elasticsearch.urls == NULL);
    CL_ASSERT(c != NULL && !c->aggregation.enabled);
    print_messages(&errs);
    cl_config_free(c);
    cl_config_errors_free(&errs);
}

static void test_explicit_values_are_typed(void)
{
    const char *json =
        "{\"kafka\": {\"brokers\": \"a:1,b:2\", \"topics\": [\"x\", \"y\"], \"properties\": "
        "{\"linger.ms\": 5, \"enable.idempotence\": true, \"compression.type\": \"lz4\", "
        "\"fetch.wait.max.ms\": 2.5}},"
        " \"mariadb\": {\"user\": \"u\", \"database\": \"click$db_1\", \"socket\": "
        "\"/run/mysqld/mysqld.sock\"},"
        " \"ingest\": {\"max_event_bytes\": \"1MB\", \"mapping\": {\"url\": \"/a~1b/c~0d\"}},"
        " \"aggregation\": {\"windows\": [\"15m\", \"1d\", \"7d\"]},"
        " \"elasticsearch\": {\"urls\": [\"https://es1:9200/\", \"https://es2:9200/prefix//\"],"
        " \"index\": \"clickstream-stats-%Y.%m\", \"api_key\": \"k\", \"bulk_max_bytes\": 2048},"
        " \"admin\": {\"listen\": \"[::1]:9400\"},"
        " \"log\": {\"level\": \"debug\", \"format\": \"json\"}}";
    cl_config_t *c = NULL;
    cl_config_errors_t errs;
    CL_ASSERT_INT_EQ(CL_OK, load(json, &c, &errs));
    print_messages(&errs);
    if (c == NULL) {
        cl_config_errors_free(&errs);
        return;
    }
    CL_ASSERT_INT_EQ(2, c->kafka.topic_count);
    CL_ASSERT_INT_EQ(4, c->kafka.property_count);
    CL_ASSERT_STR_EQ("linger.ms", c->kafka.properties[0].name);
    CL_ASSERT_STR_EQ("5", c->kafka.properties[0].value);
    CL_ASSERT_STR_EQ("true", c->kafka.properties[1].value);
    CL_ASSERT_STR_EQ("lz4", c->kafka.properties[2].value);
    CL_ASSERT_STR_EQ("2.5", c->kafka.properties[3].value);
    CL_ASSERT_STR_EQ("click$db_1", c->mariadb.database);
    CL_ASSERT_STR_EQ("/run/mysqld/mysqld.sock", c->mariadb.socket);
    CL_ASSERT_INT_EQ(1024 * 1024, c->ingest.max_event_bytes);
    CL_ASSERT_STR_EQ("/a~1b/c~0d", c->ingest.mapping[CL_FIELD_URL]);
    CL_ASSERT_STR_EQ("/user_id", c->ingest.mapping[CL_FIELD_USER_ID]);
    CL_ASSERT_INT_EQ(3, c->aggregation.window_count);
    CL_ASSERT_INT_EQ(15 * 60000, c->aggregation.windows_ms[0]);
    CL_ASSERT_INT_EQ(7 * 86400000LL, c->aggregation.windows_ms[2]);
    CL_ASSERT_STR_EQ("https://es1:9200", c->elasticsearch.urls[0]);
    CL_ASSERT_STR_EQ("https://es2:9200/prefix", c->elasticsearch.urls[1]);
    CL_ASSERT(c->elasticsearch.index_has_date);
    CL_ASSERT_STR_EQ("k", c->elasticsearch.api_key);
    CL_ASSERT_INT_EQ(2048, c->elasticsearch.bulk_max_bytes);
    CL_ASSERT(c->admin.enabled);
    CL_ASSERT_STR_EQ("[::1]:9400", c->admin.listen);
    CL_ASSERT_STR_EQ("::1", c->admin.host);
    CL_ASSERT_INT_EQ(9400, c->admin.port);
    CL_ASSERT_INT_EQ(CL_LOG_DEBUG, c->log.level);
    CL_ASSERT_INT_EQ(CL_LOG_FORMAT_JSON, c->log.format);
    cl_config_free(c);
    cl_config_errors_free(&errs);
}

/* ---- environment expansion -------------------------------------------------- */

static void test_env_references_are_expanded(void)
{
    const char *json = "{\"kafka\": {\"brokers\": \"${KAFKA_HOST}:${KAFKA_PORT}\", \"topics\": "
                       "[\"t\"], \"properties\": {\"sasl.password\": \"${SASL_PASSWORD}\"}},"
                       " \"mariadb\": {\"user\": \"${DB_USER}\", \"password\": \"${DB_PASSWORD}\","
                       " \"database\": \"db\"}, " ES_OK "}";
    cl_config_t *c = NULL;
    cl_config_errors_t errs;
    CL_ASSERT_INT_EQ(CL_OK, load(json, &c, &errs));
    print_messages(&errs);
    if (c != NULL) {
        CL_ASSERT_STR_EQ("kafka1:9092", c->kafka.brokers);
        CL_ASSERT_STR_EQ("sasl-secret-value", c->kafka.properties[0].value);
        CL_ASSERT_STR_EQ("ingest", c->mariadb.user);
        CL_ASSERT_STR_EQ("hunter2-secret", c->mariadb.password);
    }
    cl_config_free(c);
    cl_config_errors_free(&errs);
}

static void test_env_escape_keeps_literal_dollar_brace(void)
{
    const char *json = "{\"kafka\": {\"brokers\": \"k\", \"topics\": [\"t\"]},"
                       " \"mariadb\": {\"user\": \"u\", \"password\": \"a$$${DB_USER}$b$$c\","
                       " \"database\": \"db\"}, " ES_OK "}";
    cl_config_t *c = NULL;
    cl_config_errors_t errs;
    CL_ASSERT_INT_EQ(CL_OK, load(json, &c, &errs));
    if (c != NULL)
        CL_ASSERT_STR_EQ("a$${DB_USER}$b$$c", c->mariadb.password);
    cl_config_free(c);
    cl_config_errors_free(&errs);

    CL_ASSERT_INT_EQ(CL_OK,
                     load(VALID_WITH(", \"log\": {\"level\": \"${EMPTY}info\"}"), &c, &errs));
    if (c != NULL)
        CL_ASSERT_INT_EQ(CL_LOG_INFO, c->log.level);
    cl_config_free(c);
    cl_config_errors_free(&errs);
}

static void test_unset_env_variable_names_variable_and_path(void)
{
    const char *json =
        "{\"kafka\": {\"brokers\": \"k\", \"topics\": [\"t\"]},"
        " \"mariadb\": {\"user\": \"u\", \"password\": "
        "\"${CLICKLOOP_DB_PASSWORD}\", \"database\": \"${NOPE_A}${NOPE_B}\"}, " ES_OK "}";
    cl_config_t *c = NULL;
    cl_config_errors_t errs;
    CL_ASSERT_INT_EQ(CL_ERR, load(json, &c, &errs));
    CL_ASSERT_INT_EQ(3, errs.count);
    CL_ASSERT(messages_contain(&errs, "test.json: mariadb.password: environment variable "
                                      "CLICKLOOP_DB_PASSWORD is not set"));
    CL_ASSERT(messages_contain(&errs, "test.json: mariadb.database: environment variable "
                                      "NOPE_A is not set"));
    CL_ASSERT(messages_contain(&errs, "test.json: mariadb.database: environment variable "
                                      "NOPE_B is not set"));
    cl_config_errors_free(&errs);
}

static void test_malformed_env_references_are_rejected(void)
{
    cl_config_t *c = NULL;
    cl_config_errors_t errs;
    CL_ASSERT_INT_EQ(CL_ERR, load(VALID_WITH(", \"log\": {\"level\": \"${LEVEL\"}"), &c, &errs));
    CL_ASSERT_INT_EQ(1, errs.count);
    CL_ASSERT(messages_contain(&errs, "test.json: log.level: unterminated \"${\""));
    cl_config_errors_free(&errs);

    CL_ASSERT_INT_EQ(CL_ERR, load(VALID_WITH(", \"log\": {\"level\": \"${1X}\"}"), &c, &errs));
    CL_ASSERT_INT_EQ(1, errs.count);
    CL_ASSERT(messages_contain(&errs, "log.level: invalid environment variable name \"1X\""));
    cl_config_errors_free(&errs);
}

static void test_env_expanded_values_never_appear_in_messages(void)
{
    /* DB_NAME expands to "bad-name!", which breaks the database rule: the
     * message names the reference, not its value. */
    const char *json = "{\"kafka\": {\"brokers\": \"k\", \"topics\": [\"t\"]},"
                       " \"mariadb\": {\"user\": \"u\", \"password\": \"${DB_PASSWORD}\","
                       " \"database\": \"${DB_NAME}\"}, " ES_OK "}";
    cl_config_t *c = NULL;
    cl_config_errors_t errs;
    CL_ASSERT_INT_EQ(CL_ERR, load(json, &c, &errs));
    CL_ASSERT_INT_EQ(1, errs.count);
    CL_ASSERT(messages_contain(&errs, "test.json: mariadb.database: may only contain letters, "
                                      "digits, _ and $, got \"${DB_NAME}\" after environment "
                                      "expansion"));
    CL_ASSERT(!messages_contain(&errs, "bad-name!"));
    CL_ASSERT(!messages_contain(&errs, "hunter2"));
    cl_config_errors_free(&errs);
}

static void test_getenv_is_the_default_lookup(void)
{
    setenv("CL_TEST_CONFIG_BROKERS", "from-env:9092", 1);
    cl_config_t *c = NULL;
    cl_config_errors_t errs;
    const char *json = "{\"kafka\": {\"brokers\": \"${CL_TEST_CONFIG_BROKERS}\", \"topics\": "
                       "[\"t\"]}, " MARIADB_OK ", " ES_OK "}";
    CL_ASSERT_INT_EQ(CL_OK, load_string(json, "env.json", NULL, &c, &errs));
    if (c != NULL)
        CL_ASSERT_STR_EQ("from-env:9092", c->kafka.brokers);
    cl_config_free(c);
    cl_config_errors_free(&errs);
    unsetenv("CL_TEST_CONFIG_BROKERS");
}

/* ---- secrets ----------------------------------------------------------------- */

static void test_secret_values_are_never_shown(void)
{
    const char *json =
        "{\"kafka\": {\"brokers\": \"k\", \"topics\": [\"t\"], \"properties\": "
        "{\"sasl.password\": [\"pw-in-array\"], \"ssl.keystore.password\": \"x${pw-part}y\","
        " \"sasl.oauthbearer.client.secret\": {\"s\": 1}}},"
        " \"mariadb\": {\"user\": \"u\", \"password\": 424242, \"database\": \"db\"},"
        " \"elasticsearch\": {\"urls\": [\"http://e\"], \"api_key\": \"\", \"password\": true,"
        " \"username\": \"e\"}}";
    cl_config_t *c = NULL;
    cl_config_errors_t errs;
    CL_ASSERT_INT_EQ(CL_ERR, load(json, &c, &errs));
    CL_ASSERT_INT_EQ(6, errs.count);
    CL_ASSERT(messages_contain(&errs, "test.json: mariadb.password: expected a string, got a "
                                      "number"));
    CL_ASSERT(messages_contain(&errs, "test.json: elasticsearch.api_key: expected a non-empty "
                                      "string, got an empty string"));
    CL_ASSERT(messages_contain(&errs, "test.json: elasticsearch.password: expected a string, "
                                      "got a boolean"));
    CL_ASSERT(messages_contain(&errs, "kafka.properties[\"sasl.password\"]: expected a string, "
                                      "number or boolean, got an array"));
    CL_ASSERT(messages_contain(&errs, "kafka.properties[\"ssl.keystore.password\"]: invalid "
                                      "environment variable name"));
    CL_ASSERT(messages_contain(&errs, "kafka.properties[\"sasl.oauthbearer.client.secret\"]"));
    CL_ASSERT(!messages_contain(&errs, "424242"));
    CL_ASSERT(!messages_contain(&errs, "pw-"));
    CL_ASSERT(!messages_contain(&errs, "true"));
    cl_config_errors_free(&errs);
}

/* ---- durations and sizes ---------------------------------------------------- */

static void test_parse_duration(void)
{
    static const struct {
        const char *text;
        int rc;
        uint64_t ms;
    } cases[] = {
        {"250ms", CL_OK, 250},
        {"10s", CL_OK, 10000},
        {"30m", CL_OK, 1800000},
        {"1h", CL_OK, 3600000},
        {"1d", CL_OK, 86400000},
        {"0s", CL_OK, 0},
        {"007s", CL_OK, 7000},
        {"", CL_ERR, 0},
        {"10", CL_ERR, 0},
        {"s", CL_ERR, 0},
        {"-1s", CL_ERR, 0},
        {"1.5s", CL_ERR, 0},
        {"10 s", CL_ERR, 0},
        {" 10s", CL_ERR, 0},
        {"10S", CL_ERR, 0},
        {"1h30m", CL_ERR, 0},
        {"10us", CL_ERR, 0},
        {"18446744073709551615ms", CL_OK, UINT64_MAX},
        {"18446744073709551616ms", CL_ERR, 0},
        {"18446744073709551615s", CL_ERR, 0},
    };
    for (size_t i = 0; i < CL_ARRAY_LEN(cases); i++) {
        uint64_t ms = 0;
        int rc = parse_duration(cases[i].text, &ms);
        if (rc != cases[i].rc || (rc == CL_OK && ms != cases[i].ms))
            CL_FAIL_("duration \"%s\": expected rc %d value %" PRIu64 ", got rc %d value %" PRIu64,
                     cases[i].text, cases[i].rc, cases[i].ms, rc, ms);
    }
}

static void test_parse_size(void)
{
    static const struct {
        const char *text;
        int rc;
        uint64_t bytes;
    } cases[] = {
        {"64B", CL_OK, 64},           {"64KB", CL_OK, 65536},
        {"5MB", CL_OK, 5242880},      {"1GB", CL_OK, 1073741824},
        {"1024", CL_ERR, 0},          {"5mb", CL_ERR, 0},
        {"5 MB", CL_ERR, 0},          {"5M", CL_ERR, 0},
        {"1.5MB", CL_ERR, 0},         {"MB", CL_ERR, 0},
        {"17179869184GB", CL_ERR, 0},
    };
    for (size_t i = 0; i < CL_ARRAY_LEN(cases); i++) {
        uint64_t bytes = 0;
        int rc = parse_size(cases[i].text, &bytes);
        if (rc != cases[i].rc || (rc == CL_OK && bytes != cases[i].bytes))
            CL_FAIL_("size \"%s\": expected rc %d value %" PRIu64 ", got rc %d value %" PRIu64,
                     cases[i].text, cases[i].rc, cases[i].bytes, rc, bytes);
    }
}

/* ---- diff -------------------------------------------------------------------- */

typedef struct {
    char names[16][64];
    cl_config_reload_rule_t rules[16];
    int count;
} names_t;

static void collect_name(const char *name, const cl_config_reload_rule_t *rule, void *data)
{
    names_t *n = data;
    if (n->count < 16) {
        snprintf(n->names[n->count], sizeof n->names[0], "%s", name);
        n->rules[n->count] = *rule;
    }
    n->count++;
}

#define CL_ASSERT_RULE(expected_apply, expected_parts, rule)                                       \
    do {                                                                                           \
        CL_ASSERT_INT_EQ((expected_apply), (rule).apply);                                          \
        CL_ASSERT_INT_EQ((expected_parts), (rule).parts);                                          \
    } while (0)

static void test_diff_lists_changed_settings_by_name(void)
{
    const char *a_json =
        "{\"kafka\": {\"brokers\": \"k\", \"topics\": [\"t\"], \"properties\": {\"linger.ms\": 5,"
        " \"acks\": \"all\"}},"
        " \"mariadb\": {\"user\": \"u\", \"password\": \"one\", \"database\": \"db\"},"
        " \"aggregation\": {\"windows\": [\"1h\"]}, " ES_OK "}";
    const char *b_json =
        "{\"kafka\": {\"brokers\": \"k\", \"topics\": [\"t\"], \"properties\": {\"linger.ms\": 10,"
        " \"client.id\": \"c\"}},"
        " \"mariadb\": {\"user\": \"u\", \"password\": \"two\", \"database\": \"db\","
        " \"pool_size\": 8},"
        " \"ingest\": {\"mapping\": {\"url\": \"/u\"}},"
        " \"aggregation\": {\"windows\": [\"1h\", \"1d\"]},"
        " \"log\": {\"level\": \"debug\"}, " ES_OK "}";
    cl_config_t *a = NULL, *b = NULL;
    cl_config_errors_t errs;
    CL_ASSERT_INT_EQ(CL_OK, load(a_json, &a, &errs));
    cl_config_errors_free(&errs);
    CL_ASSERT_INT_EQ(CL_OK, load(b_json, &b, &errs));
    cl_config_errors_free(&errs);
    if (a == NULL || b == NULL) {
        cl_config_free(a);
        cl_config_free(b);
        return;
    }
    CL_ASSERT_INT_EQ(0, cl_config_diff(a, a, NULL, NULL));

    names_t n = {.count = 0};
    CL_ASSERT_INT_EQ(8, cl_config_diff(a, b, collect_name, &n));
    static const char *const expected[] = {
        "kafka.properties[\"linger.ms\"]",
        "kafka.properties[\"acks\"]",
        "kafka.properties[\"client.id\"]",
        "mariadb.password",
        "mariadb.pool_size",
        "ingest.mapping.url",
        "aggregation.windows",
        "log.level",
    };
    for (int i = 0; i < n.count && i < (int)CL_ARRAY_LEN(expected); i++)
        CL_ASSERT_STR_EQ(expected[i], n.names[i]);
    /* Each difference comes with the rule of its table line. */
    for (int i = 0; i < 3; i++)
        CL_ASSERT_RULE(CL_APPLY_RESTART, CL_PART_INGEST, n.rules[i]);
    CL_ASSERT_RULE(CL_APPLY_RESTART, CL_PARTS_ALL, n.rules[3]);
    CL_ASSERT_RULE(CL_APPLY_POOL_SIZE, CL_PART_INGEST, n.rules[4]);
    CL_ASSERT_RULE(CL_APPLY_RESTART, CL_PART_INGEST, n.rules[5]);
    CL_ASSERT_RULE(CL_APPLY_RESTART, CL_PART_AGGREGATOR, n.rules[6]);
    CL_ASSERT_RULE(CL_APPLY_LOG, 0, n.rules[7]);
    cl_config_free(a);
    cl_config_free(b);
}

static void test_diff_reports_elasticsearch_section_once(void)
{
    cl_config_t *a = NULL, *b = NULL;
    cl_config_errors_t errs;
    CL_ASSERT_INT_EQ(CL_OK, load(VALID, &a, &errs));
    cl_config_errors_free(&errs);
    CL_ASSERT_INT_EQ(
        CL_OK,
        load("{" KAFKA_OK ", " MARIADB_OK ", \"aggregation\": {\"enabled\": false}}", &b, &errs));
    cl_config_errors_free(&errs);
    names_t n = {.count = 0};
    if (a != NULL && b != NULL) {
        CL_ASSERT_INT_EQ(2, cl_config_diff(a, b, collect_name, &n));
        CL_ASSERT_STR_EQ("aggregation.enabled", n.names[0]);
        CL_ASSERT_STR_EQ("elasticsearch", n.names[1]);
        CL_ASSERT_RULE(CL_APPLY_RESTART, CL_PART_AGGREGATOR | CL_PART_INDEXER, n.rules[0]);
        CL_ASSERT_RULE(CL_APPLY_RESTART, CL_PART_INDEXER, n.rules[1]);
    }
    cl_config_free(a);
    cl_config_free(b);
}

/* ---- reload rules ---------------------------------------------------------------- */

/* NULL when rule is one the reload planner can carry out, else why not. A
 * restart names at least one part; an in-place step may name the part whose
 * restart applies it too; nothing names a part that does not exist. */
static const char *rule_problem(const cl_config_reload_rule_t *rule)
{
    if (rule->apply < CL_APPLY_RESTART || rule->apply > CL_APPLY_WHEN_READ)
        return "has no reload rule";
    if ((rule->parts & ~(unsigned)CL_PARTS_ALL) != 0)
        return "names a part that does not exist";
    if (rule->apply == CL_APPLY_RESTART && rule->parts == 0)
        return "restarts no part";
    if (rule->apply == CL_APPLY_WHEN_READ && rule->parts != 0)
        return "is read when needed, so no part applies it";
    return NULL;
}

static void test_every_setting_of_the_table_has_a_reload_rule(void)
{
    size_t checked = 0;
    for (size_t s = 0; s < CL_ARRAY_LEN(sections); s++) {
        const section_t *sec = &sections[s];
        for (size_t i = 0; i < sec->field_count; i++, checked++) {
            const char *why = rule_problem(&sec->fields[i].reload);
            if (why != NULL)
                CL_FAIL_("%s.%s %s", sec->key, sec->fields[i].key, why);
        }
        /* A section that may be absent has a rule for appearing or going. */
        const char *why = sec->has_presence ? rule_problem(&sec->presence_reload) : NULL;
        if (why != NULL)
            CL_FAIL_("section %s %s", sec->key, why);
    }
    CL_ASSERT(checked >= 50); /* the settings documented in docs/configuration.md */
}

/* The walk above is a real check: a line without a rule fails it. */
static void test_a_setting_without_a_rule_is_caught(void)
{
    static const field_t unruled[] = {
        {.key = "forgotten", .kind = KIND_BOOL, .offset = OFF(aggregation.enabled)},
    };
    CL_ASSERT_STR_EQ("has no reload rule", rule_problem(&unruled[0].reload));
    cl_config_reload_rule_t nowhere = RESTARTS(0);
    CL_ASSERT_STR_EQ("restarts no part", rule_problem(&nowhere));
    cl_config_reload_rule_t stranger = APPLIED_BY(CL_APPLY_SINK, 1u << 7);
    CL_ASSERT_STR_EQ("names a part that does not exist", rule_problem(&stranger));
}

/* ---- files ------------------------------------------------------------------- */

static void test_example_config_loads(void)
{
    cl_config_t *c = NULL;
    cl_config_errors_t errs;
    int rc = cl_config_load_file(CL_SOURCE_ROOT "/config.example.json", &fake_env, &c, &errs);
    CL_ASSERT_INT_EQ(CL_OK, rc);
    print_messages(&errs);
    if (c != NULL) {
        CL_ASSERT_STR_EQ("127.0.0.1:19092", c->kafka.brokers);
        CL_ASSERT_STR_EQ("clicks", c->kafka.topics[0]);
        CL_ASSERT_INT_EQ(13306, c->mariadb.port);
        CL_ASSERT_STR_EQ("clickloop", c->mariadb.database);
        CL_ASSERT_STR_EQ("http://127.0.0.1:19200", c->elasticsearch.urls[0]);
        CL_ASSERT_INT_EQ(2, c->aggregation.window_count);
        CL_ASSERT_INT_EQ(9400, c->admin.port);
        CL_ASSERT_STR_EQ("/url", c->ingest.mapping[CL_FIELD_URL]);
    }
    cl_config_free(c);
    cl_config_errors_free(&errs);
}

static void test_nested_mapping_example_loads_and_differs_only_in_mapping(void)
{
    cl_config_t *flat = NULL, *nested = NULL;
    cl_config_errors_t errs;
    CL_ASSERT_INT_EQ(CL_OK, cl_config_load_file(CL_SOURCE_ROOT "/docs/examples/nested-mapping.json",
                                                NULL, &nested, &errs));
    print_messages(&errs);
    cl_config_errors_free(&errs);
    CL_ASSERT_INT_EQ(
        CL_OK, cl_config_load_file(CL_SOURCE_ROOT "/config.example.json", NULL, &flat, &errs));
    cl_config_errors_free(&errs);
    if (flat != NULL && nested != NULL) {
        CL_ASSERT_STR_EQ("/click_data/user_id", nested->ingest.mapping[CL_FIELD_USER_ID]);
        CL_ASSERT_STR_EQ("/geo_data/city", nested->ingest.mapping[CL_FIELD_CITY]);
        CL_ASSERT_STR_EQ("/user_agent_data/user_agent",
                         nested->ingest.mapping[CL_FIELD_USER_AGENT]);
        CL_ASSERT_STR_EQ("/event_id", nested->ingest.mapping[CL_FIELD_EVENT_ID]);
        /* Every field but event_id moved under an object. */
        CL_ASSERT_INT_EQ(CL_FIELD_COUNT - 1, cl_config_diff(flat, nested, NULL, NULL));
    }
    cl_config_free(flat);
    cl_config_free(nested);
}

static void test_missing_file_is_reported_with_its_name(void)
{
    cl_config_t *c = (cl_config_t *)1;
    cl_config_errors_t errs;
    CL_ASSERT_INT_EQ(CL_ERR, cl_config_load_file("/nonexistent/clickloop.json", NULL, &c, &errs));
    CL_ASSERT(c == NULL);
    CL_ASSERT_INT_EQ(1, errs.count);
    if (errs.count == 1)
        CL_ASSERT_STR_EQ("/nonexistent/clickloop.json: cannot open: No such file or "
                         "directory",
                         errs.messages[0]);
    cl_config_errors_free(&errs);
}

static void test_utf8_byte_order_mark_is_ignored(void)
{
    cl_config_t *c = NULL;
    cl_config_errors_t errs;
    CL_ASSERT_INT_EQ(CL_OK, load("\xEF\xBB\xBF" VALID, &c, &errs));
    print_messages(&errs);
    cl_config_free(c);
    cl_config_errors_free(&errs);
}

static void test_errors_may_be_null(void)
{
    cl_config_t *c = NULL;
    CL_ASSERT_INT_EQ(CL_ERR, load_string("{}", "x.json", NULL, &c, NULL));
    CL_ASSERT(c == NULL);
}

static const cl_test_case_t cases[] = {
    CL_TEST(test_each_broken_config_is_rejected_with_its_path),
    CL_TEST(test_every_independent_problem_is_reported),
    CL_TEST(test_missing_required_sections_each_reported),
    CL_TEST(test_defaults_fill_every_absent_setting),
    CL_TEST(test_elasticsearch_optional_when_aggregation_disabled),
    CL_TEST(test_explicit_values_are_typed),
    CL_TEST(test_env_references_are_expanded),
    CL_TEST(test_env_escape_keeps_literal_dollar_brace),
    CL_TEST(test_unset_env_variable_names_variable_and_path),
    CL_TEST(test_malformed_env_references_are_rejected),
    CL_TEST(test_env_expanded_values_never_appear_in_messages),
    CL_TEST(test_getenv_is_the_default_lookup),
    CL_TEST(test_secret_values_are_never_shown),
    CL_TEST(test_parse_duration),
    CL_TEST(test_parse_size),
    CL_TEST(test_diff_lists_changed_settings_by_name),
    CL_TEST(test_diff_reports_elasticsearch_section_once),
    CL_TEST(test_every_setting_of_the_table_has_a_reload_rule),
    CL_TEST(test_a_setting_without_a_rule_is_caught),
    CL_TEST(test_example_config_loads),
    CL_TEST(test_nested_mapping_example_loads_and_differs_only_in_mapping),
    CL_TEST(test_missing_file_is_reported_with_its_name),
    CL_TEST(test_utf8_byte_order_mark_is_ignored),
    CL_TEST(test_errors_may_be_null),
};

CL_TEST_MAIN(cases)

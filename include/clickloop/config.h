/* Configuration: a JSON file, parsed with json-c, `${NAME}` environment
 * references expanded, every setting validated and defaulted, the result a
 * typed struct that the other modules read and never change.
 *
 * Loading collects every problem it finds, not only the first, one message per
 * problem in the form `<file>: <json.path>: <problem>`, so that one run of
 * `clickloop --check-config` shows everything to fix. Messages never contain
 * secret values (passwords, API keys, secret Kafka properties) nor the value
 * of an expanded environment variable.
 *
 * The loader is pure apart from reading the file: the environment is reached
 * through a lookup function that tests replace. docs/configuration.md is the
 * reference for every setting. */
#ifndef CLICKLOOP_CONFIG_H
#define CLICKLOOP_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "clickloop/common.h"
#include "clickloop/event_fields.h"
#include "clickloop/log.h"

/* The parts of a running clickloop that the application starts and may
 * restart on a reload. They live here because each setting's reload rule
 * (below) names them. */
typedef enum {
    CL_PART_INGEST = 1u << 0,     /* MariaDB pool, store, event parser, pipeline, Kafka consumer */
    CL_PART_AGGREGATOR = 1u << 1, /* aggregation runner and its connection */
    CL_PART_INDEXER = 1u << 2,    /* indexer, its connection, and the Elasticsearch sink */
    CL_PART_RETENTION = 1u << 3,  /* retention runner and its connection */
} cl_part_t;

#define CL_PARTS_ALL (CL_PART_INGEST | CL_PART_AGGREGATOR | CL_PART_INDEXER | CL_PART_RETENTION)

/* How a changed setting takes effect on a reload (SIGHUP): by restarting
 * parts, or in place by the one step named here. The reload planner
 * (reload.h) turns these into a plan; 0 is no rule at all, which the field
 * table never holds (test_config walks it). */
typedef enum {
    CL_APPLY_RESTART = 1,          /* restart the parts of the rule */
    CL_APPLY_LOG,                  /* log level and format, set in place */
    CL_APPLY_INGEST_PARAMS,        /* batching and event-time window: cl_pipeline_set_params */
    CL_APPLY_POOL_SIZE,            /* the ingest pool opens or closes connections */
    CL_APPLY_AGGREGATION_INTERVAL, /* the aggregator's timer takes the new interval */
    CL_APPLY_SINK,                 /* a new Elasticsearch sink for the running indexer */
    CL_APPLY_ADMIN,                /* the admin listener moves */
    CL_APPLY_RETENTION,            /* new policy, or the runner starts or stops */
    CL_APPLY_WHEN_READ,            /* read each time it is needed (shutdown.*): nothing to do */
} cl_config_apply_t;

/* The reload rule of one setting, held beside it in config.c's field table. */
typedef struct cl_config_reload_rule_s {
    cl_config_apply_t apply;
    /* CL_APPLY_RESTART: the parts to restart (CL_PART_*). Otherwise the part
     * whose restart applies the setting as well (0: none), since a restarted
     * part starts from the new configuration. */
    unsigned parts;
} cl_config_reload_rule_t;

/* One librdkafka property, passed to rd_kafka_conf_set() as strings. */
typedef struct cl_config_kafka_property_s {
    char *name;
    char *value; /* numbers and booleans converted to their JSON text */
} cl_config_kafka_property_t;

typedef struct cl_config_kafka_s {
    char *brokers; /* comma-separated host:port list */
    char *group_id;
    char **topics;
    size_t topic_count;
    cl_config_kafka_property_t *properties; /* in file order */
    size_t property_count;
    uint64_t poll_interval_ms;
} cl_config_kafka_t;

typedef struct cl_config_mariadb_s {
    char *host;
    uint16_t port;
    char *socket; /* NULL when not set */
    char *user;
    char *password; /* "" when not set */
    char *database;
    uint32_t pool_size;
    uint64_t connect_timeout_ms;
    uint64_t read_timeout_ms;
    uint64_t write_timeout_ms;
    uint64_t reconnect_min_backoff_ms;
    uint64_t reconnect_max_backoff_ms;
    uint64_t max_allowed_packet; /* bytes; the server's own limit counts if smaller */
} cl_config_mariadb_t;

typedef struct cl_config_ingest_s {
    uint32_t batch_max_events;
    uint64_t batch_max_delay_ms;
    uint32_t max_in_flight_events;
    uint64_t max_in_flight_bytes;  /* payloads plus the SQL text held for them */
    uint64_t max_unwritten_age_ms; /* readiness fails past it (a stalled write) */
    uint64_t max_event_bytes;
    uint64_t max_event_age_ms;   /* older events are rejected */
    uint64_t max_future_skew_ms; /* events further ahead are rejected */
    /* One RFC 6901 JSON Pointer per field, indexed by cl_event_field_t, kept
     * escaped as written (never "", always starting with "/"). */
    char *mapping[CL_FIELD_COUNT];
} cl_config_ingest_t;

typedef struct cl_config_aggregation_s {
    bool enabled;
    uint64_t interval_ms;
    uint64_t *windows_ms; /* distinct, in file order */
    size_t window_count;
    uint64_t session_timeout_ms;
} cl_config_aggregation_t;

typedef struct cl_config_elasticsearch_s {
    /* False when the section is absent (allowed only with aggregation
     * disabled); every other member is then zero or NULL. */
    bool present;
    char **urls; /* without trailing '/' */
    size_t url_count;
    char *index;         /* may contain %Y, %m, %d */
    bool index_has_date; /* index contains a date pattern */
    char *username;      /* NULL, or set together with password */
    char *password;
    char *api_key; /* NULL, never set together with username */
    char *ca_file; /* NULL: the system's CA store */
    bool verify_tls;
    uint32_t bulk_max_docs;
    uint64_t bulk_max_bytes;
    uint32_t max_in_flight;
    uint64_t request_timeout_ms;
    uint64_t retry_min_backoff_ms;
    uint64_t retry_max_backoff_ms;
    uint64_t node_down_for_ms;
} cl_config_elasticsearch_t;

typedef struct cl_config_admin_s {
    bool enabled; /* admin.listen is set */
    char *listen; /* as written, e.g. "[::1]:9400"; NULL when disabled */
    char *host;   /* IP address without brackets, e.g. "::1" */
    uint16_t port;
} cl_config_admin_t;

typedef struct cl_config_log_s {
    cl_log_level_t level;
    cl_log_format_t format;
} cl_config_log_t;

typedef struct cl_config_retention_s {
    uint32_t raw_days; /* 0 = keep raw events forever */
    uint32_t batch_rows;
    uint64_t interval_ms;
} cl_config_retention_t;

typedef struct cl_config_shutdown_s {
    uint64_t drain_timeout_ms;
} cl_config_shutdown_t;

/* A loaded, valid configuration. Every string and array is owned by it and
 * released by cl_config_free(). */
typedef struct cl_config_s {
    char *source; /* file name (or source name) it was loaded from */
    cl_config_kafka_t kafka;
    cl_config_mariadb_t mariadb;
    cl_config_ingest_t ingest;
    cl_config_aggregation_t aggregation;
    cl_config_elasticsearch_t elasticsearch;
    cl_config_admin_t admin;
    cl_config_log_t log;
    cl_config_retention_t retention;
    cl_config_shutdown_t shutdown;
} cl_config_t;

/* Every problem found by one load, one sentence each. */
typedef struct cl_config_errors_s {
    size_t count;
    char **messages;
} cl_config_errors_t;

/* Returns the value of environment variable `name`, or NULL when it is not
 * set. The string must stay valid until the load returns. */
typedef const char *(*cl_config_env_lookup_t)(const char *name, void *data);

typedef struct cl_config_load_opts_s {
    cl_config_env_lookup_t env_lookup; /* NULL: getenv() */
    void *env_lookup_data;
} cl_config_load_opts_t;

/* Read, expand, validate and default the configuration file at `path`.
 * opts may be NULL. On success returns 0 and sets *out (free it with
 * cl_config_free). On failure returns CL_ERR, sets *out to NULL and fills
 * errs with one message per problem. errs is (re)initialised on entry, so it
 * must not hold messages from an earlier load; release it with
 * cl_config_errors_free() in both cases. errs may be NULL. */
int cl_config_load_file(const char *path, const cl_config_load_opts_t *opts, cl_config_t **out,
                        cl_config_errors_t *errs);

void cl_config_free(cl_config_t *config);
void cl_config_errors_free(cl_config_errors_t *errs);

/* Called once per setting that differs, with its dotted name (for example
 * "mariadb.pool_size", "ingest.mapping.url", "kafka.properties[\"linger.ms\"]")
 * and its reload rule from the field table (an entry of kafka.properties or
 * ingest.mapping has the rule of the whole setting). Names only: a changed
 * password is reported without its value. */
typedef void (*cl_config_diff_cb)(const char *name, const cl_config_reload_rule_t *rule,
                                  void *data);

/* Compare two configurations setting by setting, calling cb (which may be
 * NULL) for each difference in schema order; returns the number of
 * differences. `source` is not compared. A whole elasticsearch section that
 * appears or disappears is reported once as "elasticsearch". */
int cl_config_diff(const cl_config_t *a, const cl_config_t *b, cl_config_diff_cb cb, void *data);

#endif

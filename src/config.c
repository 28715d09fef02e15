/* Configuration loading and validation; see include/clickloop/config.h and
 * docs/configuration.md.
 *
 * The schema is data: one table of fields per section, each with its kind,
 * default, range, place in cl_config_t and reload rule (restart which parts,
 * or apply in place by which step). One walker checks a section against its
 * table, so a new setting is one table line, and the same tables drive
 * cl_config_diff() (which hands each difference's rule to the reload
 * planner) and cl_config_free(). Rules that tie two settings
 * together run after every section is read, and only when neither setting
 * had a problem of its own, so one mistake yields one message.
 *
 * Every message is built here, so this is the one place that decides what a
 * message may show: never a secret value, never what an environment variable
 * expanded to.
 *
 * It is over 1 000 lines because it is the whole schema: the tables of every
 * section, the value parsers they name (durations, sizes, addresses, ${ENV}
 * expansion) and the cross-setting rules. Split by section, one setting's
 * line, parser and rule would land in different files. */
#include "clickloop/config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include "clickloop/buf.h"
#include "clickloop/common.h"

/* A configuration file is a few kilobytes; anything past this is a mistake
 * (a wrong path, a log file), not a configuration. */
#define MAX_CONFIG_BYTES (1024u * 1024u)
/* Strings longer than this are cut in messages. */
#define SHOWN_STRING_MAX 80

#define MS_PER_SECOND UINT64_C(1000)
#define MS_PER_MINUTE (60 * MS_PER_SECOND)
#define MS_PER_HOUR (60 * MS_PER_MINUTE)
#define MS_PER_DAY (24 * MS_PER_HOUR)
#define KIB UINT64_C(1024)
#define MIB (1024 * KIB)
#define GIB (1024 * MIB)

#define DURATION_EXAMPLES "a duration such as \"250ms\", \"10s\", \"30m\", \"1h\" or \"1d\""
#define SIZE_EXAMPLES "a size: an integer number of bytes or a string such as \"64KB\" or \"5MB\""

/* ---- units ------------------------------------------------------------ */

typedef struct {
    const char *name;
    uint64_t factor;
} unit_t;

/* Largest last, for formatting. */
static const unit_t duration_units[] = {
    {"ms", 1}, {"s", MS_PER_SECOND}, {"m", MS_PER_MINUTE}, {"h", MS_PER_HOUR}, {"d", MS_PER_DAY},
};

static const unit_t size_units[] = {
    {"B", 1},
    {"KB", KIB},
    {"MB", MIB},
    {"GB", GIB},
};

static int parse_with_unit(const char *s, const unit_t *units, size_t unit_count, uint64_t *out)
{
    const char *p = s;
    uint64_t value = 0;
    if (*p < '0' || *p > '9')
        return CL_ERR;
    for (; *p >= '0' && *p <= '9'; p++) {
        unsigned digit = (unsigned)(*p - '0');
        if (value > (UINT64_MAX - digit) / 10)
            return CL_ERR;
        value = value * 10 + digit;
    }
    for (size_t i = 0; i < unit_count; i++) {
        if (strcmp(p, units[i].name) == 0) {
            if (value > UINT64_MAX / units[i].factor)
                return CL_ERR;
            *out = value * units[i].factor;
            return CL_OK;
        }
    }
    return CL_ERR;
}

/* A decimal integer followed by one unit, ms, s, m, h or d, with no space
 * ("250ms", "30m"). Returns 0 or CL_ERR (bad syntax or overflow). */
static int parse_duration(const char *s, uint64_t *ms)
{
    return parse_with_unit(s, duration_units, CL_ARRAY_LEN(duration_units), ms);
}

/* A decimal integer followed by B, KB, MB or GB (1024-based), with no space
 * ("64KB", "5MB"). In a file a size may also be a plain JSON integer. */
static int parse_size(const char *s, uint64_t *bytes)
{
    return parse_with_unit(s, size_units, CL_ARRAY_LEN(size_units), bytes);
}

/* Writes value in the largest unit that divides it: 90000 ms -> "90s". */
static void format_with_unit(uint64_t value, const unit_t *units, size_t unit_count, char *out,
                             size_t out_len)
{
    size_t i = unit_count - 1;
    while (i > 0 && (value < units[i].factor || value % units[i].factor != 0))
        i--;
    snprintf(out, out_len, "%" PRIu64 "%s", value / units[i].factor, units[i].name);
}

static void format_duration(uint64_t ms, char *out, size_t out_len)
{
    format_with_unit(ms, duration_units, CL_ARRAY_LEN(duration_units), out, out_len);
}

static void format_size(uint64_t bytes, char *out, size_t out_len)
{
    format_with_unit(bytes, size_units, CL_ARRAY_LEN(size_units), out, out_len);
}

/* ---- schema ------------------------------------------------------------ */

typedef enum {
    KIND_STRING,
    KIND_BOOL,
    KIND_PORT,          /* uint16_t */
    KIND_INTEGER,       /* uint32_t */
    KIND_DURATION,      /* uint64_t milliseconds */
    KIND_SIZE,          /* uint64_t bytes */
    KIND_STRING_LIST,   /* char ** and a size_t count */
    KIND_DURATION_LIST, /* uint64_t * and a size_t count */
    KIND_ENUM,          /* an int-sized enum; value = index in names */
    KIND_PROPERTIES,    /* kafka.properties */
    KIND_MAPPING,       /* ingest.mapping */
    KIND_LISTEN,        /* admin.listen */
} kind_t;

#define F_REQUIRED 0x01u    /* no default: a missing key is an error */
#define F_SECRET 0x02u      /* the value never appears in a message */
#define F_ALLOW_EMPTY 0x04u /* a string that may be "" */
#define F_TRIM_SLASH 0x08u  /* strip trailing '/' (URLs get paths appended) */
#define F_WINDOW 0x10u      /* durations that must tile a day or be whole days */

/* Extra rule for a string value: return false and a phrase in why. */
typedef bool (*string_rule_t)(const char *value, char *why, size_t why_len);

typedef struct {
    const char *key;
    kind_t kind;
    unsigned flags;
    size_t offset;       /* of the value in cl_config_t */
    size_t count_offset; /* of the element count, for lists */
    const char *default_text;
    uint64_t default_number;
    uint64_t min, max;
    string_rule_t rule;
    const char *const *names;       /* KIND_ENUM, NULL-terminated */
    cl_config_reload_rule_t reload; /* how a change takes effect on a reload */
} field_t;

typedef struct {
    const char *key;
    bool required;
    /* Optional sections without defaults record whether they were given;
     * all others are filled with defaults when absent. */
    bool has_presence;
    size_t presence_offset;
    cl_config_reload_rule_t presence_reload; /* the section appears or goes */
    const field_t *fields;
    size_t field_count;
} section_t;

static bool rule_host(const char *s, char *why, size_t why_len);
static bool rule_socket_path(const char *s, char *why, size_t why_len);
static bool rule_database(const char *s, char *why, size_t why_len);
static bool rule_url(const char *s, char *why, size_t why_len);
static bool rule_index(const char *s, char *why, size_t why_len);

/* The reload rules, the last argument of every table line. */
#define RESTARTS(what)                                                                             \
    {                                                                                              \
        .apply = CL_APPLY_RESTART, .parts = (what)                                                 \
    }
#define APPLIED_BY(step, owner)                                                                    \
    {                                                                                              \
        .apply = (step), .parts = (owner)                                                          \
    }
#define READ_WHEN_NEEDED                                                                           \
    {                                                                                              \
        .apply = CL_APPLY_WHEN_READ, .parts = 0                                                    \
    }
/* The settings that only the ingest part reads, applied by its restart. */
#define RESTARTS_INGEST RESTARTS(CL_PART_INGEST)
#define BY_INGEST_PARAMS APPLIED_BY(CL_APPLY_INGEST_PARAMS, CL_PART_INGEST)
#define BY_SINK APPLIED_BY(CL_APPLY_SINK, CL_PART_INDEXER)
#define BY_RETENTION APPLIED_BY(CL_APPLY_RETENTION, CL_PART_RETENTION)
#define BY_LOG APPLIED_BY(CL_APPLY_LOG, 0)

#define OFF(member) offsetof(cl_config_t, member)
#define F_STRING(k, m, fl, def, rl, how)                                                           \
    {                                                                                              \
        .key = (k), .kind = KIND_STRING, .flags = (fl), .offset = OFF(m), .default_text = (def),   \
        .rule = (rl), .reload = how                                                                \
    }
#define F_BOOL(k, m, def, how)                                                                     \
    {                                                                                              \
        .key = (k), .kind = KIND_BOOL, .offset = OFF(m), .default_number = (def), .reload = how    \
    }
#define F_PORT(k, m, def, how)                                                                     \
    {                                                                                              \
        .key = (k), .kind = KIND_PORT, .offset = OFF(m), .default_number = (def), .min = 1,        \
        .max = 65535, .reload = how                                                                \
    }
#define F_INTEGER(k, m, def, lo, hi, how)                                                          \
    {                                                                                              \
        .key = (k), .kind = KIND_INTEGER, .offset = OFF(m), .default_number = (def), .min = (lo),  \
        .max = (hi), .reload = how                                                                 \
    }
#define F_DURATION(k, m, def, lo, hi, how)                                                         \
    {                                                                                              \
        .key = (k), .kind = KIND_DURATION, .offset = OFF(m), .default_text = (def), .min = (lo),   \
        .max = (hi), .reload = how                                                                 \
    }
#define F_SIZE(k, m, def, lo, hi, how)                                                             \
    {                                                                                              \
        .key = (k), .kind = KIND_SIZE, .offset = OFF(m), .default_number = (def), .min = (lo),     \
        .max = (hi), .reload = how                                                                 \
    }
#define F_LIST(k, kd, m, count, fl, def, lo, hi, rl, how)                                          \
    {                                                                                              \
        .key = (k), .kind = (kd), .flags = (fl), .offset = OFF(m), .count_offset = OFF(count),     \
        .default_text = (def), .min = (lo), .max = (hi), .rule = (rl), .reload = how               \
    }
#define F_ENUM(k, m, def, nm, how)                                                                 \
    {                                                                                              \
        .key = (k), .kind = KIND_ENUM, .offset = OFF(m), .default_text = (def), .names = (nm),     \
        .reload = how                                                                              \
    }
#define F_SPECIAL(k, kd, m, how)                                                                   \
    {                                                                                              \
        .key = (k), .kind = (kd), .offset = OFF(m), .reload = how                                  \
    }

#define SECONDS(n) ((n)*MS_PER_SECOND)
#define MINUTES(n) ((n)*MS_PER_MINUTE)
#define HOURS(n) ((n)*MS_PER_HOUR)
#define DAYS(n) ((n)*MS_PER_DAY)

/* Everything the Kafka consumer is created with. */
static const field_t kafka_fields[] = {
    F_STRING("brokers", kafka.brokers, F_REQUIRED, NULL, NULL, RESTARTS_INGEST),
    F_STRING("group_id", kafka.group_id, 0, "clickloop", NULL, RESTARTS_INGEST),
    F_LIST("topics", KIND_STRING_LIST, kafka.topics, kafka.topic_count, F_REQUIRED, NULL, 0, 0,
           NULL, RESTARTS_INGEST),
    F_SPECIAL("properties", KIND_PROPERTIES, kafka.properties, RESTARTS_INGEST),
    F_DURATION("poll_interval", kafka.poll_interval_ms, "100ms", 1, SECONDS(10), RESTARTS_INGEST),
};

/* Every part has a connection of its own: a change of where or how to
 * connect restarts them all. */
#define RESTARTS_ALL RESTARTS(CL_PARTS_ALL)
static const field_t mariadb_fields[] = {
    F_STRING("host", mariadb.host, 0, "127.0.0.1", rule_host, RESTARTS_ALL),
    F_PORT("port", mariadb.port, 3306, RESTARTS_ALL),
    F_STRING("socket", mariadb.socket, 0, NULL, rule_socket_path, RESTARTS_ALL),
    F_STRING("user", mariadb.user, F_REQUIRED, NULL, NULL, RESTARTS_ALL),
    F_STRING("password", mariadb.password, F_SECRET | F_ALLOW_EMPTY, "", NULL, RESTARTS_ALL),
    F_STRING("database", mariadb.database, F_REQUIRED, NULL, rule_database, RESTARTS_ALL),
    /* Only the ingest pool has this size; the other parts use one connection. */
    F_INTEGER("pool_size", mariadb.pool_size, 4, 1, 64,
              APPLIED_BY(CL_APPLY_POOL_SIZE, CL_PART_INGEST)),
    F_DURATION("connect_timeout", mariadb.connect_timeout_ms, "5s", SECONDS(1), HOURS(1),
               RESTARTS_ALL),
    F_DURATION("read_timeout", mariadb.read_timeout_ms, "30s", SECONDS(1), HOURS(1), RESTARTS_ALL),
    F_DURATION("write_timeout", mariadb.write_timeout_ms, "30s", SECONDS(1), HOURS(1),
               RESTARTS_ALL),
    F_DURATION("reconnect_min_backoff", mariadb.reconnect_min_backoff_ms, "100ms", 10, HOURS(1),
               RESTARTS_ALL),
    F_DURATION("reconnect_max_backoff", mariadb.reconnect_max_backoff_ms, "30s", 10, HOURS(1),
               RESTARTS_ALL),
    /* 1 GiB is MariaDB's largest max_allowed_packet: by default the server's
     * counts. Read when the store starts, so only ingest restarts. */
    F_SIZE("max_allowed_packet", mariadb.max_allowed_packet, GIB, 64 * KIB, GIB, RESTARTS_INGEST),
};
#undef RESTARTS_ALL

static const field_t ingest_fields[] = {
    F_INTEGER("batch_max_events", ingest.batch_max_events, 1000, 1, 100000, BY_INGEST_PARAMS),
    F_DURATION("batch_max_delay", ingest.batch_max_delay_ms, "200ms", 1, SECONDS(60),
               BY_INGEST_PARAMS),
    /* The lower bound is ingest.batch_max_events, checked across fields. */
    F_INTEGER("max_in_flight_events", ingest.max_in_flight_events, 50000, 1, 10000000,
              BY_INGEST_PARAMS),
    /* The bound on memory by bytes; librdkafka's prefetch is sized from it
     * when the consumer is created (kafka_source.h). */
    F_SIZE("max_in_flight_bytes", ingest.max_in_flight_bytes, 64 * MIB, MIB, 64 * GIB,
           BY_INGEST_PARAMS),
    /* Read by the readiness check each time it runs. */
    F_DURATION("max_unwritten_age", ingest.max_unwritten_age_ms, "60s", SECONDS(1), DAYS(1),
               READ_WHEN_NEEDED),
    /* The event parser is created with it. */
    F_SIZE("max_event_bytes", ingest.max_event_bytes, 65536, 64, 16 * MIB, RESTARTS_INGEST),
    /* The event-time window (event.h); 100 years is as good as no bound. */
    F_DURATION("max_event_age", ingest.max_event_age_ms, "400d", SECONDS(1), DAYS(3660000),
               BY_INGEST_PARAMS),
    F_DURATION("max_future_skew", ingest.max_future_skew_ms, "1h", 0, DAYS(3660000),
               BY_INGEST_PARAMS),
    F_SPECIAL("mapping", KIND_MAPPING, ingest.mapping, RESTARTS_INGEST),
};

static const field_t aggregation_fields[] = {
    /* The indexer runs only beside the aggregator. */
    F_BOOL("enabled", aggregation.enabled, true, RESTARTS(CL_PART_AGGREGATOR | CL_PART_INDEXER)),
    F_DURATION("interval", aggregation.interval_ms, "10s", 100, DAYS(1),
               APPLIED_BY(CL_APPLY_AGGREGATION_INTERVAL, CL_PART_AGGREGATOR)),
    F_LIST("windows", KIND_DURATION_LIST, aggregation.windows_ms, aggregation.window_count,
           F_WINDOW, "1h", MINUTES(1), DAYS(31), NULL, RESTARTS(CL_PART_AGGREGATOR)),
    F_DURATION("session_timeout", aggregation.session_timeout_ms, "30m", SECONDS(1), DAYS(1),
               RESTARTS(CL_PART_AGGREGATOR)),
};

/* Connection and bulk settings go to a new sink attached to the running
 * indexer; the index restarts the indexer, since documents already sent name
 * the old index. */
static const field_t elasticsearch_fields[] = {
    F_LIST("urls", KIND_STRING_LIST, elasticsearch.urls, elasticsearch.url_count,
           F_REQUIRED | F_TRIM_SLASH, NULL, 0, 0, rule_url, BY_SINK),
    F_STRING("index", elasticsearch.index, 0, "clickstream-stats", rule_index,
             RESTARTS(CL_PART_INDEXER)),
    F_STRING("username", elasticsearch.username, 0, NULL, NULL, BY_SINK),
    F_STRING("password", elasticsearch.password, F_SECRET | F_ALLOW_EMPTY, NULL, NULL, BY_SINK),
    F_STRING("api_key", elasticsearch.api_key, F_SECRET, NULL, NULL, BY_SINK),
    F_STRING("ca_file", elasticsearch.ca_file, 0, NULL, NULL, BY_SINK),
    F_BOOL("verify_tls", elasticsearch.verify_tls, true, BY_SINK),
    F_INTEGER("bulk_max_docs", elasticsearch.bulk_max_docs, 1000, 1, 100000, BY_SINK),
    F_SIZE("bulk_max_bytes", elasticsearch.bulk_max_bytes, 5 * MIB, KIB, 100 * MIB, BY_SINK),
    F_INTEGER("max_in_flight", elasticsearch.max_in_flight, 2, 1, 64, BY_SINK),
    F_DURATION("request_timeout", elasticsearch.request_timeout_ms, "30s", SECONDS(1), HOURS(1),
               BY_SINK),
    F_DURATION("retry_min_backoff", elasticsearch.retry_min_backoff_ms, "200ms", 10, HOURS(1),
               BY_SINK),
    F_DURATION("retry_max_backoff", elasticsearch.retry_max_backoff_ms, "30s", 10, HOURS(1),
               BY_SINK),
    F_DURATION("node_down_for", elasticsearch.node_down_for_ms, "30s", SECONDS(1), HOURS(1),
               BY_SINK),
};

static const field_t admin_fields[] = {
    F_SPECIAL("listen", KIND_LISTEN, admin, APPLIED_BY(CL_APPLY_ADMIN, 0)),
};

static const char *const log_level_names[] = {"debug", "info", "warn", "error", NULL};
static const char *const log_format_names[] = {"logfmt", "json", NULL};

/* KIND_ENUM stores the index into names as an int. */
_Static_assert(CL_LOG_DEBUG == 0 && CL_LOG_INFO == 1 && CL_LOG_WARN == 2 && CL_LOG_ERROR == 3,
               "log_level_names follows cl_log_level_t");
_Static_assert(CL_LOG_FORMAT_LOGFMT == 0 && CL_LOG_FORMAT_JSON == 1,
               "log_format_names follows cl_log_format_t");
_Static_assert(sizeof(cl_log_level_t) == sizeof(int) && sizeof(cl_log_format_t) == sizeof(int),
               "enums are stored as int");

static const field_t log_fields[] = {
    F_ENUM("level", log.level, "info", log_level_names, BY_LOG),
    F_ENUM("format", log.format, "logfmt", log_format_names, BY_LOG),
};

/* Switching retention on or off (raw_days) starts or stops its runner: that
 * is in place too. */
static const field_t retention_fields[] = {
    F_INTEGER("raw_days", retention.raw_days, 0, 0, 36500, BY_RETENTION),
    F_INTEGER("batch_rows", retention.batch_rows, 1000, 1, 100000, BY_RETENTION),
    F_DURATION("interval", retention.interval_ms, "1m", SECONDS(1), DAYS(1), BY_RETENTION),
};

static const field_t shutdown_fields[] = {
    /* Read when a shutdown begins. */
    F_DURATION("drain_timeout", shutdown.drain_timeout_ms, "30s", SECONDS(1), HOURS(1),
               READ_WHEN_NEEDED),
};

#define SECTION(k, req, fields)                                                                    \
    {                                                                                              \
        (k), (req), false, 0, {0, 0}, (fields), CL_ARRAY_LEN(fields)                               \
    }

static const section_t sections[] = {
    SECTION("kafka", true, kafka_fields),
    SECTION("mariadb", true, mariadb_fields),
    SECTION("ingest", false, ingest_fields),
    SECTION("aggregation", false, aggregation_fields),
    /* A sink appears or goes with the section: the indexer restarts. */
    {"elasticsearch", false, true, OFF(elasticsearch.present), RESTARTS(CL_PART_INDEXER),
     elasticsearch_fields, CL_ARRAY_LEN(elasticsearch_fields)},
    SECTION("admin", false, admin_fields),
    SECTION("log", false, log_fields),
    SECTION("retention", false, retention_fields),
    SECTION("shutdown", false, shutdown_fields),
};

static const char *const event_field_names[CL_FIELD_COUNT] = CL_EVENT_FIELD_NAMES;

/* Properties clickloop sets itself: offsets are stored only after the
 * database commit and committed by librdkafka from there, its events and
 * logs are served on the loop, and the group and brokers have their own
 * settings. (Callbacks cannot be set as strings at all: librdkafka refuses
 * them, and --check-config reports that.) */
static const struct {
    const char *name;
    const char *instead;
} managed_kafka_properties[] = {
    {"enable.auto.offset.store", "clickloop stores offsets only after the database commit"},
    {"enable.auto.commit",
     "clickloop commits the offsets it stored (turned off, nothing would ever be committed)"},
    {"enable.partition.eof", "clickloop consumes without end-of-partition events"},
    {"log.queue", "clickloop serves librdkafka's logs on its own loop"},
    {"group.id", "use kafka.group_id"},
    {"bootstrap.servers", "use kafka.brokers"},
    {"metadata.broker.list", "use kafka.brokers"},
};

/* Kafka properties whose values are credentials. `ssl.key.pem` holds a
 * private key, so it is treated like a password too. */
static bool kafka_property_is_secret(const char *name)
{
    return strcasestr(name, "password") != NULL || strcasestr(name, "secret") != NULL ||
           strcasestr(name, "sasl.oauthbearer.config") != NULL ||
           strcasestr(name, "ssl.key.pem") != NULL;
}

#define AT(config, offset, type) ((type *)(void *)((char *)(config) + (offset)))
#define AT_CONST(config, offset, type)                                                             \
    ((type const *)(const void *)((const char *)(config) + (offset)))

/* ---- string rules ------------------------------------------------------ */

static bool rule_host(const char *s, char *why, size_t why_len)
{
    if (strlen(s) > 255) {
        snprintf(why, why_len, "must be at most 255 characters");
        return false;
    }
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p <= ' ' || *p == 0x7f || *p == '/') {
            snprintf(why, why_len,
                     "must be an IP address or a host name (use mariadb.socket for a unix "
                     "socket)");
            return false;
        }
    }
    return true;
}

static bool rule_socket_path(const char *s, char *why, size_t why_len)
{
    /* connect(2) takes the path in sun_path, NUL included. */
    size_t limit = sizeof(((struct sockaddr_un *)NULL)->sun_path) - 1;
    if (s[0] != '/') {
        snprintf(why, why_len, "must be an absolute path");
        return false;
    }
    if (strlen(s) > limit) {
        snprintf(why, why_len, "must be at most %zu bytes (the limit of a unix socket path)",
                 limit);
        return false;
    }
    return true;
}

static bool rule_database(const char *s, char *why, size_t why_len)
{
    if (strlen(s) > 64) {
        snprintf(why, why_len, "must be at most 64 characters");
        return false;
    }
    for (const char *p = s; *p; p++) {
        bool ok = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                  (*p >= '0' && *p <= '9') || *p == '_' || *p == '$';
        if (!ok) {
            snprintf(why, why_len, "may only contain letters, digits, _ and $");
            return false;
        }
    }
    return true;
}

static bool rule_url(const char *s, char *why, size_t why_len)
{
    const char *rest = NULL;
    if (strncmp(s, "http://", 7) == 0)
        rest = s + 7;
    else if (strncmp(s, "https://", 8) == 0)
        rest = s + 8;
    if (rest == NULL || *rest == '\0' || *rest == '/') {
        snprintf(why, why_len, "must be an http:// or https:// URL with a host");
        return false;
    }
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p <= ' ' || *p == 0x7f) {
            snprintf(why, why_len, "must not contain spaces or control characters");
            return false;
        }
    }
    return true;
}

/* Elasticsearch's index name rules, applied to the name with its date
 * patterns filled in (each becomes digits). */
static bool rule_index(const char *s, char *why, size_t why_len)
{
    size_t filled_len = 0;
    if (strchr("-_+", s[0]) != NULL) {
        snprintf(why, why_len, "must not start with -, _ or +");
        return false;
    }
    if (strcmp(s, ".") == 0 || strcmp(s, "..") == 0) {
        snprintf(why, why_len, "must not be \".\" or \"..\"");
        return false;
    }
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '%') {
            if (p[1] == 'Y') {
                filled_len += 4;
            } else if (p[1] == 'm' || p[1] == 'd') {
                filled_len += 2;
            } else {
                snprintf(why, why_len, "may only use the date patterns %%Y, %%m and %%d");
                return false;
            }
            p++;
        } else if (*p >= 'A' && *p <= 'Z') {
            snprintf(why, why_len, "must be lowercase");
            return false;
        } else if (*p <= ' ' || *p == 0x7f || strchr("\\/*?\"<>|,#:", *p) != NULL) {
            snprintf(why, why_len,
                     "must not contain spaces, control characters or any of \\ / * ? \" < > | , "
                     "# :");
            return false;
        } else {
            filled_len++;
        }
    }
    if (filled_len > 255) {
        snprintf(why, why_len, "must be at most 255 bytes long once the date is filled in");
        return false;
    }
    return true;
}

/* An RFC 6901 pointer to one value inside the event. */
static bool rule_event_pointer(const char *s, char *why, size_t why_len)
{
    if (s[0] == '\0') {
        snprintf(why, why_len, "must not be \"\", which points to the whole event");
        return false;
    }
    if (s[0] != '/') {
        snprintf(why, why_len, "must be a JSON Pointer starting with \"/\"");
        return false;
    }
    for (const char *p = s; *p; p++) {
        if (*p == '~' && p[1] != '0' && p[1] != '1') {
            snprintf(why, why_len,
                     "is not a valid JSON Pointer: \"~\" must be followed by 0 or 1 (~0 stands "
                     "for \"~\", ~1 for \"/\")");
            return false;
        }
    }
    return true;
}

/* ---- loader: messages and paths ---------------------------------------- */

typedef struct {
    const char *source;
    cl_config_env_lookup_t env_lookup;
    void *env_lookup_data;
    cl_config_t *config;
    cl_buf_t path; /* JSON path of the value being read */
    cl_config_errors_t errors;
    char **error_paths; /* parallel to errors.messages */
} loader_t;

/* A string value as written and after environment expansion. */
typedef struct {
    const char *raw;
    char *value; /* owned */
    bool expanded;
} text_t;

static const char *current_path(const loader_t *ld)
{
    return ld->path.len > 0 ? ld->path.data : "(top level)";
}

static void vadd_error_at(loader_t *ld, const char *where, const char *fmt, va_list ap)
{
    cl_buf_t b;
    cl_buf_init(&b);
    if (where != NULL)
        cl_buf_appendf(&b, "%s: %s: ", ld->source, where);
    else
        cl_buf_appendf(&b, "%s: ", ld->source);
    cl_buf_vappendf(&b, fmt, ap);
    size_t n = ld->errors.count + 1;
    ld->errors.messages = cl_xrealloc(ld->errors.messages, n * sizeof(char *));
    ld->error_paths = cl_xrealloc(ld->error_paths, n * sizeof(char *));
    ld->errors.messages[n - 1] = cl_buf_steal(&b, NULL);
    ld->error_paths[n - 1] = cl_xstrdup(where != NULL ? where : "");
    ld->errors.count = n;
}

/* where: a JSON path or a location in the text; NULL for the file itself. */
__attribute__((format(printf, 3, 4))) static void add_error_at(loader_t *ld, const char *where,
                                                               const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vadd_error_at(ld, where, fmt, ap);
    va_end(ap);
}

__attribute__((format(printf, 2, 3))) static void add_error(loader_t *ld, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vadd_error_at(ld, current_path(ld), fmt, ap);
    va_end(ap);
}

/* True when a problem was reported at path or at a value containing it, so
 * rules across fields stay quiet about values that are already wrong. (A
 * problem with the file itself leaves no configuration to check.) */
static bool path_failed(const loader_t *ld, const char *path)
{
    for (size_t i = 0; i < ld->errors.count; i++) {
        const char *p = ld->error_paths[i];
        size_t len = strlen(p);
        if (strncmp(path, p, len) == 0 &&
            (path[len] == '\0' || path[len] == '.' || path[len] == '['))
            return true;
    }
    return false;
}

static bool is_simple_key(const char *key)
{
    if (*key == '\0')
        return false;
    for (const char *p = key; *p; p++) {
        bool ok = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                  (*p >= '0' && *p <= '9') || *p == '_';
        if (!ok)
            return false;
    }
    return true;
}

/* JSON-quote s, cut to SHOWN_STRING_MAX bytes on a character boundary. */
static void append_quoted(cl_buf_t *b, const char *s)
{
    size_t len = strlen(s);
    bool cut = len > SHOWN_STRING_MAX;
    if (cut) {
        len = SHOWN_STRING_MAX;
        while (len > 0 && ((unsigned char)s[len] & 0xC0) == 0x80)
            len--;
    }
    cl_buf_append_char(b, '"');
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\')
            cl_buf_appendf(b, "\\%c", c);
        else if (c < 0x20 || c == 0x7f)
            cl_buf_appendf(b, "\\u%04x", c);
        else
            cl_buf_append_char(b, (char)c);
    }
    cl_buf_append_str(b, cut ? "...\"" : "\"");
}

/* Paths read like `kafka.topics[1]`; keys that are not plain words are
 * quoted, as in `kafka.properties["sasl.password"]`. */
static size_t path_push_key(loader_t *ld, const char *key)
{
    size_t mark = ld->path.len;
    if (is_simple_key(key)) {
        if (mark > 0)
            cl_buf_append_char(&ld->path, '.');
        cl_buf_append_str(&ld->path, key);
    } else {
        cl_buf_append_char(&ld->path, '[');
        append_quoted(&ld->path, key);
        cl_buf_append_char(&ld->path, ']');
    }
    return mark;
}

static size_t path_push_index(loader_t *ld, size_t index)
{
    size_t mark = ld->path.len;
    cl_buf_appendf(&ld->path, "[%zu]", index);
    return mark;
}

static void path_pop(loader_t *ld, size_t mark)
{
    ld->path.len = mark;
    ld->path.data[mark] = '\0';
}

static const char *json_type_phrase(json_object *v)
{
    switch (json_object_get_type(v)) {
    case json_type_null:
        return "null";
    case json_type_boolean:
        return "a boolean";
    case json_type_int:
    case json_type_double:
        return "a number";
    case json_type_string:
        return json_object_get_string_len(v) == 0 ? "an empty string" : "a string";
    case json_type_array:
        return json_object_array_length(v) == 0 ? "an empty array" : "an array";
    case json_type_object:
        return "an object";
    }
    return "a value";
}

/* What a message shows of a value as written in the file. */
static void describe_json(cl_buf_t *b, json_object *v, bool secret)
{
    switch (json_object_get_type(v)) {
    case json_type_boolean:
    case json_type_int:
    case json_type_double:
        if (secret)
            cl_buf_append_str(b, json_type_phrase(v));
        else
            cl_buf_append_str(b, json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN));
        break;
    case json_type_string:
        if (secret)
            cl_buf_append_str(b, json_type_phrase(v));
        else
            append_quoted(b, json_object_get_string(v));
        break;
    case json_type_null:
    case json_type_array:
    case json_type_object:
        cl_buf_append_str(b, json_type_phrase(v));
        break;
    }
}

/* What a message shows of a string after expansion: the text as written,
 * never what the environment put into it. */
static void describe_text(cl_buf_t *b, const text_t *t, bool secret)
{
    if (secret)
        cl_buf_append_str(b, t->value[0] == '\0' ? "an empty string" : "a string");
    else
        append_quoted(b, t->raw);
    if (t->expanded)
        cl_buf_append_str(b, " after environment expansion");
}

/* Report "<problem>, got <value>". */
__attribute__((format(printf, 4, 5))) static void fail_got_json(loader_t *ld, json_object *v,
                                                                bool secret, const char *fmt, ...)
{
    cl_buf_t b;
    cl_buf_init(&b);
    va_list ap;
    va_start(ap, fmt);
    cl_buf_vappendf(&b, fmt, ap);
    va_end(ap);
    cl_buf_append_str(&b, ", got ");
    describe_json(&b, v, secret);
    add_error(ld, "%s", b.data);
    cl_buf_free(&b);
}

__attribute__((format(printf, 4, 5))) static void fail_got_text(loader_t *ld, const text_t *t,
                                                                bool secret, const char *fmt, ...)
{
    cl_buf_t b;
    cl_buf_init(&b);
    va_list ap;
    va_start(ap, fmt);
    cl_buf_vappendf(&b, fmt, ap);
    va_end(ap);
    cl_buf_append_str(&b, ", got ");
    describe_text(&b, t, secret);
    add_error(ld, "%s", b.data);
    cl_buf_free(&b);
}

/* ---- environment expansion --------------------------------------------- */

static bool is_env_name(const char *s, size_t len)
{
    if (len == 0 || (s[0] >= '0' && s[0] <= '9'))
        return false;
    for (size_t i = 0; i < len; i++) {
        bool ok = (s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
                  (s[i] >= '0' && s[i] <= '9') || s[i] == '_';
        if (!ok)
            return false;
    }
    return true;
}

/* Replace each ${NAME} by the variable's value; "$${" is a literal "${".
 * Reports every unset variable in the string, not only the first. */
static bool expand_env(loader_t *ld, const char *raw, bool secret, text_t *out)
{
    cl_buf_t b;
    cl_buf_init(&b);
    /* Appending nothing still allocates and terminates: an empty value
     * must come out as "", and cl_buf_steal() of a never-written buffer
     * hands back unterminated memory. */
    cl_buf_append(&b, "", 0);
    bool ok = true;
    const char *p = raw;
    while (*p != '\0') {
        if (p[0] == '$' && p[1] == '$' && p[2] == '{') {
            cl_buf_append_str(&b, "${");
            p += 3;
            continue;
        }
        if (!(p[0] == '$' && p[1] == '{')) {
            cl_buf_append_char(&b, *p++);
            continue;
        }
        const char *name = p + 2;
        const char *end = strchr(name, '}');
        if (end == NULL) {
            add_error(ld, "unterminated \"${\" (write \"$${\" for a literal \"${\")");
            ok = false;
            break;
        }
        size_t name_len = (size_t)(end - name);
        if (!is_env_name(name, name_len)) {
            /* The text between the braces may be part of a secret that was
             * meant literally. */
            if (secret)
                add_error(ld, "invalid environment variable name after \"${\" (write \"$${\" "
                              "for a literal \"${\")");
            else
                add_error(ld,
                          "invalid environment variable name \"%.*s\" (names are letters, "
                          "digits and _; write \"$${\" for a literal \"${\")",
                          (int)(name_len > SHOWN_STRING_MAX ? SHOWN_STRING_MAX : name_len), name);
            ok = false;
        } else {
            char *var = cl_xstrndup(name, name_len);
            const char *value = ld->env_lookup(var, ld->env_lookup_data);
            if (value == NULL) {
                add_error(ld, "environment variable %s is not set", var);
                ok = false;
            } else {
                cl_buf_append_str(&b, value);
                out->expanded = true;
            }
            free(var);
        }
        p = end + 1;
    }
    if (!ok) {
        cl_buf_free(&b);
        return false;
    }
    out->value = cl_buf_steal(&b, NULL);
    return true;
}

/* Type-check a string value and expand it. On success the caller owns
 * out->value. */
static bool read_string(loader_t *ld, json_object *v, bool secret, const char *expected,
                        text_t *out)
{
    out->raw = NULL;
    out->value = NULL;
    out->expanded = false;
    if (!json_object_is_type(v, json_type_string)) {
        fail_got_json(ld, v, secret, "expected %s", expected);
        return false;
    }
    const char *raw = json_object_get_string(v);
    /* A "\u0000" escape would silently cut the value in every C API. */
    if (strlen(raw) != (size_t)json_object_get_string_len(v)) {
        add_error(ld, "must not contain a NUL character (\\u0000)");
        return false;
    }
    out->raw = raw;
    return expand_env(ld, raw, secret, out);
}

/* ---- field readers ------------------------------------------------------ */

static bool check_string(loader_t *ld, const field_t *f, const text_t *t)
{
    bool secret = (f->flags & F_SECRET) != 0;
    char why[256];
    if (!(f->flags & F_ALLOW_EMPTY) && t->value[0] == '\0') {
        fail_got_text(ld, t, secret, "expected a non-empty string");
        return false;
    }
    if (f->rule != NULL && !f->rule(t->value, why, sizeof why)) {
        fail_got_text(ld, t, secret, "%s", why);
        return false;
    }
    return true;
}

/* "http://host/" -> "http://host", leaving the scheme's "//" alone. */
static void trim_trailing_slashes(char *s)
{
    size_t len = strlen(s);
    while (len > 0 && s[len - 1] == '/' && !(len >= 3 && memcmp(s + len - 3, "://", 3) == 0))
        s[--len] = '\0';
}

static void read_string_field(loader_t *ld, const field_t *f, json_object *v)
{
    char **dst = AT(ld->config, f->offset, char *);
    if (v == NULL) {
        *dst = f->default_text != NULL ? cl_xstrdup(f->default_text) : NULL;
        return;
    }
    text_t t;
    const char *expected = (f->flags & F_ALLOW_EMPTY) ? "a string" : "a non-empty string";
    if (!read_string(ld, v, (f->flags & F_SECRET) != 0, expected, &t))
        return;
    if (!check_string(ld, f, &t)) {
        free(t.value);
        return;
    }
    *dst = t.value;
}

static void read_bool_field(loader_t *ld, const field_t *f, json_object *v)
{
    bool *dst = AT(ld->config, f->offset, bool);
    if (v == NULL) {
        *dst = f->default_number != 0;
        return;
    }
    if (!json_object_is_type(v, json_type_boolean)) {
        fail_got_json(ld, v, false, "expected true or false");
        return;
    }
    *dst = json_object_get_boolean(v) != 0;
}

/* Integers come only from JSON numbers, never from (expanded) strings, so
 * showing them is always safe. */
static void read_integer_field(loader_t *ld, const field_t *f, json_object *v)
{
    uint64_t n = f->default_number;
    if (v != NULL) {
        if (!json_object_is_type(v, json_type_int)) {
            fail_got_json(ld, v, false, "expected an integer");
            return;
        }
        /* json-c saturates values beyond int64 at INT64_MAX/MIN, which
         * still fails the range check. */
        int64_t i = json_object_get_int64(v);
        if (i < 0 || (uint64_t)i < f->min || (uint64_t)i > f->max) {
            fail_got_json(ld, v, false, "must be between %" PRIu64 " and %" PRIu64, f->min, f->max);
            return;
        }
        n = (uint64_t)i;
    }
    if (f->kind == KIND_PORT)
        *AT(ld->config, f->offset, uint16_t) = (uint16_t)n;
    else
        *AT(ld->config, f->offset, uint32_t) = (uint32_t)n;
}

static void fail_range(loader_t *ld, const text_t *t, bool is_size, uint64_t min, uint64_t max)
{
    char lo[32], hi[32];
    if (is_size) {
        format_size(min, lo, sizeof lo);
        format_size(max, hi, sizeof hi);
    } else {
        format_duration(min, lo, sizeof lo);
        format_duration(max, hi, sizeof hi);
    }
    fail_got_text(ld, t, false, "must be between %s and %s", lo, hi);
}

/* Reads a duration in [min, max]. On success, when keep is not NULL, the
 * string is handed to the caller (who frees keep->value) for later
 * messages about the same value. */
static bool read_duration(loader_t *ld, json_object *v, uint64_t min, uint64_t max, uint64_t *out,
                          text_t *keep)
{
    text_t t;
    if (!read_string(ld, v, false, DURATION_EXAMPLES, &t))
        return false;
    uint64_t ms = 0;
    bool ok = false;
    if (parse_duration(t.value, &ms) != CL_OK)
        fail_got_text(ld, &t, false, "expected " DURATION_EXAMPLES);
    else if (ms < min || ms > max)
        fail_range(ld, &t, false, min, max);
    else
        ok = true;
    if (ok)
        *out = ms;
    if (ok && keep != NULL)
        *keep = t;
    else
        free(t.value);
    return ok;
}

static void read_duration_field(loader_t *ld, const field_t *f, json_object *v)
{
    uint64_t *dst = AT(ld->config, f->offset, uint64_t);
    if (v == NULL) {
        if (parse_duration(f->default_text, dst) != CL_OK)
            cl_panic("config: the default of %s is not a duration", f->key);
        return;
    }
    read_duration(ld, v, f->min, f->max, dst, NULL);
}

static void read_size_field(loader_t *ld, const field_t *f, json_object *v)
{
    uint64_t *dst = AT(ld->config, f->offset, uint64_t);
    if (v == NULL) {
        *dst = f->default_number;
        return;
    }
    uint64_t bytes = 0;
    if (json_object_is_type(v, json_type_int)) {
        int64_t i = json_object_get_int64(v);
        char lo[32], hi[32];
        if (i < 0 || (uint64_t)i < f->min || (uint64_t)i > f->max) {
            format_size(f->min, lo, sizeof lo);
            format_size(f->max, hi, sizeof hi);
            fail_got_json(ld, v, false, "must be between %s and %s", lo, hi);
            return;
        }
        bytes = (uint64_t)i;
    } else {
        text_t t;
        if (!read_string(ld, v, false, SIZE_EXAMPLES, &t))
            return;
        if (parse_size(t.value, &bytes) != CL_OK) {
            fail_got_text(ld, &t, false, "expected " SIZE_EXAMPLES);
            free(t.value);
            return;
        }
        if (bytes < f->min || bytes > f->max) {
            fail_range(ld, &t, true, f->min, f->max);
            free(t.value);
            return;
        }
        free(t.value);
    }
    *dst = bytes;
}

static void read_string_list_field(loader_t *ld, const field_t *f, json_object *v)
{
    char ***dst = AT(ld->config, f->offset, char **);
    size_t *count = AT(ld->config, f->count_offset, size_t);
    /* Every list of strings is required: v is never NULL here. */
    if (v == NULL)
        return;
    if (!json_object_is_type(v, json_type_array) || json_object_array_length(v) == 0) {
        fail_got_json(ld, v, false, "expected a non-empty array of strings");
        return;
    }
    size_t n = json_object_array_length(v);
    char *parent = cl_xstrdup(current_path(ld));
    *dst = cl_xcalloc(n, sizeof(char *));
    *count = n;
    for (size_t i = 0; i < n; i++) {
        size_t mark = path_push_index(ld, i);
        text_t t;
        if (read_string(ld, json_object_array_get_idx(v, i), false, "a non-empty string", &t)) {
            if (f->flags & F_TRIM_SLASH)
                trim_trailing_slashes(t.value);
            if (!check_string(ld, f, &t)) {
                free(t.value);
            } else {
                for (size_t j = 0; j < i; j++) {
                    if ((*dst)[j] != NULL && strcmp((*dst)[j], t.value) == 0) {
                        fail_got_text(ld, &t, false, "duplicate of %s[%zu]", parent, j);
                        break;
                    }
                }
                (*dst)[i] = t.value;
            }
        }
        path_pop(ld, mark);
    }
    free(parent);
}

static void read_duration_list_field(loader_t *ld, const field_t *f, json_object *v)
{
    uint64_t **dst = AT(ld->config, f->offset, uint64_t *);
    size_t *count = AT(ld->config, f->count_offset, size_t);
    if (v == NULL) {
        *dst = cl_xcalloc(1, sizeof(uint64_t));
        *count = 1;
        if (parse_duration(f->default_text, &(*dst)[0]) != CL_OK)
            cl_panic("config: the default of %s is not a duration", f->key);
        return;
    }
    if (!json_object_is_type(v, json_type_array) || json_object_array_length(v) == 0) {
        fail_got_json(ld, v, false, "expected a non-empty array of durations");
        return;
    }
    size_t n = json_object_array_length(v);
    char *parent = cl_xstrdup(current_path(ld));
    *dst = cl_xcalloc(n, sizeof(uint64_t));
    *count = n;
    for (size_t i = 0; i < n; i++) {
        size_t mark = path_push_index(ld, i);
        text_t t;
        uint64_t ms = 0;
        if (read_duration(ld, json_object_array_get_idx(v, i), f->min, f->max, &ms, &t)) {
            if ((f->flags & F_WINDOW) && MS_PER_DAY % ms != 0 && ms % MS_PER_DAY != 0) {
                fail_got_text(ld, &t, false,
                              "must divide 1d evenly (as 1m, 15m, 1h, 6h do) or be a whole "
                              "number of days");
            } else {
                for (size_t j = 0; j < i; j++) {
                    if ((*dst)[j] == ms) {
                        fail_got_text(ld, &t, false, "the same duration as %s[%zu]", parent, j);
                        break;
                    }
                }
                (*dst)[i] = ms;
            }
            free(t.value);
        }
        path_pop(ld, mark);
    }
    free(parent);
}

static void read_enum_field(loader_t *ld, const field_t *f, json_object *v)
{
    cl_buf_t choices;
    cl_buf_init(&choices);
    for (size_t i = 0; f->names[i] != NULL; i++)
        cl_buf_appendf(&choices, "%s%s", i > 0 ? ", " : "", f->names[i]);

    const char *name = f->default_text;
    text_t t = {0};
    if (v != NULL) {
        cl_buf_t expected;
        cl_buf_init(&expected);
        cl_buf_appendf(&expected, "one of %s", choices.data);
        bool ok = read_string(ld, v, false, expected.data, &t);
        cl_buf_free(&expected);
        if (!ok) {
            cl_buf_free(&choices);
            return;
        }
        name = t.value;
    }
    int index = -1;
    for (int i = 0; f->names[i] != NULL; i++) {
        if (strcmp(name, f->names[i]) == 0)
            index = i;
    }
    if (index < 0)
        fail_got_text(ld, &t, false, "expected one of %s", choices.data);
    else
        memcpy(AT(ld->config, f->offset, char), &index, sizeof index);
    free(t.value);
    cl_buf_free(&choices);
}

static void read_property(loader_t *ld, const char *name, json_object *v)
{
    cl_config_kafka_t *k = &ld->config->kafka;
    if (name[0] == '\0') {
        add_error(ld, "property name must not be empty");
        return;
    }
    for (size_t i = 0; i < CL_ARRAY_LEN(managed_kafka_properties); i++) {
        if (strcmp(name, managed_kafka_properties[i].name) == 0) {
            add_error(ld, "set by clickloop; %s", managed_kafka_properties[i].instead);
            return;
        }
    }
    bool secret = kafka_property_is_secret(name);
    char *value = NULL;
    switch (json_object_get_type(v)) {
    case json_type_string: {
        text_t t;
        if (!read_string(ld, v, secret, "a string, number or boolean", &t))
            return;
        value = t.value;
        break;
    }
    case json_type_int:
    case json_type_double:
    case json_type_boolean:
        value = cl_xstrdup(json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN));
        break;
    case json_type_null:
    case json_type_array:
    case json_type_object:
        fail_got_json(ld, v, secret, "expected a string, number or boolean");
        return;
    }
    cl_config_kafka_property_t *p = &k->properties[k->property_count++];
    p->name = cl_xstrdup(name);
    p->value = value;
}

static void read_properties_field(loader_t *ld, const field_t *f, json_object *v)
{
    CL_UNUSED(f);
    if (v == NULL)
        return;
    if (!json_object_is_type(v, json_type_object)) {
        fail_got_json(ld, v, false, "expected an object of librdkafka properties");
        return;
    }
    ld->config->kafka.properties =
        cl_xcalloc((size_t)json_object_object_length(v), sizeof(cl_config_kafka_property_t));
    json_object_object_foreach(v, name, value)
    {
        size_t mark = path_push_key(ld, name);
        read_property(ld, name, value);
        path_pop(ld, mark);
    }
}

static int event_field_index(const char *name)
{
    for (int i = 0; i < CL_FIELD_COUNT; i++) {
        if (strcmp(name, event_field_names[i]) == 0)
            return i;
    }
    return -1;
}

static void read_mapping_entry(loader_t *ld, const char *name, json_object *v)
{
    int index = event_field_index(name);
    if (index < 0) {
        cl_buf_t known;
        cl_buf_init(&known);
        for (int i = 0; i < CL_FIELD_COUNT; i++)
            cl_buf_appendf(&known, "%s%s", i > 0 ? ", " : "", event_field_names[i]);
        add_error(ld, "unknown event field (known fields: %s)", known.data);
        cl_buf_free(&known);
        return;
    }
    text_t t;
    char why[256];
    if (!read_string(ld, v, false, "a JSON Pointer string such as \"/user_id\"", &t))
        return;
    if (!rule_event_pointer(t.value, why, sizeof why)) {
        fail_got_text(ld, &t, false, "%s", why);
        free(t.value);
        return;
    }
    ld->config->ingest.mapping[index] = t.value;
}

static void read_mapping_field(loader_t *ld, const field_t *f, json_object *v)
{
    CL_UNUSED(f);
    char **mapping = ld->config->ingest.mapping;
    if (v != NULL && !json_object_is_type(v, json_type_object)) {
        fail_got_json(ld, v, false, "expected an object of event field names to JSON Pointers");
    } else if (v != NULL) {
        json_object_object_foreach(v, name, pointer)
        {
            size_t mark = path_push_key(ld, name);
            read_mapping_entry(ld, name, pointer);
            path_pop(ld, mark);
        }
    }
    for (int i = 0; i < CL_FIELD_COUNT; i++) {
        if (mapping[i] == NULL) {
            size_t len = strlen(event_field_names[i]) + 2;
            mapping[i] = cl_xmalloc(len);
            snprintf(mapping[i], len, "/%s", event_field_names[i]);
        }
    }
}

/* "host:port" or "[v6]:port"; the host must be an IP address because the
 * admin server binds it directly, without name resolution. */
static bool split_listen(const char *s, char **host, uint16_t *port, char *why, size_t why_len)
{
    const char *host_start, *host_end, *colon;
    int family;
    if (s[0] == '[') {
        host_start = s + 1;
        host_end = strchr(host_start, ']');
        if (host_end == NULL || host_end[1] != ':')
            goto bad_form;
        colon = host_end + 1;
        family = AF_INET6;
    } else {
        colon = strrchr(s, ':');
        if (colon == NULL)
            goto bad_form;
        host_start = s;
        host_end = colon;
        if (memchr(host_start, ':', (size_t)(host_end - host_start)) != NULL) {
            snprintf(why, why_len, "must write an IPv6 address in brackets, as in \"[::1]:9400\"");
            return false;
        }
        family = AF_INET;
    }
    unsigned long p = 0;
    const char *digits = colon + 1;
    if (*digits == '\0' || strlen(digits) > 5 || strspn(digits, "0123456789") != strlen(digits))
        goto bad_form;
    p = strtoul(digits, NULL, 10);
    /* 0: the system picks a free port, which the start-up log line names. */
    if (p > 65535) {
        snprintf(why, why_len, "port must be between 0 and 65535");
        return false;
    }
    char *h = cl_xstrndup(host_start, (size_t)(host_end - host_start));
    unsigned char addr[sizeof(struct in6_addr)];
    if (inet_pton(family, h, addr) != 1) {
        free(h);
        snprintf(why, why_len,
                 "host must be an IP address (it is bound without name resolution; use "
                 "0.0.0.0 or [::] for all interfaces)");
        return false;
    }
    *host = h;
    *port = (uint16_t)p;
    return true;

bad_form:
    snprintf(why, why_len, "expected \"host:port\", such as \"127.0.0.1:9400\" or \"[::1]:9400\"");
    return false;
}

static void read_listen_field(loader_t *ld, const field_t *f, json_object *v)
{
    cl_config_admin_t *admin = AT(ld->config, f->offset, cl_config_admin_t);
    if (v == NULL)
        return; /* no admin server */
    text_t t;
    char why[256];
    char *host = NULL;
    uint16_t port = 0;
    if (!read_string(ld, v, false, "a string \"host:port\"", &t))
        return;
    if (!split_listen(t.value, &host, &port, why, sizeof why)) {
        fail_got_text(ld, &t, false, "%s", why);
        free(t.value);
        return;
    }
    admin->enabled = true;
    admin->listen = t.value;
    admin->host = host;
    admin->port = port;
}

static void read_field(loader_t *ld, const field_t *f, json_object *v)
{
    switch (f->kind) {
    case KIND_STRING:
        read_string_field(ld, f, v);
        break;
    case KIND_BOOL:
        read_bool_field(ld, f, v);
        break;
    case KIND_PORT:
    case KIND_INTEGER:
        read_integer_field(ld, f, v);
        break;
    case KIND_DURATION:
        read_duration_field(ld, f, v);
        break;
    case KIND_SIZE:
        read_size_field(ld, f, v);
        break;
    case KIND_STRING_LIST:
        read_string_list_field(ld, f, v);
        break;
    case KIND_DURATION_LIST:
        read_duration_list_field(ld, f, v);
        break;
    case KIND_ENUM:
        read_enum_field(ld, f, v);
        break;
    case KIND_PROPERTIES:
        read_properties_field(ld, f, v);
        break;
    case KIND_MAPPING:
        read_mapping_field(ld, f, v);
        break;
    case KIND_LISTEN:
        read_listen_field(ld, f, v);
        break;
    }
}

/* ---- sections ------------------------------------------------------------ */

/* Reads the keys present in document order, then fills or reports the
 * missing ones in table order. obj NULL: the section is absent. */
static void read_section(loader_t *ld, const section_t *s, json_object *obj)
{
    bool seen[32] = {false};
    _Static_assert(CL_ARRAY_LEN(elasticsearch_fields) <= 32, "seen[] is large enough");
    if (obj != NULL) {
        json_object_object_foreach(obj, key, value)
        {
            size_t mark = path_push_key(ld, key);
            size_t i = 0;
            while (i < s->field_count && strcmp(s->fields[i].key, key) != 0)
                i++;
            if (i == s->field_count) {
                add_error(ld, "unknown key");
            } else {
                seen[i] = true;
                read_field(ld, &s->fields[i], value);
            }
            path_pop(ld, mark);
        }
    }
    for (size_t i = 0; i < s->field_count; i++) {
        if (seen[i])
            continue;
        size_t mark = path_push_key(ld, s->fields[i].key);
        if (s->fields[i].flags & F_REQUIRED)
            add_error(ld, "required key is missing");
        else
            read_field(ld, &s->fields[i], NULL);
        path_pop(ld, mark);
    }
}

static void check_not_shorter(loader_t *ld, const char *min_path, uint64_t min,
                              const char *max_path, uint64_t max)
{
    /* No values in this message: either may have come from the
     * environment. */
    if (!path_failed(ld, min_path) && !path_failed(ld, max_path) && max < min)
        add_error_at(ld, max_path, "must not be shorter than %s", min_path);
}

static void check_cross_field_rules(loader_t *ld)
{
    const cl_config_t *c = ld->config;
    check_not_shorter(ld, "mariadb.reconnect_min_backoff", c->mariadb.reconnect_min_backoff_ms,
                      "mariadb.reconnect_max_backoff", c->mariadb.reconnect_max_backoff_ms);

    if (!path_failed(ld, "ingest.batch_max_events") &&
        !path_failed(ld, "ingest.max_in_flight_events") &&
        c->ingest.max_in_flight_events < c->ingest.batch_max_events)
        add_error_at(ld, "ingest.max_in_flight_events",
                     "must be at least ingest.batch_max_events (%" PRIu32 "), got %" PRIu32,
                     c->ingest.batch_max_events, c->ingest.max_in_flight_events);

    if (!path_failed(ld, "aggregation.enabled") && !path_failed(ld, "elasticsearch") &&
        c->aggregation.enabled && !c->elasticsearch.present)
        add_error_at(ld, "elasticsearch",
                     "required key is missing (needed when aggregation.enabled is true)");

    const cl_config_elasticsearch_t *es = &c->elasticsearch;
    if (!es->present)
        return;
    check_not_shorter(ld, "elasticsearch.retry_min_backoff", es->retry_min_backoff_ms,
                      "elasticsearch.retry_max_backoff", es->retry_max_backoff_ms);
    if (path_failed(ld, "elasticsearch.username") || path_failed(ld, "elasticsearch.password") ||
        path_failed(ld, "elasticsearch.api_key"))
        return;
    if (es->username != NULL && es->password == NULL)
        add_error_at(ld, "elasticsearch.password",
                     "required key is missing (needed when elasticsearch.username is set)");
    if (es->password != NULL && es->username == NULL)
        add_error_at(ld, "elasticsearch.username",
                     "required key is missing (needed when elasticsearch.password is set)");
    if (es->api_key != NULL && (es->username != NULL || es->password != NULL))
        add_error_at(ld, "elasticsearch.api_key",
                     "cannot be combined with elasticsearch.username and "
                     "elasticsearch.password; use one kind of authentication");
}

static void read_root(loader_t *ld, json_object *root)
{
    if (!json_object_is_type(root, json_type_object)) {
        fail_got_json(ld, root, false, "expected an object");
        return;
    }
    bool seen[CL_ARRAY_LEN(sections)] = {false};
    json_object_object_foreach(root, key, value)
    {
        size_t mark = path_push_key(ld, key);
        size_t i = 0;
        while (i < CL_ARRAY_LEN(sections) && strcmp(sections[i].key, key) != 0)
            i++;
        if (i == CL_ARRAY_LEN(sections)) {
            add_error(ld, "unknown key");
        } else {
            seen[i] = true;
            if (!json_object_is_type(value, json_type_object)) {
                fail_got_json(ld, value, false, "expected an object");
            } else {
                if (sections[i].has_presence)
                    *AT(ld->config, sections[i].presence_offset, bool) = true;
                read_section(ld, &sections[i], value);
            }
        }
        path_pop(ld, mark);
    }
    for (size_t i = 0; i < CL_ARRAY_LEN(sections); i++) {
        if (seen[i] || sections[i].has_presence)
            continue;
        size_t mark = path_push_key(ld, sections[i].key);
        if (sections[i].required)
            add_error(ld, "required key is missing");
        else
            read_section(ld, &sections[i], NULL);
        path_pop(ld, mark);
    }
    check_cross_field_rules(ld);

    cl_config_elasticsearch_t *es = &ld->config->elasticsearch;
    es->index_has_date = es->index != NULL && strchr(es->index, '%') != NULL;
}

/* ---- JSON text ------------------------------------------------------------ */

/* 1-based line and column (in characters, not bytes) of a byte offset. */
static void text_location(const char *text, size_t offset, unsigned *line, unsigned *column)
{
    *line = 1;
    *column = 1;
    for (size_t i = 0; i < offset; i++) {
        if (text[i] == '\n') {
            (*line)++;
            *column = 1;
        } else if (((unsigned char)text[i] & 0xC0) != 0x80) {
            (*column)++;
        }
    }
}

__attribute__((format(printf, 4, 5))) static void
add_syntax_error(loader_t *ld, const char *text, size_t offset, const char *fmt, ...)
{
    unsigned line, column;
    text_location(text, offset, &line, &column);
    char where[64];
    snprintf(where, sizeof where, "line %u, column %u", line, column);
    cl_buf_t b;
    cl_buf_init(&b);
    va_list ap;
    va_start(ap, fmt);
    cl_buf_vappendf(&b, fmt, ap);
    va_end(ap);
    add_error_at(ld, where, "invalid JSON: %s", b.data);
    cl_buf_free(&b);
}

typedef struct {
    bool is_object;
    bool want_key;     /* object: the next string is a key */
    size_t index;      /* array: index of the current element */
    size_t key_offset; /* object: current key, raw, inside the quotes */
    size_t key_len;
    size_t keys_start; /* object: its keys in the scanner's key list */
} scan_frame_t;

typedef struct {
    size_t offset;
    size_t len;
} scan_key_t;

typedef struct {
    loader_t *ld;
    const char *text;
    size_t len;
    scan_frame_t *frames;
    size_t depth, frames_cap;
    scan_key_t *keys;
    size_t key_count, keys_cap;
} scanner_t;

/* A raw key as the program sees it: escapes decoded (by json-c) when any. */
static char *decode_key(const char *raw, size_t len)
{
    if (memchr(raw, '\\', len) == NULL)
        return cl_xstrndup(raw, len);
    char *quoted = cl_xmalloc(len + 3);
    quoted[0] = '"';
    memcpy(quoted + 1, raw, len);
    memcpy(quoted + 1 + len, "\"", 2);
    json_object *s = json_tokener_parse(quoted);
    free(quoted);
    char *key = cl_xstrdup(s != NULL ? json_object_get_string(s) : "");
    json_object_put(s);
    return key;
}

static void scan_report_duplicate(scanner_t *sc, size_t first_offset)
{
    loader_t *ld = sc->ld;
    size_t mark = ld->path.len;
    for (size_t d = 0; d < sc->depth; d++) {
        const scan_frame_t *f = &sc->frames[d];
        if (f->is_object) {
            char *key = decode_key(sc->text + f->key_offset, f->key_len);
            path_push_key(ld, key);
            free(key);
        } else {
            path_push_index(ld, f->index);
        }
    }
    const scan_frame_t *top = &sc->frames[sc->depth - 1];
    unsigned line, column, first_line, first_column;
    /* The offsets are inside the quotes; locations point at the quote. */
    text_location(sc->text, top->key_offset - 1, &line, &column);
    text_location(sc->text, first_offset - 1, &first_line, &first_column);
    add_error(ld,
              "duplicate key at line %u, column %u (first at line %u, column %u); only one "
              "value would be used",
              line, column, first_line, first_column);
    path_pop(ld, mark);
}

static void scan_key(scanner_t *sc, size_t offset, size_t len)
{
    scan_frame_t *top = &sc->frames[sc->depth - 1];
    top->key_offset = offset;
    top->key_len = len;
    top->want_key = false;
    for (size_t i = top->keys_start; i < sc->key_count; i++) {
        if (sc->keys[i].len == len &&
            memcmp(sc->text + sc->keys[i].offset, sc->text + offset, len) == 0) {
            scan_report_duplicate(sc, sc->keys[i].offset);
            return;
        }
    }
    if (sc->key_count == sc->keys_cap) {
        sc->keys_cap = sc->keys_cap ? sc->keys_cap * 2 : 32;
        sc->keys = cl_xrealloc(sc->keys, sc->keys_cap * sizeof(scan_key_t));
    }
    sc->keys[sc->key_count++] = (scan_key_t){offset, len};
}

static bool is_json_number(const char *s, size_t len)
{
    size_t i = 0;
    if (i < len && s[i] == '-')
        i++;
    if (i < len && s[i] == '0') {
        i++;
    } else {
        if (i >= len || s[i] < '1' || s[i] > '9')
            return false;
        while (i < len && s[i] >= '0' && s[i] <= '9')
            i++;
    }
    if (i < len && s[i] == '.') {
        size_t start = ++i;
        while (i < len && s[i] >= '0' && s[i] <= '9')
            i++;
        if (i == start)
            return false;
    }
    if (i < len && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < len && (s[i] == '+' || s[i] == '-'))
            i++;
        size_t start = i;
        while (i < len && s[i] >= '0' && s[i] <= '9')
            i++;
        if (i == start)
            return false;
    }
    return i == len;
}

static bool is_json_literal(const char *s, size_t len)
{
    return (len == 4 && memcmp(s, "true", 4) == 0) || (len == 5 && memcmp(s, "false", 5) == 0) ||
           (len == 4 && memcmp(s, "null", 4) == 0) || is_json_number(s, len);
}

/* json-c (0.16, even with JSON_TOKENER_STRICT) accepts single-quoted
 * strings, NaN/Infinity and raw control characters in strings, and keeps
 * only the last of duplicate keys without a word. This second pass over
 * text that json-c already accepted rejects the first three and reports
 * duplicate keys. Returns false on a syntax problem. */
static bool scan_json(loader_t *ld, const char *text, size_t len)
{
    scanner_t sc = {.ld = ld, .text = text, .len = len};
    bool ok = true;
    size_t i = 0;
    while (ok && i < len) {
        char c = text[i];
        if (c == '{' || c == '[') {
            if (sc.depth == sc.frames_cap) {
                sc.frames_cap = sc.frames_cap ? sc.frames_cap * 2 : 8;
                sc.frames = cl_xrealloc(sc.frames, sc.frames_cap * sizeof(scan_frame_t));
            }
            sc.frames[sc.depth++] = (scan_frame_t){
                .is_object = c == '{', .want_key = c == '{', .keys_start = sc.key_count};
            i++;
        } else if (c == '}' || c == ']') {
            if (sc.depth > 0)
                sc.key_count = sc.frames[--sc.depth].keys_start;
            i++;
        } else if (c == ',') {
            if (sc.depth > 0) {
                scan_frame_t *top = &sc.frames[sc.depth - 1];
                if (top->is_object)
                    top->want_key = true;
                else
                    top->index++;
            }
            i++;
        } else if (c == ':' || c == ' ' || c == '\t' || c == '\n' || c == '\r') {
            i++;
        } else if (c == '"') {
            size_t start = ++i;
            while (i < len && text[i] != '"') {
                if ((unsigned char)text[i] < 0x20) {
                    add_syntax_error(ld, text, i,
                                     "control characters in strings must be escaped (\\t, \\n, "
                                     "\\u0001...)");
                    ok = false;
                    break;
                }
                i += text[i] == '\\' ? 2 : 1;
            }
            if (ok && sc.depth > 0 && sc.frames[sc.depth - 1].want_key)
                scan_key(&sc, start, i - start);
            i++;
        } else if (c == '\'') {
            add_syntax_error(ld, text, i, "strings must be in double quotes");
            ok = false;
        } else {
            size_t start = i;
            while (i < len && strchr(",:]} \t\r\n", text[i]) == NULL)
                i++;
            if (!is_json_literal(text + start, i - start)) {
                add_syntax_error(ld, text, start, "\"%.*s\" is not a JSON value",
                                 (int)(i - start > 20 ? 20 : i - start), text + start);
                ok = false;
            }
        }
    }
    free(sc.frames);
    free(sc.keys);
    return ok;
}

/* ---- loading ------------------------------------------------------------- */

static const char *getenv_lookup(const char *name, void *data)
{
    CL_UNUSED(data);
    return getenv(name);
}

static void loader_init(loader_t *ld, const char *source, const cl_config_load_opts_t *opts)
{
    memset(ld, 0, sizeof *ld);
    ld->source = source;
    ld->env_lookup = opts != NULL && opts->env_lookup != NULL ? opts->env_lookup : getenv_lookup;
    ld->env_lookup_data = opts != NULL ? opts->env_lookup_data : NULL;
    cl_buf_init(&ld->path);
    cl_buf_reserve(&ld->path, 64);
    ld->path.data[0] = '\0';
}

/* Hands the messages to the caller (or drops them) and the config to *out
 * when there were none. */
static int loader_finish(loader_t *ld, cl_config_t **out, cl_config_errors_t *errs)
{
    for (size_t i = 0; i < ld->errors.count; i++)
        free(ld->error_paths[i]);
    free(ld->error_paths);
    cl_buf_free(&ld->path);

    int rc = ld->errors.count == 0 ? CL_OK : CL_ERR;
    if (rc != CL_OK) {
        cl_config_free(ld->config);
        ld->config = NULL;
    }
    *out = ld->config;
    if (errs != NULL)
        *errs = ld->errors;
    else
        cl_config_errors_free(&ld->errors);
    return rc;
}

static void load_text(loader_t *ld, const char *text, size_t len)
{
    if (len > MAX_CONFIG_BYTES) {
        add_error_at(ld, NULL, "is larger than %u bytes; is this a configuration file?",
                     MAX_CONFIG_BYTES);
        return;
    }
    const char *nul = memchr(text, '\0', len);
    if (nul != NULL) {
        add_syntax_error(ld, text, (size_t)(nul - text), "contains a NUL byte");
        return;
    }
    /* Some editors start UTF-8 files with a byte order mark. */
    if (len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0) {
        text += 3;
        len -= 3;
    }

    struct json_tokener *tok = json_tokener_new();
    if (tok == NULL)
        cl_panic("out of memory creating a JSON parser");
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
    /* The length includes the NUL so that json-c knows the input ends here
     * (a number at the very end is otherwise "incomplete"). */
    json_object *root = json_tokener_parse_ex(tok, text, (int)len + 1);
    enum json_tokener_error jerr = json_tokener_get_error(tok);
    if (root == NULL || jerr != json_tokener_success) {
        size_t at = json_tokener_get_parse_end(tok);
        add_syntax_error(ld, text, at > len ? len : at, "%s",
                         jerr == json_tokener_continue ? "unexpected end of data"
                                                       : json_tokener_error_desc(jerr));
        json_tokener_free(tok);
        json_object_put(root);
        return;
    }
    json_tokener_free(tok);

    if (scan_json(ld, text, len)) {
        ld->config = cl_xcalloc(1, sizeof(cl_config_t));
        ld->config->source = cl_xstrdup(ld->source);
        read_root(ld, root);
    }
    json_object_put(root);
}

int cl_config_load_file(const char *path, const cl_config_load_opts_t *opts, cl_config_t **out,
                        cl_config_errors_t *errs)
{
    loader_t ld;
    loader_init(&ld, path, opts);
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        add_error_at(&ld, NULL, "cannot open: %s", strerror(errno));
        return loader_finish(&ld, out, errs);
    }
    cl_buf_t text;
    cl_buf_init(&text);
    char chunk[8192];
    size_t n;
    /* Read one chunk past the limit so load_text sees the file is too big. */
    while (text.len <= MAX_CONFIG_BYTES && (n = fread(chunk, 1, sizeof chunk, f)) > 0)
        cl_buf_append(&text, chunk, n);
    if (ferror(f))
        add_error_at(&ld, NULL, "cannot read: %s", strerror(errno));
    else
        load_text(&ld, text.data != NULL ? text.data : "", text.len);
    fclose(f);
    cl_buf_free(&text);
    return loader_finish(&ld, out, errs);
}

/* ---- free and diff -------------------------------------------------------- */

static void free_field(cl_config_t *c, const field_t *f)
{
    switch (f->kind) {
    case KIND_STRING:
        free(*AT(c, f->offset, char *));
        break;
    case KIND_STRING_LIST: {
        char **list = *AT(c, f->offset, char **);
        size_t count = *AT(c, f->count_offset, size_t);
        for (size_t i = 0; list != NULL && i < count; i++)
            free(list[i]);
        free(list);
        break;
    }
    case KIND_DURATION_LIST:
        free(*AT(c, f->offset, uint64_t *));
        break;
    case KIND_PROPERTIES:
        for (size_t i = 0; i < c->kafka.property_count; i++) {
            free(c->kafka.properties[i].name);
            free(c->kafka.properties[i].value);
        }
        free(c->kafka.properties);
        break;
    case KIND_MAPPING:
        for (int i = 0; i < CL_FIELD_COUNT; i++)
            free(c->ingest.mapping[i]);
        break;
    case KIND_LISTEN:
        free(c->admin.listen);
        free(c->admin.host);
        break;
    case KIND_BOOL:
    case KIND_PORT:
    case KIND_INTEGER:
    case KIND_DURATION:
    case KIND_SIZE:
    case KIND_ENUM:
        break;
    }
}

void cl_config_free(cl_config_t *config)
{
    if (config == NULL)
        return;
    for (size_t s = 0; s < CL_ARRAY_LEN(sections); s++) {
        for (size_t i = 0; i < sections[s].field_count; i++)
            free_field(config, &sections[s].fields[i]);
    }
    free(config->source);
    free(config);
}

void cl_config_errors_free(cl_config_errors_t *errs)
{
    if (errs == NULL)
        return;
    for (size_t i = 0; i < errs->count; i++)
        free(errs->messages[i]);
    free(errs->messages);
    errs->messages = NULL;
    errs->count = 0;
}

typedef struct {
    cl_config_diff_cb cb;
    void *data;
    int count;
} differ_t;

static void report(differ_t *d, const cl_config_reload_rule_t *rule, const char *section,
                   const char *key, const char *suffix)
{
    cl_buf_t name;
    cl_buf_init(&name);
    cl_buf_appendf(&name, "%s", section);
    if (key != NULL)
        cl_buf_appendf(&name, ".%s", key);
    if (suffix != NULL)
        cl_buf_append_str(&name, suffix);
    if (d->cb != NULL)
        d->cb(name.data, rule, d->data);
    d->count++;
    cl_buf_free(&name);
}

static bool str_differs(const char *a, const char *b)
{
    return (a == NULL || b == NULL) ? a != b : strcmp(a, b) != 0;
}

static const char *find_property(const cl_config_kafka_t *k, const char *name)
{
    for (size_t i = 0; i < k->property_count; i++) {
        if (strcmp(k->properties[i].name, name) == 0)
            return k->properties[i].value;
    }
    return NULL;
}

static void diff_properties(differ_t *d, const field_t *f, const cl_config_kafka_t *a,
                            const cl_config_kafka_t *b)
{
    for (size_t pass = 0; pass < 2; pass++) {
        const cl_config_kafka_t *from = pass == 0 ? a : b, *other = pass == 0 ? b : a;
        for (size_t i = 0; i < from->property_count; i++) {
            const char *name = from->properties[i].name;
            const char *theirs = find_property(other, name);
            /* Pass 1 reports changed and removed, pass 2 only added. */
            bool differs =
                pass == 0 ? str_differs(from->properties[i].value, theirs) : theirs == NULL;
            if (differs) {
                cl_buf_t suffix;
                cl_buf_init(&suffix);
                cl_buf_append_char(&suffix, '[');
                append_quoted(&suffix, name);
                cl_buf_append_char(&suffix, ']');
                report(d, &f->reload, "kafka.properties", NULL, suffix.data);
                cl_buf_free(&suffix);
            }
        }
    }
}

static bool field_differs(const cl_config_t *a, const cl_config_t *b, const field_t *f)
{
    switch (f->kind) {
    case KIND_STRING:
        return str_differs(*AT_CONST(a, f->offset, char *), *AT_CONST(b, f->offset, char *));
    case KIND_BOOL:
        return *AT_CONST(a, f->offset, bool) != *AT_CONST(b, f->offset, bool);
    case KIND_PORT:
        return *AT_CONST(a, f->offset, uint16_t) != *AT_CONST(b, f->offset, uint16_t);
    case KIND_INTEGER:
        return *AT_CONST(a, f->offset, uint32_t) != *AT_CONST(b, f->offset, uint32_t);
    case KIND_DURATION:
    case KIND_SIZE:
        return *AT_CONST(a, f->offset, uint64_t) != *AT_CONST(b, f->offset, uint64_t);
    case KIND_ENUM:
        return memcmp(AT_CONST(a, f->offset, char), AT_CONST(b, f->offset, char), sizeof(int)) != 0;
    case KIND_STRING_LIST: {
        size_t n = *AT_CONST(a, f->count_offset, size_t);
        if (n != *AT_CONST(b, f->count_offset, size_t))
            return true;
        char *const *la = *AT_CONST(a, f->offset, char **);
        char *const *lb = *AT_CONST(b, f->offset, char **);
        for (size_t i = 0; i < n; i++) {
            if (str_differs(la[i], lb[i]))
                return true;
        }
        return false;
    }
    case KIND_DURATION_LIST: {
        size_t n = *AT_CONST(a, f->count_offset, size_t);
        return n != *AT_CONST(b, f->count_offset, size_t) ||
               (n > 0 && memcmp(*AT_CONST(a, f->offset, uint64_t *),
                                *AT_CONST(b, f->offset, uint64_t *), n * sizeof(uint64_t)) != 0);
    }
    case KIND_LISTEN:
        return str_differs(a->admin.listen, b->admin.listen);
    case KIND_PROPERTIES:
    case KIND_MAPPING:
        break; /* compared entry by entry by the caller */
    }
    return false;
}

int cl_config_diff(const cl_config_t *a, const cl_config_t *b, cl_config_diff_cb cb, void *data)
{
    differ_t d = {cb, data, 0};
    for (size_t s = 0; s < CL_ARRAY_LEN(sections); s++) {
        const section_t *sec = &sections[s];
        if (sec->has_presence) {
            bool pa = *AT_CONST(a, sec->presence_offset, bool);
            bool pb = *AT_CONST(b, sec->presence_offset, bool);
            if (pa != pb)
                report(&d, &sec->presence_reload, sec->key, NULL, NULL);
            if (!pa || !pb)
                continue;
        }
        for (size_t i = 0; i < sec->field_count; i++) {
            const field_t *f = &sec->fields[i];
            if (f->kind == KIND_PROPERTIES) {
                diff_properties(&d, f, &a->kafka, &b->kafka);
            } else if (f->kind == KIND_MAPPING) {
                for (int m = 0; m < CL_FIELD_COUNT; m++) {
                    if (str_differs(a->ingest.mapping[m], b->ingest.mapping[m]))
                        report(&d, &f->reload, "ingest.mapping", event_field_names[m], NULL);
                }
            } else if (field_differs(a, b, f)) {
                report(&d, &f->reload, sec->key, f->key, NULL);
            }
        }
    }
    return d.count;
}

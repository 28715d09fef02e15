/* store: schema migrations, the batch SQL builder, and batch writes with
 * retries on a database pool; see include/clickloop/store.h.
 *
 * Schema choices:
 * - InnoDB (transactions, row locks), utf8mb4 (all of Unicode), ROW_FORMAT
 *   DYNAMIC (long index prefixes, off-page TEXT).
 * - Text columns use utf8mb4_nopad_bin (CL_STORE_TEXT_COLLATION). The
 *   default utf8mb4_general_ci would compare "Alice" = "alice" and "é" = "e":
 *   distinct users and URLs would merge in GROUP BY, COUNT(DISTINCT), window
 *   partitions, unique checks and joins. utf8mb4_bin is not enough either: in
 *   MariaDB (10.11 included) it is a PAD SPACE collation, which ignores
 *   trailing spaces, so "pad" = "pad " (schema versions 1 and 2 used it;
 *   migration 3 converts). A binary NO PAD collation compares the exact
 *   bytes, which is also how Elasticsearch keyword fields behave, so
 *   aggregates in both places agree.
 * - Keys are binary: row_key VARBINARY(400) is the event's identity, payload
 *   LONGBLOB keeps the raw bytes of a rejected message even when they are not
 *   UTF-8 (a text column would refuse them in strict mode).
 * - url is MEDIUMTEXT rather than TEXT: TEXT stops at 65,535 bytes, and in
 *   strict mode one longer URL would fail its whole batch forever.
 * - Times are DATETIME(3) in UTC (every session sets time_zone='+00:00', so
 *   CURRENT_TIMESTAMP(3) defaults are UTC too), not TIMESTAMP, whose range
 *   ends in 2038.
 * - Indexes: (event_time) for time-window aggregation, (user_id, event_time)
 *   for per-user windows. */
#include "clickloop/store.h"

#include "clickloop/config.h"

#include <errmsg.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clickloop/event.h"
#include "clickloop/log.h"
#include "clickloop/utf8.h"

/* ---- Schema --------------------------------------------------------------- */

#define TABLE_CHARSET " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=" CL_STORE_TEXT_COLLATION
#define TABLE_OPTIONS TABLE_CHARSET " ROW_FORMAT=DYNAMIC"

/* Every text column of a table (binary ones are left alone) and the table's
 * default to the text collation; the column types stay as they are. */
#define TO_TEXT_COLLATION " CONVERT TO CHARACTER SET utf8mb4 COLLATE " CL_STORE_TEXT_COLLATION

/* The version table: one row (id = 1), enforced by the key and the check. */
static const char bootstrap_sql[] =
    "CREATE TABLE IF NOT EXISTS clickloop_schema ("
    "id TINYINT UNSIGNED NOT NULL DEFAULT 1, "
    "version INT NOT NULL, "
    "applied_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3), "
    "PRIMARY KEY (id), "
    "CONSTRAINT clickloop_schema_single_row CHECK (id = 1))" TABLE_OPTIONS ";\n"
    "SELECT COALESCE((SELECT version FROM clickloop_schema WHERE id = 1), 0), "
    "@@max_allowed_packet";

/* migrations[v] brings a database from version v to v + 1. */
static const char *const migrations[] = {
    /* 0 -> 1: the initial schema. */
    "CREATE TABLE IF NOT EXISTS click_data ("
    "row_key VARBINARY(400) NOT NULL, "
    "event_id VARCHAR(128) NULL, "
    "user_id VARCHAR(256) NOT NULL, "
    "event_time DATETIME(3) NOT NULL, "
    "url MEDIUMTEXT NOT NULL, "
    "time_spent_ms BIGINT NULL, "
    "kafka_topic VARCHAR(255) NOT NULL, "
    "kafka_partition INT NOT NULL, "
    "kafka_offset BIGINT NOT NULL, "
    "ingested_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3), "
    "PRIMARY KEY (row_key), "
    "KEY idx_click_event_time (event_time), "
    "KEY idx_click_user_time (user_id, event_time))" TABLE_OPTIONS ";\n"
    "CREATE TABLE IF NOT EXISTS geo_data ("
    "row_key VARBINARY(400) NOT NULL, "
    "country CHAR(2) NULL, "
    "city VARCHAR(1024) NULL, "
    "PRIMARY KEY (row_key))" TABLE_OPTIONS ";\n"
    "CREATE TABLE IF NOT EXISTS user_agent_data ("
    "row_key VARBINARY(400) NOT NULL, "
    "browser VARCHAR(1024) NULL, "
    "os VARCHAR(1024) NULL, "
    "device VARCHAR(1024) NULL, "
    "user_agent VARCHAR(4096) NULL, "
    "PRIMARY KEY (row_key))" TABLE_OPTIONS ";\n"
    "CREATE TABLE IF NOT EXISTS rejected_events ("
    "id BIGINT NOT NULL AUTO_INCREMENT, "
    "kafka_topic VARCHAR(255) NOT NULL, "
    "kafka_partition INT NOT NULL, "
    "kafka_offset BIGINT NOT NULL, "
    "payload LONGBLOB NULL, "
    "reason VARCHAR(1024) NOT NULL, "
    "rejected_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3), "
    "PRIMARY KEY (id), "
    "UNIQUE KEY uq_rejected_coordinates (kafka_topic, kafka_partition, "
    "kafka_offset))" TABLE_OPTIONS,
    /* 1 -> 2: aggregation (see aggregate.h). agg_pending holds one row per
     * stored event until a run has aggregated it: it is written in the batch
     * transaction, so it is complete in commit order, which auto-increment
     * or time order is not. agg_dirty holds windows an operator marked for
     * recomputation. agg_stats holds the aggregates; needs_index is kept
     * equal to (version <> indexed_version) so the indexer finds its work
     * through an index. Events stored before this migration are queued
     * once, so that the first runs aggregate them too (on a large table
     * this makes the migration and those runs long, once). */
    "CREATE TABLE IF NOT EXISTS agg_pending ("
    "row_key VARBINARY(400) NOT NULL, "
    "user_id VARCHAR(256) NOT NULL, "
    "event_time DATETIME(3) NOT NULL, "
    "PRIMARY KEY (row_key))" TABLE_OPTIONS ";\n"
    "CREATE TABLE IF NOT EXISTS agg_dirty ("
    "window_ms BIGINT NOT NULL, "
    "window_start DATETIME(3) NOT NULL, "
    "marked_at DATETIME(6) NOT NULL, "
    "PRIMARY KEY (window_ms, window_start))" TABLE_OPTIONS ";\n"
    "CREATE TABLE IF NOT EXISTS agg_stats ("
    "window_ms BIGINT NOT NULL, "
    "window_start DATETIME(3) NOT NULL, "
    "url_hash BINARY(32) NOT NULL, "
    "country VARCHAR(16) NOT NULL, "
    "url MEDIUMTEXT NOT NULL, "
    "clicks BIGINT NOT NULL, "
    "unique_users BIGINT NOT NULL, "
    "time_spent_sum DECIMAL(38,0) NOT NULL, "
    "time_spent_samples BIGINT NOT NULL, "
    "version BIGINT NOT NULL, "
    "indexed_version BIGINT NOT NULL DEFAULT 0, "
    "needs_index TINYINT NOT NULL DEFAULT 1, "
    "index_error VARCHAR(1024) NULL, "
    "updated_at DATETIME(3) NOT NULL, "
    "PRIMARY KEY (window_ms, window_start, url_hash, country), "
    "KEY idx_agg_stats_needs_index (needs_index))" TABLE_OPTIONS ";\n"
    "INSERT INTO agg_pending (row_key, user_id, event_time) "
    "SELECT * FROM (SELECT row_key, user_id, event_time FROM click_data) c "
    "ON DUPLICATE KEY UPDATE agg_pending.row_key = agg_pending.row_key",
    /* 2 -> 3: text columns from utf8mb4_bin, which ignores trailing spaces,
     * to CL_STORE_TEXT_COLLATION (see the top of this file), in every table,
     * so that a migrated schema equals a new one. Safe on a populated
     * database: values equal under NO PAD are equal under PAD SPACE too, so
     * no unique key gains a duplicate. Converting a converted table changes
     * nothing (instantly), so an interrupted migration is simply run again.
     * The cost, measured on MariaDB 10.11: columns in no index change
     * instantly; an indexed one has its index rebuilt (click_data.user_id,
     * rejected_events.kafka_topic); agg_stats, whose country is in the
     * primary key, is copied.
     * First, while user_id still ignores trailing spaces, the events of
     * every user that an id with a trailing space merged with others ("pad"
     * with "pad ") are queued for aggregation: their windows were counted
     * with one user too few and their dwell times taken from the other
     * user's clicks. (URLs were grouped by their hash, which was exact.) */
    "INSERT INTO agg_pending (row_key, user_id, event_time) "
    "SELECT * FROM (SELECT row_key, user_id, event_time FROM click_data "
    "WHERE user_id IN (SELECT user_id FROM click_data WHERE user_id LIKE '% ')) c "
    "ON DUPLICATE KEY UPDATE agg_pending.row_key = agg_pending.row_key;\n"
    "ALTER TABLE clickloop_schema" TO_TEXT_COLLATION ";\n"
    "ALTER TABLE click_data" TO_TEXT_COLLATION ";\n"
    "ALTER TABLE geo_data" TO_TEXT_COLLATION ";\n"
    "ALTER TABLE user_agent_data" TO_TEXT_COLLATION ";\n"
    "ALTER TABLE rejected_events" TO_TEXT_COLLATION ";\n"
    "ALTER TABLE agg_pending" TO_TEXT_COLLATION ";\n"
    "ALTER TABLE agg_dirty" TO_TEXT_COLLATION ";\n"
    "ALTER TABLE agg_stats" TO_TEXT_COLLATION,
    /* 3 -> 4: how far retention has pruned click_data (retention.h), one row
     * (id = 1) that only retention writes and the aggregator reads, so that
     * windows whose rows are gone stay frozen after raw_days is raised or
     * retention is switched off (aggregate.h). No row: nothing pruned yet. A
     * database pruned by an older clickloop gets its row at the next
     * retention run that deletes events. */
    "CREATE TABLE IF NOT EXISTS retention_state ("
    "id TINYINT UNSIGNED NOT NULL DEFAULT 1, "
    "pruned_before DATETIME(3) NOT NULL, "
    "PRIMARY KEY (id), "
    "CONSTRAINT retention_state_single_row CHECK (id = 1))" TABLE_OPTIONS,
    /* 4 -> 5: incremental aggregation (aggregate.h). agg_done holds the key
     * of every aggregated event, so that an event delivered again (and
     * queued again) is not counted twice; agg_users the distinct users of
     * every aggregate, keyed by window start first so that retention prunes
     * old windows by a key range; agg_held the events a run failed on alone.
     * Of an existing database, the events aggregated so far (stored and no
     * longer pending) are recorded as done, and every window in agg_stats is
     * marked for a recomputation, which rebuilds its agg_users rows: until
     * it has run, the window's unique users may be overcounted by new
     * events (the runs work through the marks newest first). On a large
     * table this makes the migration and those runs long, once. */
    "CREATE TABLE IF NOT EXISTS agg_done ("
    "row_key VARBINARY(400) NOT NULL, "
    "PRIMARY KEY (row_key))" TABLE_OPTIONS ";\n"
    "CREATE TABLE IF NOT EXISTS agg_users ("
    "window_start DATETIME(3) NOT NULL, "
    "window_ms BIGINT NOT NULL, "
    "url_hash BINARY(32) NOT NULL, "
    "country VARCHAR(16) NOT NULL, "
    "user_id VARCHAR(256) NOT NULL, "
    "PRIMARY KEY (window_start, window_ms, url_hash, country, user_id))" TABLE_OPTIONS ";\n"
    "CREATE TABLE IF NOT EXISTS agg_held ("
    "row_key VARBINARY(400) NOT NULL, "
    "reason VARCHAR(1024) NOT NULL, "
    "held_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3), "
    "PRIMARY KEY (row_key))" TABLE_OPTIONS ";\n"
    "INSERT INTO agg_done (row_key) "
    "SELECT * FROM (SELECT c.row_key FROM click_data c WHERE NOT EXISTS "
    "(SELECT 1 FROM agg_pending p WHERE p.row_key = c.row_key)) d "
    "ON DUPLICATE KEY UPDATE agg_done.row_key = agg_done.row_key;\n"
    "INSERT INTO agg_dirty (window_ms, window_start, marked_at) "
    "SELECT * FROM (SELECT DISTINCT window_ms, window_start, NOW(6) FROM agg_stats) w "
    "ON DUPLICATE KEY UPDATE marked_at = agg_dirty.marked_at",
};

_Static_assert(CL_ARRAY_LEN(migrations) == CL_STORE_SCHEMA_VERSION,
               "one migration per schema version");

int cl_store_migration_sql(int from_version, cl_buf_t *out, char err[CL_ERR_LEN])
{
    if (from_version < 0 || from_version > CL_STORE_SCHEMA_VERSION)
        return cl_errorf(err,
                         "database schema version %d is unknown to this clickloop, which "
                         "knows versions 0 to %d",
                         from_version, CL_STORE_SCHEMA_VERSION);
    for (int v = from_version; v < CL_STORE_SCHEMA_VERSION; v++) {
        if (v > from_version)
            cl_buf_append_str(out, ";\n");
        cl_buf_append_str(out, migrations[v]);
        cl_buf_appendf(out,
                       ";\nINSERT INTO clickloop_schema (id, version) VALUES (1, %d) "
                       "ON DUPLICATE KEY UPDATE version = VALUES(version), "
                       "applied_at = CURRENT_TIMESTAMP(3)",
                       v + 1);
    }
    return CL_OK;
}

/* ---- Values --------------------------------------------------------------- */

/* Characters in well-formed UTF-8: every byte that does not continue one. */
static size_t utf8_chars(const char *s, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        n += ((unsigned char)s[i] & 0xC0) != 0x80;
    return n;
}

/* Present, well-formed and at most max_chars characters. */
static int check_text(const char *field, const char *s, size_t max_chars, char err[CL_ERR_LEN])
{
    if (s == NULL)
        return cl_errorf(err, "%s is missing", field);
    size_t len = strlen(s), bad;
    if (cl_utf8_validate(s, len, &bad) != CL_OK)
        return cl_errorf(err, "%s is not well-formed UTF-8 at byte %zu (%s)", field, bad,
                         cl_utf8_problem(s, len, bad));
    size_t chars = utf8_chars(s, len);
    if (chars > max_chars)
        return cl_errorf(err, "%s is %zu characters long, the column holds %zu", field, chars,
                         max_chars);
    return CL_OK;
}

static size_t opt_len(const char *s)
{
    return s != NULL ? strlen(s) : 0;
}

/* Rows are valid by construction (store.h): the event parser's limits are
 * within the columns' (bytes bound characters from above), its instants
 * within DATETIME(3). */
_Static_assert(CL_EVENT_ROW_KEY_MAX_LEN <= CL_STORE_ROW_KEY_MAX_BYTES, "row_key fits");
_Static_assert(CL_EVENT_ID_MAX_LEN <= CL_STORE_EVENT_ID_MAX_CHARS, "event_id fits");
_Static_assert(CL_EVENT_USER_ID_MAX_LEN <= CL_STORE_USER_ID_MAX_CHARS, "user_id fits");
_Static_assert(CL_EVENT_URL_MAX_LEN <= CL_STORE_URL_MAX_BYTES, "url fits");
_Static_assert(CL_EVENT_TEXT_MAX_LEN <= CL_STORE_TEXT_MAX_CHARS, "city, browser, os, device fit");
_Static_assert(CL_EVENT_USER_AGENT_MAX_LEN <= CL_STORE_USER_AGENT_MAX_CHARS, "user_agent fits");
_Static_assert(CL_EVENT_TS_MIN_MS >= CL_DATETIME_MIN_MS, "event times fit DATETIME(3)");

/* Rejected events come from Kafka as they are: the one check they get. */
static int check_rejected(const cl_store_rejected_t *r, char err[CL_ERR_LEN])
{
    if (check_text("topic", r->topic, CL_STORE_TOPIC_MAX_CHARS, err) != CL_OK)
        return CL_ERR;
    if (r->partition < 0 || r->offset < 0)
        return cl_errorf(err, "Kafka partition %" PRId32 " / offset %" PRId64 " is negative",
                         r->partition, r->offset);
    if (r->reason == NULL)
        return cl_errorf(err, "reason is missing");
    if (r->payload == NULL && r->payload_len != 0)
        return cl_errorf(err, "payload is NULL but payload_len is %zu", r->payload_len);
    return CL_OK;
}

/* ---- Batch SQL -------------------------------------------------------------- */

/* '<escaped>' (with _binary before it for binary columns), or NULL. */
static void append_literal(cl_buf_t *b, const char *s, size_t len, bool binary,
                           cl_store_escape_fn escape)
{
    if (s == NULL) {
        cl_buf_append_str(b, "NULL");
        return;
    }
    if (binary)
        cl_buf_append_str(b, "_binary");
    cl_buf_append_char(b, '\'');
    cl_buf_reserve(b, 2 * len + 1);
    b->len += escape(b->data + b->len, s, len);
    b->data[b->len] = '\0';
    cl_buf_append_char(b, '\'');
}

static void append_text(cl_buf_t *b, const char *s, cl_store_escape_fn escape)
{
    append_literal(b, s, opt_len(s), false, escape);
}

static int compare_rows(const void *a, const void *b)
{
    const cl_store_row_t *x = *(const cl_store_row_t *const *)a;
    const cl_store_row_t *y = *(const cl_store_row_t *const *)b;
    size_t n = x->row_key_len < y->row_key_len ? x->row_key_len : y->row_key_len;
    int c = memcmp(x->row_key, y->row_key, n);
    if (c != 0)
        return c;
    return (x->row_key_len > y->row_key_len) - (x->row_key_len < y->row_key_len);
}

static int compare_rejected(const void *a, const void *b)
{
    const cl_store_rejected_t *x = *(const cl_store_rejected_t *const *)a;
    const cl_store_rejected_t *y = *(const cl_store_rejected_t *const *)b;
    int c = strcmp(x->topic, y->topic);
    if (c != 0)
        return c;
    if (x->partition != y->partition)
        return x->partition < y->partition ? -1 : 1;
    return (x->offset > y->offset) - (x->offset < y->offset);
}

static bool has_geo(const cl_store_row_t *r)
{
    return r->country[0] != '\0' || r->city != NULL;
}

static bool has_user_agent(const cl_store_row_t *r)
{
    return r->browser != NULL || r->os != NULL || r->device != NULL || r->user_agent != NULL;
}

static void append_click_values(cl_buf_t *b, const cl_store_row_t *r, cl_store_escape_fn escape)
{
    char when[CL_DATETIME_SIZE];
    cl_datetime_format(r->ts_ms, when); /* in range: store.h */
    cl_buf_append_char(b, '(');
    append_literal(b, r->row_key, r->row_key_len, true, escape);
    cl_buf_append_char(b, ',');
    append_text(b, r->event_id, escape);
    cl_buf_append_char(b, ',');
    append_text(b, r->user_id, escape);
    cl_buf_appendf(b, ",'%s',", when);
    append_literal(b, r->url, r->url_len, false, escape);
    if (r->time_spent_ms >= 0)
        cl_buf_appendf(b, ",%" PRId64 ",", r->time_spent_ms);
    else
        cl_buf_append_str(b, ",NULL,");
    append_text(b, r->topic, escape);
    cl_buf_appendf(b, ",%" PRId32 ",%" PRId64 ")", r->partition, r->offset);
}

static void append_pending_values(cl_buf_t *b, const cl_store_row_t *r, cl_store_escape_fn escape)
{
    char when[CL_DATETIME_SIZE];
    cl_datetime_format(r->ts_ms, when); /* in range: store.h */
    cl_buf_append_char(b, '(');
    append_literal(b, r->row_key, r->row_key_len, true, escape);
    cl_buf_append_char(b, ',');
    append_text(b, r->user_id, escape);
    cl_buf_appendf(b, ",'%s')", when);
}

static void append_geo_values(cl_buf_t *b, const cl_store_row_t *r, cl_store_escape_fn escape)
{
    cl_buf_append_char(b, '(');
    append_literal(b, r->row_key, r->row_key_len, true, escape);
    cl_buf_append_char(b, ',');
    append_text(b, r->country[0] != '\0' ? r->country : NULL, escape);
    cl_buf_append_char(b, ',');
    append_text(b, r->city, escape);
    cl_buf_append_char(b, ')');
}

static void append_user_agent_values(cl_buf_t *b, const cl_store_row_t *r,
                                     cl_store_escape_fn escape)
{
    cl_buf_append_char(b, '(');
    append_literal(b, r->row_key, r->row_key_len, true, escape);
    const char *fields[] = {r->browser, r->os, r->device, r->user_agent};
    for (size_t i = 0; i < CL_ARRAY_LEN(fields); i++) {
        cl_buf_append_char(b, ',');
        append_text(b, fields[i], escape);
    }
    cl_buf_append_char(b, ')');
}

static void append_rejected_values(cl_buf_t *b, const cl_store_rejected_t *r,
                                   cl_store_escape_fn escape)
{
    cl_buf_append_char(b, '(');
    append_text(b, r->topic, escape);
    cl_buf_appendf(b, ",%" PRId32 ",%" PRId64 ",", r->partition, r->offset);
    append_literal(b, r->payload, r->payload_len, true, escape);
    cl_buf_append_char(b, ',');
    size_t reason_len;
    char *reason = cl_utf8_sanitize(r->reason, CL_STORE_REASON_MAX_CHARS, &reason_len);
    append_literal(b, reason, reason_len, false, escape);
    free(reason);
    cl_buf_append_char(b, ')');
}

typedef void (*append_row_fn)(cl_buf_t *b, const cl_store_row_t *r, cl_store_escape_fn escape);

/* One multi-row INSERT over the rows that `want` selects (all if NULL). */
static void append_row_insert(cl_buf_t *b, const char *head, const cl_store_row_t *const *rows,
                              size_t n, bool (*want)(const cl_store_row_t *), append_row_fn values,
                              cl_store_escape_fn escape)
{
    bool first = true;
    for (size_t i = 0; i < n; i++) {
        if (want != NULL && !want(rows[i]))
            continue;
        cl_buf_append_str(b, first ? head : ",");
        values(b, rows[i], escape);
        first = false;
    }
    if (!first)
        cl_buf_append_str(b, " ON DUPLICATE KEY UPDATE row_key=row_key;\n");
}

int cl_store_build_batch_sql(cl_buf_t *out, const cl_store_row_t *rows, size_t n_rows,
                             const cl_store_rejected_t *rejected, size_t n_rejected,
                             cl_store_escape_fn escape, char err[CL_ERR_LEN])
{
    char why[CL_ERR_LEN];
    for (size_t i = 0; i < n_rejected; i++) {
        if (check_rejected(&rejected[i], why) != CL_OK)
            return cl_errorf(err, "batch rejected event %zu: %s", i, why);
    }
    if (n_rows == 0 && n_rejected == 0)
        return CL_OK;

    const cl_store_row_t **sorted = cl_xcalloc(n_rows, sizeof *sorted);
    for (size_t i = 0; i < n_rows; i++)
        sorted[i] = &rows[i];
    qsort(sorted, n_rows, sizeof *sorted, compare_rows);
    const cl_store_rejected_t **sorted_rejected = cl_xcalloc(n_rejected, sizeof *sorted_rejected);
    for (size_t i = 0; i < n_rejected; i++)
        sorted_rejected[i] = &rejected[i];
    qsort(sorted_rejected, n_rejected, sizeof *sorted_rejected, compare_rejected);

    cl_buf_append_str(out, "START TRANSACTION;\n");
    append_row_insert(out,
                      "INSERT INTO click_data (row_key,event_id,user_id,event_time,url,"
                      "time_spent_ms,kafka_topic,kafka_partition,kafka_offset) VALUES ",
                      sorted, n_rows, NULL, append_click_values, escape);
    /* In the same transaction, so the aggregator sees the event exactly when
     * it is committed (store.h). */
    append_row_insert(out, "INSERT INTO agg_pending (row_key,user_id,event_time) VALUES ", sorted,
                      n_rows, NULL, append_pending_values, escape);
    append_row_insert(out, "INSERT INTO geo_data (row_key,country,city) VALUES ", sorted, n_rows,
                      has_geo, append_geo_values, escape);
    append_row_insert(out,
                      "INSERT INTO user_agent_data (row_key,browser,os,device,user_agent) "
                      "VALUES ",
                      sorted, n_rows, has_user_agent, append_user_agent_values, escape);
    for (size_t i = 0; i < n_rejected; i++) {
        cl_buf_append_str(out, i == 0 ? "INSERT INTO rejected_events (kafka_topic,"
                                        "kafka_partition,kafka_offset,payload,reason) VALUES "
                                      : ",");
        append_rejected_values(out, sorted_rejected[i], escape);
    }
    if (n_rejected > 0)
        cl_buf_append_str(out, " ON DUPLICATE KEY UPDATE id=id;\n");
    cl_buf_append_str(out, "COMMIT");
    free(sorted);
    free(sorted_rejected);
    return CL_OK;
}

/* ---- Sizing ------------------------------------------------------------------ */

/* Punctuation, numbers (20 digits at most), a DATETIME literal and the
 * separator of one row's VALUES tuple in one table: at most this many bytes
 * besides its quoted values. */
#define ROW_FIXED_BYTES 96

/* What append_literal writes for this value, exactly. */
static size_t literal_bytes(const char *s, size_t len, bool binary)
{
    if (s == NULL)
        return 4; /* NULL */
    return (binary ? 7 : 0) + 2 + cl_db_escaped_length(s, len);
}

static size_t text_bytes(const char *s)
{
    return literal_bytes(s, opt_len(s), false);
}

size_t cl_store_row_sql_bytes(const cl_store_row_t *r)
{
    size_t key = literal_bytes(r->row_key, r->row_key_len, true);
    size_t n = ROW_FIXED_BYTES + key + text_bytes(r->event_id) + text_bytes(r->user_id) +
               literal_bytes(r->url, r->url_len, false) + text_bytes(r->topic);
    n += ROW_FIXED_BYTES + key + text_bytes(r->user_id); /* agg_pending */
    if (has_geo(r))
        n += ROW_FIXED_BYTES + key + 4 + text_bytes(r->city);
    if (has_user_agent(r))
        n += ROW_FIXED_BYTES + key + text_bytes(r->browser) + text_bytes(r->os) +
             text_bytes(r->device) + text_bytes(r->user_agent);
    return n;
}

size_t cl_store_rejected_sql_bytes(const cl_store_rejected_t *r)
{
    /* The reason is cut to CL_STORE_REASON_MAX_CHARS characters of at most
     * four bytes, each escaped to two at most. */
    size_t reason = r->reason != NULL ? strlen(r->reason) : 0;
    if (reason > 4 * CL_STORE_REASON_MAX_CHARS)
        reason = 4 * CL_STORE_REASON_MAX_CHARS;
    return ROW_FIXED_BYTES + text_bytes(r->topic) +
           literal_bytes(r->payload, r->payload_len, true) + 2 + 2 * reason;
}

/* ---- Async operations --------------------------------------------------------- */

typedef enum { OP_BATCH, OP_MIGRATE } op_kind_t;

typedef enum {
    OP_RUNNING, /* submitted to the pool */
    OP_BACKOFF, /* timer armed before the next attempt (0 ms for an empty batch) */
    OP_FINISHED,
} op_state_t;

typedef enum { MIGRATE_READ_VERSION, MIGRATE_APPLY } migrate_step_t;

typedef struct store_op_s {
    cl_store_t *store;
    struct store_op_s *prev, *next;
    op_kind_t kind;
    op_state_t state;
    migrate_step_t step;
    cl_buf_t sql;
    uv_timer_t timer;
    unsigned int attempts;
    cl_store_batch_cb batch_cb;
    cl_store_migrate_cb migrate_cb;
    void *arg;
    int found_version;
    uint64_t found_max_packet;
    size_t n_rows;            /* OP_BATCH: rows (not rejected events) in the SQL */
    bool blocked;             /* waiting for a retry after an operator's error */
    bool too_large;           /* OP_BATCH: over the packet limit, completes with CL_ERR */
    char message[CL_ERR_LEN]; /* too_large: why */
} store_op_t;

struct cl_store_s {
    uv_loop_t *loop;
    cl_db_pool_t *pool;
    unsigned int retry_min_ms, retry_max_ms;
    uv_timer_t anchor; /* no timing role: its close callback frees the store */
    store_op_t *ops;   /* every op not yet freed */
    size_t op_count;
    bool migrated;
    int schema_version;
    uint64_t max_allowed_packet; /* the server's, or params.max_packet_bytes if smaller */
    uint64_t max_packet_param;
    size_t blocked_ops;              /* ops with blocked set */
    char blocked_reason[CL_ERR_LEN]; /* the last operator's error, while blocked_ops > 0 */
    uint64_t rng;
    cl_store_stats_t stats;
    bool closing, anchor_closing;
    cl_close_cb close_cb;
    void *close_arg;
};

static uint32_t store_random(cl_store_t *s)
{
    uint64_t x = s->rng; /* xorshift64*: jitter only */
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    s->rng = x;
    return (uint32_t)((x * 0x2545F4914F6CDD1DULL) >> 32);
}

void cl_store_params_from_config(const cl_config_t *c, cl_store_params_t *p)
{
    memset(p, 0, sizeof *p);
    p->max_packet_bytes = c->mariadb.max_allowed_packet;
}

int cl_store_new(uv_loop_t *loop, cl_db_pool_t *pool, const cl_store_params_t *params,
                 cl_store_t **out, char err[CL_ERR_LEN])
{
    unsigned int min = params->retry_min_ms != 0 ? params->retry_min_ms : 200;
    unsigned int max = params->retry_max_ms != 0 ? params->retry_max_ms : 30000;
    if (max < min)
        return cl_errorf(err, "store: retry_max_ms (%u) is below retry_min_ms (%u)", max, min);
    cl_store_t *s = cl_xcalloc(1, sizeof *s);
    uv_timer_init(loop, &s->anchor);
    s->anchor.data = s;
    s->loop = loop;
    s->pool = pool;
    s->retry_min_ms = min;
    s->retry_max_ms = max;
    s->max_packet_param = params->max_packet_bytes;
    s->schema_version = -1;
    s->rng = uv_hrtime() ^ ((uint64_t)(uintptr_t)s << 20) ^ 0xD1B54A32D192ED03ULL;
    *out = s;
    return CL_OK;
}

static void on_anchor_closed(uv_handle_t *h)
{
    cl_store_t *s = h->data;
    cl_close_complete(s, s->close_cb, s->close_arg);
}

static void store_maybe_closed(cl_store_t *s)
{
    if (s->closing && s->op_count == 0 && !s->anchor_closing) {
        s->anchor_closing = true;
        uv_close((uv_handle_t *)&s->anchor, on_anchor_closed);
    }
}

static void on_op_closed(uv_handle_t *h)
{
    store_op_t *op = h->data;
    cl_store_t *s = op->store;
    CL_DLIST_UNLINK(s->ops, op);
    s->op_count--;
    cl_buf_free(&op->sql);
    free(op);
    store_maybe_closed(s);
}

static store_op_t *op_new(cl_store_t *s, op_kind_t kind, void *arg)
{
    store_op_t *op = cl_xcalloc(1, sizeof *op);
    op->store = s;
    op->kind = kind;
    op->arg = arg;
    op->found_version = -1;
    cl_buf_init(&op->sql);
    uv_timer_init(s->loop, &op->timer);
    op->timer.data = op;
    CL_DLIST_PUSH(s->ops, op);
    s->op_count++;
    return op;
}

/* Count the ops held by an operator's error, for cl_store_blocked(). */
static void op_set_blocked(store_op_t *op, bool blocked, const char *message)
{
    cl_store_t *s = op->store;
    if (blocked && message != NULL)
        snprintf(s->blocked_reason, sizeof s->blocked_reason, "%s", message);
    if (blocked == op->blocked)
        return;
    op->blocked = blocked;
    if (blocked)
        s->blocked_ops++;
    else
        s->blocked_ops--;
    /* Logged once per change of state (log.h), not per retry. */
    if (blocked && s->blocked_ops == 1)
        cl_log_warn("store",
                    "ingest batches are held, retrying with backoff until an operator fixes "
                    "the cause: %s",
                    s->blocked_reason);
    else if (!blocked && s->blocked_ops == 0)
        cl_log_info("store", "no ingest batch is held any more");
}

/* Report the outcome once, then free the op from the timer's close callback. */
static void op_finish(store_op_t *op, int status, unsigned int code, const char *message,
                      uint64_t rows_affected)
{
    cl_store_t *s = op->store;
    op->state = OP_FINISHED;
    uv_timer_stop(&op->timer);
    op_set_blocked(op, false, NULL);
    if (op->kind == OP_BATCH) {
        if (status == CL_OK) {
            s->stats.batches_stored++;
            s->stats.rows_affected += rows_affected;
        } else if (status == CL_ERR) {
            s->stats.batches_failed++;
        }
        s->stats.in_flight--;
        cl_store_batch_result_t r = {
            status, cl_db_error_classify(code), code, message, rows_affected, op->attempts};
        op->batch_cb(op->arg, &r);
    } else {
        cl_store_migrate_result_t r = {status, code, message, op->found_version, s->schema_version};
        op->migrate_cb(op->arg, &r);
    }
    uv_close((uv_handle_t *)&op->timer, on_op_closed);
}

static void op_submit(store_op_t *op);

static void on_op_timer(uv_timer_t *t)
{
    store_op_t *op = t->data;
    if (op->too_large)
        op_finish(op, CL_ERR, CR_NET_PACKET_TOO_LARGE, op->message, 0);
    else if (op->sql.len == 0)
        op_finish(op, CL_OK, 0, "", 0); /* empty batch */
    else
        op_submit(op);
}

static void op_retry_later(store_op_t *op)
{
    cl_store_t *s = op->store;
    uint64_t delay =
        cl_backoff_ms(op->attempts - 1, s->retry_min_ms, s->retry_max_ms, store_random(s));
    op->state = OP_BACKOFF;
    uv_timer_start(&op->timer, on_op_timer, delay, 0);
}

static void on_op_row(void *arg, unsigned int statement, unsigned int field_count,
                      const char *const *values, const unsigned long *lengths)
{
    store_op_t *op = arg;
    CL_UNUSED(lengths);
    /* Statement 1 of the bootstrap is SELECT version, max_allowed_packet. */
    if (op->kind != OP_MIGRATE || op->step != MIGRATE_READ_VERSION || statement != 1 ||
        field_count != 2 || values[0] == NULL)
        return;
    op->found_version = (int)strtol(values[0], NULL, 10);
    op->found_max_packet = values[1] != NULL ? strtoull(values[1], NULL, 10) : 0;
}

static void migrate_read_done(store_op_t *op)
{
    cl_store_t *s = op->store;
    char err[CL_ERR_LEN];
    /* NULL would be a server without the variable: assume MySQL 5.7's 4 MiB,
     * the smallest default in use. */
    s->max_allowed_packet = op->found_max_packet != 0 ? op->found_max_packet : 4u << 20;
    if (s->max_packet_param != 0 && s->max_packet_param < s->max_allowed_packet)
        s->max_allowed_packet = s->max_packet_param;
    if (op->found_version == CL_STORE_SCHEMA_VERSION) {
        s->schema_version = op->found_version;
        s->migrated = true;
        op_finish(op, CL_OK, 0, "", 0);
        return;
    }
    cl_buf_reset(&op->sql);
    if (cl_store_migration_sql(op->found_version, &op->sql, err) != CL_OK) {
        op_finish(op, CL_ERR, 0, err, 0);
        return;
    }
    op->step = MIGRATE_APPLY;
    op_submit(op);
}

/* A batch that failed for good waits and retries, unless the error is its
 * data's and the caller can split it (see cl_store_write_batch). */
static bool batch_is_held(const store_op_t *op, unsigned int code)
{
    return cl_db_error_classify(code) != CL_DB_ERROR_DATA || op->n_rows == 0;
}

static void on_op_done(void *arg, const cl_db_result_t *result)
{
    store_op_t *op = arg;
    cl_store_t *s = op->store;
    if (result->status == CL_ERR_RETRY) {
        if (s->closing) {
            op_finish(op, CL_ERR_RETRY, result->error_code, result->message, 0);
            return;
        }
        if (op->kind == OP_MIGRATE && op->step == MIGRATE_APPLY) {
            /* Read the version again: the failed attempt may have advanced it. */
            op->step = MIGRATE_READ_VERSION;
            cl_buf_reset(&op->sql);
            cl_buf_append_str(&op->sql, bootstrap_sql);
        }
        op_retry_later(op);
        return;
    }
    if (result->status != CL_OK) {
        if (op->kind == OP_BATCH && batch_is_held(op, result->error_code)) {
            if (s->closing) {
                op_finish(op, CL_ERR_RETRY, result->error_code, result->message, 0);
                return;
            }
            op_set_blocked(op, true, result->message);
            op_retry_later(op);
            return;
        }
        op_finish(op, result->status, result->error_code, result->message, 0);
        return;
    }
    if (op->kind == OP_BATCH) {
        op_finish(op, CL_OK, 0, "", result->affected_rows_total);
    } else if (op->step == MIGRATE_READ_VERSION) {
        migrate_read_done(op);
    } else {
        s->schema_version = CL_STORE_SCHEMA_VERSION;
        s->migrated = true;
        op_finish(op, CL_OK, 0, "", 0);
    }
}

static const cl_db_query_handlers_t op_handlers = {on_op_row, on_op_done};

static void op_submit(store_op_t *op)
{
    char err[CL_ERR_LEN];
    op->state = OP_RUNNING;
    op->attempts++;
    if (op->kind == OP_BATCH && op->attempts > 1)
        op->store->stats.batch_retries++;
    if (cl_db_pool_query(op->store->pool, op->sql.data, op->sql.len, &op_handlers, op, err) !=
        CL_OK)
        op_finish(op, CL_ERR_RETRY, 0, err, 0); /* the pool is closing */
}

int cl_store_migrate(cl_store_t *s, cl_store_migrate_cb cb, void *arg, char err[CL_ERR_LEN])
{
    if (s->closing)
        return cl_errorf(err, "store: closing");
    if (cb == NULL)
        return cl_errorf(err, "store: migrate needs a callback");
    store_op_t *op = op_new(s, OP_MIGRATE, arg);
    op->migrate_cb = cb;
    op->step = MIGRATE_READ_VERSION;
    cl_buf_append_str(&op->sql, bootstrap_sql);
    op_submit(op);
    return CL_OK;
}

int cl_store_write_batch(cl_store_t *s, const cl_store_row_t *rows, size_t n_rows,
                         const cl_store_rejected_t *rejected, size_t n_rejected,
                         cl_store_batch_cb cb, void *arg, char err[CL_ERR_LEN])
{
    if (s->closing)
        return cl_errorf(err, "store: closing");
    if (!s->migrated)
        return cl_errorf(err, "store: the schema has not been migrated yet");
    if (cb == NULL)
        return cl_errorf(err, "store: write_batch needs a callback");
    cl_buf_t sql;
    cl_buf_init(&sql);
    if (cl_store_build_batch_sql(&sql, rows, n_rows, rejected, n_rejected, cl_db_escape_string,
                                 err) != CL_OK) {
        cl_buf_free(&sql);
        return CL_ERR;
    }
    store_op_t *op = op_new(s, OP_BATCH, arg);
    op->batch_cb = cb;
    op->sql = sql;
    op->n_rows = n_rows;
    s->stats.in_flight++;
    /* The query travels as one packet of 1 command byte + the text; the
     * server refuses a larger one and drops the connection (ER_NET_PACKET_
     * TOO_LARGE), so it is not sent: a smaller batch will fit. */
    if (op->sql.len + 1 > s->max_allowed_packet) {
        op->too_large = true;
        snprintf(op->message, sizeof op->message,
                 "the batch SQL is %zu bytes, over the packet limit of %" PRIu64
                 " bytes (the server's max_allowed_packet or mariadb.max_allowed_packet)",
                 op->sql.len, s->max_allowed_packet);
    }
    if (op->sql.len == 0 || op->too_large) {
        /* Complete from the loop, never inside this call. */
        op->state = OP_BACKOFF;
        uv_timer_start(&op->timer, on_op_timer, 0, 0);
        return CL_OK;
    }
    op_submit(op);
    return CL_OK;
}

size_t cl_store_max_batch_sql_bytes(const cl_store_t *s)
{
    uint64_t packet = s->max_allowed_packet;
    uint64_t budget = packet - 1 - packet / 16;
    return budget > SIZE_MAX ? SIZE_MAX : (size_t)budget;
}

const char *cl_store_blocked(const cl_store_t *s)
{
    return s->blocked_ops > 0 ? s->blocked_reason : NULL;
}

void cl_store_stats(const cl_store_t *s, cl_store_stats_t *out)
{
    *out = s->stats;
}

int cl_store_close(cl_store_t *s, cl_close_cb cb, void *arg)
{
    if (s->closing)
        return CL_ERR;
    s->closing = true;
    s->close_cb = cb;
    s->close_arg = arg;
    for (store_op_t *op = s->ops; op != NULL; op = op->next) {
        if (op->state == OP_BACKOFF)
            op_finish(op, CL_ERR_RETRY, 0, "cancelled: the store closed before the retry", 0);
    }
    store_maybe_closed(s);
    return CL_OK;
}

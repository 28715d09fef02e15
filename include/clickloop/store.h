/* store: the MariaDB schema, its migrations, and batches of events written as
 * one idempotent transaction.
 *
 * Pure parts (no I/O, unit-tested): the schema migrations as SQL text and
 * the batch SQL builder. The async parts run that SQL on a cl_db_pool_t:
 * cl_store_migrate() at start, then cl_store_write_batch() for every batch,
 * retried until it is stored.
 *
 * Why a batch can be retried blindly: it is one transaction
 * (START TRANSACTION; INSERT ... ON DUPLICATE KEY UPDATE <key>=<key>; ...;
 * COMMIT). Every row has a deterministic key (row_key; Kafka coordinates for
 * rejected events), so a redelivered or retried row neither adds a row nor
 * fails; if the connection dies mid-transaction the server rolls it back; if
 * it dies after COMMIT reached the server, the retry finds every row present
 * and changes nothing. INSERT IGNORE is not used: it would also turn
 * truncation, bad values and other real errors into warnings.
 *
 * Each batch also records its events in agg_pending, the aggregator's work
 * queue (aggregate.h). A redelivered event whose pending row the aggregator
 * already consumed is queued again; its windows are then recomputed once
 * more, which changes no aggregate. */
#ifndef CLICKLOOP_STORE_H
#define CLICKLOOP_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "clickloop/buf.h"
#include "clickloop/common.h"
#include "clickloop/db_pool.h"

/* The schema version this code writes (the last migration). */
#define CL_STORE_SCHEMA_VERSION 5

/* The collation of every text column, in the schema and in the aggregator's
 * work tables (they must agree: MariaDB refuses to compare columns of two
 * collations). A binary NO PAD collation: values are equal only when their
 * bytes are, so "pad" and "pad " stay two users (store.c explains). */
#define CL_STORE_TEXT_COLLATION "utf8mb4_nopad_bin"

/* Column limits, as declared in the schema. Character counts are Unicode
 * characters (utf8mb4), byte counts are bytes. */
#define CL_STORE_ROW_KEY_MAX_BYTES 400
#define CL_STORE_EVENT_ID_MAX_CHARS 128
#define CL_STORE_USER_ID_MAX_CHARS 256
#define CL_STORE_URL_MAX_BYTES 16777215 /* MEDIUMTEXT */
#define CL_STORE_TOPIC_MAX_CHARS 255
#define CL_STORE_TEXT_MAX_CHARS 1024 /* city, browser, os, device */
#define CL_STORE_USER_AGENT_MAX_CHARS 4096
#define CL_STORE_REASON_MAX_CHARS 1024

/* One valid event, as the store needs it. Mirrors cl_event_t field for field
 * so the caller maps with plain assignments. Strings are NUL-terminated except
 * row_key and url, which carry their length.
 *
 * A row is valid by construction: cl_event_parse (event.h) is the one
 * validation of an event on its way to SQL, and every value it accepts fits
 * its column (present where required, well-formed UTF-8 without NUL, within
 * the limits above, dated within DATETIME; store.c asserts the limits at
 * compile time). The store does not check rows again: a row made by hand
 * must keep to the same rules. */
typedef struct cl_store_row_s {
    const char *row_key;
    size_t row_key_len;
    const char *event_id; /* NULL when absent */
    const char *user_id;
    int64_t ts_ms; /* milliseconds since the Unix epoch, UTC */
    const char *url;
    size_t url_len;
    char country[3];  /* "" when absent */
    const char *city; /* NULL when absent, and so on below */
    const char *browser;
    const char *os;
    const char *device;
    const char *user_agent;
    int64_t time_spent_ms; /* -1 when absent */
    const char *topic;
    int32_t partition;
    int64_t offset;
} cl_store_row_t;

/* A Kafka message that is not a valid event. payload holds the raw bytes (may
 * be ill-formed UTF-8, may be NULL for a tombstone); reason is a sentence (it
 * is cut to CL_STORE_REASON_MAX_CHARS characters and ill-formed bytes in it
 * become '?'). */
typedef struct cl_store_rejected_s {
    const char *topic;
    int32_t partition;
    int64_t offset;
    const char *payload;
    size_t payload_len;
    const char *reason;
} cl_store_rejected_t;

/* Escapes `len` bytes for a single-quoted literal into `to` (2 * len + 1
 * bytes), NUL-terminates, returns the length: cl_db_escape_string. */
typedef size_t (*cl_store_escape_fn)(char *to, const char *from, size_t len);

/* ---- Pure SQL ------------------------------------------------------------ */

/* Append the SQL that migrates a database at `from_version` (0 = empty
 * database) to CL_STORE_SCHEMA_VERSION: each migration's statements followed
 * by the statement recording its version, separated by ";\n". Appends nothing
 * when from_version is current; CL_ERR for versions this code does not know.
 * Migrations must stay idempotent (IF NOT EXISTS forms): DDL commits
 * implicitly, so a crash mid-way re-runs a migration, and two instances
 * starting together may both run it. */
int cl_store_migration_sql(int from_version, cl_buf_t *out, char err[CL_ERR_LEN]);

/* Append one multi-statement transaction storing `rows` and `rejected`:
 *   START TRANSACTION;
 *   INSERT INTO click_data (...) VALUES (...),... ON DUPLICATE KEY UPDATE row_key=row_key;
 *   INSERT INTO agg_pending ...;     (every row: work for the aggregator, aggregate.h)
 *   INSERT INTO geo_data ...;        (rows with a country or a city)
 *   INSERT INTO user_agent_data ...; (rows with any user-agent field)
 *   INSERT INTO rejected_events ... ON DUPLICATE KEY UPDATE id=id;
 *   COMMIT
 * Empty statements are left out; with nothing to store nothing is appended.
 * Rows are written in row_key order and rejected events in (topic,
 * partition, offset) order, so concurrent batches lock keys in the same order
 * and deadlock less. Every value goes through `escape`; absent optional
 * fields are NULL; binary columns use the _binary introducer. The statement
 * grows with the batch: the caller bounds the batch so the text stays under
 * the server's max_allowed_packet (see cl_store_row_sql_bytes and
 * cl_store_max_batch_sql_bytes; cl_store_write_batch checks it). Rows are
 * taken as valid (see cl_store_row_t); rejected events, which no parser
 * checked, are: CL_ERR, naming the one, when its topic is missing, not
 * UTF-8 or too long, its partition or offset negative, or its reason
 * missing. */
int cl_store_build_batch_sql(cl_buf_t *out, const cl_store_row_t *rows, size_t n_rows,
                             const cl_store_rejected_t *rejected, size_t n_rejected,
                             cl_store_escape_fn escape, char err[CL_ERR_LEN]);

/* Sizing a batch before it is built, so that its SQL fits the server's
 * max_allowed_packet: the SQL of a batch is at most
 * CL_STORE_BATCH_SQL_BASE_BYTES plus the sum of cl_store_row_sql_bytes() over
 * its rows and cl_store_rejected_sql_bytes() over its rejected events. Each
 * is an upper bound computed from the exact escaped lengths of the values
 * (every table a row goes to counts: its row key is written four times), at
 * most a few dozen bytes over what the builder writes. */
#define CL_STORE_BATCH_SQL_BASE_BYTES 1024
size_t cl_store_row_sql_bytes(const cl_store_row_t *row);
size_t cl_store_rejected_sql_bytes(const cl_store_rejected_t *rejected);

/* ---- Async operations on a pool ------------------------------------------ */

typedef struct cl_store_s cl_store_t;

typedef struct cl_store_params_s {
    /* Backoff between attempts of a batch after a transient failure or an
     * operator's error; 0 picks 200 ms and 30 s. */
    unsigned int retry_min_ms;
    unsigned int retry_max_ms;
    /* 0, or the largest statement to send when it is below the server's
     * max_allowed_packet (a proxy's own limit): the smaller one counts. */
    uint64_t max_packet_bytes;
} cl_store_params_t;

struct cl_config_s;
/* mariadb.max_allowed_packet; the retry backoff keeps its defaults. */
void cl_store_params_from_config(const struct cl_config_s *config, cl_store_params_t *params);

typedef struct cl_store_migrate_result_s {
    /* 0 or CL_ERR; transient failures are retried, not reported, except that
     * closing the store first ends the wait with CL_ERR_RETRY. */
    int status;
    unsigned int error_code;
    const char *message; /* "" on success */
    int from_version;    /* as found, -1 if never read */
    int to_version;
} cl_store_migrate_result_t;

typedef struct cl_store_batch_result_s {
    /* 0: stored (or already there). CL_ERR: the data is refused
     * (CL_DB_ERROR_DATA: a value the schema refuses, or SQL over the packet
     * limit); nothing of the batch was stored, and the same batch would fail
     * again, smaller ones without the culprit would not. CL_ERR_RETRY: only
     * when the store closed first; whether a cancelled attempt committed is
     * unknown (redelivery is harmless). */
    int status;
    cl_db_error_class_t error_class; /* of error_code: CL_DB_ERROR_DATA with CL_ERR */
    unsigned int error_code;
    const char *message;    /* "" on success */
    uint64_t rows_affected; /* rows newly inserted over all tables; 0 when all were there */
    unsigned int attempts;
} cl_store_batch_result_t;

typedef void (*cl_store_migrate_cb)(void *arg, const cl_store_migrate_result_t *result);
typedef void (*cl_store_batch_cb)(void *arg, const cl_store_batch_result_t *result);

typedef struct cl_store_stats_s {
    uint64_t batches_stored;
    uint64_t batches_failed; /* refused for their data (CL_ERR results) */
    uint64_t batch_retries;  /* attempts after the first */
    uint64_t rows_affected;
    size_t in_flight; /* batches accepted and not yet completed */
} cl_store_stats_t;

int cl_store_new(uv_loop_t *loop, cl_db_pool_t *pool, const cl_store_params_t *params,
                 cl_store_t **out, char err[CL_ERR_LEN]);

/* Create the version table if needed, read the version (and the server's
 * max_allowed_packet) and apply the missing migrations. Transient failures
 * (database down) are retried with backoff until it works; cb gets 0 or a
 * permanent error (for instance a database newer than this code). */
int cl_store_migrate(cl_store_t *store, cl_store_migrate_cb cb, void *arg, char err[CL_ERR_LEN]);

/* Store a batch. The SQL is built before this returns, so `rows`, `rejected`
 * and the strings they point to may be freed as soon as it returns. Needs a
 * successful cl_store_migrate first. Returns CL_ERR (cb never runs) when the
 * builder refuses a rejected event (see above). cb runs once, from the loop:
 * - Transient failures (deadlocks, a lost connection) are retried with
 *   backoff until they succeed.
 * - So are the errors that are not the data's (CL_DB_ERROR_OPERATOR: a
 *   privilege revoked, a table missing, a read-only server, a full disk; and
 *   unclassified ones): the batch waits, and cl_store_blocked() says why,
 *   until an operator has fixed the cause.
 * - An error of the data (CL_DB_ERROR_DATA), or SQL larger than the packet
 *   limit (which is never sent), completes the batch with CL_ERR: the caller
 *   splits it to find the culprit. Except when the server refuses a batch of
 *   rejected events only: rejected_events is where refused data goes, so its
 *   refusal is an operator's matter and is held as above.
 * An empty batch completes with status 0. */
int cl_store_write_batch(cl_store_t *store, const cl_store_row_t *rows, size_t n_rows,
                         const cl_store_rejected_t *rejected, size_t n_rejected,
                         cl_store_batch_cb cb, void *arg, char err[CL_ERR_LEN]);

/* The most SQL one batch should hold: the packet limit (the server's
 * max_allowed_packet as read by cl_store_migrate, or params.max_packet_bytes
 * if smaller) less a margin of 1/16, so that sizing batches with the bounds
 * above never meets the limit. Valid after a successful cl_store_migrate. */
size_t cl_store_max_batch_sql_bytes(const cl_store_t *store);

/* NULL, or why batches are being held: the last error of an operator's kind
 * (see cl_store_write_batch) while at least one batch waits for a retry
 * because of one. For readiness. */
const char *cl_store_blocked(const cl_store_t *store);

void cl_store_stats(const cl_store_t *store, cl_store_stats_t *out);

/* Stop retrying: batches waiting for a retry complete at once with
 * CL_ERR_RETRY; batches running on a connection complete when that query
 * does (with its real outcome). cb runs when none is left, then the store is
 * freed. Close the store before the pool, and close the pool without waiting
 * for cb: closing the pool is what ends queries stuck on a dead server. */
int cl_store_close(cl_store_t *store, cl_close_cb cb, void *arg);

#endif

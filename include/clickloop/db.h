/* db: one non-blocking MariaDB connection on a libuv loop, with the error
 * classification and the parameters every connection shares. The pool that
 * keeps several of them connected is db_pool.h.
 *
 * A connection (cl_db_conn_t) drives MariaDB Connector/C's non-blocking API
 * (`*_start` / `*_cont`) from one uv_poll on the connection's socket and one
 * uv_timer for the library's timeouts, as an explicit state machine. A query
 * may hold several statements; every result set is consumed, rows go to an
 * optional row callback and the outcome to a completion callback.
 *
 * A connection does not log: it reports connected / connect failed / lost to
 * its owner through the event callback, since only the owner knows what comes
 * next (a retry, a close). Its owner in the service is the pool, which logs.
 *
 * Callbacks never run inside the call that started the operation; they run
 * from the loop. If a call that takes a callback fails, the callback never
 * runs (the libuv convention).
 *
 * The process should call mysql_library_init() before creating connections
 * and mysql_library_end() after the loop has closed (main's job). */
#ifndef CLICKLOOP_DB_H
#define CLICKLOOP_DB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "clickloop/common.h"

/* Where and how to connect. Strings are copied; the caller may free them
 * after the call that takes the params returns. */
typedef struct cl_db_params_s {
    /* Whose connections these are ("ingest", "aggregation"...), named in the
     * pool's log lines; NULL means "mariadb". */
    const char *label;
    /* An IP literal or a host name. Names are resolved with uv_getaddrinfo on
     * every (re)connect, never with Connector/C's blocking getaddrinfo. The
     * name "localhost" therefore means TCP to 127.0.0.1 / ::1, not the unix
     * socket that Connector/C would pick for it. Ignored if unix_socket is
     * set. */
    const char *host;
    unsigned int port;       /* 0 means 3306 */
    const char *unix_socket; /* optional path; when set, TCP is not used */
    const char *user;
    const char *password; /* may be NULL or "" */
    const char *database;
    /* Connector/C counts these in whole seconds: values are rounded up to the
     * next second. All three must be set, otherwise the library never reports
     * a timeout and a dead peer hangs a connection forever. The read timeout
     * bounds the longest statement: a batch that runs longer is reported as
     * a lost connection. */
    unsigned int connect_timeout_ms;
    unsigned int read_timeout_ms;
    unsigned int write_timeout_ms;
    /* Pool reconnect backoff: the delay before attempt k is drawn from
     * [d/2, d] with d = min(backoff_max_ms, backoff_min_ms * 2^k). */
    unsigned int backoff_min_ms;
    unsigned int backoff_max_ms;
    /* 0, or the server-side bound on every statement of the session
     * (max_statement_time, ms precision): a statement that the client gave up
     * on (read timeout, shutdown) would otherwise keep running on the server,
     * holding its locks, until it ends by itself. Only for statements that are
     * safe to abort and run again from scratch. */
    unsigned int max_statement_ms;
} cl_db_params_t;

struct cl_config_s;
/* The connection parameters of the `mariadb` section (every part's own
 * connection starts from them; a part may widen its timeouts). */
void cl_db_params_from_config(const struct cl_config_s *config, cl_db_params_t *params);

/* Check params; fills err with a sentence naming the field. */
int cl_db_params_validate(const cl_db_params_t *params, char err[CL_ERR_LEN]);

/* A MariaDB error: the client or server error number (0 if the failure did not
 * come from the library), the SQLSTATE and a message. */
typedef struct cl_db_error_s {
    unsigned int code;
    char sqlstate[6];
    char message[CL_ERR_LEN];
} cl_db_error_t;

/* What an error means for the statement that got it, and so for its caller. */
typedef enum {
    /* Not classified (a syntax error: a bug): retrying the same statement is
     * not expected to help, and nothing says the data is at fault. */
    CL_DB_ERROR_PERMANENT = 0,
    CL_DB_ERROR_TRANSIENT,  /* deadlock, lock wait timeout...: retry, connection is fine */
    CL_DB_ERROR_CONNECTION, /* the connection is gone or unusable: reconnect, then retry */
    /* Needs an operator, whatever the data: credentials, unknown database or
     * host, privileges revoked, a table or column missing or altered, a
     * read-only server, a full disk. Retry slowly and say so. */
    CL_DB_ERROR_OPERATOR,
    /* A value of the statement is refused (strict mode, a constraint, a
     * trigger) or the statement exceeds the server's max_allowed_packet: the
     * same statement fails again, smaller ones without the culprit succeed. */
    CL_DB_ERROR_DATA,
} cl_db_error_class_t;

/* The single place that classifies MariaDB client and server error numbers:
 * one table in db.c. */
cl_db_error_class_t cl_db_error_classify(unsigned int code);
/* CL_ERR_RETRY for TRANSIENT and CONNECTION, CL_ERR for the others. */
int cl_db_error_status(cl_db_error_class_t cls);

/* Escape `len` bytes for use inside a single-quoted SQL string literal and
 * NUL-terminate the result; `to` needs 2 * len + 1 bytes. Returns the length
 * written (without the NUL).
 *
 * This is a pure function rather than mysql_real_escape_string(), so the SQL
 * builders and their tests need no server. It produces the same bytes as
 * mysql_real_escape_string() on a connection whose character set is utf8mb4
 * and whose sql_mode lacks NO_BACKSLASH_ESCAPES, which is what every
 * connection made here uses (db.c sets both): utf8mb4 is ASCII-transparent
 * (no byte of a multi-byte character is below 0x80), so byte-wise escaping
 * of \0 \n \r \\ ' " and ^Z can never split a character. On a handle that
 * never connected, mysql_real_escape_string() uses the library's compiled-in
 * default character set instead of the one requested with
 * MYSQL_SET_CHARSET_NAME, which is why a connection-based variant would need
 * a live connection. Never use this for multi-byte character sets such as
 * GBK or SJIS, where 0x5C can be the second byte of a character. */
size_t cl_db_escape_string(char *to, const char *from, size_t len);
/* The length cl_db_escape_string() would return, without writing: for sizing
 * statements before they are built. */
size_t cl_db_escaped_length(const char *from, size_t len);

/* ---- One connection ---------------------------------------------------- */

typedef struct cl_db_conn_s cl_db_conn_t;

typedef enum {
    CL_DB_CONN_EVENT_NONE = 0,
    CL_DB_CONN_EVENT_CONNECTED,      /* connected and session initialised */
    CL_DB_CONN_EVENT_CONNECT_FAILED, /* error says why; the connection is disconnected */
    CL_DB_CONN_EVENT_LOST,           /* a connected connection broke; now disconnected */
} cl_db_conn_event_t;

typedef void (*cl_db_conn_event_cb)(cl_db_conn_t *conn, cl_db_conn_event_t event,
                                    const cl_db_error_t *error, void *arg);

/* The outcome of a query, valid only during the completion callback. */
typedef struct cl_db_result_s {
    int status;                   /* 0, CL_ERR_RETRY or CL_ERR (see cl_db_error_status) */
    unsigned int error_code;      /* MariaDB error number, 0 on success */
    const char *sqlstate;         /* "00000" on success */
    const char *message;          /* "" on success */
    uint64_t affected_rows_last;  /* of the last statement without a result set */
    uint64_t affected_rows_total; /* summed over statements without a result set */
    unsigned int statements;      /* statements that completed */
} cl_db_result_t;

typedef struct cl_db_query_handlers_s {
    /* Optional. One row of the result set of statement `statement` (0-based
     * index in the query text). values[i] is NULL for SQL NULL; lengths[i] is
     * its length in bytes. The row is valid during the call only. This
     * callback must not start, close or free anything. */
    void (*row)(void *arg, unsigned int statement, unsigned int field_count,
                const char *const *values, const unsigned long *lengths);
    /* Required. Runs exactly once per accepted query. */
    void (*done)(void *arg, const cl_db_result_t *result);
} cl_db_query_handlers_t;

/* Create a disconnected connection. event_cb may be NULL. */
int cl_db_conn_new(uv_loop_t *loop, const cl_db_params_t *params, cl_db_conn_event_cb event_cb,
                   void *event_arg, cl_db_conn_t **out, char err[CL_ERR_LEN]);

/* Start connecting a disconnected connection; the outcome arrives as a
 * CONNECTED or CONNECT_FAILED event. On connect the session runs
 * `SET SESSION sql_mode='STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION',
 * time_zone='+00:00'` (and max_statement_time when params->max_statement_ms
 * is set) with the utf8mb4 character set. */
int cl_db_conn_connect(cl_db_conn_t *conn, char err[CL_ERR_LEN]);

/* Run `sql` (one or more statements separated by ';') on an idle connection.
 * The caller keeps `sql` alive and unchanged until `handlers->done` runs;
 * handlers is copied. One operation at a time per connection (a protocol
 * limit): returns CL_ERR if the connection is not idle.
 *
 * After a failed statement on a live connection, ROLLBACK is run before done
 * is called, so no half-done transaction survives into the next query (with
 * multi-statements the server stops at the failed statement and would leave
 * the transaction open; the next START TRANSACTION would commit it). If the
 * connection breaks, done gets CL_ERR_RETRY and the event callback gets LOST
 * first; the server rolls back what was not committed. */
int cl_db_conn_query(cl_db_conn_t *conn, const char *sql, size_t len,
                     const cl_db_query_handlers_t *handlers, void *arg, char err[CL_ERR_LEN]);

bool cl_db_conn_is_idle(const cl_db_conn_t *conn);

/* Close and free. An operation in flight is cancelled: its done callback gets
 * CL_ERR_RETRY (whether the server committed it is unknown, so callers that
 * need the outcome wait for done before closing). No event is reported after
 * this call. cb runs once every handle is closed and the connection has been
 * freed. */
int cl_db_conn_close(cl_db_conn_t *conn, cl_close_cb cb, void *arg);

#endif

/* db: one non-blocking MariaDB connection on the libuv loop, and the error
 * classification it needs; see include/clickloop/db.h. The pool is
 * db_pool.c.
 *
 * Each connection is a state machine (conn_state_t). In the states that run a
 * Connector/C operation, the library is suspended in a coroutine of its own
 * and has told us what to wait for (MYSQL_WAIT_READ/WRITE/EXCEPT/TIMEOUT); the
 * poll and timer callbacks resume it with `*_cont`. When an operation ends,
 * conn_advance() picks the next state.
 *
 * Rules this file keeps, with the library quirks behind them:
 * - The poll is stopped before every call into the library and restarted
 *   after it with the socket the library reports. Connector/C may close the
 *   socket inside a call (end_server() on any network error) and the number
 *   may be reused by the next socket; libuv would then issue EPOLL_CTL_MOD for
 *   an fd that epoll no longer knows (libuv aborts on that) or keep a stale
 *   registration. Stopping first makes every restart an EPOLL_CTL_ADD.
 * - A poll handle is closed in the same call stack as the library call that
 *   closed its socket, before control returns to the loop: uv_close() on a
 *   poll handle always issues EPOLL_CTL_DEL for its fd number, which must not
 *   hit a descriptor that another handle of this loop registered meanwhile.
 * - mysql_get_socket() is read only while the library waits (it then reports
 *   the socket of the pending operation, including the one being connected)
 *   or while connected.
 * - Rows are read with mysql_store_result_*: a stored result is complete in
 *   memory, so mysql_fetch_row() and mysql_free_result() cannot block
 *   (mariadb_async.c says as much in mysql_fetch_row_start()).
 * - Cancelling: a suspended operation is resumed with MYSQL_WAIT_TIMEOUT. The
 *   library treats it as a timed-out wait (ma_pvio_read_async / write /
 *   my_connect_async return -1), fails the operation and closes the socket.
 * - mysql_close_start() only does I/O (COM_QUIT) while the socket is open;
 *   after a failed connect or a lost connection it frees synchronously.
 *
 * It is just over 1 000 lines because the connection's state machine and the
 * rules above are one concern; the error classification table, the one other
 * thing here, is what every caller of a connection needs with it. */
#include "clickloop/db.h"

#include <arpa/inet.h>
#include <errmsg.h>
#include <mysql.h>
#include <mysqld_error.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "clickloop/config.h"

#define SESSION_INIT_SQL                                                                           \
    "SET SESSION sql_mode='STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION', time_zone='+00:00'"
#define ROLLBACK_SQL "ROLLBACK"
#define DEFAULT_PORT 3306
/* Cancelling normally needs one or two resumptions; past this many, fall back
 * to the library's own waits (bounded by its timeouts) rather than spin. */
#define MAX_CANCEL_KICKS 16

/* ---- Pure helpers ------------------------------------------------------- */

/* Every MariaDB client and server error number clickloop knows what to do
 * about, by what it means for the statement that got it (db.h). Codes not
 * listed are CL_DB_ERROR_PERMANENT. */
static const struct {
    unsigned int code;
    cl_db_error_class_t cls;
} error_classes[] = {
    /* The server or the network went away, or the connection is unusable. */
    {CR_UNKNOWN_ERROR, CL_DB_ERROR_CONNECTION},
    {CR_SOCKET_CREATE_ERROR, CL_DB_ERROR_CONNECTION},
    {CR_CONNECTION_ERROR, CL_DB_ERROR_CONNECTION},
    {CR_CONN_HOST_ERROR, CL_DB_ERROR_CONNECTION},
    {CR_IPSOCK_ERROR, CL_DB_ERROR_CONNECTION},
    {CR_SERVER_GONE_ERROR, CL_DB_ERROR_CONNECTION},
    {CR_SERVER_HANDSHAKE_ERR, CL_DB_ERROR_CONNECTION},
    {CR_SERVER_LOST, CL_DB_ERROR_CONNECTION},
    {CR_COMMANDS_OUT_OF_SYNC, CL_DB_ERROR_CONNECTION},
    {CR_SSL_CONNECTION_ERROR, CL_DB_ERROR_CONNECTION},
    {CR_MALFORMED_PACKET, CL_DB_ERROR_CONNECTION},
    {CR_SERVER_LOST_EXTENDED, CL_DB_ERROR_CONNECTION},
    {CR_ERR_NET_READ, CL_DB_ERROR_CONNECTION},
    {CR_ERR_NET_WRITE, CL_DB_ERROR_CONNECTION},
    {ER_CON_COUNT_ERROR, CL_DB_ERROR_CONNECTION},     /* 1040 too many connections */
    {ER_SERVER_SHUTDOWN, CL_DB_ERROR_CONNECTION},     /* 1053 */
    {ER_FORCING_CLOSE, CL_DB_ERROR_CONNECTION},       /* 1080 */
    {ER_ABORTING_CONNECTION, CL_DB_ERROR_CONNECTION}, /* 1152 */
    {ER_NET_READ_ERROR_FROM_PIPE, CL_DB_ERROR_CONNECTION},
    {ER_NET_FCNTL_ERROR, CL_DB_ERROR_CONNECTION},
    {ER_NET_PACKETS_OUT_OF_ORDER, CL_DB_ERROR_CONNECTION},
    {ER_NET_UNCOMPRESS_ERROR, CL_DB_ERROR_CONNECTION},
    {ER_NET_READ_ERROR, CL_DB_ERROR_CONNECTION},
    {ER_NET_READ_INTERRUPTED, CL_DB_ERROR_CONNECTION},
    {ER_NET_ERROR_ON_WRITE, CL_DB_ERROR_CONNECTION},
    {ER_NET_WRITE_INTERRUPTED, CL_DB_ERROR_CONNECTION}, /* 1161 */
    {ER_TOO_MANY_USER_CONNECTIONS, CL_DB_ERROR_CONNECTION},
    {ER_USER_LIMIT_REACHED, CL_DB_ERROR_CONNECTION},
    {ER_CONNECTION_KILLED, CL_DB_ERROR_CONNECTION}, /* 1927 KILL CONNECTION */

    /* The same statement may succeed if run again; the connection is fine. */
    {ER_LOCK_WAIT_TIMEOUT, CL_DB_ERROR_TRANSIENT},        /* 1205 */
    {ER_LOCK_DEADLOCK, CL_DB_ERROR_TRANSIENT},            /* 1213 */
    {ER_LOCK_TABLE_FULL, CL_DB_ERROR_TRANSIENT},          /* 1206 */
    {ER_QUERY_INTERRUPTED, CL_DB_ERROR_TRANSIENT},        /* 1317 KILL QUERY */
    {ER_STATEMENT_TIMEOUT, CL_DB_ERROR_TRANSIENT},        /* 1969 max_statement_time */
    {ER_OUT_OF_RESOURCES, CL_DB_ERROR_TRANSIENT},         /* 1041 */
    {ER_OUTOFMEMORY, CL_DB_ERROR_TRANSIENT},              /* 1037 */
    {ER_TOO_MANY_CONCURRENT_TRXS, CL_DB_ERROR_TRANSIENT}, /* 1637 */

    /* The server, its schema or its privileges are not what clickloop needs:
     * whatever the data, nothing succeeds until an operator acts. */
    {ER_ACCESS_DENIED_ERROR, CL_DB_ERROR_OPERATOR},   /* 1045 */
    {ER_DBACCESS_DENIED_ERROR, CL_DB_ERROR_OPERATOR}, /* 1044 */
    {ER_BAD_DB_ERROR, CL_DB_ERROR_OPERATOR},          /* 1049 */
    {ER_HOST_IS_BLOCKED, CL_DB_ERROR_OPERATOR},       /* 1129 */
    {ER_HOST_NOT_PRIVILEGED, CL_DB_ERROR_OPERATOR},   /* 1130 */
    {ER_NOT_SUPPORTED_AUTH_MODE, CL_DB_ERROR_OPERATOR},
    {ER_ACCESS_DENIED_NO_PASSWORD_ERROR, CL_DB_ERROR_OPERATOR},
    {ER_MUST_CHANGE_PASSWORD_LOGIN, CL_DB_ERROR_OPERATOR},
    {CR_UNKNOWN_HOST, CL_DB_ERROR_OPERATOR},
    {CR_VERSION_ERROR, CL_DB_ERROR_OPERATOR},
    {CR_CANT_READ_CHARSET, CL_DB_ERROR_OPERATOR},
    {CR_AUTH_PLUGIN_CANNOT_LOAD, CL_DB_ERROR_OPERATOR},
    {CR_AUTH_PLUGIN_ERR, CL_DB_ERROR_OPERATOR},
    /* privileges revoked */
    {ER_TABLEACCESS_DENIED_ERROR, CL_DB_ERROR_OPERATOR},     /* 1142 */
    {ER_COLUMNACCESS_DENIED_ERROR, CL_DB_ERROR_OPERATOR},    /* 1143 */
    {ER_SPECIFIC_ACCESS_DENIED_ERROR, CL_DB_ERROR_OPERATOR}, /* 1227 */
    {ER_PROCACCESS_DENIED_ERROR, CL_DB_ERROR_OPERATOR},      /* 1370 */
    /* a table or a column missing or altered */
    {ER_NO_SUCH_TABLE, CL_DB_ERROR_OPERATOR},            /* 1146 */
    {ER_NO_SUCH_TABLE_IN_ENGINE, CL_DB_ERROR_OPERATOR},  /* 1932 */
    {ER_BAD_TABLE_ERROR, CL_DB_ERROR_OPERATOR},          /* 1051 */
    {ER_UNKNOWN_TABLE, CL_DB_ERROR_OPERATOR},            /* 1109 */
    {ER_BAD_FIELD_ERROR, CL_DB_ERROR_OPERATOR},          /* 1054 */
    {ER_WRONG_VALUE_COUNT_ON_ROW, CL_DB_ERROR_OPERATOR}, /* 1136 */
    {ER_NO_DEFAULT_FOR_FIELD, CL_DB_ERROR_OPERATOR},     /* 1364: a NOT NULL column was added */
    {ER_VIEW_INVALID, CL_DB_ERROR_OPERATOR},             /* 1356 */
    /* a read-only server (--read-only, e.g. a replica after a failover) */
    {ER_OPTION_PREVENTS_STATEMENT, CL_DB_ERROR_OPERATOR}, /* 1290 */
    {ER_READ_ONLY_MODE, CL_DB_ERROR_OPERATOR},            /* 1836 */
    /* a full disk or table */
    {ER_DISK_FULL, CL_DB_ERROR_OPERATOR},        /* 1021 */
    {ER_RECORD_FILE_FULL, CL_DB_ERROR_OPERATOR}, /* 1114 */
    {ER_ERROR_ON_WRITE, CL_DB_ERROR_OPERATOR},   /* 1026 */
    {ER_GET_ERRNO, CL_DB_ERROR_OPERATOR},        /* 1030: the engine's errno, ENOSPC... */

    /* A value of the statement is refused (strict mode, a constraint, a
     * trigger), or the statement is too large for the server's packet: a
     * smaller statement without the culprit succeeds. */
    {ER_DATA_TOO_LONG, CL_DB_ERROR_DATA},                   /* 1406 */
    {ER_TRUNCATED_WRONG_VALUE_FOR_FIELD, CL_DB_ERROR_DATA}, /* 1366 */
    {ER_TRUNCATED_WRONG_VALUE, CL_DB_ERROR_DATA},           /* 1292 */
    {ER_WARN_DATA_OUT_OF_RANGE, CL_DB_ERROR_DATA},          /* 1264 */
    {ER_BAD_NULL_ERROR, CL_DB_ERROR_DATA},                  /* 1048 */
    {ER_WARN_NULL_TO_NOTNULL, CL_DB_ERROR_DATA},            /* 1263 */
    {ER_INVALID_CHARACTER_STRING, CL_DB_ERROR_DATA},        /* 1300 */
    {ER_CANNOT_CONVERT_CHARACTER, CL_DB_ERROR_DATA},        /* 1977 */
    {ER_DIVISION_BY_ZERO, CL_DB_ERROR_DATA},                /* 1365 */
    {ER_ILLEGAL_VALUE_FOR_TYPE, CL_DB_ERROR_DATA},          /* 1367 */
    {ER_WRONG_VALUE_FOR_TYPE, CL_DB_ERROR_DATA},            /* 1411 */
    {ER_DATETIME_FUNCTION_OVERFLOW, CL_DB_ERROR_DATA},      /* 1441 */
    {ER_TOO_BIG_ROWSIZE, CL_DB_ERROR_DATA},                 /* 1118 */
    {ER_CONSTRAINT_FAILED, CL_DB_ERROR_DATA},               /* 4025 CHECK */
    {ER_SIGNAL_EXCEPTION, CL_DB_ERROR_DATA},                /* 1644 a trigger's SIGNAL */
    {ER_DUP_ENTRY, CL_DB_ERROR_DATA},                       /* 1062 a unique key added */
    {ER_DUP_ENTRY_WITH_KEY_NAME, CL_DB_ERROR_DATA},         /* 1586 */
    {ER_NO_REFERENCED_ROW_2, CL_DB_ERROR_DATA},             /* 1452 a foreign key added */
    /* The server refuses the statement and closes the connection (08S01);
     * the client refuses to send it. */
    {ER_NET_PACKET_TOO_LARGE, CL_DB_ERROR_DATA}, /* 1153 */
    {CR_NET_PACKET_TOO_LARGE, CL_DB_ERROR_DATA}, /* 2020 */
};

cl_db_error_class_t cl_db_error_classify(unsigned int code)
{
    for (size_t i = 0; i < CL_ARRAY_LEN(error_classes); i++) {
        if (error_classes[i].code == code)
            return error_classes[i].cls;
    }
    return CL_DB_ERROR_PERMANENT;
}

int cl_db_error_status(cl_db_error_class_t cls)
{
    return cls == CL_DB_ERROR_TRANSIENT || cls == CL_DB_ERROR_CONNECTION ? CL_ERR_RETRY : CL_ERR;
}

/* The byte that follows the backslash when `c` must be escaped, else 0. */
static char escape_code(char c)
{
    switch (c) {
    case '\0':
        return '0';
    case '\n':
        return 'n';
    case '\r':
        return 'r';
    case '\032':
        return 'Z';
    case '\\':
    case '\'':
    case '"':
        return c;
    default:
        return 0;
    }
}

size_t cl_db_escape_string(char *to, const char *from, size_t len)
{
    char *out = to;
    for (size_t i = 0; i < len; i++) {
        char esc = escape_code(from[i]);
        if (esc != 0) {
            *out++ = '\\';
            *out++ = esc;
        } else {
            *out++ = from[i];
        }
    }
    *out = '\0';
    return (size_t)(out - to);
}

size_t cl_db_escaped_length(const char *from, size_t len)
{
    size_t n = len;
    for (size_t i = 0; i < len; i++)
        n += escape_code(from[i]) != 0;
    return n;
}

static bool is_empty(const char *s)
{
    return s == NULL || s[0] == '\0';
}

void cl_db_params_from_config(const cl_config_t *c, cl_db_params_t *p)
{
    memset(p, 0, sizeof *p);
    p->host = c->mariadb.host;
    p->port = c->mariadb.port;
    p->unix_socket = c->mariadb.socket;
    p->user = c->mariadb.user;
    p->password = c->mariadb.password;
    p->database = c->mariadb.database;
    p->connect_timeout_ms = (unsigned)c->mariadb.connect_timeout_ms;
    p->read_timeout_ms = (unsigned)c->mariadb.read_timeout_ms;
    p->write_timeout_ms = (unsigned)c->mariadb.write_timeout_ms;
    p->backoff_min_ms = (unsigned)c->mariadb.reconnect_min_backoff_ms;
    p->backoff_max_ms = (unsigned)c->mariadb.reconnect_max_backoff_ms;
}

int cl_db_params_validate(const cl_db_params_t *p, char err[CL_ERR_LEN])
{
    if (is_empty(p->host) && is_empty(p->unix_socket))
        return cl_errorf(err, "database: set host or unix_socket");
    if (is_empty(p->user))
        return cl_errorf(err, "database: user is required");
    if (is_empty(p->database))
        return cl_errorf(err, "database: database name is required");
    if (p->port > 65535)
        return cl_errorf(err, "database: port %u is out of range 1-65535", p->port);
    if (p->connect_timeout_ms == 0 || p->read_timeout_ms == 0 || p->write_timeout_ms == 0)
        return cl_errorf(err, "database: connect, read and write timeouts must all be set "
                              "(without them a dead server is never noticed)");
    if (p->backoff_min_ms == 0 || p->backoff_max_ms < p->backoff_min_ms)
        return cl_errorf(err, "database: need 0 < backoff_min_ms (%u) <= backoff_max_ms (%u)",
                         p->backoff_min_ms, p->backoff_max_ms);
    if (p->unix_socket != NULL && strlen(p->unix_socket) >= 108)
        return cl_errorf(err, "database: unix_socket path is longer than 107 bytes");
    return CL_OK;
}

static void error_set(cl_db_error_t *e, unsigned int code, const char *sqlstate, const char *fmt,
                      ...) __attribute__((format(printf, 4, 5)));

static void error_set(cl_db_error_t *e, unsigned int code, const char *sqlstate, const char *fmt,
                      ...)
{
    e->code = code;
    snprintf(e->sqlstate, sizeof e->sqlstate, "%s", sqlstate);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
}

static void error_clear(cl_db_error_t *e)
{
    error_set(e, 0, "00000", "%s", "");
}

/* ---- Connection ----------------------------------------------------------- */

typedef enum {
    CONN_DISCONNECTED,  /* no MYSQL handle */
    CONN_RESOLVING,     /* uv_getaddrinfo in flight */
    CONN_CONNECTING,    /* mysql_real_connect_start/_cont */
    CONN_IDLE,          /* connected; polls for the server closing the connection */
    CONN_QUERY,         /* mysql_real_query_start/_cont */
    CONN_STORE_RESULT,  /* mysql_store_result_start/_cont */
    CONN_NEXT_RESULT,   /* mysql_next_result_start/_cont */
    CONN_DISCONNECTING, /* mysql_close_start/_cont */
    CONN_COMPLETING,    /* outcome ready, callbacks due (deferred if inside an API call) */
    CONN_CLOSED,        /* handles closing; freed when the last close callback runs */
} conn_state_t;

/* What the statement text running in CONN_QUERY..CONN_NEXT_RESULT is for. */
typedef enum {
    STMT_SESSION_INIT,
    STMT_USER,
    STMT_ROLLBACK, /* after a failed user statement; the user's error stands */
} stmt_kind_t;

/* A poll handle lives as long as one socket: the library may replace the
 * socket (connect) and a uv_poll is bound to one fd at init. */
typedef struct conn_poll_s {
    uv_poll_t handle;
    cl_db_conn_t *conn;
    int fd;
} conn_poll_t;

struct cl_db_conn_s {
    uv_loop_t *loop;
    conn_state_t state;
    MYSQL *mysql;

    char *host;
    char *unix_socket;
    char *user;
    char *password;
    char *database;
    unsigned int port;
    unsigned int connect_timeout_s, read_timeout_s, write_timeout_s;
    char session_init[160];      /* SESSION_INIT_SQL, and max_statement_time if set */
    char addr[INET6_ADDRSTRLEN]; /* numeric address handed to Connector/C */

    uv_getaddrinfo_t resolve_req;
    bool resolving;
    unsigned int resolve_round; /* rotates through a name's addresses per attempt */
    uv_timer_t timer;           /* library timeouts, cancellation kicks, deferred completion */
    conn_poll_t *poll;          /* NULL when no socket is watched */
    unsigned int open_handles;

    /* Return slots of the library calls. */
    MYSQL *connect_ret;
    int int_ret;
    MYSQL_RES *res;

    stmt_kind_t stmt_kind;
    const char *sql;
    size_t sql_len;

    /* The user query (valid while user_pending). */
    bool user_pending;
    cl_db_query_handlers_t handlers;
    void *handler_arg;
    unsigned int statement; /* index of the running statement */
    uint64_t affected_last, affected_total;
    bool user_failed;
    cl_db_error_t error;       /* the user query's failure, or the connect failure */
    cl_db_error_t event_error; /* what CONNECT_FAILED or LOST reports */

    /* Deliveries due in CONN_COMPLETING. */
    conn_state_t next_state;
    cl_db_conn_event_t pending_event;
    bool pending_done;
    cl_db_conn_event_t teardown_event; /* reported once DISCONNECTING ends */

    cl_db_conn_event_cb event_cb;
    void *event_arg;
    unsigned int in_api; /* > 0 while inside a public call: defer callbacks */
    bool closing;
    unsigned int cancel_kicks;
    cl_close_cb close_cb;
    void *close_arg;
};

static void conn_run(cl_db_conn_t *c, bool start, int events);
static void conn_close_step(cl_db_conn_t *c);
static void on_conn_timer(uv_timer_t *t);

static unsigned int ms_to_seconds_up(unsigned int ms)
{
    return ms / 1000 + (ms % 1000 != 0);
}

int cl_db_conn_new(uv_loop_t *loop, const cl_db_params_t *p, cl_db_conn_event_cb event_cb,
                   void *event_arg, cl_db_conn_t **out, char err[CL_ERR_LEN])
{
    if (cl_db_params_validate(p, err) != CL_OK)
        return CL_ERR;
    cl_db_conn_t *c = cl_xcalloc(1, sizeof *c);
    int rc = uv_timer_init(loop, &c->timer);
    if (rc != 0) {
        free(c);
        return cl_errorf(err, "database: cannot create a timer: %s", uv_strerror(rc));
    }
    c->timer.data = c;
    c->open_handles = 1;
    c->loop = loop;
    c->state = CONN_DISCONNECTED;
    c->host = is_empty(p->host) ? NULL : cl_xstrdup(p->host);
    c->unix_socket = is_empty(p->unix_socket) ? NULL : cl_xstrdup(p->unix_socket);
    c->user = cl_xstrdup(p->user);
    c->password = cl_xstrdup(p->password != NULL ? p->password : "");
    c->database = cl_xstrdup(p->database);
    c->port = p->port != 0 ? p->port : DEFAULT_PORT;
    c->connect_timeout_s = ms_to_seconds_up(p->connect_timeout_ms);
    c->read_timeout_s = ms_to_seconds_up(p->read_timeout_ms);
    c->write_timeout_s = ms_to_seconds_up(p->write_timeout_ms);
    if (p->max_statement_ms > 0)
        snprintf(c->session_init, sizeof c->session_init, "%s, max_statement_time=%u.%03u",
                 SESSION_INIT_SQL, p->max_statement_ms / 1000, p->max_statement_ms % 1000);
    else
        snprintf(c->session_init, sizeof c->session_init, "%s", SESSION_INIT_SQL);
    c->event_cb = event_cb;
    c->event_arg = event_arg;
    error_clear(&c->error);
    *out = c;
    return CL_OK;
}

bool cl_db_conn_is_idle(const cl_db_conn_t *c)
{
    return c->state == CONN_IDLE && !c->closing;
}

/* ---- Watching the socket ---- */

static void on_poll_closed(uv_handle_t *h)
{
    conn_poll_t *p = h->data;
    cl_db_conn_t *c = p->conn;
    free(p);
    c->open_handles--;
    conn_close_step(c);
}

/* Close the poll handle now, in the call stack that closed (or is about to
 * give up) its socket; see the rules at the top of the file. */
static void conn_poll_discard(cl_db_conn_t *c)
{
    if (c->poll == NULL)
        return;
    uv_close((uv_handle_t *)&c->poll->handle, on_poll_closed);
    c->poll = NULL;
}

static int conn_poll_open(cl_db_conn_t *c, int fd)
{
    conn_poll_t *p = cl_xcalloc(1, sizeof *p);
    int rc = uv_poll_init_socket(c->loop, &p->handle, fd);
    if (rc != 0) {
        free(p);
        return rc;
    }
    p->handle.data = p;
    p->conn = c;
    p->fd = fd;
    c->poll = p;
    c->open_handles++;
    return 0;
}

static void conn_io_pause(cl_db_conn_t *c)
{
    if (c->poll != NULL)
        uv_poll_stop(&c->poll->handle);
    uv_timer_stop(&c->timer);
}

/* Resume the suspended operation with a timeout from a fresh loop iteration:
 * used to cancel (closing) and when the socket cannot be watched. */
static void conn_kick(cl_db_conn_t *c)
{
    uv_timer_start(&c->timer, on_conn_timer, 0, 0);
}

static void on_conn_poll(uv_poll_t *h, int status, int uv_events);

static int poll_events_for(int wait)
{
    int ev = 0;
    if (wait & MYSQL_WAIT_READ)
        ev |= UV_READABLE;
    if (wait & MYSQL_WAIT_WRITE)
        ev |= UV_WRITABLE;
    if (wait & MYSQL_WAIT_EXCEPT)
        ev |= UV_PRIORITIZED;
    return ev;
}

/* The library is suspended and waits for `wait`. */
static void conn_io_wait(cl_db_conn_t *c, int wait)
{
    if (c->closing && c->cancel_kicks < MAX_CANCEL_KICKS) {
        c->cancel_kicks++;
        conn_kick(c);
        return;
    }
    int uv_events = poll_events_for(wait);
    if (uv_events != 0) {
        int fd = (int)mysql_get_socket(c->mysql);
        if (c->poll != NULL && c->poll->fd != fd)
            conn_poll_discard(c);
        if ((c->poll == NULL && (fd < 0 || conn_poll_open(c, fd) != 0)) ||
            uv_poll_start(&c->poll->handle, uv_events, on_conn_poll) != 0) {
            /* Cannot watch the socket: make the library give up. */
            conn_kick(c);
            return;
        }
    }
    if (wait & MYSQL_WAIT_TIMEOUT)
        uv_timer_start(&c->timer, on_conn_timer, mysql_get_timeout_value_ms(c->mysql), 0);
}

/* Connected and idle: the server sends nothing unprompted, so readability
 * means it closed the connection (KILL, wait_timeout, shutdown). Noticing it
 * now lets the pool reconnect before the next query fails. */
static void conn_watch_idle(cl_db_conn_t *c)
{
    int fd = (int)mysql_get_socket(c->mysql);
    if (c->poll != NULL && c->poll->fd != fd)
        conn_poll_discard(c);
    if (c->poll == NULL && (fd < 0 || conn_poll_open(c, fd) != 0))
        return; /* the next query will find out */
    uv_poll_start(&c->poll->handle, UV_READABLE | UV_DISCONNECT, on_conn_poll);
}

/* ---- Delivering outcomes ---- */

static void conn_deliver(cl_db_conn_t *c)
{
    cl_db_conn_event_t event = c->pending_event;
    bool done = c->pending_done;
    c->pending_event = CL_DB_CONN_EVENT_NONE;
    c->pending_done = false;
    c->state = c->next_state;
    if (c->state == CONN_IDLE)
        conn_watch_idle(c);

    /* Copy what the callbacks see: they may start the next query, which
     * reuses these fields. */
    cl_db_error_t error = c->error;
    cl_db_error_t event_error = c->event_error;
    cl_db_query_handlers_t handlers = c->handlers;
    void *handler_arg = c->handler_arg;
    cl_db_result_t result = {
        .status = CL_OK,
        .error_code = 0,
        .sqlstate = "00000",
        .message = "",
        .affected_rows_last = c->affected_last,
        .affected_rows_total = c->affected_total,
        .statements = c->statement,
    };
    if (done) {
        c->user_pending = false;
        if (c->user_failed) {
            result.status = cl_db_error_status(cl_db_error_classify(error.code));
            result.error_code = error.code;
            result.sqlstate = error.sqlstate;
            result.message = error.message;
        }
    }

    if (event != CL_DB_CONN_EVENT_NONE && !c->closing && c->event_cb != NULL)
        c->event_cb(c, event, &event_error, c->event_arg);
    if (done)
        handlers.done(handler_arg, &result);
    if (c->closing)
        conn_close_step(c);
}

/* The current operation is over: report it, now or from the loop. */
static void conn_finish(cl_db_conn_t *c, conn_state_t next, cl_db_conn_event_t event, bool done)
{
    c->state = CONN_COMPLETING;
    c->next_state = next;
    c->pending_event = event;
    c->pending_done = done;
    if (c->in_api > 0) {
        conn_kick(c);
        return;
    }
    conn_deliver(c);
}

/* ---- The state machine ---- */

static void conn_error_from_mysql(cl_db_conn_t *c, const char *what)
{
    unsigned int code = mysql_errno(c->mysql);
    const char *state = mysql_sqlstate(c->mysql);
    const char *msg = mysql_error(c->mysql);
    if (c->closing) {
        error_set(&c->error, CR_SERVER_LOST, "HY000",
                  "%s cancelled: the connection was closed while it was in flight", what);
        return;
    }
    error_set(&c->error, code, state != NULL ? state : "HY000", "%s failed: %s (MariaDB error %u)",
              what, msg != NULL && msg[0] != '\0' ? msg : "unknown error", code);
}

/* Tear the connection down; `event` (with `why`) is reported once it is
 * closed. */
static bool conn_begin_disconnect(cl_db_conn_t *c, cl_db_conn_event_t event,
                                  const cl_db_error_t *why)
{
    c->teardown_event = event;
    if (why != NULL)
        c->event_error = *why;
    c->state = CONN_DISCONNECTING;
    return true;
}

static bool stmt_begin(cl_db_conn_t *c, stmt_kind_t kind, const char *sql, size_t len)
{
    c->stmt_kind = kind;
    c->sql = sql;
    c->sql_len = len;
    c->state = CONN_QUERY;
    return true;
}

static bool stmt_succeeded(cl_db_conn_t *c)
{
    switch (c->stmt_kind) {
    case STMT_SESSION_INIT:
        conn_finish(c, CONN_IDLE, CL_DB_CONN_EVENT_CONNECTED, false);
        return false;
    case STMT_USER:
    case STMT_ROLLBACK:
        conn_finish(c, CONN_IDLE, CL_DB_CONN_EVENT_NONE, true);
        return false;
    }
    return false;
}

static bool stmt_failed(cl_db_conn_t *c)
{
    switch (c->stmt_kind) {
    case STMT_SESSION_INIT:
        conn_error_from_mysql(c, "session initialisation");
        return conn_begin_disconnect(c, CL_DB_CONN_EVENT_CONNECT_FAILED, &c->error);
    case STMT_USER:
        conn_error_from_mysql(c, "query");
        c->user_failed = true;
        if (c->closing || cl_db_error_classify(c->error.code) == CL_DB_ERROR_CONNECTION)
            return conn_begin_disconnect(c, CL_DB_CONN_EVENT_LOST, &c->error);
        return stmt_begin(c, STMT_ROLLBACK, ROLLBACK_SQL, strlen(ROLLBACK_SQL));
    case STMT_ROLLBACK: {
        /* The user's error stands (c->error); the rollback's own failure only
         * matters if it broke the connection. */
        cl_db_error_t user_error = c->error;
        conn_error_from_mysql(c, "ROLLBACK after a failed statement");
        cl_db_error_t rollback_error = c->error;
        c->error = user_error;
        if (c->closing || cl_db_error_classify(rollback_error.code) == CL_DB_ERROR_CONNECTION)
            return conn_begin_disconnect(c, CL_DB_CONN_EVENT_LOST, &rollback_error);
        conn_finish(c, CONN_IDLE, CL_DB_CONN_EVENT_NONE, true);
        return false;
    }
    }
    return false;
}

/* A stored result set is complete in memory: fetching cannot block. */
static void conn_deliver_rows(cl_db_conn_t *c, MYSQL_RES *res)
{
    if (c->stmt_kind != STMT_USER || c->handlers.row == NULL)
        return;
    unsigned int fields = mysql_num_fields(res);
    MYSQL_ROW row;
    while ((row = mysql_fetch_row(res)) != NULL) {
        const unsigned long *lengths = mysql_fetch_lengths(res);
        c->handlers.row(c->handler_arg, c->statement, fields, (const char *const *)row, lengths);
    }
}

/* The library finished the operation of the current state: choose the next
 * state. Returns true when a new library operation must be started. */
static bool conn_advance(cl_db_conn_t *c)
{
    switch (c->state) {
    case CONN_CONNECTING:
        if (c->connect_ret == NULL) {
            char what[CL_ERR_LEN / 2];
            if (c->unix_socket != NULL)
                snprintf(what, sizeof what, "connect to %s (database %s, user %s)", c->unix_socket,
                         c->database, c->user);
            else
                snprintf(what, sizeof what, "connect to %s:%u (database %s, user %s)", c->addr,
                         c->port, c->database, c->user);
            conn_error_from_mysql(c, what);
            return conn_begin_disconnect(c, CL_DB_CONN_EVENT_CONNECT_FAILED, &c->error);
        }
        return stmt_begin(c, STMT_SESSION_INIT, c->session_init, strlen(c->session_init));
    case CONN_QUERY:
        if (c->int_ret != 0)
            return stmt_failed(c);
        c->state = CONN_STORE_RESULT;
        return true;
    case CONN_STORE_RESULT:
        if (c->res != NULL) {
            conn_deliver_rows(c, c->res);
            mysql_free_result(c->res);
            c->res = NULL;
        } else if (mysql_field_count(c->mysql) != 0) {
            return stmt_failed(c); /* a result set was due but could not be read */
        } else if (c->stmt_kind == STMT_USER) {
            c->affected_last = mysql_affected_rows(c->mysql);
            c->affected_total += c->affected_last;
        }
        if (c->stmt_kind == STMT_USER)
            c->statement++;
        c->state = CONN_NEXT_RESULT;
        return true;
    case CONN_NEXT_RESULT:
        if (c->int_ret == 0) {
            c->state = CONN_STORE_RESULT;
            return true;
        }
        if (c->int_ret > 0)
            return stmt_failed(c);
        return stmt_succeeded(c); /* -1: no more results */
    case CONN_DISCONNECTING:
        /* mysql_close() has freed the handle and closed the socket. */
        c->mysql = NULL;
        conn_poll_discard(c);
        conn_finish(c, CONN_DISCONNECTED, c->teardown_event, c->user_pending);
        return false;
    default:
        return false;
    }
}

/* Start (start == true) or resume the library operation of the current
 * state; returns the library's wait mask, 0 when the operation is over. */
static int conn_call(cl_db_conn_t *c, bool start, int events)
{
    switch (c->state) {
    case CONN_CONNECTING:
        if (start)
            return mysql_real_connect_start(
                &c->connect_ret, c->mysql, c->unix_socket != NULL ? NULL : c->addr, c->user,
                c->password, c->database, c->port, c->unix_socket, CLIENT_MULTI_STATEMENTS);
        return mysql_real_connect_cont(&c->connect_ret, c->mysql, events);
    case CONN_QUERY:
        if (start)
            return mysql_real_query_start(&c->int_ret, c->mysql, c->sql, (unsigned long)c->sql_len);
        return mysql_real_query_cont(&c->int_ret, c->mysql, events);
    case CONN_STORE_RESULT:
        if (start)
            return mysql_store_result_start(&c->res, c->mysql);
        return mysql_store_result_cont(&c->res, c->mysql, events);
    case CONN_NEXT_RESULT:
        if (start)
            return mysql_next_result_start(&c->int_ret, c->mysql);
        return mysql_next_result_cont(&c->int_ret, c->mysql, events);
    case CONN_DISCONNECTING:
        if (start)
            return mysql_close_start(c->mysql);
        return mysql_close_cont(c->mysql, events);
    default:
        return 0;
    }
}

static void conn_run(cl_db_conn_t *c, bool start, int events)
{
    for (;;) {
        conn_io_pause(c);
        int wait = conn_call(c, start, events);
        if (wait != 0) {
            conn_io_wait(c, wait);
            return;
        }
        if (!conn_advance(c))
            return;
        start = true;
        events = 0;
    }
}

static void on_conn_poll(uv_poll_t *h, int status, int uv_events)
{
    conn_poll_t *p = h->data;
    cl_db_conn_t *c = p->conn;
    if (c->state == CONN_IDLE) {
        cl_db_error_t why;
        error_set(&why, CR_SERVER_GONE_ERROR, "HY000",
                  "the server closed the idle connection (killed, wait_timeout or shutdown)");
        conn_begin_disconnect(c, CL_DB_CONN_EVENT_LOST, &why);
        conn_run(c, true, 0);
        return;
    }
    int events = 0;
    if (status < 0) {
        /* Let the library try both directions and find the error itself. */
        events = MYSQL_WAIT_READ | MYSQL_WAIT_WRITE;
    } else {
        if (uv_events & (UV_READABLE | UV_DISCONNECT))
            events |= MYSQL_WAIT_READ;
        if (uv_events & UV_WRITABLE)
            events |= MYSQL_WAIT_WRITE;
        if (uv_events & UV_PRIORITIZED)
            events |= MYSQL_WAIT_EXCEPT;
    }
    conn_run(c, false, events);
}

static void on_conn_timer(uv_timer_t *t)
{
    cl_db_conn_t *c = t->data;
    switch (c->state) {
    case CONN_CONNECTING:
    case CONN_QUERY:
    case CONN_STORE_RESULT:
    case CONN_NEXT_RESULT:
    case CONN_DISCONNECTING:
        conn_run(c, false, MYSQL_WAIT_TIMEOUT);
        break;
    case CONN_COMPLETING:
        conn_deliver(c);
        break;
    default:
        if (c->closing)
            conn_close_step(c);
        break;
    }
}

static void conn_start_connecting(cl_db_conn_t *c)
{
    MYSQL *m = mysql_init(NULL);
    if (m == NULL)
        cl_panic("out of memory in mysql_init");
    /* MYSQL_OPT_NONBLOCK allocates the coroutine stack: required before any
     * *_start call. */
    if (mysql_options(m, MYSQL_OPT_NONBLOCK, 0) != 0)
        cl_panic("out of memory enabling MYSQL_OPT_NONBLOCK");
    mysql_options(m, MYSQL_OPT_CONNECT_TIMEOUT, &c->connect_timeout_s);
    mysql_options(m, MYSQL_OPT_READ_TIMEOUT, &c->read_timeout_s);
    mysql_options(m, MYSQL_OPT_WRITE_TIMEOUT, &c->write_timeout_s);
    mysql_options(m, MYSQL_SET_CHARSET_NAME, "utf8mb4");
    unsigned int protocol = c->unix_socket != NULL ? MYSQL_PROTOCOL_SOCKET : MYSQL_PROTOCOL_TCP;
    mysql_options(m, MYSQL_OPT_PROTOCOL, &protocol);
    unsigned int local_infile = 0; /* never let the server read client files */
    mysql_options(m, MYSQL_OPT_LOCAL_INFILE, &local_infile);
    c->mysql = m;
    c->connect_ret = NULL;
    c->state = CONN_CONNECTING;
    conn_run(c, true, 0);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    cl_db_conn_t *c = req->data;
    c->resolving = false;
    if (c->closing) {
        uv_freeaddrinfo(res);
        c->state = CONN_DISCONNECTED;
        conn_close_step(c);
        return;
    }
    int rc = status;
    if (rc == 0 && res != NULL) {
        /* Connector/C would try every address in one connect; we try one per
         * attempt, rotating, so a dead address family (a server listening on
         * 127.0.0.1 only, "localhost" resolving to ::1 first) costs one retry. */
        unsigned int count = 0;
        for (struct addrinfo *a = res; a != NULL; a = a->ai_next)
            count++;
        struct addrinfo *pick = res;
        for (unsigned int i = c->resolve_round++ % count; i > 0; i--)
            pick = pick->ai_next;
        if (pick->ai_family == AF_INET6)
            rc = uv_ip6_name((const struct sockaddr_in6 *)pick->ai_addr, c->addr, sizeof c->addr);
        else
            rc = uv_ip4_name((const struct sockaddr_in *)pick->ai_addr, c->addr, sizeof c->addr);
    }
    uv_freeaddrinfo(res);
    if (rc != 0 || res == NULL) {
        /* A name that does not exist needs an operator; a resolver that is
         * down (EAI_AGAIN...) heals by itself. */
        bool unknown = rc == 0 || rc == UV_EAI_NONAME || rc == UV_EAI_NODATA;
        error_set(&c->event_error, unknown ? CR_UNKNOWN_HOST : CR_CONN_HOST_ERROR, "HY000",
                  "cannot resolve database host \"%s\": %s", c->host,
                  rc != 0 ? uv_strerror(rc) : "no address");
        conn_finish(c, CONN_DISCONNECTED, CL_DB_CONN_EVENT_CONNECT_FAILED, false);
        return;
    }
    conn_start_connecting(c);
}

static bool is_ip_literal(const char *host)
{
    unsigned char buf[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}

int cl_db_conn_connect(cl_db_conn_t *c, char err[CL_ERR_LEN])
{
    if (c->closing || c->state != CONN_DISCONNECTED)
        return cl_errorf(err, "database: connect needs a disconnected connection");
    error_clear(&c->error);
    if (c->unix_socket == NULL && !is_ip_literal(c->host)) {
        struct addrinfo hints;
        memset(&hints, 0, sizeof hints);
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = SOCK_STREAM;
        c->resolve_req.data = c;
        int rc = uv_getaddrinfo(c->loop, &c->resolve_req, on_resolved, c->host, NULL, &hints);
        if (rc != 0)
            return cl_errorf(err, "database: cannot start resolving \"%s\": %s", c->host,
                             uv_strerror(rc));
        c->resolving = true;
        c->state = CONN_RESOLVING;
        return CL_OK;
    }
    if (c->unix_socket == NULL)
        snprintf(c->addr, sizeof c->addr, "%s", c->host);
    c->in_api++;
    conn_start_connecting(c);
    c->in_api--;
    return CL_OK;
}

int cl_db_conn_query(cl_db_conn_t *c, const char *sql, size_t len,
                     const cl_db_query_handlers_t *handlers, void *arg, char err[CL_ERR_LEN])
{
    if (handlers == NULL || handlers->done == NULL)
        return cl_errorf(err, "database: a query needs a done callback");
    if (!cl_db_conn_is_idle(c))
        return cl_errorf(err, "database: the connection is not idle (one query at a time)");
    c->user_pending = true;
    c->handlers = *handlers;
    c->handler_arg = arg;
    c->statement = 0;
    c->affected_last = 0;
    c->affected_total = 0;
    c->user_failed = false;
    error_clear(&c->error);
    stmt_begin(c, STMT_USER, sql, len);
    c->in_api++;
    conn_run(c, true, 0);
    c->in_api--;
    return CL_OK;
}

static void on_conn_timer_closed(uv_handle_t *h)
{
    cl_db_conn_t *c = h->data;
    c->open_handles--;
    conn_close_step(c);
}

/* Advance a closing connection; safe to call repeatedly. */
static void conn_close_step(cl_db_conn_t *c)
{
    if (!c->closing)
        return;
    switch (c->state) {
    case CONN_IDLE:
        conn_begin_disconnect(c, CL_DB_CONN_EVENT_NONE, NULL);
        conn_run(c, true, 0);
        break;
    case CONN_DISCONNECTED:
        c->state = CONN_CLOSED;
        conn_poll_discard(c);
        uv_close((uv_handle_t *)&c->timer, on_conn_timer_closed);
        break;
    case CONN_CLOSED:
        if (c->open_handles == 0 && !c->resolving) {
            cl_close_cb cb = c->close_cb;
            void *arg = c->close_arg;
            free(c->host);
            free(c->unix_socket);
            free(c->user);
            free(c->password);
            free(c->database);
            free(c);
            if (cb != NULL)
                cb(arg);
        }
        break;
    default:
        /* Library operations are cancelled from the timer (conn_kick);
         * resolving ends in on_resolved; completing in conn_deliver. */
        break;
    }
}

int cl_db_conn_close(cl_db_conn_t *c, cl_close_cb cb, void *arg)
{
    if (c->closing)
        return CL_ERR;
    c->closing = true;
    c->close_cb = cb;
    c->close_arg = arg;
    if (c->state == CONN_RESOLVING)
        uv_cancel((uv_req_t *)&c->resolve_req); /* on_resolved runs either way */
    else
        conn_kick(c);
    return CL_OK;
}

/* Unit tests for resizing the db pool while it runs, on a real libuv loop
 * against a fake MariaDB server in this file: it speaks just enough of the
 * client/server protocol for Connector/C to connect (handshake, OK to the
 * handshake response and to every command) and holds the answer to any query
 * containing "hold" until the test releases it, so a connection stays busy
 * for as long as a test needs. The pool logs its connections' events itself:
 * the tests read them from stderr, which each world redirects into a
 * temporary file. Every test closes the pool and the server and checks that
 * the loop closes cleanly. */
#include "clickloop/db_pool.h"

#include <mysql.h>
#include <stdlib.h>
#include <string.h>

#include "clickloop/log.h"

#include "cl_test.h"
#include "cl_log_capture.h"

/* ---- A fake server ---------------------------------------------------------- */

typedef struct fake_conn_s fake_conn_t;

typedef struct {
    uv_tcp_t listener;
    unsigned int port;
    fake_conn_t *conns; /* every accepted connection, freed by fake_server_free */
    unsigned int accepted;
    unsigned int open;     /* accepted and not yet closed by either side */
    unsigned int held;     /* queries whose answer waits for fake_release */
    char first_query[256]; /* text of the first COM_QUERY (the session set-up) */
} fake_server_t;

struct fake_conn_s {
    uv_tcp_t tcp;
    fake_server_t *server;
    fake_conn_t *next;
    unsigned char in[4096];
    size_t in_len;
    bool greeted; /* the client's handshake response was answered */
    bool held;
    bool closed;
};

typedef struct {
    uv_write_t req;
    unsigned char data[];
} fake_write_t;

static void on_fake_written(uv_write_t *req, int status)
{
    CL_UNUSED(status); /* the client may have gone meanwhile */
    free(req);
}

static void fake_send(fake_conn_t *c, unsigned char seq, const unsigned char *payload, size_t len)
{
    fake_write_t *w = cl_xmalloc(sizeof *w + 4 + len);
    w->data[0] = (unsigned char)(len & 0xff);
    w->data[1] = (unsigned char)((len >> 8) & 0xff);
    w->data[2] = (unsigned char)((len >> 16) & 0xff);
    w->data[3] = seq;
    memcpy(w->data + 4, payload, len);
    uv_buf_t buf = uv_buf_init((char *)w->data, (unsigned int)(4 + len));
    if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &buf, 1, on_fake_written) != 0)
        free(w);
}

/* OK_Packet: header, affected rows 0, insert id 0, SERVER_STATUS_AUTOCOMMIT, no warnings. */
static void fake_ok(fake_conn_t *c, unsigned char seq)
{
    static const unsigned char ok[] = {0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00};
    fake_send(c, seq, ok, sizeof ok);
}

/* Protocol::HandshakeV10 offering mysql_native_password (whose scramble the
 * server never checks here). */
static void fake_greet(fake_conn_t *c)
{
    /* LONG_PASSWORD | CONNECT_WITH_DB | PROTOCOL_41 | TRANSACTIONS |
     * SECURE_CONNECTION | MULTI_STATEMENTS | MULTI_RESULTS | PLUGIN_AUTH */
    const uint32_t caps = 0x1u | 0x8u | 0x200u | 0x2000u | 0x8000u | 0x10000u | 0x20000u | 0x80000u;
    unsigned char p[128];
    size_t n = 0;
    p[n++] = 10;
    static const char version[] = "10.11.0-fake";
    memcpy(p + n, version, sizeof version);
    n += sizeof version;
    uint32_t id = c->server->accepted;
    for (int i = 0; i < 4; i++)
        p[n++] = (unsigned char)(id >> (8 * i));
    memcpy(p + n, "abcdefgh", 8);
    n += 8;
    p[n++] = 0;
    p[n++] = (unsigned char)(caps & 0xff);
    p[n++] = (unsigned char)((caps >> 8) & 0xff);
    p[n++] = 45; /* utf8mb4_general_ci */
    p[n++] = 0x02;
    p[n++] = 0x00;
    p[n++] = (unsigned char)((caps >> 16) & 0xff);
    p[n++] = (unsigned char)((caps >> 24) & 0xff);
    p[n++] = 21; /* scramble length */
    memset(p + n, 0, 10);
    n += 10;
    memcpy(p + n, "ijklmnopqrst", 13); /* 12 bytes and the NUL */
    n += 13;
    static const char plugin[] = "mysql_native_password";
    memcpy(p + n, plugin, sizeof plugin);
    n += sizeof plugin;
    fake_send(c, 0, p, n);
}

static void on_fake_conn_closed(uv_handle_t *h)
{
    CL_UNUSED(h);
}

static void fake_conn_close(fake_conn_t *c)
{
    if (c->closed)
        return;
    c->closed = true;
    c->server->open--;
    if (c->held) {
        c->held = false;
        c->server->held--;
    }
    uv_close((uv_handle_t *)&c->tcp, on_fake_conn_closed);
}

static void fake_packet(fake_conn_t *c, unsigned char seq, const unsigned char *p, size_t len)
{
    if (!c->greeted) {
        c->greeted = true;
        fake_ok(c, (unsigned char)(seq + 1));
        return;
    }
    if (len > 0 && p[0] == 0x01) { /* COM_QUIT */
        fake_conn_close(c);
        return;
    }
    if (len > 0 && p[0] == 0x03 && c->server->first_query[0] == '\0') {
        size_t n = len - 1 < sizeof c->server->first_query - 1 ? len - 1
                                                               : sizeof c->server->first_query - 1;
        memcpy(c->server->first_query, p + 1, n);
        c->server->first_query[n] = '\0';
    }
    if (len > 0 && p[0] == 0x03 && memmem(p + 1, len - 1, "hold", 4) != NULL) {
        c->held = true;
        c->server->held++;
        return;
    }
    fake_ok(c, 1);
}

static void on_fake_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    CL_UNUSED(h);
    *buf = uv_buf_init(cl_xmalloc(suggested), (unsigned int)suggested);
}

static void on_fake_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    fake_conn_t *c = s->data;
    if (n < 0 || c->closed) {
        free(buf->base);
        fake_conn_close(c);
        return;
    }
    CL_ASSERT((size_t)n <= sizeof c->in - c->in_len);
    if ((size_t)n > sizeof c->in - c->in_len)
        n = (ssize_t)(sizeof c->in - c->in_len);
    memcpy(c->in + c->in_len, buf->base, (size_t)n);
    c->in_len += (size_t)n;
    free(buf->base);
    while (c->in_len >= 4 && !c->closed) {
        size_t len = c->in[0] | (size_t)c->in[1] << 8 | (size_t)c->in[2] << 16;
        if (c->in_len < 4 + len)
            break;
        fake_packet(c, c->in[3], c->in + 4, len);
        memmove(c->in, c->in + 4 + len, c->in_len - 4 - len);
        c->in_len -= 4 + len;
    }
}

static void on_fake_connection(uv_stream_t *listener, int status)
{
    fake_server_t *server = listener->data;
    CL_ASSERT_INT_EQ(0, status);
    fake_conn_t *c = cl_xcalloc(1, sizeof *c);
    c->server = server;
    c->next = server->conns;
    server->conns = c;
    uv_tcp_init(listener->loop, &c->tcp);
    c->tcp.data = c;
    CL_ASSERT_INT_EQ(0, uv_accept(listener, (uv_stream_t *)&c->tcp));
    server->accepted++;
    server->open++;
    fake_greet(c);
    uv_read_start((uv_stream_t *)&c->tcp, on_fake_alloc, on_fake_read);
}

static void fake_server_start(uv_loop_t *loop, fake_server_t *server)
{
    memset(server, 0, sizeof *server);
    struct sockaddr_in addr;
    uv_ip4_addr("127.0.0.1", 0, &addr);
    uv_tcp_init(loop, &server->listener);
    server->listener.data = server;
    CL_ASSERT_INT_EQ(0, uv_tcp_bind(&server->listener, (const struct sockaddr *)&addr, 0));
    CL_ASSERT_INT_EQ(0, uv_listen((uv_stream_t *)&server->listener, 64, on_fake_connection));
    struct sockaddr_in bound;
    int len = sizeof bound;
    uv_tcp_getsockname(&server->listener, (struct sockaddr *)&bound, &len);
    server->port = ntohs(bound.sin_port);
}

/* Answer every held query. */
static void fake_release(fake_server_t *server)
{
    for (fake_conn_t *c = server->conns; c != NULL; c = c->next) {
        if (c->held && !c->closed) {
            c->held = false;
            server->held--;
            fake_ok(c, 1);
        }
    }
}

/* Drop the connection accepted first, as a server restart or KILL would. */
static void fake_drop_first(fake_server_t *server)
{
    fake_conn_t *first = NULL;
    for (fake_conn_t *c = server->conns; c != NULL; c = c->next)
        first = c; /* the list is newest first */
    if (first != NULL)
        fake_conn_close(first);
}

static void fake_server_close(fake_server_t *server)
{
    for (fake_conn_t *c = server->conns; c != NULL; c = c->next)
        fake_conn_close(c);
    uv_close((uv_handle_t *)&server->listener, NULL);
}

/* After the loop ran the close callbacks. */
static void fake_server_free(fake_server_t *server)
{
    while (server->conns != NULL) {
        fake_conn_t *c = server->conns;
        server->conns = c->next;
        free(c);
    }
}

/* ---- A pool on a loop ---------------------------------------------------------- */

#define MAX_QUERIES 8

typedef struct world_s world_t;

typedef struct {
    world_t *w;
    unsigned int i;
} query_t;

struct world_s {
    uv_loop_t loop;
    uv_timer_t deadline;
    bool timed_out;
    fake_server_t server;
    cl_db_pool_t *pool;
    bool connects_fail;   /* the test expects failed connects in the log */
    cl_log_capture_t log; /* what the pool logged */
    query_t queries[MAX_QUERIES];
    int status[MAX_QUERIES];
    unsigned int submitted, done;
    bool pool_closed;
};

/* ---- The pool's log ---------------------------------------------------------- */

/* Lines of the log that contain `needle`. */
static unsigned int logged(const world_t *w, const char *needle)
{
    return cl_log_capture_count(&w->log, needle);
}

/* Times connection `index` of the pool labelled "test" came up. */
static unsigned int ups_of(const world_t *w, unsigned int index)
{
    char needle[64];
    snprintf(needle, sizeof needle, "test connection %u up (", index);
    return logged(w, needle);
}

static void world_open_bounded(world_t *w, unsigned int size, unsigned int backoff_min_ms,
                               unsigned int max_statement_ms)
{
    memset(w, 0, sizeof *w);
    mysql_library_init(0, NULL, NULL);
    uv_loop_init(&w->loop);
    uv_timer_init(&w->loop, &w->deadline);
    w->deadline.data = w;
    fake_server_start(&w->loop, &w->server);
    cl_log_capture_start(&w->log);
    cl_db_params_t p = {
        .label = "test",
        .host = "127.0.0.1",
        .port = w->server.port,
        .user = "u",
        .password = "p",
        .database = "d",
        .connect_timeout_ms = 5000,
        .read_timeout_ms = 5000,
        .write_timeout_ms = 5000,
        .backoff_min_ms = backoff_min_ms,
        .backoff_max_ms = 2 * backoff_min_ms,
        .max_statement_ms = max_statement_ms,
    };
    char err[CL_ERR_LEN];
    CL_ASSERT_INT_EQ(CL_OK, cl_db_pool_open(&w->loop, &p, size, &w->pool, err));
}

static void world_open(world_t *w, unsigned int size, unsigned int backoff_min_ms)
{
    world_open_bounded(w, size, backoff_min_ms, 0);
}

static void on_deadline(uv_timer_t *t)
{
    world_t *w = t->data;
    w->timed_out = true;
}

typedef bool (*condition_t)(world_t *w, unsigned int n);

/* Run the loop until cond(w, n) holds; false after 5 s without it. */
static bool run_until(world_t *w, condition_t cond, unsigned int n)
{
    w->timed_out = false;
    uv_timer_start(&w->deadline, on_deadline, 5000, 0);
    while (!cond(w, n) && !w->timed_out)
        uv_run(&w->loop, UV_RUN_ONCE);
    uv_timer_stop(&w->deadline);
    return cond(w, n);
}

/* Run the loop for `ms`: long enough for anything already due to happen. */
static void run_for(world_t *w, unsigned int ms)
{
    w->timed_out = false;
    uv_timer_start(&w->deadline, on_deadline, ms, 0);
    while (!w->timed_out)
        uv_run(&w->loop, UV_RUN_ONCE);
}

static cl_db_pool_stats_t stats_of(const world_t *w)
{
    cl_db_pool_stats_t st;
    cl_db_pool_stats(w->pool, &st);
    return st;
}

static bool connected_is(world_t *w, unsigned int n)
{
    return stats_of(w).connected == n;
}
static bool server_open_is(world_t *w, unsigned int n)
{
    return w->server.open == n;
}
static bool server_held_is(world_t *w, unsigned int n)
{
    return w->server.held == n;
}
static bool done_is(world_t *w, unsigned int n)
{
    return w->done == n;
}
static bool connect_failures_reach(world_t *w, unsigned int n)
{
    return stats_of(w).connect_failures >= n;
}
static bool pool_closed(world_t *w, unsigned int n)
{
    CL_UNUSED(n);
    return w->pool_closed;
}

static void on_done(void *arg, const cl_db_result_t *result)
{
    query_t *q = arg;
    q->w->status[q->i] = result->status;
    q->w->done++;
}

static const cl_db_query_handlers_t handlers = {NULL, on_done};

static void submit(world_t *w, const char *sql)
{
    char err[CL_ERR_LEN];
    CL_ASSERT(w->submitted < MAX_QUERIES);
    query_t *q = &w->queries[w->submitted];
    q->w = w;
    q->i = w->submitted++;
    w->status[q->i] = -100;
    CL_ASSERT_INT_EQ(CL_OK, cl_db_pool_query(w->pool, sql, strlen(sql), &handlers, q, err));
}

static void on_pool_closed(void *arg)
{
    world_t *w = arg;
    w->pool_closed = true;
}

static void world_close(world_t *w)
{
    if (!w->pool_closed) {
        CL_ASSERT_INT_EQ(CL_OK, cl_db_pool_close(w->pool, on_pool_closed, w));
        CL_ASSERT(run_until(w, pool_closed, 0));
    }
    fake_server_close(&w->server);
    uv_close((uv_handle_t *)&w->deadline, NULL);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    fake_server_free(&w->server);
    CL_ASSERT_INT_EQ(0, uv_loop_close(&w->loop));
    /* The fake server accepts every connect. */
    if (!w->connects_fail)
        CL_ASSERT_INT_EQ(0, logged(w, " failed: "));
    cl_log_capture_end(&w->log);
}

/* ---- Tests ----------------------------------------------------------------- */

static void test_growing_connects_the_new_connections_and_uses_them(void)
{
    world_t w;
    char err[CL_ERR_LEN];
    world_open(&w, 2, 100);
    CL_ASSERT(run_until(&w, connected_is, 2));

    CL_ASSERT_INT_EQ(CL_OK, cl_db_pool_resize(w.pool, 4, err));
    CL_ASSERT_INT_EQ(4, stats_of(&w).size);
    CL_ASSERT_INT_EQ(2, stats_of(&w).connected); /* new ones connect from the loop */
    CL_ASSERT(run_until(&w, connected_is, 4));
    CL_ASSERT_INT_EQ(4, w.server.accepted);
    for (unsigned int i = 0; i < 4; i++)
        CL_ASSERT_INT_EQ(1, ups_of(&w, i));

    for (int i = 0; i < 4; i++)
        submit(&w, "SELECT 'hold'");
    CL_ASSERT(run_until(&w, server_held_is, 4)); /* four queries run at once */
    fake_release(&w.server);
    CL_ASSERT(run_until(&w, done_is, 4));
    for (int i = 0; i < 4; i++)
        CL_ASSERT_INT_EQ(CL_OK, w.status[i]);
    world_close(&w);
}

static void test_shrinking_closes_idle_connections_at_once(void)
{
    world_t w;
    char err[CL_ERR_LEN];
    world_open(&w, 4, 100);
    CL_ASSERT(run_until(&w, connected_is, 4));

    CL_ASSERT_INT_EQ(CL_OK, cl_db_pool_resize(w.pool, 1, err));
    CL_ASSERT_INT_EQ(1, stats_of(&w).size);
    CL_ASSERT_INT_EQ(1, stats_of(&w).connected);
    CL_ASSERT(run_until(&w, server_open_is, 1));

    /* One connection left: the second query waits for the first. */
    submit(&w, "SELECT 'hold' AS first");
    submit(&w, "SELECT 'hold' AS second");
    CL_ASSERT(run_until(&w, server_held_is, 1));
    CL_ASSERT_INT_EQ(1, stats_of(&w).busy);
    CL_ASSERT_INT_EQ(1, stats_of(&w).queued);
    fake_release(&w.server);
    CL_ASSERT(run_until(&w, done_is, 1));
    CL_ASSERT(run_until(&w, server_held_is, 1));
    fake_release(&w.server);
    CL_ASSERT(run_until(&w, done_is, 2));
    CL_ASSERT_INT_EQ(CL_OK, w.status[0]);
    CL_ASSERT_INT_EQ(CL_OK, w.status[1]);
    CL_ASSERT_INT_EQ(4, w.server.accepted);
    CL_ASSERT_INT_EQ(0, stats_of(&w).connections_lost);
    CL_ASSERT_INT_EQ(0, logged(&w, " lost: "));
    world_close(&w);
}

static void test_growing_after_a_shrink_reuses_the_lowest_free_numbers(void)
{
    world_t w;
    char err[CL_ERR_LEN];
    world_open(&w, 4, 100);
    CL_ASSERT(run_until(&w, connected_is, 4));
    /* All idle: the highest numbers go first, 0 stays. */
    CL_ASSERT_INT_EQ(CL_OK, cl_db_pool_resize(w.pool, 1, err));
    CL_ASSERT_INT_EQ(CL_OK, cl_db_pool_resize(w.pool, 3, err));
    CL_ASSERT(run_until(&w, connected_is, 3));
    CL_ASSERT(run_until(&w, server_open_is, 3));
    CL_ASSERT_INT_EQ(1, ups_of(&w, 0));
    CL_ASSERT_INT_EQ(2, ups_of(&w, 1));
    CL_ASSERT_INT_EQ(2, ups_of(&w, 2));
    CL_ASSERT_INT_EQ(1, ups_of(&w, 3));
    world_close(&w);
}

static void test_shrinking_lets_a_busy_connection_finish_its_query_then_closes_it(void)
{
    world_t w;
    char err[CL_ERR_LEN];
    world_open(&w, 2, 100);
    CL_ASSERT(run_until(&w, connected_is, 2));
    submit(&w, "SELECT 'hold' AS a");
    submit(&w, "SELECT 'hold' AS b");
    CL_ASSERT(run_until(&w, server_held_is, 2));

    CL_ASSERT_INT_EQ(CL_OK, cl_db_pool_resize(w.pool, 1, err));
    /* Both are busy: one is removed from the pool but keeps running. */
    CL_ASSERT_INT_EQ(1, stats_of(&w).size);
    CL_ASSERT_INT_EQ(2, stats_of(&w).busy);
    CL_ASSERT_INT_EQ(2, stats_of(&w).connected);
    submit(&w, "SELECT 'after'");
    CL_ASSERT_INT_EQ(1, stats_of(&w).queued); /* the removed one takes no new query */
    run_for(&w, 100);
    CL_ASSERT_INT_EQ(2, w.server.open);
    CL_ASSERT_INT_EQ(2, w.server.held);
    CL_ASSERT_INT_EQ(0, w.done);

    fake_release(&w.server);
    CL_ASSERT(run_until(&w, done_is, 3));
    CL_ASSERT(run_until(&w, server_open_is, 1));
    for (int i = 0; i < 3; i++)
        CL_ASSERT_INT_EQ(CL_OK, w.status[i]);
    cl_db_pool_stats_t st = stats_of(&w);
    CL_ASSERT_INT_EQ(1, st.connected);
    CL_ASSERT_INT_EQ(0, st.busy);
    CL_ASSERT_INT_EQ(0, st.queued);
    CL_ASSERT_INT_EQ(0, stats_of(&w).connections_lost);
    CL_ASSERT_INT_EQ(0, logged(&w, " lost: "));
    world_close(&w);
}

static void test_shrinking_removes_a_connection_that_is_down_first(void)
{
    world_t w;
    char err[CL_ERR_LEN];
    /* A long backoff keeps the dropped connection down during the test. */
    world_open(&w, 2, 5000);
    CL_ASSERT(run_until(&w, connected_is, 2));
    fake_drop_first(&w.server);
    CL_ASSERT(run_until(&w, connected_is, 1));
    CL_ASSERT_INT_EQ(1, stats_of(&w).connections_lost);
    CL_ASSERT_INT_EQ(1, logged(&w, " lost: "));
    CL_ASSERT_INT_EQ(1, logged(&w, "level=warn module=db msg=\"test connection "));

    CL_ASSERT_INT_EQ(CL_OK, cl_db_pool_resize(w.pool, 1, err));
    run_for(&w, 100);
    CL_ASSERT_INT_EQ(1, stats_of(&w).connected); /* the idle one stayed */
    CL_ASSERT_INT_EQ(1, w.server.open);
    CL_ASSERT_INT_EQ(2, w.server.accepted);
    submit(&w, "SELECT 'hold'");
    CL_ASSERT(run_until(&w, server_held_is, 1));
    fake_release(&w.server);
    CL_ASSERT(run_until(&w, done_is, 1));
    CL_ASSERT_INT_EQ(CL_OK, w.status[0]);
    world_close(&w);
}

static void test_closing_the_pool_cancels_the_query_of_a_removed_connection(void)
{
    world_t w;
    char err[CL_ERR_LEN];
    world_open(&w, 2, 100);
    CL_ASSERT(run_until(&w, connected_is, 2));
    submit(&w, "SELECT 'hold' AS a");
    submit(&w, "SELECT 'hold' AS b");
    CL_ASSERT(run_until(&w, server_held_is, 2));
    CL_ASSERT_INT_EQ(CL_OK, cl_db_pool_resize(w.pool, 1, err));

    CL_ASSERT_INT_EQ(CL_OK, cl_db_pool_close(w.pool, on_pool_closed, &w));
    CL_ASSERT(run_until(&w, pool_closed, 0));
    CL_ASSERT_INT_EQ(2, w.done);
    CL_ASSERT_INT_EQ(CL_ERR_RETRY, w.status[0]);
    CL_ASSERT_INT_EQ(CL_ERR_RETRY, w.status[1]);
    CL_ASSERT(run_until(&w, server_open_is, 0));
    world_close(&w);
}

static void test_resize_refuses_zero_and_a_closing_pool(void)
{
    world_t w;
    char err[CL_ERR_LEN];
    world_open(&w, 1, 100);
    CL_ASSERT_INT_EQ(CL_ERR, cl_db_pool_resize(w.pool, 0, err));
    CL_ASSERT_STR_CONTAINS(err, "at least one connection");
    CL_ASSERT_INT_EQ(CL_OK, cl_db_pool_resize(w.pool, 1, err));
    CL_ASSERT_INT_EQ(1, stats_of(&w).size);
    CL_ASSERT_INT_EQ(CL_OK, cl_db_pool_close(w.pool, on_pool_closed, &w));
    CL_ASSERT_INT_EQ(CL_ERR, cl_db_pool_resize(w.pool, 2, err));
    CL_ASSERT_STR_CONTAINS(err, "closing");
    CL_ASSERT(run_until(&w, pool_closed, 0));
    world_close(&w);
}

static void test_session_set_up_bounds_statements_only_when_asked(void)
{
    world_t w;
    world_open_bounded(&w, 1, 100, 601500);
    CL_ASSERT(run_until(&w, connected_is, 1));
    CL_ASSERT_STR_CONTAINS(w.server.first_query, "SET SESSION sql_mode=");
    CL_ASSERT_STR_CONTAINS(w.server.first_query, ", max_statement_time=601.500");
    world_close(&w);

    world_open(&w, 1, 100);
    CL_ASSERT(run_until(&w, connected_is, 1));
    CL_ASSERT_STR_CONTAINS(w.server.first_query, "SET SESSION sql_mode=");
    CL_ASSERT(strstr(w.server.first_query, "max_statement_time") == NULL);
    world_close(&w);
}

static void test_a_connect_that_keeps_failing_is_logged_once_then_at_debug(void)
{
    world_t w;
    char err[CL_ERR_LEN];
    memset(&w, 0, sizeof w);
    mysql_library_init(0, NULL, NULL);
    uv_loop_init(&w.loop);
    uv_timer_init(&w.loop, &w.deadline);
    w.deadline.data = &w;
    fake_server_start(&w.loop, &w.server); /* unused: the pool goes to port 1 */
    w.connects_fail = true;
    cl_log_capture_start(&w.log);
    cl_log_set_level(CL_LOG_DEBUG);
    cl_db_params_t p = {
        .host = "127.0.0.1",
        .port = 1, /* nothing listens there: every connect is refused */
        .user = "u",
        .database = "d",
        .connect_timeout_ms = 5000,
        .read_timeout_ms = 5000,
        .write_timeout_ms = 5000,
        .backoff_min_ms = 5,
        .backoff_max_ms = 10,
    };
    CL_ASSERT_INT_EQ(CL_OK, cl_db_pool_open(&w.loop, &p, 1, &w.pool, err));
    CL_ASSERT(run_until(&w, connect_failures_reach, 3));
    /* No label: the default names the pool. */
    CL_ASSERT_INT_EQ(1, logged(&w, "level=warn module=db msg=\"mariadb connection 0 failed: "));
    CL_ASSERT(logged(&w, "level=debug module=db msg=\"mariadb connection 0 failed: ") >= 2);
    CL_ASSERT_INT_EQ(0, logged(&w, " up ("));
    CL_ASSERT(!cl_db_pool_healthy(w.pool));
    cl_log_set_level(CL_LOG_INFO);
    world_close(&w);
}

static const cl_test_case_t cases[] = {
    CL_TEST(test_session_set_up_bounds_statements_only_when_asked),
    CL_TEST(test_growing_connects_the_new_connections_and_uses_them),
    CL_TEST(test_shrinking_closes_idle_connections_at_once),
    CL_TEST(test_growing_after_a_shrink_reuses_the_lowest_free_numbers),
    CL_TEST(test_shrinking_lets_a_busy_connection_finish_its_query_then_closes_it),
    CL_TEST(test_shrinking_removes_a_connection_that_is_down_first),
    CL_TEST(test_closing_the_pool_cancels_the_query_of_a_removed_connection),
    CL_TEST(test_resize_refuses_zero_and_a_closing_pool),
    CL_TEST(test_a_connect_that_keeps_failing_is_logged_once_then_at_debug),
};

CL_TEST_MAIN(cases)

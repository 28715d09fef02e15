/* The admin HTTP server: health, readiness and metrics on the service's loop;
 * see include/clickloop/admin.h for the routes and the limits.
 *
 * One conn_t per TCP connection holds the uv_tcp_t, one uv_timer_t (whose
 * deadline depends on the state) and a req_reader_t (the http_parser and the
 * request's limits, no I/O). The parser's on_message_complete callback pauses
 * it, so http_parser_execute() returns after each request; the request is
 * answered synchronously right then, and the caller decides whether to go on
 * with the bytes that follow (pipelining) or to keep them until the peer has
 * read what it was sent. cl_admin_answer_bytes() runs the same reading and
 * answering on a string, for the fuzzer and the tests.
 *
 * Connection states (conn_state_t), and what the timer means in each:
 *
 *   REQUEST    a request is expected or arriving: closes request_timeout_ms
 *              after its first byte (after the accept, for the first one)
 *   IDLE       between requests (keep-alive): closes after idle_timeout_ms;
 *              a completed write restarts it, so a slow reader of a large
 *              response is not cut off while it makes progress
 *   BLOCKED    unparsed input waits in `pending` until every queued response
 *              is written (see MAX_ANSWERS_PER_DRAIN); reading is stopped;
 *              timer as in IDLE
 *   FINISHING  the last response is queued (Connection: close, or an error);
 *              reading is stopped; timer as in IDLE
 *   LINGER     the last response went out and our FIN with it; input is read
 *              and dropped until the peer closes, for at most LINGER_MS, so
 *              that the kernel does not answer unread input with a reset that
 *              could destroy the response before the peer reads it
 *   CLOSING    uv_close() called on both handles; freed when both are closed
 */
#include "clickloop/admin.h"

#include <http_parser.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DEFAULT_MAX_CONNECTIONS 1024
#define DEFAULT_REQUEST_TIMEOUT_MS 10000
#define DEFAULT_IDLE_TIMEOUT_MS 60000
#define DEFAULT_STALL_MS 10000
#define DEFAULT_MAX_HEADER_BYTES 8192
#define DEFAULT_MAX_BODY_BYTES 1024

#define HEARTBEAT_MS 1000
#define LISTEN_BACKLOG 511
/* A connection stops parsing pipelined requests after this many answers, or
 * while more response bytes than this wait in its write queue, until every
 * queued response has been written. The answers count caps the work one
 * connection makes the loop do per turn: the write callbacks that resume it
 * run in a later turn. */
#define MAX_ANSWERS_PER_DRAIN 16
#define WRITE_HIGH_WATER (256 * 1024)
#define LINGER_MS 2000
#define READ_BUFFER_SIZE (64 * 1024)

#define ALLOW_METHODS "GET, HEAD"

typedef enum {
    CONN_REQUEST,
    CONN_IDLE,
    CONN_BLOCKED,
    CONN_FINISHING,
    CONN_LINGER,
    CONN_CLOSING,
} conn_state_t;

/* The reading of requests from a byte stream, apart from any socket: the
 * http_parser, the request being parsed and what the limits count. A
 * connection feeds it what it reads; cl_admin_answer_bytes() feeds it a
 * string (the fuzzer's and the unit tests' way in). */
typedef struct {
    http_parser parser;
    const cl_admin_params_t *limits;
    cl_buf_t target;
    size_t header_bytes;
    size_t body_bytes;
    int error_status; /* why a parser callback stopped the parser */
    bool begun;       /* a request began during the last req_read() */
    /* Of the request just completed (READ_REQUEST): */
    bool keep_alive; /* the connection may carry another one */
    bool http10;
} req_reader_t;

typedef enum {
    READ_MORE,    /* all input parsed, no request completed: wait for more */
    READ_REQUEST, /* one request complete: answer it, then go on after it */
    READ_ERROR,   /* malformed or over a limit: answer the status, end */
} read_result_t;

typedef struct conn_s {
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_shutdown_t shutdown_req;
    req_reader_t req;
    cl_admin_t *admin;
    conn_state_t state;
    int handles_open;
    unsigned int writes_in_flight;
    unsigned int answered_since_drain; /* requests answered since no write was in flight */
    bool peer_eof;
    /* Input received but not parsed yet (BLOCKED). */
    cl_buf_t pending;
    size_t pending_off;
    struct conn_s *prev;
    struct conn_s *next;
} conn_t;

/* Counters behind the registry's figures and the connection limit. */
typedef struct {
    unsigned int connections; /* open now */
    uint64_t accepted;
    uint64_t rejected;  /* closed at once: over max_connections */
    uint64_t timed_out; /* closed by the request or idle timeout */
    uint64_t requests;  /* answered, error answers included */
} admin_stats_t;

typedef struct {
    uv_write_t req;
    conn_t *conn;
    char *data;
} write_req_t;

struct cl_admin_s {
    uv_loop_t *loop;
    cl_admin_params_t params;
    char *host;
    char address[64]; /* "host:port" or "[host]:port", for messages */
    cl_metrics_t *metrics;
    cl_admin_ready_cb ready;
    void *ready_arg;

    uv_tcp_t listener;
    bool listener_initialized;
    uint16_t port;
    uv_timer_t heartbeat;
    uint64_t heartbeat_ms;
    uint64_t last_beat_ms;

    conn_t *conns;
    admin_stats_t stats;
    /* Handles not yet closed: heartbeat, listener, each connection (as one),
     * each rejected connection. */
    unsigned int handles_open;
    bool closing;
    cl_close_cb close_cb;
    void *close_arg;

    cl_counter_t *m_requests;
    cl_gauge_t *m_connections;
    cl_counter_t *m_rejected;
    cl_counter_t *m_timed_out;
    cl_histogram_t *m_loop_lag;

    /* One read buffer for every connection: libuv calls alloc_cb and then
     * read_cb for one stream before it reads another, and read_cb parses (or
     * copies) all of it, so no connection holds 64 KiB while it waits. */
    char read_buf[READ_BUFFER_SIZE];
};

static void conn_close(conn_t *c);
static void conn_feed_pending(conn_t *c);

/* ---- pure parts ------------------------------------------------------- */

static cl_admin_page_t page_for_path(const char *path, size_t len)
{
    static const struct {
        const char *path;
        cl_admin_page_t page;
    } pages[] = {
        {"/healthz", CL_ADMIN_PAGE_HEALTHZ},
        {"/readyz", CL_ADMIN_PAGE_READYZ},
        {"/metrics", CL_ADMIN_PAGE_METRICS},
    };
    for (size_t i = 0; i < CL_ARRAY_LEN(pages); i++) {
        if (strlen(pages[i].path) == len && memcmp(pages[i].path, path, len) == 0)
            return pages[i].page;
    }
    return CL_ADMIN_PAGE_NONE;
}

cl_admin_route_t cl_admin_route(const char *method, const char *target, size_t target_len)
{
    cl_admin_route_t r = {.status = 400, .page = CL_ADMIN_PAGE_NONE, .head = false};
    struct http_parser_url url;
    http_parser_url_init(&url);
    if (target_len == 0 || http_parser_parse_url(target, target_len, 0, &url) != 0 ||
        !(url.field_set & (1 << UF_PATH)))
        return r;
    cl_admin_page_t page =
        page_for_path(target + url.field_data[UF_PATH].off, url.field_data[UF_PATH].len);
    if (page == CL_ADMIN_PAGE_NONE) {
        r.status = 404;
    } else if (strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0) {
        r.status = 200;
        r.page = page;
        r.head = method[0] == 'H';
    } else {
        r.status = 405;
    }
    return r;
}

static const char *reason_phrase(int status)
{
    /* http_status_str() has no entry for a few codes and says "<unknown>". */
    const char *s = http_status_str((enum http_status)status);
    return strcmp(s, "<unknown>") == 0 ? "Unknown" : s;
}

void cl_admin_format_response(const cl_admin_response_t *r, cl_buf_t *out)
{
    cl_buf_appendf(out, "HTTP/1.1 %d %s\r\n", r->status, reason_phrase(r->status));
    if (r->date != NULL)
        cl_buf_appendf(out, "Date: %s\r\n", r->date);
    cl_buf_appendf(out, "Content-Type: %s\r\nContent-Length: %zu\r\nCache-Control: no-store\r\n",
                   r->content_type != NULL ? r->content_type : "text/plain; charset=utf-8",
                   r->body_len);
    if (r->allow != NULL)
        cl_buf_appendf(out, "Allow: %s\r\n", r->allow);
    if (r->close)
        cl_buf_append_str(out, "Connection: close\r\n");
    else if (r->http10_keep_alive)
        cl_buf_append_str(out, "Connection: keep-alive\r\n");
    cl_buf_append(out, "\r\n", 2);
    if (!r->head && r->body_len > 0)
        cl_buf_append(out, r->body, r->body_len);
}

/* ---- writing ------------------------------------------------------------ */

static void arm_timer(conn_t *c, uint64_t ms);
static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

/* Nothing to do when the shutdown completes: the peer's EOF or the linger
 * timer ends the connection. The callback must exist all the same: libuv
 * 1.44 calls it without a NULL check when the handle is closed while the
 * shutdown is still pending (uv__stream_destroy). */
static void on_shutdown(uv_shutdown_t *req, int status)
{
    CL_UNUSED(req);
    CL_UNUSED(status);
}

/* The last response is out: send our FIN, then drop what the peer still
 * sends until it closes too (see LINGER above). */
static void conn_linger(conn_t *c)
{
    if (c->peer_eof || uv_shutdown(&c->shutdown_req, (uv_stream_t *)&c->tcp, on_shutdown) != 0 ||
        uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0) {
        conn_close(c);
        return;
    }
    c->state = CONN_LINGER;
    arm_timer(c, LINGER_MS);
}

static void on_write(uv_write_t *req, int status)
{
    write_req_t *w = (write_req_t *)req;
    conn_t *c = w->conn;
    free(w->data);
    free(w);
    c->writes_in_flight--;
    if (c->state == CONN_CLOSING)
        return; /* cancelled by uv_close; the close callbacks free c */
    if (status < 0) {
        conn_close(c);
        return;
    }
    if (c->writes_in_flight == 0)
        c->answered_since_drain = 0;
    switch (c->state) {
    case CONN_IDLE:
        arm_timer(c, c->admin->params.idle_timeout_ms);
        break;
    case CONN_BLOCKED:
        if (c->writes_in_flight == 0)
            conn_feed_pending(c);
        else
            arm_timer(c, c->admin->params.idle_timeout_ms);
        break;
    case CONN_FINISHING:
        if (c->writes_in_flight == 0)
            conn_linger(c);
        else
            arm_timer(c, c->admin->params.idle_timeout_ms);
        break;
    case CONN_REQUEST:
    case CONN_LINGER:
    case CONN_CLOSING:
        break;
    }
}

static void format_http_date(char *out, size_t len)
{
    time_t now = (time_t)(cl_wall_ms() / 1000);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(out, len, "%a, %d %b %Y %H:%M:%S GMT", &tm);
}

static void send_response(conn_t *c, cl_admin_response_t *r)
{
    cl_admin_t *a = c->admin;
    char date[64];
    format_http_date(date, sizeof date);
    r->date = date;
    cl_buf_t out;
    cl_buf_init(&out);
    cl_admin_format_response(r, &out);

    char code[8];
    snprintf(code, sizeof code, "%d", r->status);
    cl_counter_add(a->m_requests, CL_LABELS(code), 1);
    a->stats.requests++;
    c->answered_since_drain++;

    write_req_t *w = cl_xcalloc(1, sizeof *w);
    w->conn = c;
    size_t len = 0;
    w->data = cl_buf_steal(&out, &len);
    uv_buf_t buf = uv_buf_init(w->data, (unsigned int)len);
    if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &buf, 1, on_write) != 0) {
        free(w->data);
        free(w);
        conn_close(c);
        return;
    }
    c->writes_in_flight++;
}

/* ---- answering ---------------------------------------------------------- */

static void page_healthz(cl_admin_t *a, cl_admin_response_t *r, cl_buf_t *body)
{
    /* The real clock, not uv_now(): uv_now() is cached at the start of the
     * loop iteration, so it cannot see a callback earlier in this same
     * iteration that blocked the loop. */
    uint64_t age = cl_now_ms() - a->last_beat_ms;
    if (age > a->params.stall_ms) {
        r->status = 503;
        cl_buf_appendf(body, "event loop stalled: last heartbeat %llu ms ago\n",
                       (unsigned long long)age);
    } else {
        cl_buf_append_str(body, "ok\n");
    }
}

static void page_readyz(cl_admin_t *a, cl_admin_response_t *r, cl_buf_t *body)
{
    cl_buf_t missing;
    cl_buf_init(&missing);
    if (a->ready == NULL || a->ready(a->ready_arg, &missing)) {
        cl_buf_append_str(body, "ready\n");
    } else {
        r->status = 503;
        cl_buf_appendf(body, "not ready: %s\n", missing.len > 0 ? missing.data : "(no reason)");
    }
    cl_buf_free(&missing);
}

static void page_error(cl_admin_response_t *r, cl_buf_t *body)
{
    cl_buf_appendf(body, "%s\n", reason_phrase(r->status));
    if (r->status == 405)
        r->allow = ALLOW_METHODS;
}

/* The response to a request read by `r` (route, page, headers), with its body
 * in `body`; no I/O, so that the connection and cl_admin_answer_bytes() answer
 * alike. */
static void build_answer(cl_admin_t *a, const req_reader_t *r, cl_admin_response_t *resp,
                         cl_buf_t *body)
{
    cl_admin_route_t route = cl_admin_route(http_method_str((enum http_method)r->parser.method),
                                            r->target.data, r->target.len);
    *resp = (cl_admin_response_t){
        .status = route.status,
        .head = route.head,
        .close = !r->keep_alive,
        .http10_keep_alive = r->keep_alive && r->http10,
    };
    switch (route.page) {
    case CL_ADMIN_PAGE_HEALTHZ:
        page_healthz(a, resp, body);
        break;
    case CL_ADMIN_PAGE_READYZ:
        page_readyz(a, resp, body);
        break;
    case CL_ADMIN_PAGE_METRICS:
        resp->content_type = CL_METRICS_CONTENT_TYPE;
        cl_metrics_render(a->metrics, body);
        break;
    case CL_ADMIN_PAGE_NONE:
        page_error(resp, body);
        break;
    }
    resp->body = body->data;
    resp->body_len = body->len;
}

/* The answer to a request that cannot be parsed or is over a limit. */
static void build_failure(int status, cl_admin_response_t *resp, cl_buf_t *body)
{
    *resp = (cl_admin_response_t){.status = status, .close = true};
    page_error(resp, body);
    resp->body = body->data;
    resp->body_len = body->len;
}

/* Answer the request just read. */
static void answer(conn_t *c)
{
    cl_admin_response_t r;
    cl_buf_t body;
    cl_buf_init(&body);
    build_answer(c->admin, &c->req, &r, &body);
    send_response(c, &r);
    cl_buf_free(&body);
}

/* Answer a request that cannot be parsed or is over a limit, and end the
 * connection: after such an error the position in the byte stream is lost. */
static void fail_request(conn_t *c, int status)
{
    cl_admin_response_t r;
    cl_buf_t body;
    cl_buf_init(&body);
    build_failure(status, &r, &body);
    send_response(c, &r);
    cl_buf_free(&body);
    if (c->state != CONN_CLOSING) {
        c->state = CONN_FINISHING;
        uv_read_stop((uv_stream_t *)&c->tcp);
        arm_timer(c, c->admin->params.idle_timeout_ms);
    }
}

/* ---- parser callbacks ----------------------------------------------------- */

/* A callback that returns non-zero stops the parser with HPE_CB_<name>; the
 * status to answer with is left in error_status. */
static int stop_with(req_reader_t *r, int status)
{
    r->error_status = status;
    return -1;
}

static int on_message_begin(http_parser *p)
{
    req_reader_t *r = p->data;
    cl_buf_reset(&r->target);
    r->header_bytes = 0;
    r->body_bytes = 0;
    r->error_status = 0;
    r->begun = true;
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t len)
{
    req_reader_t *r = p->data;
    r->header_bytes += len;
    if (r->header_bytes > r->limits->max_header_bytes)
        return stop_with(r, 414);
    cl_buf_append(&r->target, at, len);
    return 0;
}

/* Header names and values are not kept (no route needs one; the parser itself
 * tracks Connection, Content-Length and Transfer-Encoding), only counted. */
static int on_header_bytes(http_parser *p, const char *at, size_t len)
{
    req_reader_t *r = p->data;
    CL_UNUSED(at);
    r->header_bytes += len;
    if (r->header_bytes > r->limits->max_header_bytes)
        return stop_with(r, 431);
    return 0;
}

static int on_headers_complete(http_parser *p)
{
    req_reader_t *r = p->data;
    /* content_length is ULLONG_MAX when the request has no Content-Length. */
    if (p->content_length != ULLONG_MAX && p->content_length > r->limits->max_body_bytes)
        return stop_with(r, 413);
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
    req_reader_t *r = p->data;
    CL_UNUSED(at);
    r->body_bytes += len;
    if (r->body_bytes > r->limits->max_body_bytes)
        return stop_with(r, 413);
    return 0;
}

static int on_message_complete(http_parser *p)
{
    req_reader_t *r = p->data;
    /* An Upgrade or CONNECT request is answered as a plain request (a server
     * may ignore Upgrade), but the parser stops reading HTTP after it. */
    r->keep_alive = http_should_keep_alive(p) && !p->upgrade;
    r->http10 = p->http_major == 1 && p->http_minor == 0;
    /* Return to the caller of http_parser_execute() after each request, so it
     * answers it and decides about the bytes that follow. */
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings parser_settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_bytes,
    .on_header_value = on_header_bytes,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

static void req_reader_init(req_reader_t *r, const cl_admin_params_t *limits)
{
    memset(r, 0, sizeof *r);
    http_parser_init(&r->parser, HTTP_REQUEST);
    r->parser.data = r;
    r->limits = limits;
    cl_buf_init(&r->target);
}

static void req_reader_free(req_reader_t *r)
{
    cl_buf_free(&r->target);
}

/* Parse up to `len` bytes, stopping after the first request that completes.
 * *used tells how many were consumed: all of them for READ_MORE, unless the
 * parser stopped reading HTTP after an Upgrade request; on READ_ERROR the
 * status to answer is in *status. */
static read_result_t req_read(req_reader_t *r, const char *data, size_t len, size_t *used,
                              int *status)
{
    r->begun = false;
    *used = http_parser_execute(&r->parser, &parser_settings, data, len);
    enum http_errno e = HTTP_PARSER_ERRNO(&r->parser);
    if (e == HPE_PAUSED) {
        http_parser_pause(&r->parser, 0);
        return READ_REQUEST;
    }
    if (e != HPE_OK) {
        *status = r->error_status != 0 ? r->error_status : e == HPE_HEADER_OVERFLOW ? 431 : 400;
        return READ_ERROR;
    }
    return READ_MORE;
}

size_t cl_admin_answer_bytes(cl_admin_t *a, const char *data, size_t len, cl_buf_t *out)
{
    req_reader_t r;
    req_reader_init(&r, &a->params);
    size_t done = 0;
    size_t answered = 0;
    while (done < len) {
        size_t n = 0;
        int status = 0;
        read_result_t res = req_read(&r, data + done, len - done, &n, &status);
        done += n;
        if (res == READ_MORE)
            break;
        cl_admin_response_t resp;
        cl_buf_t body;
        cl_buf_init(&body);
        if (res == READ_ERROR)
            build_failure(status, &resp, &body);
        else
            build_answer(a, &r, &resp, &body);
        cl_admin_format_response(&resp, out);
        cl_buf_free(&body);
        answered++;
        if (res == READ_ERROR || !r.keep_alive)
            break;
    }
    req_reader_free(&r);
    return answered;
}

/* After the answer to a complete request: end the connection, or pause its
 * reading while the peer is behind, or wait for the next request. */
static void conn_after_answer(conn_t *c)
{
    cl_admin_t *a = c->admin;
    if (c->state == CONN_CLOSING)
        return;
    if (!c->req.keep_alive) {
        c->state = CONN_FINISHING;
        uv_read_stop((uv_stream_t *)&c->tcp);
        arm_timer(c, a->params.idle_timeout_ms);
    } else if (c->answered_since_drain >= MAX_ANSWERS_PER_DRAIN ||
               c->tcp.write_queue_size > WRITE_HIGH_WATER) {
        c->state = CONN_BLOCKED;
        uv_read_stop((uv_stream_t *)&c->tcp);
        arm_timer(c, a->params.idle_timeout_ms);
    } else {
        c->state = CONN_IDLE;
        arm_timer(c, a->params.idle_timeout_ms);
    }
}

/* Parse `len` bytes, answering every complete request. Returns how many were
 * consumed: all of them unless the connection got BLOCKED (the caller keeps
 * the rest), or is ending (the rest is dropped). */
static size_t conn_feed(conn_t *c, const char *data, size_t len)
{
    size_t done = 0;
    while (done < len && (c->state == CONN_REQUEST || c->state == CONN_IDLE)) {
        size_t offered = len - done;
        size_t n = 0;
        int status = 0;
        read_result_t res = req_read(&c->req, data + done, offered, &n, &status);
        done += n;
        if (res == READ_ERROR) {
            fail_request(c, status);
            return len;
        }
        if (res == READ_REQUEST) {
            answer(c);
            conn_after_answer(c);
            continue;
        }
        /* A request that began and is not complete must arrive whole within
         * the request timeout of its first byte. */
        if (c->req.begun && c->state == CONN_IDLE) {
            c->state = CONN_REQUEST;
            arm_timer(c, c->admin->params.request_timeout_ms);
        }
        if (n < offered) {
            /* Without an error the parser consumes everything, except after
             * an Upgrade request, which conn_after_answer already ended. */
            return len;
        }
    }
    return c->state == CONN_BLOCKED ? done : len;
}

/* Go on with input kept while BLOCKED, now that the peer has read enough. */
static void conn_feed_pending(conn_t *c)
{
    c->state = CONN_IDLE;
    arm_timer(c, c->admin->params.idle_timeout_ms);
    size_t len = c->pending.len - c->pending_off;
    if (len > 0)
        c->pending_off += conn_feed(c, c->pending.data + c->pending_off, len);
    if (c->pending_off == c->pending.len) {
        cl_buf_free(&c->pending);
        c->pending_off = 0;
    }
    if ((c->state == CONN_IDLE || c->state == CONN_REQUEST) &&
        uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0)
        conn_close(c);
}

/* ---- connection I/O ---------------------------------------------------- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    conn_t *c = h->data;
    CL_UNUSED(suggested);
    *buf = uv_buf_init(c->admin->read_buf, sizeof c->admin->read_buf);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    conn_t *c = s->data;
    if (nread == 0)
        return; /* EAGAIN */
    if (nread < 0) {
        /* The peer is gone or done sending. Responses already queued still
         * go out; a request cut short does not get one. */
        if (nread == UV_EOF && c->writes_in_flight > 0 && c->state == CONN_IDLE) {
            c->peer_eof = true;
            c->state = CONN_FINISHING;
            uv_read_stop(s);
        } else {
            conn_close(c);
        }
        return;
    }
    if (c->state == CONN_LINGER)
        return; /* dropped: only the peer's FIN matters now */
    size_t used = conn_feed(c, buf->base, (size_t)nread);
    if (used < (size_t)nread)
        cl_buf_append(&c->pending, buf->base + used, (size_t)nread - used);
}

static void on_conn_timer(uv_timer_t *t)
{
    conn_t *c = t->data;
    if (c->state != CONN_LINGER) {
        c->admin->stats.timed_out++;
        cl_counter_add(c->admin->m_timed_out, NULL, 1);
    }
    conn_close(c);
}

static void arm_timer(conn_t *c, uint64_t ms)
{
    uv_timer_start(&c->timer, on_conn_timer, ms, 0);
}

static void admin_handle_closed(cl_admin_t *a);

static void on_conn_handle_closed(uv_handle_t *h)
{
    conn_t *c = h->data;
    if (--c->handles_open > 0)
        return;
    cl_admin_t *a = c->admin;
    CL_DLIST_UNLINK(a->conns, c);
    req_reader_free(&c->req);
    cl_buf_free(&c->pending);
    free(c);
    a->stats.connections--;
    cl_gauge_set(a->m_connections, NULL, a->stats.connections);
    admin_handle_closed(a);
}

static void conn_close(conn_t *c)
{
    if (c->state == CONN_CLOSING)
        return;
    c->state = CONN_CLOSING;
    uv_close((uv_handle_t *)&c->tcp, on_conn_handle_closed);
    uv_close((uv_handle_t *)&c->timer, on_conn_handle_closed);
}

/* ---- listener ------------------------------------------------------------ */

static void on_rejected_closed(uv_handle_t *h)
{
    cl_admin_t *a = h->data;
    free(h);
    admin_handle_closed(a);
}

/* Over max_connections: accept, say so if the socket takes it right away, and
 * close. */
static void reject_connection(cl_admin_t *a)
{
    static const char busy[] = "HTTP/1.1 503 Service Unavailable\r\n"
                               "Content-Type: text/plain; charset=utf-8\r\n"
                               "Content-Length: 21\r\nConnection: close\r\n\r\n"
                               "too many connections\n";
    uv_tcp_t *t = cl_xmalloc(sizeof *t);
    uv_tcp_init(a->loop, t);
    t->data = a;
    a->handles_open++;
    if (uv_accept((uv_stream_t *)&a->listener, (uv_stream_t *)t) == 0) {
        uv_buf_t buf = uv_buf_init((char *)busy, sizeof busy - 1);
        uv_try_write((uv_stream_t *)t, &buf, 1);
    }
    uv_close((uv_handle_t *)t, on_rejected_closed);
    a->stats.rejected++;
    cl_counter_add(a->m_rejected, CL_LABELS("connection_limit"), 1);
}

static void on_connection(uv_stream_t *server, int status)
{
    cl_admin_t *a = server->data;
    if (status < 0) {
        /* EMFILE and friends: libuv already dropped the pending connection. */
        cl_counter_add(a->m_rejected, CL_LABELS("accept_error"), 1);
        return;
    }
    if (a->stats.connections >= a->params.max_connections) {
        reject_connection(a);
        return;
    }
    conn_t *c = cl_xcalloc(1, sizeof *c);
    c->admin = a;
    uv_tcp_init(a->loop, &c->tcp);
    uv_timer_init(a->loop, &c->timer);
    c->tcp.data = c->timer.data = c;
    c->handles_open = 2;
    CL_DLIST_PUSH(a->conns, c);
    a->handles_open++;
    a->stats.connections++;
    a->stats.accepted++;
    cl_gauge_set(a->m_connections, NULL, a->stats.connections);
    req_reader_init(&c->req, &a->params);
    /* The first request is due within the request timeout of the accept, so
     * a connection that never says anything is gone as fast as a slow one. */
    c->state = CONN_REQUEST;
    arm_timer(c, a->params.request_timeout_ms);
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0 ||
        uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0) {
        conn_close(c);
        return;
    }
    /* Responses are written whole; do not let Nagle hold back the last
     * segment of one while the peer waits for it. */
    uv_tcp_nodelay(&c->tcp, 1);
}

/* ---- heartbeat ------------------------------------------------------------ */

static void on_heartbeat(uv_timer_t *t)
{
    cl_admin_t *a = t->data;
    uint64_t now = cl_now_ms();
    uint64_t expected = a->last_beat_ms + a->heartbeat_ms;
    cl_histogram_observe(a->m_loop_lag, NULL, now > expected ? (double)(now - expected) / 1e3 : 0);
    a->last_beat_ms = now;
}

/* ---- life cycle ----------------------------------------------------------- */

static uint64_t or_default(uint64_t v, uint64_t def)
{
    return v != 0 ? v : def;
}

static void register_metrics(cl_admin_t *a)
{
    static const double lag_bounds[] = {0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10};
    a->m_requests =
        cl_metrics_counter(a->metrics, "clickloop_admin_requests_total",
                           "HTTP requests answered by the admin server, by status.", "code", NULL);
    a->m_connections = cl_metrics_gauge(a->metrics, "clickloop_admin_connections",
                                        "Open connections to the admin server.", NULL);
    a->m_rejected = cl_metrics_counter(
        a->metrics, "clickloop_admin_connections_rejected_total",
        "Connections to the admin server closed at once: over the connection limit, or the "
        "accept failed.",
        "reason", NULL);
    /* Both reasons from the start, so that rate() has a series before the first. */
    cl_counter_add(a->m_rejected, CL_LABELS("connection_limit"), 0);
    cl_counter_add(a->m_rejected, CL_LABELS("accept_error"), 0);
    a->m_timed_out = cl_metrics_counter(
        a->metrics, "clickloop_admin_connections_timed_out_total",
        "Admin connections closed because a request was too slow to arrive or the connection "
        "sat idle.",
        NULL);
    a->m_loop_lag = cl_metrics_histogram(
        a->metrics, "clickloop_event_loop_lag_seconds",
        "How late the admin server's 1 s heartbeat timer fired: time the event loop was busy.",
        lag_bounds, CL_ARRAY_LEN(lag_bounds), NULL);
}

cl_admin_t *cl_admin_new(uv_loop_t *loop, const cl_admin_params_t *params, cl_metrics_t *metrics,
                         cl_admin_ready_cb ready, void *ready_arg)
{
    cl_admin_t *a = cl_xcalloc(1, sizeof *a);
    a->loop = loop;
    a->params = *params;
    a->host = cl_xstrdup(params->host != NULL ? params->host : "127.0.0.1");
    a->params.host = a->host;
    a->params.max_connections =
        (unsigned int)or_default(params->max_connections, DEFAULT_MAX_CONNECTIONS);
    a->params.request_timeout_ms =
        or_default(params->request_timeout_ms, DEFAULT_REQUEST_TIMEOUT_MS);
    a->params.idle_timeout_ms = or_default(params->idle_timeout_ms, DEFAULT_IDLE_TIMEOUT_MS);
    a->params.stall_ms = or_default(params->stall_ms, DEFAULT_STALL_MS);
    a->params.max_header_bytes = or_default(params->max_header_bytes, DEFAULT_MAX_HEADER_BYTES);
    a->params.max_body_bytes = or_default(params->max_body_bytes, DEFAULT_MAX_BODY_BYTES);
    /* At most a quarter of the stall threshold, so that a healthy loop never
     * looks stalled between two beats. */
    uint64_t quarter = a->params.stall_ms / 4;
    a->heartbeat_ms = quarter == 0 ? 1 : quarter < HEARTBEAT_MS ? quarter : HEARTBEAT_MS;
    bool v6 = strchr(a->host, ':') != NULL;
    snprintf(a->address, sizeof a->address, v6 ? "[%s]:%u" : "%s:%u", a->host,
             (unsigned)params->port);
    a->metrics = metrics;
    a->ready = ready;
    a->ready_arg = ready_arg;
    register_metrics(a);
    /* Initialised here, so that close always has a handle to wait for and its
     * callback never runs inside cl_admin_close(). */
    uv_timer_init(loop, &a->heartbeat);
    a->heartbeat.data = a;
    a->handles_open = 1;
    return a;
}

int cl_admin_start(cl_admin_t *a, char err[CL_ERR_LEN])
{
    struct sockaddr_storage addr;
    int rc = strchr(a->host, ':') != NULL
                 ? uv_ip6_addr(a->host, a->params.port, (struct sockaddr_in6 *)&addr)
                 : uv_ip4_addr(a->host, a->params.port, (struct sockaddr_in *)&addr);
    if (rc != 0)
        return cl_errorf(err, "admin server: %s is not an IP address and port: %s", a->address,
                         uv_strerror(rc));
    if (!a->listener_initialized) {
        uv_tcp_init(a->loop, &a->listener);
        a->listener.data = a;
        a->listener_initialized = true;
        a->handles_open++;
    }
    /* libuv reports some bind errors (EADDRINUSE) only from uv_listen(). */
    rc = uv_tcp_bind(&a->listener, (const struct sockaddr *)&addr, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&a->listener, LISTEN_BACKLOG, on_connection);
    if (rc != 0)
        return cl_errorf(err, "admin server: cannot listen on %s: %s", a->address, uv_strerror(rc));
    struct sockaddr_storage bound;
    int len = sizeof bound;
    if (uv_tcp_getsockname(&a->listener, (struct sockaddr *)&bound, &len) == 0)
        a->port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                    : ((struct sockaddr_in *)&bound)->sin_port);
    a->last_beat_ms = cl_now_ms();
    uv_timer_start(&a->heartbeat, on_heartbeat, a->heartbeat_ms, a->heartbeat_ms);
    return CL_OK;
}

uint16_t cl_admin_port(const cl_admin_t *a)
{
    return a->port;
}

static void admin_handle_closed(cl_admin_t *a)
{
    if (--a->handles_open > 0 || !a->closing)
        return;
    free(a->host);
    cl_close_complete(a, a->close_cb, a->close_arg);
}

static void on_admin_handle_closed(uv_handle_t *h)
{
    admin_handle_closed(h->data);
}

void cl_admin_close(cl_admin_t *a, cl_close_cb cb, void *arg)
{
    if (a->closing)
        return;
    a->closing = true;
    a->close_cb = cb;
    a->close_arg = arg;
    for (conn_t *c = a->conns; c != NULL; c = c->next)
        conn_close(c);
    if (a->listener_initialized)
        uv_close((uv_handle_t *)&a->listener, on_admin_handle_closed);
    uv_close((uv_handle_t *)&a->heartbeat, on_admin_handle_closed);
}

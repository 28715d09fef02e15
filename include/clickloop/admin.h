/* admin: the HTTP/1.1 server for health, readiness and Prometheus metrics
 * (`admin.listen`), on the service's libuv loop.
 *
 *   GET /healthz  200 "ok" while the loop turns; 503 when the loop has stalled
 *                 (a heartbeat timer runs every second; if, when a request is
 *                 answered, its last beat is older than `stall_ms`, some
 *                 callback blocked the loop that long)
 *   GET /readyz   200 when main's readiness callback says so, else 503 with
 *                 what is missing
 *   GET /metrics  the registry in the Prometheus text format 0.0.4
 *
 * HEAD works wherever GET does; another method on these paths gets 405 with
 * `Allow: GET, HEAD`, any other path 404. Query strings are ignored.
 *
 * Defences, so that a slow or hostile client cannot hurt the loop (every
 * limit is a field of cl_admin_params_t):
 *   - a request must arrive whole within `request_timeout_ms` of its first
 *     byte (of the accept, for a connection's first request), however slowly
 *     it trickles in; otherwise the connection is closed without an answer;
 *   - a connection with nothing to do is closed after `idle_timeout_ms`, also
 *     when the peer stops reading the responses it asked for;
 *   - the request target, header names and values together are limited to
 *     `max_header_bytes` (414 when the target alone is over, else 431; the
 *     parser's own limit of 80 KiB covers the whitespace around them), a body
 *     to `max_body_bytes` (413); malformed requests get 400; each of these ends
 *     the connection;
 *   - at most `max_connections` connections are open: beyond that a new one is
 *     accepted, sent a 503 if its socket takes it at once, and closed, so the
 *     client learns it right away instead of waiting in the kernel's backlog,
 *     and the listener keeps draining the backlog (the alternative, to stop
 *     accepting, would let stale connections pile up there and be served long
 *     after their client gave up). Each connection is a file descriptor: the
 *     process needs an RLIMIT_NOFILE well above max_connections plus what
 *     Kafka and MariaDB use (the usual soft limit is 1 024);
 *   - pipelined requests are answered in order; after 16 of them, or while
 *     more than 256 KiB of responses wait for the peer to read them, the
 *     connection stops reading until everything queued has been written, so
 *     memory per connection stays bounded and one client cannot keep the loop
 *     busy with a stream of requests.
 *
 * Everything runs on the loop thread and nothing blocks: writes are uv_write,
 * their buffers are freed in the write callback, and connections are freed in
 * their close callbacks. The process must ignore SIGPIPE (main does): libuv
 * writes with write(2), and a peer that has gone would otherwise kill it. */
#ifndef CLICKLOOP_ADMIN_H
#define CLICKLOOP_ADMIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "clickloop/buf.h"
#include "clickloop/common.h"
#include "clickloop/metrics.h"

typedef struct cl_admin_s cl_admin_t;

/* Zero fields take the default given in brackets. */
typedef struct cl_admin_params_s {
    const char *host;             /* IP address, no brackets ("127.0.0.1", "::") */
    uint16_t port;                /* 0 picks a free port; cl_admin_port() tells which */
    unsigned int max_connections; /* [1024] */
    uint64_t request_timeout_ms;  /* [10 s] first byte to complete request */
    uint64_t idle_timeout_ms;     /* [60 s] keep-alive without a request */
    uint64_t stall_ms;            /* [10 s] heartbeat age that makes /healthz 503 */
    size_t max_header_bytes;      /* [8 KiB] target, header names and values */
    size_t max_body_bytes;        /* [1 KiB] no route takes a body */
} cl_admin_params_t;

/* Readiness, asked on every GET /readyz: return true when ready; otherwise
 * append to `missing` what is missing, in a few words ("no Kafka partitions
 * assigned; MariaDB unreachable"). */
typedef bool (*cl_admin_ready_cb)(void *arg, cl_buf_t *missing);

/* Make a server; nothing listens before cl_admin_start(). `metrics` is the
 * registry served on /metrics (the server adds its own families to it:
 * requests by status code, open and rejected connections, event loop lag);
 * it and `ready`'s arg must outlive the server. `ready` may be NULL (always
 * ready). The host string is copied. */
cl_admin_t *cl_admin_new(uv_loop_t *loop, const cl_admin_params_t *params, cl_metrics_t *metrics,
                         cl_admin_ready_cb ready, void *ready_arg);

/* Bind, listen and start the heartbeat. On failure (bad address, address in
 * use, no permission) err names the address and the cause; the server must
 * still be closed with cl_admin_close(). */
int cl_admin_start(cl_admin_t *admin, char err[CL_ERR_LEN]);

/* The port listened on (useful with port 0), 0 before a successful start. */
uint16_t cl_admin_port(const cl_admin_t *admin);

/* Close every connection (responses not yet written are dropped), the
 * listener and the heartbeat, then free the server; `cb` runs from the loop
 * once all of it is closed. Valid after a failed or without any start. */
void cl_admin_close(cl_admin_t *admin, cl_close_cb cb, void *arg);

/* ---- pure parts, exposed for tests -------------------------------------- */

typedef enum {
    CL_ADMIN_PAGE_NONE = 0, /* no page: the status says why (400, 404, 405) */
    CL_ADMIN_PAGE_HEALTHZ,
    CL_ADMIN_PAGE_READYZ,
    CL_ADMIN_PAGE_METRICS,
} cl_admin_page_t;

typedef struct cl_admin_route_s {
    int status; /* 200 with a page, else 400, 404 or 405 */
    cl_admin_page_t page;
    bool head; /* a HEAD request: headers only */
} cl_admin_route_t;

/* What a request gets, from its method name ("GET") and request target
 * ("/metrics?x=1", or the absolute form "http://host:9400/metrics"). */
cl_admin_route_t cl_admin_route(const char *method, const char *target, size_t target_len);

typedef struct cl_admin_response_s {
    int status;
    const char *content_type; /* NULL for "text/plain; charset=utf-8" */
    const char *body;
    size_t body_len;
    bool head;              /* send Content-Length of the body, not the body */
    bool close;             /* last response on the connection: Connection: close */
    bool http10_keep_alive; /* an HTTP/1.0 peer asked to keep the connection */
    const char *allow;      /* Allow header value (405), or NULL */
    const char *date;       /* Date header value, or NULL to leave it out */
} cl_admin_response_t;

/* Append the status line, headers and (unless head) body to `out`. */
void cl_admin_format_response(const cl_admin_response_t *r, cl_buf_t *out);

/* Answer the requests in `len` bytes as if a connection had received them at
 * once, without a socket: the same parsing, limits, routes and pages as a
 * connection, each response appended to `out` (without a Date header). Stops
 * after a request that ends the connection (Connection: close, HTTP/1.0
 * without keep-alive, Upgrade) or a malformed one, or when the rest is an
 * incomplete request. The flow control of a connection (timeouts, pausing
 * after MAX_ANSWERS_PER_DRAIN) is not applied. Counts no requests in the
 * metrics. Returns the number of responses. For the fuzzer (test/fuzz) and
 * unit tests. */
size_t cl_admin_answer_bytes(cl_admin_t *admin, const char *data, size_t len, cl_buf_t *out);

#endif

/* A tiny HTTP/1.1 server on a libuv loop, for unit tests of the modules that
 * speak HTTP through libcurl: it reads each request (headers and a body of
 * Content-Length bytes), answers with the next of its canned answers (the
 * last one repeats) and closes the connection. Include after cl_test.h. */
#ifndef CL_FAKE_HTTP_H
#define CL_FAKE_HTTP_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "clickloop/common.h"

#define CL_FAKE_HTTP_MAX_ANSWERS 8

typedef struct {
    int status;       /* e.g. 200 */
    const char *body; /* JSON text, static */
} cl_fake_http_answer_t;

typedef struct {
    uv_tcp_t listener;
    unsigned int port;
    cl_fake_http_answer_t answers[CL_FAKE_HTTP_MAX_ANSWERS];
    unsigned int answer_count;
    unsigned int requests; /* answered so far */
    unsigned int open;     /* connections not yet closed */
} cl_fake_http_t;

typedef struct {
    uv_tcp_t tcp;
    cl_fake_http_t *server;
    char *in;
    size_t in_len, in_cap;
    uv_write_t write;
    char *out;
} cl_fake_http_conn_t;

static inline void cl_fake_http_conn_closed(uv_handle_t *h)
{
    cl_fake_http_conn_t *c = h->data;
    c->server->open--;
    free(c->in);
    free(c->out);
    free(c);
}

static inline void cl_fake_http_written(uv_write_t *req, int status)
{
    CL_UNUSED(status); /* the client may have gone meanwhile */
    cl_fake_http_conn_t *c = req->data;
    uv_close((uv_handle_t *)&c->tcp, cl_fake_http_conn_closed);
}

static inline void cl_fake_http_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    cl_fake_http_conn_t *c = h->data;
    if (c->in_cap - c->in_len < suggested + 1) {
        c->in_cap = c->in_len + suggested + 1;
        c->in = cl_xrealloc(c->in, c->in_cap);
    }
    *buf = uv_buf_init(c->in + c->in_len, (unsigned int)(c->in_cap - c->in_len - 1));
}

/* The whole request is in: headers and Content-Length bytes of body. */
static inline bool cl_fake_http_complete(const cl_fake_http_conn_t *c)
{
    const char *end = c->in != NULL ? strstr(c->in, "\r\n\r\n") : NULL;
    if (end == NULL)
        return false;
    size_t body = 0;
    const char *cl = strstr(c->in, "Content-Length: ");
    if (cl != NULL && cl < end)
        body = strtoul(cl + strlen("Content-Length: "), NULL, 10);
    return c->in_len >= (size_t)(end + 4 - c->in) + body;
}

static inline void cl_fake_http_answer(cl_fake_http_conn_t *c)
{
    cl_fake_http_t *s = c->server;
    unsigned int i = s->requests < s->answer_count ? s->requests : s->answer_count - 1;
    const cl_fake_http_answer_t *a = &s->answers[i];
    s->requests++;
    size_t len = strlen(a->body);
    c->out = cl_xmalloc(len + 256);
    int n = snprintf(c->out, len + 256,
                     "HTTP/1.1 %d Fake\r\nContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
                     a->status, len, a->body);
    c->write.data = c;
    uv_buf_t buf = uv_buf_init(c->out, (unsigned int)n);
    uv_write(&c->write, (uv_stream_t *)&c->tcp, &buf, 1, cl_fake_http_written);
}

static inline void cl_fake_http_read(uv_stream_t *stream, ssize_t n, const uv_buf_t *buf)
{
    cl_fake_http_conn_t *c = stream->data;
    CL_UNUSED(buf);
    if (n < 0) {
        uv_close((uv_handle_t *)&c->tcp, cl_fake_http_conn_closed);
        return;
    }
    c->in_len += (size_t)n;
    c->in[c->in_len] = '\0';
    if (!cl_fake_http_complete(c))
        return;
    uv_read_stop(stream);
    cl_fake_http_answer(c);
}

static inline void cl_fake_http_connection(uv_stream_t *listener, int status)
{
    if (status != 0)
        return;
    cl_fake_http_conn_t *c = cl_xcalloc(1, sizeof *c);
    c->server = listener->data;
    uv_tcp_init(listener->loop, &c->tcp);
    c->tcp.data = c;
    c->server->open++;
    if (uv_accept(listener, (uv_stream_t *)&c->tcp) != 0) {
        uv_close((uv_handle_t *)&c->tcp, cl_fake_http_conn_closed);
        return;
    }
    uv_read_start((uv_stream_t *)&c->tcp, cl_fake_http_alloc, cl_fake_http_read);
}

/* Listen on 127.0.0.1, on a port of the system's choice (server->port). */
static inline void cl_fake_http_start(uv_loop_t *loop, cl_fake_http_t *server)
{
    server->requests = 0;
    server->open = 0;
    struct sockaddr_in addr;
    uv_ip4_addr("127.0.0.1", 0, &addr);
    uv_tcp_init(loop, &server->listener);
    server->listener.data = server;
    CL_ASSERT_INT_EQ(0, uv_tcp_bind(&server->listener, (const struct sockaddr *)&addr, 0));
    CL_ASSERT_INT_EQ(0, uv_listen((uv_stream_t *)&server->listener, 16, cl_fake_http_connection));
    struct sockaddr_in bound;
    int len = sizeof bound;
    uv_tcp_getsockname(&server->listener, (struct sockaddr *)&bound, &len);
    server->port = ntohs(bound.sin_port);
}

/* Stop listening; connections still open close once answered. */
static inline void cl_fake_http_stop(cl_fake_http_t *server)
{
    uv_close((uv_handle_t *)&server->listener, NULL);
}

#endif

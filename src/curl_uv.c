/* curl_uv: libcurl's multi interface on the libuv loop; see
 * include/clickloop/curl_uv.h.
 *
 * Who runs what: libcurl asks for sockets to watch (on_curl_socket) and for a
 * timeout (on_curl_timer); the uv_poll and uv_timer callbacks hand the events
 * back with curl_multi_socket_action() and then drain curl_multi_info_read()
 * for finished transfers (collect_done).
 *
 * Rules this file keeps, with the library quirks behind them:
 * - libcurl is never called from inside its own callbacks (its manual forbids
 *   it for the timer callback). A timeout of 0 therefore starts the uv_timer
 *   with 0 ms: "as soon as possible" from the next loop iteration, not now.
 * - One uv_poll per socket, created when libcurl first mentions the socket
 *   and attached to it with curl_multi_assign(); libcurl hands it back with
 *   every later call for that socket. On CURL_POLL_REMOVE, which libcurl
 *   reports before it closes the socket, the poll is closed at once (so that
 *   its EPOLL_CTL_DEL cannot hit a reused descriptor number) and freed in its
 *   close callback.
 * - The socket callback also runs inside curl_multi_remove_handle() and
 *   curl_multi_cleanup() (cached connections are closed there): the glue
 *   stays valid until every poll's close callback has run.
 * - A CURLMsg is only valid until the next libcurl call: its easy handle and
 *   result are read before the handle is removed. */
#include "clickloop/curl_uv.h"

#include <stdbool.h>
#include <stdlib.h>

/* One transfer between cl_curl_uv_add and its end (CURLOPT_PRIVATE). */
typedef struct transfer_s {
    struct transfer_s *prev, *next; /* running ones */
    CURL *easy;
    cl_curl_uv_done_cb done;
    void *arg;
} transfer_t;

typedef struct socket_ctx_s {
    uv_poll_t poll;
    cl_curl_uv_t *cu;
    curl_socket_t fd;
    bool closing;
    struct socket_ctx_s *prev, *next; /* open ones */
} socket_ctx_t;

struct cl_curl_uv_s {
    uv_loop_t *loop;
    CURLM *multi; /* NULL once closing */
    uv_timer_t timer;
    socket_ctx_t *sockets;
    transfer_t *transfers;
    unsigned int open_handles; /* the timer and the polls, until their close callbacks ran */
    cl_close_cb close_cb;
    void *close_arg;
};

static void maybe_free(cl_curl_uv_t *cu)
{
    if (cu->multi != NULL || cu->open_handles > 0)
        return;
    cl_close_cb cb = cu->close_cb;
    void *arg = cu->close_arg;
    free(cu);
    if (cb != NULL)
        cb(arg);
}

/* ---- Sockets -------------------------------------------------------------------------------- */

static void on_socket_closed(uv_handle_t *h)
{
    socket_ctx_t *ctx = h->data;
    cl_curl_uv_t *cu = ctx->cu;
    CL_DLIST_UNLINK(cu->sockets, ctx);
    free(ctx);
    cu->open_handles--;
    maybe_free(cu);
}

static void socket_ctx_close(socket_ctx_t *ctx)
{
    if (ctx->closing)
        return;
    ctx->closing = true;
    uv_close((uv_handle_t *)&ctx->poll, on_socket_closed);
}

static void collect_done(cl_curl_uv_t *cu);

static void on_socket_ready(uv_poll_t *h, int status, int events)
{
    socket_ctx_t *ctx = h->data;
    cl_curl_uv_t *cu = ctx->cu;
    int flags = 0;
    if (status < 0) {
        flags = CURL_CSELECT_ERR;
    } else {
        if (events & UV_READABLE)
            flags |= CURL_CSELECT_IN;
        if (events & UV_WRITABLE)
            flags |= CURL_CSELECT_OUT;
    }
    int running = 0;
    /* ctx may be closed inside this call (CURL_POLL_REMOVE): not used after. */
    curl_multi_socket_action(cu->multi, ctx->fd, flags, &running);
    collect_done(cu);
}

static socket_ctx_t *socket_ctx_open(cl_curl_uv_t *cu, curl_socket_t fd)
{
    socket_ctx_t *ctx = cl_xcalloc(1, sizeof *ctx);
    if (uv_poll_init_socket(cu->loop, &ctx->poll, fd) != 0) {
        free(ctx);
        return NULL;
    }
    ctx->poll.data = ctx;
    ctx->cu = cu;
    ctx->fd = fd;
    CL_DLIST_PUSH(cu->sockets, ctx);
    cu->open_handles++;
    return ctx;
}

static int on_curl_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    cl_curl_uv_t *cu = userp;
    socket_ctx_t *ctx = socketp;
    CL_UNUSED(easy);
    if (what == CURL_POLL_REMOVE) {
        if (ctx != NULL)
            socket_ctx_close(ctx);
        return 0;
    }
    if (ctx == NULL) {
        ctx = socket_ctx_open(cu, fd);
        if (ctx == NULL)
            return -1; /* libcurl fails the transfers on this socket */
        curl_multi_assign(cu->multi, fd, ctx);
    }
    int events = 0;
    if (what & CURL_POLL_IN)
        events |= UV_READABLE;
    if (what & CURL_POLL_OUT)
        events |= UV_WRITABLE;
    uv_poll_start(&ctx->poll, events, on_socket_ready);
    return 0;
}

/* ---- libcurl's timeout ---------------------------------------------------------------------- */

static void on_timeout(uv_timer_t *t)
{
    cl_curl_uv_t *cu = t->data;
    int running = 0;
    curl_multi_socket_action(cu->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    collect_done(cu);
}

static int on_curl_timer(CURLM *multi, long timeout_ms, void *userp)
{
    cl_curl_uv_t *cu = userp;
    CL_UNUSED(multi);
    if (timeout_ms < 0)
        uv_timer_stop(&cu->timer);
    else
        uv_timer_start(&cu->timer, on_timeout, (uint64_t)timeout_ms, 0);
    return 0;
}

/* ---- Transfers ------------------------------------------------------------------------------ */

static transfer_t *transfer_of(CURL *easy)
{
    char *private_ptr = NULL;
    curl_easy_getinfo(easy, CURLINFO_PRIVATE, &private_ptr);
    return (transfer_t *)(void *)private_ptr;
}

/* Take the transfer out of libcurl and free its record. */
static void transfer_remove(cl_curl_uv_t *cu, transfer_t *t)
{
    curl_multi_remove_handle(cu->multi, t->easy);
    CL_DLIST_UNLINK(cu->transfers, t);
    free(t);
}

/* A callback may close the glue (cu->multi becomes NULL) or start and end
 * other transfers: the loop reads one message at a time. */
static void collect_done(cl_curl_uv_t *cu)
{
    CURLMsg *msg;
    int left = 0;
    while (cu->multi != NULL && (msg = curl_multi_info_read(cu->multi, &left)) != NULL) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        CURL *easy = msg->easy_handle;
        CURLcode result = msg->data.result;
        transfer_t *t = transfer_of(easy);
        cl_curl_uv_done_cb done = t->done;
        void *arg = t->arg;
        transfer_remove(cu, t);
        done(easy, result, arg);
    }
}

void cl_curl_uv_add(cl_curl_uv_t *cu, CURL *easy, cl_curl_uv_done_cb done, void *arg)
{
    transfer_t *t = cl_xcalloc(1, sizeof *t);
    t->easy = easy;
    t->done = done;
    t->arg = arg;
    curl_easy_setopt(easy, CURLOPT_PRIVATE, t);
    CURLMcode mc = curl_multi_add_handle(cu->multi, easy);
    if (mc != CURLM_OK)
        cl_panic("curl_multi_add_handle: %s", curl_multi_strerror(mc));
    CL_DLIST_PUSH(cu->transfers, t);
}

void cl_curl_uv_abort(cl_curl_uv_t *cu, CURL *easy)
{
    transfer_remove(cu, transfer_of(easy));
}

/* ---- Life cycle ----------------------------------------------------------------------------- */

int cl_curl_uv_new(uv_loop_t *loop, cl_curl_uv_t **out, char err[CL_ERR_LEN])
{
    const curl_version_info_data *info = curl_version_info(CURLVERSION_NOW);
    if (!(info->features & CURL_VERSION_ASYNCHDNS))
        return cl_errorf(err,
                         "libcurl %s resolves names synchronously, which would block the "
                         "event loop; use a build with the threaded resolver or c-ares",
                         info->version);
    CURLM *multi = curl_multi_init();
    if (multi == NULL)
        return cl_errorf(err, "cannot create a libcurl multi handle");
    cl_curl_uv_t *cu = cl_xcalloc(1, sizeof *cu);
    cu->loop = loop;
    cu->multi = multi;
    uv_timer_init(loop, &cu->timer); /* only initialises: cannot fail */
    cu->timer.data = cu;
    cu->open_handles = 1;
    curl_multi_setopt(multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket);
    curl_multi_setopt(multi, CURLMOPT_SOCKETDATA, cu);
    curl_multi_setopt(multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
    curl_multi_setopt(multi, CURLMOPT_TIMERDATA, cu);
    *out = cu;
    return CL_OK;
}

static void on_timer_closed(uv_handle_t *h)
{
    cl_curl_uv_t *cu = h->data;
    cu->open_handles--;
    maybe_free(cu);
}

void cl_curl_uv_close(cl_curl_uv_t *cu, cl_close_cb cb, void *arg)
{
    cu->close_cb = cb;
    cu->close_arg = arg;
    while (cu->transfers != NULL)
        transfer_remove(cu, cu->transfers);
    /* Closes the cached connections; their sockets are reported removed. */
    curl_multi_cleanup(cu->multi);
    cu->multi = NULL;
    for (socket_ctx_t *ctx = cu->sockets; ctx != NULL; ctx = ctx->next)
        socket_ctx_close(ctx); /* none expected: a defence against a missed REMOVE */
    uv_close((uv_handle_t *)&cu->timer, on_timer_closed);
}

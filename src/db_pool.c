/* db_pool: a reconnecting pool of non-blocking MariaDB connections on the
 * libuv loop; see include/clickloop/db_pool.h.
 *
 * Each connection sits in a slot (slot_state_t) with its own retry timer. The
 * pool dispatches queued queries to idle slots, reconnects a slot after a
 * failure or a loss with backoff, and logs each slot's changes of state (the
 * connection itself reports them through its event callback). */
#include "clickloop/db_pool.h"

#include <errmsg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clickloop/log.h"

#define LOG_MODULE "db"
#define DEFAULT_LABEL "mariadb"

typedef enum {
    SLOT_BACKOFF,    /* waiting for retry_timer before connecting */
    SLOT_CONNECTING, /* connect in progress */
    SLOT_IDLE,       /* connected, free */
    SLOT_BUSY,       /* running a pool query */
    SLOT_RETIRING,   /* removed by a shrink while running a query: closes when it is done */
    SLOT_CLOSING,    /* timer and connection closing; freed when both are closed */
} slot_state_t;

/* Slots are allocated one by one: each embeds a uv_timer_t, which must not
 * move while the loop knows it, and a slot that a shrink removed outlives its
 * place in the pool until its query is done and its handles are closed. */
typedef struct pool_slot_s {
    cl_db_pool_t *pool;
    struct pool_slot_s *next_retired; /* in pool->retired */
    unsigned int index;
    cl_db_conn_t *conn;
    uv_timer_t retry_timer;
    slot_state_t state;
    unsigned int attempt;      /* consecutive failed connects */
    unsigned int open_handles; /* retry_timer and conn, until their close callbacks ran */
    bool started;              /* the first connect attempt was made */
    bool lost_while_busy;
    cl_db_error_t lost_error;
    /* The error of the last connect failure logged at warn or error, 0 once
     * connected: a failure with the same code again is logged at debug. */
    unsigned int logged_failure;
} pool_slot_t;

typedef struct pool_req_s {
    struct pool_req_s *next;
    cl_db_pool_t *pool;
    pool_slot_t *slot;
    const char *sql;
    size_t len;
    cl_db_query_handlers_t handlers;
    void *arg;
} pool_req_t;

struct cl_db_pool_s {
    uv_loop_t *loop;
    cl_db_params_t params; /* strings owned: connections added by a resize need them */
    unsigned int size;
    pool_slot_t **slots;  /* the `size` connections queries are dispatched to */
    pool_slot_t *retired; /* removed by a shrink, not yet freed */
    pool_req_t *queue_head, *queue_tail;
    cl_db_pool_stats_t stats;
    uint64_t rng;
    bool closing;
    unsigned int open_slots; /* once closing: slots not yet freed */
    cl_close_cb close_cb;
    void *close_arg;
};

static char *strdup_or_null(const char *s)
{
    return s != NULL ? cl_xstrdup(s) : NULL;
}

static void pool_keep_params(cl_db_pool_t *pool, const cl_db_params_t *p)
{
    pool->params = *p;
    pool->params.label = cl_xstrdup(p->label != NULL ? p->label : DEFAULT_LABEL);
    pool->params.host = strdup_or_null(p->host);
    pool->params.unix_socket = strdup_or_null(p->unix_socket);
    pool->params.user = strdup_or_null(p->user);
    pool->params.password = strdup_or_null(p->password);
    pool->params.database = strdup_or_null(p->database);
}

static void pool_free_params(cl_db_params_t *p)
{
    free((char *)p->label);
    free((char *)p->host);
    free((char *)p->unix_socket);
    free((char *)p->user);
    free((char *)p->password);
    free((char *)p->database);
}

static uint32_t pool_random(cl_db_pool_t *pool)
{
    /* xorshift64*: jitter only, not security. */
    uint64_t x = pool->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    pool->rng = x;
    return (uint32_t)((x * 0x2545F4914F6CDD1DULL) >> 32);
}

typedef enum {
    SLOT_EVENT_CONNECT_FAILED,
    SLOT_EVENT_LOST,
} slot_event_t;

static void slot_log_up(const pool_slot_t *slot)
{
    const cl_db_pool_t *pool = slot->pool;
    if (pool->closing)
        return;
    cl_log_info(LOG_MODULE, "%s connection %u up (%u connected)", pool->params.label, slot->index,
                pool->stats.connected);
}

/* A connect failed or a connection was lost; the next attempt is due in
 * `retry_in_ms`. An operator must fix some causes (CL_DB_ERROR_OPERATOR):
 * those are errors, the others warnings. A connect that fails again for the
 * reason already logged is a retry, not a change: debug. */
static void slot_log_down(pool_slot_t *slot, slot_event_t event, const cl_db_error_t *e,
                          bool needs_operator, uint64_t retry_in_ms)
{
    const cl_db_pool_t *pool = slot->pool;
    if (pool->closing)
        return;
    cl_log_level_t level = needs_operator ? CL_LOG_ERROR : CL_LOG_WARN;
    if (event == SLOT_EVENT_CONNECT_FAILED && slot->logged_failure == e->code && e->code != 0)
        level = CL_LOG_DEBUG;
    else
        slot->logged_failure = e->code;
    cl_log(level, LOG_MODULE, "%s connection %u %s: %s (error %u)%s; retrying in %llu ms",
           pool->params.label, slot->index, event == SLOT_EVENT_LOST ? "lost" : "failed",
           e->message, e->code, needs_operator ? " - check the mariadb settings" : "",
           (unsigned long long)retry_in_ms);
}

static void on_slot_retry(uv_timer_t *t);

static void slot_schedule_retry(pool_slot_t *slot, slot_event_t event, const cl_db_error_t *e)
{
    cl_db_pool_t *pool = slot->pool;
    cl_db_error_class_t cls = cl_db_error_classify(e->code);
    /* An operator must fix these: retry, but at the slowest pace. */
    unsigned int attempt = cls == CL_DB_ERROR_OPERATOR ? 64 : slot->attempt;
    uint64_t delay = cl_backoff_ms(attempt, pool->params.backoff_min_ms,
                                   pool->params.backoff_max_ms, pool_random(pool));
    slot->attempt++;
    slot->state = SLOT_BACKOFF;
    uv_timer_start(&slot->retry_timer, on_slot_retry, delay, 0);
    slot_log_down(slot, event, e, cls == CL_DB_ERROR_OPERATOR, delay);
}

static void slot_connect(pool_slot_t *slot)
{
    char err[CL_ERR_LEN];
    slot->state = SLOT_CONNECTING;
    if (cl_db_conn_connect(slot->conn, err) != CL_OK) {
        /* Only resolver start-up can fail here; classify it as unknown host. */
        cl_db_error_t e = {.code = CR_UNKNOWN_HOST, .sqlstate = "HY000"};
        snprintf(e.message, sizeof e.message, "%s", err);
        slot->pool->stats.connect_failures++;
        slot_schedule_retry(slot, SLOT_EVENT_CONNECT_FAILED, &e);
    }
}

static void on_slot_retry(uv_timer_t *t)
{
    pool_slot_t *slot = t->data;
    if (slot->started)
        slot->pool->stats.reconnect_attempts++;
    slot->started = true;
    slot_connect(slot);
}

static void pool_dispatch(cl_db_pool_t *pool);

static void on_slot_conn_event(cl_db_conn_t *conn, cl_db_conn_event_t event, const cl_db_error_t *e,
                               void *arg)
{
    pool_slot_t *slot = arg;
    cl_db_pool_t *pool = slot->pool;
    CL_UNUSED(conn);
    switch (event) {
    case CL_DB_CONN_EVENT_CONNECTED:
        slot->attempt = 0;
        slot->state = SLOT_IDLE;
        pool->stats.connected++;
        pool->stats.connects++;
        slot->logged_failure = 0;
        slot_log_up(slot);
        pool_dispatch(pool);
        break;
    case CL_DB_CONN_EVENT_CONNECT_FAILED:
        pool->stats.connect_failures++;
        slot_schedule_retry(slot, SLOT_EVENT_CONNECT_FAILED, e);
        break;
    case CL_DB_CONN_EVENT_LOST:
        pool->stats.connected--;
        pool->stats.connections_lost++;
        slot->attempt = 0;
        if (slot->state == SLOT_BUSY || slot->state == SLOT_RETIRING) {
            /* The query's done callback follows; reconnect (or close) then. */
            slot->lost_while_busy = true;
            slot->lost_error = *e;
        } else {
            slot_schedule_retry(slot, SLOT_EVENT_LOST, e);
        }
        break;
    case CL_DB_CONN_EVENT_NONE:
        break;
    }
}

/* The slot's connection is up (counted in stats.connected). */
static bool slot_is_up(const pool_slot_t *slot)
{
    switch (slot->state) {
    case SLOT_IDLE:
        return true;
    case SLOT_BUSY:
    case SLOT_RETIRING:
        return !slot->lost_while_busy;
    default:
        return false;
    }
}

static void on_slot_timer_closed(uv_handle_t *h);
static void on_slot_conn_closed(void *arg);

/* Close the slot's timer and connection (a query in flight is cancelled);
 * the slot is freed when both are closed. */
static void slot_close(pool_slot_t *slot)
{
    if (slot_is_up(slot))
        slot->pool->stats.connected--;
    slot->state = SLOT_CLOSING;
    uv_close((uv_handle_t *)&slot->retry_timer, on_slot_timer_closed);
    cl_db_conn_close(slot->conn, on_slot_conn_closed, slot);
}

static void on_pool_row(void *arg, unsigned int statement, unsigned int field_count,
                        const char *const *values, const unsigned long *lengths)
{
    pool_req_t *req = arg;
    if (req->handlers.row != NULL)
        req->handlers.row(req->arg, statement, field_count, values, lengths);
}

static void on_pool_done(void *arg, const cl_db_result_t *result)
{
    pool_req_t *req = arg;
    pool_slot_t *slot = req->slot;
    cl_db_pool_t *pool = req->pool;
    pool->stats.busy--;
    switch (slot->state) {
    case SLOT_BUSY:
        if (slot->lost_while_busy) {
            /* LOST always precedes done (conn_deliver), so this is the only
             * way a busy connection comes back broken. */
            slot->lost_while_busy = false;
            slot_schedule_retry(slot, SLOT_EVENT_LOST, &slot->lost_error);
        } else {
            slot->state = SLOT_IDLE;
        }
        break;
    case SLOT_RETIRING:
        /* A shrink removed it while this query ran. Closed before done runs:
         * done may close the pool, which then finds the slot closing. */
        slot_close(slot);
        break;
    default:
        break; /* closing with the pool: its query was cancelled */
    }
    req->handlers.done(req->arg, result);
    free(req);
    pool_dispatch(pool);
}

static const cl_db_query_handlers_t pool_handlers = {on_pool_row, on_pool_done};

static void pool_dispatch(cl_db_pool_t *pool)
{
    for (unsigned int i = 0; i < pool->size && pool->queue_head != NULL && !pool->closing; i++) {
        pool_slot_t *slot = pool->slots[i];
        if (slot->state != SLOT_IDLE || !cl_db_conn_is_idle(slot->conn))
            continue;
        pool_req_t *req = pool->queue_head;
        char err[CL_ERR_LEN];
        req->slot = slot;
        slot->state = SLOT_BUSY;
        /* Cannot fail: the connection is idle and not closing. */
        if (cl_db_conn_query(slot->conn, req->sql, req->len, &pool_handlers, req, err) != CL_OK) {
            slot->state = SLOT_IDLE;
            return;
        }
        pool->queue_head = req->next;
        if (pool->queue_head == NULL)
            pool->queue_tail = NULL;
        pool->stats.queued--;
        pool->stats.busy++;
    }
}

/* A disconnected slot whose first connect starts from the loop, so that no
 * event runs inside the call that created it. */
static pool_slot_t *slot_new(cl_db_pool_t *pool, unsigned int index)
{
    char err[CL_ERR_LEN];
    pool_slot_t *slot = cl_xcalloc(1, sizeof *slot);
    slot->pool = pool;
    slot->index = index;
    slot->open_handles = 2;
    /* Neither call can fail: uv_timer_init only initialises, and the params
     * were validated when the pool opened. */
    uv_timer_init(pool->loop, &slot->retry_timer);
    slot->retry_timer.data = slot;
    cl_db_conn_new(pool->loop, &pool->params, on_slot_conn_event, slot, &slot->conn, err);
    slot->state = SLOT_BACKOFF;
    uv_timer_start(&slot->retry_timer, on_slot_retry, 0, 0);
    return slot;
}

int cl_db_pool_open(uv_loop_t *loop, const cl_db_params_t *params, unsigned int size,
                    cl_db_pool_t **out, char err[CL_ERR_LEN])
{
    if (size == 0)
        return cl_errorf(err, "database: the pool needs at least one connection");
    if (cl_db_params_validate(params, err) != CL_OK)
        return CL_ERR;
    cl_db_pool_t *pool = cl_xcalloc(1, sizeof *pool);
    pool->loop = loop;
    pool_keep_params(pool, params);
    pool->size = size;
    pool->stats.size = size;
    pool->rng = uv_hrtime() ^ ((uint64_t)(uintptr_t)pool << 16) ^ 0x9E3779B97F4A7C15ULL;
    pool->slots = cl_xcalloc(size, sizeof *pool->slots);
    for (unsigned int i = 0; i < size; i++)
        pool->slots[i] = slot_new(pool, i);
    *out = pool;
    return CL_OK;
}

/* The smallest number no connection of the pool uses (numbers of removed
 * connections are reused: those report no more events). */
static unsigned int pool_unused_index(const cl_db_pool_t *pool)
{
    for (unsigned int index = 0;; index++) {
        bool used = false;
        for (unsigned int i = 0; i < pool->size && !used; i++)
            used = pool->slots[i]->index == index;
        if (!used)
            return index;
    }
}

static void pool_grow(cl_db_pool_t *pool, unsigned int size)
{
    pool->slots = cl_xrealloc(pool->slots, size * sizeof *pool->slots);
    while (pool->size < size) {
        pool_slot_t *slot = slot_new(pool, pool_unused_index(pool));
        pool->slots[pool->size++] = slot;
    }
}

/* Which connections a shrink removes first: one that is down, then one still
 * connecting, then an idle one; a busy one last, since it closes only when
 * its query is done. Ties go to the highest number. */
static int slot_retire_rank(const pool_slot_t *slot)
{
    switch (slot->state) {
    case SLOT_BACKOFF:
        return 0;
    case SLOT_CONNECTING:
        return 1;
    case SLOT_IDLE:
        return 2;
    default:
        return 3;
    }
}

static void pool_retire(cl_db_pool_t *pool, unsigned int at)
{
    pool_slot_t *slot = pool->slots[at];
    memmove(&pool->slots[at], &pool->slots[at + 1], (pool->size - at - 1) * sizeof *pool->slots);
    pool->size--;
    slot->next_retired = pool->retired;
    pool->retired = slot;
    if (slot->state == SLOT_BUSY)
        slot->state = SLOT_RETIRING; /* never interrupt a query: on_pool_done closes it */
    else
        slot_close(slot);
}

static void pool_shrink(cl_db_pool_t *pool, unsigned int size)
{
    while (pool->size > size) {
        unsigned int pick = 0;
        for (unsigned int i = 1; i < pool->size; i++) {
            const pool_slot_t *a = pool->slots[i], *b = pool->slots[pick];
            int ra = slot_retire_rank(a), rb = slot_retire_rank(b);
            if (ra < rb || (ra == rb && a->index > b->index))
                pick = i;
        }
        pool_retire(pool, pick);
    }
}

int cl_db_pool_resize(cl_db_pool_t *pool, unsigned int size, char err[CL_ERR_LEN])
{
    if (pool->closing)
        return cl_errorf(err, "database: the pool is closing");
    if (size == 0)
        return cl_errorf(err, "database: the pool needs at least one connection");
    if (size > pool->size)
        pool_grow(pool, size);
    else
        pool_shrink(pool, size);
    pool->stats.size = size;
    return CL_OK;
}

int cl_db_pool_query(cl_db_pool_t *pool, const char *sql, size_t len,
                     const cl_db_query_handlers_t *handlers, void *arg, char err[CL_ERR_LEN])
{
    if (pool->closing)
        return cl_errorf(err, "database: the pool is closing");
    if (handlers == NULL || handlers->done == NULL)
        return cl_errorf(err, "database: a query needs a done callback");
    pool_req_t *req = cl_xcalloc(1, sizeof *req);
    req->pool = pool;
    req->sql = sql;
    req->len = len;
    req->handlers = *handlers;
    req->arg = arg;
    if (pool->queue_tail != NULL)
        pool->queue_tail->next = req;
    else
        pool->queue_head = req;
    pool->queue_tail = req;
    pool->stats.queued++;
    pool_dispatch(pool);
    return CL_OK;
}

bool cl_db_pool_healthy(const cl_db_pool_t *pool)
{
    return pool->stats.connected > 0;
}

void cl_db_pool_stats(const cl_db_pool_t *pool, cl_db_pool_stats_t *out)
{
    *out = pool->stats;
}

/* Every slot is freed: complete the queries that never ran, then free. */
static void pool_finish_close(cl_db_pool_t *pool)
{
    pool_req_t *req = pool->queue_head;
    pool->queue_head = pool->queue_tail = NULL;
    while (req != NULL) {
        pool_req_t *next = req->next;
        cl_db_result_t r = {
            .status = CL_ERR_RETRY,
            .error_code = 0,
            .sqlstate = "HY000",
            .message = "query cancelled: the database pool closed before it could run",
        };
        pool->stats.queued--;
        req->handlers.done(req->arg, &r);
        free(req);
        req = next;
    }
    cl_close_cb cb = pool->close_cb;
    void *arg = pool->close_arg;
    pool_free_params(&pool->params);
    free(pool->slots);
    free(pool);
    if (cb != NULL)
        cb(arg);
}

static void slot_handle_closed(pool_slot_t *slot)
{
    if (--slot->open_handles > 0)
        return;
    cl_db_pool_t *pool = slot->pool;
    for (pool_slot_t **p = &pool->retired; *p != NULL; p = &(*p)->next_retired) {
        if (*p == slot) {
            *p = slot->next_retired;
            break;
        }
    }
    free(slot);
    if (pool->closing && --pool->open_slots == 0)
        pool_finish_close(pool);
}

static void on_slot_timer_closed(uv_handle_t *h)
{
    slot_handle_closed(h->data);
}

static void on_slot_conn_closed(void *arg)
{
    slot_handle_closed(arg);
}

int cl_db_pool_close(cl_db_pool_t *pool, cl_close_cb cb, void *arg)
{
    if (pool->closing)
        return CL_ERR;
    pool->closing = true;
    pool->close_cb = cb;
    pool->close_arg = arg;
    pool->open_slots = pool->size;
    for (pool_slot_t *slot = pool->retired; slot != NULL; slot = slot->next_retired) {
        pool->open_slots++;
        if (slot->state == SLOT_RETIRING)
            slot_close(slot); /* its query is cancelled, like those of the busy slots */
    }
    for (unsigned int i = 0; i < pool->size; i++)
        slot_close(pool->slots[i]);
    return CL_OK;
}

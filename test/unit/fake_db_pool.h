/* A link-time fake of the database pool (db.h) for loop tests of the modules
 * built on it: the test program is linked with -Wl,--wrap for
 * cl_db_pool_open, cl_db_pool_query and cl_db_pool_close (test/meson.build),
 * so the module under test calls the __wrap_ functions below instead.
 *
 * The fake is the server: queries wait in a FIFO until the test answers the
 * oldest one with fake_db_answer() (from the test's body, never from inside
 * a callback, as the real pool answers from the loop). A close cancels every
 * query with CL_ERR_RETRY from the loop, then closes its one handle and runs
 * the close callback, like the real pool. */
#ifndef FAKE_DB_POOL_H
#define FAKE_DB_POOL_H

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "clickloop/db.h"

typedef struct fake_query_s {
    char *sql;
    cl_db_query_handlers_t handlers;
    void *arg;
    struct fake_query_s *next;
} fake_query_t;

struct cl_db_pool_s {
    uv_timer_t closer; /* runs the cancellations of a close from the loop */
    fake_query_t *head, *tail;
    size_t queued;
    bool closing;
    cl_close_cb close_cb;
    void *close_arg;
};

/* The pool the module under test opened last, and counts over the program. */
static cl_db_pool_t *fake_db;

/* Statements waiting in the fake pool (0 when none is open). */
static inline size_t fake_db_queued(void)
{
    return fake_db != NULL ? fake_db->queued : 0;
}
static unsigned fake_db_opened, fake_db_closed, fake_db_queries;

int __wrap_cl_db_pool_open(uv_loop_t *loop, const cl_db_params_t *params, unsigned int size,
                           cl_db_pool_t **out, char err[CL_ERR_LEN]);
int __wrap_cl_db_pool_query(cl_db_pool_t *pool, const char *sql, size_t len,
                            const cl_db_query_handlers_t *handlers, void *arg,
                            char err[CL_ERR_LEN]);
int __wrap_cl_db_pool_close(cl_db_pool_t *pool, cl_close_cb cb, void *arg);

int __wrap_cl_db_pool_open(uv_loop_t *loop, const cl_db_params_t *params, unsigned int size,
                           cl_db_pool_t **out, char err[CL_ERR_LEN])
{
    CL_UNUSED(params);
    CL_UNUSED(err);
    if (size != 1)
        return cl_errorf(err, "fake pool: a job has one connection, asked for %u", size);
    cl_db_pool_t *pool = cl_xcalloc(1, sizeof *pool);
    uv_timer_init(loop, &pool->closer);
    pool->closer.data = pool;
    fake_db = pool;
    fake_db_opened++;
    *out = pool;
    return CL_OK;
}

int __wrap_cl_db_pool_query(cl_db_pool_t *pool, const char *sql, size_t len,
                            const cl_db_query_handlers_t *handlers, void *arg, char err[CL_ERR_LEN])
{
    if (pool->closing)
        return cl_errorf(err, "fake pool: closing");
    fake_query_t *q = cl_xcalloc(1, sizeof *q);
    q->sql = cl_xstrndup(sql, len);
    q->handlers = *handlers;
    q->arg = arg;
    if (pool->tail != NULL)
        pool->tail->next = q;
    else
        pool->head = q;
    pool->tail = q;
    pool->queued++;
    fake_db_queries++;
    return CL_OK;
}

static inline fake_query_t *fake_db_pop(cl_db_pool_t *pool)
{
    fake_query_t *q = pool->head;
    pool->head = q->next;
    if (pool->head == NULL)
        pool->tail = NULL;
    pool->queued--;
    return q;
}

static inline void fake_db_finish(fake_query_t *q, int status, unsigned int error_code,
                                  const char *message)
{
    cl_db_result_t r = {
        .status = status,
        .error_code = error_code,
        .sqlstate = status == CL_OK ? "00000" : "HY000",
        .message = message,
    };
    q->handlers.done(q->arg, &r);
    free(q->sql);
    free(q);
}

/* The SQL of the oldest query waiting, or NULL. */
static inline const char *fake_db_next_sql(void)
{
    return fake_db != NULL && fake_db->head != NULL ? fake_db->head->sql : NULL;
}

/* Answer the oldest query: `row_count` rows of `field_count` columns for
 * statement `statement` (values row-major), then done with `status`. */
static inline void fake_db_answer(int status, unsigned int statement, unsigned int field_count,
                                  size_t row_count, const char *const *values)
{
    fake_query_t *q = fake_db_pop(fake_db);
    for (size_t i = 0; i < row_count && q->handlers.row != NULL; i++) {
        unsigned long lengths[32];
        const char *const *row = values + i * field_count;
        for (unsigned int f = 0; f < field_count; f++)
            lengths[f] = row[f] != NULL ? strlen(row[f]) : 0;
        q->handlers.row(q->arg, statement, field_count, row, lengths);
    }
    fake_db_finish(q, status, status == CL_OK ? 0 : 2013, status == CL_OK ? "" : "fake failure");
}

/* Fail the oldest query with a server error number and message. */
static inline void fake_db_fail(int status, unsigned int error_code, const char *message)
{
    fake_db_finish(fake_db_pop(fake_db), status, error_code, message);
}

static inline void fake_db_ok(void)
{
    fake_db_answer(CL_OK, 0, 0, 0, NULL);
}

static void on_fake_closer_closed(uv_handle_t *h)
{
    cl_db_pool_t *pool = h->data;
    cl_close_cb cb = pool->close_cb;
    void *arg = pool->close_arg;
    if (fake_db == pool)
        fake_db = NULL;
    free(pool);
    fake_db_closed++;
    if (cb != NULL)
        cb(arg);
}

static void on_fake_close(uv_timer_t *t)
{
    cl_db_pool_t *pool = t->data;
    while (pool->head != NULL)
        fake_db_finish(fake_db_pop(pool), CL_ERR_RETRY, 2013, "cancelled: the pool closed");
    uv_close((uv_handle_t *)&pool->closer, on_fake_closer_closed);
}

int __wrap_cl_db_pool_close(cl_db_pool_t *pool, cl_close_cb cb, void *arg)
{
    if (pool->closing)
        return CL_ERR;
    pool->closing = true;
    pool->close_cb = cb;
    pool->close_arg = arg;
    uv_timer_start(&pool->closer, on_fake_close, 0, 0);
    return CL_OK;
}

/* Run the loop until `cond` holds or `timeout_ms` passes (the caller then
 * asserts cond). */
#define FAKE_RUN_UNTIL(loop, cond, timeout_ms)                                                     \
    do {                                                                                           \
        uint64_t deadline_ = cl_now_ms() + (timeout_ms);                                           \
        while (!(cond) && cl_now_ms() < deadline_)                                                 \
            uv_run((loop), UV_RUN_NOWAIT);                                                         \
    } while (0)

#endif

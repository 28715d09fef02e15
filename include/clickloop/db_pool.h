/* db_pool: N non-blocking MariaDB connections (db.h) that queries share.
 *
 * The pool keeps N connections, queues queries until one is idle, and
 * reconnects lost connections with capped exponential backoff and jitter,
 * forever: an outage or a wrong password never ends the process. N can change
 * while queries run (cl_db_pool_resize); no query is interrupted by it.
 *
 * The pool logs its connections' events itself, under the module name "db",
 * naming the pool by its params' label and each connection by its number:
 * "<label> connection <n> up (<k> connected)" at info; "... lost: <why>" and
 * "... failed: <why>; retrying in <ms> ms" at warn, or at error when an
 * operator must act (access denied, unknown database or host). A connection
 * that keeps failing for the same reason is logged once, its further
 * attempts at debug. Its owner learns the state from cl_db_pool_healthy()
 * and cl_db_pool_stats().
 *
 * Connection numbers: 0..N-1 at open, kept for the connection's life. A
 * shrink may leave gaps (it removes connections that are down first); a grow
 * numbers new connections with the lowest numbers not in use.
 *
 * Callbacks never run inside the call that started the operation; they run
 * from the loop. If a call that takes a callback fails, the callback never
 * runs (the libuv convention). */
#ifndef CLICKLOOP_DB_POOL_H
#define CLICKLOOP_DB_POOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "clickloop/common.h"
#include "clickloop/db.h"

typedef struct cl_db_pool_s cl_db_pool_t;

typedef struct cl_db_pool_stats_s {
    unsigned int size; /* connections wanted: the size of the last resize */
    /* Up, idle or busy; includes a connection that a shrink removed while it
     * ran a query, until that query is done. */
    unsigned int connected;
    unsigned int busy;           /* running a query, removed ones included */
    size_t queued;               /* queries waiting for a connection */
    uint64_t connects;           /* successful connects, first ones included */
    uint64_t reconnect_attempts; /* connect attempts after a failure or a loss */
    uint64_t connect_failures;
    uint64_t connections_lost;
} cl_db_pool_stats_t;

/* Create a pool of `size` connections and start connecting them on the next
 * loop iteration. */
int cl_db_pool_open(uv_loop_t *loop, const cl_db_params_t *params, unsigned int size,
                    cl_db_pool_t **out, char err[CL_ERR_LEN]);

/* Run `sql` on the first idle connection, or queue it (FIFO) until one is
 * idle: while the database is down, queries wait rather than fail; the caller
 * bounds how many it submits. Same contract as cl_db_conn_query: `sql` stays
 * alive until done runs. */
int cl_db_pool_query(cl_db_pool_t *pool, const char *sql, size_t len,
                     const cl_db_query_handlers_t *handlers, void *arg, char err[CL_ERR_LEN]);

/* Change the number of connections to `size` (at least 1), without stopping
 * the pool. Growing adds connections that connect from the loop through the
 * same connect and backoff path as cl_db_pool_open. Shrinking removes
 * connections at once, those that are down first, then those still
 * connecting, then idle ones, busy ones last: a removed connection takes no
 * more queries; an idle or unconnected one is closed now, a busy one when its
 * query is done (the query is never interrupted; its done callback runs as
 * usual). Queued queries stay queued for the remaining connections. Fails
 * only if size is 0 or the pool is closing. */
int cl_db_pool_resize(cl_db_pool_t *pool, unsigned int size, char err[CL_ERR_LEN]);

/* At least one connection is up. */
bool cl_db_pool_healthy(const cl_db_pool_t *pool);
void cl_db_pool_stats(const cl_db_pool_t *pool, cl_db_pool_stats_t *out);

/* Close every connection, those a shrink removed included (queries in flight
 * are cancelled with CL_ERR_RETRY, queued ones complete with CL_ERR_RETRY
 * before cb), then free the pool. Nothing is logged after this call. */
int cl_db_pool_close(cl_db_pool_t *pool, cl_close_cb cb, void *arg);

#endif

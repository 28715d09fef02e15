/* Shared definitions for every clickloop module: error codes, the length of
 * human-readable error buffers, and the allocation wrappers.
 *
 * Allocation failure is not a recoverable condition for a service whose memory
 * is bounded by configuration: the wrappers abort with a message, so call sites
 * stay readable. */
#ifndef CLICKLOOP_COMMON_H
#define CLICKLOOP_COMMON_H

#include <stddef.h>
#include <stdint.h>

/* Size of every caller-supplied error buffer (`char err[CL_ERR_LEN]`). */
#define CL_ERR_LEN 512

/* Return codes: 0 is success, negative values are failures. */
#define CL_OK 0
#define CL_ERR (-1)       /* permanent failure, the message says why */
#define CL_ERR_RETRY (-2) /* transient failure, try again later */

#define CL_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define CL_UNUSED(x) ((void)(x))

/* The one type of every asynchronous close's completion: `arg` is what the
 * caller passed with the close. */
typedef void (*cl_close_cb)(void *arg);

/* The last step of every asynchronous close: free `object` (which may hold
 * `cb` and `arg`: they are passed by value, read before the free), then call
 * cb(arg) unless cb is NULL. */
void cl_close_complete(void *object, cl_close_cb cb, void *arg);

/* A state the code cannot reach was reached (a broken table, a switch over an
 * enum that missed a value): print "clickloop: <message>" and abort. For
 * programming errors only; anything input or the servers can cause is an
 * error returned to the caller. */
_Noreturn void cl_panic(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* The first and last millisecond of MariaDB's documented DATETIME(3) range:
 * 1000-01-01 00:00:00.000 and 9999-12-31 23:59:59.999 UTC. */
#define CL_DATETIME_MIN_MS INT64_C(-30610224000000)
#define CL_DATETIME_MAX_MS INT64_C(253402300799999)
/* "YYYY-MM-DD HH:MM:SS.mmm" and its NUL. */
#define CL_DATETIME_SIZE 24

/* Write `ms` (milliseconds since the epoch, UTC) as a DATETIME(3) literal,
 * "YYYY-MM-DD HH:MM:SS.mmm". Returns 0, or CL_ERR with `out` empty outside
 * CL_DATETIME_MIN_MS..CL_DATETIME_MAX_MS. The one formatter of instants:
 * the store's SQL, retention's cutoff and the event module's reasons. */
int cl_datetime_format(int64_t ms, char out[CL_DATETIME_SIZE]);

/* Proleptic Gregorian calendar: days since 1970-01-01 to a civil date and
 * back. Pure arithmetic, exact for every year (no time_t or locale). */
void cl_civil_from_days(int64_t days, int64_t *year, int *month, int *day);
int64_t cl_days_from_civil(int64_t year, int month, int day);

/* Intrusive doubly linked lists: `node` has `prev` and `next` members, `head`
 * is an lvalue pointing to the first node (NULL when empty). */
#define CL_DLIST_PUSH(head, node)                                                                  \
    do {                                                                                           \
        (node)->prev = NULL;                                                                       \
        (node)->next = (head);                                                                     \
        if ((head) != NULL)                                                                        \
            (head)->prev = (node);                                                                 \
        (head) = (node);                                                                           \
    } while (0)
#define CL_DLIST_UNLINK(head, node)                                                                \
    do {                                                                                           \
        if ((node)->prev != NULL)                                                                  \
            (node)->prev->next = (node)->next;                                                     \
        else                                                                                       \
            (head) = (node)->next;                                                                 \
        if ((node)->next != NULL)                                                                  \
            (node)->next->prev = (node)->prev;                                                     \
        (node)->prev = (node)->next = NULL;                                                        \
    } while (0)

void *cl_xmalloc(size_t size);
void *cl_xcalloc(size_t count, size_t size);
void *cl_xrealloc(void *ptr, size_t size);
char *cl_xstrdup(const char *s);
char *cl_xstrndup(const char *s, size_t len);

/* Fill err (CL_ERR_LEN bytes) with a formatted message; returns CL_ERR so that
 * `return cl_errorf(err, "...")` reads naturally. err may be NULL. */
int cl_errorf(char *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Backoff before retry number `attempt` (0 = the first retry): uniformly in
 * [d/2, d] with d = min(max_ms, min_ms * 2^attempt), `random` supplying the
 * jitter. Pure; every module that retries uses it. */
uint64_t cl_backoff_ms(unsigned int attempt, uint64_t min_ms, uint64_t max_ms, uint32_t random);

/* Monotonic milliseconds, for timeouts and latency measurements. */
uint64_t cl_now_ms(void);
/* Wall-clock milliseconds since the Unix epoch (UTC). */
int64_t cl_wall_ms(void);

#endif

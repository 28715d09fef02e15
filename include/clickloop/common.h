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

/* Allocation wrappers and small helpers shared by every module. */
#include "clickloop/common.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void cl_oom(size_t size)
{
    fprintf(stderr, "clickloop: out of memory allocating %zu bytes\n", size);
    abort();
}

void *cl_xmalloc(size_t size)
{
    void *p = malloc(size ? size : 1);
    if (p == NULL)
        cl_oom(size);
    return p;
}

void *cl_xcalloc(size_t count, size_t size)
{
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (p == NULL)
        cl_oom(count * size);
    return p;
}

void *cl_xrealloc(void *ptr, size_t size)
{
    void *p = realloc(ptr, size ? size : 1);
    if (p == NULL)
        cl_oom(size);
    return p;
}

char *cl_xstrdup(const char *s)
{
    return cl_xstrndup(s, strlen(s));
}

char *cl_xstrndup(const char *s, size_t len)
{
    char *p = cl_xmalloc(len + 1);
    memcpy(p, s, len);
    p[len] = '\0';
    return p;
}

int cl_errorf(char *err, const char *fmt, ...)
{
    if (err != NULL) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, CL_ERR_LEN, fmt, ap);
        va_end(ap);
    }
    return CL_ERR;
}

uint64_t cl_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

int64_t cl_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

uint64_t cl_backoff_ms(unsigned int attempt, uint64_t min_ms, uint64_t max_ms, uint32_t random)
{
    uint64_t cap = max_ms > min_ms ? max_ms : min_ms;
    uint64_t d = min_ms > 0 ? min_ms : 1;
    /* Doubling stops at the cap, so it cannot overflow. */
    for (unsigned int i = 0; i < attempt && d < cap; i++)
        d = d > cap / 2 ? cap : d * 2;
    if (d > cap)
        d = cap;
    uint64_t low = d / 2;
    return low + random % (d - low + 1);
}

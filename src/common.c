/* Allocation wrappers and small helpers shared by every module. */
#include "clickloop/common.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void cl_panic(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("clickloop: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    abort();
}

void cl_close_complete(void *object, cl_close_cb cb, void *arg)
{
    free(object);
    if (cb != NULL)
        cb(arg);
}

static void cl_oom(size_t size)
{
    cl_panic("out of memory allocating %zu bytes", size);
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

/* Howard Hinnant's civil-date algorithms: eras of 400 years, each 146097
 * days, starting on March 1st so that the leap day comes last. */
int64_t cl_days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

void cl_civil_from_days(int64_t days, int64_t *year, int *month, int *day)
{
    days += 719468;
    int64_t era = (days >= 0 ? days : days - 146096) / 146097;
    int64_t doe = days - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *day = (int)(doy - (153 * mp + 2) / 5 + 1);
    *month = (int)(mp < 10 ? mp + 3 : mp - 9);
    *year = yoe + era * 400 + (*month <= 2);
}

static void put_digits(char *out, int64_t v, int n)
{
    for (int i = n - 1; i >= 0; i--) {
        out[i] = (char)('0' + v % 10);
        v /= 10;
    }
}

int cl_datetime_format(int64_t ms, char out[CL_DATETIME_SIZE])
{
    const int64_t ms_per_day = 86400000;
    if (ms < CL_DATETIME_MIN_MS || ms > CL_DATETIME_MAX_MS) {
        out[0] = '\0';
        return CL_ERR;
    }
    int64_t days = ms / ms_per_day;
    int64_t in_day = ms % ms_per_day;
    if (in_day < 0) { /* floor, not truncation, before 1970 */
        in_day += ms_per_day;
        days--;
    }
    int64_t year;
    int month, day;
    cl_civil_from_days(days, &year, &month, &day);
    /* Digits by hand rather than snprintf: the store formats two per row. */
    memcpy(out, "0000-00-00 00:00:00.000", CL_DATETIME_SIZE);
    put_digits(out, year, 4);
    put_digits(out + 5, month, 2);
    put_digits(out + 8, day, 2);
    put_digits(out + 11, in_day / 3600000, 2);
    put_digits(out + 14, in_day / 60000 % 60, 2);
    put_digits(out + 17, in_day / 1000 % 60, 2);
    put_digits(out + 20, in_day % 1000, 3);
    return CL_OK;
}

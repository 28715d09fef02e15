/* metrics: a registry of counters, gauges and histograms, rendered in the
 * Prometheus text exposition format 0.0.4 for the admin server's /metrics.
 *
 * A family (one metric name) has a fixed, small set of label names given when
 * it is registered; each distinct tuple of label values is one series, made
 * on first use. A family without labels has its single series from the start,
 * so it renders as 0 before anything happened.
 *
 * Modules that keep their own statistics (pipeline, database pool, ...) do not
 * depend on this module: main registers a collector, a callback that runs right
 * before every rendering and copies those statistics into the registry (with
 * cl_counter_set / cl_gauge_set).
 *
 * Everything runs on the loop thread, so nothing here is atomic or locked.
 *
 * Names are checked when a family is registered, and a mistake there (an
 * invalid metric or label name, a counter without the `_total` suffix, the
 * same name registered with another type, labels or buckets) is a programming
 * error, not a runtime condition: it aborts with a message, like a failed
 * allocation, so that call sites stay one line. Registering the very same
 * family again returns the existing one. */
#ifndef CLICKLOOP_METRICS_H
#define CLICKLOOP_METRICS_H

#include <stddef.h>

#include "clickloop/buf.h"

/* Most label names a family may have. */
#define CL_METRICS_MAX_LABELS 4

/* The Content-Type of cl_metrics_render's output. */
#define CL_METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* Label values for one series, in the order of the family's label names:
 * `cl_counter_add(c, CL_LABELS("clicks", "3"), 1)`. Pass NULL for a family
 * without labels. */
#define CL_LABELS(...) ((const char *const[]){__VA_ARGS__})

typedef struct cl_metrics_s cl_metrics_t;
typedef struct cl_counter_s cl_counter_t;
typedef struct cl_gauge_s cl_gauge_t;
typedef struct cl_histogram_s cl_histogram_t;

/* Refresh the registry from a module's own statistics; runs right before
 * every rendering. */
typedef void (*cl_metrics_collect_cb)(void *arg, cl_metrics_t *m);

cl_metrics_t *cl_metrics_new(void);
/* Free the registry and every family; handles into it become invalid. */
void cl_metrics_free(cl_metrics_t *m);

/* Register a family. The label names follow `help` and end with NULL:
 * `cl_metrics_counter(m, "clickloop_kafka_messages_total", "Messages consumed.",
 * "topic", "partition", NULL)`. Counter names end in `_total`. Strings are
 * copied. (The compiler checks the NULL sentinel; glibc's NULL is a void
 * pointer, which va_arg may read as a char pointer, so the plain NULL that
 * cppcheck's varFuncNullUB warns about is well defined here.) */
cl_counter_t *cl_metrics_counter(cl_metrics_t *m, const char *name, const char *help, ...)
    __attribute__((sentinel));
cl_gauge_t *cl_metrics_gauge(cl_metrics_t *m, const char *name, const char *help, ...)
    __attribute__((sentinel));
/* `bounds` are the upper bounds of the buckets, finite and strictly increasing
 * (the `+Inf` bucket is implicit); `le` may not be a label name. */
cl_histogram_t *cl_metrics_histogram(cl_metrics_t *m, const char *name, const char *help,
                                     const double *bounds, size_t bound_count, ...)
    __attribute__((sentinel));

/* In every call below, `values` holds exactly as many label values as the
 * family has label names (NULL when it has none). The values are copied when a
 * series is made; bytes that are not well-formed UTF-8 become U+FFFD, since a
 * scraper rejects the whole page otherwise. */

/* Add v (>= 0; a negative v is ignored, a counter never goes down). */
void cl_counter_add(cl_counter_t *c, const char *const *values, double v);
/* Set the counter to v: for collectors that mirror a count which another
 * module keeps, and which only grows. */
void cl_counter_set(cl_counter_t *c, const char *const *values, double v);

void cl_gauge_set(cl_gauge_t *g, const char *const *values, double v);
/* Drop every series of a labelled gauge (a collector about to rewrite a set
 * that may shrink, e.g. the partitions assigned to this consumer); a gauge
 * without labels is set to 0 instead. */
void cl_gauge_clear(cl_gauge_t *g);

void cl_histogram_observe(cl_histogram_t *h, const char *const *values, double v);

/* Run `collect(arg, m)` before every rendering, in the order registered. */
void cl_metrics_add_collector(cl_metrics_t *m, cl_metrics_collect_cb collect, void *arg);
/* Forget a collector (same function and arg); call it before freeing what the
 * collector reads. */
void cl_metrics_remove_collector(cl_metrics_t *m, cl_metrics_collect_cb collect, void *arg);

/* Run the collectors, then append every family to `out`, in the order they
 * were registered, series in the order they were made. */
void cl_metrics_render(cl_metrics_t *m, cl_buf_t *out);

/* Format a sample value as the text format writes it ("3", "0.25", "+Inf",
 * "NaN"): the shortest text that reads back as the same double. `out` needs 32
 * bytes. Returns out. */
char *cl_metrics_format_value(double v, char out[32]);

#endif

/* Counters, gauges and histograms rendered in the Prometheus text format
 * 0.0.4; see include/clickloop/metrics.h. Runs on the loop thread only.
 *
 * Families and their series are singly linked lists kept in the order they
 * were made, so the output is stable (tests compare it byte for byte) and a
 * scraper sees the same layout every time. A family has few series (at most
 * one per partition or dependency), so series are found by a linear search,
 * with the last one found tried first. */
#include "clickloop/metrics.h"

#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clickloop/common.h"
#include "clickloop/utf8.h"

typedef enum {
    FAMILY_COUNTER,
    FAMILY_GAUGE,
    FAMILY_HISTOGRAM,
} family_type_t;

typedef struct series_s {
    char *values[CL_METRICS_MAX_LABELS];
    double value;            /* counter, gauge */
    uint64_t *bucket_counts; /* histogram: per bucket, not cumulative; last is +Inf */
    double sum;              /* histogram */
    uint64_t count;          /* histogram */
    struct series_s *next;
} series_t;

typedef struct family_s {
    family_type_t type;
    char *name;
    char *help;
    char *label_names[CL_METRICS_MAX_LABELS];
    size_t label_count;
    double *bounds; /* histogram */
    size_t bound_count;
    series_t *first;
    series_t *last;
    series_t *last_found;
    struct family_s *next;
} family_t;

/* The public handle types are the family itself; distinct names keep a gauge
 * from being passed where a counter is expected. */
struct cl_counter_s {
    family_t family;
};
struct cl_gauge_s {
    family_t family;
};
struct cl_histogram_s {
    family_t family;
};

typedef struct {
    cl_metrics_collect_cb collect;
    void *arg;
} collector_t;

struct cl_metrics_s {
    family_t *first;
    family_t *last;
    collector_t *collectors;
    size_t collector_count;
    size_t collector_cap;
};

static const char *const type_names[] = {"counter", "gauge", "histogram"};

/* ---- registration ------------------------------------------------------ */

static bool is_name_start(char c, bool colon_ok)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (colon_ok && c == ':');
}

/* Metric names: [a-zA-Z_:][a-zA-Z0-9_:]*; label names the same without ':'. */
static bool valid_name(const char *s, bool colon_ok)
{
    if (!is_name_start(s[0], colon_ok))
        return false;
    for (const char *p = s + 1; *p != '\0'; p++) {
        if (!is_name_start(*p, colon_ok) && !(*p >= '0' && *p <= '9'))
            return false;
    }
    return true;
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

static size_t collect_label_names(const char *family, bool histogram, va_list ap,
                                  const char *names[CL_METRICS_MAX_LABELS])
{
    size_t count = 0;
    const char *label;
    while ((label = va_arg(ap, const char *)) != NULL) {
        if (count == CL_METRICS_MAX_LABELS)
            cl_panic("metrics: %s: more than %d label names", family, CL_METRICS_MAX_LABELS);
        if (!valid_name(label, false) || strncmp(label, "__", 2) == 0)
            cl_panic("metrics: %s: invalid label name \"%s\"", family, label);
        if (histogram && strcmp(label, "le") == 0)
            cl_panic("metrics: %s: a histogram cannot have a label named \"le\"", family);
        for (size_t i = 0; i < count; i++) {
            if (strcmp(names[i], label) == 0)
                cl_panic("metrics: %s: label name \"%s\" given twice", family, label);
        }
        names[count++] = label;
    }
    return count;
}

static family_t *find_family(const cl_metrics_t *m, const char *name)
{
    for (family_t *f = m->first; f != NULL; f = f->next) {
        if (strcmp(f->name, name) == 0)
            return f;
    }
    return NULL;
}

static bool same_shape(const family_t *f, family_type_t type, const char *const *names,
                       size_t count, const double *bounds, size_t bound_count)
{
    if (f->type != type || f->label_count != count || f->bound_count != bound_count)
        return false;
    for (size_t i = 0; i < count; i++) {
        if (strcmp(f->label_names[i], names[i]) != 0)
            return false;
    }
    for (size_t i = 0; i < bound_count; i++) {
        if (f->bounds[i] != bounds[i])
            return false;
    }
    return true;
}

static series_t *series_new(const family_t *f, const char *const *values);
static void append_series(family_t *f, series_t *s);

/* Allocate the handle struct of the type, so that converting the family back
 * to its handle (a pointer to a struct's first member is a pointer to the
 * struct) names the object that really is there. */
static family_t *alloc_family(family_type_t type)
{
    switch (type) {
    case FAMILY_COUNTER:
        return &((cl_counter_t *)cl_xcalloc(1, sizeof(cl_counter_t)))->family;
    case FAMILY_GAUGE:
        return &((cl_gauge_t *)cl_xcalloc(1, sizeof(cl_gauge_t)))->family;
    case FAMILY_HISTOGRAM:
        return &((cl_histogram_t *)cl_xcalloc(1, sizeof(cl_histogram_t)))->family;
    }
    cl_panic("metrics: unknown family type %d", (int)type);
}

static family_t *register_family(cl_metrics_t *m, family_type_t type, const char *name,
                                 const char *help, const double *bounds, size_t bound_count,
                                 va_list ap)
{
    if (!valid_name(name, true))
        cl_panic("metrics: invalid metric name \"%s\"", name);
    if (type == FAMILY_COUNTER && !ends_with(name, "_total"))
        cl_panic("metrics: counter name \"%s\" must end in _total", name);
    const char *names[CL_METRICS_MAX_LABELS];
    size_t count = collect_label_names(name, type == FAMILY_HISTOGRAM, ap, names);
    for (size_t i = 0; i < bound_count; i++) {
        if (!isfinite(bounds[i]) || (i > 0 && !(bounds[i] > bounds[i - 1])))
            cl_panic("metrics: %s: bucket bounds must be finite and strictly increasing", name);
    }

    family_t *existing = find_family(m, name);
    if (existing != NULL) {
        if (!same_shape(existing, type, names, count, bounds, bound_count))
            cl_panic("metrics: %s registered twice with different types, labels or buckets", name);
        return existing;
    }

    family_t *f = alloc_family(type);
    f->type = type;
    f->name = cl_xstrdup(name);
    f->help = cl_xstrdup(help != NULL ? help : "");
    f->label_count = count;
    for (size_t i = 0; i < count; i++)
        f->label_names[i] = cl_xstrdup(names[i]);
    if (bound_count > 0) {
        f->bounds = cl_xmalloc(bound_count * sizeof(double));
        memcpy(f->bounds, bounds, bound_count * sizeof(double));
    }
    f->bound_count = bound_count;
    if (count == 0)
        append_series(f, series_new(f, NULL));
    if (m->last != NULL)
        m->last->next = f;
    else
        m->first = f;
    m->last = f;
    return f;
}

cl_counter_t *cl_metrics_counter(cl_metrics_t *m, const char *name, const char *help, ...)
{
    va_list ap;
    va_start(ap, help);
    family_t *f = register_family(m, FAMILY_COUNTER, name, help, NULL, 0, ap);
    va_end(ap);
    return (cl_counter_t *)f;
}

cl_gauge_t *cl_metrics_gauge(cl_metrics_t *m, const char *name, const char *help, ...)
{
    va_list ap;
    va_start(ap, help);
    family_t *f = register_family(m, FAMILY_GAUGE, name, help, NULL, 0, ap);
    va_end(ap);
    return (cl_gauge_t *)f;
}

cl_histogram_t *cl_metrics_histogram(cl_metrics_t *m, const char *name, const char *help,
                                     const double *bounds, size_t bound_count, ...)
{
    va_list ap;
    va_start(ap, bound_count);
    family_t *f = register_family(m, FAMILY_HISTOGRAM, name, help, bounds, bound_count, ap);
    va_end(ap);
    return (cl_histogram_t *)f;
}

/* ---- series ------------------------------------------------------------ */

/* Copy a label value, replacing each ill-formed UTF-8 sequence by U+FFFD. */
static char *copy_label_value(const char *value)
{
    size_t len = strlen(value), bad;
    if (cl_utf8_validate(value, len, &bad) == CL_OK)
        return cl_xstrndup(value, len);
    cl_buf_t b;
    cl_buf_init(&b);
    const char *p = value;
    while (cl_utf8_validate(p, len, &bad) != CL_OK) {
        cl_buf_append(&b, p, bad);
        cl_buf_append_str(&b, "\xEF\xBF\xBD");
        p += bad + 1;
        len -= bad + 1;
    }
    cl_buf_append(&b, p, len);
    return cl_buf_steal(&b, NULL);
}

static series_t *series_new(const family_t *f, const char *const *values)
{
    series_t *s = cl_xcalloc(1, sizeof *s);
    /* values is NULL only for a family without labels, whose loop is empty. */
    for (size_t i = 0; i < f->label_count; i++) {
        /* cppcheck-suppress nullPointer */
        s->values[i] = copy_label_value(values[i]);
    }
    if (f->type == FAMILY_HISTOGRAM)
        s->bucket_counts = cl_xcalloc(f->bound_count + 1, sizeof(uint64_t));
    return s;
}

static void series_free(series_t *s, size_t label_count)
{
    for (size_t i = 0; i < label_count; i++)
        free(s->values[i]);
    free(s->bucket_counts);
    free(s);
}

static void append_series(family_t *f, series_t *s)
{
    if (f->last != NULL)
        f->last->next = s;
    else
        f->first = s;
    f->last = s;
}

static bool series_matches(const family_t *f, const series_t *s, const char *const *values)
{
    for (size_t i = 0; i < f->label_count; i++) {
        if (strcmp(s->values[i], values[i]) != 0)
            return false;
    }
    return true;
}

/* The series for these label values, made if it does not exist yet. A value
 * that was stored with U+FFFD replacements is not found again by its raw bytes
 * and gets a second series with the same text; label values are names chosen by
 * clickloop and Kafka topic names, which are ASCII, so that stays theoretical. */
static series_t *get_series(family_t *f, const char *const *values)
{
    if (f->label_count == 0)
        return f->first;
    if (f->last_found != NULL && series_matches(f, f->last_found, values))
        return f->last_found;
    series_t *s;
    for (s = f->first; s != NULL; s = s->next) {
        if (series_matches(f, s, values))
            break;
    }
    if (s == NULL) {
        s = series_new(f, values);
        append_series(f, s);
    }
    f->last_found = s;
    return s;
}

void cl_counter_add(cl_counter_t *c, const char *const *values, double v)
{
    if (!(v >= 0))
        return;
    get_series(&c->family, values)->value += v;
}

void cl_counter_set(cl_counter_t *c, const char *const *values, double v)
{
    get_series(&c->family, values)->value = v;
}

void cl_gauge_set(cl_gauge_t *g, const char *const *values, double v)
{
    get_series(&g->family, values)->value = v;
}

void cl_gauge_clear(cl_gauge_t *g)
{
    family_t *f = &g->family;
    if (f->label_count == 0) {
        f->first->value = 0;
        return;
    }
    series_t *s = f->first;
    while (s != NULL) {
        series_t *next = s->next;
        series_free(s, f->label_count);
        s = next;
    }
    f->first = f->last = f->last_found = NULL;
}

void cl_histogram_observe(cl_histogram_t *h, const char *const *values, double v)
{
    family_t *f = &h->family;
    series_t *s = get_series(f, values);
    /* Buckets are few (a dozen or so): a linear scan beats a binary search. A
     * NaN lands in +Inf only, as in the reference client libraries. */
    size_t i = 0;
    while (i < f->bound_count && !(v <= f->bounds[i]))
        i++;
    s->bucket_counts[i]++;
    s->sum += v;
    s->count++;
}

/* ---- collectors -------------------------------------------------------- */

void cl_metrics_add_collector(cl_metrics_t *m, cl_metrics_collect_cb collect, void *arg)
{
    if (m->collector_count == m->collector_cap) {
        m->collector_cap = m->collector_cap ? m->collector_cap * 2 : 8;
        m->collectors = cl_xrealloc(m->collectors, m->collector_cap * sizeof(collector_t));
    }
    m->collectors[m->collector_count++] = (collector_t){collect, arg};
}

void cl_metrics_remove_collector(cl_metrics_t *m, cl_metrics_collect_cb collect, void *arg)
{
    for (size_t i = 0; i < m->collector_count; i++) {
        if (m->collectors[i].collect == collect && m->collectors[i].arg == arg) {
            memmove(&m->collectors[i], &m->collectors[i + 1],
                    (m->collector_count - i - 1) * sizeof(collector_t));
            m->collector_count--;
            return;
        }
    }
}

/* ---- rendering --------------------------------------------------------- */

char *cl_metrics_format_value(double v, char out[32])
{
    if (isnan(v)) {
        strcpy(out, "NaN");
    } else if (isinf(v)) {
        strcpy(out, v > 0 ? "+Inf" : "-Inf");
    } else {
        /* %.15g is exact for integers below 2^53 and for most decimals a
         * person writes; fall back to 17 digits, which always round-trip. */
        snprintf(out, 32, "%.15g", v);
        if (strtod(out, NULL) != v)
            snprintf(out, 32, "%.17g", v);
    }
    return out;
}

/* HELP text escapes backslash and newline; label values also double quotes. */
static void append_escaped(cl_buf_t *out, const char *s, bool quote)
{
    for (; *s != '\0'; s++) {
        switch (*s) {
        case '\\':
            cl_buf_append(out, "\\\\", 2);
            break;
        case '\n':
            cl_buf_append(out, "\\n", 2);
            break;
        case '"':
            if (quote)
                cl_buf_append(out, "\\\"", 2);
            else
                cl_buf_append_char(out, '"');
            break;
        default:
            cl_buf_append_char(out, *s);
            break;
        }
    }
}

/* `name{a="x",b="y"[,le="0.5"]} value\n`; the braces are left out when there is
 * no label at all. */
static void append_sample(cl_buf_t *out, const family_t *f, const char *suffix, const series_t *s,
                          const char *le, double value)
{
    char num[32];
    cl_buf_append_str(out, f->name);
    cl_buf_append_str(out, suffix);
    if (f->label_count > 0 || le != NULL) {
        cl_buf_append_char(out, '{');
        for (size_t i = 0; i < f->label_count; i++) {
            if (i > 0)
                cl_buf_append_char(out, ',');
            cl_buf_append_str(out, f->label_names[i]);
            cl_buf_append(out, "=\"", 2);
            append_escaped(out, s->values[i], true);
            cl_buf_append_char(out, '"');
        }
        if (le != NULL) {
            if (f->label_count > 0)
                cl_buf_append_char(out, ',');
            cl_buf_append(out, "le=\"", 4);
            cl_buf_append_str(out, le);
            cl_buf_append_char(out, '"');
        }
        cl_buf_append_char(out, '}');
    }
    cl_buf_append_char(out, ' ');
    cl_buf_append_str(out, cl_metrics_format_value(value, num));
    cl_buf_append_char(out, '\n');
}

static void render_histogram_series(cl_buf_t *out, const family_t *f, const series_t *s)
{
    char le[32];
    uint64_t cumulative = 0;
    for (size_t i = 0; i < f->bound_count; i++) {
        cumulative += s->bucket_counts[i];
        append_sample(out, f, "_bucket", s, cl_metrics_format_value(f->bounds[i], le),
                      (double)cumulative);
    }
    append_sample(out, f, "_bucket", s, "+Inf", (double)s->count);
    append_sample(out, f, "_sum", s, NULL, s->sum);
    append_sample(out, f, "_count", s, NULL, (double)s->count);
}

static void render_family(cl_buf_t *out, const family_t *f)
{
    cl_buf_append_str(out, "# HELP ");
    cl_buf_append_str(out, f->name);
    cl_buf_append_char(out, ' ');
    append_escaped(out, f->help, false);
    cl_buf_appendf(out, "\n# TYPE %s %s\n", f->name, type_names[f->type]);
    for (const series_t *s = f->first; s != NULL; s = s->next) {
        if (f->type == FAMILY_HISTOGRAM)
            render_histogram_series(out, f, s);
        else
            append_sample(out, f, "", s, NULL, s->value);
    }
}

void cl_metrics_render(cl_metrics_t *m, cl_buf_t *out)
{
    for (size_t i = 0; i < m->collector_count; i++)
        m->collectors[i].collect(m->collectors[i].arg, m);
    for (const family_t *f = m->first; f != NULL; f = f->next)
        render_family(out, f);
}

/* ---- life cycle -------------------------------------------------------- */

cl_metrics_t *cl_metrics_new(void)
{
    return cl_xcalloc(1, sizeof(cl_metrics_t));
}

static void family_free(family_t *f)
{
    series_t *s = f->first;
    while (s != NULL) {
        series_t *next = s->next;
        series_free(s, f->label_count);
        s = next;
    }
    for (size_t i = 0; i < f->label_count; i++)
        free(f->label_names[i]);
    free(f->bounds);
    free(f->name);
    free(f->help);
    free(f);
}

void cl_metrics_free(cl_metrics_t *m)
{
    if (m == NULL)
        return;
    family_t *f = m->first;
    while (f != NULL) {
        family_t *next = f->next;
        family_free(f);
        f = next;
    }
    free(m->collectors);
    free(m);
}

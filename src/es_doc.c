/* es_doc: ids, index names, mapping and source of the aggregate documents;
 * see include/clickloop/es_doc.h. Pure: no I/O. */
#include "clickloop/es_doc.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "clickloop/sha256.h"

#define MS_PER_DAY INT64_C(86400000)
#define WINDOW_LABEL_MAX 22
#define COUNTRY_MAX 16

int cl_es_window_label(uint64_t window_ms, char out[CL_ES_WINDOW_LABEL_SIZE])
{
    static const struct {
        uint64_t ms;
        const char *unit;
    } units[] = {{86400000, "d"}, {3600000, "h"}, {60000, "m"}, {1000, "s"}, {1, "ms"}};
    if (window_ms == 0)
        return CL_ERR;
    for (size_t i = 0; i < CL_ARRAY_LEN(units); i++) {
        if (window_ms % units[i].ms == 0) {
            snprintf(out, CL_ES_WINDOW_LABEL_SIZE, "%" PRIu64 "%s", window_ms / units[i].ms,
                     units[i].unit);
            return CL_OK;
        }
    }
    return CL_ERR; /* unreachable: every length is a whole number of ms */
}

static bool is_lower_alnum(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z');
}

static bool is_alnum(char c)
{
    return is_lower_alnum(c) || (c >= 'A' && c <= 'Z');
}

static bool is_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* Copy 64 hex digits in lower case; false when `hex` is not exactly that. */
static bool normalise_hash(const char *hex, char out[CL_SHA256_HEX_SIZE])
{
    for (int i = 0; i < CL_SHA256_HEX_SIZE - 1; i++) {
        if (!is_hex(hex[i]))
            return false;
        out[i] = (char)(hex[i] >= 'A' && hex[i] <= 'F' ? hex[i] - 'A' + 'a' : hex[i]);
    }
    out[CL_SHA256_HEX_SIZE - 1] = '\0';
    return hex[CL_SHA256_HEX_SIZE - 1] == '\0';
}

int cl_es_doc_id_from_hash(const char *window, int64_t window_start_ms, const char *country,
                           const char *url_sha256_hex, char out[CL_ES_DOC_ID_SIZE],
                           char err[CL_ERR_LEN])
{
    size_t window_len = window != NULL ? strlen(window) : 0;
    if (window_len == 0 || window_len > WINDOW_LABEL_MAX)
        return cl_errorf(err, "document id: the window label must be 1 to %d characters",
                         WINDOW_LABEL_MAX);
    for (size_t i = 0; i < window_len; i++)
        if (!is_lower_alnum(window[i]))
            return cl_errorf(err,
                             "document id: the window label \"%s\" may only contain "
                             "digits and lower-case letters",
                             window);
    if (country == NULL)
        country = "";
    size_t country_len = strlen(country);
    if (country_len > COUNTRY_MAX)
        return cl_errorf(err, "document id: the country must be at most %d characters",
                         COUNTRY_MAX);
    for (size_t i = 0; i < country_len; i++)
        if (!is_alnum(country[i]))
            return cl_errorf(err, "document id: the country may only contain letters and "
                                  "digits");
    char hash[CL_SHA256_HEX_SIZE];
    if (url_sha256_hex == NULL || !normalise_hash(url_sha256_hex, hash))
        return cl_errorf(err, "document id: the URL hash must be 64 hex digits");
    snprintf(out, CL_ES_DOC_ID_SIZE, "%s:%" PRId64 ":%s:%s", window, window_start_ms,
             country_len > 0 ? country : "-", hash);
    return CL_OK;
}

int cl_es_doc_id(const char *window, int64_t window_start_ms, const char *country, const char *url,
                 size_t url_len, char out[CL_ES_DOC_ID_SIZE], char err[CL_ERR_LEN])
{
    if (url == NULL)
        return cl_errorf(err, "document id: the URL is missing");
    char hash[CL_SHA256_HEX_SIZE];
    cl_sha256_hex(url, url_len, hash);
    return cl_es_doc_id_from_hash(window, window_start_ms, country, hash, out, err);
}

bool cl_es_index_has_date(const char *pattern)
{
    for (const char *p = pattern; (p = strchr(p, '%')) != NULL; p++)
        if (p[1] == 'Y' || p[1] == 'm' || p[1] == 'd')
            return true;
    return false;
}

/* Expand the date patterns of `pattern` with `subst(letter)`; shared by the
 * three functions below. */
typedef const char *(*date_subst_fn)(char letter, const void *data);

static int expand(const char *pattern, date_subst_fn subst, const void *data, char *out,
                  size_t size)
{
    size_t n = 0;
    if (size == 0)
        return CL_ERR;
    for (const char *p = pattern; *p; p++) {
        const char *piece = NULL;
        char single[2] = {*p, '\0'};
        if (p[0] == '%' && (p[1] == 'Y' || p[1] == 'm' || p[1] == 'd')) {
            piece = subst(p[1], data);
            p++;
        } else {
            piece = single;
        }
        size_t len = strlen(piece);
        if (n + len >= size)
            return CL_ERR;
        memcpy(out + n, piece, len);
        n += len;
    }
    out[n] = '\0';
    return (int)n;
}

typedef struct {
    char year[8], month[4], day[4];
} date_parts_t;

static const char *subst_date(char letter, const void *data)
{
    const date_parts_t *d = data;
    return letter == 'Y' ? d->year : letter == 'm' ? d->month : d->day;
}

int cl_es_index_name(const char *pattern, int64_t start_ms, char *out, size_t size)
{
    int64_t days = start_ms / MS_PER_DAY - (start_ms % MS_PER_DAY < 0);
    int64_t year;
    int month, day;
    cl_civil_from_days(days, &year, &month, &day);
    if (year < 0 || year > 9999)
        return CL_ERR;
    date_parts_t parts;
    snprintf(parts.year, sizeof parts.year, "%04d", (int)year);
    snprintf(parts.month, sizeof parts.month, "%02d", month);
    snprintf(parts.day, sizeof parts.day, "%02d", day);
    return expand(pattern, subst_date, &parts, out, size);
}

static const char *subst_star(char letter, const void *data)
{
    CL_UNUSED(letter);
    CL_UNUSED(data);
    return "*";
}

int cl_es_index_template_pattern(const char *pattern, char *out, size_t size)
{
    int n = expand(pattern, subst_star, NULL, out, size);
    if (n < 0)
        return n;
    /* "%Y%m%d" gives "***": one star matches the same names. */
    size_t w = 0;
    for (size_t r = 0; r < (size_t)n; r++)
        if (!(out[r] == '*' && w > 0 && out[w - 1] == '*'))
            out[w++] = out[r];
    out[w] = '\0';
    return (int)w;
}

static const char *subst_name(char letter, const void *data)
{
    CL_UNUSED(data);
    return letter == 'Y' ? "yyyy" : letter == 'm' ? "mm" : "dd";
}

int cl_es_index_template_name(const char *pattern, char *out, size_t size)
{
    return expand(pattern, subst_name, NULL, out, size);
}

/* Kept in one line per field so that a reviewer can compare it with
 * cl_es_stats_source() below. "strict_date_optional_time||epoch_millis" is
 * the default date format of Elasticsearch and OpenSearch, spelled out so
 * that the mapping means the same on every version. */
#define DATE_FIELD "{\"type\":\"date\",\"format\":\"strict_date_optional_time||epoch_millis\"}"
#define STR_(x) #x
#define STR(x) STR_(x)

static const char stats_mappings[] =
    "{\"dynamic\":\"strict\",\"properties\":{"
    "\"window\":{\"type\":\"keyword\"},"
    "\"window_start\":" DATE_FIELD ","
    "\"window_end\":" DATE_FIELD ","
    "\"url\":{\"type\":\"keyword\",\"ignore_above\":" STR(
        CL_ES_URL_IGNORE_ABOVE) "},"
                                "\"url_sha256\":{\"type\":\"keyword\"},"
                                "\"country\":{\"type\":\"keyword\"},"
                                "\"clicks\":{\"type\":\"long\"},"
                                "\"unique_users\":{\"type\":\"long\"},"
                                "\"time_spent_samples\":{\"type\":\"long\"},"
                                "\"avg_time_spent_ms\":{\"type\":\"double\"},"
                                "\"updated_at\":" DATE_FIELD "}}";

const char *cl_es_stats_mappings(void)
{
    return stats_mappings;
}

void cl_es_stats_source(cl_buf_t *out, const cl_es_stats_doc_t *doc)
{
    char hash[CL_SHA256_HEX_SIZE];
    if (doc->url_sha256_hex == NULL || !normalise_hash(doc->url_sha256_hex, hash))
        cl_sha256_hex(doc->url, doc->url_len, hash);
    cl_buf_append_str(out, "{\"window\":");
    cl_es_json_append_string(out, doc->window, strlen(doc->window));
    cl_buf_appendf(out, ",\"window_start\":%" PRId64 ",\"window_end\":%" PRId64 ",\"url\":",
                   doc->window_start_ms, doc->window_end_ms);
    cl_es_json_append_string(out, doc->url, doc->url_len);
    cl_buf_appendf(out, ",\"url_sha256\":\"%s\",\"country\":", hash);
    if (doc->country != NULL && doc->country[0] != '\0')
        cl_es_json_append_string(out, doc->country, strlen(doc->country));
    else
        cl_buf_append_str(out, "null");
    cl_buf_appendf(out,
                   ",\"clicks\":%" PRIu64 ",\"unique_users\":%" PRIu64
                   ",\"time_spent_samples\":%" PRIu64 ",\"avg_time_spent_ms\":",
                   doc->clicks, doc->unique_users, doc->time_spent_samples);
    /* JSON has no NaN or infinity. */
    if (doc->time_spent_samples > 0 && isfinite(doc->avg_time_spent_ms))
        cl_buf_appendf(out, "%.3f", doc->avg_time_spent_ms);
    else
        cl_buf_append_str(out, "null");
    cl_buf_appendf(out, ",\"updated_at\":%" PRId64 "}", doc->updated_at_ms);
}

int cl_es_stats_doc_id(const cl_es_stats_doc_t *doc, char out[CL_ES_DOC_ID_SIZE],
                       char err[CL_ERR_LEN])
{
    if (doc->url_sha256_hex != NULL)
        return cl_es_doc_id_from_hash(doc->window, doc->window_start_ms, doc->country,
                                      doc->url_sha256_hex, out, err);
    return cl_es_doc_id(doc->window, doc->window_start_ms, doc->country, doc->url, doc->url_len,
                        out, err);
}

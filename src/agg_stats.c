/* agg_stats: the indexer's side of the aggregates, pure SQL and parsing;
 * see include/clickloop/agg_stats.h. */
#include "clickloop/agg_stats.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int check_key(const cl_aggregate_key_t *key, char err[CL_ERR_LEN])
{
    size_t hex = strnlen(key->url_hash_hex, sizeof key->url_hash_hex);
    if (hex != CL_AGG_URL_HASH_HEX_SIZE - 1)
        return cl_errorf(err, "aggregate key: url_hash_hex has %zu characters, not 64", hex);
    for (size_t i = 0; i < hex; i++) {
        if (!isxdigit((unsigned char)key->url_hash_hex[i]))
            return cl_errorf(err, "aggregate key: url_hash_hex has a non-hex character at %zu", i);
    }
    size_t country = strnlen(key->country, sizeof key->country);
    if (country == 0 || country > CL_AGG_COUNTRY_MAX_LEN)
        return cl_errorf(err, "aggregate key: country must have 1 to %d characters",
                         CL_AGG_COUNTRY_MAX_LEN);
    for (size_t i = 0; i < country; i++) {
        if (!isalnum((unsigned char)key->country[i]))
            return cl_errorf(err,
                             "aggregate key: country has a character other than A-Z, "
                             "a-z, 0-9 at %zu",
                             i);
    }
    if (key->window_ms == 0 || key->window_ms > CL_AGG_MAX_WINDOW_MS)
        return cl_errorf(err, "aggregate key: window_ms %" PRIu64 " is out of range",
                         key->window_ms);
    if (key->window_start_ms < CL_DATETIME_MIN_MS - (int64_t)CL_AGG_MAX_WINDOW_MS ||
        key->window_start_ms > CL_DATETIME_MAX_MS)
        return cl_errorf(err, "aggregate key: window_start %" PRId64 " ms is out of range",
                         key->window_start_ms);
    return CL_OK;
}

/* window_ms = ... AND window_start = ... AND url_hash = ... AND country = ...
 * with `prefix` before each column. Keys are checked first: the hash is hex
 * and the country alphanumeric, so neither needs escaping. */
static void append_key_match(cl_buf_t *b, const char *prefix, const cl_aggregate_key_t *key)
{
    cl_buf_appendf(b, "%swindow_ms = %" PRIu64 " AND %swindow_start = ", prefix, key->window_ms,
                   prefix);
    cl_aggregate_sql_datetime(b, key->window_start_ms);
    cl_buf_appendf(b, " AND %surl_hash = UNHEX('%s') AND %scountry = '%s'", prefix,
                   key->url_hash_hex, prefix, key->country);
}

int cl_aggregate_index_select_sql(cl_buf_t *out, size_t limit, const cl_aggregate_key_t *after,
                                  char err[CL_ERR_LEN])
{
    if (limit == 0)
        return cl_errorf(err, "aggregate: the index page size must be at least 1");
    if (after != NULL && check_key(after, err) != CL_OK)
        return CL_ERR;
    cl_buf_append_str(out, "SELECT window_ms, ");
    cl_aggregate_sql_ms(out, "window_start");
    cl_buf_append_str(out, ", HEX(url_hash), country, url, clicks, unique_users, "
                           "time_spent_sum, time_spent_samples, version, ");
    cl_aggregate_sql_ms(out, "updated_at");
    cl_buf_append_str(out, " FROM agg_stats FORCE INDEX (idx_agg_stats_needs_index) "
                           "WHERE needs_index = 1");
    if (after != NULL) {
        /* (window_ms, window_start, url_hash, country) > after, spelled out so
         * that the range optimizer uses the index. */
        char start[96];
        cl_buf_t s;
        cl_buf_init(&s);
        cl_aggregate_sql_datetime(&s, after->window_start_ms);
        snprintf(start, sizeof start, "%s", s.data);
        cl_buf_free(&s);
        cl_buf_appendf(
            out,
            " AND (window_ms > %" PRIu64 " OR (window_ms = %" PRIu64
            " AND (window_start > %s OR (window_start = %s AND "
            "(url_hash > UNHEX('%s') OR (url_hash = UNHEX('%s') AND country > '%s'))))))",
            after->window_ms, after->window_ms, start, start, after->url_hash_hex,
            after->url_hash_hex, after->country);
    }
    cl_buf_appendf(out, " ORDER BY window_ms, window_start, url_hash, country LIMIT %zu", limit);
    return CL_OK;
}

static int parse_u64(const char *s, unsigned long len, uint64_t *out)
{
    if (s == NULL || len == 0 || len > 20)
        return CL_ERR;
    char tmp[24];
    memcpy(tmp, s, len);
    tmp[len] = '\0';
    for (unsigned long i = 0; i < len; i++) {
        if (!isdigit((unsigned char)tmp[i]))
            return CL_ERR;
    }
    errno = 0;
    unsigned long long v = strtoull(tmp, NULL, 10);
    if (errno != 0)
        return CL_ERR;
    *out = v;
    return CL_OK;
}

static int parse_i64(const char *s, unsigned long len, int64_t *out)
{
    if (s == NULL || len == 0)
        return CL_ERR;
    bool negative = s[0] == '-';
    uint64_t magnitude;
    if (parse_u64(s + negative, len - negative, &magnitude) != CL_OK ||
        magnitude > (uint64_t)INT64_MAX)
        return CL_ERR;
    *out = negative ? -(int64_t)magnitude : (int64_t)magnitude;
    return CL_OK;
}

int cl_aggregate_parse_stat(unsigned int field_count, const char *const *values,
                            const unsigned long *lengths, cl_aggregate_stat_t *out,
                            char err[CL_ERR_LEN])
{
    static const char *const names[CL_AGG_INDEX_FIELDS] = {
        "window_ms",    "window_start",   "url_hash",           "country", "url",       "clicks",
        "unique_users", "time_spent_sum", "time_spent_samples", "version", "updated_at"};
    if (field_count != CL_AGG_INDEX_FIELDS)
        return cl_errorf(err, "aggregate: an index row has %u columns, expected %d", field_count,
                         CL_AGG_INDEX_FIELDS);
    for (unsigned int i = 0; i < field_count; i++) {
        if (values[i] == NULL)
            return cl_errorf(err, "aggregate: index row column %s is NULL", names[i]);
    }
    memset(out, 0, sizeof *out);
    uint64_t *counts[] = {&out->clicks, &out->unique_users, &out->time_spent_sum,
                          &out->time_spent_samples, &out->version};
    for (size_t i = 0; i < CL_ARRAY_LEN(counts); i++) {
        if (parse_u64(values[5 + i], lengths[5 + i], counts[i]) != CL_OK)
            return cl_errorf(err, "aggregate: index row column %s is not a 64-bit count: %.*s",
                             names[5 + i], (int)(lengths[5 + i] > 40 ? 40 : lengths[5 + i]),
                             values[5 + i]);
    }
    if (parse_u64(values[0], lengths[0], &out->key.window_ms) != CL_OK ||
        parse_i64(values[1], lengths[1], &out->key.window_start_ms) != CL_OK ||
        parse_i64(values[10], lengths[10], &out->updated_at_ms) != CL_OK)
        return cl_errorf(err, "aggregate: index row has a malformed window or time");
    if (lengths[2] != CL_AGG_URL_HASH_HEX_SIZE - 1 || lengths[3] == 0 ||
        lengths[3] > CL_AGG_COUNTRY_MAX_LEN)
        return cl_errorf(err, "aggregate: index row has a malformed url_hash or country");
    memcpy(out->key.url_hash_hex, values[2], lengths[2]);
    memcpy(out->key.country, values[3], lengths[3]);
    out->url = values[4];
    out->url_len = lengths[4];
    return check_key(&out->key, err);
}

int cl_aggregate_mark_indexed_sql(cl_buf_t *out, const cl_aggregate_indexed_t *items, size_t n,
                                  char err[CL_ERR_LEN])
{
    if (n == 0)
        return cl_errorf(err, "aggregate: nothing to mark as indexed");
    for (size_t i = 0; i < n; i++) {
        if (check_key(&items[i].key, err) != CL_OK)
            return CL_ERR;
    }
    /* One statement for the whole page: a join with a derived table of the
     * keys. The assignments do not depend on each other's new values (a
     * multi-table UPDATE does not promise their order). */
    cl_buf_append_str(out, "UPDATE agg_stats s JOIN (");
    for (size_t i = 0; i < n; i++) {
        const cl_aggregate_indexed_t *it = &items[i];
        cl_buf_appendf(out, "%sSELECT %" PRIu64 "%s, ", i == 0 ? "" : " UNION ALL ",
                       it->key.window_ms, i == 0 ? " AS window_ms" : "");
        cl_aggregate_sql_datetime(out, it->key.window_start_ms);
        cl_buf_appendf(out, "%s, UNHEX('%s')%s, '%s'%s, %" PRIu64 "%s",
                       i == 0 ? " AS window_start" : "", it->key.url_hash_hex,
                       i == 0 ? " AS url_hash" : "", it->key.country, i == 0 ? " AS country" : "",
                       it->version, i == 0 ? " AS version" : "");
    }
    cl_buf_append_str(out, ") v ON s.window_ms = v.window_ms AND s.window_start = v.window_start "
                           "AND s.url_hash = v.url_hash AND s.country = v.country "
                           "SET s.indexed_version = GREATEST(s.indexed_version, v.version), "
                           "s.needs_index = (s.version <> GREATEST(s.indexed_version, v.version)), "
                           "s.index_error = NULL");
    return CL_OK;
}

int cl_aggregate_mark_failed_sql(cl_buf_t *out, const cl_aggregate_key_t *key, uint64_t version,
                                 const char *reason,
                                 size_t (*escape)(char *to, const char *from, size_t len),
                                 char err[CL_ERR_LEN])
{
    if (check_key(key, err) != CL_OK)
        return CL_ERR;
    if (reason == NULL)
        return cl_errorf(err, "aggregate: a failure needs a reason");
    char *escaped = cl_aggregate_sql_reason(reason, CL_AGG_INDEX_ERROR_MAX_CHARS, escape);
    cl_buf_appendf(out,
                   "UPDATE agg_stats SET index_error = '%s', needs_index = (version <> %" PRIu64
                   ") WHERE ",
                   escaped, version);
    append_key_match(out, "", key);
    free(escaped);
    return CL_OK;
}

/* agg_stats: what the indexer reads of the aggregates and writes back, as
 * pure SQL builders and a row parser; the indexer depends on this and not on
 * the aggregation runner (aggregate.h). The names keep the cl_aggregate_
 * prefix of the table they read.
 *
 * agg_stats rows with needs_index = 1 are
 * the ones whose latest version is neither indexed nor failed permanently.
 * Send `version` with each document (as an external version, so that an
 * older version arriving late cannot overwrite a newer one), then record the
 * outcome per (key, version) with the builders below. A version is the
 * time of the run that wrote it, in microseconds since the epoch, and grows
 * by at least one with every change of the row. */
#ifndef CLICKLOOP_AGG_STATS_H
#define CLICKLOOP_AGG_STATS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "clickloop/aggregate_sql.h"
#include "clickloop/buf.h"
#include "clickloop/common.h"

/* Hex digits of url_hash and the NUL. */
#define CL_AGG_URL_HASH_HEX_SIZE 65
/* Longest country value ("unknown" or ISO 3166-1 alpha-2); the column holds 16. */
#define CL_AGG_COUNTRY_MAX_LEN 16
/* What agg_stats.index_error holds, in characters. */
#define CL_AGG_INDEX_ERROR_MAX_CHARS 1024

/* The key of an agg_stats row as the indexer carries it. */
typedef struct cl_aggregate_key_s {
    uint64_t window_ms;
    int64_t window_start_ms;
    char url_hash_hex[CL_AGG_URL_HASH_HEX_SIZE]; /* 64 hex digits, either case */
    char country[CL_AGG_COUNTRY_MAX_LEN + 1];
} cl_aggregate_key_t;

/* One row of the index SELECT, parsed. Strings point into the row the db
 * module handed over and are valid only as long as it is. */
typedef struct cl_aggregate_stat_s {
    cl_aggregate_key_t key; /* url_hash_hex in upper case */
    const char *url;
    size_t url_len;
    uint64_t clicks;
    uint64_t unique_users;
    uint64_t time_spent_sum;
    uint64_t time_spent_samples;
    uint64_t version;
    int64_t updated_at_ms;
} cl_aggregate_stat_t;

/* Columns of the index SELECT, in this order: window_ms, window_start (epoch
 * ms), url_hash (hex), country, url, clicks, unique_users, time_spent_sum,
 * time_spent_samples, version, updated_at (epoch ms). */
#define CL_AGG_INDEX_FIELDS 11

/* Append a SELECT of at most `limit` (> 0) rows needing indexing, in key
 * order, starting after `after` (NULL: from the first). Passing the last key
 * of one page as `after` of the next lets the indexer fetch more while the
 * previous page is still in flight. Uses KEY idx_agg_stats_needs_index. */
int cl_aggregate_index_select_sql(cl_buf_t *out, size_t limit, const cl_aggregate_key_t *after,
                                  char err[CL_ERR_LEN]);

/* Parse one row of that SELECT. */
int cl_aggregate_parse_stat(unsigned int field_count, const char *const *values,
                            const unsigned long *lengths, cl_aggregate_stat_t *out,
                            char err[CL_ERR_LEN]);

/* A version of a row that the index now holds. */
typedef struct cl_aggregate_indexed_s {
    cl_aggregate_key_t key;
    uint64_t version;
} cl_aggregate_indexed_t;

/* Append one UPDATE recording that the index holds these versions:
 * indexed_version becomes the larger of its value and the version sent (so
 * an old acknowledgement arriving late changes nothing), needs_index stays 1
 * only if the row changed again meanwhile, index_error is cleared. n > 0. */
int cl_aggregate_mark_indexed_sql(cl_buf_t *out, const cl_aggregate_indexed_t *items, size_t n,
                                  char err[CL_ERR_LEN]);

/* Append one UPDATE recording that the index refused this version for good
 * (a 4xx other than 409/429): index_error gets `reason` (ill-formed UTF-8
 * becomes '?', cut at CL_AGG_INDEX_ERROR_MAX_CHARS characters) and
 * needs_index becomes 0 unless the row changed again meanwhile, so that the
 * indexer stops sending a document that cannot succeed. `escape` as in
 * store.h (cl_db_escape_string). */
int cl_aggregate_mark_failed_sql(cl_buf_t *out, const cl_aggregate_key_t *key, uint64_t version,
                                 const char *reason,
                                 size_t (*escape)(char *to, const char *from, size_t len),
                                 char err[CL_ERR_LEN]);

#endif

/* es_doc: what an aggregate looks like in Elasticsearch / OpenSearch — its
 * deterministic document id, the index it goes to, the index mapping, and
 * its JSON source. Pure, no I/O: the aggregate module builds documents with
 * it, the sink creates the index or template with cl_es_stats_mappings().
 *
 * Document id: "<window>:<window_start_ms>:<country>:<sha256(url) in hex>",
 * e.g. "1h:1715904000000:DE:0f115db0...e9d7" (64 lower-case hex digits). The same
 * aggregate always gets the same id, so re-indexing it overwrites rather than
 * duplicates. Hashing the URL keeps every id at most CL_ES_DOC_ID_SIZE - 1
 * (= 125) bytes, far below OpenSearch's 512-byte limit, however long the URL,
 * and makes it safe in a URL path. The parts before the hash are constrained
 * (see cl_es_doc_id) so that no two aggregates share an id.
 *
 * Long URLs: `url` is a keyword with `ignore_above: 8191`. Lucene refuses a
 * term longer than 32766 bytes, which would fail the whole document; 8191
 * characters (UTF-16 units, which ignore_above counts) take at most 24573
 * bytes in UTF-8, so no document ever fails for its URL. A URL longer than
 * that stays in `_source` but is not searchable through `url`: the
 * `url_sha256` keyword (always indexed, the same hash as in the id) finds
 * and groups every URL exactly. The `wildcard` field type would avoid this,
 * but OpenSearch 2 lacks it, and the same mapping must serve both. */
#ifndef CLICKLOOP_ES_DOC_H
#define CLICKLOOP_ES_DOC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "clickloop/buf.h"
#include "clickloop/common.h"
#include "clickloop/es_bulk.h"

/* A document id and its NUL: 22 + 1 + 20 + 1 + 16 + 1 + 64 + 1. */
#define CL_ES_DOC_ID_SIZE 126
/* Longest window label ("18446744073709551615ms") and its NUL. */
#define CL_ES_WINDOW_LABEL_SIZE 23
/* An index name once dates are filled in, and its NUL. */
#define CL_ES_INDEX_NAME_SIZE (CL_ES_INDEX_MAX_LEN + 1)
/* Characters of `url` indexed as a keyword (see the top of this file). */
#define CL_ES_URL_IGNORE_ABOVE 8191

/* Write the label of a window length: the largest unit that divides it
 * evenly, "7d", "1d", "6h", "90m", "30s", "250ms". Returns 0, or CL_ERR when
 * window_ms is 0. */
int cl_es_window_label(uint64_t window_ms, char out[CL_ES_WINDOW_LABEL_SIZE]);

/* Write the document id of the aggregate (window, window start, url,
 * country); see the top of this file. `window` is 1 - 22 characters of
 * [0-9a-z] (a label from cl_es_window_label); `country` is 0 - 16 characters
 * of [A-Za-z0-9] (an ISO code, or a word such as "unknown"), written as "-"
 * when empty. These rules keep ':' out of the parts, so each id names one
 * aggregate. Returns 0 or CL_ERR with a sentence in err (which may be NULL). */
int cl_es_doc_id(const char *window, int64_t window_start_ms, const char *country, const char *url,
                 size_t url_len, char out[CL_ES_DOC_ID_SIZE], char err[CL_ERR_LEN]);

/* The same from the URL's SHA-256 already in hand (64 hex digits, either
 * case, e.g. the url_hash column of the stats table): saves hashing the URL
 * again and gives the identical id. */
int cl_es_doc_id_from_hash(const char *window, int64_t window_start_ms, const char *country,
                           const char *url_sha256_hex, char out[CL_ES_DOC_ID_SIZE],
                           char err[CL_ERR_LEN]);

/* True when the configured index name has a date pattern (%Y, %m or %d). */
bool cl_es_index_has_date(const char *pattern);

/* Fill in %Y (4 digits), %m and %d (2 digits) from the UTC date of
 * `start_ms`; other characters are copied. Returns the length written, or
 * CL_ERR when the result would not fit in `size` bytes (with its NUL) or the
 * year is outside 0 - 9999. */
int cl_es_index_name(const char *pattern, int64_t start_ms, char *out, size_t size);

/* For an index name with a date pattern: the wildcard pattern matching every
 * index it names (each date pattern becomes "*": "stats-%Y.%m" gives
 * "stats-*.*") and the name of the index template that gives them their
 * mapping ("%Y" becomes "yyyy", "%m" "mm", "%d" "dd": "stats-yyyy.mm").
 * Return the length written, or CL_ERR when it would not fit. */
int cl_es_index_template_pattern(const char *pattern, char *out, size_t size);
int cl_es_index_template_name(const char *pattern, char *out, size_t size);

/* The mapping of the stats documents, as JSON text (static storage): strict,
 * so that a document with an unknown or mistyped field fails loudly instead
 * of growing the mapping. Fields: window, url, url_sha256, country
 * (keyword); window_start, window_end, updated_at (date, epoch milliseconds
 * or ISO 8601); clicks, unique_users, time_spent_samples (long);
 * avg_time_spent_ms (double). Valid for Elasticsearch 7.10 - 9 and
 * OpenSearch 1 - 3. */
const char *cl_es_stats_mappings(void);

/* One aggregate: clicks and users of one URL from one country in one window. */
typedef struct cl_es_stats_doc_s {
    const char *window; /* label, e.g. "1h" */
    int64_t window_start_ms;
    int64_t window_end_ms;
    const char *url;
    size_t url_len;
    /* SHA-256 of the URL, 64 hex digits in either case, or NULL to compute
     * it here; written in lower case. */
    const char *url_sha256_hex;
    const char *country; /* "" when unknown: written as null */
    uint64_t clicks;
    uint64_t unique_users;
    uint64_t time_spent_samples; /* events that carried time_spent_ms */
    double avg_time_spent_ms;    /* written as null when time_spent_samples is 0 */
    int64_t updated_at_ms;
} cl_es_stats_doc_t;

/* Append the document's JSON source (one line, no newline) to out. It is one
 * JSON object by construction: strings go through cl_es_json_append_string,
 * numbers are integers or finite decimals (a non-finite average is null),
 * so it is not parsed again before it is sent; the unit tests parse and
 * round-trip documents at every edge. Strings must be well-formed UTF-8, as
 * the utf8mb4 columns they are read from hold them. */
void cl_es_stats_source(cl_buf_t *out, const cl_es_stats_doc_t *doc);

/* cl_es_doc_id() of the aggregate. */
int cl_es_stats_doc_id(const cl_es_stats_doc_t *doc, char out[CL_ES_DOC_ID_SIZE],
                       char err[CL_ERR_LEN]);

#endif

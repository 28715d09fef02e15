/* The event module turns one Kafka message payload into a typed clickstream
 * event, or into a rejection whose reason a person can act on (it is stored in
 * rejected_events). Pure logic, no I/O: the kafka source calls it for every
 * message, unit tests and fuzzers call it directly.
 *
 * This is the one validation of an event on its way to SQL: an accepted
 * event fits the store's columns as it is (store.h relies on it, and checks
 * the limits below against its columns at compile time), so nothing checks
 * it again.
 *
 * Rules, in the order they are checked (the first failure is the reason):
 *  1. The payload is not empty, and at most the configured number of bytes.
 *  2. It is well-formed UTF-8 (see utf8.h); the reason names the byte offset
 *     (0-based). An escape of an unpaired UTF-16 surrogate ("\ud800") counts
 *     as ill-formed UTF-8 too.
 *  3. It is one strict RFC 8259 JSON value and nothing after it but
 *     whitespace, nested at most 32 levels deep (json-c's default; RFC 8259
 *     section 9 lets a parser limit depth), and that value is an object. The
 *     limit applies to members no field reads as well: the whole document is
 *     parsed. `\u0000` is refused anywhere
 *     in the document: json-c cuts member names at NUL, so "a\u0000b" would
 *     be found by the pointer "/a", and text columns cannot hold NUL. When a
 *     member name repeats, the last occurrence wins (json-c's behaviour);
 *     names differing only in case are different members. A UTF-8 byte order
 *     mark (EF BB BF) before the value is refused, not skipped: RFC 8259
 *     section 8.1 forbids sending one (a parser MAY ignore it), and a
 *     producer that adds one is one to fix. NaN, Infinity, +Infinity and
 *     -Infinity are refused by name. A number beyond a double ("1e400") or
 *     beyond 64 bits is syntax only where no field reads it; in a field it
 *     is refused as out of range (json-c reads it as infinity or clamps it).
 *  4. Each field is found by its JSON Pointer and checked, in the order of
 *     cl_event_field_t. A missing member (or a pointer through something that
 *     is not an object or array) means the field is absent.
 *     - Optional fields: JSON null means absent; an empty string is refused
 *       ("<field>: must not be empty").
 *     - Required fields (user_id, timestamp, url): absent, null and the empty
 *       string are all refused.
 *     - event_id is optional, but null or "" is refused rather than taken as
 *       absent: it decides the row key, and silently falling back to the
 *       offset-derived key would hide a producer bug and break deduplication.
 *     - A wrong type reads "<field>: expected a string, got a number".
 *
 * Fields:
 *  event_id       optional string, 1..CL_EVENT_ID_MAX_LEN bytes.
 *  user_id        required string (1..CL_EVENT_USER_ID_MAX_LEN bytes) or JSON
 *                 integer, stored as its decimal text. Numbers with a fraction
 *                 or exponent are refused; so are the integers json-c clamps
 *                 (anything outside int64/uint64, and the two extremes
 *                 INT64_MIN and UINT64_MAX, which cannot be told apart from a
 *                 clamped value).
 *  timestamp      required; see cl_event_parse_timestamp_string for strings.
 *                 A number is Unix time: values below CL_EVENT_EPOCH_MS_FROM
 *                 (1e11) are seconds, values at or above it milliseconds
 *                 (1e11 s is the year 5138, 1e11 ms is March 1973, so real
 *                 clocks are never ambiguous; milliseconds before 1973-03-03
 *                 would be misread as seconds). Fractions are truncated to the
 *                 millisecond, after a 0.5 microsecond allowance for binary
 *                 floating point (1764338400.123 is 1764338400.12299990654 as
 *                 a double). Negative, NaN and infinite numbers are refused.
 *                 The result must fall within CL_EVENT_TS_MIN_MS ..
 *                 CL_DATETIME_MAX_MS, 1970-01-01T00:00:00.000Z ..
 *                 9999-12-31T23:59:59.999Z.
 *  url            required string, 1..CL_EVENT_URL_MAX_LEN bytes (in practice
 *                 the payload's limit comes first).
 *  country        optional ISO 3166-1 alpha-2 code: exactly two ASCII letters,
 *                 stored upper-case. Only the shape is checked, not whether
 *                 the code is assigned (the list changes; "XK" is in wide use).
 *  city, browser, os, device
 *                 optional strings up to CL_EVENT_TEXT_MAX_LEN bytes.
 *  user_agent     optional string up to CL_EVENT_USER_AGENT_MAX_LEN bytes.
 *  time_spent_ms  optional number, 0..CL_EVENT_TIME_SPENT_MAX_MS, rounded to
 *                 the nearest integer.
 *  Unknown members are ignored. Strings are stored exactly as sent, after
 *  JSON unescaping.
 *
 * Row key (the primary key shared by click_data, geo_data, user_agent_data):
 *  "e:" + event_id when the event has one, otherwise
 *  "k:" + topic + ":" + partition + ":" + offset (decimal). The prefixes keep
 *  the two families apart: an event_id such as "k:clicks:0:42" gives the key
 *  "e:k:clicks:0:42", which no derived key can equal. Kafka topic names are
 *  at most 249 bytes of [a-zA-Z0-9._-] and never contain ':', so a derived
 *  key names exactly one message. Keys are at most CL_EVENT_ROW_KEY_MAX_LEN
 *  bytes. */
#ifndef CLICKLOOP_EVENT_H
#define CLICKLOOP_EVENT_H

#include <stddef.h>
#include <stdint.h>

#include "clickloop/common.h"
#include "clickloop/event_fields.h"

#define CL_EVENT_ID_MAX_LEN 128
#define CL_EVENT_USER_ID_MAX_LEN 256
#define CL_EVENT_TEXT_MAX_LEN 1024
#define CL_EVENT_USER_AGENT_MAX_LEN 4096
/* A MEDIUMTEXT: more than any payload ingest.max_event_bytes allows leaves. */
#define CL_EVENT_URL_MAX_LEN 16777215
#define CL_EVENT_TIME_SPENT_MAX_MS INT64_C(1000000000000)
/* Epoch numbers at or above this are milliseconds, below it seconds. */
#define CL_EVENT_EPOCH_MS_FROM INT64_C(100000000000)
/* The first instant an event may carry, the epoch: earlier ones, which a
 * DATETIME(3) could hold, are refused. The last is CL_DATETIME_MAX_MS
 * (common.h), the last a DATETIME(3) can hold. */
#define CL_EVENT_TS_MIN_MS INT64_C(0)
/* "e:" + 128 bytes, or "k:" + 249 + ":" + 11 + ":" + 20 (int32, int64). */
#define CL_EVENT_ROW_KEY_MAX_LEN 284

/* One accepted event. Every string is NUL-terminated, valid UTF-8 without NUL
 * bytes, and lives in one allocation owned by the event (`storage`), so a
 * parsed event stays valid after the Kafka message is destroyed, costs one
 * malloc, and may be moved by plain struct copy (then clear exactly one copy).
 * Release it with cl_event_clear(). */
typedef struct cl_event_s {
    const char *row_key;
    size_t row_key_len;
    const char *event_id; /* NULL when absent */
    const char *user_id;
    int64_t ts_ms; /* milliseconds since 1970-01-01T00:00:00Z */
    const char *url;
    size_t url_len;
    char country[3];  /* "" when absent */
    const char *city; /* NULL when absent, and so on below */
    const char *browser;
    const char *os;
    const char *device;
    const char *user_agent;
    int64_t time_spent_ms; /* -1 when absent */
    const char *topic;
    int32_t partition;
    int64_t offset;
    char *storage; /* private: the allocation holding all the strings above */
} cl_event_t;

/* Compiled field mapping plus a reusable json-c tokener. Not thread-safe: one
 * per thread (clickloop runs everything on one libuv loop, so one in all). */
typedef struct cl_event_parser_s cl_event_parser_t;

/* Make a parser. `pointers` holds one RFC 6901 JSON Pointer per field,
 * indexed by cl_event_field_t; a NULL entry (or a NULL array) means
 * "/<field name>". A malformed pointer, or "" (the whole document cannot be a
 * field), is refused with a message naming the field. `max_bytes` is the
 * largest payload accepted, 1..INT32_MAX-1 (json-c takes an int length). */
int cl_event_parser_new(const char *const pointers[CL_FIELD_COUNT], size_t max_bytes,
                        cl_event_parser_t **out, char err[CL_ERR_LEN]);
void cl_event_parser_free(cl_event_parser_t *parser);

/* Parse one message. `payload` may be NULL (a Kafka tombstone); `topic`,
 * `partition` and `offset` are the message's as librdkafka gives them (a
 * topic name of at most 249 bytes of [a-zA-Z0-9._-], never negative
 * numbers), which is what keeps the row key and the Kafka columns valid. Returns 0 with *ev filled
 * (the caller later calls cl_event_clear), or CL_ERR with the rejection reason in `reason` and *ev
 * zeroed, so that cl_event_clear(ev) is harmless either way. */
int cl_event_parse(cl_event_parser_t *parser, const void *payload, size_t len, const char *topic,
                   int32_t partition, int64_t offset, cl_event_t *ev, char reason[CL_ERR_LEN]);

/* Free what an event owns and zero it. Safe on a zeroed or cleared event. */
void cl_event_clear(cl_event_t *ev);

/* Parse an RFC 3339 date-time with a zone into milliseconds since the epoch:
 * "2026-11-28T14:00:00Z", "2026-11-28 14:00:00.123+01:00". The separator is
 * 'T', 't' or a space; seconds are required; any number of fraction digits
 * may follow, truncated to milliseconds; the zone is 'Z', 'z', "+hh:mm",
 * "-hh:mm" or, as ISO 8601 basic format that many loggers emit, "+hhmm".
 * A string without a zone is refused: its instant is unknown. A leap second
 * (":60") is accepted and clamped to :59.999 of the same minute, so the event
 * keeps its minute and its date and still sorts before the next second.
 * Fields are range-checked (February 29 only in leap years) and the year must
 * be 1970..9999. On failure `reason` says what is wrong, quoting the value,
 * without a field name. */
int cl_event_parse_timestamp_string(const char *s, size_t len, int64_t *ms,
                                    char reason[CL_ERR_LEN]);

/* How far an event's time may be from the moment it is consumed. Events far
 * in the past or the future are producer bugs (a clock at 1970, a unit
 * mistake) more often than data: each would open aggregation windows and
 * index names of its own, and rows dated ahead are never pruned. */
typedef struct cl_event_time_window_s {
    uint64_t max_age_ms;         /* ingest.max_event_age */
    uint64_t max_future_skew_ms; /* ingest.max_future_skew */
} cl_event_time_window_t;

/* 0 when now_ms - max_age_ms <= ts_ms <= now_ms + max_future_skew_ms (both
 * edges accepted), else CL_ERR with a reason naming the bound, the event's
 * time and `now_ms` (wall-clock ms since the epoch). Bounds up to 100 years. */
int cl_event_check_time_window(int64_t ts_ms, int64_t now_ms, const cl_event_time_window_t *window,
                               char reason[CL_ERR_LEN]);

#endif

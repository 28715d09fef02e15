/* Kafka payload → typed clickstream event; see include/clickloop/event.h for
 * the rules. Runs on the loop thread for every consumed message, so the happy
 * path costs one UTF-8 pass, one json-c parse with a reused tokener, one
 * strictness scan, and a single allocation for the event's strings. */
#include "clickloop/event.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json_object.h>
#include <json-c/json_tokener.h>

#include "clickloop/json_pointer.h"
#include "clickloop/utf8.h"

/* How much of a value a reason quotes; escapes may make it up to 6x longer. */
#define QUOTE_MAX_INPUT 48
#define QUOTE_SIZE (QUOTE_MAX_INPUT * 6 + 8)

#define MS_PER_DAY INT64_C(86400000)

static const char *const field_names[CL_FIELD_COUNT] = CL_EVENT_FIELD_NAMES;

struct cl_event_parser_s {
    cl_json_pointer_t *pointers[CL_FIELD_COUNT];
    size_t max_bytes;
    struct json_tokener *tokener;
};

/* A field's text before it is copied into the event's storage. */
typedef struct {
    const char *ptr; /* NULL when absent */
    size_t len;
} text_t;

typedef struct {
    text_t text[CL_FIELD_COUNT]; /* string fields; user_id also when it was an integer */
    char user_id_digits[24];     /* the decimal text of an integer user_id */
    int64_t ts_ms;
    int64_t time_spent_ms;
    char country[3];
} fields_t;

/* ---- messages --------------------------------------------------------- */

/* Render a value for a reason: double-quoted, at most QUOTE_MAX_INPUT bytes of
 * it, with quotes, backslashes and control characters escaped so the reason
 * stays one readable line, and never cut inside a UTF-8 sequence (the reason
 * itself is stored in a utf8mb4 column). */
static const char *quote_value(const char *s, size_t len, char out[QUOTE_SIZE])
{
    size_t shown = len;
    if (shown > QUOTE_MAX_INPUT) {
        shown = QUOTE_MAX_INPUT;
        while (shown > 0 && ((unsigned char)s[shown] & 0xC0) == 0x80)
            shown--;
    }
    char *w = out;
    *w++ = '"';
    for (size_t i = 0; i < shown; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            *w++ = '\\';
            *w++ = (char)c;
        } else if (c < 0x20 || c == 0x7F) {
            w += snprintf(w, 7, "\\u%04x", c);
        } else {
            *w++ = (char)c;
        }
    }
    *w++ = '"';
    if (shown < len)
        w += snprintf(w, 4, "...");
    *w = '\0';
    return out;
}

static const char *type_phrase(struct json_object *v)
{
    switch (json_object_get_type(v)) {
    case json_type_null:
        return "null";
    case json_type_boolean:
        return "a boolean";
    case json_type_double:
    case json_type_int:
        return "a number";
    case json_type_object:
        return "an object";
    case json_type_array:
        return "an array";
    case json_type_string:
        return "a string";
    }
    return "an unknown type";
}

/* ---- strict JSON ------------------------------------------------------ */

static int hex_digit(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* The code unit of the "\uXXXX" escape at p[at], or -1. */
static long unicode_escape_at(const unsigned char *p, size_t len, size_t at)
{
    if (at > len || len - at < 6 || p[at] != '\\' || p[at + 1] != 'u')
        return -1;
    long unit = 0;
    for (size_t k = 2; k < 6; k++) {
        int d = hex_digit(p[at + k]);
        if (d < 0)
            return -1;
        unit = unit * 16 + d;
    }
    return unit;
}

/* Bytes JSON allows outside strings and numbers: whitespace, structure and the
 * letters of true, false and null. */
static bool allowed_outside_strings(unsigned char c)
{
    switch (c) {
    case ' ':
    case '\t':
    case '\n':
    case '\r':
    case '{':
    case '}':
    case '[':
    case ']':
    case ',':
    case ':':
    case 't':
    case 'r':
    case 'u':
    case 'e':
    case 'f':
    case 'a':
    case 'l':
    case 's':
    case 'n':
        return true;
    default:
        return false;
    }
}

static bool is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

/* The non-JSON number literal json-c (or a producer) may put at p[at]:
 * NaN or Infinity, signed or not, or NULL. Named in the reason, since
 * "unexpected 'I'" does not tell a producer what it sent. */
static const char *non_json_number_at(const unsigned char *p, size_t len, size_t at)
{
    static const char *const literals[] = {"NaN",      "+NaN",      "-NaN",
                                           "Infinity", "+Infinity", "-Infinity"};
    for (size_t k = 0; k < CL_ARRAY_LEN(literals); k++) {
        size_t n = strlen(literals[k]);
        if (len - at >= n && memcmp(p + at, literals[k], n) == 0)
            return literals[k];
    }
    return NULL;
}

/* Whether p[at] starts a UTF-8 byte order mark (EF BB BF, U+FEFF). */
static bool bom_at(const unsigned char *p, size_t len, size_t at)
{
    return len - at >= 3 && p[at] == 0xEF && p[at + 1] == 0xBB && p[at + 2] == 0xBF;
}

/* A JSON syntax error at byte `at` (where json-c or the strict scan stopped),
 * naming what is there when it is one of the usual suspects: a byte order
 * mark, NaN or an infinity, else the character itself. */
static int syntax_error_at(const unsigned char *p, size_t len, size_t at, const char *what,
                           char *reason)
{
    if (at < len) {
        if (bom_at(p, len, at))
            return cl_errorf(reason,
                             "not valid JSON: a UTF-8 byte order mark (EF BB BF) at byte %zu; "
                             "RFC 8259 forbids sending one and clickloop does not skip it",
                             at);
        /* json-c stops after the sign of "-NaN": name the literal from its sign. */
        size_t from = at > 0 && (p[at - 1] == '-' || p[at - 1] == '+') ? at - 1 : at;
        const char *literal = non_json_number_at(p, len, from);
        if (literal == NULL)
            literal = non_json_number_at(p, len, from = at);
        if (literal != NULL)
            return cl_errorf(reason,
                             "not valid JSON: %s at byte %zu is not a JSON number (RFC 8259 "
                             "has no infinities or NaN)",
                             literal, from);
        unsigned char c = p[at];
        if (c >= 0x21 && c <= 0x7E)
            return cl_errorf(reason, "not valid JSON: %s at byte %zu ('%c')", what, at, c);
        return cl_errorf(reason, "not valid JSON: %s at byte %zu (byte 0x%02X)", what, at, c);
    }
    return cl_errorf(reason, "not valid JSON: %s at byte %zu", what, at);
}

/* Check the number starting at p[*at] (a '-' or a digit); leave *at after it. */
static int check_number(const unsigned char *p, size_t len, size_t *at, char *reason)
{
    size_t i = *at;
    if (p[i] == '-')
        i++;
    if (i == len || !is_digit(p[i])) {
        if (non_json_number_at(p, len, *at) != NULL)
            return syntax_error_at(p, len, *at, "", reason);
        return cl_errorf(reason, "not valid JSON: a number needs a digit after '-' at byte %zu",
                         *at);
    }
    if (i + 1 < len && p[i] == '0' && is_digit(p[i + 1]))
        return cl_errorf(reason, "not valid JSON: leading zero in a number at byte %zu", i);
    while (i < len && is_digit(p[i]))
        i++;
    if (i < len && p[i] == '.') {
        if (i + 1 == len || !is_digit(p[i + 1]))
            return cl_errorf(reason, "not valid JSON: a number needs digits after '.' at byte %zu",
                             i);
        for (i++; i < len && is_digit(p[i]); i++)
            ;
    }
    if (i < len && (p[i] == 'e' || p[i] == 'E')) {
        i++;
        if (i < len && (p[i] == '+' || p[i] == '-'))
            i++;
        while (i < len && is_digit(p[i]))
            i++;
    }
    *at = i;
    return CL_OK;
}

/* Bytes that end a run of plain string content: the closing quote, an escape,
 * and the control characters JSON forbids raw. */
static bool ends_plain_run(unsigned char c)
{
    return c < 0x20 || c == '"' || c == '\\';
}

/* Whether any of 8 bytes ends a plain run. For each byte, (x - 1) & ~x sets
 * the high bit when x is zero, and (x - 0x20) & ~x when x < 0x20 (the classic
 * "haszero"/"hasless" bit tricks). Borrows may flag bytes after a true match,
 * never without one, which is all the caller needs. */
static bool word_ends_plain_run(uint64_t w)
{
    const uint64_t ones = UINT64_C(0x0101010101010101);
    uint64_t quote = w ^ (ones * '"');
    uint64_t backslash = w ^ (ones * '\\');
    uint64_t hits =
        ((quote - ones) & ~quote) | ((backslash - ones) & ~backslash) | ((w - ones * 0x20) & ~w);
    return (hits & UINT64_C(0x8080808080808080)) != 0;
}

/* Check the string whose opening quote is at p[*at]; leave *at after its
 * closing quote. Strings are most of a payload, so plain content is skipped
 * eight bytes at a time. */
static int check_string(const unsigned char *p, size_t len, size_t *at, char *reason)
{
    size_t i = *at + 1;
    while (i < len) {
        for (uint64_t w; len - i >= 8; i += 8) {
            memcpy(&w, p + i, sizeof w);
            if (word_ends_plain_run(w))
                break;
        }
        while (i < len && !ends_plain_run(p[i]))
            i++;
        if (i == len)
            break;
        unsigned char c = p[i];
        if (c == '"') {
            *at = i + 1;
            return CL_OK;
        }
        if (c < 0x20)
            return cl_errorf(reason,
                             "not valid JSON: unescaped control character U+%04X in a string "
                             "at byte %zu",
                             c, i);
        if (i + 1 < len && p[i + 1] != 'u') {
            i += 2;
            continue;
        }
        long unit = unicode_escape_at(p, len, i);
        if (unit < 0)
            return cl_errorf(reason, "not valid JSON: bad \\u escape at byte %zu", i);
        if (unit == 0)
            return cl_errorf(reason,
                             "\\u0000 (NUL) at byte %zu is not accepted: json-c cuts member "
                             "names at NUL and text columns cannot hold it",
                             i);
        if (unit >= 0xD800 && unit <= 0xDBFF) {
            long low = unicode_escape_at(p, len, i + 6);
            if (low < 0xDC00 || low > 0xDFFF)
                return cl_errorf(reason,
                                 "not valid UTF-8: unpaired surrogate escape \\u%04lx at byte %zu",
                                 unit, i);
            i += 12;
        } else if (unit >= 0xDC00 && unit <= 0xDFFF) {
            return cl_errorf(
                reason, "not valid UTF-8: unpaired surrogate escape \\u%04lx at byte %zu", unit, i);
        } else {
            i += 6;
        }
    }
    *at = len;
    return CL_OK;
}

/* json-c 0.16, even with JSON_TOKENER_STRICT, accepts things RFC 8259 does
 * not (each one checked against the library): NaN, Infinity and -Infinity;
 * member names in single quotes; raw control characters inside strings;
 * numbers with leading zeros ("00", "-01"), without integer digits ("-.5")
 * or without fraction digits ("1."); a NUL byte after the value, where it
 * simply stops (parse_object catches that one by the parse end); and escapes
 * of unpaired UTF-16 surrogates ("\ud800"), which it silently turns into
 * U+FFFD. It also keeps "\u0000" inside strings but cuts member names there.
 * This scan runs only on documents json-c accepted, so its idea of what is
 * inside a string is exact up to the first deviation, which it reports. A
 * differential run against Python's strict json module over 300k mutated
 * payloads found no disagreement. */
static int check_strict_json(const unsigned char *p, size_t len, char *reason)
{
    size_t i = 0;
    while (i < len) {
        unsigned char c = p[i];
        if (c == '"' || c == '-' || is_digit(c)) {
            int rc = c == '"' ? check_string(p, len, &i, reason) : check_number(p, len, &i, reason);
            if (rc != CL_OK)
                return CL_ERR;
            continue;
        }
        if (!allowed_outside_strings(c)) {
            if (non_json_number_at(p, len, i) != NULL || bom_at(p, len, i))
                return syntax_error_at(p, len, i, "", reason);
            if (c >= 0x21 && c <= 0x7E)
                return cl_errorf(reason, "not valid JSON: unexpected '%c' at byte %zu", c, i);
            return cl_errorf(reason, "not valid JSON: unexpected byte 0x%02X at byte %zu", c, i);
        }
        i++;
    }
    return CL_OK;
}

/* Parse the payload into a json-c object (the caller puts it). */
static int parse_object(cl_event_parser_t *parser, const char *json, size_t len,
                        struct json_object **out, char *reason)
{
    struct json_tokener *tok = parser->tokener;
    json_tokener_reset(tok);
    struct json_object *root = json_tokener_parse_ex(tok, json, (int)len);
    enum json_tokener_error jerr = json_tokener_get_error(tok);
    size_t end = json_tokener_get_parse_end(tok);
    if (jerr == json_tokener_continue) {
        /* json-c finishes a top-level number or literal only when it sees a
         * terminating NUL, which a Kafka payload does not have: feed one, as
         * the json_tokener_parse_ex documentation recommends. */
        root = json_tokener_parse_ex(tok, "", 1);
        jerr = json_tokener_get_error(tok);
        if (jerr == json_tokener_continue) /* e.g. inside a string: the NUL was taken as text */
            jerr = json_tokener_error_parse_eof;
        end = len;
    }
    const unsigned char *p = (const unsigned char *)json;
    if (jerr == json_tokener_error_depth)
        return cl_errorf(reason,
                         "not valid JSON: nesting too deep at byte %zu (more than %d levels of "
                         "objects and arrays)",
                         end, JSON_TOKENER_DEFAULT_DEPTH);
    if (jerr != json_tokener_success)
        return syntax_error_at(p, len, end, json_tokener_error_desc(jerr), reason);
    if (end < len) {
        json_object_put(root);
        return syntax_error_at(p, len, end, "unexpected data after the value", reason);
    }
    if (check_strict_json((const unsigned char *)json, len, reason) != CL_OK) {
        json_object_put(root);
        return CL_ERR;
    }
    if (!json_object_is_type(root, json_type_object)) {
        const char *got = type_phrase(root);
        json_object_put(root);
        return cl_errorf(reason, "expected a JSON object, got %s", got);
    }
    *out = root;
    return CL_OK;
}

/* ---- calendar --------------------------------------------------------- */

static bool is_leap_year(int64_t y)
{
    return y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
}

static int days_in_month(int64_t year, int month)
{
    static const int days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return month == 2 && is_leap_year(year) ? 29 : days[month - 1];
}

/* ---- timestamps ------------------------------------------------------- */

/* Read exactly n decimal digits. */
static bool read_digits(const char *s, size_t n, int *out)
{
    int v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return true;
}

/* Read the zone at s[*at..len) as minutes east of UTC. */
static bool read_zone(const char *s, size_t len, size_t *at, int *offset_min, int *hh, int *mm)
{
    size_t i = *at;
    *hh = *mm = 0;
    if (s[i] == 'Z' || s[i] == 'z') {
        *offset_min = 0;
        *at = i + 1;
        return true;
    }
    if (s[i] != '+' && s[i] != '-')
        return false;
    int sign = s[i] == '-' ? -1 : 1;
    i++;
    if (len - i < 4 || !read_digits(s + i, 2, hh))
        return false;
    i += 2;
    if (s[i] == ':')
        i++;
    if (len - i < 2 || !read_digits(s + i, 2, mm))
        return false;
    *offset_min = sign * (*hh * 60 + *mm);
    *at = i + 2;
    return true;
}

/* Fill reason with a problem in a timestamp string, followed by the string
 * itself, quoted, so every message shows what was sent. */
static int timestamp_error(char *reason, const char *s, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int timestamp_error(char *reason, const char *s, size_t len, const char *fmt, ...)
{
    char problem[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(problem, sizeof problem, fmt, ap);
    va_end(ap);
    char shown[QUOTE_SIZE];
    return cl_errorf(reason, "%s in %s", problem, quote_value(s, len, shown));
}

int cl_event_parse_timestamp_string(const char *s, size_t len, int64_t *ms, char reason[CL_ERR_LEN])
{
    int year, month, day, hour, minute, second;
    if (len < 19 || !read_digits(s, 4, &year) || s[4] != '-' || !read_digits(s + 5, 2, &month) ||
        s[7] != '-' || !read_digits(s + 8, 2, &day) ||
        (s[10] != 'T' && s[10] != 't' && s[10] != ' ') || !read_digits(s + 11, 2, &hour) ||
        s[13] != ':' || !read_digits(s + 14, 2, &minute) || s[16] != ':' ||
        !read_digits(s + 17, 2, &second)) {
        char shown[QUOTE_SIZE];
        return cl_errorf(reason,
                         "expected an RFC 3339 date-time such as \"2026-11-28T14:00:00Z\", got %s",
                         quote_value(s, len, shown));
    }

    size_t i = 19;
    int millis = 0;
    if (i < len && s[i] == '.') {
        size_t start = ++i;
        for (; i < len && s[i] >= '0' && s[i] <= '9'; i++) {
            if (i - start < 3)
                millis = millis * 10 + (s[i] - '0');
        }
        if (i == start)
            return timestamp_error(reason, s, len, "no digits after the decimal point");
        for (size_t n = i - start; n < 3; n++)
            millis *= 10;
    }
    if (i == len)
        return timestamp_error(reason, s, len, "no time zone");
    int offset_min, zone_hours, zone_minutes;
    if (!read_zone(s, len, &i, &offset_min, &zone_hours, &zone_minutes))
        return timestamp_error(reason, s, len, "expected a time zone (Z or +hh:mm) at byte %zu", i);
    if (i != len)
        return timestamp_error(reason, s, len, "unexpected text after the time zone");

    if (year < 1970)
        return timestamp_error(reason, s, len, "year %d is outside 1970..9999", year);
    if (month < 1 || month > 12)
        return timestamp_error(reason, s, len, "month %d is out of range", month);
    if (day < 1 || day > days_in_month(year, month))
        return timestamp_error(reason, s, len, "%04d-%02d has no day %d", year, month, day);
    if (hour > 23)
        return timestamp_error(reason, s, len, "hour %d is out of range", hour);
    if (minute > 59)
        return timestamp_error(reason, s, len, "minute %d is out of range", minute);
    if (second > 60)
        return timestamp_error(reason, s, len, "second %d is out of range", second);
    if (zone_hours > 23 || zone_minutes > 59)
        return timestamp_error(reason, s, len, "time zone offset is out of range");
    if (second == 60) {
        second = 59;
        millis = 999;
    }

    int64_t t = cl_days_from_civil(year, month, day) * MS_PER_DAY +
                ((int64_t)hour * 3600 + minute * 60 + second) * 1000 + millis -
                (int64_t)offset_min * 60000;
    if (t < CL_EVENT_TS_MIN_MS)
        return timestamp_error(reason, s, len, "instant earlier than 1970-01-01T00:00:00Z");
    if (t > CL_DATETIME_MAX_MS)
        return timestamp_error(reason, s, len, "instant later than 9999-12-31T23:59:59.999Z");
    *ms = t;
    return CL_OK;
}

/* A number too large for its type, quoted as it was sent. The strict scan
 * has refused NaN and the infinities by then, so a double that is not finite
 * is a decimal beyond the range of a double ("1e400"), which json-c reads as
 * infinity; json-c keeps the text of the numbers it parses as doubles. */
static int number_out_of_range(struct json_object *v, const char *field, char *reason)
{
    const char *text = json_object_to_json_string(v);
    char shown[QUOTE_SIZE];
    return cl_errorf(reason, "%s: %s is out of range (beyond a double; a finite number is needed)",
                     field, quote_value(text, strlen(text), shown));
}

/* json-c clamps an integer beyond int64 (uint64 for positive ones) to
 * INT64_MIN or INT64_MAX without telling, so those two values may stand for
 * any longer number: say so rather than quote a value that was not sent. */
static bool integer_maybe_clamped(int64_t v)
{
    return v == INT64_MAX || v == INT64_MIN;
}

/* Integer seconds or milliseconds; see the header for the magnitude rule. */
static int timestamp_from_integer(int64_t v, int64_t *ms, char *reason)
{
    if (integer_maybe_clamped(v))
        return cl_errorf(reason, "timestamp: integer is out of range (later than "
                                 "9999-12-31T23:59:59.999Z or negative)");
    if (v < 0)
        return cl_errorf(reason, "timestamp: must not be negative, got %" PRId64, v);
    int64_t t = v >= CL_EVENT_EPOCH_MS_FROM ? v : v * 1000;
    if (t > CL_DATETIME_MAX_MS)
        return cl_errorf(reason, "timestamp: %" PRId64 " is later than 9999-12-31T23:59:59.999Z",
                         v);
    *ms = t;
    return CL_OK;
}

static int timestamp_from_double(double v, int64_t *ms, char *reason)
{
    if (!isfinite(v))
        return cl_errorf(reason, "timestamp: must be a finite number");
    if (v < 0)
        return cl_errorf(reason, "timestamp: must not be negative, got %.17g", v);
    double t = v >= (double)CL_EVENT_EPOCH_MS_FROM ? v : v * 1000.0;
    /* Compare before converting: a double beyond int64 has no defined cast. */
    if (t >= (double)CL_DATETIME_MAX_MS + 1.0)
        return cl_errorf(reason, "timestamp: %.17g is later than 9999-12-31T23:59:59.999Z", v);
    *ms = (int64_t)floor(t + 0.0005);
    if (*ms > CL_DATETIME_MAX_MS)
        *ms = CL_DATETIME_MAX_MS; /* only the 0.5 us allowance can get here */
    return CL_OK;
}

/* ---- event-time window ------------------------------------------------- */

/* "2026-11-28T14:00:00.123Z" in a reason; an instant no DATETIME holds (only
 * a clock gone wild can give one) is written in milliseconds instead. */
#define INSTANT_SIZE (CL_DATETIME_SIZE + 1)

static void format_instant(int64_t ms, char out[INSTANT_SIZE])
{
    if (cl_datetime_format(ms, out) != CL_OK) {
        snprintf(out, INSTANT_SIZE, "%" PRId64 " ms", ms);
        return;
    }
    out[10] = 'T';
    out[CL_DATETIME_SIZE - 1] = 'Z';
    out[CL_DATETIME_SIZE] = '\0';
}

int cl_event_check_time_window(int64_t ts_ms, int64_t now_ms, const cl_event_time_window_t *w,
                               char reason[CL_ERR_LEN])
{
    char at[INSTANT_SIZE], now[INSTANT_SIZE];
    /* Both bounds are at most 10 000 years (config.c), 3.2e14 ms: far from an
     * overflow. */
    if (ts_ms < now_ms - (int64_t)w->max_age_ms) {
        format_instant(ts_ms, at);
        format_instant(now_ms, now);
        return cl_errorf(reason,
                         "timestamp: %s is %" PRId64 " ms before its arrival at %s, more than "
                         "ingest.max_event_age (%" PRIu64 " ms) allows",
                         at, now_ms - ts_ms, now, w->max_age_ms);
    }
    if (ts_ms > now_ms + (int64_t)w->max_future_skew_ms) {
        format_instant(ts_ms, at);
        format_instant(now_ms, now);
        return cl_errorf(reason,
                         "timestamp: %s is %" PRId64 " ms after its arrival at %s, more than "
                         "ingest.max_future_skew (%" PRIu64 " ms) allows",
                         at, ts_ms - now_ms, now, w->max_future_skew_ms);
    }
    return CL_OK;
}

/* ---- fields ----------------------------------------------------------- */

typedef enum { VALUE_ABSENT, VALUE_NULL, VALUE_PRESENT } presence_t;

static presence_t find_field(const cl_event_parser_t *parser, struct json_object *root,
                             cl_event_field_t f, struct json_object **value)
{
    if (!cl_json_pointer_resolve(parser->pointers[f], root, value))
        return VALUE_ABSENT;
    return *value == NULL ? VALUE_NULL : VALUE_PRESENT;
}

static int missing(const cl_event_parser_t *parser, cl_event_field_t f, char *reason)
{
    return cl_errorf(reason, "%s (%s): required field is missing", field_names[f],
                     cl_json_pointer_text(parser->pointers[f]));
}

/* A non-empty string of at most max_len bytes. */
static int take_string(struct json_object *v, cl_event_field_t f, size_t max_len, text_t *out,
                       char *reason)
{
    if (!json_object_is_type(v, json_type_string))
        return cl_errorf(reason, "%s: expected a string, got %s", field_names[f], type_phrase(v));
    size_t len = (size_t)json_object_get_string_len(v);
    if (len == 0)
        return cl_errorf(reason, "%s: must not be empty", field_names[f]);
    if (len > max_len)
        return cl_errorf(reason, "%s: %zu bytes is over the limit of %zu bytes", field_names[f],
                         len, max_len);
    out->ptr = json_object_get_string(v);
    out->len = len;
    return CL_OK;
}

/* An optional string field: absent and null leave out->ptr NULL. */
static int take_optional_string(const cl_event_parser_t *parser, struct json_object *root,
                                cl_event_field_t f, size_t max_len, text_t *out, char *reason)
{
    struct json_object *v;
    if (find_field(parser, root, f, &v) != VALUE_PRESENT)
        return CL_OK;
    return take_string(v, f, max_len, out, reason);
}

static int take_required_string(const cl_event_parser_t *parser, struct json_object *root,
                                cl_event_field_t f, size_t max_len, text_t *out, char *reason)
{
    struct json_object *v;
    switch (find_field(parser, root, f, &v)) {
    case VALUE_ABSENT:
        return missing(parser, f, reason);
    case VALUE_NULL:
        return cl_errorf(reason, "%s: must not be null", field_names[f]);
    case VALUE_PRESENT:
        break;
    }
    return take_string(v, f, max_len, out, reason);
}

static int take_event_id(const cl_event_parser_t *parser, struct json_object *root, fields_t *x,
                         char *reason)
{
    struct json_object *v;
    presence_t p = find_field(parser, root, CL_FIELD_EVENT_ID, &v);
    if (p == VALUE_ABSENT)
        return CL_OK;
    if (p == VALUE_NULL ||
        (json_object_is_type(v, json_type_string) && json_object_get_string_len(v) == 0))
        return cl_errorf(reason, "event_id: must be a non-empty string");
    return take_string(v, CL_FIELD_EVENT_ID, CL_EVENT_ID_MAX_LEN, &x->text[CL_FIELD_EVENT_ID],
                       reason);
}

/* json-c stores integers above INT64_MAX as uint64 and clamps anything beyond
 * uint64 (or below INT64_MIN) to the nearest bound without telling; a clamped
 * user id would merge two users, so the bounds themselves are refused. */
static int user_id_from_integer(struct json_object *v, fields_t *x, char *reason)
{
    int64_t i = json_object_get_int64(v);
    int n;
    if (i == INT64_MIN)
        return cl_errorf(reason, "user_id: integer is out of range");
    if (i == INT64_MAX) {
        uint64_t u = json_object_get_uint64(v);
        if (u == UINT64_MAX)
            return cl_errorf(reason, "user_id: integer is out of range");
        n = snprintf(x->user_id_digits, sizeof x->user_id_digits, "%" PRIu64, u);
    } else {
        n = snprintf(x->user_id_digits, sizeof x->user_id_digits, "%" PRId64, i);
    }
    x->text[CL_FIELD_USER_ID].ptr = x->user_id_digits;
    x->text[CL_FIELD_USER_ID].len = (size_t)n;
    return CL_OK;
}

static int take_user_id(const cl_event_parser_t *parser, struct json_object *root, fields_t *x,
                        char *reason)
{
    struct json_object *v;
    switch (find_field(parser, root, CL_FIELD_USER_ID, &v)) {
    case VALUE_ABSENT:
        return missing(parser, CL_FIELD_USER_ID, reason);
    case VALUE_NULL:
        return cl_errorf(reason, "user_id: must not be null");
    case VALUE_PRESENT:
        break;
    }
    switch (json_object_get_type(v)) {
    case json_type_string:
        return take_string(v, CL_FIELD_USER_ID, CL_EVENT_USER_ID_MAX_LEN,
                           &x->text[CL_FIELD_USER_ID], reason);
    case json_type_int:
        return user_id_from_integer(v, x, reason);
    case json_type_double:
        return cl_errorf(reason, "user_id: expected a string or an integer, got a number with "
                                 "a fraction or an exponent");
    default:
        return cl_errorf(reason, "user_id: expected a string or an integer, got %s",
                         type_phrase(v));
    }
}

static int take_timestamp(const cl_event_parser_t *parser, struct json_object *root, fields_t *x,
                          char *reason)
{
    struct json_object *v;
    switch (find_field(parser, root, CL_FIELD_TIMESTAMP, &v)) {
    case VALUE_ABSENT:
        return missing(parser, CL_FIELD_TIMESTAMP, reason);
    case VALUE_NULL:
        return cl_errorf(reason, "timestamp: must not be null");
    case VALUE_PRESENT:
        break;
    }
    switch (json_object_get_type(v)) {
    case json_type_string: {
        size_t len = (size_t)json_object_get_string_len(v);
        if (len == 0)
            return cl_errorf(reason, "timestamp: must not be empty");
        char why[CL_ERR_LEN];
        if (cl_event_parse_timestamp_string(json_object_get_string(v), len, &x->ts_ms, why) !=
            CL_OK)
            return cl_errorf(reason, "timestamp: %s", why);
        return CL_OK;
    }
    case json_type_int:
        return timestamp_from_integer(json_object_get_int64(v), &x->ts_ms, reason);
    case json_type_double:
        if (!isfinite(json_object_get_double(v)))
            return number_out_of_range(v, "timestamp", reason);
        return timestamp_from_double(json_object_get_double(v), &x->ts_ms, reason);
    default:
        return cl_errorf(reason, "timestamp: expected a string or a number, got %s",
                         type_phrase(v));
    }
}

static int take_country(const cl_event_parser_t *parser, struct json_object *root, fields_t *x,
                        char *reason)
{
    text_t t = {NULL, 0};
    if (take_optional_string(parser, root, CL_FIELD_COUNTRY, SIZE_MAX, &t, reason) != CL_OK)
        return CL_ERR;
    if (t.ptr == NULL)
        return CL_OK;
    for (size_t i = 0; i < t.len; i++) {
        char c = t.ptr[i];
        bool letter = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
        if (t.len != 2 || !letter) {
            char shown[QUOTE_SIZE];
            return cl_errorf(reason, "country: expected a 2-letter ISO 3166-1 code, got %s",
                             quote_value(t.ptr, t.len, shown));
        }
        x->country[i] = (char)(c & ~0x20); /* ASCII upper case */
    }
    x->country[2] = '\0';
    return CL_OK;
}

static int take_time_spent(const cl_event_parser_t *parser, struct json_object *root, fields_t *x,
                           char *reason)
{
    struct json_object *v;
    if (find_field(parser, root, CL_FIELD_TIME_SPENT_MS, &v) != VALUE_PRESENT)
        return CL_OK;
    double d;
    switch (json_object_get_type(v)) {
    case json_type_int: {
        int64_t i = json_object_get_int64(v);
        if (integer_maybe_clamped(i))
            return cl_errorf(reason, "time_spent_ms: integer is out of range");
        if (i < 0)
            return cl_errorf(reason, "time_spent_ms: must not be negative, got %" PRId64, i);
        if (i > CL_EVENT_TIME_SPENT_MAX_MS)
            return cl_errorf(reason, "time_spent_ms: %" PRId64 " is over the limit of %" PRId64, i,
                             CL_EVENT_TIME_SPENT_MAX_MS);
        x->time_spent_ms = i;
        return CL_OK;
    }
    case json_type_double:
        d = json_object_get_double(v);
        break;
    default:
        return cl_errorf(reason, "time_spent_ms: expected a number, got %s", type_phrase(v));
    }
    if (!isfinite(d))
        return number_out_of_range(v, "time_spent_ms", reason);
    if (d < 0)
        return cl_errorf(reason, "time_spent_ms: must not be negative, got %.17g", d);
    if (d > (double)CL_EVENT_TIME_SPENT_MAX_MS)
        return cl_errorf(reason, "time_spent_ms: %.17g is over the limit of %" PRId64, d,
                         CL_EVENT_TIME_SPENT_MAX_MS);
    x->time_spent_ms = llround(d);
    return CL_OK;
}

/* Check every field in cl_event_field_t order; the first problem wins. */
static int take_fields(const cl_event_parser_t *parser, struct json_object *root, fields_t *x,
                       char *reason)
{
    memset(x, 0, sizeof *x);
    x->time_spent_ms = -1;
    if (take_event_id(parser, root, x, reason) != CL_OK ||
        take_user_id(parser, root, x, reason) != CL_OK ||
        take_timestamp(parser, root, x, reason) != CL_OK ||
        take_required_string(parser, root, CL_FIELD_URL, CL_EVENT_URL_MAX_LEN,
                             &x->text[CL_FIELD_URL], reason) != CL_OK ||
        take_country(parser, root, x, reason) != CL_OK)
        return CL_ERR;

    static const struct {
        cl_event_field_t field;
        size_t max_len;
    } optional_texts[] = {
        {CL_FIELD_CITY, CL_EVENT_TEXT_MAX_LEN},
        {CL_FIELD_BROWSER, CL_EVENT_TEXT_MAX_LEN},
        {CL_FIELD_OS, CL_EVENT_TEXT_MAX_LEN},
        {CL_FIELD_DEVICE, CL_EVENT_TEXT_MAX_LEN},
        {CL_FIELD_USER_AGENT, CL_EVENT_USER_AGENT_MAX_LEN},
    };
    for (size_t i = 0; i < CL_ARRAY_LEN(optional_texts); i++) {
        cl_event_field_t f = optional_texts[i].field;
        if (take_optional_string(parser, root, f, optional_texts[i].max_len, &x->text[f], reason) !=
            CL_OK)
            return CL_ERR;
    }
    return take_time_spent(parser, root, x, reason);
}

/* ---- building the event ----------------------------------------------- */

static char *copy_text(char **w, const char *s, size_t len)
{
    char *start = *w;
    memcpy(start, s, len);
    start[len] = '\0';
    *w = start + len + 1;
    return start;
}

/* Copy everything into one allocation. The row key comes first; when it is
 * "e:" + event_id, event_id points just past the prefix instead of being
 * stored twice. */
static void build_event(const fields_t *x, const char *topic, int32_t partition, int64_t offset,
                        cl_event_t *ev)
{
    const text_t *id = &x->text[CL_FIELD_EVENT_ID];
    size_t topic_len = strlen(topic);
    char position[40] = ""; /* ":<partition>:<offset>", at most 33 bytes */
    size_t position_len = 0;
    if (id->ptr == NULL)
        position_len =
            (size_t)snprintf(position, sizeof position, ":%" PRId32 ":%" PRId64, partition, offset);

    size_t key_len = id->ptr != NULL ? 2 + id->len : 2 + topic_len + position_len;
    size_t size = key_len + 1 + topic_len + 1;
    for (int f = CL_FIELD_USER_ID; f < CL_FIELD_COUNT; f++) {
        if (x->text[f].ptr != NULL)
            size += x->text[f].len + 1;
    }

    char *w = cl_xmalloc(size);
    ev->storage = w;
    ev->row_key = w;
    ev->row_key_len = key_len;
    if (id->ptr != NULL) {
        memcpy(w, "e:", 2);
        ev->event_id = w + 2;
        memcpy(w + 2, id->ptr, id->len);
    } else {
        memcpy(w, "k:", 2);
        memcpy(w + 2, topic, topic_len);
        memcpy(w + 2 + topic_len, position, position_len);
    }
    w[key_len] = '\0';
    w += key_len + 1;

    const char **slots[CL_FIELD_COUNT] = {
        [CL_FIELD_USER_ID] = &ev->user_id,
        [CL_FIELD_URL] = &ev->url,
        [CL_FIELD_CITY] = &ev->city,
        [CL_FIELD_BROWSER] = &ev->browser,
        [CL_FIELD_OS] = &ev->os,
        [CL_FIELD_DEVICE] = &ev->device,
        [CL_FIELD_USER_AGENT] = &ev->user_agent,
    };
    for (int f = CL_FIELD_USER_ID; f < CL_FIELD_COUNT; f++) {
        if (slots[f] != NULL && x->text[f].ptr != NULL)
            *slots[f] = copy_text(&w, x->text[f].ptr, x->text[f].len);
    }
    ev->url_len = x->text[CL_FIELD_URL].len;
    ev->topic = copy_text(&w, topic, topic_len);
    ev->partition = partition;
    ev->offset = offset;
    ev->ts_ms = x->ts_ms;
    ev->time_spent_ms = x->time_spent_ms;
    memcpy(ev->country, x->country, sizeof ev->country);
}

/* ---- public entry points ---------------------------------------------- */

int cl_event_parser_new(const char *const pointers[CL_FIELD_COUNT], size_t max_bytes,
                        cl_event_parser_t **out, char err[CL_ERR_LEN])
{
    if (max_bytes == 0 || max_bytes > (size_t)INT32_MAX - 1)
        return cl_errorf(err, "maximum payload size %zu is outside 1..%d", max_bytes,
                         INT32_MAX - 1);

    cl_event_parser_t *parser = cl_xcalloc(1, sizeof *parser);
    parser->max_bytes = max_bytes;
    for (int f = 0; f < CL_FIELD_COUNT; f++) {
        char fallback[64];
        const char *p = pointers != NULL ? pointers[f] : NULL;
        if (p == NULL) {
            snprintf(fallback, sizeof fallback, "/%s", field_names[f]);
            p = fallback;
        }
        char why[CL_ERR_LEN];
        if (p[0] == '\0' || cl_json_pointer_compile(p, &parser->pointers[f], why) != CL_OK) {
            if (p[0] == '\0')
                snprintf(why, sizeof why, "the empty JSON Pointer names the whole document");
            cl_event_parser_free(parser);
            return cl_errorf(err, "mapping for %s: %s", field_names[f], why);
        }
    }
    parser->tokener = json_tokener_new_ex(JSON_TOKENER_DEFAULT_DEPTH);
    if (parser->tokener == NULL)
        cl_panic("out of memory creating a JSON tokener");
    json_tokener_set_flags(parser->tokener, JSON_TOKENER_STRICT);
    *out = parser;
    return CL_OK;
}

void cl_event_parser_free(cl_event_parser_t *parser)
{
    if (parser == NULL)
        return;
    for (int f = 0; f < CL_FIELD_COUNT; f++)
        cl_json_pointer_free(parser->pointers[f]);
    if (parser->tokener != NULL)
        json_tokener_free(parser->tokener);
    free(parser);
}

int cl_event_parse(cl_event_parser_t *parser, const void *payload, size_t len, const char *topic,
                   int32_t partition, int64_t offset, cl_event_t *ev, char reason[CL_ERR_LEN])
{
    memset(ev, 0, sizeof *ev);
    if (payload == NULL || len == 0)
        return cl_errorf(reason, "empty payload");
    if (len > parser->max_bytes)
        return cl_errorf(reason, "payload is %zu bytes, over the limit of %zu", len,
                         parser->max_bytes);
    size_t bad;
    if (cl_utf8_validate(payload, len, &bad) != CL_OK)
        return cl_errorf(reason, "not valid UTF-8 at byte %zu: %s", bad,
                         cl_utf8_problem(payload, len, bad));

    struct json_object *root = NULL;
    if (parse_object(parser, payload, len, &root, reason) != CL_OK)
        return CL_ERR;
    fields_t x;
    int rc = take_fields(parser, root, &x, reason);
    if (rc == CL_OK)
        build_event(&x, topic, partition, offset, ev);
    json_object_put(root);
    return rc;
}

void cl_event_clear(cl_event_t *ev)
{
    free(ev->storage);
    memset(ev, 0, sizeof *ev);
}

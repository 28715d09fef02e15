/* Structured logger: one line per record on stderr, logfmt or JSON.
 * The whole line is built in memory and written with one write(2) so that
 * records from clickloop and from librdkafka (routed through the loop) never
 * interleave. */
#include "clickloop/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include "clickloop/buf.h"
#include "clickloop/common.h"

static cl_log_level_t g_level = CL_LOG_INFO;
static cl_log_format_t g_format = CL_LOG_FORMAT_LOGFMT;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

static const char *level_name(cl_log_level_t level)
{
    return (unsigned)level < CL_ARRAY_LEN(level_names) ? level_names[level] : "unknown";
}

void cl_log_set_level(cl_log_level_t level)
{
    g_level = level;
}
void cl_log_set_format(cl_log_format_t format)
{
    g_format = format;
}

/* Escape for a double-quoted value; the same rules serve logfmt and JSON. */
static void append_quoted(cl_buf_t *b, const char *s)
{
    cl_buf_append_char(b, '"');
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '"':
            cl_buf_append_str(b, "\\\"");
            break;
        case '\\':
            cl_buf_append_str(b, "\\\\");
            break;
        case '\n':
            cl_buf_append_str(b, "\\n");
            break;
        case '\r':
            cl_buf_append_str(b, "\\r");
            break;
        case '\t':
            cl_buf_append_str(b, "\\t");
            break;
        default:
            if (*p < 0x20)
                cl_buf_appendf(b, "\\u%04x", *p);
            else
                cl_buf_append_char(b, (char)*p);
        }
    }
    cl_buf_append_char(b, '"');
}

void cl_log(cl_log_level_t level, const char *module, const char *fmt, ...)
{
    if (level < g_level)
        return;

    char msg[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);

    int64_t now = cl_wall_ms();
    time_t secs = (time_t)(now / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    char ts[64];
    snprintf(ts, sizeof ts, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(now % 1000));

    cl_buf_t b;
    cl_buf_init(&b);
    if (g_format == CL_LOG_FORMAT_JSON) {
        cl_buf_appendf(&b, "{\"ts\":\"%s\",\"level\":\"%s\",\"module\":", ts, level_name(level));
        append_quoted(&b, module);
        cl_buf_append_str(&b, ",\"msg\":");
        append_quoted(&b, msg);
        cl_buf_append_str(&b, "}\n");
    } else {
        cl_buf_appendf(&b, "ts=%s level=%s module=%s msg=", ts, level_name(level), module);
        append_quoted(&b, msg);
        cl_buf_append_char(&b, '\n');
    }
    ssize_t off = 0;
    while ((size_t)off < b.len) {
        ssize_t n = write(STDERR_FILENO, b.data + off, b.len - (size_t)off);
        if (n <= 0)
            break;
        off += n;
    }
    cl_buf_free(&b);
}

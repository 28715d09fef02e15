/* A growable byte buffer for building SQL text, NDJSON bodies and log lines.
 * The buffer always keeps a terminating NUL after `len` bytes, so `data` can be
 * passed to APIs that want a C string. */
#ifndef CLICKLOOP_BUF_H
#define CLICKLOOP_BUF_H

#include <stdarg.h>
#include <stddef.h>

typedef struct cl_buf_s {
    char *data;
    size_t len;
    size_t cap;
} cl_buf_t;

void cl_buf_init(cl_buf_t *b);
void cl_buf_free(cl_buf_t *b);
/* Forget the contents but keep the allocation, for reuse. */
void cl_buf_reset(cl_buf_t *b);
/* Make room for at least `extra` more bytes. */
void cl_buf_reserve(cl_buf_t *b, size_t extra);
void cl_buf_append(cl_buf_t *b, const void *data, size_t len);
void cl_buf_append_str(cl_buf_t *b, const char *s);
void cl_buf_append_char(cl_buf_t *b, char c);
void cl_buf_appendf(cl_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void cl_buf_vappendf(cl_buf_t *b, const char *fmt, va_list ap);
/* Hand the contents to the caller (who frees them) and reset the buffer. */
char *cl_buf_steal(cl_buf_t *b, size_t *len);

#endif

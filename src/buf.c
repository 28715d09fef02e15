/* Growable byte buffer; see include/clickloop/buf.h. */
#include "clickloop/buf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clickloop/common.h"

void cl_buf_init(cl_buf_t *b)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

void cl_buf_free(cl_buf_t *b)
{
    free(b->data);
    cl_buf_init(b);
}

void cl_buf_reset(cl_buf_t *b)
{
    b->len = 0;
    if (b->data != NULL)
        b->data[0] = '\0';
}

void cl_buf_reserve(cl_buf_t *b, size_t extra)
{
    size_t need = b->len + extra + 1; /* + NUL */
    if (need > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < need)
            cap *= 2;
        b->data = cl_xrealloc(b->data, cap);
        b->cap = cap;
    }
    /* A fresh allocation must read as "" too. */
    b->data[b->len] = '\0';
}

void cl_buf_append(cl_buf_t *b, const void *data, size_t len)
{
    cl_buf_reserve(b, len);
    if (len > 0)
        memcpy(b->data + b->len, data, len);
    b->len += len;
    b->data[b->len] = '\0';
}

void cl_buf_append_str(cl_buf_t *b, const char *s)
{
    cl_buf_append(b, s, strlen(s));
}

void cl_buf_append_char(cl_buf_t *b, char c)
{
    cl_buf_append(b, &c, 1);
}

void cl_buf_vappendf(cl_buf_t *b, const char *fmt, va_list ap)
{
    /* Most pieces are short: format into the stack first, and only when that
     * is too small measure and format again in place. */
    char small[256];
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(small, sizeof small, fmt, ap2);
    va_end(ap2);
    if (n < 0)
        return;
    if ((size_t)n < sizeof small) {
        cl_buf_append(b, small, (size_t)n);
        return;
    }
    cl_buf_reserve(b, (size_t)n);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    b->len += (size_t)n;
}

void cl_buf_appendf(cl_buf_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    cl_buf_vappendf(b, fmt, ap);
    va_end(ap);
}

char *cl_buf_steal(cl_buf_t *b, size_t *len)
{
    if (b->data == NULL)
        cl_buf_reserve(b, 0);
    char *p = b->data;
    if (len != NULL)
        *len = b->len;
    cl_buf_init(b);
    return p;
}

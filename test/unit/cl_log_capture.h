/* Reading what a module logged, for unit tests of modules that log their
 * own events (log.h): stderr is redirected into a temporary file between
 * cl_log_capture_start() and cl_log_capture_end(), and the tests count the
 * lines they expect. Include after cl_test.h. */
#ifndef CL_LOG_CAPTURE_H
#define CL_LOG_CAPTURE_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "clickloop/common.h"

typedef struct {
    FILE *file;
    int saved_stderr;
    int failures_at_start; /* cl_test_failed_asserts when the capture began */
} cl_log_capture_t;

static inline void cl_log_capture_start(cl_log_capture_t *c)
{
    c->failures_at_start = cl_test_failed_asserts;
    c->file = tmpfile();
    if (c->file == NULL) {
        perror("tmpfile");
        exit(2);
    }
    fflush(stderr);
    c->saved_stderr = dup(STDERR_FILENO);
    dup2(fileno(c->file), STDERR_FILENO);
}

/* Everything logged so far, NUL-terminated; the caller frees it. */
static inline char *cl_log_capture_text(const cl_log_capture_t *c)
{
    struct stat st;
    fstat(fileno(c->file), &st);
    char *text = cl_xmalloc((size_t)st.st_size + 1);
    ssize_t n = pread(fileno(c->file), text, (size_t)st.st_size, 0);
    text[n > 0 ? n : 0] = '\0';
    return text;
}

/* Occurrences of `needle` in the log so far. */
static inline unsigned int cl_log_capture_count(const cl_log_capture_t *c, const char *needle)
{
    char *text = cl_log_capture_text(c);
    unsigned int n = 0;
    for (const char *p = strstr(text, needle); p != NULL; p = strstr(p + 1, needle))
        n++;
    free(text);
    return n;
}

/* Give stderr back; show what was captured if an assertion failed meanwhile
 * (its message went into the capture too). */
static inline void cl_log_capture_end(cl_log_capture_t *c)
{
    char *text = cl_log_capture_text(c);
    fflush(stderr);
    dup2(c->saved_stderr, STDERR_FILENO);
    close(c->saved_stderr);
    fclose(c->file);
    if (cl_test_failed_asserts != c->failures_at_start)
        fputs(text, stderr);
    free(text);
}

#endif

/* Levelled, structured log lines on stderr, one record per line, as logfmt or
 * JSON. Only main and this module decide to print: other modules return errors
 * to their caller, which logs them with its module name.
 *
 * Never pass secrets (passwords, API keys, SASL credentials) to the logger:
 * nothing here can recognise them. */
#ifndef CLICKLOOP_LOG_H
#define CLICKLOOP_LOG_H

typedef enum {
    CL_LOG_DEBUG = 0,
    CL_LOG_INFO,
    CL_LOG_WARN,
    CL_LOG_ERROR,
} cl_log_level_t;

typedef enum {
    CL_LOG_FORMAT_LOGFMT = 0,
    CL_LOG_FORMAT_JSON,
} cl_log_format_t;

/* Parse "debug", "info", "warn", "error"; returns 0 or CL_ERR. */
int cl_log_level_parse(const char *name, cl_log_level_t *out);
/* Parse "logfmt", "json"; returns 0 or CL_ERR. */
int cl_log_format_parse(const char *name, cl_log_format_t *out);
const char *cl_log_level_name(cl_log_level_t level);

void cl_log_set_level(cl_log_level_t level);
void cl_log_set_format(cl_log_format_t format);
cl_log_level_t cl_log_get_level(void);

/* Write one record: level, module (e.g. "kafka"), message. */
void cl_log(cl_log_level_t level, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define cl_log_debug(module, ...) cl_log(CL_LOG_DEBUG, module, __VA_ARGS__)
#define cl_log_info(module, ...) cl_log(CL_LOG_INFO, module, __VA_ARGS__)
#define cl_log_warn(module, ...) cl_log(CL_LOG_WARN, module, __VA_ARGS__)
#define cl_log_error(module, ...) cl_log(CL_LOG_ERROR, module, __VA_ARGS__)

#endif

/* Levelled, structured log lines on stderr, one record per line, as logfmt or
 * JSON.
 *
 * Who logs (one policy for every module):
 * - Pure modules never log: config, event, es_doc, es_bulk, the SQL
 *   builders, offsets, metrics, the reload planner and the small helpers
 *   (buf, utf8, json_pointer, sha256, isolate, common). They return an error
 *   code and, where a person will read it, a sentence in the caller's
 *   `char err[CL_ERR_LEN]`.
 * - A module that runs an activity of its own on the loop (the Kafka
 *   source, the pipeline, the store, the MariaDB connection and pool, the
 *   Elasticsearch sink, the admin listener, the periodic jobs: aggregator,
 *   retention, indexer) logs what happens in it itself, under its component
 *   name ("kafka", "ingest", "indexer"...), once per change of state: "lost
 *   the connection" and "reconnected", not every retry in between. Through
 *   callbacks it reports to its owner only what the owner must act on: a
 *   close completed, a run's result for telemetry.
 * - The application (main and the app module) logs the lifecycle only:
 *   start, stop, reload, restart.
 * Nothing else writes to stderr; an impossible state aborts through
 * cl_panic (common.h).
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

/* Records below `level` are dropped; the configuration (log.level,
 * log.format) sets both at start and on reload. */
void cl_log_set_level(cl_log_level_t level);
void cl_log_set_format(cl_log_format_t format);

/* Write one record: level, module (e.g. "kafka"), message. */
void cl_log(cl_log_level_t level, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define cl_log_debug(module, ...) cl_log(CL_LOG_DEBUG, module, __VA_ARGS__)
#define cl_log_info(module, ...) cl_log(CL_LOG_INFO, module, __VA_ARGS__)
#define cl_log_warn(module, ...) cl_log(CL_LOG_WARN, module, __VA_ARGS__)
#define cl_log_error(module, ...) cl_log(CL_LOG_ERROR, module, __VA_ARGS__)

#endif

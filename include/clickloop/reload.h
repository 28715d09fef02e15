/* reload: what a new configuration changes in a running clickloop, and how
 * each change is applied (SIGHUP). The application carries the plan out; the
 * rule of each setting lives beside it in config.c's field table.
 *
 * A setting is applied either in place (the running module takes the new
 * value: batch sizes, the MariaDB pool size (the ingest pool opens or closes
 * connections; no query is interrupted), log level, aggregation interval,
 * retention policy (switching retention on or off starts or stops its
 * runner), admin listener, Elasticsearch connection settings through a new
 * sink attached to the running indexer) or by restarting the parts that use
 * it: they are drained and closed, then created again from the new
 * configuration exactly as at start-up. Restarting ingest pauses
 * consumption, writes every batch in flight, closes the consumer (which
 * commits the stored offsets) and the pool, so that the new consumer resumes
 * exactly where the old one stopped: no event is lost or stored twice.
 *
 * cl_reload_plan() is pure. cl_reload_preflight() asks the libraries about
 * the settings that only they can judge (librdkafka properties), so that a
 * configuration they would refuse is rejected before anything stops. */
#ifndef CLICKLOOP_RELOAD_H
#define CLICKLOOP_RELOAD_H

#include <stdbool.h>
#include <stddef.h>

#include "clickloop/common.h"
#include "clickloop/config.h"

/* The parts that a configuration runs: ingest always, the aggregator while
 * aggregation is enabled, the indexer while it is enabled and elasticsearch
 * is configured, retention while raw_days > 0. */
unsigned cl_reload_parts_wanted(const cl_config_t *config);

/* Short names for logs, "ingest" (Kafka consumer and MariaDB pool),
 * "aggregator", "indexer" (with its Elasticsearch sink), "retention", joined
 * with ", " into out (always NUL-terminated). */
void cl_reload_describe_parts(unsigned parts, char *out, size_t size);

typedef struct cl_reload_plan_s {
    unsigned restart;          /* parts to stop and create again (CL_PART_*) */
    bool log;                  /* log.level / log.format: set in place */
    bool ingest_params;        /* batch sizes, delay, max in flight, event-time window:
                                  cl_pipeline_set_params */
    bool pool_size;            /* mariadb.pool_size: cl_db_pool_resize of the ingest pool */
    bool aggregation_interval; /* cl_aggregator_set_interval */
    bool sink;                 /* Elasticsearch connection settings: a new sink */
    bool admin;                /* admin.listen: the listener moves */
    bool retention; /* retention policy: cl_retention_set_policy, or start/stop the runner */
    int changes;    /* settings that differ */
} cl_reload_plan_t;

/* Called once per changed setting, in cl_config_diff order, after the whole
 * plan is known: its name and the parts whose restart applies it (0: applied
 * in place; a setting that could change in place reports the restart of its
 * part when another setting restarts that part). */
typedef void (*cl_reload_change_cb)(void *arg, const char *name, unsigned restart);

/* Compare two valid configurations and fill *plan; cb may be NULL. Each
 * changed setting is planned by its reload rule, kept beside it in the
 * configuration's field table (config.h: cl_config_reload_rule_t). Parts
 * running in neither configuration are not restarted: a change of a setting
 * only they use is applied in place (it takes effect when they start). */
void cl_reload_plan(const cl_config_t *old, const cl_config_t *next, cl_reload_plan_t *plan,
                    cl_reload_change_cb cb, void *arg);

/* Check what only the libraries can: librdkafka's verdict on kafka.brokers,
 * kafka.group_id and every kafka.properties entry (the values of secret ones
 * never appear in a message), the Elasticsearch sink parameters, the
 * aggregation spec and the ingest mapping. Calls problem() once per problem
 * with a sentence naming the setting; returns the number of problems. */
int cl_reload_preflight(const cl_config_t *config, void (*problem)(void *arg, const char *message),
                        void *arg);

#endif

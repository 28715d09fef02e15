/* Telemetry: clickloop's metric families, and the collector that copies the
 * modules' own statistics into them right before each /metrics render.
 *
 * The modules keep plain stats structs and know nothing about metrics; this
 * module is the one place that maps them to Prometheus names. Sources are
 * borrowed and may be NULL (not created yet, or already closed): main updates
 * them with cl_telemetry_set_sources() as modules come and go.
 *
 * A module that a reload restarts comes back with its own counts at zero:
 * main hands it to cl_telemetry_retire() right before closing it, and its
 * final counts are kept and added to those of its successor, so that every
 * counter keeps growing over the life of the process. */
#ifndef CLICKLOOP_TELEMETRY_H
#define CLICKLOOP_TELEMETRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "clickloop/aggregate.h"
#include "clickloop/db_pool.h"
#include "clickloop/es_sink.h"
#include "clickloop/indexer.h"
#include "clickloop/kafka_source.h"
#include "clickloop/metrics.h"
#include "clickloop/pipeline.h"
#include "clickloop/retention.h"
#include "clickloop/store.h"

typedef struct cl_telemetry_s cl_telemetry_t;

typedef struct cl_telemetry_sources_s {
    cl_pipeline_t *pipeline;
    cl_kafka_source_t *source;
    cl_db_pool_t *pool;
    cl_store_t *store;
    cl_aggregator_t *aggregator;
    cl_es_sink_t *sink;
    cl_indexer_t *indexer;
    cl_retention_t *retention;
} cl_telemetry_sources_t;

/* Register every family in `m` and a collector; `m` must outlive it. */
cl_telemetry_t *cl_telemetry_new(cl_metrics_t *m);
void cl_telemetry_set_sources(cl_telemetry_t *t, const cl_telemetry_sources_t *sources);
/* Read the counts of the non-NULL modules in `going` one last time, keep them
 * as a base for their successors, and stop reading them. Call it right before
 * closing a module that a restart replaces; afterwards pass NULL for it to
 * cl_telemetry_set_sources() until its successor exists. */
void cl_telemetry_retire(cl_telemetry_t *t, const cl_telemetry_sources_t *going);
/* Pipeline hook (cl_pipeline_params_t.on_batch_committed) with t as arg. */
void cl_telemetry_batch_committed(void *t, size_t events, uint64_t latency_ms);
/* An aggregation run finished (for the duration histogram). */
void cl_telemetry_aggregation_run(cl_telemetry_t *t, const cl_aggregator_run_result_t *r);
/* A SIGHUP reload finished, applied or rejected. */
void cl_telemetry_config_reload(cl_telemetry_t *t, bool ok);
/* Ingest restarted after a fatal consumer error. */
void cl_telemetry_ingest_restart(cl_telemetry_t *t);
/* Remove the collector and free. */
void cl_telemetry_free(cl_telemetry_t *t);

#endif

/* Telemetry: metric families and the stats collector; see telemetry.h. */
#include "clickloop/telemetry.h"

#include <stdio.h>
#include <stdlib.h>

#include "clickloop/common.h"

struct cl_telemetry_s {
    cl_metrics_t *metrics;
    cl_telemetry_sources_t src;
    cl_counter_t *consumed, *stored, *rejected, *batches, *batch_failures, *batch_retries;
    cl_counter_t *reconnects, *reloads;
    cl_gauge_t *in_flight, *paused, *assigned, *lag, *dependency_up;
    cl_histogram_t *batch_latency, *batch_size;
    cl_counter_t *agg_runs, *agg_windows, *agg_rows, *agg_events, *es_docs, *es_requests;
    cl_gauge_t *es_pending;
    cl_histogram_t *agg_duration;
};

static const double latency_bounds[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                        0.5,   1,    2.5,   5,    10,  30};
static const double duration_bounds[] = {0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300};
static const double size_bounds[] = {1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000};

static void collect(void *arg, cl_metrics_t *m);

cl_telemetry_t *cl_telemetry_new(cl_metrics_t *m)
{
    cl_telemetry_t *t = cl_xcalloc(1, sizeof *t);
    t->metrics = m;
    t->consumed = cl_metrics_counter(m, "clickloop_events_consumed_total",
                                     "Kafka messages received by the ingest pipeline.", NULL);
    t->stored = cl_metrics_counter(m, "clickloop_events_stored_total",
                                   "Valid events in batches committed to MariaDB (redeliveries "
                                   "included).",
                                   NULL);
    t->rejected = cl_metrics_counter(m, "clickloop_events_rejected_total",
                                     "Malformed messages recorded in rejected_events.", NULL);
    t->batches = cl_metrics_counter(m, "clickloop_batches_total",
                                    "Ingest batches committed to MariaDB.", NULL);
    t->batch_failures = cl_metrics_counter(m, "clickloop_batch_failures_total",
                                           "Ingest batches that failed with a permanent error "
                                           "(retried later).",
                                           NULL);
    t->batch_retries = cl_metrics_counter(m, "clickloop_batch_retries_total",
                                          "Ingest batch attempts after a transient failure.",
                                          NULL);
    t->reconnects = cl_metrics_counter(m, "clickloop_reconnects_total",
                                       "Connection attempts after a failure or a lost connection.",
                                       "dependency", NULL);
    t->reloads = cl_metrics_counter(m, "clickloop_config_reloads_total",
                                    "SIGHUP configuration reloads by result.", "result", NULL);
    t->in_flight = cl_metrics_gauge(m, "clickloop_events_in_flight",
                                    "Events buffered or being written to MariaDB.", NULL);
    t->paused = cl_metrics_gauge(m, "clickloop_consumption_paused",
                                 "1 while consumption is paused by backpressure or shutdown.",
                                 NULL);
    t->assigned = cl_metrics_gauge(m, "clickloop_partitions_assigned",
                                   "Kafka partitions assigned to this instance.", NULL);
    t->lag = cl_metrics_gauge(m, "clickloop_consumer_lag",
                              "Messages behind the high watermark, per assigned partition.",
                              "topic", "partition", NULL);
    t->dependency_up = cl_metrics_gauge(m, "clickloop_dependency_connections",
                                        "Open connections per dependency.", "dependency", NULL);
    t->batch_latency = cl_metrics_histogram(
        m, "clickloop_batch_latency_seconds",
        "Time from a batch's first message to its commit in MariaDB.", latency_bounds,
        CL_ARRAY_LEN(latency_bounds), NULL);
    t->batch_size = cl_metrics_histogram(m, "clickloop_batch_events",
                                         "Messages per committed batch.", size_bounds,
                                         CL_ARRAY_LEN(size_bounds), NULL);
    t->agg_runs = cl_metrics_counter(m, "clickloop_aggregation_runs_total",
                                     "Aggregation runs by result (ok, failed, skipped_locked: "
                                     "another instance aggregates, skipped_busy: a run was still "
                                     "going).",
                                     "result", NULL);
    t->agg_windows = cl_metrics_counter(m, "clickloop_aggregation_windows_recomputed_total",
                                        "Windows recomputed by aggregation runs.", NULL);
    t->agg_rows = cl_metrics_counter(m, "clickloop_aggregation_rows_changed_total",
                                     "agg_stats rows inserted or changed by aggregation runs.",
                                     NULL);
    t->agg_events = cl_metrics_counter(m, "clickloop_aggregation_events_claimed_total",
                                       "New events taken up by aggregation runs.", NULL);
    t->agg_duration = cl_metrics_histogram(m, "clickloop_aggregation_run_duration_seconds",
                                           "Duration of aggregation runs.", duration_bounds,
                                           CL_ARRAY_LEN(duration_bounds), NULL);
    t->es_docs = cl_metrics_counter(m, "clickloop_index_documents_total",
                                    "Aggregate documents by outcome: indexed, superseded (the "
                                    "index held a newer version), retried (per attempt), failed "
                                    "(refused for good, recorded in agg_stats.index_error).",
                                    "outcome", NULL);
    t->es_requests = cl_metrics_counter(m, "clickloop_index_bulk_requests_total",
                                        "Bulk requests by result.", "result", NULL);
    t->es_pending = cl_metrics_gauge(m, "clickloop_index_documents_pending",
                                     "Documents waiting in the sink or in flight.", NULL);
    cl_counter_add(t->reloads, CL_LABELS("ok"), 0);
    cl_counter_add(t->reloads, CL_LABELS("failed"), 0);
    cl_metrics_add_collector(m, collect, t);
    return t;
}

void cl_telemetry_set_sources(cl_telemetry_t *t, const cl_telemetry_sources_t *sources)
{
    t->src = *sources;
}

void cl_telemetry_batch_committed(void *arg, size_t events, uint64_t latency_ms)
{
    cl_telemetry_t *t = arg;
    cl_histogram_observe(t->batch_latency, NULL, (double)latency_ms / 1000.0);
    cl_histogram_observe(t->batch_size, NULL, (double)events);
}

void cl_telemetry_aggregation_run(cl_telemetry_t *t, const cl_aggregator_run_result_t *r)
{
    if (r->status == CL_OK && !r->skipped_locked)
        cl_histogram_observe(t->agg_duration, NULL, (double)r->duration_ms / 1000.0);
}

void cl_telemetry_config_reload(cl_telemetry_t *t, bool ok)
{
    cl_counter_add(t->reloads, CL_LABELS(ok ? "ok" : "failed"), 1);
}

static void set_lag(void *arg, const char *topic, int32_t partition, int64_t lag)
{
    cl_telemetry_t *t = arg;
    char part[16];
    snprintf(part, sizeof part, "%d", (int)partition);
    cl_gauge_set(t->lag, CL_LABELS(topic, part), (double)lag);
}

static void collect(void *arg, cl_metrics_t *m)
{
    CL_UNUSED(m);
    cl_telemetry_t *t = arg;
    if (t->src.pipeline != NULL) {
        cl_pipeline_stats_t st;
        cl_pipeline_get_stats(t->src.pipeline, &st);
        cl_counter_set(t->consumed, NULL, (double)st.consumed);
        cl_counter_set(t->stored, NULL, (double)st.stored);
        cl_counter_set(t->rejected, NULL, (double)st.rejected);
        cl_counter_set(t->batches, NULL, (double)st.batches);
        cl_counter_set(t->batch_failures, NULL, (double)st.batch_failures);
        cl_gauge_set(t->in_flight, NULL, (double)st.in_flight);
        cl_gauge_set(t->paused, NULL, st.paused ? 1 : 0);
    }
    /* Partitions come and go with rebalances: rebuild the series each time. */
    cl_gauge_clear(t->lag);
    if (t->src.source != NULL) {
        cl_gauge_set(t->assigned, NULL, cl_kafka_source_assigned_count(t->src.source));
        cl_kafka_source_foreach_lag(t->src.source, set_lag, t);
    } else {
        cl_gauge_set(t->assigned, NULL, 0);
    }
    if (t->src.pool != NULL) {
        cl_db_pool_stats_t ps;
        cl_db_pool_stats(t->src.pool, &ps);
        cl_counter_set(t->reconnects, CL_LABELS("mariadb"), (double)ps.reconnect_attempts);
        cl_gauge_set(t->dependency_up, CL_LABELS("mariadb"), ps.connected);
    }
    if (t->src.aggregator != NULL) {
        cl_aggregator_stats_t as;
        cl_aggregator_stats(t->src.aggregator, &as);
        cl_counter_set(t->agg_runs, CL_LABELS("ok"), (double)as.runs);
        cl_counter_set(t->agg_runs, CL_LABELS("failed"), (double)as.runs_failed);
        cl_counter_set(t->agg_runs, CL_LABELS("skipped_locked"), (double)as.skipped_locked);
        cl_counter_set(t->agg_runs, CL_LABELS("skipped_busy"), (double)as.skipped_busy);
        cl_counter_set(t->agg_windows, NULL, (double)as.windows_recomputed);
        cl_counter_set(t->agg_rows, NULL, (double)as.rows_changed);
        cl_counter_set(t->agg_events, NULL, (double)as.events_claimed);
    }
    if (t->src.sink != NULL) {
        cl_es_sink_stats_t es;
        cl_es_sink_stats(t->src.sink, &es);
        cl_counter_set(t->es_docs, CL_LABELS("indexed"), (double)es.docs_indexed);
        cl_counter_set(t->es_docs, CL_LABELS("superseded"), (double)es.docs_superseded);
        cl_counter_set(t->es_docs, CL_LABELS("retried"), (double)es.docs_retried);
        cl_counter_set(t->es_docs, CL_LABELS("failed"), (double)es.docs_failed);
        cl_counter_set(t->es_requests, CL_LABELS("ok"),
                       (double)(es.requests - es.request_failures));
        cl_counter_set(t->es_requests, CL_LABELS("failed"), (double)es.request_failures);
        cl_counter_set(t->reconnects, CL_LABELS("elasticsearch"), (double)es.node_failures);
        cl_gauge_set(t->dependency_up, CL_LABELS("elasticsearch"), (double)es.nodes_up);
        cl_gauge_set(t->es_pending, NULL, (double)es.docs_pending);
    }
    if (t->src.store != NULL) {
        cl_store_stats_t ss;
        cl_store_stats(t->src.store, &ss);
        cl_counter_set(t->batch_retries, NULL, (double)ss.batch_retries);
    }
}

void cl_telemetry_free(cl_telemetry_t *t)
{
    if (t == NULL)
        return;
    cl_metrics_remove_collector(t->metrics, collect, t);
    free(t);
}

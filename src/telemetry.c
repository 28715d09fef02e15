/* Telemetry: metric families and the stats collector; see telemetry.h. */
#include "clickloop/telemetry.h"

#include <stdio.h>
#include <stdlib.h>

#include "clickloop/common.h"

/* The counts of modules that a restart replaced. */
typedef struct {
    cl_pipeline_stats_t pipeline;
    uint64_t pool_reconnects;
    uint64_t store_retries;
    cl_aggregator_stats_t aggregator;
    cl_es_sink_stats_t sink;
    cl_retention_stats_t retention;
    cl_indexer_stats_t indexer;
    cl_kafka_source_stats_t source;
} retired_t;

struct cl_telemetry_s {
    cl_metrics_t *metrics;
    cl_telemetry_sources_t src;
    /* Sources that have ever been set (only compared with NULL, never read):
     * a module's series appear once it has existed. */
    cl_telemetry_sources_t seen;
    retired_t retired;
    cl_counter_t *consumed, *stored, *rejected, *batches, *batch_failures, *batch_retries;
    cl_counter_t *reconnects, *reloads, *ingest_restarts;
    cl_counter_t *offset_resets, *messages_skipped;
    cl_gauge_t *partitions_stopped;
    cl_gauge_t *in_flight, *in_flight_bytes, *paused, *assigned, *lag, *dependency_up;
    cl_histogram_t *batch_latency, *batch_size;
    cl_counter_t *agg_runs, *agg_windows, *agg_windows_skipped, *agg_rows, *agg_events;
    cl_counter_t *agg_isolated;
    cl_gauge_t *agg_failing, *agg_failures, *agg_claim_limit;
    cl_counter_t *es_docs, *es_requests;
    cl_gauge_t *es_pending;
    cl_histogram_t *agg_duration;
    cl_counter_t *retention_rows, *retention_runs;
    cl_counter_t *indexer_docs, *job_ticks_skipped;
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
                                          "Ingest batch attempts after a transient failure.", NULL);
    t->reconnects = cl_metrics_counter(m, "clickloop_reconnects_total",
                                       "Connection attempts after a failure or a lost connection.",
                                       "dependency", NULL);
    t->reloads = cl_metrics_counter(m, "clickloop_config_reloads_total",
                                    "SIGHUP configuration reloads by result.", "result", NULL);
    t->ingest_restarts = cl_metrics_counter(
        m, "clickloop_ingest_restarts_total",
        "Restarts of ingest from the committed offsets after a fatal Kafka consumer error.", NULL);
    t->offset_resets = cl_metrics_counter(
        m, "clickloop_kafka_offset_resets_total",
        "Committed offsets found no longer on the broker (out of range), by what followed: "
        "reset (auto.offset.reset earliest/latest) or stopped (auto.offset.reset=error).",
        "action", NULL);
    t->messages_skipped = cl_metrics_counter(
        m, "clickloop_kafka_messages_skipped_total",
        "Messages between an out-of-range committed offset and where consumption resumed: "
        "never stored.",
        NULL);
    t->partitions_stopped = cl_metrics_gauge(
        m, "clickloop_kafka_partitions_stopped",
        "Assigned partitions stopped by auto.offset.reset=error (their offset is out of range).",
        NULL);
    t->in_flight = cl_metrics_gauge(m, "clickloop_events_in_flight",
                                    "Events buffered or being written to MariaDB.", NULL);
    t->in_flight_bytes = cl_metrics_gauge(
        m, "clickloop_events_in_flight_bytes",
        "Bytes of the events in flight: their payloads and the SQL text built for them.", NULL);
    t->paused =
        cl_metrics_gauge(m, "clickloop_consumption_paused",
                         "1 while consumption is paused by backpressure or shutdown.", NULL);
    t->assigned = cl_metrics_gauge(m, "clickloop_partitions_assigned",
                                   "Kafka partitions assigned to this instance.", NULL);
    t->lag = cl_metrics_gauge(m, "clickloop_consumer_lag",
                              "Messages behind the high watermark, per assigned partition.",
                              "topic", "partition", NULL);
    t->dependency_up = cl_metrics_gauge(m, "clickloop_dependency_connections",
                                        "Open connections per dependency.", "dependency", NULL);
    t->batch_latency =
        cl_metrics_histogram(m, "clickloop_batch_latency_seconds",
                             "Time from a batch's first message to its commit in MariaDB.",
                             latency_bounds, CL_ARRAY_LEN(latency_bounds), NULL);
    t->batch_size =
        cl_metrics_histogram(m, "clickloop_batch_events", "Messages per committed batch.",
                             size_bounds, CL_ARRAY_LEN(size_bounds), NULL);
    t->agg_runs = cl_metrics_counter(m, "clickloop_aggregation_runs_total",
                                     "Aggregation runs by result (ok, failed, skipped_locked: "
                                     "another instance aggregates, skipped_busy: a run was still "
                                     "going).",
                                     "result", NULL);
    t->agg_windows = cl_metrics_counter(m, "clickloop_aggregation_windows_recomputed_total",
                                        "Windows recomputed by aggregation runs.", NULL);
    t->agg_windows_skipped = cl_metrics_counter(
        m, "clickloop_aggregation_windows_skipped_total",
        "Windows that aggregation runs left as they were, by reason (retention: the window "
        "starts before the retention cutoff, its aggregates are frozen).",
        "reason", NULL);
    t->agg_rows =
        cl_metrics_counter(m, "clickloop_aggregation_rows_changed_total",
                           "agg_stats rows inserted or changed by aggregation runs.", NULL);
    t->agg_events = cl_metrics_counter(m, "clickloop_aggregation_events_claimed_total",
                                       "New events taken up by aggregation runs.", NULL);
    t->agg_isolated = cl_metrics_counter(
        m, "clickloop_aggregation_isolated_total",
        "What aggregation runs set aside after it failed alone, by kind (event: held in "
        "agg_held with the error, never claimed again; mark: a marked window dropped).",
        "kind", NULL);
    t->agg_failing = cl_metrics_gauge(m, "clickloop_aggregation_failing",
                                      "1 while the last aggregation runs (3 or more in a row) "
                                      "failed.",
                                      NULL);
    t->agg_failures =
        cl_metrics_gauge(m, "clickloop_aggregation_consecutive_failures",
                         "Aggregation runs failed in a row (0 after a success).", NULL);
    t->agg_claim_limit = cl_metrics_gauge(m, "clickloop_aggregation_claim_limit",
                                          "Most events the next aggregation run claims (halved "
                                          "after failures on the data, to isolate them).",
                                          NULL);
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
    t->retention_rows = cl_metrics_counter(m, "clickloop_retention_rows_deleted_total",
                                           "Rows deleted by retention, by table.", "table", NULL);
    t->retention_runs =
        cl_metrics_counter(m, "clickloop_retention_runs_total",
                           "Retention runs by result (ok, failed).", "result", NULL);
    t->indexer_docs = cl_metrics_counter(
        m, "clickloop_indexer_documents_total",
        "Aggregate documents by what the indexer did with them (sent: handed to the sink, "
        "acknowledged: the indexed version recorded in agg_stats, failed: a refusal recorded "
        "in agg_stats.index_error).",
        "outcome", NULL);
    t->job_ticks_skipped = cl_metrics_counter(
        m, "clickloop_job_ticks_skipped_total",
        "Ticks of a periodic database job that found its previous run still going, by job "
        "(aggregation, retention, indexer).",
        "job", NULL);
    cl_counter_add(t->reloads, CL_LABELS("ok"), 0);
    cl_counter_add(t->reloads, CL_LABELS("failed"), 0);
    cl_counter_add(t->ingest_restarts, NULL, 0);
    cl_counter_add(t->offset_resets, CL_LABELS("reset"), 0);
    cl_counter_add(t->offset_resets, CL_LABELS("stopped"), 0);
    cl_counter_add(t->messages_skipped, NULL, 0);
    cl_metrics_add_collector(m, collect, t);
    return t;
}

#define SEEN(field)                                                                                \
    do {                                                                                           \
        if (sources->field != NULL)                                                                \
            t->seen.field = sources->field;                                                        \
    } while (0)

void cl_telemetry_set_sources(cl_telemetry_t *t, const cl_telemetry_sources_t *sources)
{
    t->src = *sources;
    SEEN(pipeline);
    SEEN(source);
    SEEN(pool);
    SEEN(store);
    SEEN(aggregator);
    SEEN(sink);
    SEEN(indexer);
    SEEN(retention);
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

void cl_telemetry_ingest_restart(cl_telemetry_t *t)
{
    cl_counter_add(t->ingest_restarts, NULL, 1);
}

static void set_lag(void *arg, const char *topic, int32_t partition, int64_t lag)
{
    cl_telemetry_t *t = arg;
    char part[16];
    snprintf(part, sizeof part, "%d", (int)partition);
    cl_gauge_set(t->lag, CL_LABELS(topic, part), (double)lag);
}

/* ---- counts: those of the live module plus those of the ones it replaced ---- */

static void add_pipeline(cl_pipeline_stats_t *to, const cl_pipeline_stats_t *from)
{
    to->consumed += from->consumed;
    to->stored += from->stored;
    to->rejected += from->rejected;
    to->batches += from->batches;
    to->batch_failures += from->batch_failures;
}

static void add_aggregator(cl_aggregator_stats_t *to, const cl_aggregator_stats_t *from)
{
    to->runs += from->runs;
    to->runs_failed += from->runs_failed;
    to->skipped_locked += from->skipped_locked;
    to->skipped_busy += from->skipped_busy;
    to->events_claimed += from->events_claimed;
    to->windows_recomputed += from->windows_recomputed;
    to->rows_changed += from->rows_changed;
    to->windows_frozen += from->windows_frozen;
    to->events_held += from->events_held;
    to->marks_dropped += from->marks_dropped;
}

static void add_sink(cl_es_sink_stats_t *to, const cl_es_sink_stats_t *from)
{
    to->requests += from->requests;
    to->request_failures += from->request_failures;
    to->docs_indexed += from->docs_indexed;
    to->docs_superseded += from->docs_superseded;
    to->docs_retried += from->docs_retried;
    to->docs_failed += from->docs_failed;
    to->node_failures += from->node_failures;
}

static void add_retention(cl_retention_stats_t *to, const cl_retention_stats_t *from)
{
    to->runs += from->runs;
    to->runs_failed += from->runs_failed;
    to->batches += from->batches;
    to->ticks_skipped += from->ticks_skipped;
    for (int i = 0; i < CL_RETENTION_TABLE_COUNT; i++)
        to->rows_deleted[i] += from->rows_deleted[i];
}

static void add_source(cl_kafka_source_stats_t *to, const cl_kafka_source_stats_t *from)
{
    to->offset_resets += from->offset_resets;
    to->messages_skipped += from->messages_skipped;
    to->partitions_stopped += from->partitions_stopped;
}

static void add_indexer(cl_indexer_stats_t *to, const cl_indexer_stats_t *from)
{
    to->docs_sent += from->docs_sent;
    to->docs_acked += from->docs_acked;
    to->docs_failed += from->docs_failed;
    to->ticks_skipped += from->ticks_skipped;
}

void cl_telemetry_retire(cl_telemetry_t *t, const cl_telemetry_sources_t *going)
{
    if (going->pipeline != NULL) {
        cl_pipeline_stats_t st;
        cl_pipeline_get_stats(going->pipeline, &st);
        add_pipeline(&t->retired.pipeline, &st);
        if (t->src.pipeline == going->pipeline)
            t->src.pipeline = NULL;
    }
    if (going->pool != NULL) {
        cl_db_pool_stats_t ps;
        cl_db_pool_stats(going->pool, &ps);
        t->retired.pool_reconnects += ps.reconnect_attempts;
        if (t->src.pool == going->pool)
            t->src.pool = NULL;
    }
    if (going->store != NULL) {
        cl_store_stats_t ss;
        cl_store_stats(going->store, &ss);
        t->retired.store_retries += ss.batch_retries;
        if (t->src.store == going->store)
            t->src.store = NULL;
    }
    if (going->aggregator != NULL) {
        cl_aggregator_stats_t as;
        cl_aggregator_stats(going->aggregator, &as);
        add_aggregator(&t->retired.aggregator, &as);
        if (t->src.aggregator == going->aggregator)
            t->src.aggregator = NULL;
    }
    if (going->sink != NULL) {
        cl_es_sink_stats_t es;
        cl_es_sink_stats(going->sink, &es);
        add_sink(&t->retired.sink, &es);
        if (t->src.sink == going->sink)
            t->src.sink = NULL;
    }
    if (going->retention != NULL) {
        cl_retention_stats_t rs;
        cl_retention_stats(going->retention, &rs);
        add_retention(&t->retired.retention, &rs);
        if (t->src.retention == going->retention)
            t->src.retention = NULL;
    }
    if (going->indexer != NULL) {
        cl_indexer_stats_t is;
        cl_indexer_stats(going->indexer, &is);
        add_indexer(&t->retired.indexer, &is);
        if (t->src.indexer == going->indexer)
            t->src.indexer = NULL;
    }
    if (going->source != NULL) {
        cl_kafka_source_stats_t ks;
        cl_kafka_source_stats(going->source, &ks);
        add_source(&t->retired.source, &ks);
        if (t->src.source == going->source)
            t->src.source = NULL;
    }
}

static void collect_pipeline(cl_telemetry_t *t)
{
    if (t->seen.pipeline == NULL)
        return;
    cl_pipeline_stats_t st = t->retired.pipeline;
    if (t->src.pipeline != NULL) {
        cl_pipeline_stats_t live;
        cl_pipeline_get_stats(t->src.pipeline, &live);
        add_pipeline(&st, &live);
        cl_gauge_set(t->in_flight, NULL, (double)live.in_flight);
        cl_gauge_set(t->in_flight_bytes, NULL, (double)live.in_flight_bytes);
        cl_gauge_set(t->paused, NULL, live.paused ? 1 : 0);
    }
    cl_counter_set(t->consumed, NULL, (double)st.consumed);
    cl_counter_set(t->stored, NULL, (double)st.stored);
    cl_counter_set(t->rejected, NULL, (double)st.rejected);
    cl_counter_set(t->batches, NULL, (double)st.batches);
    cl_counter_set(t->batch_failures, NULL, (double)st.batch_failures);
}

static void collect_aggregator(cl_telemetry_t *t)
{
    if (t->seen.aggregator == NULL)
        return;
    cl_aggregator_stats_t as = t->retired.aggregator;
    if (t->src.aggregator != NULL) {
        cl_aggregator_stats_t live;
        cl_aggregator_stats(t->src.aggregator, &live);
        add_aggregator(&as, &live);
    }
    cl_counter_set(t->agg_runs, CL_LABELS("ok"), (double)as.runs);
    cl_counter_set(t->agg_runs, CL_LABELS("failed"), (double)as.runs_failed);
    cl_counter_set(t->agg_runs, CL_LABELS("skipped_locked"), (double)as.skipped_locked);
    cl_counter_set(t->agg_runs, CL_LABELS("skipped_busy"), (double)as.skipped_busy);
    cl_counter_set(t->job_ticks_skipped, CL_LABELS("aggregation"), (double)as.skipped_busy);
    cl_counter_set(t->agg_windows, NULL, (double)as.windows_recomputed);
    cl_counter_set(t->agg_windows_skipped, CL_LABELS("retention"), (double)as.windows_frozen);
    cl_counter_set(t->agg_rows, NULL, (double)as.rows_changed);
    cl_counter_set(t->agg_events, NULL, (double)as.events_claimed);
    cl_counter_set(t->agg_isolated, CL_LABELS("event"), (double)as.events_held);
    cl_counter_set(t->agg_isolated, CL_LABELS("mark"), (double)as.marks_dropped);
    /* The state is the live aggregator's alone. */
    cl_aggregator_stats_t live = {0};
    if (t->src.aggregator != NULL)
        cl_aggregator_stats(t->src.aggregator, &live);
    cl_gauge_set(t->agg_failing, NULL, live.failing ? 1.0 : 0.0);
    cl_gauge_set(t->agg_failures, NULL, (double)live.consecutive_failures);
    cl_gauge_set(t->agg_claim_limit, NULL, (double)live.claim_limit);
}

static void collect_sink(cl_telemetry_t *t)
{
    if (t->seen.sink == NULL)
        return;
    cl_es_sink_stats_t es = t->retired.sink;
    if (t->src.sink != NULL) {
        cl_es_sink_stats_t live;
        cl_es_sink_stats(t->src.sink, &live);
        add_sink(&es, &live);
        cl_gauge_set(t->dependency_up, CL_LABELS("elasticsearch"), (double)live.nodes_up);
        cl_gauge_set(t->es_pending, NULL, (double)live.docs_pending);
    }
    cl_counter_set(t->es_docs, CL_LABELS("indexed"), (double)es.docs_indexed);
    cl_counter_set(t->es_docs, CL_LABELS("superseded"), (double)es.docs_superseded);
    cl_counter_set(t->es_docs, CL_LABELS("retried"), (double)es.docs_retried);
    cl_counter_set(t->es_docs, CL_LABELS("failed"), (double)es.docs_failed);
    cl_counter_set(t->es_requests, CL_LABELS("ok"), (double)(es.requests - es.request_failures));
    cl_counter_set(t->es_requests, CL_LABELS("failed"), (double)es.request_failures);
    cl_counter_set(t->reconnects, CL_LABELS("elasticsearch"), (double)es.node_failures);
}

static void collect_retention(cl_telemetry_t *t)
{
    if (t->seen.retention == NULL)
        return;
    cl_retention_stats_t rs = t->retired.retention;
    if (t->src.retention != NULL) {
        cl_retention_stats_t live;
        cl_retention_stats(t->src.retention, &live);
        add_retention(&rs, &live);
    }
    for (int i = 0; i < CL_RETENTION_TABLE_COUNT; i++)
        cl_counter_set(t->retention_rows, CL_LABELS(cl_retention_table_name(i)),
                       (double)rs.rows_deleted[i]);
    cl_counter_set(t->retention_runs, CL_LABELS("ok"), (double)rs.runs);
    cl_counter_set(t->retention_runs, CL_LABELS("failed"), (double)rs.runs_failed);
    cl_counter_set(t->job_ticks_skipped, CL_LABELS("retention"), (double)rs.ticks_skipped);
}

static void collect_indexer(cl_telemetry_t *t)
{
    if (t->seen.indexer == NULL)
        return;
    cl_indexer_stats_t is = t->retired.indexer;
    if (t->src.indexer != NULL) {
        cl_indexer_stats_t live;
        cl_indexer_stats(t->src.indexer, &live);
        add_indexer(&is, &live);
    }
    cl_counter_set(t->indexer_docs, CL_LABELS("sent"), (double)is.docs_sent);
    cl_counter_set(t->indexer_docs, CL_LABELS("acknowledged"), (double)is.docs_acked);
    cl_counter_set(t->indexer_docs, CL_LABELS("failed"), (double)is.docs_failed);
    cl_counter_set(t->job_ticks_skipped, CL_LABELS("indexer"), (double)is.ticks_skipped);
}

static void collect(void *arg, cl_metrics_t *m)
{
    CL_UNUSED(m);
    cl_telemetry_t *t = arg;
    collect_pipeline(t);
    /* Partitions come and go with rebalances: rebuild the series each time. */
    cl_gauge_clear(t->lag);
    cl_kafka_source_stats_t ks = t->retired.source;
    if (t->src.source != NULL) {
        cl_kafka_source_stats_t live;
        cl_kafka_source_stats(t->src.source, &live);
        add_source(&ks, &live);
        cl_gauge_set(t->assigned, NULL, cl_kafka_source_assigned_count(t->src.source));
        cl_gauge_set(t->partitions_stopped, NULL,
                     (double)cl_kafka_source_stopped(t->src.source, NULL, 0));
        cl_kafka_source_foreach_lag(t->src.source, set_lag, t);
    } else {
        cl_gauge_set(t->assigned, NULL, 0);
        cl_gauge_set(t->partitions_stopped, NULL, 0);
    }
    cl_counter_set(t->offset_resets, CL_LABELS("reset"), (double)ks.offset_resets);
    cl_counter_set(t->offset_resets, CL_LABELS("stopped"), (double)ks.partitions_stopped);
    cl_counter_set(t->messages_skipped, NULL, (double)ks.messages_skipped);
    if (t->seen.pool != NULL) {
        uint64_t reconnects = t->retired.pool_reconnects;
        if (t->src.pool != NULL) {
            cl_db_pool_stats_t ps;
            cl_db_pool_stats(t->src.pool, &ps);
            reconnects += ps.reconnect_attempts;
            cl_gauge_set(t->dependency_up, CL_LABELS("mariadb"), ps.connected);
        }
        cl_counter_set(t->reconnects, CL_LABELS("mariadb"), (double)reconnects);
    }
    collect_aggregator(t);
    collect_sink(t);
    if (t->seen.store != NULL) {
        uint64_t retries = t->retired.store_retries;
        if (t->src.store != NULL) {
            cl_store_stats_t ss;
            cl_store_stats(t->src.store, &ss);
            retries += ss.batch_retries;
        }
        cl_counter_set(t->batch_retries, NULL, (double)retries);
    }
    collect_retention(t);
    collect_indexer(t);
}

void cl_telemetry_free(cl_telemetry_t *t)
{
    if (t == NULL)
        return;
    cl_metrics_remove_collector(t->metrics, collect, t);
    free(t);
}

/* The ingest pipeline: Kafka messages -> events -> batches -> MariaDB, and
 * offsets back to Kafka once a batch has committed.
 *
 * Every consumed message ends in exactly one batch, as a valid event or as a
 * rejected record, so every offset is accounted for. A batch closes on size
 * (`batch_max_events`, `batch_max_bytes`), on age (`batch_max_delay_ms`), or
 * before the message that would take its SQL over the packet limit
 * (cl_store_max_batch_sql_bytes, with the store's per-event bounds), and is
 * written in one transaction by the store; several batches may be in flight
 * on the store's connection pool. An event whose SQL alone exceeds the limit
 * is rejected, so a batch always fits and MariaDB's refusal of an oversized
 * packet is never reached in normal operation.
 *
 * Poison isolation: a write that MariaDB refuses for its data (store.h) is
 * written again in halves, down to single events (isolate.h); an event
 * refused alone becomes a rejected record with the server's error as its
 * reason, and the batch goes on. Every event is stored by exactly one
 * committed transaction, or recorded as rejected, before the batch's offsets
 * move: exactly-once storage holds. Errors that are not the data's (an
 * operator's: privileges, a missing table, a read-only server) are held and
 * retried by the store, so they hold the offsets too.
 *
 * Offsets advance per partition over the contiguous prefix of committed
 * batches (see offsets.h).
 *
 * Backpressure: when the events buffered or in flight reach
 * `max_in_flight_events`, or their bytes (payloads plus the SQL text built
 * for them) reach `max_in_flight_bytes`, the Kafka source is paused; it
 * resumes when both are down to half. */
#ifndef CLICKLOOP_PIPELINE_H
#define CLICKLOOP_PIPELINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "clickloop/event.h"
#include "clickloop/kafka_source.h"
#include "clickloop/store.h"

typedef struct cl_pipeline_s cl_pipeline_t;

typedef struct {
    size_t batch_max_events;
    uint64_t batch_max_delay_ms;
    size_t max_in_flight_events;
    uint64_t max_in_flight_bytes; /* 0: no bound by bytes */
    /* A batch also closes at this many payload bytes (memory; its SQL is
     * bounded by the packet limit on its own). */
    size_t batch_max_bytes;
    /* Raw payloads of rejected messages are kept up to this many bytes. */
    size_t max_rejected_payload_bytes;
    /* Events whose time is outside this window around the moment they are
     * consumed are rejected (event.h). */
    cl_event_time_window_t time_window;
    /* Optional: told about every committed batch, for the latency histogram:
     * events (valid + rejected) and milliseconds from the batch's first
     * message to its commit. */
    void (*on_batch_committed)(void *arg, size_t events, uint64_t latency_ms);
    void *on_batch_committed_arg;
    /* Optional: the consumer cannot go on (a fatal librdkafka error, logged
     * here); the owner restarts ingest from the committed offsets. */
    void (*on_fatal)(void *arg, const char *message);
    void *on_fatal_arg;
} cl_pipeline_params_t;

/* A batch's SQL text is at most about twice its payload bytes (escaping), so
 * 4 MiB of payload keeps it well under MariaDB's default 16 MiB packet (the
 * store splits further by the server's actual limit). */
#define CL_PIPELINE_BATCH_MAX_BYTES (4u * 1024u * 1024u)

struct cl_config_s;
/* The `ingest` section's batching and time window; the committed-batch
 * callback is the caller's to set. */
void cl_pipeline_params_from_config(const struct cl_config_s *config, cl_pipeline_params_t *params);

/* Counters for metrics and tests; monotonic except the gauges. */
typedef struct {
    uint64_t consumed;
    uint64_t stored;          /* valid events in committed batches */
    uint64_t rejected;        /* rejected records in committed batches */
    uint64_t batches;         /* committed batches */
    uint64_t batch_failures;  /* writes refused for their data, then split */
    size_t in_flight;         /* gauge: events buffered or being written */
    uint64_t in_flight_bytes; /* gauge: their payloads and SQL text */
    bool paused;              /* gauge */
} cl_pipeline_stats_t;

/* The pipeline borrows parser and store; both must outlive it. */
cl_pipeline_t *cl_pipeline_new(uv_loop_t *loop, const cl_pipeline_params_t *params,
                               cl_event_parser_t *parser, cl_store_t *store);
/* Handlers to give to cl_kafka_source_new() with the pipeline as arg. */
const cl_kafka_source_handlers_t *cl_pipeline_kafka_handlers(void);
/* Attach the source after it was created with cl_pipeline_kafka_handlers(). */
void cl_pipeline_set_source(cl_pipeline_t *p, cl_kafka_source_t *src);

/* Change batch sizes and bounds in place (SIGHUP reload). */
void cl_pipeline_set_params(cl_pipeline_t *p, const cl_pipeline_params_t *params);

void cl_pipeline_get_stats(const cl_pipeline_t *p, cl_pipeline_stats_t *out);

/* Pause consumption for good, close the open batch now and call `cb` once
 * nothing is in flight any more (every batch committed or given up).
 * Backpressure never resumes a draining pipeline's consumer. */
/* The oldest batch not written yet (the open one included): its age, and in
 * desc how many events it holds and where the first comes from; false when
 * there is none. For readiness: a write that does not finish is a stall. */
bool cl_pipeline_oldest_unwritten(const cl_pipeline_t *p, uint64_t *age_ms, char *desc,
                                  size_t size);

void cl_pipeline_drain(cl_pipeline_t *p, void (*cb)(void *arg), void *arg);

/* Close the timer handle and free; `cb` runs from the close callback. Call
 * only when nothing is in flight (after cl_pipeline_drain). */
void cl_pipeline_close(cl_pipeline_t *p, void (*cb)(void *arg), void *arg);

#endif

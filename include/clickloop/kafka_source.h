/* The Kafka source: a librdkafka high-level consumer driven by the libuv loop.
 *
 * librdkafka runs its own threads; this module only ever calls it from the loop
 * thread. The consumer queue signals "became non-empty" on an eventfd watched
 * by a uv_poll; every callback librdkafka makes (messages, rebalances, logs,
 * errors, commit results) is served from rd_kafka_consumer_poll() on the loop.
 *
 * Offsets: automatic offset *storing* is off. The owner stores the next offset
 * to read with cl_kafka_source_store_offset() once everything before it is
 * durably handled; librdkafka's auto-commit then commits what was stored (and
 * does so on revoke and on close). */
#ifndef CLICKLOOP_KAFKA_SOURCE_H
#define CLICKLOOP_KAFKA_SOURCE_H

#include <librdkafka/rdkafka.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "clickloop/common.h"
#include "clickloop/config.h"

typedef struct cl_kafka_source_s cl_kafka_source_t;

typedef struct {
    /* One message; it stays owned by the source and is destroyed when the
     * callback returns, so copy what must outlive it. */
    void (*on_message)(void *arg, const rd_kafka_message_t *msg);
    /* Partitions were assigned to this instance. */
    void (*on_assign)(void *arg, const rd_kafka_topic_partition_list_t *parts);
    /* Partitions were revoked (or lost): abandon in-flight work for them, the
     * new owner re-reads everything not committed. */
    void (*on_revoke)(void *arg, const rd_kafka_topic_partition_list_t *parts, bool lost);
    /* A consumer error worth an operator's attention; fatal when the consumer
     * cannot go on (e.g. fenced, or a fatal librdkafka error). */
    void (*on_error)(void *arg, bool fatal, const char *message);
} cl_kafka_source_handlers_t;

typedef struct {
    const char *brokers;
    const char *group_id;
    const char *const *topics;
    size_t topic_count;
    /* librdkafka properties passed through, applied after clickloop's own
     * defaults so they can override them. */
    const cl_config_kafka_property_t *properties;
    size_t property_count;
    uint64_t poll_interval_ms;      /* keep-alive poll, also while paused */
    unsigned max_messages_per_tick; /* fairness: yield to the loop after this many */
    size_t max_bytes_per_tick;      /* ...or after this many payload bytes; 0: the default */
    /* queued.max.messages.kbytes unless kafka.properties sets it: what
     * librdkafka may prefetch into the consumer queue. 0: 16384. */
    uint64_t prefetch_kbytes;
} cl_kafka_source_params_t;

/* Kafka's longest topic name. */
#define CL_KAFKA_TOPIC_MAX 249

/* What the source counts itself (the rest is the pipeline's). */
typedef struct {
    /* Committed offsets found out of range and reset by auto.offset.reset. */
    uint64_t offset_resets;
    /* Messages between such an offset and where consumption resumed. */
    uint64_t messages_skipped;
    /* Partitions stopped by auto.offset.reset=error. */
    uint64_t partitions_stopped;
} cl_kafka_source_stats_t;

/* Yield to the loop after this many messages of one wake-up, so that timers,
 * the admin listener and database completions are served during a backlog. */
#define CL_KAFKA_MAX_MESSAGES_PER_TICK 2000u
/* ...or after this many payload bytes (the message that crosses it is the
 * last): parsing is linear in the bytes, and 2000 messages of 64 KiB (the
 * default ingest.max_event_bytes) would keep the loop busy for a second or
 * more in one go, long enough to stall /healthz, timers and database
 * completions. 1 MiB is about 10-20 ms of parsing; small events still go
 * 2000 to a tick. */
#define CL_KAFKA_MAX_BYTES_PER_TICK ((size_t)1 << 20)

/* The `kafka` section; the parameters point into `config`, which must
 * outlive cl_kafka_source_new (it copies what it keeps). The prefetch is a
 * quarter of ingest.max_in_flight_bytes (1 MiB to 2 GiB): librdkafka holds
 * messages there before the pipeline counts them in flight. */
void cl_kafka_source_params_from_config(const cl_config_t *config,
                                        cl_kafka_source_params_t *params);

/* Create the consumer (not yet subscribed). The handlers' arg is `arg`. */
int cl_kafka_source_new(uv_loop_t *loop, const cl_kafka_source_params_t *params,
                        const cl_kafka_source_handlers_t *handlers, void *arg,
                        cl_kafka_source_t **out, char err[CL_ERR_LEN]);
/* Subscribe to the topics and start consuming. */
int cl_kafka_source_start(cl_kafka_source_t *src, char err[CL_ERR_LEN]);

/* Store `next_offset` (the next offset to read) for commit. Ignored for
 * partitions no longer assigned. */
void cl_kafka_source_store_offset(cl_kafka_source_t *src, const char *topic, int32_t partition,
                                  int64_t next_offset);

/* Backpressure: pause or resume fetching on every assigned partition (and on
 * partitions assigned while paused). librdkafka drops what it prefetched for
 * paused partitions and refetches it on resume. */
void cl_kafka_source_set_paused(cl_kafka_source_t *src, bool paused);
bool cl_kafka_source_paused(const cl_kafka_source_t *src);

void cl_kafka_source_stats(const cl_kafka_source_t *src, cl_kafka_source_stats_t *out);

/* Partitions currently stopped by auto.offset.reset=error; as many as fit
 * are listed ("topic [p], topic [q]") in `list`. */
size_t cl_kafka_source_stopped(const cl_kafka_source_t *src, char *list, size_t list_size);

/* Parse librdkafka's "offset reset" log line (facility OFFSET): the topic,
 * partition and the committed offset that was out of range. CL_ERR when the
 * line is another one or the offset was a logical one (nothing committed).
 * Exposed for its unit test. */
int cl_kafka_parse_offset_reset(const char *line, char *topic, size_t topic_size,
                                int32_t *partition, int64_t *from);

/* Number of partitions currently assigned. */
int cl_kafka_source_assigned_count(const cl_kafka_source_t *src);

/* Call fn for every assigned partition with its consumer lag: the high
 * watermark librdkafka last saw minus the next offset to consume. Both come
 * from librdkafka's cache (no broker round trip); partitions without either
 * yet are skipped. */
void cl_kafka_source_foreach_lag(cl_kafka_source_t *src,
                                 void (*fn)(void *arg, const char *topic, int32_t partition,
                                            int64_t lag),
                                 void *arg);

/* Close: leave the group (committing stored offsets), then close the uv handles
 * and free everything; `cb` runs when all is done. Messages that still arrive
 * while closing are not delivered. */
void cl_kafka_source_close(cl_kafka_source_t *src, cl_close_cb cb, void *arg);

#endif

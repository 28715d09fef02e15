/* Ingest pipeline: batching, offsets and backpressure; see pipeline.h. */
#include "clickloop/pipeline.h"

#include <stdlib.h>
#include <string.h>

#include "clickloop/log.h"
#include "clickloop/offsets.h"

/* A batch whose transaction failed with a permanent error is written again
 * after this long: its offsets must not be committed, and the cause (schema
 * drift, a privilege revoked) is usually something an operator fixes. */
#define CL_PIPELINE_RETRY_FAILED_MS 5000

typedef struct cl_batch_s {
    struct cl_batch_s *next; /* in the failed list */
    cl_pipeline_t *pipeline;
    cl_event_t *events;
    size_t event_count, event_cap;
    cl_store_rejected_t *rejected;
    size_t rejected_count, rejected_cap;
    cl_offsets_segment_t **segments;
    size_t segment_count, segment_cap;
    cl_store_row_t *rows; /* built at submit time, views into events */
    size_t row_count;     /* events that passed the store's checks */
    size_t bytes;         /* payload bytes, bounds the SQL text */
    uint64_t opened_ms;
} cl_batch_t;

struct cl_pipeline_s {
    uv_loop_t *loop;
    cl_pipeline_params_t params;
    cl_event_parser_t *parser;
    cl_store_t *store;
    cl_kafka_source_t *source;
    cl_offsets_t *offsets;
    cl_batch_t *open;       /* the batch being filled, NULL when none */
    cl_batch_t *failed;     /* batches waiting for a retry */
    uv_timer_t batch_timer; /* closes `open` after batch_max_delay_ms */
    uv_timer_t retry_timer;
    size_t batches_in_store;
    cl_pipeline_stats_t stats;
    void (*drain_cb)(void *arg);
    void *drain_arg;
    bool draining; /* set by cl_pipeline_drain, never cleared: consumption stays paused */
    void (*close_cb)(void *arg);
    void *close_arg;
    int open_handles;
};

static void on_message(void *arg, const rd_kafka_message_t *msg);
static void on_assign(void *arg, const rd_kafka_topic_partition_list_t *parts);
static void on_revoke(void *arg, const rd_kafka_topic_partition_list_t *parts, bool lost);
static void on_error(void *arg, bool fatal, const char *message);

static const cl_kafka_source_handlers_t kafka_handlers = {
    .on_message = on_message,
    .on_assign = on_assign,
    .on_revoke = on_revoke,
    .on_error = on_error,
};

const cl_kafka_source_handlers_t *cl_pipeline_kafka_handlers(void)
{
    return &kafka_handlers;
}

cl_pipeline_t *cl_pipeline_new(uv_loop_t *loop, const cl_pipeline_params_t *params,
                               cl_event_parser_t *parser, cl_store_t *store)
{
    cl_pipeline_t *p = cl_xcalloc(1, sizeof *p);
    p->loop = loop;
    p->params = *params;
    p->parser = parser;
    p->store = store;
    p->offsets = cl_offsets_new();
    uv_timer_init(loop, &p->batch_timer);
    p->batch_timer.data = p;
    uv_timer_init(loop, &p->retry_timer);
    p->retry_timer.data = p;
    p->open_handles = 2;
    return p;
}

void cl_pipeline_set_source(cl_pipeline_t *p, cl_kafka_source_t *src) { p->source = src; }

void cl_pipeline_set_parser(cl_pipeline_t *p, cl_event_parser_t *parser) { p->parser = parser; }

void cl_pipeline_get_stats(const cl_pipeline_t *p, cl_pipeline_stats_t *out)
{
    *out = p->stats;
    out->paused = p->source != NULL && cl_kafka_source_paused(p->source);
}

static void update_backpressure(cl_pipeline_t *p)
{
    /* A draining pipeline keeps its consumer paused for good: resuming at
     * half the limit would consume messages that the drain then has to store
     * before it can finish, and could postpone the end of the drain forever. */
    if (p->source == NULL || p->draining)
        return;
    size_t limit = p->params.max_in_flight_events;
    bool paused = cl_kafka_source_paused(p->source);
    if (!paused && p->stats.in_flight >= limit) {
        cl_log_debug("ingest", "pausing consumption: %zu events in flight (limit %zu)",
                     p->stats.in_flight, limit);
        cl_kafka_source_set_paused(p->source, true);
    } else if (paused && p->stats.in_flight <= limit / 2) {
        cl_log_debug("ingest", "resuming consumption: %zu events in flight", p->stats.in_flight);
        cl_kafka_source_set_paused(p->source, false);
    }
}

void cl_pipeline_set_params(cl_pipeline_t *p, const cl_pipeline_params_t *params)
{
    p->params = *params;
    update_backpressure(p);
}

static void batch_free(cl_batch_t *b)
{
    for (size_t i = 0; i < b->event_count; i++)
        cl_event_clear(&b->events[i]);
    for (size_t i = 0; i < b->rejected_count; i++) {
        free((char *)b->rejected[i].topic);
        free((char *)b->rejected[i].payload);
        free((char *)b->rejected[i].reason);
    }
    free(b->events);
    free(b->rejected);
    free(b->segments);
    free(b->rows);
    free(b);
}

/* Free a batch that will never be stored: its offsets are never committed. */
static void batch_abandon(cl_batch_t *b)
{
    int64_t unused;
    for (size_t i = 0; i < b->segment_count; i++)
        cl_offsets_segment_done(b->segments[i], NULL, &unused);
    batch_free(b);
}

static size_t batch_size(const cl_batch_t *b)
{
    return b->event_count + b->rejected_count;
}

/* Record the message's offset in the batch's segment for its partition. */
static void batch_track_offset(cl_pipeline_t *p, cl_batch_t *b, const char *topic,
                               int32_t partition, int64_t offset)
{
    cl_offsets_part_t *part = cl_offsets_part(p->offsets, topic, partition);
    /* Messages mostly come in runs from one partition: look from the end. */
    for (size_t i = b->segment_count; i-- > 0;) {
        if (cl_offsets_segment_part(b->segments[i]) == part) {
            cl_offsets_segment_extend(b->segments[i], offset);
            return;
        }
    }
    if (b->segment_count == b->segment_cap) {
        b->segment_cap = b->segment_cap ? b->segment_cap * 2 : 8;
        b->segments = cl_xrealloc(b->segments, b->segment_cap * sizeof *b->segments);
    }
    b->segments[b->segment_count++] = cl_offsets_segment_open(part, offset);
}

static void batch_submit(cl_pipeline_t *p, cl_batch_t *b);

static void close_open_batch(cl_pipeline_t *p)
{
    cl_batch_t *b = p->open;
    if (b == NULL)
        return;
    p->open = NULL;
    uv_timer_stop(&p->batch_timer);
    batch_submit(p, b);
}

static void on_batch_timer(uv_timer_t *t)
{
    close_open_batch(t->data);
}

static cl_batch_t *open_batch(cl_pipeline_t *p)
{
    if (p->open == NULL) {
        cl_batch_t *b = cl_xcalloc(1, sizeof *b);
        b->pipeline = p;
        b->opened_ms = cl_now_ms();
        p->open = b;
        uv_timer_start(&p->batch_timer, on_batch_timer, p->params.batch_max_delay_ms, 0);
    }
    return p->open;
}

static void batch_add_rejected(cl_pipeline_t *p, cl_batch_t *b, const char *topic,
                               int32_t partition, int64_t offset, const void *payload,
                               size_t len, const char *reason)
{
    if (b->rejected_count == b->rejected_cap) {
        b->rejected_cap = b->rejected_cap ? b->rejected_cap * 2 : 16;
        b->rejected = cl_xrealloc(b->rejected, b->rejected_cap * sizeof *b->rejected);
    }
    cl_store_rejected_t *r = &b->rejected[b->rejected_count++];
    memset(r, 0, sizeof *r);
    size_t keep = len;
    if (keep > p->params.max_rejected_payload_bytes)
        keep = p->params.max_rejected_payload_bytes;
    r->topic = cl_xstrdup(topic);
    r->partition = partition;
    r->offset = offset;
    if (payload != NULL) {
        char *copy = cl_xmalloc(keep ? keep : 1);
        memcpy(copy, payload, keep);
        r->payload = copy;
        r->payload_len = keep;
        b->bytes += keep;
    }
    r->reason = cl_xstrdup(reason);
}

static void on_message(void *arg, const rd_kafka_message_t *msg)
{
    cl_pipeline_t *p = arg;
    const char *topic = rd_kafka_topic_name(msg->rkt);
    cl_batch_t *b = open_batch(p);

    if (b->event_count == b->event_cap) {
        b->event_cap = b->event_cap ? b->event_cap * 2 : 64;
        b->events = cl_xrealloc(b->events, b->event_cap * sizeof *b->events);
    }
    char reason[CL_ERR_LEN];
    cl_event_t *ev = &b->events[b->event_count];
    if (cl_event_parse(p->parser, msg->payload, msg->len, topic, msg->partition, msg->offset, ev,
                       reason) == CL_OK)
        b->event_count++;
    else
        batch_add_rejected(p, b, topic, msg->partition, msg->offset, msg->payload, msg->len,
                           reason);

    batch_track_offset(p, b, topic, msg->partition, msg->offset);
    p->stats.consumed++;
    p->stats.in_flight++;
    b->bytes += msg->len;
    if (batch_size(b) >= p->params.batch_max_events || b->bytes >= p->params.batch_max_bytes)
        close_open_batch(p);
    update_backpressure(p);
}

static void batch_done(void *arg, const cl_store_batch_result_t *result);
static void batch_failed(cl_pipeline_t *p, cl_batch_t *b, const char *why);

static void row_from_event(cl_store_row_t *r, const cl_event_t *e)
{
    r->row_key = e->row_key;
    r->row_key_len = e->row_key_len;
    r->event_id = e->event_id;
    r->user_id = e->user_id;
    r->ts_ms = e->ts_ms;
    r->url = e->url;
    r->url_len = e->url_len;
    memcpy(r->country, e->country, sizeof r->country);
    r->city = e->city;
    r->browser = e->browser;
    r->os = e->os;
    r->device = e->device;
    r->user_agent = e->user_agent;
    r->time_spent_ms = e->time_spent_ms;
    r->topic = e->topic;
    r->partition = e->partition;
    r->offset = e->offset;
}

/* Map events to store rows. An event the store cannot hold (a limit of the
 * schema that the event rules do not cover) becomes a rejected record with the
 * store's reason: it is kept, never dropped. */
static void batch_build_rows(cl_pipeline_t *p, cl_batch_t *b)
{
    b->rows = cl_xcalloc(b->event_count ? b->event_count : 1, sizeof *b->rows);
    size_t kept = 0;
    for (size_t i = 0; i < b->event_count; i++) {
        cl_store_row_t *r = &b->rows[kept];
        row_from_event(r, &b->events[i]);
        char why[CL_ERR_LEN];
        if (cl_store_row_check(r, why) == CL_OK) {
            kept++;
            continue;
        }
        batch_add_rejected(p, b, b->events[i].topic, b->events[i].partition,
                           b->events[i].offset, NULL, 0, why);
    }
    b->row_count = kept;
}

static void batch_submit(cl_pipeline_t *p, cl_batch_t *b)
{
    if (b->rows == NULL)
        batch_build_rows(p, b);
    char err[CL_ERR_LEN];
    p->batches_in_store++;
    if (cl_store_write_batch(p->store, b->rows, b->row_count, b->rejected, b->rejected_count,
                             batch_done, b, err) != CL_OK) {
        p->batches_in_store--;
        batch_failed(p, b, err);
    }
}

static void maybe_finish_drain(cl_pipeline_t *p)
{
    if (p->drain_cb == NULL || p->open != NULL || p->batches_in_store > 0 || p->failed != NULL)
        return;
    void (*cb)(void *) = p->drain_cb;
    p->drain_cb = NULL;
    cb(p->drain_arg);
}

static void on_retry_timer(uv_timer_t *t)
{
    cl_pipeline_t *p = t->data;
    cl_batch_t *list = p->failed;
    p->failed = NULL;
    while (list != NULL) {
        cl_batch_t *b = list;
        list = b->next;
        b->next = NULL;
        batch_submit(p, b);
    }
}

/* The store already retried transient failures; this one is permanent. Keep
 * the batch (its offsets stay uncommitted) and try again later. */
static void batch_failed(cl_pipeline_t *p, cl_batch_t *b, const char *why)
{
    p->stats.batch_failures++;
    cl_log_error("ingest", "batch of %zu events could not be stored: %s; retrying in %d ms",
                 batch_size(b), why, CL_PIPELINE_RETRY_FAILED_MS);
    b->next = p->failed;
    p->failed = b;
    if (!uv_is_active((uv_handle_t *)&p->retry_timer))
        uv_timer_start(&p->retry_timer, on_retry_timer, CL_PIPELINE_RETRY_FAILED_MS, 0);
}

static void batch_done(void *arg, const cl_store_batch_result_t *result)
{
    cl_batch_t *b = arg;
    cl_pipeline_t *p = b->pipeline;
    p->batches_in_store--;

    if (result->status != CL_OK) {
        if (result->status == CL_ERR_RETRY) {
            /* Only when the store closed first (shutdown past its drain
             * timeout): abandon the batch, Kafka redelivers it. */
            p->stats.in_flight -= batch_size(b);
            batch_abandon(b);
            maybe_finish_drain(p);
            return;
        }
        batch_failed(p, b, result->message);
        return;
    }

    for (size_t i = 0; i < b->segment_count; i++) {
        cl_offsets_part_t *part = NULL;
        int64_t next = 0;
        if (cl_offsets_segment_done(b->segments[i], &part, &next) && p->source != NULL)
            cl_kafka_source_store_offset(p->source, cl_offsets_part_topic(part),
                                         cl_offsets_part_partition(part), next);
    }
    b->segment_count = 0;
    if (p->params.on_batch_committed != NULL)
        p->params.on_batch_committed(p->params.on_batch_committed_arg, batch_size(b),
                                     cl_now_ms() - b->opened_ms);
    p->stats.stored += b->row_count;
    p->stats.rejected += b->rejected_count;
    p->stats.batches++;
    p->stats.in_flight -= batch_size(b);
    batch_free(b);
    update_backpressure(p);
    maybe_finish_drain(p);
}

static void on_assign(void *arg, const rd_kafka_topic_partition_list_t *parts)
{
    cl_pipeline_t *p = arg;
    for (int i = 0; i < parts->cnt; i++)
        cl_offsets_part(p->offsets, parts->elems[i].topic, parts->elems[i].partition);
}

static void on_revoke(void *arg, const rd_kafka_topic_partition_list_t *parts, bool lost)
{
    cl_pipeline_t *p = arg;
    CL_UNUSED(lost);
    /* Batches holding messages of these partitions still commit to MariaDB
     * (harmless: writes are idempotent) but no longer move their offsets: the
     * new owner re-reads from the last committed offset. */
    for (int i = 0; i < parts->cnt; i++)
        cl_offsets_revoke(p->offsets, parts->elems[i].topic, parts->elems[i].partition);
}

static void on_error(void *arg, bool fatal, const char *message)
{
    CL_UNUSED(arg);
    if (fatal)
        cl_log_error("kafka", "%s", message);
    else
        cl_log_warn("kafka", "%s", message);
}

void cl_pipeline_drain(cl_pipeline_t *p, void (*cb)(void *arg), void *arg)
{
    p->drain_cb = cb;
    p->drain_arg = arg;
    p->draining = true;
    if (p->source != NULL)
        cl_kafka_source_set_paused(p->source, true);
    close_open_batch(p);
    maybe_finish_drain(p);
}

static void on_timer_closed(uv_handle_t *h)
{
    cl_pipeline_t *p = h->data;
    if (--p->open_handles > 0)
        return;
    void (*cb)(void *) = p->close_cb;
    void *arg = p->close_arg;
    /* Detach every partition first, so abandoning the batches frees their
     * segments without advancing anything. */
    cl_offsets_free(p->offsets);
    while (p->failed != NULL) {
        cl_batch_t *b = p->failed;
        p->failed = b->next;
        batch_abandon(b);
    }
    if (p->open != NULL)
        batch_abandon(p->open);
    free(p);
    if (cb != NULL)
        cb(arg);
}

void cl_pipeline_close(cl_pipeline_t *p, void (*cb)(void *arg), void *arg)
{
    p->close_cb = cb;
    p->close_arg = arg;
    uv_close((uv_handle_t *)&p->batch_timer, on_timer_closed);
    uv_close((uv_handle_t *)&p->retry_timer, on_timer_closed);
}

/* Ingest pipeline: batching, poison isolation, offsets and backpressure; see
 * pipeline.h. */
#include "clickloop/pipeline.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clickloop/config.h"
#include "clickloop/isolate.h"
#include "clickloop/log.h"
#include "clickloop/offsets.h"

/* A batch is written as one store write; a write refused for its data is
 * split in halves (isolate.h) until the refused events stand alone, and each
 * of those becomes a rejected event with MariaDB's reason. The batch is done,
 * and its offsets move, when its last write has committed. */
typedef struct cl_batch_s {
    cl_pipeline_t *pipeline;
    struct cl_batch_s *prev, *next; /* in the pipeline's batches being written */
    cl_event_t *events;
    size_t event_count, event_cap;
    cl_store_rejected_t *rejected;
    size_t rejected_count, rejected_cap;
    cl_offsets_segment_t **segments;
    size_t segment_count, segment_cap;
    cl_store_row_t *rows; /* built at submit time, views into events */
    size_t bytes;         /* payload bytes */
    size_t sql_bytes;     /* bound of the batch's SQL (store.h) */
    uint64_t held_bytes;  /* its share of stats.in_flight_bytes */
    size_t refused;       /* rows MariaDB refused, now rejected events too */
    size_t writes;        /* store writes in flight */
    bool abandoned;       /* a write was cancelled: the offsets stay */
    uint64_t opened_ms;
} cl_batch_t;

/* One store write: a range of the batch's items (rows, then rejected). */
typedef struct {
    cl_batch_t *batch;
    cl_isolate_range_t range;
} batch_write_t;

struct cl_pipeline_s {
    uv_loop_t *loop;
    cl_pipeline_params_t params;
    cl_event_parser_t *parser;
    cl_store_t *store;
    cl_kafka_source_t *source;
    cl_offsets_t *offsets;
    cl_batch_t *open;       /* the batch being filled, NULL when none */
    cl_batch_t *writing;    /* batches submitted and not finished */
    uv_timer_t batch_timer; /* closes `open` after batch_max_delay_ms */
    size_t writes_in_store;
    cl_pipeline_stats_t stats;
    void (*drain_cb)(void *arg);
    void *drain_arg;
    bool draining; /* set by cl_pipeline_drain, never cleared: consumption stays paused */
    void (*close_cb)(void *arg);
    void *close_arg;
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

void cl_pipeline_params_from_config(const cl_config_t *c, cl_pipeline_params_t *p)
{
    memset(p, 0, sizeof *p);
    p->batch_max_events = c->ingest.batch_max_events;
    p->batch_max_delay_ms = c->ingest.batch_max_delay_ms;
    p->max_in_flight_events = c->ingest.max_in_flight_events;
    p->max_in_flight_bytes = c->ingest.max_in_flight_bytes;
    p->batch_max_bytes = CL_PIPELINE_BATCH_MAX_BYTES;
    p->max_rejected_payload_bytes = (size_t)c->ingest.max_event_bytes;
    p->time_window.max_age_ms = c->ingest.max_event_age_ms;
    p->time_window.max_future_skew_ms = c->ingest.max_future_skew_ms;
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
    return p;
}

void cl_pipeline_set_source(cl_pipeline_t *p, cl_kafka_source_t *src)
{
    p->source = src;
}

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
    uint64_t bytes_limit =
        p->params.max_in_flight_bytes ? p->params.max_in_flight_bytes : UINT64_MAX;
    size_t events = p->stats.in_flight;
    uint64_t bytes = p->stats.in_flight_bytes;
    bool paused = cl_kafka_source_paused(p->source);
    if (!paused && (events >= limit || bytes >= bytes_limit)) {
        cl_log_debug("ingest",
                     "pausing consumption: %zu events, %llu bytes in flight (limits %zu, %llu)",
                     events, (unsigned long long)bytes, limit, (unsigned long long)bytes_limit);
        cl_kafka_source_set_paused(p->source, true);
    } else if (paused && events <= limit / 2 && bytes <= bytes_limit / 2) {
        cl_log_debug("ingest", "resuming consumption: %zu events, %llu bytes in flight", events,
                     (unsigned long long)bytes);
        cl_kafka_source_set_paused(p->source, false);
    }
}

void cl_pipeline_set_params(cl_pipeline_t *p, const cl_pipeline_params_t *params)
{
    p->params = *params;
    update_backpressure(p);
}

static void rejected_clear(cl_store_rejected_t *r)
{
    free((char *)r->topic);
    free((char *)r->payload);
    free((char *)r->reason);
}

static void batch_free(cl_batch_t *b)
{
    for (size_t i = 0; i < b->event_count; i++)
        cl_event_clear(&b->events[i]);
    for (size_t i = 0; i < b->rejected_count; i++)
        rejected_clear(&b->rejected[i]);
    free(b->events);
    free(b->rejected);
    free(b->segments);
    free(b->rows);
    free(b);
}

/* Free a batch that will never be stored: its offsets are never committed. */
/* Its events were neither stored nor rejected: its partitions' offsets must
 * not move past them (offsets.h). */
static void batch_abandon(cl_batch_t *b)
{
    for (size_t i = 0; i < b->segment_count; i++)
        cl_offsets_segment_abandon(b->segments[i]);
    b->segment_count = 0;
    batch_free(b);
}

/* Messages in the batch: each is a valid event or a rejected record (rows
 * MariaDB refused are both, and count once). */
static size_t batch_size(const cl_batch_t *b)
{
    return b->event_count + b->rejected_count - b->refused;
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
        b->sql_bytes = CL_STORE_BATCH_SQL_BASE_BYTES;
        p->open = b;
        uv_timer_start(&p->batch_timer, on_batch_timer, p->params.batch_max_delay_ms, 0);
    }
    return p->open;
}

/* The SQL one batch may hold: the store's bound for the packet limit. */
static size_t sql_budget(const cl_pipeline_t *p)
{
    return cl_store_max_batch_sql_bytes(p->store);
}

/* The raw bytes of a rejected message kept: at most max_rejected_payload_
 * bytes, and few enough that its record (escaped: twice the bytes, plus the
 * longest reason) fits a batch of its own. */
static size_t rejected_payload_keep(const cl_pipeline_t *p, size_t len)
{
    size_t keep =
        len < p->params.max_rejected_payload_bytes ? len : p->params.max_rejected_payload_bytes;
    size_t budget = sql_budget(p);
    size_t fixed = CL_STORE_BATCH_SQL_BASE_BYTES + 2 * 4 * CL_STORE_REASON_MAX_CHARS + 1024;
    size_t room = budget > fixed ? (budget - fixed) / 2 : 0;
    return keep < room ? keep : room;
}

static void rejected_init(cl_store_rejected_t *r, const char *topic, int32_t partition,
                          int64_t offset, const void *payload, size_t keep, const char *reason)
{
    memset(r, 0, sizeof *r);
    r->topic = cl_xstrdup(topic);
    r->partition = partition;
    r->offset = offset;
    if (payload != NULL) {
        char *copy = cl_xmalloc(keep ? keep : 1);
        memcpy(copy, payload, keep);
        r->payload = copy;
        r->payload_len = keep;
    }
    r->reason = cl_xstrdup(reason);
}

/* Take over `r` (its strings) as the batch's next rejected event. */
static void batch_push_rejected(cl_batch_t *b, const cl_store_rejected_t *r)
{
    if (b->rejected_count == b->rejected_cap) {
        b->rejected_cap = b->rejected_cap ? b->rejected_cap * 2 : 16;
        b->rejected = cl_xrealloc(b->rejected, b->rejected_cap * sizeof *b->rejected);
    }
    b->rejected[b->rejected_count++] = *r;
}

/* Move `ev` into the batch. */
static void batch_push_event(cl_batch_t *b, const cl_event_t *ev)
{
    if (b->event_count == b->event_cap) {
        b->event_cap = b->event_cap ? b->event_cap * 2 : 64;
        b->events = cl_xrealloc(b->events, b->event_cap * sizeof *b->events);
    }
    b->events[b->event_count++] = *ev;
}

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

/* Parse and check one message: 0 with *ev filled and *sql_bytes its share of
 * a batch's SQL, or CL_ERR with the reason. The event rules also make it
 * storable (event.h); past them, an event must be dated within the
 * event-time window around now and be small enough to be written at all
 * under the packet limit. */
static int accept_message(cl_pipeline_t *p, const rd_kafka_message_t *msg, const char *topic,
                          cl_event_t *ev, size_t *sql_bytes, char reason[CL_ERR_LEN])
{
    if (cl_event_parse(p->parser, msg->payload, msg->len, topic, msg->partition, msg->offset, ev,
                       reason) != CL_OK)
        return CL_ERR;
    if (cl_event_check_time_window(ev->ts_ms, cl_wall_ms(), &p->params.time_window, reason) !=
        CL_OK) {
        cl_event_clear(ev);
        return CL_ERR;
    }
    cl_store_row_t row;
    row_from_event(&row, ev);
    size_t budget = sql_budget(p);
    *sql_bytes = cl_store_row_sql_bytes(&row);
    if (*sql_bytes + CL_STORE_BATCH_SQL_BASE_BYTES > budget) {
        cl_event_clear(ev);
        return cl_errorf(reason,
                         "the event needs up to %zu bytes of SQL, more than the %zu a batch "
                         "may hold under MariaDB's packet limit (max_allowed_packet)",
                         *sql_bytes, budget - CL_STORE_BATCH_SQL_BASE_BYTES);
    }
    return CL_OK;
}

static void on_message(void *arg, const rd_kafka_message_t *msg)
{
    cl_pipeline_t *p = arg;
    const char *topic = rd_kafka_topic_name(msg->rkt);
    char reason[CL_ERR_LEN];
    cl_event_t ev;
    cl_store_rejected_t rejected;
    size_t sql_bytes;
    bool valid = accept_message(p, msg, topic, &ev, &sql_bytes, reason) == CL_OK;
    if (!valid) {
        rejected_init(&rejected, topic, msg->partition, msg->offset, msg->payload,
                      rejected_payload_keep(p, msg->len), reason);
        sql_bytes = cl_store_rejected_sql_bytes(&rejected);
    }

    /* Close the open batch first if this message would take its SQL over
     * the packet limit. */
    if (p->open != NULL && p->open->sql_bytes + sql_bytes > sql_budget(p))
        close_open_batch(p);
    cl_batch_t *b = open_batch(p);
    if (valid)
        batch_push_event(b, &ev);
    else
        batch_push_rejected(b, &rejected);
    b->sql_bytes += sql_bytes;
    batch_track_offset(p, b, topic, msg->partition, msg->offset);
    p->stats.consumed++;
    p->stats.in_flight++;
    p->stats.in_flight_bytes += msg->len + sql_bytes;
    b->held_bytes += msg->len + sql_bytes;
    b->bytes += msg->len;
    if (batch_size(b) >= p->params.batch_max_events || b->bytes >= p->params.batch_max_bytes)
        close_open_batch(p);
    update_backpressure(p);
}

static void batch_write(cl_pipeline_t *p, cl_batch_t *b, cl_isolate_range_t range);
static void batch_finish(cl_pipeline_t *p, cl_batch_t *b);

static void batch_submit(cl_pipeline_t *p, cl_batch_t *b)
{
    CL_DLIST_PUSH(p->writing, b);
    b->rows = cl_xcalloc(b->event_count ? b->event_count : 1, sizeof *b->rows);
    for (size_t i = 0; i < b->event_count; i++)
        row_from_event(&b->rows[i], &b->events[i]);
    batch_write(p, b, (cl_isolate_range_t){0, b->event_count + b->rejected_count});
    if (b->writes == 0)
        batch_finish(p, b);
}

static void maybe_finish_drain(cl_pipeline_t *p)
{
    if (p->drain_cb == NULL || p->open != NULL || p->writes_in_store > 0)
        return;
    void (*cb)(void *) = p->drain_cb;
    p->drain_cb = NULL;
    cb(p->drain_arg);
}

/* Every write of the batch is over: commit its offsets, or give it up. */
static void batch_finish(cl_pipeline_t *p, cl_batch_t *b)
{
    CL_DLIST_UNLINK(p->writing, b);
    p->stats.in_flight -= batch_size(b);
    p->stats.in_flight_bytes -= b->held_bytes;
    if (b->abandoned) {
        /* Only when the store closed first (shutdown past its drain timeout):
         * Kafka redelivers the batch. */
        batch_abandon(b);
        update_backpressure(p);
        maybe_finish_drain(p);
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
    p->stats.stored += b->event_count - b->refused;
    p->stats.rejected += b->rejected_count;
    p->stats.batches++;
    batch_free(b);
    update_backpressure(p);
    maybe_finish_drain(p);
}

/* The single item of `range` was refused alone. A row becomes a rejected
 * event with MariaDB's reason (its raw payload is not kept past parsing: the
 * Kafka coordinates name it). A rejected event can only be refused for its
 * size (the store holds others, store.h): it is kept without its payload. */
static void isolate_culprit(cl_pipeline_t *p, cl_batch_t *b, size_t item, const char *why)
{
    char reason[CL_ERR_LEN];
    if (item < b->event_count) {
        const cl_event_t *e = &b->events[item];
        snprintf(reason, sizeof reason, "MariaDB refused the event: %s", why);
        cl_store_rejected_t r;
        rejected_init(&r, e->topic, e->partition, e->offset, NULL, 0, reason);
        batch_push_rejected(b, &r);
        b->refused++;
        cl_log_warn("ingest", "event at %s [%d] offset %lld rejected: %s", e->topic,
                    (int)e->partition, (long long)e->offset, reason);
        batch_write(p, b, (cl_isolate_range_t){b->event_count + b->rejected_count - 1, 1});
        return;
    }
    cl_store_rejected_t *r = &b->rejected[item - b->event_count];
    snprintf(reason, sizeof reason, "%s (payload of %zu bytes not kept: %s)", r->reason,
             r->payload_len, why);
    free((char *)r->payload);
    free((char *)r->reason);
    r->payload = NULL;
    r->payload_len = 0;
    r->reason = cl_xstrdup(reason);
    batch_write(p, b, (cl_isolate_range_t){item, 1});
}

static void on_write_done(void *arg, const cl_store_batch_result_t *result)
{
    batch_write_t *w = arg;
    cl_batch_t *b = w->batch;
    cl_pipeline_t *p = b->pipeline;
    cl_isolate_range_t range = w->range;
    free(w);
    p->writes_in_store--;
    b->writes--;

    if (result->status == CL_ERR_RETRY) {
        b->abandoned = true;
    } else if (result->status != CL_OK) {
        /* Refused for its data (store.h): nothing of it was stored. */
        p->stats.batch_failures++;
        cl_isolate_range_t halves[2];
        if (cl_isolate_split(range, halves) == 2) {
            cl_log_warn("ingest",
                        "MariaDB refused a write of %zu events: %s; writing it again in "
                        "halves to find the refused ones",
                        range.count, result->message);
            batch_write(p, b, halves[0]);
            batch_write(p, b, halves[1]);
        } else {
            isolate_culprit(p, b, range.first, result->message);
        }
    }
    if (b->writes == 0)
        batch_finish(p, b);
}

/* Start a write of `range`; the caller finishes the batch if no write is left
 * in flight afterwards (this one may have failed at once). */
static void batch_write(cl_pipeline_t *p, cl_batch_t *b, cl_isolate_range_t range)
{
    size_t row_first, rows, rejected_first, rejected;
    cl_isolate_items(range, b->event_count, &row_first, &rows, &rejected_first, &rejected);
    batch_write_t *w = cl_xmalloc(sizeof *w);
    w->batch = b;
    w->range = range;
    char err[CL_ERR_LEN];
    p->writes_in_store++;
    b->writes++;
    if (cl_store_write_batch(p->store, b->rows + row_first, rows, b->rejected + rejected_first,
                             rejected, on_write_done, w, err) != CL_OK) {
        /* The store is closing, or refused a malformed rejected event (a
         * bug): like a cancelled write, the batch is redelivered after a
         * restart. */
        cl_log_error("ingest", "a batch could not be written: %s; its offsets stay", err);
        free(w);
        p->writes_in_store--;
        b->writes--;
        b->abandoned = true;
    }
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
    cl_pipeline_t *p = arg;
    if (!fatal) {
        cl_log_warn("kafka", "%s", message);
        return;
    }
    cl_log_error("kafka", "%s", message);
    if (p->params.on_fatal != NULL)
        p->params.on_fatal(p->params.on_fatal_arg, message);
}

bool cl_pipeline_oldest_unwritten(const cl_pipeline_t *p, uint64_t *age_ms, char *desc, size_t size)
{
    /* The list is newest first; among equal times the earliest submitted
     * wins, and the open batch only when strictly older. */
    const cl_batch_t *oldest = NULL;
    for (const cl_batch_t *b = p->writing; b != NULL; b = b->next) {
        if (oldest == NULL || b->opened_ms <= oldest->opened_ms)
            oldest = b;
    }
    if (p->open != NULL && (oldest == NULL || p->open->opened_ms < oldest->opened_ms))
        oldest = p->open;
    if (oldest == NULL)
        return false;
    uint64_t now = cl_now_ms();
    *age_ms = now > oldest->opened_ms ? now - oldest->opened_ms : 0;
    const cl_offsets_part_t *part =
        oldest->segment_count > 0 ? cl_offsets_segment_part(oldest->segments[0]) : NULL;
    if (part == NULL)
        snprintf(desc, size, "%zu events", batch_size(oldest));
    else
        snprintf(desc, size, "%zu events, the first from %s [%d] at offset %lld",
                 batch_size(oldest), cl_offsets_part_topic(part),
                 (int)cl_offsets_part_partition(part),
                 (long long)cl_offsets_segment_first(oldest->segments[0]));
    return true;
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
    void (*cb)(void *) = p->close_cb;
    void *arg = p->close_arg;
    /* Detach every partition first, so abandoning the open batch frees its
     * segments without advancing anything. */
    cl_offsets_free(p->offsets);
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
}

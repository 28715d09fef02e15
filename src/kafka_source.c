/* Kafka source: librdkafka consumer on the libuv loop; see kafka_source.h.
 *
 * Wake-ups (see ../shared/DESIGN.md): librdkafka writes to the eventfd only
 * when the consumer queue goes from empty to non-empty, and not again until the
 * queue has been read. So a wake-up drains the queue until
 * rd_kafka_consumer_poll() returns NULL; when a tick's budget stops the drain
 * early, a uv_idle handle continues it on the next loop iteration. A periodic
 * timer also polls, which keeps the group membership alive while paused (the
 * group evicts consumers that do not poll within max.poll.interval.ms). */
#include "clickloop/kafka_source.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "clickloop/log.h"

/* A partition and the committed offset the broker no longer holds. */
typedef struct {
    char topic[CL_KAFKA_TOPIC_MAX + 1];
    int32_t partition;
    int64_t from;
    bool to_end; /* reset to the log's end (latest), not its start */
} offset_mark_t;

typedef enum {
    SRC_CREATED = 0,
    SRC_RUNNING,
    SRC_CLOSING, /* rd_kafka_consumer_close_queue() in progress */
    SRC_CLOSED,  /* uv handles closing */
} src_state_t;

struct cl_kafka_source_s {
    uv_loop_t *loop;
    rd_kafka_t *rk;
    rd_kafka_queue_t *queue; /* the consumer queue, main queue forwarded into it */
    int efd;
    uv_poll_t poll;
    uv_timer_t timer;
    uv_idle_t idle;
    int open_handles;
    src_state_t state;
    bool paused;
    bool idle_active;
    unsigned budget;
    size_t byte_budget;
    uint64_t poll_interval_ms;
    cl_kafka_source_handlers_t handlers;
    void *arg;
    char **topics;
    size_t topic_count;
    cl_close_cb close_cb;
    bool subscribed; /* started: its close commits the offsets stored */
    bool fatal;      /* librdkafka raised a fatal error: only a new consumer goes on */
    void *close_arg;
    /* Out-of-range resets librdkafka announced; each waits for the first
     * message of its partition, whose offset tells how much was skipped. */
    offset_mark_t *resets;
    size_t reset_count;
    /* Partitions stopped by auto.offset.reset=error (until revoked). */
    offset_mark_t *stopped;
    size_t stopped_count;
    cl_kafka_source_stats_t stats;
};

static int set_conf(rd_kafka_conf_t *conf, const char *name, const char *value,
                    char err[CL_ERR_LEN])
{
    char errstr[512];
    if (rd_kafka_conf_set(conf, name, value, errstr, sizeof errstr) != RD_KAFKA_CONF_OK)
        return cl_errorf(err, "kafka property %s: %s", name, errstr);
    return CL_OK;
}

int cl_kafka_parse_offset_reset(const char *line, char *topic, size_t topic_size,
                                int32_t *partition, int64_t *from)
{
    /* librdkafka (rd_kafka_offset_reset): "[thrd:main]: TOPIC [P]: offset reset
     * (at offset N, broker B) to BEGINNING: REASON". Newer versions write
     * "at offset N (leader epoch E)"; both parse. Topic names never hold a
     * space (Kafka allows [a-zA-Z0-9._-]), which is what delimits the name. */
    static const char marker[] = "]: offset reset (at offset ";
    const char *m = strstr(line, marker);
    if (m == NULL)
        return CL_ERR;
    const char *open = m;
    while (open > line && open[-1] != '[')
        open--;
    if (open == line || open - 1 == line || open[-2] != ' ' || open == m)
        return CL_ERR;
    char *end;
    long p = strtol(open, &end, 10);
    if (end != m || p < 0 || p > INT32_MAX)
        return CL_ERR;
    const char *name_end = open - 2;
    const char *name = name_end;
    while (name > line && name[-1] != ' ')
        name--;
    size_t len = (size_t)(name_end - name);
    if (len == 0 || len >= topic_size)
        return CL_ERR;
    errno = 0;
    long long off = strtoll(m + sizeof marker - 1, &end, 10);
    if (errno != 0 || end == m + sizeof marker - 1 || off < 0)
        return CL_ERR; /* a logical offset (INVALID, END...): nothing was committed */
    memcpy(topic, name, len);
    topic[len] = '\0';
    *partition = (int32_t)p;
    *from = off;
    return CL_OK;
}

static ssize_t mark_find(const offset_mark_t *marks, size_t count, const char *topic,
                         int32_t partition)
{
    for (size_t i = 0; i < count; i++)
        if (marks[i].partition == partition && strcmp(marks[i].topic, topic) == 0)
            return (ssize_t)i;
    return -1;
}

/* Add or replace the mark of (topic, partition). */
static void mark_put(offset_mark_t **marks, size_t *count, const char *topic, int32_t partition,
                     int64_t from)
{
    ssize_t i = mark_find(*marks, *count, topic, partition);
    if (i < 0) {
        *marks = cl_xrealloc(*marks, (*count + 1) * sizeof **marks);
        i = (ssize_t)(*count)++;
        snprintf((*marks)[i].topic, sizeof(*marks)[i].topic, "%s", topic);
        (*marks)[i].partition = partition;
    }
    (*marks)[i].from = from;
}

static void mark_drop(offset_mark_t *marks, size_t *count, size_t i)
{
    marks[i] = marks[--*count];
}

/* Forget the marks of partitions no longer assigned here. */
static void marks_revoke(offset_mark_t *marks, size_t *count,
                         const rd_kafka_topic_partition_list_t *parts)
{
    for (int k = 0; k < parts->cnt; k++) {
        ssize_t i = mark_find(marks, *count, parts->elems[k].topic, parts->elems[k].partition);
        if (i >= 0)
            mark_drop(marks, count, (size_t)i);
    }
}

static void reset_resolve(cl_kafka_source_t *src, size_t i, int64_t resumed_at);

/* A partition revoked before a message told where consumption resumed: the
 * reset still skipped what lay between the committed offset and the log's
 * start (or end, for latest) as librdkafka last saw it. */
static void resets_revoke(cl_kafka_source_t *src, const rd_kafka_topic_partition_list_t *parts)
{
    for (int k = 0; k < parts->cnt; k++) {
        const rd_kafka_topic_partition_t *tp = &parts->elems[k];
        ssize_t i = mark_find(src->resets, src->reset_count, tp->topic, tp->partition);
        if (i < 0)
            continue;
        int64_t low = -1, high = -1;
        rd_kafka_get_watermark_offsets(src->rk, tp->topic, tp->partition, &low, &high);
        int64_t resumed_at = src->resets[i].to_end ? high : low;
        if (resumed_at >= 0) {
            reset_resolve(src, (size_t)i, resumed_at);
        } else {
            cl_log_error("kafka",
                         "%s [%d]: the committed offset %lld was no longer on the broker and was "
                         "reset (auto.offset.reset); the number of messages skipped is not known",
                         tp->topic, (int)tp->partition, (long long)src->resets[i].from);
            mark_drop(src->resets, &src->reset_count, (size_t)i);
        }
    }
}

/* The first message after an out-of-range reset: its offset is where
 * consumption resumed, so everything from the committed offset up to it was
 * skipped (deleted by retention, or jumped over by auto.offset.reset=latest). */
static void reset_resolve(cl_kafka_source_t *src, size_t i, int64_t resumed_at)
{
    const offset_mark_t *r = &src->resets[i];
    int64_t skipped = resumed_at > r->from ? resumed_at - r->from : 0;
    src->stats.messages_skipped += (uint64_t)skipped;
    cl_log_error("kafka",
                 "%s [%d]: the committed offset %lld was no longer on the broker; consumption "
                 "resumed at offset %lld (auto.offset.reset): %lld message(s) skipped and lost "
                 "to this consumer group",
                 r->topic, (int)r->partition, (long long)r->from, (long long)resumed_at,
                 (long long)skipped);
    mark_drop(src->resets, &src->reset_count, i);
}

static void log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    /* Served on the loop thread (log.queue), so the source may be touched. */
    cl_kafka_source_t *src = rd_kafka_opaque(rk);
    char topic[CL_KAFKA_TOPIC_MAX + 1];
    int32_t partition;
    int64_t from;
    if (src != NULL && strcmp(fac, "OFFSET") == 0 &&
        cl_kafka_parse_offset_reset(buf, topic, sizeof topic, &partition, &from) == CL_OK) {
        src->stats.offset_resets++;
        mark_put(&src->resets, &src->reset_count, topic, partition, from);
        ssize_t i = mark_find(src->resets, src->reset_count, topic, partition);
        src->resets[i].to_end = strstr(buf, ") to END") != NULL;
    }
    /* syslog levels: 0..3 error, 4 warning, 5..6 info, 7 debug */
    cl_log_level_t l = level <= 3   ? CL_LOG_ERROR
                       : level == 4 ? CL_LOG_WARN
                       : level <= 6 ? CL_LOG_INFO
                                    : CL_LOG_DEBUG;
    cl_log(l, "kafka", "%s: %s", fac, buf);
}

static void error_cb(rd_kafka_t *rk, int code, const char *reason, void *opaque)
{
    cl_kafka_source_t *src = opaque;
    bool fatal = code == RD_KAFKA_RESP_ERR__FATAL;
    char msg[CL_ERR_LEN];
    if (fatal && src->fatal) /* reported once: the consumer is done for */
        return;
    src->fatal = src->fatal || fatal;
    if (fatal) {
        char fatal_reason[256];
        rd_kafka_resp_err_t fe = rd_kafka_fatal_error(rk, fatal_reason, sizeof fatal_reason);
        snprintf(msg, sizeof msg, "fatal consumer error: %s: %s", rd_kafka_err2str(fe),
                 fatal_reason);
    } else {
        snprintf(msg, sizeof msg, "%s: %s", rd_kafka_err2name((rd_kafka_resp_err_t)code), reason);
    }
    if (src->handlers.on_error != NULL)
        src->handlers.on_error(src->arg, fatal, msg);
}

static void commit_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                      rd_kafka_topic_partition_list_t *offsets, void *opaque)
{
    CL_UNUSED(rk);
    CL_UNUSED(opaque);
    /* _NO_OFFSET: nothing new was stored since the last commit. */
    if (err == RD_KAFKA_RESP_ERR_NO_ERROR || err == RD_KAFKA_RESP_ERR__NO_OFFSET)
        return;
    cl_log_warn("kafka",
                "offset commit failed for %d partition(s): %s; will retry with the next "
                "commit",
                offsets != NULL ? offsets->cnt : 0, rd_kafka_err2str(err));
}

static bool cooperative(rd_kafka_t *rk)
{
    const char *proto = rd_kafka_rebalance_protocol(rk);
    return proto != NULL && strcmp(proto, "COOPERATIVE") == 0;
}

static void rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    cl_kafka_source_t *src = opaque;
    bool coop = cooperative(rk);
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        if (src->handlers.on_assign != NULL)
            src->handlers.on_assign(src->arg, parts);
        if (coop) {
            rd_kafka_error_t *e = rd_kafka_incremental_assign(rk, parts);
            if (e != NULL) {
                cl_log_error("kafka", "incremental assign failed: %s", rd_kafka_error_string(e));
                rd_kafka_error_destroy(e);
            }
        } else {
            rd_kafka_assign(rk, parts);
        }
        /* Partitions assigned while backpressure is on start paused. */
        if (src->paused)
            rd_kafka_pause_partitions(rk, parts);
        cl_log_info("kafka", "assigned %d partition(s) (%s protocol)", parts->cnt,
                    coop ? "cooperative" : "eager");
    } else {
        bool lost = rd_kafka_assignment_lost(rk) != 0;
        resets_revoke(src, parts);
        marks_revoke(src->stopped, &src->stopped_count, parts);
        if (src->handlers.on_revoke != NULL)
            src->handlers.on_revoke(src->arg, parts, lost);
        if (coop) {
            rd_kafka_error_t *e = rd_kafka_incremental_unassign(rk, parts);
            if (e != NULL) {
                cl_log_error("kafka", "incremental unassign failed: %s", rd_kafka_error_string(e));
                rd_kafka_error_destroy(e);
            }
        } else {
            rd_kafka_assign(rk, NULL);
        }
        cl_log_info("kafka", "%s %d partition(s)", lost ? "lost" : "revoked", parts->cnt);
    }
}

void cl_kafka_source_params_from_config(const cl_config_t *c, cl_kafka_source_params_t *p)
{
    memset(p, 0, sizeof *p);
    p->brokers = c->kafka.brokers;
    p->group_id = c->kafka.group_id;
    p->topics = (const char *const *)c->kafka.topics;
    p->topic_count = c->kafka.topic_count;
    p->properties = c->kafka.properties;
    p->property_count = c->kafka.property_count;
    p->poll_interval_ms = c->kafka.poll_interval_ms;
    p->max_messages_per_tick = CL_KAFKA_MAX_MESSAGES_PER_TICK;
    p->max_bytes_per_tick = CL_KAFKA_MAX_BYTES_PER_TICK;
    uint64_t kb = c->ingest.max_in_flight_bytes / 4 / 1024;
    p->prefetch_kbytes = kb < 1024 ? 1024 : kb > 2097151 ? 2097151 : kb;
}

int cl_kafka_source_new(uv_loop_t *loop, const cl_kafka_source_params_t *params,
                        const cl_kafka_source_handlers_t *handlers, void *arg,
                        cl_kafka_source_t **out, char err[CL_ERR_LEN])
{
    cl_kafka_source_t *src = cl_xcalloc(1, sizeof *src);
    src->loop = loop;
    src->handlers = *handlers;
    src->arg = arg;
    src->efd = -1;
    src->budget = params->max_messages_per_tick ? params->max_messages_per_tick : 1000;
    src->byte_budget =
        params->max_bytes_per_tick ? params->max_bytes_per_tick : CL_KAFKA_MAX_BYTES_PER_TICK;
    src->poll_interval_ms = params->poll_interval_ms ? params->poll_interval_ms : 100;
    src->topic_count = params->topic_count;
    src->topics = cl_xcalloc(params->topic_count, sizeof(char *));
    for (size_t i = 0; i < params->topic_count; i++)
        src->topics[i] = cl_xstrdup(params->topics[i]);

    char prefetch[24];
    snprintf(prefetch, sizeof prefetch, "%llu",
             (unsigned long long)(params->prefetch_kbytes ? params->prefetch_kbytes : 16384));
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    /* clickloop's defaults; the user's properties below may override the
     * tunables but not the settings the delivery guarantee depends on. */
    struct {
        const char *name, *value;
    } defaults[] = {
        {"enable.auto.offset.store", "false"},
        {"enable.auto.commit", "true"},
        {"auto.commit.interval.ms", "1000"},
        {"auto.offset.reset", "earliest"},
        {"enable.partition.eof", "false"},
        {"log.queue", "true"},
        /* Bound what librdkafka prefetches: memory is bounded by configuration. */
        {"queued.max.messages.kbytes", prefetch},
        {"client.id", "clickloop"},
    };
    int rc = CL_OK;
    for (size_t i = 0; i < CL_ARRAY_LEN(defaults) && rc == CL_OK; i++)
        rc = set_conf(conf, defaults[i].name, defaults[i].value, err);
    for (size_t i = 0; i < params->property_count && rc == CL_OK; i++)
        rc = set_conf(conf, params->properties[i].name, params->properties[i].value, err);
    if (rc == CL_OK)
        rc = set_conf(conf, "bootstrap.servers", params->brokers, err);
    if (rc == CL_OK)
        rc = set_conf(conf, "group.id", params->group_id, err);
    if (rc == CL_OK)
        rc = set_conf(conf, "enable.auto.offset.store", "false", err);
    if (rc != CL_OK) {
        rd_kafka_conf_destroy(conf);
        goto fail;
    }
    rd_kafka_conf_set_opaque(conf, src);
    rd_kafka_conf_set_log_cb(conf, log_cb);
    rd_kafka_conf_set_error_cb(conf, error_cb);
    rd_kafka_conf_set_offset_commit_cb(conf, commit_cb);
    rd_kafka_conf_set_rebalance_cb(conf, rebalance_cb);

    char errstr[512];
    src->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof errstr);
    if (src->rk == NULL) {
        rd_kafka_conf_destroy(conf);
        rc = cl_errorf(err, "cannot create Kafka consumer: %s", errstr);
        goto fail;
    }
    /* Logs go to the main queue (log.queue=true), the main queue to the consumer
     * queue, so every callback runs inside rd_kafka_consumer_poll() on the loop. */
    rd_kafka_set_log_queue(src->rk, NULL);
    rd_kafka_poll_set_consumer(src->rk);
    src->queue = rd_kafka_queue_get_consumer(src->rk);

    src->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (src->efd < 0) {
        rc = cl_errorf(err, "eventfd: %s", strerror(errno));
        goto fail;
    }
    int r = uv_poll_init(loop, &src->poll, src->efd);
    if (r != 0) {
        rc = cl_errorf(err, "uv_poll_init: %s", uv_strerror(r));
        goto fail;
    }
    src->poll.data = src;
    uv_timer_init(loop, &src->timer);
    src->timer.data = src;
    uv_idle_init(loop, &src->idle);
    src->idle.data = src;
    src->open_handles = 3;
    *out = src;
    return CL_OK;

fail:
    if (src->queue != NULL)
        rd_kafka_queue_destroy(src->queue);
    if (src->rk != NULL)
        rd_kafka_destroy(src->rk);
    if (src->efd >= 0)
        close(src->efd);
    for (size_t i = 0; i < src->topic_count; i++)
        free(src->topics[i]);
    free(src->topics);
    free(src);
    return rc;
}

static void finish_close(cl_kafka_source_t *src);

/* auto.offset.reset=error: librdkafka stops fetching the partition whose
 * committed offset is out of range, and says so with this error. */
static void offset_stopped(cl_kafka_source_t *src, const rd_kafka_message_t *m)
{
    const char *topic = rd_kafka_topic_name(m->rkt);
    bool known = mark_find(src->stopped, src->stopped_count, topic, m->partition) >= 0;
    mark_put(&src->stopped, &src->stopped_count, topic, m->partition, m->offset);
    if (known)
        return;
    src->stats.partitions_stopped++;
    int64_t low = -1, high = -1;
    char gone[96] = "";
    if (rd_kafka_get_watermark_offsets(src->rk, topic, m->partition, &low, &high) ==
            RD_KAFKA_RESP_ERR_NO_ERROR &&
        low >= 0 && m->offset >= 0 && low > m->offset)
        snprintf(gone, sizeof gone, " (the log now starts at %lld: %lld message(s) are gone)",
                 (long long)low, (long long)(low - m->offset));
    cl_log_error("kafka",
                 "%s [%d]: the committed offset is missing or no longer on the broker%s; "
                 "auto.offset.reset=error: this partition is stopped until the group's offset is "
                 "set (kafka-consumer-groups.sh --reset-offsets) and clickloop restarted: %s",
                 topic, (int)m->partition, gone, rd_kafka_message_errstr(m));
}

/* Serve the consumer queue: at most `budget` messages this call, and no more
 * once `byte_budget` payload bytes have been served. Returns true when the
 * queue was drained. */
static bool drain(cl_kafka_source_t *src)
{
    size_t bytes = 0;
    for (unsigned n = 0; n < src->budget && bytes < src->byte_budget; n++) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(src->rk, 0);
        if (m == NULL)
            return true;
        if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
            if (m->err == RD_KAFKA_RESP_ERR__FATAL) {
                /* A fatal error (a fenced static member, for one) may reach
                 * the application only this way, not through error_cb. */
                error_cb(src->rk, RD_KAFKA_RESP_ERR__FATAL, rd_kafka_message_errstr(m), src);
            } else if (m->err == RD_KAFKA_RESP_ERR__AUTO_OFFSET_RESET && m->rkt != NULL) {
                offset_stopped(src, m);
            } else if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF &&
                       src->handlers.on_error != NULL) {
                char msg[CL_ERR_LEN];
                snprintf(msg, sizeof msg, "consume error on %s [%d]: %s",
                         m->rkt ? rd_kafka_topic_name(m->rkt) : "-", (int)m->partition,
                         rd_kafka_message_errstr(m));
                src->handlers.on_error(src->arg, false, msg);
            }
        } else if (src->state == SRC_RUNNING && src->handlers.on_message != NULL) {
            if (src->reset_count > 0) {
                ssize_t i = mark_find(src->resets, src->reset_count, rd_kafka_topic_name(m->rkt),
                                      m->partition);
                if (i >= 0)
                    reset_resolve(src, (size_t)i, m->offset);
            }
            src->handlers.on_message(src->arg, m);
        }
        bytes += m->len;
        rd_kafka_message_destroy(m);
        if (src->state == SRC_CLOSED)
            return true;
    }
    return false;
}

static void on_idle(uv_idle_t *h);

static void service(cl_kafka_source_t *src)
{
    if (src->state == SRC_CLOSED || src->rk == NULL)
        return;
    bool empty = drain(src);
    if (src->state == SRC_CLOSING && rd_kafka_consumer_closed(src->rk)) {
        finish_close(src);
        return;
    }
    if (!empty && !src->idle_active) {
        uv_idle_start(&src->idle, on_idle);
        src->idle_active = true;
    }
    if (empty && src->idle_active) {
        uv_idle_stop(&src->idle);
        src->idle_active = false;
    }
}

static void on_idle(uv_idle_t *h)
{
    service(h->data);
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    CL_UNUSED(status);
    CL_UNUSED(events);
    cl_kafka_source_t *src = h->data;
    uint64_t v;
    /* Read the eventfd dry first: a wake-up that arrives while we drain must
     * stay pending, not be swallowed after the drain. */
    while (read(src->efd, &v, sizeof v) == (ssize_t)sizeof v)
        ;
    service(src);
}

static void on_timer(uv_timer_t *h)
{
    service(h->data);
}

int cl_kafka_source_start(cl_kafka_source_t *src, char err[CL_ERR_LEN])
{
    rd_kafka_topic_partition_list_t *topics =
        rd_kafka_topic_partition_list_new((int)src->topic_count);
    for (size_t i = 0; i < src->topic_count; i++)
        rd_kafka_topic_partition_list_add(topics, src->topics[i], RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t e = rd_kafka_subscribe(src->rk, topics);
    rd_kafka_topic_partition_list_destroy(topics);
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR)
        return cl_errorf(err, "cannot subscribe: %s", rd_kafka_err2str(e));

    static const uint64_t one = 1; /* eventfd needs an 8-byte payload */
    rd_kafka_queue_io_event_enable(src->queue, src->efd, &one, sizeof one);
    uv_poll_start(&src->poll, UV_READABLE, on_poll);
    uv_timer_start(&src->timer, on_timer, src->poll_interval_ms, src->poll_interval_ms);
    src->state = SRC_RUNNING;
    src->subscribed = true;
    /* Anything queued before the io event was enabled never signals the fd. */
    service(src);
    return CL_OK;
}

void cl_kafka_source_store_offset(cl_kafka_source_t *src, const char *topic, int32_t partition,
                                  int64_t next_offset)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, topic, partition)->offset = next_offset;
    rd_kafka_resp_err_t e = rd_kafka_offsets_store(src->rk, l);
    /* _STATE / per-partition _UNKNOWN_PARTITION: no longer assigned; the new
     * owner re-reads from the last commit, which is safe (writes are idempotent). */
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR)
        cl_log_debug("kafka", "offset %lld for %s [%d] not stored: %s", (long long)next_offset,
                     topic, (int)partition, rd_kafka_err2str(e));
    rd_kafka_topic_partition_list_destroy(l);
}

void cl_kafka_source_set_paused(cl_kafka_source_t *src, bool paused)
{
    if (src->paused == paused || src->rk == NULL)
        return;
    src->paused = paused;
    rd_kafka_topic_partition_list_t *parts = NULL;
    if (rd_kafka_assignment(src->rk, &parts) != RD_KAFKA_RESP_ERR_NO_ERROR || parts == NULL)
        return;
    if (parts->cnt > 0) {
        if (paused)
            rd_kafka_pause_partitions(src->rk, parts);
        else
            rd_kafka_resume_partitions(src->rk, parts);
    }
    rd_kafka_topic_partition_list_destroy(parts);
}

bool cl_kafka_source_paused(const cl_kafka_source_t *src)
{
    return src->paused;
}

void cl_kafka_source_stats(const cl_kafka_source_t *src, cl_kafka_source_stats_t *out)
{
    *out = src->stats;
}

size_t cl_kafka_source_stopped(const cl_kafka_source_t *src, char *list, size_t list_size)
{
    size_t used = 0;
    for (size_t i = 0; i < src->stopped_count && list_size > 0; i++) {
        int n = snprintf(list + used, list_size - used, "%s%s [%d]", i > 0 ? ", " : "",
                         src->stopped[i].topic, (int)src->stopped[i].partition);
        if (n < 0 || (size_t)n >= list_size - used) {
            list[used] = '\0'; /* what does not fit is left out, whole */
            break;
        }
        used += (size_t)n;
    }
    return src->stopped_count;
}

int cl_kafka_source_assigned_count(const cl_kafka_source_t *src)
{
    rd_kafka_topic_partition_list_t *parts = NULL;
    if (src->rk == NULL || rd_kafka_assignment(src->rk, &parts) != RD_KAFKA_RESP_ERR_NO_ERROR ||
        parts == NULL)
        return 0;
    int n = parts->cnt;
    rd_kafka_topic_partition_list_destroy(parts);
    return n;
}

void cl_kafka_source_foreach_lag(cl_kafka_source_t *src,
                                 void (*fn)(void *arg, const char *topic, int32_t partition,
                                            int64_t lag),
                                 void *arg)
{
    rd_kafka_topic_partition_list_t *parts = NULL;
    if (src->rk == NULL || src->state != SRC_RUNNING ||
        rd_kafka_assignment(src->rk, &parts) != RD_KAFKA_RESP_ERR_NO_ERROR || parts == NULL)
        return;
    rd_kafka_position(src->rk, parts);
    for (int i = 0; i < parts->cnt; i++) {
        const rd_kafka_topic_partition_t *tp = &parts->elems[i];
        int64_t low = -1, high = -1;
        if (rd_kafka_get_watermark_offsets(src->rk, tp->topic, tp->partition, &low, &high) !=
                RD_KAFKA_RESP_ERR_NO_ERROR ||
            high < 0)
            continue;
        /* No position yet: nothing consumed since the assignment, the whole
         * range from the low watermark is behind (an upper bound). */
        int64_t next = tp->offset >= 0 ? tp->offset : low;
        if (next < 0)
            continue;
        fn(arg, tp->topic, tp->partition, high > next ? high - next : 0);
    }
    rd_kafka_topic_partition_list_destroy(parts);
}

static void on_handle_closed(uv_handle_t *h)
{
    cl_kafka_source_t *src = h->data;
    if (--src->open_handles > 0)
        return;
    close(src->efd);
    for (size_t i = 0; i < src->topic_count; i++)
        free(src->topics[i]);
    free(src->topics);
    free(src->resets);
    free(src->stopped);
    bool subscribed = src->subscribed;
    cl_close_cb cb = src->close_cb;
    void *arg = src->close_arg;
    free(src);
    if (subscribed)
        cl_log_info("kafka", "consumer closed, stored offsets committed");
    if (cb != NULL)
        cb(arg);
}

static void finish_close(cl_kafka_source_t *src)
{
    src->state = SRC_CLOSED;
    /* Detach the fd before closing it (librdkafka would write to a closed or
     * reused descriptor otherwise). */
    rd_kafka_queue_io_event_enable(src->queue, -1, NULL, 0);
    rd_kafka_queue_destroy(src->queue);
    src->queue = NULL;
    rd_kafka_destroy(src->rk);
    src->rk = NULL;
    uv_close((uv_handle_t *)&src->poll, on_handle_closed);
    uv_close((uv_handle_t *)&src->timer, on_handle_closed);
    uv_close((uv_handle_t *)&src->idle, on_handle_closed);
}

void cl_kafka_source_close(cl_kafka_source_t *src, cl_close_cb cb, void *arg)
{
    src->close_cb = cb;
    src->close_arg = arg;
    if (src->state != SRC_RUNNING) {
        /* Never subscribed: nothing to leave. */
        finish_close(src);
        return;
    }
    src->state = SRC_CLOSING;
    /* Asynchronous close: revokes the assignment (commits stored offsets) and
     * leaves the group in librdkafka's threads; its events arrive on the
     * consumer queue, which the poll/timer/idle handles keep serving. */
    rd_kafka_error_t *e = rd_kafka_consumer_close_queue(src->rk, src->queue);
    if (e != NULL) {
        cl_log_error("kafka", "consumer close: %s", rd_kafka_error_string(e));
        rd_kafka_error_destroy(e);
        finish_close(src);
        return;
    }
    service(src);
}

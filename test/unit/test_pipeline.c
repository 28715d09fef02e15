/* Loop tests of the ingest pipeline (pipeline.c): batching, offsets after
 * commit, backpressure, poison isolation and drain.
 *
 * The pipeline runs on a real libuv loop with the real event parser, offsets
 * and isolation modules; the store and the Kafka source it drives are the
 * link-time fakes of fake_ingest.c, so each test decides when every write
 * completes and with what result, and reads back what the pipeline told the
 * source (paused or not, offsets stored). Messages are handed to the
 * pipeline's Kafka handlers directly, as the source would from its poll.
 * Every test closes the pipeline and asserts that the loop then closes
 * cleanly. */
#include "clickloop/pipeline.h"

#include <uv.h>

#include "cl_test.h"
#include "clickloop/log.h"
#include "fake_ingest.h"

#define TOPIC "clicks"

static struct rd_kafka_topic_s topic_clicks = {TOPIC};

typedef struct {
    uv_loop_t loop;
    cl_event_parser_t *parser;
    cl_store_t *store;
    struct cl_kafka_source_s source;
    cl_pipeline_t *pipeline;
    unsigned drained;         /* drain callbacks */
    unsigned closed;          /* close callbacks */
    unsigned committed_calls; /* on_batch_committed */
    size_t committed_events;
} fixture_t;

/* Bounds that no test reaches unless it lowers them. */
static cl_pipeline_params_t default_params(void)
{
    cl_pipeline_params_t params = {
        .batch_max_events = 100,
        .batch_max_delay_ms = 60000,
        .max_in_flight_events = 1000,
        .batch_max_bytes = 1024 * 1024,
        .max_rejected_payload_bytes = 1024,
        .time_window = {.max_age_ms = 86400000, .max_future_skew_ms = 3600000},
    };
    return params;
}

static void on_batch_committed(void *arg, size_t events, uint64_t latency_ms)
{
    fixture_t *f = arg;
    CL_UNUSED(latency_ms);
    f->committed_calls++;
    f->committed_events += events;
}

static void fixture_init(fixture_t *f, const cl_pipeline_params_t *params)
{
    memset(f, 0, sizeof *f);
    CL_ASSERT_INT_EQ(0, uv_loop_init(&f->loop));
    char err[CL_ERR_LEN];
    if (cl_event_parser_new(NULL, 64 * 1024, &f->parser, err) != CL_OK)
        CL_FAIL_("cl_event_parser_new: %s", err);
    f->store = fake_store_new();
    cl_pipeline_params_t p = *params;
    p.on_batch_committed = on_batch_committed;
    p.on_batch_committed_arg = f;
    f->pipeline = cl_pipeline_new(&f->loop, &p, f->parser, f->store);
    cl_pipeline_set_source(f->pipeline, &f->source);
}

static void on_drained(void *arg)
{
    ((fixture_t *)arg)->drained++;
}

static void on_closed(void *arg)
{
    ((fixture_t *)arg)->closed++;
}

/* Close the pipeline, run the loop to the end, and check that nothing is left
 * open. The fake store stays readable until fixture_free(). */
static void fixture_close(fixture_t *f)
{
    cl_pipeline_close(f->pipeline, on_closed, f);
    CL_ASSERT_INT_EQ(0, f->closed); /* from the close callback, not before */
    CL_ASSERT_INT_EQ(0, uv_run(&f->loop, UV_RUN_DEFAULT));
    CL_ASSERT_INT_EQ(1, f->closed);
    CL_ASSERT_INT_EQ(0, uv_loop_close(&f->loop));
    cl_event_parser_free(f->parser);
}

static void fixture_free(fixture_t *f)
{
    free(f->store);
}

/* Hand one message to the pipeline as the Kafka source would. */
static void feed_payload(fixture_t *f, int32_t partition, int64_t offset, const char *payload)
{
    rd_kafka_message_t msg;
    memset(&msg, 0, sizeof msg);
    msg.rkt = &topic_clicks;
    msg.partition = partition;
    msg.offset = offset;
    msg.payload = (void *)payload;
    msg.len = payload != NULL ? strlen(payload) : 0;
    cl_pipeline_kafka_handlers()->on_message(f->pipeline, &msg);
}

/* A valid event dated now, of about 80 bytes. */
static void feed_event(fixture_t *f, int32_t partition, int64_t offset)
{
    char payload[256];
    snprintf(payload, sizeof payload,
             "{\"user_id\":\"user-%lld\",\"timestamp\":%lld,\"url\":\"/page/%lld\"}",
             (long long)offset, (long long)cl_wall_ms(), (long long)offset);
    feed_payload(f, partition, offset, payload);
}

static cl_pipeline_stats_t stats(const fixture_t *f)
{
    cl_pipeline_stats_t st;
    cl_pipeline_get_stats(f->pipeline, &st);
    return st;
}

/* Complete write `index` of the fake store; a write that is not in flight is
 * a failure of the test, not a crash. */
#define COMPLETE(f, index, status, message)                                                        \
    do {                                                                                           \
        if (fake_store_complete((f)->store, (index), (status), (message)) != CL_OK)                \
            CL_FAIL_("write %d is not in flight (%zu writes)", (int)(index),                       \
                     (f)->store->write_count);                                                     \
    } while (0)

static const fake_write_t *write_at(const fixture_t *f, size_t index)
{
    return &f->store->writes[index];
}

/* Complete every write still in flight with `status`, oldest first, until
 * none is left (a refused write may start others). */
static void complete_all(fixture_t *f, int status)
{
    for (size_t i = 0; i < f->store->write_count; i++)
        if (!f->store->writes[i].completed)
            COMPLETE(f, i, status, "refused");
}

static void assert_stored_offset(const fixture_t *f, size_t index, int32_t partition,
                                 int64_t next_offset)
{
    if (index >= f->source.stored_count) {
        CL_FAIL_("offset #%zu was not stored (%zu stored)", index, f->source.stored_count);
        return;
    }
    const fake_stored_offset_t *o = &f->source.stored[index];
    CL_ASSERT_STR_EQ(TOPIC, o->topic);
    CL_ASSERT_INT_EQ(partition, o->partition);
    CL_ASSERT_INT_EQ(next_offset, o->next_offset);
}

/* ---- Batching ------------------------------------------------------------ */

static void test_batch_closes_at_max_events(void)
{
    fixture_t f;
    cl_pipeline_params_t params = default_params();
    params.batch_max_events = 3;
    fixture_init(&f, &params);

    feed_event(&f, 0, 0);
    feed_event(&f, 0, 1);
    CL_ASSERT_INT_EQ(0, f.store->write_count);
    feed_event(&f, 0, 2);
    CL_ASSERT_INT_EQ(1, f.store->write_count);
    CL_ASSERT_INT_EQ(3, write_at(&f, 0)->n_rows);
    CL_ASSERT_INT_EQ(0, write_at(&f, 0)->n_rejected);
    CL_ASSERT_INT_EQ(0, write_at(&f, 0)->rows[0].offset);
    CL_ASSERT_INT_EQ(2, write_at(&f, 0)->rows[2].offset);
    feed_event(&f, 0, 3);
    CL_ASSERT_INT_EQ(1, f.store->write_count); /* the next batch is open */
    CL_ASSERT_INT_EQ(4, stats(&f).consumed);
    CL_ASSERT_INT_EQ(4, stats(&f).in_flight);

    complete_all(&f, CL_OK);
    cl_pipeline_drain(f.pipeline, on_drained, &f);
    CL_ASSERT_INT_EQ(2, f.store->write_count);
    CL_ASSERT_INT_EQ(1, write_at(&f, 1)->n_rows);
    complete_all(&f, CL_OK);
    CL_ASSERT_INT_EQ(1, f.drained);
    CL_ASSERT_INT_EQ(2, stats(&f).batches);
    CL_ASSERT_INT_EQ(4, stats(&f).stored);
    CL_ASSERT_INT_EQ(0, stats(&f).in_flight);
    CL_ASSERT_INT_EQ(2, f.committed_calls);
    CL_ASSERT_INT_EQ(4, f.committed_events);
    fixture_close(&f);
    fixture_free(&f);
}

static void test_batch_closes_at_max_bytes(void)
{
    fixture_t f;
    cl_pipeline_params_t params = default_params();
    params.batch_max_bytes = 100; /* each event is 60-80 bytes: two reach it */
    fixture_init(&f, &params);

    feed_event(&f, 0, 0);
    CL_ASSERT_INT_EQ(0, f.store->write_count);
    feed_event(&f, 0, 1);
    CL_ASSERT_INT_EQ(1, f.store->write_count);
    CL_ASSERT_INT_EQ(2, write_at(&f, 0)->n_rows);

    complete_all(&f, CL_OK);
    fixture_close(&f);
    fixture_free(&f);
}

static void on_guard_timer(uv_timer_t *t)
{
    CL_UNUSED(t);
}

/* Run the loop until `f->store` has `writes` writes, for at most
 * `timeout_ms`: a guard timer wakes the loop up if nothing else does. */
static void run_until_writes(fixture_t *f, size_t writes, uint64_t timeout_ms)
{
    uv_timer_t guard;
    uv_timer_init(&f->loop, &guard);
    uv_timer_start(&guard, on_guard_timer, timeout_ms, 0);
    uint64_t deadline = cl_now_ms() + timeout_ms;
    while (f->store->write_count < writes && cl_now_ms() < deadline)
        uv_run(&f->loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&guard, NULL);
    uv_run(&f->loop, UV_RUN_NOWAIT); /* the guard's close completes */
}

static void test_batch_closes_after_max_delay_on_the_loop_timer(void)
{
    fixture_t f;
    cl_pipeline_params_t params = default_params();
    params.batch_max_delay_ms = 30;
    fixture_init(&f, &params);

    uv_update_time(&f.loop);
    uint64_t start = cl_now_ms();
    feed_event(&f, 0, 0);
    feed_event(&f, 0, 1);
    CL_ASSERT_INT_EQ(0, f.store->write_count);
    run_until_writes(&f, 1, 5000);
    CL_ASSERT_INT_EQ(1, f.store->write_count);
    CL_ASSERT_INT_EQ(2, write_at(&f, 0)->n_rows);
    /* Not before the delay (1 ms of slack: the loop's clock is cached). */
    uint64_t elapsed = write_at(&f, 0)->submitted_ms - start;
    if (elapsed + 1 < params.batch_max_delay_ms)
        CL_FAIL_("the batch closed after %llu ms, before its delay of %llu ms",
                 (unsigned long long)elapsed, (unsigned long long)params.batch_max_delay_ms);

    complete_all(&f, CL_OK);
    assert_stored_offset(&f, 0, 0, 2);
    fixture_close(&f);
    fixture_free(&f);
}

static void test_batch_closes_before_the_packet_limit(void)
{
    fixture_t f;
    cl_pipeline_params_t params = default_params();
    fixture_init(&f, &params);
    /* Room for two rows' SQL, not three. */
    f.store->max_batch_sql_bytes = CL_STORE_BATCH_SQL_BASE_BYTES + 2 * FAKE_ROW_SQL_BYTES + 500;

    feed_event(&f, 0, 0);
    feed_event(&f, 0, 1);
    CL_ASSERT_INT_EQ(0, f.store->write_count);
    feed_event(&f, 0, 2); /* would take the batch over: the open one goes first */
    CL_ASSERT_INT_EQ(1, f.store->write_count);
    CL_ASSERT_INT_EQ(2, write_at(&f, 0)->n_rows);

    cl_pipeline_drain(f.pipeline, on_drained, &f);
    CL_ASSERT_INT_EQ(2, f.store->write_count);
    CL_ASSERT_INT_EQ(1, write_at(&f, 1)->n_rows);
    CL_ASSERT_INT_EQ(2, write_at(&f, 1)->rows[0].offset);
    complete_all(&f, CL_OK);
    CL_ASSERT_INT_EQ(1, f.drained);
    fixture_close(&f);
    fixture_free(&f);
}

static void test_event_over_the_packet_limit_alone_is_rejected(void)
{
    fixture_t f;
    cl_pipeline_params_t params = default_params();
    params.batch_max_events = 1;
    fixture_init(&f, &params);
    f.store->max_batch_sql_bytes = CL_STORE_BATCH_SQL_BASE_BYTES + FAKE_ROW_SQL_BYTES - 1;

    feed_event(&f, 0, 7);
    CL_ASSERT_INT_EQ(1, f.store->write_count);
    CL_ASSERT_INT_EQ(0, write_at(&f, 0)->n_rows);
    CL_ASSERT_INT_EQ(1, write_at(&f, 0)->n_rejected);
    CL_ASSERT_INT_EQ(7, write_at(&f, 0)->rejected[0].offset);
    CL_ASSERT_STR_CONTAINS(write_at(&f, 0)->reason[0], "max_allowed_packet");

    complete_all(&f, CL_OK);
    CL_ASSERT_INT_EQ(1, stats(&f).rejected);
    CL_ASSERT_INT_EQ(0, stats(&f).stored);
    assert_stored_offset(&f, 0, 0, 8);
    fixture_close(&f);
    fixture_free(&f);
}

/* ---- Offsets ------------------------------------------------------------- */

static void test_offsets_stored_only_after_the_batch_commits(void)
{
    fixture_t f;
    cl_pipeline_params_t params = default_params();
    params.batch_max_events = 3;
    fixture_init(&f, &params);

    for (int64_t o = 10; o < 13; o++)
        feed_event(&f, 0, o);
    CL_ASSERT_INT_EQ(1, f.store->write_count);
    CL_ASSERT_INT_EQ(0, f.source.stored_count);
    COMPLETE(&f, 0, CL_OK, NULL);
    CL_ASSERT_INT_EQ(1, f.source.stored_count);
    assert_stored_offset(&f, 0, 0, 13);
    fixture_close(&f);
    fixture_free(&f);
}

static void test_offsets_stay_in_order_when_a_later_batch_commits_first(void)
{
    fixture_t f;
    cl_pipeline_params_t params = default_params();
    params.batch_max_events = 2;
    fixture_init(&f, &params);

    for (int64_t o = 0; o < 6; o++)
        feed_event(&f, 0, o); /* batches A (0-1), B (2-3), C (4-5) */
    CL_ASSERT_INT_EQ(3, f.store->write_count);

    COMPLETE(&f, 1, CL_OK, NULL);               /* B */
    COMPLETE(&f, 2, CL_OK, NULL);               /* C */
    CL_ASSERT_INT_EQ(0, f.source.stored_count); /* A is still in flight */
    CL_ASSERT_INT_EQ(2, stats(&f).batches);
    COMPLETE(&f, 0, CL_OK, NULL); /* A: the whole prefix is done */
    CL_ASSERT_INT_EQ(1, f.source.stored_count);
    assert_stored_offset(&f, 0, 0, 6);
    fixture_close(&f);
    fixture_free(&f);
}

static void test_partitions_advance_independently(void)
{
    fixture_t f;
    cl_pipeline_params_t params = default_params();
    params.batch_max_events = 2;
    fixture_init(&f, &params);

    feed_event(&f, 0, 100);
    feed_event(&f, 1, 500); /* A: one message of each partition */
    feed_event(&f, 1, 501);
    feed_event(&f, 1, 502); /* B: partition 1 only */
    CL_ASSERT_INT_EQ(2, f.store->write_count);

    COMPLETE(&f, 1, CL_OK, NULL);
    CL_ASSERT_INT_EQ(0, f.source.stored_count); /* 500, in A, is before B */
    COMPLETE(&f, 0, CL_OK, NULL);
    CL_ASSERT_INT_EQ(2, f.source.stored_count);
    /* A's segments in the order it met them: partition 0, then 1 (over B too). */
    assert_stored_offset(&f, 0, 0, 101);
    assert_stored_offset(&f, 1, 1, 503);
    fixture_close(&f);
    fixture_free(&f);
}

static void test_revoked_partition_moves_no_offset(void)
{
    fixture_t f;
    cl_pipeline_params_t params = default_params();
    params.batch_max_events = 2;
    fixture_init(&f, &params);

    feed_event(&f, 3, 40);
    feed_event(&f, 3, 41);
    CL_ASSERT_INT_EQ(1, f.store->write_count);
    rd_kafka_topic_partition_t part = {.topic = TOPIC, .partition = 3};
    rd_kafka_topic_partition_list_t parts = {.cnt = 1, .size = 1, .elems = &part};
    cl_pipeline_kafka_handlers()->on_revoke(f.pipeline, &parts, false);
    COMPLETE(&f, 0, CL_OK, NULL);
    CL_ASSERT_INT_EQ(0, f.source.stored_count); /* the new owner re-reads them */
    CL_ASSERT_INT_EQ(2, stats(&f).stored);      /* but they were stored */

    /* Assigned again: the partition's offsets move from its next batch on. */
    cl_pipeline_kafka_handlers()->on_assign(f.pipeline, &parts);
    feed_event(&f, 3, 40);
    feed_event(&f, 3, 41);
    COMPLETE(&f, 1, CL_OK, NULL);
    assert_stored_offset(&f, 0, 3, 42);
    fixture_close(&f);
    fixture_free(&f);
}

/* ---- Backpressure -------------------------------------------------------- */

static void test_pauses_at_the_in_flight_limit_and_resumes_at_half(void)
{
    fixture_t f;
    cl_pipeline_params_t params = default_params();
    params.batch_max_events = 1;
    params.max_in_flight_events = 4;
    fixture_init(&f, &params);

    for (int64_t o = 0; o < 3; o++)
        feed_event(&f, 0, o);
    CL_ASSERT(!f.source.paused);
    feed_event(&f, 0, 3);
    CL_ASSERT(f.source.paused);
    CL_ASSERT(stats(&f).paused);
    CL_ASSERT_INT_EQ(4, stats(&f).in_flight);

    COMPLETE(&f, 0, CL_OK, NULL);
    CL_ASSERT_INT_EQ(3, stats(&f).in_flight);
    CL_ASSERT(f.source.paused); /* 3 is above half the limit */
    COMPLETE(&f, 1, CL_OK, NULL);
    CL_ASSERT_INT_EQ(2, stats(&f).in_flight);
    CL_ASSERT(!f.source.paused);
    CL_ASSERT_INT_EQ(1, f.source.pause_calls);
    CL_ASSERT_INT_EQ(1, f.source.resume_calls);

    complete_all(&f, CL_OK);
    CL_ASSERT(!f.source.paused);
    CL_ASSERT_INT_EQ(1, f.source.pause_calls);
    fixture_close(&f);
    fixture_free(&f);
}

/* Big events pause consumption by their bytes long before the event bound;
 * it resumes once both counts are down to half. */
static void test_pauses_at_the_byte_limit_and_resumes_at_half(void)
{
    fixture_t f;
    cl_pipeline_params_t params = default_params();
    params.batch_max_events = 1;
    params.max_in_flight_events = 1000;
    params.max_in_flight_bytes = 0;
    fixture_init(&f, &params);
    /* Measure what one such event holds (payload and SQL) with no bound. */
    feed_event(&f, 0, 0);
    uint64_t one = stats(&f).in_flight_bytes;
    CL_ASSERT(one > 60); /* at least its payload */
    COMPLETE(&f, 0, CL_OK, NULL);
    CL_ASSERT_INT_EQ(0, stats(&f).in_flight_bytes);

    params.max_in_flight_bytes = 4 * one;
    cl_pipeline_set_params(f.pipeline, &params);
    for (int64_t o = 1; o <= 3; o++)
        feed_event(&f, 0, o);
    CL_ASSERT(!f.source.paused);
    feed_event(&f, 0, 4); /* the fourth reaches the bound: 4 events of 1000 */
    CL_ASSERT(f.source.paused);
    CL_ASSERT_INT_EQ(4, stats(&f).in_flight);
    CL_ASSERT(stats(&f).in_flight_bytes >= 4 * one - 4); /* offsets differ in a digit */

    COMPLETE(&f, 1, CL_OK, NULL);
    CL_ASSERT(f.source.paused); /* 3 x one is above half the bound */
    COMPLETE(&f, 2, CL_OK, NULL);
    CL_ASSERT(!f.source.paused);
    complete_all(&f, CL_OK);
    CL_ASSERT_INT_EQ(0, stats(&f).in_flight_bytes);
    CL_ASSERT_INT_EQ(0, stats(&f).in_flight);
    fixture_close(&f);
    fixture_free(&f);
}

static void test_lowering_the_in_flight_limit_pauses_at_once(void)
{
    fixture_t f;
    cl_pipeline_params_t params = default_params();
    fixture_init(&f, &params);

    for (int64_t o = 0; o < 5; o++)
        feed_event(&f, 0, o);
    CL_ASSERT(!f.source.paused);
    params.max_in_flight_events = 5;
    cl_pipeline_set_params(f.pipeline, &params);
    CL_ASSERT(f.source.paused);

    cl_pipeline_drain(f.pipeline, on_drained, &f);
    complete_all(&f, CL_OK);
    CL_ASSERT_INT_EQ(1, f.drained);
    fixture_close(&f);
    fixture_free(&f);
}

/* ---- Rejected messages and refused writes -------------------------------- */

static void test_malformed_message_is_written_as_rejected_and_its_offset_moves_on(void)
{
    fixture_t f;
    cl_pipeline_params_t params = default_params();
    params.batch_max_events = 3;
    fixture_init(&f, &params);

    feed_event(&f, 0, 20);
    feed_payload(&f, 0, 21, "{\"user_id\": not json");
    feed_event(&f, 0, 22);
    CL_ASSERT_INT_EQ(1, f.store->write_count);
    const fake_write_t *w = write_at(&f, 0);
    CL_ASSERT_INT_EQ(2, w->n_rows);
    CL_ASSERT_INT_EQ(1, w->n_rejected);
    CL_ASSERT_INT_EQ(21, w->rejected[0].offset);
    CL_ASSERT_STR_EQ(TOPIC, w->rejected[0].topic);
    CL_ASSERT_INT_EQ(strlen("{\"user_id\": not json"), w->payload_len[0]); /* kept whole */
    CL_ASSERT(w->reason[0][0] != '\0');

    COMPLETE(&f, 0, CL_OK, NULL);
    assert_stored_offset(&f, 0, 0, 23);
    CL_ASSERT_INT_EQ(2, stats(&f).stored);
    CL_ASSERT_INT_EQ(1, stats(&f).rejected);
    CL_ASSERT_INT_EQ(3, f.committed_events);
    fixture_close(&f);
    fixture_free(&f);
}

static void test_event_outside_the_time_window_is_rejected(void)
{
    fixture_t f;
    cl_pipeline_params_t params = default_params();
    params.batch_max_events = 1;
    fixture_init(&f, &params);

    /* 2001-09-09, far past the one-day window. */
    feed_payload(&f, 0, 5, "{\"user_id\":\"u\",\"timestamp\":1000000000000,\"url\":\"/\"}");
    CL_ASSERT_INT_EQ(1, f.store->write_count);
    CL_ASSERT_INT_EQ(0, write_at(&f, 0)->n_rows);
    CL_ASSERT_INT_EQ(1, write_at(&f, 0)->n_rejected);
    complete_all(&f, CL_OK);
    assert_stored_offset(&f, 0, 0, 6);
    fixture_close(&f);
    fixture_free(&f);
}

static void test_tombstone_is_rejected(void)
{
    fixture_t f;
    cl_pipeline_params_t params = default_params();
    params.batch_max_events = 1;
    fixture_init(&f, &params);

    feed_payload(&f, 0, 9, NULL);
    CL_ASSERT_INT_EQ(1, write_at(&f, 0)->n_rejected);
    CL_ASSERT_INT_EQ(0, write_at(&f, 0)->payload_len[0]);
    complete_all(&f, CL_OK);
    assert_stored_offset(&f, 0, 0, 10);
    fixture_close(&f);
    fixture_free(&f);
}

static void test_refused_write_is_split_until_the_culprit_is_rejected(void)
{
    fixture_t f;
    cl_pipeline_params_t params = default_params();
    params.batch_max_events = 4;
    fixture_init(&f, &params);

    for (int64_t o = 0; o < 4; o++)
        feed_event(&f, 0, o);
    /* Offset 2 is the culprit: every write holding it is refused. */
    COMPLETE(&f, 0, CL_ERR, "Incorrect string value");
    CL_ASSERT_INT_EQ(3, f.store->write_count); /* halves 0-1 and 2-3 */
    CL_ASSERT_INT_EQ(2, write_at(&f, 1)->n_rows);
    CL_ASSERT_INT_EQ(0, write_at(&f, 1)->rows[0].offset);
    CL_ASSERT_INT_EQ(2, write_at(&f, 2)->n_rows);
    CL_ASSERT_INT_EQ(2, write_at(&f, 2)->rows[0].offset);
    COMPLETE(&f, 1, CL_OK, NULL);
    COMPLETE(&f, 2, CL_ERR, "Incorrect string value");
    CL_ASSERT_INT_EQ(5, f.store->write_count); /* 2 alone, 3 alone */
    CL_ASSERT_INT_EQ(2, write_at(&f, 3)->rows[0].offset);
    CL_ASSERT_INT_EQ(3, write_at(&f, 4)->rows[0].offset);
    COMPLETE(&f, 4, CL_OK, NULL);
    CL_ASSERT_INT_EQ(0, f.source.stored_count);
    COMPLETE(&f, 3, CL_ERR, "Incorrect string value");
    /* Refused alone: written again as a rejected event with the reason. */
    CL_ASSERT_INT_EQ(6, f.store->write_count);
    const fake_write_t *w = write_at(&f, 5);
    CL_ASSERT_INT_EQ(0, w->n_rows);
    CL_ASSERT_INT_EQ(1, w->n_rejected);
    CL_ASSERT_INT_EQ(2, w->rejected[0].offset);
    CL_ASSERT_STR_CONTAINS(w->reason[0], "MariaDB refused the event: Incorrect string value");
    CL_ASSERT_INT_EQ(0, f.source.stored_count);

    COMPLETE(&f, 5, CL_OK, NULL);
    assert_stored_offset(&f, 0, 0, 4);
    cl_pipeline_stats_t st = stats(&f);
    CL_ASSERT_INT_EQ(3, st.stored);
    CL_ASSERT_INT_EQ(1, st.rejected);
    CL_ASSERT_INT_EQ(1, st.batches);
    CL_ASSERT_INT_EQ(3, st.batch_failures);
    CL_ASSERT_INT_EQ(0, st.in_flight);
    CL_ASSERT_INT_EQ(4, f.committed_events); /* the culprit counts once */
    fixture_close(&f);
    fixture_free(&f);
}

static void test_cancelled_write_abandons_the_batch_without_offsets(void)
{
    fixture_t f;
    cl_pipeline_params_t params = default_params();
    params.batch_max_events = 2;
    fixture_init(&f, &params);

    feed_event(&f, 0, 0);
    feed_event(&f, 0, 1);
    COMPLETE(&f, 0, CL_ERR_RETRY, "the store closed");
    CL_ASSERT_INT_EQ(1, f.store->write_count); /* not retried by the pipeline */
    CL_ASSERT_INT_EQ(0, f.source.stored_count);
    CL_ASSERT_INT_EQ(0, stats(&f).in_flight);
    CL_ASSERT_INT_EQ(0, stats(&f).batches);
    CL_ASSERT_INT_EQ(0, f.committed_calls);
    fixture_close(&f);
    fixture_free(&f);
}

static void test_write_refused_at_submission_abandons_the_batch(void)
{
    fixture_t f;
    cl_pipeline_params_t params = default_params();
    params.batch_max_events = 2;
    fixture_init(&f, &params);
    f.store->refuse_writes = true;

    feed_event(&f, 0, 0);
    feed_event(&f, 0, 1);
    CL_ASSERT_INT_EQ(0, f.store->write_count);
    CL_ASSERT_INT_EQ(0, f.source.stored_count);
    CL_ASSERT_INT_EQ(0, stats(&f).in_flight);
    cl_pipeline_drain(f.pipeline, on_drained, &f);
    CL_ASSERT_INT_EQ(1, f.drained);
    fixture_close(&f);
    fixture_free(&f);
}

/* An abandoned batch (a write cancelled or refused at submission, see
 * pipeline.h: "its offsets stay") keeps its partition from committing past
 * it, even when a later batch of that partition is stored. */
static void test_offsets_do_not_pass_an_abandoned_batch(void)
{
    fixture_t f;
    cl_pipeline_params_t params = default_params();
    params.batch_max_events = 2;
    fixture_init(&f, &params);

    feed_event(&f, 0, 0);
    feed_event(&f, 0, 1); /* A */
    feed_event(&f, 0, 2);
    feed_event(&f, 0, 3); /* B */
    COMPLETE(&f, 0, CL_ERR_RETRY, "the store closed");
    COMPLETE(&f, 1, CL_OK, NULL);
    /* A's events were never stored: no offset may pass 0. */
    for (size_t i = 0; i < f.source.stored_count; i++)
        if (f.source.stored[i].next_offset > 0)
            CL_FAIL_("offset %lld stored past the abandoned batch at 0-1",
                     (long long)f.source.stored[i].next_offset);
    fixture_close(&f);
    fixture_free(&f);
}

/* Readiness asks for the oldest batch not written yet: the open one or one
 * being written, with where its first event comes from. */
static void test_the_oldest_unwritten_batch_is_named(void)
{
    fixture_t f;
    cl_pipeline_params_t params = default_params();
    params.batch_max_events = 2;
    fixture_init(&f, &params);
    uint64_t age = 99;
    char desc[256];
    CL_ASSERT(!cl_pipeline_oldest_unwritten(f.pipeline, &age, desc, sizeof desc));

    feed_event(&f, 1, 7);
    feed_event(&f, 1, 8);  /* submitted */
    feed_event(&f, 3, 40); /* open */
    CL_ASSERT(cl_pipeline_oldest_unwritten(f.pipeline, &age, desc, sizeof desc));
    CL_ASSERT(age < 5000);
    CL_ASSERT_STR_CONTAINS(desc, "2 events, the first from ");
    CL_ASSERT_STR_CONTAINS(desc, " [1] at offset 7");
    COMPLETE(&f, 0, CL_OK, NULL);
    CL_ASSERT(cl_pipeline_oldest_unwritten(f.pipeline, &age, desc, sizeof desc));
    CL_ASSERT_STR_CONTAINS(desc, "1 events, the first from ");
    CL_ASSERT_STR_CONTAINS(desc, " [3] at offset 40"); /* the open batch */
    fixture_close(&f);
    fixture_free(&f);
}

/* ---- Drain --------------------------------------------------------------- */

static void test_drain_completes_once_every_batch_in_flight_completed(void)
{
    fixture_t f;
    cl_pipeline_params_t params = default_params();
    params.batch_max_events = 2;
    fixture_init(&f, &params);

    for (int64_t o = 0; o < 5; o++)
        feed_event(&f, 0, o); /* two batches in flight, one open with offset 4 */
    CL_ASSERT_INT_EQ(2, f.store->write_count);
    cl_pipeline_drain(f.pipeline, on_drained, &f);
    CL_ASSERT(f.source.paused);
    CL_ASSERT_INT_EQ(3, f.store->write_count); /* the open batch was closed */
    CL_ASSERT_INT_EQ(4, write_at(&f, 2)->rows[0].offset);
    CL_ASSERT_INT_EQ(0, f.drained);

    COMPLETE(&f, 2, CL_OK, NULL);
    COMPLETE(&f, 0, CL_OK, NULL);
    CL_ASSERT_INT_EQ(0, f.drained);
    COMPLETE(&f, 1, CL_ERR, "Incorrect string value"); /* split in two */
    CL_ASSERT_INT_EQ(0, f.drained);
    COMPLETE(&f, 3, CL_OK, NULL);
    CL_ASSERT_INT_EQ(0, f.drained);
    COMPLETE(&f, 4, CL_OK, NULL);
    CL_ASSERT_INT_EQ(1, f.drained);
    CL_ASSERT_INT_EQ(0, fake_store_pending(f.store));
    CL_ASSERT_INT_EQ(0, stats(&f).in_flight);
    assert_stored_offset(&f, f.source.stored_count - 1, 0, 5);

    /* Nothing later calls it again, not even a batch that commits after it
     * (a message the consumer had fetched before it paused). */
    uv_run(&f.loop, UV_RUN_NOWAIT);
    feed_event(&f, 0, 5);
    feed_event(&f, 0, 6);
    COMPLETE(&f, 5, CL_OK, NULL);
    CL_ASSERT_INT_EQ(1, f.drained);
    fixture_close(&f);
    CL_ASSERT_INT_EQ(1, f.drained);
    fixture_free(&f);
}

static void test_drain_with_nothing_in_flight_completes_at_once(void)
{
    fixture_t f;
    cl_pipeline_params_t params = default_params();
    fixture_init(&f, &params);

    cl_pipeline_drain(f.pipeline, on_drained, &f);
    CL_ASSERT_INT_EQ(1, f.drained);
    CL_ASSERT(f.source.paused);
    CL_ASSERT_INT_EQ(0, f.store->write_count);
    fixture_close(&f);
    CL_ASSERT_INT_EQ(1, f.drained);
    fixture_free(&f);
}

static void test_drain_keeps_consumption_paused(void)
{
    fixture_t f;
    cl_pipeline_params_t params = default_params();
    params.batch_max_events = 1;
    params.max_in_flight_events = 2;
    fixture_init(&f, &params);

    feed_event(&f, 0, 0);
    feed_event(&f, 0, 1);
    CL_ASSERT(f.source.paused); /* backpressure */
    cl_pipeline_drain(f.pipeline, on_drained, &f);
    complete_all(&f, CL_OK);
    CL_ASSERT_INT_EQ(0, stats(&f).in_flight);
    CL_ASSERT(f.source.paused); /* below half the limit, but draining */
    CL_ASSERT_INT_EQ(0, f.source.resume_calls);
    CL_ASSERT_INT_EQ(1, f.drained);
    fixture_close(&f);
    fixture_free(&f);
}

/* ---- Close --------------------------------------------------------------- */

static void test_close_frees_an_open_batch_without_writing_it(void)
{
    fixture_t f;
    cl_pipeline_params_t params = default_params();
    fixture_init(&f, &params);

    feed_event(&f, 0, 0);
    feed_event(&f, 1, 0);
    fixture_close(&f);
    CL_ASSERT_INT_EQ(0, f.store->write_count);
    CL_ASSERT_INT_EQ(0, f.source.stored_count);
    fixture_free(&f);
}

static const cl_test_case_t cases[] = {
    CL_TEST(test_batch_closes_at_max_events),
    CL_TEST(test_batch_closes_at_max_bytes),
    CL_TEST(test_batch_closes_after_max_delay_on_the_loop_timer),
    CL_TEST(test_batch_closes_before_the_packet_limit),
    CL_TEST(test_event_over_the_packet_limit_alone_is_rejected),
    CL_TEST(test_offsets_stored_only_after_the_batch_commits),
    CL_TEST(test_offsets_stay_in_order_when_a_later_batch_commits_first),
    CL_TEST(test_partitions_advance_independently),
    CL_TEST(test_revoked_partition_moves_no_offset),
    CL_TEST(test_pauses_at_the_in_flight_limit_and_resumes_at_half),
    CL_TEST(test_pauses_at_the_byte_limit_and_resumes_at_half),
    CL_TEST(test_lowering_the_in_flight_limit_pauses_at_once),
    CL_TEST(test_malformed_message_is_written_as_rejected_and_its_offset_moves_on),
    CL_TEST(test_event_outside_the_time_window_is_rejected),
    CL_TEST(test_tombstone_is_rejected),
    CL_TEST(test_refused_write_is_split_until_the_culprit_is_rejected),
    CL_TEST(test_cancelled_write_abandons_the_batch_without_offsets),
    CL_TEST(test_write_refused_at_submission_abandons_the_batch),
    CL_TEST(test_offsets_do_not_pass_an_abandoned_batch),
    CL_TEST(test_the_oldest_unwritten_batch_is_named),
    CL_TEST(test_drain_completes_once_every_batch_in_flight_completed),
    CL_TEST(test_drain_with_nothing_in_flight_completes_at_once),
    CL_TEST(test_drain_keeps_consumption_paused),
    CL_TEST(test_close_frees_an_open_batch_without_writing_it),
};

int main(int argc, char **argv)
{
    /* The refused writes of the isolation tests warn; keep the output to the
     * results. */
    cl_log_set_level(CL_LOG_ERROR);
    return cl_test_run(cases, CL_ARRAY_LEN(cases), argc, argv);
}

/* Loop tests of the retention runner (retention.h) on its database job, with
 * a fake pool (fake_db_pool.h) as MariaDB: batch after batch with a pause
 * between them, the first run at start, busy ticks, a policy change in place,
 * and closes during a pause or with a batch in flight. The SQL itself is
 * tested in test_retention.c. */
#include "clickloop/retention.h"

#include "cl_test.h"
#include "fake_db_pool.h"

#define HOUR_MS UINT64_C(3600000)

typedef struct {
    uv_loop_t loop;
    cl_retention_t *rt;
    unsigned closed;
} fixture_t;

static void on_closed(void *arg)
{
    ((fixture_t *)arg)->closed++;
}

static void setup(fixture_t *f, uint64_t interval_ms)
{
    char err[CL_ERR_LEN];
    memset(f, 0, sizeof *f);
    CL_ASSERT_INT_EQ(0, uv_loop_init(&f->loop));
    cl_retention_params_t p = {.raw_days = 30, .batch_rows = 2, .interval_ms = interval_ms};
    CL_ASSERT_INT_EQ(CL_OK, cl_retention_new(&f->loop, &p, &f->rt, err));
    CL_ASSERT_INT_EQ(CL_OK, cl_retention_start(f->rt, err));
}

static void teardown(fixture_t *f)
{
    CL_ASSERT_INT_EQ(CL_OK, cl_retention_close(f->rt, on_closed, f));
    CL_ASSERT_INT_EQ(CL_ERR, cl_retention_close(f->rt, on_closed, f));
    uv_run(&f->loop, UV_RUN_DEFAULT);
    CL_ASSERT_INT_EQ(1, f->closed);
    CL_ASSERT_INT_EQ(0, uv_loop_close(&f->loop));
}

static cl_retention_stats_t stats(const fixture_t *f)
{
    cl_retention_stats_t st;
    cl_retention_stats(f->rt, &st);
    return st;
}

/* Answer the batch in flight with these deletions (click_data, rejected). */
static void answer_batch(const char *events, const char *rejected)
{
    unsigned int summary;
    cl_buf_t b;
    char err[CL_ERR_LEN];
    cl_buf_init(&b);
    CL_ASSERT_INT_EQ(CL_OK, cl_retention_batch_sql(&b, 0, 2, &summary, err));
    cl_buf_free(&b);
    CL_ASSERT_STR_CONTAINS(fake_db_next_sql(), "DELETE FROM retention_batch");
    const char *row[CL_RETENTION_TABLE_COUNT] = {events, events, "0", events, rejected, "0", "0"};
    fake_db_answer(CL_OK, summary, CL_RETENTION_TABLE_COUNT, 1, row);
}

static void test_a_run_goes_on_batch_after_batch_while_they_are_full(void)
{
    fixture_t f;
    setup(&f, HOUR_MS);
    FAKE_RUN_UNTIL(&f.loop, fake_db_queued() == 1, 2000); /* the first run at start */
    CL_ASSERT_INT_EQ(1, fake_db_queued());
    CL_ASSERT_STR_CONTAINS(fake_db_next_sql(), "LIMIT 2");
    answer_batch("2", "0"); /* full: more may be left */
    CL_ASSERT_INT_EQ(0, fake_db_queued());
    CL_ASSERT(stats(&f).running); /* pausing between batches */
    FAKE_RUN_UNTIL(&f.loop, fake_db_queued() == 1, 2000);
    CL_ASSERT_INT_EQ(1, fake_db_queued());
    answer_batch("1", "0"); /* short: the end */
    cl_retention_stats_t st = stats(&f);
    CL_ASSERT(!st.running);
    CL_ASSERT_INT_EQ(1, st.runs);
    CL_ASSERT_INT_EQ(2, st.batches);
    CL_ASSERT_INT_EQ(3, st.rows_deleted[CL_RETENTION_CLICK_DATA]);
    CL_ASSERT_INT_EQ(3, st.rows_deleted[CL_RETENTION_AGG_PENDING]);
    CL_ASSERT_INT_EQ(0, fake_db_queued());
    teardown(&f);
}

static void test_a_full_batch_of_rejected_events_also_goes_on(void)
{
    fixture_t f;
    setup(&f, HOUR_MS);
    FAKE_RUN_UNTIL(&f.loop, fake_db_queued() == 1, 2000);
    answer_batch("0", "2");
    FAKE_RUN_UNTIL(&f.loop, fake_db_queued() == 1, 2000);
    CL_ASSERT_INT_EQ(1, fake_db_queued());
    answer_batch("0", "0");
    CL_ASSERT_INT_EQ(2, stats(&f).batches);
    CL_ASSERT_INT_EQ(2, stats(&f).rows_deleted[CL_RETENTION_REJECTED_EVENTS]);
    teardown(&f);
}

static void test_a_failed_batch_ends_the_run_and_the_next_goes_on(void)
{
    fixture_t f;
    setup(&f, HOUR_MS);
    FAKE_RUN_UNTIL(&f.loop, fake_db_queued() == 1, 2000);
    fake_db_fail(CL_ERR_RETRY, 1213, "Deadlock found");
    cl_retention_stats_t st = stats(&f);
    CL_ASSERT_INT_EQ(1, st.runs_failed);
    CL_ASSERT_INT_EQ(0, st.runs);
    CL_ASSERT(!st.running);
    char err[CL_ERR_LEN];
    CL_ASSERT_INT_EQ(CL_OK, cl_retention_set_policy(f.rt, 30, 2, 1, err));
    FAKE_RUN_UNTIL(&f.loop, fake_db_queued() == 1, 2000);
    CL_ASSERT_INT_EQ(1, fake_db_queued());
    answer_batch("0", "0");
    CL_ASSERT_INT_EQ(1, stats(&f).runs);
    CL_ASSERT_INT_EQ(CL_OK, cl_retention_set_policy(f.rt, 30, 2, HOUR_MS, err));
    CL_ASSERT_INT_EQ(CL_ERR, cl_retention_set_policy(f.rt, 0, 2, HOUR_MS, err));
    CL_ASSERT_STR_CONTAINS(err, "raw_days");
    teardown(&f);
}

static void test_a_tick_during_a_run_is_skipped_and_counted(void)
{
    fixture_t f;
    setup(&f, 2);
    FAKE_RUN_UNTIL(&f.loop, fake_db_queued() == 1, 2000);
    FAKE_RUN_UNTIL(&f.loop, stats(&f).ticks_skipped >= 2, 2000);
    CL_ASSERT(stats(&f).ticks_skipped >= 2);
    CL_ASSERT_INT_EQ(1, fake_db_queued());
    teardown(&f);
}

static void test_close_during_the_pause_ends_the_run_cancelled(void)
{
    fixture_t f;
    setup(&f, HOUR_MS);
    FAKE_RUN_UNTIL(&f.loop, fake_db_queued() == 1, 2000);
    answer_batch("2", "0");
    CL_ASSERT(stats(&f).running);
    unsigned queries = fake_db_queries;
    teardown(&f);
    CL_ASSERT_INT_EQ(queries, fake_db_queries); /* no batch after the close */
}

static void test_close_with_a_batch_in_flight_cancels_it(void)
{
    fixture_t f;
    setup(&f, HOUR_MS);
    FAKE_RUN_UNTIL(&f.loop, fake_db_queued() == 1, 2000);
    teardown(&f);
    CL_ASSERT_INT_EQ(0, fake_db_queued());
}

static const cl_test_case_t tests[] = {
    CL_TEST(test_a_run_goes_on_batch_after_batch_while_they_are_full),
    CL_TEST(test_a_full_batch_of_rejected_events_also_goes_on),
    CL_TEST(test_a_failed_batch_ends_the_run_and_the_next_goes_on),
    CL_TEST(test_a_tick_during_a_run_is_skipped_and_counted),
    CL_TEST(test_close_during_the_pause_ends_the_run_cancelled),
    CL_TEST(test_close_with_a_batch_in_flight_cancels_it),
};

CL_TEST_MAIN(tests)

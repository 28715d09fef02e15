/* Loop tests of the aggregation runner (aggregate.h) on its database job,
 * with a fake pool (fake_db_pool.h) as MariaDB: the statements of a run in
 * order, the lock held elsewhere, the halving after failures on the data
 * (reported once), busy ticks, and a close during a run. The SQL itself is
 * tested in test_aggregate.c. */
#include "clickloop/aggregate.h"

#include "cl_test.h"
#include "fake_db_pool.h"

#define HOUR_MS UINT64_C(3600000)

static const uint64_t one_hour[] = {HOUR_MS};

typedef struct {
    uv_loop_t loop;
    cl_aggregator_t *agg;
    unsigned runs, closed;
    cl_aggregator_run_result_t last; /* message and held key are copied below */
    char message[CL_ERR_LEN];
} fixture_t;

static void on_run(void *arg, const cl_aggregator_run_result_t *r)
{
    fixture_t *f = arg;
    f->runs++;
    f->last = *r;
    snprintf(f->message, sizeof f->message, "%s", r->message);
    f->last.message = f->message;
    f->last.held_row_key = "";
}

static void on_closed(void *arg)
{
    ((fixture_t *)arg)->closed++;
}

static void setup(fixture_t *f, uint64_t interval_ms)
{
    char err[CL_ERR_LEN];
    memset(f, 0, sizeof *f);
    CL_ASSERT_INT_EQ(0, uv_loop_init(&f->loop));
    cl_aggregator_params_t p = {
        .spec = {one_hour, 1, 30 * 60000, CL_AGG_MAX_MARKED_WINDOWS},
        .interval_ms = interval_ms,
        .on_run = on_run,
        .on_run_arg = f,
    };
    CL_ASSERT_INT_EQ(CL_OK, cl_aggregator_new(&f->loop, &p, &f->agg, err));
    CL_ASSERT_INT_EQ(CL_OK, cl_aggregator_start(f->agg, err));
}

static void teardown(fixture_t *f)
{
    CL_ASSERT_INT_EQ(CL_OK, cl_aggregator_close(f->agg, on_closed, f));
    CL_ASSERT_INT_EQ(CL_ERR, cl_aggregator_close(f->agg, on_closed, f));
    uv_run(&f->loop, UV_RUN_DEFAULT);
    CL_ASSERT_INT_EQ(1, f->closed);
    CL_ASSERT_INT_EQ(0, uv_loop_close(&f->loop));
}

static void wait_for_query(fixture_t *f)
{
    FAKE_RUN_UNTIL(&f->loop, fake_db_queued() > 0, 2000);
    CL_ASSERT_INT_EQ(1, fake_db_queued());
}

static cl_aggregator_stats_t stats(const fixture_t *f)
{
    cl_aggregator_stats_t st;
    cl_aggregator_stats(f->agg, &st);
    return st;
}

static void answer_lock(const char *value)
{
    const char *row[] = {value};
    CL_ASSERT_STR_EQ(cl_aggregate_lock_sql(), fake_db_next_sql());
    fake_db_answer(CL_OK, 0, 1, 1, row);
}

/* The run SQL of a plan with these limits, and its summary statement. */
static char *expected_run_sql(size_t claim_limit, size_t marks_limit, unsigned int *summary)
{
    static const cl_aggregate_spec_t spec = {one_hour, 1, 30 * 60000, CL_AGG_MAX_MARKED_WINDOWS};
    cl_aggregate_run_plan_t plan = {&spec, CL_AGG_NOTHING_FROZEN, claim_limit, marks_limit};
    cl_buf_t b;
    char err[CL_ERR_LEN];
    cl_buf_init(&b);
    CL_ASSERT_INT_EQ(CL_OK, cl_aggregate_run_sql(&b, &plan, summary, err));
    return b.data;
}

static void test_a_run_locks_runs_reports_and_unlocks(void)
{
    fixture_t f;
    setup(&f, HOUR_MS);
    wait_for_query(&f); /* the first run starts at start */
    answer_lock("1");
    unsigned int summary;
    char *sql = expected_run_sql(CL_AGG_MAX_CLAIM, CL_AGG_MAX_MARKED_WINDOWS, &summary);
    CL_ASSERT_STR_EQ(sql, fake_db_next_sql());
    free(sql);
    CL_ASSERT(stats(&f).running);
    const char *row[] = {"5", "2", "40", "7", "1"};
    fake_db_answer(CL_OK, summary, CL_AGG_SUMMARY_FIELDS, 1, row);
    CL_ASSERT_STR_EQ(cl_aggregate_unlock_sql(), fake_db_next_sql());
    CL_ASSERT_INT_EQ(0, f.runs);
    fake_db_ok();
    CL_ASSERT_INT_EQ(1, f.runs);
    CL_ASSERT_INT_EQ(CL_OK, f.last.status);
    CL_ASSERT_INT_EQ(5, f.last.events_claimed);
    CL_ASSERT_INT_EQ(2, f.last.windows_recomputed);
    CL_ASSERT_INT_EQ(40, f.last.events_scanned);
    CL_ASSERT_INT_EQ(7, f.last.rows_changed);
    CL_ASSERT_INT_EQ(1, f.last.windows_frozen);
    cl_aggregator_stats_t st = stats(&f);
    CL_ASSERT_INT_EQ(1, st.runs);
    CL_ASSERT_INT_EQ(5, st.events_claimed);
    CL_ASSERT_INT_EQ(7, st.rows_changed);
    CL_ASSERT(!st.running);
    CL_ASSERT_INT_EQ(0, fake_db_queued());
    teardown(&f);
}

static void test_a_run_is_skipped_while_another_instance_holds_the_lock(void)
{
    fixture_t f;
    setup(&f, HOUR_MS);
    wait_for_query(&f);
    answer_lock("0");
    CL_ASSERT_INT_EQ(1, f.runs);
    CL_ASSERT(f.last.skipped_locked);
    CL_ASSERT_INT_EQ(CL_OK, f.last.status);
    CL_ASSERT_INT_EQ(0, fake_db_queued()); /* no run, and a lock not taken is not released */
    cl_aggregator_stats_t st = stats(&f);
    CL_ASSERT_INT_EQ(1, st.skipped_locked);
    CL_ASSERT_INT_EQ(0, st.runs);
    teardown(&f);
}

static void test_failures_on_the_data_halve_the_claim_and_are_new_once(void)
{
    fixture_t f;
    setup(&f, HOUR_MS);
    wait_for_query(&f);
    answer_lock("1");
    fake_db_fail(CL_ERR, 1366, "Incorrect string value");
    CL_ASSERT_STR_EQ(cl_aggregate_unlock_sql(), fake_db_next_sql());
    fake_db_ok();
    CL_ASSERT_INT_EQ(1, f.runs);
    CL_ASSERT_INT_EQ(CL_ERR, f.last.status);
    CL_ASSERT(f.last.new_failure);
    CL_ASSERT_INT_EQ(1, f.last.consecutive_failures);
    CL_ASSERT_STR_CONTAINS(f.message, "Incorrect string value");
    CL_ASSERT_INT_EQ(CL_AGG_MAX_CLAIM / 2, stats(&f).claim_limit);

    /* The next run claims half, and the same failure is not new. */
    cl_aggregator_set_interval(f.agg, 1);
    wait_for_query(&f);
    answer_lock("1");
    unsigned int summary;
    char *sql = expected_run_sql(CL_AGG_MAX_CLAIM / 2, CL_AGG_MAX_MARKED_WINDOWS / 2, &summary);
    CL_ASSERT_STR_EQ(sql, fake_db_next_sql());
    free(sql);
    cl_aggregator_set_interval(f.agg, HOUR_MS);
    fake_db_fail(CL_ERR, 1366, "Incorrect string value");
    fake_db_ok();
    CL_ASSERT_INT_EQ(2, f.runs);
    CL_ASSERT(!f.last.new_failure);
    CL_ASSERT_INT_EQ(2, f.last.consecutive_failures);
    cl_aggregator_stats_t st = stats(&f);
    CL_ASSERT_INT_EQ(2, st.runs_failed);
    CL_ASSERT_INT_EQ(CL_AGG_MAX_CLAIM / 4, st.claim_limit);
    CL_ASSERT(!st.failing); /* CL_AGG_FAILING_AFTER is 3 */
    teardown(&f);
}

static void test_a_tick_during_a_run_counts_as_skipped_busy(void)
{
    fixture_t f;
    setup(&f, 2);
    wait_for_query(&f); /* the lock query, left unanswered */
    FAKE_RUN_UNTIL(&f.loop, stats(&f).skipped_busy >= 2, 2000);
    CL_ASSERT(stats(&f).skipped_busy >= 2);
    CL_ASSERT_INT_EQ(1, fake_db_queued());
    CL_ASSERT_INT_EQ(0, f.runs);
    teardown(&f);
    CL_ASSERT_INT_EQ(1, f.runs); /* the cancelled run reports */
    CL_ASSERT_INT_EQ(CL_ERR_RETRY, f.last.status);
}

static void test_close_during_a_run_cancels_it(void)
{
    fixture_t f;
    setup(&f, HOUR_MS);
    wait_for_query(&f);
    answer_lock("1");
    CL_ASSERT_INT_EQ(1, fake_db_queued()); /* the run's transaction */
    unsigned queries = fake_db_queries;
    teardown(&f);
    CL_ASSERT_INT_EQ(1, f.runs);
    CL_ASSERT_INT_EQ(CL_ERR_RETRY, f.last.status);
    CL_ASSERT_INT_EQ(0, f.last.events_claimed);
    CL_ASSERT_INT_EQ(queries, fake_db_queries); /* the lock goes with the session */
}

static const cl_test_case_t tests[] = {
    CL_TEST(test_a_run_locks_runs_reports_and_unlocks),
    CL_TEST(test_a_run_is_skipped_while_another_instance_holds_the_lock),
    CL_TEST(test_failures_on_the_data_halve_the_claim_and_are_new_once),
    CL_TEST(test_a_tick_during_a_run_counts_as_skipped_busy),
    CL_TEST(test_close_during_a_run_cancels_it),
};

CL_TEST_MAIN(tests)

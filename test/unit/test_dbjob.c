/* Loop tests of the periodic database job (dbjob.h) on a fake pool
 * (fake_db_pool.h): first run, busy ticks, manual runs, interval change,
 * pauses, and the close while a statement is in flight. Every test closes
 * the job and asserts that the loop closes cleanly. */
#include "clickloop/dbjob.h"

#include "cl_test.h"
#include "fake_db_pool.h"

/* The owner: counts what the job calls, and remembers the state it saw. */
typedef struct {
    cl_dbjob_t *job;
    unsigned runs, manual_runs, resumes, resumes_cancelled, done, done_cancelled, closed;
    cl_dbjob_state_t state_in_run, state_in_done;
    bool query_in_run;    /* each run issues one statement */
    uint64_t pause_ms;    /* 0: end the run when its statement is done; else pause once */
    bool end_when_paused; /* resume ends the run */
} owner_t;

static void on_query_done(void *arg, const cl_db_result_t *r)
{
    owner_t *o = arg;
    o->done++;
    o->state_in_done = cl_dbjob_state(o->job);
    if (r->status == CL_ERR_RETRY && o->state_in_done == CL_DBJOB_CLOSING)
        o->done_cancelled++;
    if (o->pause_ms > 0 && r->status == CL_OK) {
        cl_dbjob_pause(o->job, o->pause_ms);
        return;
    }
    cl_dbjob_run_end(o->job);
}

static const cl_db_query_handlers_t handlers = {NULL, on_query_done};

static void on_run(void *arg, bool manual)
{
    owner_t *o = arg;
    char err[CL_ERR_LEN];
    o->runs++;
    o->manual_runs += manual;
    o->state_in_run = cl_dbjob_state(o->job);
    if (!o->query_in_run) {
        cl_dbjob_run_end(o->job);
        return;
    }
    CL_ASSERT_INT_EQ(CL_OK, cl_dbjob_query(o->job, "SELECT 1", 8, &handlers, o, err));
}

static void on_resume(void *arg, int status)
{
    owner_t *o = arg;
    o->resumes++;
    if (status != CL_OK) {
        o->resumes_cancelled++;
        return;
    }
    o->pause_ms = 0;
    cl_dbjob_run_end(o->job);
}

static void on_closed(void *arg)
{
    ((owner_t *)arg)->closed++;
}

static void new_job(uv_loop_t *loop, owner_t *o, uint64_t interval_ms)
{
    char err[CL_ERR_LEN];
    memset(o, 0, sizeof *o);
    o->query_in_run = true;
    cl_dbjob_params_t p = {
        .interval_ms = interval_ms,
        .handlers = {.run = on_run, .resume = on_resume},
        .arg = o,
    };
    CL_ASSERT_INT_EQ(CL_OK, uv_loop_init(loop));
    CL_ASSERT_INT_EQ(CL_OK, cl_dbjob_new(loop, &p, &o->job, err));
    CL_ASSERT_INT_EQ(CL_DBJOB_IDLE, cl_dbjob_state(o->job));
}

static void close_job(uv_loop_t *loop, owner_t *o)
{
    unsigned closed_pools = fake_db_closed;
    CL_ASSERT_INT_EQ(CL_OK, cl_dbjob_close(o->job, on_closed, o));
    CL_ASSERT_INT_EQ(CL_ERR, cl_dbjob_close(o->job, on_closed, o));
    CL_ASSERT_INT_EQ(0, o->closed);
    uv_run(loop, UV_RUN_DEFAULT);
    CL_ASSERT_INT_EQ(1, o->closed);
    CL_ASSERT_INT_EQ(closed_pools + 1, fake_db_closed);
    CL_ASSERT_INT_EQ(0, uv_loop_close(loop));
}

static void test_first_run_starts_on_the_next_iteration_after_start(void)
{
    uv_loop_t loop;
    owner_t o;
    char err[CL_ERR_LEN];
    new_job(&loop, &o, 3600000);
    CL_ASSERT_INT_EQ(CL_OK, cl_dbjob_start(o.job, err));
    CL_ASSERT_INT_EQ(0, o.runs); /* never inside the call */
    FAKE_RUN_UNTIL(&loop, o.runs == 1, 2000);
    CL_ASSERT_INT_EQ(1, o.runs);
    CL_ASSERT_INT_EQ(0, o.manual_runs);
    CL_ASSERT_INT_EQ(CL_DBJOB_RUNNING, o.state_in_run);
    CL_ASSERT_STR_EQ("SELECT 1", fake_db_next_sql());
    fake_db_ok();
    CL_ASSERT_INT_EQ(1, o.done);
    CL_ASSERT_INT_EQ(CL_DBJOB_IDLE, cl_dbjob_state(o.job));
    cl_dbjob_stats_t st;
    cl_dbjob_stats(o.job, &st);
    CL_ASSERT_INT_EQ(1, st.runs);
    CL_ASSERT_INT_EQ(0, st.ticks_skipped);
    close_job(&loop, &o);
}

static void test_a_tick_during_a_run_is_skipped_and_counted(void)
{
    uv_loop_t loop;
    owner_t o;
    char err[CL_ERR_LEN];
    new_job(&loop, &o, 5);
    CL_ASSERT_INT_EQ(CL_OK, cl_dbjob_start(o.job, err));
    FAKE_RUN_UNTIL(&loop, o.runs == 1, 2000);
    cl_dbjob_stats_t st = {0};
    /* The statement is not answered: the ticks find the run going. */
    for (uint64_t deadline = cl_now_ms() + 2000; st.ticks_skipped < 3 && cl_now_ms() < deadline;) {
        uv_run(&loop, UV_RUN_NOWAIT);
        cl_dbjob_stats(o.job, &st);
    }
    CL_ASSERT(st.ticks_skipped >= 3);
    CL_ASSERT_INT_EQ(1, o.runs);
    CL_ASSERT_INT_EQ(1, st.runs);
    CL_ASSERT_INT_EQ(1, fake_db->queued); /* runs never overlap */
    fake_db_ok();
    FAKE_RUN_UNTIL(&loop, o.runs == 2, 2000);
    CL_ASSERT_INT_EQ(2, o.runs);
    fake_db_ok();
    close_job(&loop, &o);
}

static void test_a_manual_run_starts_at_once_and_is_refused_during_a_run(void)
{
    uv_loop_t loop;
    owner_t o;
    char err[CL_ERR_LEN];
    new_job(&loop, &o, 3600000);
    /* Not started: runs only on request. */
    CL_ASSERT_INT_EQ(CL_OK, cl_dbjob_run_now(o.job, err));
    CL_ASSERT_INT_EQ(1, o.runs);
    CL_ASSERT_INT_EQ(1, o.manual_runs);
    CL_ASSERT_INT_EQ(CL_ERR_RETRY, cl_dbjob_run_now(o.job, err));
    CL_ASSERT_STR_CONTAINS(err, "in progress");
    CL_ASSERT_INT_EQ(1, o.runs);
    fake_db_ok();
    CL_ASSERT_INT_EQ(CL_OK, cl_dbjob_run_now(o.job, err));
    CL_ASSERT_INT_EQ(2, o.runs);
    fake_db_ok();
    cl_dbjob_stats_t st;
    cl_dbjob_stats(o.job, &st);
    CL_ASSERT_INT_EQ(2, st.runs);
    CL_ASSERT_INT_EQ(0, st.ticks_skipped); /* refused manual runs are not ticks */
    close_job(&loop, &o);
}

static void test_an_interval_change_applies_in_place(void)
{
    uv_loop_t loop;
    owner_t o;
    char err[CL_ERR_LEN];
    new_job(&loop, &o, 3600000);
    o.query_in_run = false;
    CL_ASSERT_INT_EQ(CL_OK, cl_dbjob_start(o.job, err));
    FAKE_RUN_UNTIL(&loop, o.runs == 1, 2000);
    CL_ASSERT_INT_EQ(1, o.runs);
    /* An hour away; after the change, a few milliseconds. */
    cl_dbjob_set_interval(o.job, 2);
    FAKE_RUN_UNTIL(&loop, o.runs >= 3, 2000);
    CL_ASSERT(o.runs >= 3);
    cl_dbjob_set_interval(o.job, 0); /* ignored */
    unsigned runs = o.runs;
    FAKE_RUN_UNTIL(&loop, o.runs >= runs + 2, 2000);
    CL_ASSERT(o.runs >= runs + 2);
    close_job(&loop, &o);
}

static void test_a_pause_resumes_the_same_run(void)
{
    uv_loop_t loop;
    owner_t o;
    char err[CL_ERR_LEN];
    new_job(&loop, &o, 3600000);
    o.pause_ms = 1;
    CL_ASSERT_INT_EQ(CL_OK, cl_dbjob_run_now(o.job, err));
    fake_db_ok();
    CL_ASSERT_INT_EQ(CL_DBJOB_PAUSED, cl_dbjob_state(o.job));
    CL_ASSERT_INT_EQ(CL_ERR_RETRY, cl_dbjob_run_now(o.job, err));
    FAKE_RUN_UNTIL(&loop, o.resumes == 1, 2000);
    CL_ASSERT_INT_EQ(1, o.resumes);
    CL_ASSERT_INT_EQ(0, o.resumes_cancelled);
    CL_ASSERT_INT_EQ(CL_DBJOB_IDLE, cl_dbjob_state(o.job));
    CL_ASSERT_INT_EQ(1, o.runs);
    close_job(&loop, &o);
}

static void test_close_during_a_pause_ends_the_run_cancelled(void)
{
    uv_loop_t loop;
    owner_t o;
    char err[CL_ERR_LEN];
    new_job(&loop, &o, 3600000);
    o.pause_ms = 3600000;
    CL_ASSERT_INT_EQ(CL_OK, cl_dbjob_run_now(o.job, err));
    fake_db_ok();
    CL_ASSERT_INT_EQ(CL_DBJOB_PAUSED, cl_dbjob_state(o.job));
    close_job(&loop, &o);
    CL_ASSERT_INT_EQ(1, o.resumes);
    CL_ASSERT_INT_EQ(1, o.resumes_cancelled);
}

static void test_close_cancels_the_statement_in_flight_before_its_callback(void)
{
    uv_loop_t loop;
    owner_t o;
    char err[CL_ERR_LEN];
    new_job(&loop, &o, 3600000);
    CL_ASSERT_INT_EQ(CL_OK, cl_dbjob_start(o.job, err));
    FAKE_RUN_UNTIL(&loop, o.runs == 1, 2000);
    CL_ASSERT_INT_EQ(CL_OK, cl_dbjob_close(o.job, on_closed, &o));
    CL_ASSERT_INT_EQ(0, o.done); /* cancelled from the loop, not inside close */
    CL_ASSERT_INT_EQ(CL_ERR, cl_dbjob_query(o.job, "SELECT 2", 8, &handlers, &o, err));
    CL_ASSERT_INT_EQ(CL_ERR, cl_dbjob_run_now(o.job, err));
    CL_ASSERT_INT_EQ(CL_ERR, cl_dbjob_start(o.job, err));
    uv_run(&loop, UV_RUN_DEFAULT);
    CL_ASSERT_INT_EQ(1, o.done);
    CL_ASSERT_INT_EQ(1, o.done_cancelled);
    CL_ASSERT_INT_EQ(CL_DBJOB_CLOSING, o.state_in_done);
    CL_ASSERT_INT_EQ(1, o.closed);
    CL_ASSERT_INT_EQ(1, o.runs);
    CL_ASSERT_INT_EQ(0, uv_loop_close(&loop));
}

static void test_a_job_needs_an_interval_and_a_run_handler(void)
{
    uv_loop_t loop;
    char err[CL_ERR_LEN];
    cl_dbjob_t *job = NULL;
    unsigned opened = fake_db_opened;
    CL_ASSERT_INT_EQ(0, uv_loop_init(&loop));
    cl_dbjob_params_t p = {.interval_ms = 0, .handlers = {.run = on_run}};
    CL_ASSERT_INT_EQ(CL_ERR, cl_dbjob_new(&loop, &p, &job, err));
    CL_ASSERT_STR_CONTAINS(err, "interval");
    p.interval_ms = 1;
    p.handlers.run = NULL;
    CL_ASSERT_INT_EQ(CL_ERR, cl_dbjob_new(&loop, &p, &job, err));
    CL_ASSERT_STR_CONTAINS(err, "run handler");
    CL_ASSERT(job == NULL);
    CL_ASSERT_INT_EQ(opened, fake_db_opened);
    CL_ASSERT_INT_EQ(0, uv_loop_close(&loop));
}

static const cl_test_case_t tests[] = {
    CL_TEST(test_first_run_starts_on_the_next_iteration_after_start),
    CL_TEST(test_a_tick_during_a_run_is_skipped_and_counted),
    CL_TEST(test_a_manual_run_starts_at_once_and_is_refused_during_a_run),
    CL_TEST(test_an_interval_change_applies_in_place),
    CL_TEST(test_a_pause_resumes_the_same_run),
    CL_TEST(test_close_during_a_pause_ends_the_run_cancelled),
    CL_TEST(test_close_cancels_the_statement_in_flight_before_its_callback),
    CL_TEST(test_a_job_needs_an_interval_and_a_run_handler),
};

CL_TEST_MAIN(tests)

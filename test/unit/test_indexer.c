/* Loop tests of the indexer (indexer.h) on its database job, with a fake
 * pool (fake_db_pool.h) as MariaDB and a fake sink (below, linked in place of
 * es_sink.h's functions with --wrap) as Elasticsearch: the walk over pages,
 * acknowledgements, backpressure, a sink replaced mid-page, busy ticks, and
 * closes that wait for what is in flight. */
#include "clickloop/indexer.h"

#include "cl_test.h"
#include "fake_db_pool.h"

#define MAX_DOCS 64

/* The fake sink: records what is submitted; the test reports outcomes. */
struct cl_es_sink_s {
    size_t pending;
    unsigned ensures;
    cl_es_ensure_cb ensure_cb;
    void *ensure_arg;
    size_t submitted;
    uint64_t tags[MAX_DOCS];
    uint64_t versions[MAX_DOCS];
};

int __wrap_cl_es_sink_ensure_index(cl_es_sink_t *sink, const char *index_pattern,
                                   const char *mappings_json, cl_es_ensure_cb cb, void *arg,
                                   char err[CL_ERR_LEN]);
int __wrap_cl_es_sink_submit(cl_es_sink_t *sink, const cl_es_doc_t *docs, size_t n,
                             char err[CL_ERR_LEN]);
size_t __wrap_cl_es_sink_pending(const cl_es_sink_t *sink);

int __wrap_cl_es_sink_ensure_index(cl_es_sink_t *sink, const char *index_pattern,
                                   const char *mappings_json, cl_es_ensure_cb cb, void *arg,
                                   char err[CL_ERR_LEN])
{
    CL_UNUSED(index_pattern);
    CL_UNUSED(mappings_json);
    CL_UNUSED(err);
    sink->ensures++;
    sink->ensure_cb = cb;
    sink->ensure_arg = arg;
    return CL_OK;
}

int __wrap_cl_es_sink_submit(cl_es_sink_t *sink, const cl_es_doc_t *docs, size_t n,
                             char err[CL_ERR_LEN])
{
    if (sink->submitted + n > MAX_DOCS)
        return cl_errorf(err, "fake sink: full");
    for (size_t i = 0; i < n; i++) {
        sink->tags[sink->submitted] = docs[i].tag;
        sink->versions[sink->submitted] = docs[i].version;
        sink->submitted++;
    }
    sink->pending += n;
    return CL_OK;
}

size_t __wrap_cl_es_sink_pending(const cl_es_sink_t *sink)
{
    return sink->pending;
}

/* The index is ready on the sink (answers its one pending setup). */
static void index_ready(cl_es_sink_t *sink)
{
    cl_es_ensure_cb cb = sink->ensure_cb;
    sink->ensure_cb = NULL;
    CL_ASSERT(cb != NULL);
    if (cb != NULL)
        cb(sink->ensure_arg, CL_OK, "");
}

static void report(cl_indexer_t *ix, cl_es_sink_t *sink, size_t doc, cl_es_doc_outcome_t outcome,
                   const char *reason)
{
    sink->pending--;
    cl_indexer_doc_cb(ix, sink->tags[doc], outcome, reason);
}

/* ---- agg_stats rows as the SELECT returns them ---------------------------- */

#define HASH_A "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
#define HASH_B "BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB"
#define HASH_C "CCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCC"
#define ROW(hash, version)                                                                         \
    "3600000", "1715947200000", hash, "US", "https://example.com/", "3", "2", "100", "2", version, \
        "1715947300000"

static const char *const rows_ab[] = {ROW(HASH_A, "17"), ROW(HASH_B, "18")};
static const char *const rows_c[] = {ROW(HASH_C, "19")};

static void answer_rows(const char *const *rows, size_t n)
{
    fake_db_answer(CL_OK, 0, 11, n, rows);
}

/* ---- set-up ---------------------------------------------------------------- */

typedef struct {
    uv_loop_t loop;
    cl_indexer_t *ix;
    cl_es_sink_t sink;
    unsigned closed;
} fixture_t;

static void on_closed(void *arg)
{
    ((fixture_t *)arg)->closed++;
}

static void setup(fixture_t *f, uint64_t poll_ms)
{
    char err[CL_ERR_LEN];
    memset(f, 0, sizeof *f);
    CL_ASSERT_INT_EQ(0, uv_loop_init(&f->loop));
    cl_indexer_params_t p = {
        .index = "clickloop-test",
        .page_rows = 2,
        .max_pending_docs = 4,
        .poll_interval_ms = poll_ms,
    };
    CL_ASSERT_INT_EQ(CL_OK, cl_indexer_new(&f->loop, &p, &f->ix, err));
    cl_indexer_set_sink(f->ix, &f->sink);
    CL_ASSERT_INT_EQ(CL_OK, cl_indexer_start(f->ix, err));
    CL_ASSERT_INT_EQ(1, f->sink.ensures);
}

/* Close, run the loop to the end, and check that everything closed. */
static void teardown(fixture_t *f)
{
    CL_ASSERT_INT_EQ(CL_OK, cl_indexer_close(f->ix, on_closed, f));
    uv_run(&f->loop, UV_RUN_DEFAULT);
    CL_ASSERT_INT_EQ(1, f->closed);
    CL_ASSERT_INT_EQ(0, uv_loop_close(&f->loop));
}

static cl_indexer_stats_t stats(const fixture_t *f)
{
    cl_indexer_stats_t st;
    cl_indexer_stats(f->ix, &st);
    return st;
}

/* ---- tests ------------------------------------------------------------------- */

static void test_nothing_is_fetched_before_the_index_is_ready(void)
{
    fixture_t f;
    setup(&f, 2);
    unsigned queries = fake_db_queries;
    /* Several poll ticks go by (a bounded wait for something not to happen). */
    FAKE_RUN_UNTIL(&f.loop, false, 30);
    CL_ASSERT_INT_EQ(queries, fake_db_queries);
    CL_ASSERT(!stats(&f).index_ready);
    index_ready(&f.sink);
    CL_ASSERT(stats(&f).index_ready);
    CL_ASSERT_INT_EQ(1, fake_db_queued());
    CL_ASSERT_STR_CONTAINS(fake_db_next_sql(), "WHERE needs_index = 1 ORDER BY");
    answer_rows(NULL, 0);
    teardown(&f);
}

static void test_a_walk_reads_page_after_page_and_sends_each_row_once(void)
{
    fixture_t f;
    setup(&f, 3600000);
    index_ready(&f.sink);
    CL_ASSERT_STR_CONTAINS(fake_db_next_sql(), "LIMIT 2");
    CL_ASSERT(strstr(fake_db_next_sql(), "window_ms >") == NULL); /* from the first key */
    answer_rows(rows_ab, 2);
    CL_ASSERT_INT_EQ(2, f.sink.submitted);
    CL_ASSERT_INT_EQ(17, f.sink.versions[0]);
    CL_ASSERT_INT_EQ(18, f.sink.versions[1]);
    /* A full page: the next one follows at once, after the last key. */
    CL_ASSERT_INT_EQ(1, fake_db_queued());
    CL_ASSERT_STR_CONTAINS(fake_db_next_sql(), "url_hash > UNHEX('" HASH_B "')");
    answer_rows(rows_c, 1);
    CL_ASSERT_INT_EQ(3, f.sink.submitted);
    CL_ASSERT_INT_EQ(3, stats(&f).docs_sent);
    /* A short page ends the walk; a kick does not start over while
     * documents are on their way. */
    CL_ASSERT_INT_EQ(0, fake_db_queued());
    cl_indexer_kick(f.ix);
    CL_ASSERT_INT_EQ(0, fake_db_queued());
    for (size_t i = 0; i < 3; i++)
        report(f.ix, &f.sink, i, CL_ES_DOC_INDEXED, NULL);
    /* The acknowledgements go out at the next run, before a new walk. */
    cl_indexer_kick(f.ix);
    CL_ASSERT_INT_EQ(1, fake_db_queued());
    CL_ASSERT_STR_CONTAINS(fake_db_next_sql(), "SET s.indexed_version = GREATEST(");
    CL_ASSERT_INT_EQ(3, stats(&f).docs_acked);
    fake_db_ok();
    CL_ASSERT_INT_EQ(0, fake_db_queued()); /* a finished walk waits for a tick or a kick */
    cl_indexer_kick(f.ix);
    CL_ASSERT_INT_EQ(1, fake_db_queued());
    CL_ASSERT(strstr(fake_db_next_sql(), "window_ms >") == NULL);
    answer_rows(NULL, 0);
    CL_ASSERT_INT_EQ(3, f.sink.submitted);
    teardown(&f);
}

static void test_no_page_is_fetched_while_the_sink_is_full(void)
{
    fixture_t f;
    setup(&f, 3600000);
    f.sink.pending = 4; /* max_pending_docs */
    index_ready(&f.sink);
    CL_ASSERT_INT_EQ(0, fake_db_queued());
    f.sink.pending = 3;
    cl_indexer_kick(f.ix);
    CL_ASSERT_INT_EQ(1, fake_db_queued());
    f.sink.pending = 0;
    answer_rows(NULL, 0);
    teardown(&f);
}

static void test_a_page_read_for_a_replaced_sink_is_dropped(void)
{
    fixture_t f;
    setup(&f, 3600000);
    index_ready(&f.sink);
    CL_ASSERT_INT_EQ(1, fake_db_queued());
    cl_es_sink_t other = {0};
    cl_indexer_set_sink(f.ix, &other);
    CL_ASSERT(!stats(&f).index_ready);
    answer_rows(rows_ab, 2);
    CL_ASSERT_INT_EQ(0, f.sink.submitted);
    CL_ASSERT_INT_EQ(0, other.submitted);
    CL_ASSERT_INT_EQ(0, fake_db_queued());
    char err[CL_ERR_LEN];
    CL_ASSERT_INT_EQ(CL_OK, cl_indexer_start(f.ix, err));
    index_ready(&other);
    /* The new walk starts from the first key. */
    CL_ASSERT_INT_EQ(1, fake_db_queued());
    CL_ASSERT(strstr(fake_db_next_sql(), "window_ms >") == NULL);
    answer_rows(rows_ab, 2);
    CL_ASSERT_INT_EQ(2, other.submitted);
    answer_rows(NULL, 0);
    report(f.ix, &other, 0, CL_ES_DOC_CANCELLED, NULL);
    report(f.ix, &other, 1, CL_ES_DOC_CANCELLED, NULL);
    teardown(&f);
}

static void test_a_tick_during_a_page_is_skipped_and_counted(void)
{
    fixture_t f;
    setup(&f, 2);
    index_ready(&f.sink);
    CL_ASSERT_INT_EQ(1, fake_db_queued());
    FAKE_RUN_UNTIL(&f.loop, stats(&f).ticks_skipped >= 2, 2000);
    CL_ASSERT(stats(&f).ticks_skipped >= 2);
    CL_ASSERT_INT_EQ(1, fake_db_queued());
    answer_rows(NULL, 0);
    teardown(&f);
}

static void test_a_refused_document_is_recorded_with_its_reason(void)
{
    fixture_t f;
    setup(&f, 3600000);
    index_ready(&f.sink);
    answer_rows(rows_c, 1);
    report(f.ix, &f.sink, 0, CL_ES_DOC_FAILED, "mapper_parsing_exception");
    CL_ASSERT_INT_EQ(1, stats(&f).docs_failed);
    CL_ASSERT_INT_EQ(1, fake_db_queued());
    CL_ASSERT_STR_CONTAINS(fake_db_next_sql(), "SET index_error = 'mapper_parsing_exception'");
    CL_ASSERT_STR_CONTAINS(fake_db_next_sql(), "needs_index = (version <> 19)");
    fake_db_ok();
    teardown(&f);
}

static void test_close_waits_for_the_page_in_flight(void)
{
    fixture_t f;
    setup(&f, 3600000);
    index_ready(&f.sink);
    CL_ASSERT_INT_EQ(CL_OK, cl_indexer_close(f.ix, on_closed, &f));
    CL_ASSERT_INT_EQ(CL_ERR, cl_indexer_close(f.ix, on_closed, &f));
    uv_run(&f.loop, UV_RUN_NOWAIT);
    CL_ASSERT_INT_EQ(0, f.closed);
    unsigned closed_pools = fake_db_closed;
    answer_rows(rows_ab, 2);
    CL_ASSERT_INT_EQ(0, f.sink.submitted); /* closing: the page is dropped */
    uv_run(&f.loop, UV_RUN_DEFAULT);
    CL_ASSERT_INT_EQ(1, f.closed);
    CL_ASSERT_INT_EQ(closed_pools + 1, fake_db_closed);
    CL_ASSERT_INT_EQ(0, uv_loop_close(&f.loop));
}

static void test_close_waits_for_every_document_and_acknowledgement(void)
{
    fixture_t f;
    setup(&f, 3600000);
    index_ready(&f.sink);
    answer_rows(rows_c, 1);
    report(f.ix, &f.sink, 0, CL_ES_DOC_INDEXED, NULL);
    CL_ASSERT_INT_EQ(0, fake_db_queued());
    /* The acknowledgement collected so far is written by the close. */
    CL_ASSERT_INT_EQ(CL_OK, cl_indexer_close(f.ix, on_closed, &f));
    CL_ASSERT_INT_EQ(1, fake_db_queued());
    CL_ASSERT_STR_CONTAINS(fake_db_next_sql(), "indexed_version");
    uv_run(&f.loop, UV_RUN_NOWAIT);
    CL_ASSERT_INT_EQ(0, f.closed);
    fake_db_ok();
    uv_run(&f.loop, UV_RUN_DEFAULT);
    CL_ASSERT_INT_EQ(1, f.closed);
    CL_ASSERT_INT_EQ(0, uv_loop_close(&f.loop));
}

static void test_close_waits_for_documents_still_in_the_sink(void)
{
    fixture_t f;
    setup(&f, 3600000);
    index_ready(&f.sink);
    answer_rows(rows_c, 1);
    unsigned queries = fake_db_queries;
    CL_ASSERT_INT_EQ(CL_OK, cl_indexer_close(f.ix, on_closed, &f));
    uv_run(&f.loop, UV_RUN_NOWAIT);
    CL_ASSERT_INT_EQ(0, f.closed);
    report(f.ix, &f.sink, 0, CL_ES_DOC_CANCELLED, NULL);
    uv_run(&f.loop, UV_RUN_DEFAULT);
    CL_ASSERT_INT_EQ(1, f.closed);
    CL_ASSERT_INT_EQ(queries, fake_db_queries); /* a cancelled document records nothing */
    CL_ASSERT_INT_EQ(0, uv_loop_close(&f.loop));
}

static const cl_test_case_t tests[] = {
    CL_TEST(test_nothing_is_fetched_before_the_index_is_ready),
    CL_TEST(test_a_walk_reads_page_after_page_and_sends_each_row_once),
    CL_TEST(test_no_page_is_fetched_while_the_sink_is_full),
    CL_TEST(test_a_page_read_for_a_replaced_sink_is_dropped),
    CL_TEST(test_a_tick_during_a_page_is_skipped_and_counted),
    CL_TEST(test_a_refused_document_is_recorded_with_its_reason),
    CL_TEST(test_close_waits_for_the_page_in_flight),
    CL_TEST(test_close_waits_for_every_document_and_acknowledgement),
    CL_TEST(test_close_waits_for_documents_still_in_the_sink),
};

CL_TEST_MAIN(tests)

/* Unit tests for the retention SQL: the cutoff arithmetic, one transaction
 * that deletes children before their click_data rows by the same keys, the
 * rejected-events deletion bounded to a primary-key range, the summary
 * statement index, and the argument checks. The SQL itself runs against a
 * real server in test/integration/test_operations.py. */
#include "clickloop/retention.h"

#include "cl_test.h"

/* Statement `index` (0-based) of a ";\n"-separated text, copied to out. */
static const char *nth_statement(const char *sql, unsigned index, char *out, size_t size)
{
    const char *p = sql;
    for (unsigned i = 0; i < index && p != NULL; i++) {
        p = strstr(p, ";\n");
        if (p != NULL)
            p += 2;
    }
    if (p == NULL) {
        out[0] = '\0';
        return out;
    }
    const char *end = strstr(p, ";\n");
    size_t len = end != NULL ? (size_t)(end - p) : strlen(p);
    if (len >= size)
        len = size - 1;
    memcpy(out, p, len);
    out[len] = '\0';
    return out;
}

static unsigned count_statements(const char *sql)
{
    unsigned n = 1;
    for (const char *p = sql; (p = strstr(p, ";\n")) != NULL; p += 2)
        n++;
    return n;
}

static void test_cutoff_is_now_minus_whole_days(void)
{
    CL_ASSERT_INT_EQ(INT64_C(1700000000000) - 86400000, cl_retention_cutoff_ms(1700000000000, 1));
    CL_ASSERT_INT_EQ(INT64_C(1700000000000) - INT64_C(36500) * 86400000,
                     cl_retention_cutoff_ms(1700000000000, 36500));
}

static void test_batch_deletes_children_then_events_in_one_transaction(void)
{
    cl_buf_t b;
    cl_buf_init(&b);
    unsigned summary = 0;
    char err[CL_ERR_LEN];
    /* 2024-05-17 12:34:56.789 UTC */
    CL_ASSERT_INT_EQ(CL_OK, cl_retention_batch_sql(&b, INT64_C(1715949296789), 500, &summary, err));
    const char *sql = b.data;
    const char *begin = strstr(sql, "START TRANSACTION");
    const char *pick = strstr(sql, "INSERT INTO retention_batch (row_key) SELECT row_key FROM "
                                   "click_data FORCE INDEX (idx_click_event_time) WHERE "
                                   "event_time < '2024-05-17 12:34:56.789' ORDER BY event_time "
                                   "LIMIT 500");
    const char *geo = strstr(sql, "DELETE t FROM retention_batch k STRAIGHT_JOIN geo_data t");
    const char *ua = strstr(sql, "STRAIGHT_JOIN user_agent_data t");
    const char *pending = strstr(sql, "STRAIGHT_JOIN agg_pending t");
    const char *done = strstr(sql, "STRAIGHT_JOIN agg_done t");
    const char *click = strstr(sql, "STRAIGHT_JOIN click_data t");
    const char *commit = strstr(sql, ";\nCOMMIT");
    /* The users of frozen windows go by a key range, outside the events'
     * transaction. */
    const char *users = strstr(sql, "DELETE FROM agg_users WHERE window_start < "
                                    "'2024-05-17 12:34:56.789' ORDER BY window_start LIMIT 500");
    CL_ASSERT(done != NULL && users != NULL && pending < done && done < click && commit < users);
    CL_ASSERT(begin != NULL && pick != NULL && geo != NULL && ua != NULL && pending != NULL &&
              click != NULL && commit != NULL);
    if (begin && pick && geo && ua && pending && click && commit) {
        CL_ASSERT(begin < pick && pick < geo && geo < ua && ua < pending && pending < click &&
                  click < commit);
    }
    CL_ASSERT_STR_CONTAINS(sql, "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED");
    cl_buf_free(&b);
}

/* The bound the aggregator freezes by after raw_days is raised or retention
 * is switched off: raised (never lowered) in the events' transaction, after
 * their deletion, only when click_data lost rows. */
static void test_batch_records_the_cutoff_when_it_deleted_events(void)
{
    cl_buf_t b;
    cl_buf_init(&b);
    unsigned summary = 0;
    char err[CL_ERR_LEN];
    CL_ASSERT_INT_EQ(CL_OK, cl_retention_batch_sql(&b, INT64_C(1715949296789), 500, &summary, err));
    const char *counted = strstr(b.data, "SET @cl_retention_click_data = ROW_COUNT();\n");
    const char *record = strstr(b.data, ";\nINSERT INTO retention_state (id, pruned_before) "
                                        "SELECT 1, '2024-05-17 12:34:56.789' FROM DUAL "
                                        "WHERE @cl_retention_click_data > 0 "
                                        "ON DUPLICATE KEY UPDATE pruned_before = "
                                        "GREATEST(pruned_before, VALUES(pruned_before));\n"
                                        "COMMIT;\n");
    CL_ASSERT(counted != NULL && record != NULL);
    CL_ASSERT(counted < record);
    /* Once per batch, inside the transaction. */
    CL_ASSERT(strstr(b.data, "retention_state") == record + strlen(";\nINSERT INTO "));
    CL_ASSERT(strstr(strstr(record, "COMMIT"), "retention_state") == NULL);
    CL_ASSERT(strstr(b.data, "START TRANSACTION") < record);
    cl_buf_free(&b);
}

static void test_rejected_events_are_deleted_below_the_first_young_id(void)
{
    cl_buf_t b;
    cl_buf_init(&b);
    unsigned summary = 0;
    char err[CL_ERR_LEN];
    CL_ASSERT_INT_EQ(CL_OK, cl_retention_batch_sql(&b, 0, 1000, &summary, err));
    CL_ASSERT_STR_CONTAINS(b.data, "SET @cl_retention_bound = (SELECT id FROM rejected_events "
                                   "WHERE rejected_at >= '1970-01-01 00:00:00.000' ORDER BY id "
                                   "LIMIT 1)");
    CL_ASSERT_STR_CONTAINS(b.data, "DELETE FROM rejected_events WHERE id < "
                                   "COALESCE(@cl_retention_bound, 9223372036854775807) AND "
                                   "rejected_at < '1970-01-01 00:00:00.000' ORDER BY id LIMIT "
                                   "1000");
    /* After the events' COMMIT: its own autocommit transaction. */
    CL_ASSERT(strstr(b.data, ";\nCOMMIT") < strstr(b.data, "DELETE FROM rejected_events"));
    cl_buf_free(&b);
}

static void test_summary_is_the_last_statement_with_one_column_per_table(void)
{
    cl_buf_t b;
    cl_buf_init(&b);
    unsigned summary = 0;
    char err[CL_ERR_LEN], stmt[512];
    CL_ASSERT_INT_EQ(CL_OK, cl_retention_batch_sql(&b, 1, 1, &summary, err));
    CL_ASSERT_INT_EQ(count_statements(b.data) - 1, summary);
    CL_ASSERT_STR_EQ("SELECT @cl_retention_click_data, @cl_retention_geo_data, "
                     "@cl_retention_user_agent_data, @cl_retention_agg_pending, "
                     "@cl_retention_rejected_events, @cl_retention_agg_done, "
                     "@cl_retention_agg_users",
                     nth_statement(b.data, summary, stmt, sizeof stmt));
    /* Every variable the summary reads is set right after its DELETE. */
    for (int t = 0; t < CL_RETENTION_TABLE_COUNT; t++) {
        char set[128];
        snprintf(set, sizeof set, "SET @cl_retention_%s = ROW_COUNT()",
                 cl_retention_table_name((cl_retention_table_t)t));
        CL_ASSERT_STR_CONTAINS(b.data, set);
    }
    cl_buf_free(&b);
}

static void test_arguments_out_of_range_are_refused(void)
{
    cl_buf_t b;
    cl_buf_init(&b);
    unsigned summary = 0;
    char err[CL_ERR_LEN];
    CL_ASSERT_INT_EQ(CL_ERR, cl_retention_batch_sql(&b, 0, 0, &summary, err));
    CL_ASSERT_STR_CONTAINS(err, "batch_rows");
    CL_ASSERT_INT_EQ(CL_ERR,
                     cl_retention_batch_sql(&b, 0, CL_RETENTION_MAX_BATCH_ROWS + 1, &summary, err));
    CL_ASSERT_INT_EQ(CL_ERR,
                     cl_retention_batch_sql(&b, INT64_C(-40000000000000), 10, &summary, err));
    CL_ASSERT_STR_CONTAINS(err, "DATETIME");
    CL_ASSERT_INT_EQ(0, b.len);
    cl_buf_free(&b);
}

static void test_table_names_match_the_schema(void)
{
    CL_ASSERT_STR_EQ("click_data", cl_retention_table_name(CL_RETENTION_CLICK_DATA));
    CL_ASSERT_STR_EQ("geo_data", cl_retention_table_name(CL_RETENTION_GEO_DATA));
    CL_ASSERT_STR_EQ("user_agent_data", cl_retention_table_name(CL_RETENTION_USER_AGENT_DATA));
    CL_ASSERT_STR_EQ("agg_pending", cl_retention_table_name(CL_RETENTION_AGG_PENDING));
    CL_ASSERT_STR_EQ("rejected_events", cl_retention_table_name(CL_RETENTION_REJECTED_EVENTS));
    CL_ASSERT_STR_EQ("agg_done", cl_retention_table_name(CL_RETENTION_AGG_DONE));
    CL_ASSERT_STR_EQ("agg_users", cl_retention_table_name(CL_RETENTION_AGG_USERS));
    CL_ASSERT_STR_EQ("unknown", cl_retention_table_name(CL_RETENTION_TABLE_COUNT));
}

static const cl_test_case_t cases[] = {
    CL_TEST(test_cutoff_is_now_minus_whole_days),
    CL_TEST(test_batch_deletes_children_then_events_in_one_transaction),
    CL_TEST(test_batch_records_the_cutoff_when_it_deleted_events),
    CL_TEST(test_rejected_events_are_deleted_below_the_first_young_id),
    CL_TEST(test_summary_is_the_last_statement_with_one_column_per_table),
    CL_TEST(test_arguments_out_of_range_are_refused),
    CL_TEST(test_table_names_match_the_schema),
};

CL_TEST_MAIN(cases)

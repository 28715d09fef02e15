/* Unit tests for the pure parts of the aggregation: the run / recompute SQL
 * text (aggregate_sql.h) and the indexer's side (agg_stats.h): key checks,
 * escaping and row parsing. No server: what the SQL computes is checked by
 * the integration tests (test_aggregate.py, test_agg_random.py). */
#include "clickloop/agg_stats.h"
#include "clickloop/aggregate_sql.h"

#include <stdbool.h>

#include "clickloop/retention.h"

#include "cl_test.h"

#define HOUR_MS UINT64_C(3600000)
#define DAY_MS UINT64_C(86400000)

static const uint64_t hour_and_day[] = {HOUR_MS, DAY_MS};
static const cl_aggregate_spec_t spec = {hour_and_day, 2, 30 * 60000, 0};

static bool starts_with(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

static cl_buf_t run_plan(const cl_aggregate_run_plan_t *plan, unsigned int *summary)
{
    cl_buf_t b;
    cl_buf_init(&b);
    char err[CL_ERR_LEN] = "";
    int rc = cl_aggregate_run_sql(&b, plan, summary, err);
    if (rc != CL_OK)
        fprintf(stderr, "    run_sql failed: %s\n", err);
    CL_ASSERT_INT_EQ(CL_OK, rc);
    return b;
}

static cl_buf_t run_sql_frozen(const cl_aggregate_spec_t *s, int64_t frozen_before_ms,
                               unsigned int *summary)
{
    cl_aggregate_run_plan_t plan = {s, frozen_before_ms, CL_AGG_MAX_CLAIM, 200};
    return run_plan(&plan, summary);
}

static cl_buf_t run_sql(const cl_aggregate_spec_t *s, unsigned int *summary)
{
    return run_sql_frozen(s, CL_AGG_NOTHING_FROZEN, summary);
}

/* The statement at 0-based `index` of a ";\n"-separated text, copied. */
static char *nth_statement(const char *sql, unsigned int index)
{
    const char *p = sql;
    for (unsigned int i = 0; i < index && p != NULL; i++) {
        p = strstr(p, ";\n");
        if (p != NULL)
            p += 2;
    }
    if (p == NULL)
        return cl_xstrdup("");
    const char *end = strstr(p, ";\n");
    return end != NULL ? cl_xstrndup(p, (size_t)(end - p)) : cl_xstrdup(p);
}

static void test_spec_check_refuses_what_the_sql_cannot_handle(void)
{
    char err[CL_ERR_LEN];
    CL_ASSERT_INT_EQ(CL_OK, cl_aggregate_spec_check(&spec, err));

    cl_aggregate_spec_t s = spec;
    s.window_count = 0;
    CL_ASSERT_INT_EQ(CL_ERR, cl_aggregate_spec_check(&s, err));
    CL_ASSERT_STR_CONTAINS(err, "at least one window size");

    uint64_t twice[] = {HOUR_MS, HOUR_MS};
    s = spec;
    s.windows_ms = twice;
    CL_ASSERT_INT_EQ(CL_ERR, cl_aggregate_spec_check(&s, err));
    CL_ASSERT_STR_CONTAINS(err, "window size 3600000 ms is listed twice");

    uint64_t zero[] = {0};
    s = spec;
    s.windows_ms = zero;
    s.window_count = 1;
    CL_ASSERT_INT_EQ(CL_ERR, cl_aggregate_spec_check(&s, err));

    s = spec;
    s.session_timeout_ms = 0;
    CL_ASSERT_INT_EQ(CL_ERR, cl_aggregate_spec_check(&s, err));
    CL_ASSERT_STR_CONTAINS(err, "session timeout 0 ms");
}

static void test_lock_is_taken_without_waiting_and_named_per_database(void)
{
    CL_ASSERT_STR_EQ("SELECT GET_LOCK(CONCAT('clickloop.aggregate.', DATABASE()), 0)",
                     cl_aggregate_lock_sql());
    CL_ASSERT_STR_EQ("DO RELEASE_LOCK(CONCAT('clickloop.aggregate.', DATABASE()))",
                     cl_aggregate_unlock_sql());
}

static void test_run_is_one_read_committed_transaction(void)
{
    unsigned int summary;
    cl_buf_t b = run_sql(&spec, &summary);
    const char *iso = strstr(b.data, "SET TRANSACTION ISOLATION LEVEL READ COMMITTED;\n"
                                     "START TRANSACTION;\n");
    const char *claim = strstr(b.data, "INSERT INTO agg_run_claim");
    const char *upsert = strstr(b.data, "INSERT INTO agg_stats");
    const char *done = strstr(b.data, "INSERT INTO agg_done (row_key) SELECT k.row_key FROM "
                                      "agg_run_claim k");
    const char *unqueue =
        strstr(b.data, "DELETE p FROM agg_run_claim c STRAIGHT_JOIN agg_pending p");
    const char *commit = strstr(b.data, ";\nCOMMIT;\n");
    CL_ASSERT(iso != NULL && claim != NULL && upsert != NULL && done != NULL && unqueue != NULL &&
              commit != NULL);
    /* The claimed events become done in the transaction that counts them. */
    CL_ASSERT(iso < claim && claim < upsert && upsert < done && done < unqueue && unqueue < commit);
    /* The work tables are temporary, so DDL does not end the transaction. */
    CL_ASSERT(strstr(b.data, "CREATE TABLE") == NULL);
    CL_ASSERT(b.data[b.len - 1] != ';');
    cl_buf_free(&b);
}

static void test_summary_statement_index_points_at_the_summary_select(void)
{
    unsigned int summary = 0;
    cl_buf_t b = run_sql(&spec, &summary);
    char *stmt = nth_statement(b.data, summary);
    CL_ASSERT(starts_with(stmt, "SELECT (SELECT COUNT(*) FROM agg_run_claim), "));
    CL_ASSERT_STR_CONTAINS(stmt, "(SELECT COUNT(*) FROM agg_run_delta) + "
                                 "(SELECT COUNT(*) FROM agg_run_result), "
                                 "@cl_agg_windows_frozen");
    free(stmt);
    cl_buf_free(&b);
}

static void test_every_configured_window_size_gets_the_changes(void)
{
    const uint64_t three[] = {15 * 60000, HOUR_MS, 7 * DAY_MS};
    cl_aggregate_spec_t s = {three, 3, 60000, 0};
    unsigned int summary;
    cl_buf_t b = run_sql(&s, &summary);
    CL_ASSERT_STR_CONTAINS(b.data, "FROM agg_run_aff a CROSS JOIN (SELECT 900000 AS window_ms "
                                   "UNION ALL SELECT 3600000 UNION ALL SELECT 604800000) s");
    cl_buf_free(&b);
}

static void test_claims_and_marks_are_bounded_by_the_plan(void)
{
    cl_aggregate_run_plan_t plan = {&spec, CL_AGG_NOTHING_FROZEN, 123, 45};
    unsigned int summary;
    cl_buf_t b = run_plan(&plan, &summary);
    /* Key order, so that a run with claim_limit 1 claims the event that
     * cl_aggregate_hold_sql holds; held events are never claimed. */
    CL_ASSERT_STR_CONTAINS(b.data, "SELECT p.row_key, p.user_id, p.event_time FROM agg_pending p "
                                   "WHERE NOT EXISTS (SELECT 1 FROM agg_held h WHERE h.row_key = "
                                   "p.row_key) ORDER BY p.row_key LIMIT 123;\n");
    CL_ASSERT_STR_CONTAINS(b.data, "FROM agg_dirty ORDER BY window_start DESC, window_ms "
                                   "LIMIT 45;\n");
    CL_ASSERT_STR_CONTAINS(b.data, "AND d.marked_at = m.marked_at");
    cl_buf_free(&b);

    /* Nothing of a kind: that part is not in the run at all. */
    plan.claim_limit = 0;
    plan.marks_limit = 0;
    b = run_plan(&plan, &summary);
    CL_ASSERT(strstr(b.data, "INSERT INTO agg_run_claim") == NULL);
    CL_ASSERT(strstr(b.data, "INSERT INTO agg_run_marks") == NULL);
    CL_ASSERT(strstr(b.data, "INSERT INTO agg_stats") != NULL);
    cl_buf_free(&b);
}

/* The neighbourhood is one index range per island of a user (not a "ref" on
 * user_id, which walks all of a heavy user's events), and the islands are
 * the claimed times +- the session timeout, made distinct before the merge:
 * two equal intervals ordered differently by the two window sorts once made
 * two islands start at one point (issue 9, the duplicate key). */
static void test_neighbourhood_is_an_index_range_per_island_of_a_user(void)
{
    const uint64_t hour[] = {HOUR_MS};
    cl_aggregate_spec_t s = {hour, 1, 123456, 0};
    unsigned int summary;
    cl_buf_t b = run_sql(&s, &summary);
    CL_ASSERT_STR_CONTAINS(b.data, "FROM agg_run_isle i STRAIGHT_JOIN click_data c FORCE INDEX "
                                   "(idx_click_user_time) ON c.user_id >= i.user_id AND "
                                   "c.user_id <= i.user_id AND c.event_time BETWEEN i.lo AND i.hi");
    CL_ASSERT_STR_CONTAINS(b.data, "AS starts FROM (SELECT DISTINCT user_id, ");
    CL_ASSERT_STR_CONTAINS(b.data, "GROUP BY user_id, island");
    /* Both ends one timeout away, clamped into the DATETIME range. */
    CL_ASSERT_STR_CONTAINS(b.data, " + (-123456), -30610224000000)");
    CL_ASSERT_STR_CONTAINS(b.data, " + (123456), 253402300799999)");
    /* Dwell times count up to the timeout, inclusive. */
    CL_ASSERT_STR_CONTAINS(b.data, " <= 123456, ");
    cl_buf_free(&b);
}

static void test_range_merges_read_distinct_intervals(void)
{
    unsigned int summary;
    cl_buf_t b = run_sql(&spec, &summary);
    unsigned int merges = 0;
    for (unsigned int i = 0;; i++) {
        char *stmt = nth_statement(b.data, i);
        bool end = stmt[0] == '\0';
        if (strstr(stmt, "GROUP BY island") != NULL || strstr(stmt, ", island") != NULL) {
            merges++;
            CL_ASSERT(strstr(stmt, "FROM (SELECT DISTINCT ") != NULL);
        }
        free(stmt);
        if (end)
            break;
    }
    CL_ASSERT_INT_EQ(2, merges); /* users' islands and marked windows' ranges */
    cl_buf_free(&b);
}

/* The run works on the aggregated events (agg_done) and the new claimed
 * ones; other pending events are left out (as not arrived yet), and an
 * event delivered again after it was aggregated is not new. */
static void test_the_set_of_a_run_is_the_done_events_and_the_new_claimed_ones(void)
{
    unsigned int summary;
    cl_buf_t b = run_sql(&spec, &summary);
    CL_ASSERT_STR_CONTAINS(b.data, "k.row_key IS NOT NULL AND d.row_key IS NULL FROM agg_run_isle");
    /* agg_done is looked up through the pending row only: a neighbour that
     * is not pending is aggregated, and the large table is not read for it. */
    const char *filter = "LEFT JOIN agg_run_claim k ON k.row_key = c.row_key LEFT JOIN "
                         "agg_pending p ON p.row_key = c.row_key LEFT JOIN agg_done d ON "
                         "d.row_key = p.row_key WHERE (p.row_key IS NULL OR d.row_key IS NOT "
                         "NULL OR k.row_key IS NOT NULL)";
    const char *neighbours = strstr(b.data, filter);
    CL_ASSERT(neighbours != NULL);
    /* The same set in the scan of marked windows. */
    CL_ASSERT(neighbours != NULL && strstr(neighbours + 1, filter) != NULL);
    CL_ASSERT(strstr(b.data, "LEFT JOIN agg_done d ON d.row_key = c.row_key") == NULL);
    cl_buf_free(&b);
}

static void test_users_events_are_ordered_by_time_then_row_key(void)
{
    unsigned int summary;
    cl_buf_t b = run_sql(&spec, &summary);
    CL_ASSERT_STR_CONTAINS(b.data, "WINDOW w AS (PARTITION BY user_id ORDER BY event_time, "
                                   "row_key)");
    CL_ASSERT_STR_CONTAINS(b.data, "LEAD(event_time) OVER (PARTITION BY user_id ORDER BY "
                                   "event_time, row_key) AS next_time FROM agg_run_nb WHERE "
                                   "is_new = 0");
    CL_ASSERT_STR_CONTAINS(b.data, "LEAD(c.event_time) OVER (PARTITION BY c.user_id "
                                   "ORDER BY c.event_time, c.row_key)");
    cl_buf_free(&b);
}

static void test_work_tables_use_the_schema_text_collation(void)
{
    unsigned int summary;
    cl_buf_t b = run_sql(&spec, &summary);
    CL_ASSERT_STR_CONTAINS(b.data, "lo DATETIME(3) NOT NULL, hi DATETIME(3) NOT NULL, PRIMARY "
                                   "KEY (user_id, lo)) DEFAULT CHARSET=utf8mb4 "
                                   "COLLATE=utf8mb4_nopad_bin");
    CL_ASSERT_STR_CONTAINS(b.data, "PRIMARY KEY (row_key), KEY (event_time)) DEFAULT "
                                   "CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin");
    CL_ASSERT(strstr(b.data, "utf8mb4_bin") == NULL);
    cl_buf_free(&b);
}

static void test_events_without_a_country_count_as_unknown(void)
{
    unsigned int summary;
    cl_buf_t b = run_sql(&spec, &summary);
    CL_ASSERT_STR_CONTAINS(b.data, "COALESCE(g.country, 'unknown'), IF(l.is_new = 1");
    /* Inside the prepared statement's text, so the quotes are escaped. */
    CL_ASSERT_STR_CONTAINS(b.data, "COALESCE(g.country, \\'unknown\\')");
    cl_buf_free(&b);
}

/* New events add to their rows, the moved dwell time of an earlier click
 * adds (or takes) its difference, recomputed windows replace their rows;
 * rows that would not change are left out, and every change is a new
 * version. */
static void test_deltas_add_recomputations_replace_and_only_changes_get_a_version(void)
{
    unsigned int summary;
    cl_buf_t b = run_sql(&spec, &summary);
    CL_ASSERT_STR_CONTAINS(b.data, "COALESCE(l.new_spent, 0) - COALESCE(l.old_spent, 0)");
    CL_ASSERT_STR_CONTAINS(b.data, "(l.new_spent IS NOT NULL) - (l.old_spent IS NOT NULL)");
    CL_ASSERT_STR_CONTAINS(b.data, "DELETE FROM agg_run_delta WHERE clicks = 0 AND "
                                   "unique_users = 0 AND time_spent_sum = 0 AND "
                                   "time_spent_samples = 0");
    CL_ASSERT_STR_CONTAINS(b.data, "ON DUPLICATE KEY UPDATE clicks = agg_stats.clicks + "
                                   "VALUES(clicks), unique_users = agg_stats.unique_users + "
                                   "VALUES(unique_users)");
    CL_ASSERT_STR_CONTAINS(b.data, "ON DUPLICATE KEY UPDATE clicks = VALUES(clicks), "
                                   "unique_users = VALUES(unique_users)");
    CL_ASSERT_STR_CONTAINS(b.data, "WHERE s.window_ms IS NULL OR s.clicks <> a.clicks OR "
                                   "s.unique_users <> a.unique_users OR s.time_spent_sum <> "
                                   "a.time_spent_sum OR s.time_spent_samples <> "
                                   "a.time_spent_samples");
    CL_ASSERT_STR_CONTAINS(b.data, "version = GREATEST(agg_stats.version + 1, VALUES(version)), "
                                   "needs_index = 1");
    /* Marked windows are left to their recomputation. */
    CL_ASSERT_STR_CONTAINS(b.data, "DELETE c FROM agg_run_marks m STRAIGHT_JOIN agg_run_cell c");
    cl_buf_free(&b);
}

/* A user counts once per cell: a new event adds a unique user only when its
 * user is not in agg_users for the cell yet; a recomputed window rebuilds
 * its rows there. */
static void test_unique_users_come_from_the_cells_users(void)
{
    unsigned int summary;
    cl_buf_t b = run_sql(&spec, &summary);
    const char *fresh = strstr(b.data, "FROM agg_run_cell c WHERE c.is_new = 1 AND NOT EXISTS "
                                       "(SELECT 1 FROM agg_users u WHERE u.window_start = "
                                       "c.window_start AND u.window_ms = c.window_ms AND "
                                       "u.url_hash = c.url_hash AND u.country = c.country AND "
                                       "u.user_id = c.user_id)");
    const char *add = strstr(b.data, "INSERT INTO agg_users (window_start, window_ms, url_hash, "
                                     "country, user_id) SELECT window_start, window_ms, url_hash, "
                                     "country, user_id FROM agg_run_newuser");
    const char *count = strstr(b.data, "COUNT(*) AS users FROM agg_run_newuser");
    const char *rebuild = strstr(b.data, "DELETE u FROM agg_run_dirty d STRAIGHT_JOIN agg_users u");
    CL_ASSERT(fresh != NULL && add != NULL && count != NULL && rebuild != NULL);
    CL_ASSERT(fresh < add && add < count && count < rebuild);
    cl_buf_free(&b);
}

static void test_frozen_bound_is_an_hour_past_the_retention_cutoff_while_retention_is_on(void)
{
    /* 2024-05-17 12:34:56.789 UTC */
    int64_t now = INT64_C(1715949296789);
    int64_t hour = INT64_C(3600000);
    CL_ASSERT_INT_EQ(cl_retention_cutoff_ms(now, 30) + hour,
                     cl_aggregate_frozen_before_ms(now, 30));
    CL_ASSERT_INT_EQ(now - 30 * (int64_t)DAY_MS + hour, cl_aggregate_frozen_before_ms(now, 30));
    CL_ASSERT_INT_EQ(now - (int64_t)DAY_MS + hour, cl_aggregate_frozen_before_ms(now, 1));
    CL_ASSERT_INT_EQ(now - 36500 * (int64_t)DAY_MS + hour,
                     cl_aggregate_frozen_before_ms(now, 36500));
}

#define PRUNED_BOUND                                                                               \
    "(SELECT (TIMESTAMPDIFF(MICROSECOND, TIMESTAMP'1970-01-01 00:00:00', pruned_before) DIV "      \
    "1000) + 3600000 FROM retention_state WHERE id = 1)"
#define DELETE_FROZEN                                                                              \
    "DELETE FROM agg_run_cell WHERE (TIMESTAMPDIFF(MICROSECOND, "                                  \
    "TIMESTAMP'1970-01-01 00:00:00', window_start) DIV 1000) < @cl_agg_frozen_before;\n"

static void test_current_policy_freezes_nothing_while_retention_is_off(void)
{
    CL_ASSERT_INT_EQ(CL_AGG_NOTHING_FROZEN,
                     cl_aggregate_frozen_before_ms(INT64_C(1715949296789), 0));
    CL_ASSERT_INT_EQ(CL_AGG_NOTHING_FROZEN, cl_aggregate_frozen_before_ms(0, 0));
}

/* Rows retention deleted stay deleted after raw_days is raised or set to 0:
 * the bound it recorded (plus the margin, in ms) freezes on every run, also
 * with retention off now; without a row the bound is NULL, nothing frozen. */
static void test_recorded_pruned_bound_freezes_while_retention_is_off(void)
{
    unsigned int summary;
    cl_buf_t b = run_sql(&spec, &summary);
    const char *bound = strstr(b.data, ";\nSET @cl_agg_frozen_before = " PRUNED_BOUND ";\n");
    const char *cells = strstr(b.data, "INSERT INTO agg_run_cell");
    const char *frozen = strstr(b.data, DELETE_FROZEN);
    const char *fresh = strstr(b.data, "INSERT INTO agg_run_newuser");
    CL_ASSERT(bound != NULL && cells != NULL && frozen != NULL && fresh != NULL);
    CL_ASSERT(bound < cells && cells < frozen && frozen < fresh);
    CL_ASSERT(strstr(b.data, "@cl_agg_frozen_before = GREATEST") == NULL);
    char *stmt = nth_statement(b.data, summary);
    CL_ASSERT_STR_CONTAINS(stmt, ", @cl_agg_windows_frozen");
    free(stmt);
    cl_buf_free(&b);
}

static void test_frozen_windows_are_set_aside_and_counted(void)
{
    /* A window starting at the bound is kept: only those before it are frozen,
     * including one that straddles the bound. The bound is the policy's, or
     * the recorded one when that is later. */
    unsigned int summary;
    cl_buf_t b = run_sql_frozen(&spec, INT64_C(1713357296789), &summary);
    CL_ASSERT_STR_CONTAINS(b.data, ";\nSET @cl_agg_frozen_before = GREATEST(1713357296789, "
                                   "COALESCE(" PRUNED_BOUND ", 1713357296789));\n");
    const char *count = strstr(b.data, "SET @cl_agg_windows_frozen = (SELECT COUNT(*) FROM "
                                       "(SELECT DISTINCT window_ms, window_start FROM "
                                       "agg_run_cell WHERE ");
    const char *frozen = strstr(b.data, DELETE_FROZEN);
    /* Frozen marks are not recomputed, but counted and consumed. */
    const char *marks = strstr(b.data, "FROM agg_run_marks WHERE @cl_agg_frozen_before IS NULL "
                                       "OR (TIMESTAMPDIFF(MICROSECOND, TIMESTAMP'1970-01-01 "
                                       "00:00:00', window_start) DIV 1000) >= "
                                       "@cl_agg_frozen_before;\nSET @cl_agg_windows_frozen = "
                                       "@cl_agg_windows_frozen + (SELECT COUNT(*) FROM "
                                       "agg_run_marks) - ROW_COUNT();\n");
    const char *unqueue =
        strstr(b.data, "DELETE p FROM agg_run_claim c STRAIGHT_JOIN agg_pending p");
    const char *unmark = strstr(b.data, "DELETE d FROM agg_run_marks m STRAIGHT_JOIN agg_dirty d");
    CL_ASSERT(count != NULL && frozen != NULL && marks != NULL && unqueue != NULL &&
              unmark != NULL);
    CL_ASSERT(count < frozen && frozen < marks && marks < unqueue && unqueue < unmark);
    cl_buf_free(&b);

    /* Any bound works, also one before 1000-01-01 (outside DATETIME). */
    b = run_sql_frozen(&spec, INT64_C(-40000000000000), &summary);
    CL_ASSERT_STR_CONTAINS(b.data, "SET @cl_agg_frozen_before = GREATEST(-40000000000000, "
                                   "COALESCE(" PRUNED_BOUND ", -40000000000000));\n");
    cl_buf_free(&b);
}

static void test_run_sql_refuses_a_bad_spec(void)
{
    cl_aggregate_spec_t s = spec;
    s.session_timeout_ms = 0;
    cl_buf_t b;
    cl_buf_init(&b);
    char err[CL_ERR_LEN];
    unsigned int summary;
    cl_aggregate_run_plan_t plan = {&s, CL_AGG_NOTHING_FROZEN, 10, 10};
    CL_ASSERT_INT_EQ(CL_ERR, cl_aggregate_run_sql(&b, &plan, &summary, err));
    CL_ASSERT_INT_EQ(0, b.len);
    cl_buf_free(&b);
}

static void test_hold_takes_the_event_a_claim_of_one_takes(void)
{
    cl_buf_t b;
    cl_buf_init(&b);
    char err[CL_ERR_LEN];
    CL_ASSERT_INT_EQ(CL_OK, cl_aggregate_hold_sql(&b, "Out of range value for 'x'\xff",
                                                  cl_db_escape_string, err));
    CL_ASSERT_STR_CONTAINS(b.data, "SET @cl_agg_hold = (SELECT p.row_key FROM agg_pending p WHERE "
                                   "NOT EXISTS (SELECT 1 FROM agg_held h WHERE h.row_key = "
                                   "p.row_key) ORDER BY p.row_key LIMIT 1);\n");
    CL_ASSERT_STR_CONTAINS(b.data, "SELECT @cl_agg_hold, 'Out of range value for \\'x\\'?' "
                                   "FROM DUAL WHERE @cl_agg_hold IS NOT NULL");
    cl_buf_free(&b);
    CL_ASSERT_INT_EQ(CL_ERR, cl_aggregate_hold_sql(&b, NULL, cl_db_escape_string, err));
    CL_ASSERT_STR_EQ("DELETE FROM agg_dirty ORDER BY window_start DESC, window_ms LIMIT 1",
                     cl_aggregate_drop_mark_sql());
}

static void test_full_recompute_marks_every_window_of_every_size(void)
{
    cl_buf_t b;
    cl_buf_init(&b);
    char err[CL_ERR_LEN];
    CL_ASSERT_INT_EQ(CL_OK, cl_aggregate_full_recompute_sql(&b, &spec, err));
    CL_ASSERT(starts_with(b.data, "INSERT INTO agg_dirty (window_ms, window_start, marked_at) "));
    CL_ASSERT_STR_CONTAINS(b.data, "FROM click_data c CROSS JOIN (SELECT 3600000 AS window_ms "
                                   "UNION ALL SELECT 86400000) s) m ON DUPLICATE KEY UPDATE "
                                   "marked_at = VALUES(marked_at)");
    CL_ASSERT(strchr(b.data, ';') == NULL); /* one statement, for the mariadb client too */
    cl_buf_free(&b);
}

static cl_aggregate_key_t sample_key(void)
{
    cl_aggregate_key_t k = {.window_ms = HOUR_MS, .window_start_ms = INT64_C(1715947200000)};
    memset(k.url_hash_hex, 'a', 64);
    k.url_hash_hex[63] = 'F';
    strcpy(k.country, "DE");
    return k;
}

static void test_index_select_reads_rows_needing_indexing_in_key_order(void)
{
    cl_buf_t b;
    cl_buf_init(&b);
    char err[CL_ERR_LEN];
    CL_ASSERT_INT_EQ(CL_OK, cl_aggregate_index_select_sql(&b, 500, NULL, err));
    CL_ASSERT(starts_with(b.data, "SELECT window_ms, (TIMESTAMPDIFF(MICROSECOND, "
                                  "TIMESTAMP'1970-01-01 00:00:00', window_start) DIV 1000), "
                                  "HEX(url_hash), country, url, clicks"));
    CL_ASSERT_STR_CONTAINS(b.data, "FROM agg_stats FORCE INDEX (idx_agg_stats_needs_index) "
                                   "WHERE needs_index = 1 ORDER BY window_ms, window_start, "
                                   "url_hash, country LIMIT 500");
    cl_buf_free(&b);
}

static void test_index_select_continues_after_a_key(void)
{
    cl_aggregate_key_t k = sample_key();
    cl_buf_t b;
    cl_buf_init(&b);
    char err[CL_ERR_LEN];
    CL_ASSERT_INT_EQ(CL_OK, cl_aggregate_index_select_sql(&b, 10, &k, err));
    CL_ASSERT_STR_CONTAINS(b.data, "AND (window_ms > 3600000 OR (window_ms = 3600000 AND "
                                   "(window_start > TIMESTAMP'1970-01-01 00:00:00' + INTERVAL "
                                   "(1715947200000) * 1000 MICROSECOND OR");
    CL_ASSERT_STR_CONTAINS(b.data, "url_hash = UNHEX('aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                                   "aaaaaaaaaaaaaaaaaaaF') AND country > 'DE'))))))");
    cl_buf_free(&b);
}

static void test_keys_that_could_break_the_sql_are_refused(void)
{
    char err[CL_ERR_LEN];
    cl_buf_t b;
    cl_buf_init(&b);
    cl_aggregate_key_t k = sample_key();
    strcpy(k.country, "D'E");
    CL_ASSERT_INT_EQ(CL_ERR, cl_aggregate_index_select_sql(&b, 10, &k, err));
    CL_ASSERT_STR_CONTAINS(err, "country has a character other than");

    k = sample_key();
    k.url_hash_hex[10] = 'g';
    cl_aggregate_indexed_t item = {k, 3};
    CL_ASSERT_INT_EQ(CL_ERR, cl_aggregate_mark_indexed_sql(&b, &item, 1, err));
    CL_ASSERT_STR_CONTAINS(err, "url_hash_hex has a non-hex character at 10");

    k = sample_key();
    k.url_hash_hex[20] = '\0';
    CL_ASSERT_INT_EQ(CL_ERR,
                     cl_aggregate_mark_failed_sql(&b, &k, 1, "x", cl_db_escape_string, err));
    CL_ASSERT_STR_CONTAINS(err, "url_hash_hex has 20 characters, not 64");
    CL_ASSERT_INT_EQ(0, b.len);
    cl_buf_free(&b);
}

static void test_mark_indexed_never_moves_the_indexed_version_back(void)
{
    cl_aggregate_indexed_t items[2] = {{sample_key(), 7}, {sample_key(), 2}};
    strcpy(items[1].key.country, "unknown");
    cl_buf_t b;
    cl_buf_init(&b);
    char err[CL_ERR_LEN];
    CL_ASSERT_INT_EQ(CL_OK, cl_aggregate_mark_indexed_sql(&b, items, 2, err));
    CL_ASSERT(starts_with(b.data, "UPDATE agg_stats s JOIN (SELECT 3600000 AS window_ms, "));
    CL_ASSERT_STR_CONTAINS(b.data, " AS url_hash, 'DE' AS country, 7 AS version UNION ALL "
                                   "SELECT 3600000, ");
    CL_ASSERT_STR_CONTAINS(b.data, "'unknown', 2) v ON ");
    CL_ASSERT_STR_CONTAINS(b.data, "SET s.indexed_version = GREATEST(s.indexed_version, "
                                   "v.version), s.needs_index = (s.version <> "
                                   "GREATEST(s.indexed_version, v.version)), "
                                   "s.index_error = NULL");
    CL_ASSERT_INT_EQ(CL_ERR, cl_aggregate_mark_indexed_sql(&b, items, 0, err));
    cl_buf_free(&b);
}

static void test_mark_failed_escapes_and_bounds_the_reason(void)
{
    cl_aggregate_key_t k = sample_key();
    cl_buf_t b;
    cl_buf_init(&b);
    char err[CL_ERR_LEN];
    CL_ASSERT_INT_EQ(CL_OK, cl_aggregate_mark_failed_sql(&b, &k, 4,
                                                         "mapper_parsing_exception: can't "
                                                         "parse \"x\\y\"\xff",
                                                         cl_db_escape_string, err));
    CL_ASSERT_STR_CONTAINS(b.data, "UPDATE agg_stats SET index_error = 'mapper_parsing_exception: "
                                   "can\\'t parse \\\"x\\\\y\\\"?', needs_index = (version <> 4) "
                                   "WHERE window_ms = 3600000 AND window_start = ");
    CL_ASSERT_STR_CONTAINS(b.data, " AND country = 'DE'");
    cl_buf_free(&b);

    char reason[3000];
    memset(reason, 'r', sizeof reason - 1);
    reason[sizeof reason - 1] = '\0';
    cl_buf_init(&b);
    CL_ASSERT_INT_EQ(CL_OK,
                     cl_aggregate_mark_failed_sql(&b, &k, 4, reason, cl_db_escape_string, err));
    char want[1100];
    snprintf(want, sizeof want, "index_error = '%.*s', ", CL_AGG_INDEX_ERROR_MAX_CHARS, reason);
    CL_ASSERT_STR_CONTAINS(b.data, want);
    cl_buf_free(&b);
}

static void test_index_row_is_parsed_into_a_stat(void)
{
    const char *v[CL_AGG_INDEX_FIELDS] = {
        "3600000",
        "1715947200000",
        "0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF",
        "FR",
        "https://a.example/x",
        "12",
        "5",
        "18446744073709551615",
        "3",
        "2",
        "-1000"};
    unsigned long len[CL_AGG_INDEX_FIELDS];
    for (size_t i = 0; i < CL_AGG_INDEX_FIELDS; i++)
        len[i] = strlen(v[i]);
    cl_aggregate_stat_t st;
    char err[CL_ERR_LEN] = "";
    CL_ASSERT_INT_EQ(CL_OK, cl_aggregate_parse_stat(CL_AGG_INDEX_FIELDS, v, len, &st, err));
    CL_ASSERT_STR_EQ("", err);
    CL_ASSERT_INT_EQ(3600000, st.key.window_ms);
    CL_ASSERT_INT_EQ(INT64_C(1715947200000), st.key.window_start_ms);
    CL_ASSERT_STR_EQ(v[2], st.key.url_hash_hex);
    CL_ASSERT_STR_EQ("FR", st.key.country);
    CL_ASSERT(st.url == v[4] && st.url_len == 19);
    CL_ASSERT_INT_EQ(12, st.clicks);
    CL_ASSERT_INT_EQ(5, st.unique_users);
    CL_ASSERT(st.time_spent_sum == UINT64_MAX);
    CL_ASSERT_INT_EQ(3, st.time_spent_samples);
    CL_ASSERT_INT_EQ(2, st.version);
    CL_ASSERT_INT_EQ(-1000, st.updated_at_ms);
}

static void test_malformed_index_rows_are_refused_with_the_column_named(void)
{
    const char *v[CL_AGG_INDEX_FIELDS] = {
        "3600000",
        "1715947200000",
        "0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF",
        "FR",
        "https://a.example/x",
        "12",
        "5",
        "18446744073709551616",
        "3",
        "2",
        "0"};
    unsigned long len[CL_AGG_INDEX_FIELDS];
    for (size_t i = 0; i < CL_AGG_INDEX_FIELDS; i++)
        len[i] = strlen(v[i]);
    cl_aggregate_stat_t st;
    char err[CL_ERR_LEN];
    CL_ASSERT_INT_EQ(CL_ERR, cl_aggregate_parse_stat(CL_AGG_INDEX_FIELDS, v, len, &st, err));
    CL_ASSERT_STR_CONTAINS(err, "column time_spent_sum is not a 64-bit count");

    v[7] = "1";
    len[7] = 1;
    v[6] = NULL;
    CL_ASSERT_INT_EQ(CL_ERR, cl_aggregate_parse_stat(CL_AGG_INDEX_FIELDS, v, len, &st, err));
    CL_ASSERT_STR_CONTAINS(err, "column unique_users is NULL");

    CL_ASSERT_INT_EQ(CL_ERR, cl_aggregate_parse_stat(3, v, len, &st, err));
    CL_ASSERT_STR_CONTAINS(err, "has 3 columns, expected 11");
}

static const cl_test_case_t cases[] = {
    CL_TEST(test_spec_check_refuses_what_the_sql_cannot_handle),
    CL_TEST(test_lock_is_taken_without_waiting_and_named_per_database),
    CL_TEST(test_run_is_one_read_committed_transaction),
    CL_TEST(test_summary_statement_index_points_at_the_summary_select),
    CL_TEST(test_every_configured_window_size_gets_the_changes),
    CL_TEST(test_claims_and_marks_are_bounded_by_the_plan),
    CL_TEST(test_neighbourhood_is_an_index_range_per_island_of_a_user),
    CL_TEST(test_range_merges_read_distinct_intervals),
    CL_TEST(test_the_set_of_a_run_is_the_done_events_and_the_new_claimed_ones),
    CL_TEST(test_users_events_are_ordered_by_time_then_row_key),
    CL_TEST(test_work_tables_use_the_schema_text_collation),
    CL_TEST(test_events_without_a_country_count_as_unknown),
    CL_TEST(test_deltas_add_recomputations_replace_and_only_changes_get_a_version),
    CL_TEST(test_unique_users_come_from_the_cells_users),
    CL_TEST(test_frozen_bound_is_an_hour_past_the_retention_cutoff_while_retention_is_on),
    CL_TEST(test_current_policy_freezes_nothing_while_retention_is_off),
    CL_TEST(test_recorded_pruned_bound_freezes_while_retention_is_off),
    CL_TEST(test_frozen_windows_are_set_aside_and_counted),
    CL_TEST(test_run_sql_refuses_a_bad_spec),
    CL_TEST(test_hold_takes_the_event_a_claim_of_one_takes),
    CL_TEST(test_full_recompute_marks_every_window_of_every_size),
    CL_TEST(test_index_select_reads_rows_needing_indexing_in_key_order),
    CL_TEST(test_index_select_continues_after_a_key),
    CL_TEST(test_keys_that_could_break_the_sql_are_refused),
    CL_TEST(test_mark_indexed_never_moves_the_indexed_version_back),
    CL_TEST(test_mark_failed_escapes_and_bounds_the_reason),
    CL_TEST(test_index_row_is_parsed_into_a_stat),
    CL_TEST(test_malformed_index_rows_are_refused_with_the_column_named),
};

CL_TEST_MAIN(cases)

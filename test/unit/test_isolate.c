/* Unit tests for poison isolation: the halving itself, the mapping of items
 * to rows and rejected events, and a simulation of the pipeline's use of it
 * against a writer that refuses any write holding a culprit. */
#include "clickloop/isolate.h"

#include <stdbool.h>

#include "clickloop/common.h"

#include "cl_test.h"

static void test_a_failed_range_splits_into_halves_covering_it(void)
{
    cl_isolate_range_t h[2];
    CL_ASSERT_INT_EQ(2, cl_isolate_split((cl_isolate_range_t){10, 7}, h));
    CL_ASSERT_INT_EQ(10, h[0].first);
    CL_ASSERT_INT_EQ(3, h[0].count);
    CL_ASSERT_INT_EQ(13, h[1].first);
    CL_ASSERT_INT_EQ(4, h[1].count);
    CL_ASSERT_INT_EQ(2, cl_isolate_split((cl_isolate_range_t){0, 2}, h));
    CL_ASSERT_INT_EQ(1, h[0].count);
    CL_ASSERT_INT_EQ(1, h[1].first);
}

static void test_a_single_item_that_fails_is_the_culprit(void)
{
    cl_isolate_range_t h[2] = {{99, 99}, {99, 99}};
    CL_ASSERT_INT_EQ(0, cl_isolate_split((cl_isolate_range_t){5, 1}, h));
    CL_ASSERT_INT_EQ(0, cl_isolate_split((cl_isolate_range_t){5, 0}, h));
    CL_ASSERT_INT_EQ(99, h[0].first); /* untouched */
}

static void check_items(size_t first, size_t count, size_t row_count, size_t want_row_first,
                        size_t want_rows, size_t want_rejected_first, size_t want_rejected)
{
    size_t rf = 99, rn = 99, jf = 99, jn = 99;
    cl_isolate_items((cl_isolate_range_t){first, count}, row_count, &rf, &rn, &jf, &jn);
    CL_ASSERT_INT_EQ(want_rows, rn);
    if (want_rows > 0)
        CL_ASSERT_INT_EQ(want_row_first, rf);
    CL_ASSERT_INT_EQ(want_rejected, jn);
    if (want_rejected > 0)
        CL_ASSERT_INT_EQ(want_rejected_first, jf);
}

static void test_items_are_rows_then_rejected_events(void)
{
    check_items(0, 10, 6, 0, 6, 0, 4); /* the whole batch */
    check_items(0, 3, 6, 0, 3, 0, 0);  /* rows only */
    check_items(2, 4, 6, 2, 4, 0, 0);  /* up to the last row */
    check_items(4, 4, 6, 4, 2, 0, 2);  /* across the boundary */
    check_items(7, 2, 6, 0, 0, 1, 2);  /* rejected events only */
    check_items(0, 5, 0, 0, 0, 0, 5);  /* a batch without rows */
    check_items(0, 0, 6, 0, 0, 0, 0);  /* nothing */
}

/* The pipeline's loop, synchronously: write every pending range; a range
 * holding a culprit fails and is split, a culprit alone is found. */
#define SIM_MAX 4096

static size_t simulate(size_t n, const bool *culprit, int *stored, bool *found)
{
    cl_isolate_range_t pending[SIM_MAX];
    size_t top = 0, writes = 0;
    pending[top++] = (cl_isolate_range_t){0, n};
    while (top > 0) {
        cl_isolate_range_t r = pending[--top];
        writes++;
        bool fails = false;
        for (size_t i = r.first; i < r.first + r.count; i++)
            fails = fails || culprit[i];
        if (!fails) {
            for (size_t i = r.first; i < r.first + r.count; i++)
                stored[i]++;
            continue;
        }
        cl_isolate_range_t h[2];
        if (cl_isolate_split(r, h) == 0) {
            found[r.first] = true;
            continue;
        }
        pending[top++] = h[0];
        pending[top++] = h[1];
    }
    return writes;
}

static size_t ceil_log2(size_t n)
{
    size_t k = 0;
    while (((size_t)1 << k) < n)
        k++;
    return k;
}

static void check_isolation(size_t n, const size_t *culprits, size_t k)
{
    static bool culprit[SIM_MAX], found[SIM_MAX];
    static int stored[SIM_MAX];
    memset(culprit, 0, sizeof culprit);
    memset(found, 0, sizeof found);
    memset(stored, 0, sizeof stored);
    for (size_t i = 0; i < k; i++)
        culprit[culprits[i]] = true;
    size_t writes = simulate(n, culprit, stored, found);
    for (size_t i = 0; i < n; i++) {
        if (culprit[i]) {
            CL_ASSERT(found[i]);
            CL_ASSERT_INT_EQ(0, stored[i]);
        } else {
            CL_ASSERT(!found[i]);
            CL_ASSERT_INT_EQ(1, stored[i]); /* exactly once */
        }
    }
    if (writes > 1 + 2 * k * ceil_log2(n))
        fprintf(stderr, "    n=%zu k=%zu: %zu writes\n", n, k, writes);
    CL_ASSERT(writes <= 1 + 2 * k * ceil_log2(n));
}

static void test_one_culprit_among_many_costs_a_few_writes(void)
{
    size_t at[] = {0, 1, 500, 998, 999};
    for (size_t i = 0; i < CL_ARRAY_LEN(at); i++)
        check_isolation(1000, &at[i], 1);
    size_t last = 4095;
    check_isolation(4096, &last, 1);
}

static void test_several_culprits_are_all_found_and_the_rest_stored_once(void)
{
    size_t spread[] = {3, 250, 251, 777, 999};
    check_isolation(1000, spread, CL_ARRAY_LEN(spread));
    size_t all[] = {0, 1, 2};
    check_isolation(3, all, 3);
    size_t alone[] = {0};
    check_isolation(1, alone, 1);
}

static void test_a_batch_without_culprit_is_one_write(void)
{
    static bool culprit[10], found[10];
    static int stored[10];
    CL_ASSERT_INT_EQ(1, simulate(10, culprit, stored, found));
}

static const cl_test_case_t cases[] = {
    CL_TEST(test_a_failed_range_splits_into_halves_covering_it),
    CL_TEST(test_a_single_item_that_fails_is_the_culprit),
    CL_TEST(test_items_are_rows_then_rejected_events),
    CL_TEST(test_one_culprit_among_many_costs_a_few_writes),
    CL_TEST(test_several_culprits_are_all_found_and_the_rest_stored_once),
    CL_TEST(test_a_batch_without_culprit_is_one_write),
};

CL_TEST_MAIN(cases)

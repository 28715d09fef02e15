/* Unit tests for es_nodes: round robin, down marking and recovery, and the
 * choice when every node is down, all with a fake clock. */
#include "clickloop/es_nodes.h"

#include "clickloop/common.h"

#include "cl_test.h"

static void test_round_robin_over_healthy_nodes(void)
{
    cl_es_nodes_t n;
    cl_es_nodes_init(&n, 3, 30000);
    size_t seen[6];
    for (size_t i = 0; i < 6; i++)
        seen[i] = cl_es_nodes_pick(&n, 1000);
    const size_t expected[6] = {0, 1, 2, 0, 1, 2};
    for (size_t i = 0; i < 6; i++)
        CL_ASSERT_INT_EQ(expected[i], seen[i]);
    cl_es_nodes_free(&n);
}

static void test_a_node_marked_down_is_skipped_until_its_period_ends(void)
{
    cl_es_nodes_t n;
    cl_es_nodes_init(&n, 3, 30000);
    cl_es_nodes_mark_down(&n, 1, 1000);
    CL_ASSERT(cl_es_nodes_is_down(&n, 1, 1000));
    CL_ASSERT_INT_EQ(2, cl_es_nodes_up_count(&n, 1000));
    for (int i = 0; i < 10; i++)
        CL_ASSERT(cl_es_nodes_pick(&n, 1000 + (uint64_t)i * 1000) != 1);
    /* 30 s later node 1 is tried again. */
    bool picked = false;
    for (int i = 0; i < 3; i++)
        picked |= cl_es_nodes_pick(&n, 31000) == 1;
    CL_ASSERT(picked);
    CL_ASSERT(!cl_es_nodes_is_down(&n, 1, 31000));
    cl_es_nodes_free(&n);
}

static void test_an_answer_marks_the_node_up_at_once(void)
{
    cl_es_nodes_t n;
    cl_es_nodes_init(&n, 2, 30000);
    cl_es_nodes_mark_down(&n, 0, 1000);
    cl_es_nodes_mark_up(&n, 0);
    CL_ASSERT(!cl_es_nodes_is_down(&n, 0, 1001));
    CL_ASSERT_INT_EQ(2, cl_es_nodes_up_count(&n, 1001));
    cl_es_nodes_free(&n);
}

static void test_dead_first_node_fails_over_to_the_next(void)
{
    cl_es_nodes_t n;
    cl_es_nodes_init(&n, 2, 30000);
    size_t first = cl_es_nodes_pick(&n, 0);
    CL_ASSERT_INT_EQ(0, first);
    cl_es_nodes_mark_down(&n, first, 5);
    for (int i = 0; i < 5; i++)
        CL_ASSERT_INT_EQ(1, cl_es_nodes_pick(&n, 10));
    cl_es_nodes_free(&n);
}

static void test_when_all_are_down_the_one_back_soonest_is_used(void)
{
    cl_es_nodes_t n;
    cl_es_nodes_init(&n, 3, 30000);
    cl_es_nodes_mark_down(&n, 0, 3000); /* until 33000 */
    cl_es_nodes_mark_down(&n, 1, 1000); /* until 31000 */
    cl_es_nodes_mark_down(&n, 2, 2000); /* until 32000 */
    CL_ASSERT_INT_EQ(0, cl_es_nodes_up_count(&n, 5000));
    CL_ASSERT_INT_EQ(1, cl_es_nodes_pick(&n, 5000));
    CL_ASSERT_INT_EQ(1, cl_es_nodes_pick(&n, 5000));
    /* At 31500 node 1 is up again by time alone. */
    CL_ASSERT(!cl_es_nodes_is_down(&n, 1, 31500));
    CL_ASSERT_INT_EQ(1, cl_es_nodes_up_count(&n, 31500));
    cl_es_nodes_free(&n);
}

static void test_a_single_node_is_always_picked(void)
{
    cl_es_nodes_t n;
    cl_es_nodes_init(&n, 1, 1000);
    CL_ASSERT_INT_EQ(0, cl_es_nodes_pick(&n, 0));
    cl_es_nodes_mark_down(&n, 0, 0);
    CL_ASSERT_INT_EQ(0, cl_es_nodes_pick(&n, 10));
    cl_es_nodes_free(&n);
}

static const cl_test_case_t cases[] = {
    CL_TEST(test_round_robin_over_healthy_nodes),
    CL_TEST(test_a_node_marked_down_is_skipped_until_its_period_ends),
    CL_TEST(test_an_answer_marks_the_node_up_at_once),
    CL_TEST(test_dead_first_node_fails_over_to_the_next),
    CL_TEST(test_when_all_are_down_the_one_back_soonest_is_used),
    CL_TEST(test_a_single_node_is_always_picked),
};

CL_TEST_MAIN(cases)

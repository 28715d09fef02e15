/* Unit tests for offset tracking: the committable offset never passes the
 * first offset still in flight, and revoked partitions advance nothing. */
#include "clickloop/offsets.h"

#include "cl_test.h"

/* Nothing of `p` is in flight: a new segment, once done, commits at once. */
static void expect_nothing_in_flight(cl_offsets_part_t *p, int64_t next_offset)
{
    cl_offsets_segment_t *probe = cl_offsets_segment_open(p, next_offset);
    int64_t off = -1;
    CL_ASSERT(cl_offsets_segment_done(probe, NULL, &off));
    CL_ASSERT_INT_EQ(next_offset + 1, off);
}

static void test_single_segment_commits_last_plus_one(void)
{
    cl_offsets_t *o = cl_offsets_new();
    cl_offsets_part_t *p = cl_offsets_part(o, "clicks", 0);
    cl_offsets_segment_t *s = cl_offsets_segment_open(p, 10);
    cl_offsets_segment_extend(s, 11);
    cl_offsets_segment_extend(s, 14); /* gaps happen: compaction, control records */
    cl_offsets_part_t *got = NULL;
    int64_t off = -1;
    CL_ASSERT(cl_offsets_segment_done(s, &got, &off));
    CL_ASSERT(got == p);
    CL_ASSERT_INT_EQ(15, off);
    expect_nothing_in_flight(p, 15);
    cl_offsets_free(o);
}

static void test_offsets_not_committed_past_first_in_flight(void)
{
    cl_offsets_t *o = cl_offsets_new();
    cl_offsets_part_t *p = cl_offsets_part(o, "clicks", 3);
    cl_offsets_segment_t *a = cl_offsets_segment_open(p, 0);
    cl_offsets_segment_extend(a, 99);
    cl_offsets_segment_t *b = cl_offsets_segment_open(p, 100);
    cl_offsets_segment_extend(b, 199);
    cl_offsets_segment_t *c = cl_offsets_segment_open(p, 200);
    int64_t off = -1;
    /* later batches finish first: nothing may be committed yet */
    CL_ASSERT(!cl_offsets_segment_done(c, NULL, &off));
    CL_ASSERT(!cl_offsets_segment_done(b, NULL, &off));
    CL_ASSERT_INT_EQ(-1, off);
    /* the first one finishing releases all three */
    CL_ASSERT(cl_offsets_segment_done(a, NULL, &off));
    CL_ASSERT_INT_EQ(201, off);
    expect_nothing_in_flight(p, 201);
    cl_offsets_free(o);
}

static void test_partial_prefix_advances_to_gap(void)
{
    cl_offsets_t *o = cl_offsets_new();
    cl_offsets_part_t *p = cl_offsets_part(o, "clicks", 0);
    cl_offsets_segment_t *a = cl_offsets_segment_open(p, 5);
    cl_offsets_segment_t *b = cl_offsets_segment_open(p, 6);
    cl_offsets_segment_t *c = cl_offsets_segment_open(p, 7);
    int64_t off = -1;
    CL_ASSERT(cl_offsets_segment_done(a, NULL, &off));
    CL_ASSERT_INT_EQ(6, off);
    CL_ASSERT(!cl_offsets_segment_done(c, NULL, &off));
    CL_ASSERT_INT_EQ(6, off);
    CL_ASSERT(cl_offsets_segment_done(b, NULL, &off));
    CL_ASSERT_INT_EQ(8, off);
    cl_offsets_free(o);
}

static void test_an_abandoned_segment_holds_its_partition_until_revoked(void)
{
    cl_offsets_t *o = cl_offsets_new();
    cl_offsets_part_t *p = cl_offsets_part(o, "t", 0);
    cl_offsets_segment_t *a = cl_offsets_segment_open(p, 10);
    cl_offsets_segment_extend(a, 11);
    cl_offsets_segment_t *b = cl_offsets_segment_open(p, 12);
    cl_offsets_segment_t *c = cl_offsets_segment_open(cl_offsets_part(o, "t", 1), 5);
    cl_offsets_segment_abandon(a);
    cl_offsets_part_t *got = NULL;
    int64_t next = -1;
    /* b is stored, but a's messages are not: nothing may commit past 10. */
    CL_ASSERT(!cl_offsets_segment_done(b, &got, &next));
    CL_ASSERT_INT_EQ(-1, next);
    /* Another partition goes on. */
    CL_ASSERT(cl_offsets_segment_done(c, &got, &next));
    CL_ASSERT_INT_EQ(6, next);
    /* A new assignment starts over (and frees the abandoned segment: the
     * sanitizer build would report a leak otherwise). */
    cl_offsets_revoke(o, "t", 0);
    cl_offsets_segment_t *d = cl_offsets_segment_open(cl_offsets_part(o, "t", 0), 10);
    CL_ASSERT(cl_offsets_segment_done(d, &got, &next));
    CL_ASSERT_INT_EQ(11, next);
    cl_offsets_free(o);
}

static void test_partitions_are_independent(void)
{
    cl_offsets_t *o = cl_offsets_new();
    cl_offsets_part_t *p0 = cl_offsets_part(o, "clicks", 0);
    cl_offsets_part_t *p1 = cl_offsets_part(o, "clicks", 1);
    cl_offsets_part_t *q0 = cl_offsets_part(o, "views", 0);
    CL_ASSERT(p0 != p1 && p0 != q0 && p1 != q0);
    CL_ASSERT(cl_offsets_part(o, "clicks", 1) == p1);
    CL_ASSERT(cl_offsets_find(o, "views", 0) == q0);
    CL_ASSERT(cl_offsets_find(o, "views", 1) == NULL);
    cl_offsets_segment_t *a = cl_offsets_segment_open(p0, 1);
    cl_offsets_segment_t *b = cl_offsets_segment_open(p1, 1000);
    cl_offsets_part_t *got = NULL;
    int64_t off = -1;
    CL_ASSERT(cl_offsets_segment_done(b, &got, &off));
    CL_ASSERT(got == p1);
    CL_ASSERT_INT_EQ(1001, off);
    CL_ASSERT(cl_offsets_segment_done(a, &got, &off));
    CL_ASSERT(got == p0);
    CL_ASSERT_INT_EQ(2, off);
    cl_offsets_free(o);
}

static void test_revoked_partition_in_flight_work_is_abandoned(void)
{
    cl_offsets_t *o = cl_offsets_new();
    cl_offsets_part_t *p = cl_offsets_part(o, "clicks", 0);
    cl_offsets_segment_t *a = cl_offsets_segment_open(p, 0);
    cl_offsets_segment_t *b = cl_offsets_segment_open(p, 1);
    int64_t off = -1;
    CL_ASSERT(!cl_offsets_segment_done(b, NULL, &off)); /* done, waiting behind a */
    cl_offsets_revoke(o, "clicks", 0);
    CL_ASSERT(cl_offsets_find(o, "clicks", 0) == NULL);
    CL_ASSERT(cl_offsets_segment_part(a) == NULL);
    CL_ASSERT(!cl_offsets_segment_done(a, NULL, &off));
    CL_ASSERT_INT_EQ(-1, off);
    /* re-assignment starts a fresh partition state */
    cl_offsets_part_t *p2 = cl_offsets_part(o, "clicks", 0);
    expect_nothing_in_flight(p2, 2);
    cl_offsets_free(o);
}

static void test_free_with_segments_in_flight_leaves_them_to_batches(void)
{
    cl_offsets_t *o = cl_offsets_new();
    cl_offsets_part_t *p = cl_offsets_part(o, "clicks", 0);
    cl_offsets_segment_t *a = cl_offsets_segment_open(p, 0);
    CL_ASSERT(cl_offsets_segment_part(a) == p);
    cl_offsets_free(o);
    int64_t off = -1;
    CL_ASSERT(!cl_offsets_segment_done(a, NULL, &off)); /* frees it; ASan checks */
}

static const cl_test_case_t cases[] = {
    CL_TEST(test_single_segment_commits_last_plus_one),
    CL_TEST(test_offsets_not_committed_past_first_in_flight),
    CL_TEST(test_partial_prefix_advances_to_gap),
    CL_TEST(test_partitions_are_independent),
    CL_TEST(test_an_abandoned_segment_holds_its_partition_until_revoked),
    CL_TEST(test_revoked_partition_in_flight_work_is_abandoned),
    CL_TEST(test_free_with_segments_in_flight_leaves_them_to_batches),
};

CL_TEST_MAIN(cases)

/* Unit tests for the growable buffer. */
#include "clickloop/buf.h"

#include "cl_test.h"

static void test_append_keeps_nul_terminated(void)
{
    cl_buf_t b;
    cl_buf_init(&b);
    cl_buf_append_str(&b, "abc");
    cl_buf_appendf(&b, "-%d-", 42);
    CL_ASSERT_STR_EQ("abc-42-", b.data);
    CL_ASSERT_INT_EQ(7, b.len);
    cl_buf_free(&b);
}

static void test_grows_past_initial_capacity(void)
{
    cl_buf_t b;
    cl_buf_init(&b);
    for (int i = 0; i < 10000; i++)
        cl_buf_append_char(&b, (char)('a' + i % 26));
    CL_ASSERT_INT_EQ(10000, b.len);
    CL_ASSERT_INT_EQ('a' + 9999 % 26, b.data[9999]);
    CL_ASSERT_INT_EQ('\0', b.data[10000]);
    cl_buf_free(&b);
}

static void test_steal_hands_over_and_resets(void)
{
    cl_buf_t b;
    cl_buf_init(&b);
    cl_buf_append_str(&b, "xyz");
    size_t len = 0;
    char *p = cl_buf_steal(&b, &len);
    CL_ASSERT_STR_EQ("xyz", p);
    CL_ASSERT_INT_EQ(3, len);
    CL_ASSERT(b.data == NULL);
    CL_ASSERT_INT_EQ(0, b.len);
    free(p);
}

static void test_steal_of_empty_buffer_is_empty_string(void)
{
    cl_buf_t b;
    cl_buf_init(&b);
    size_t len = 99;
    char *p = cl_buf_steal(&b, &len);
    CL_ASSERT_STR_EQ("", p);
    CL_ASSERT_INT_EQ(0, len);
    free(p);
}

static void test_appendf_longer_than_stack_buffer(void)
{
    cl_buf_t b;
    cl_buf_init(&b);
    char piece[1001];
    memset(piece, 'x', 1000);
    piece[1000] = '\0';
    cl_buf_append_str(&b, "<");
    cl_buf_appendf(&b, "%s|%d", piece, 7);
    CL_ASSERT_INT_EQ(1 + 1000 + 2, b.len);
    CL_ASSERT_STR_EQ("|7", b.data + 1001);
    CL_ASSERT_INT_EQ('x', b.data[1000]);
    cl_buf_free(&b);
}

static const cl_test_case_t cases[] = {
    CL_TEST(test_appendf_longer_than_stack_buffer),
    CL_TEST(test_steal_of_empty_buffer_is_empty_string),
    CL_TEST(test_append_keeps_nul_terminated),
    CL_TEST(test_grows_past_initial_capacity),
    CL_TEST(test_steal_hands_over_and_resets),
};

CL_TEST_MAIN(cases)

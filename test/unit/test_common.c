/* Unit tests for the shared helpers of common.h: the civil-date arithmetic,
 * the one DATETIME(3) formatter and its bounds, the intrusive list and the
 * backoff. */
#include "clickloop/common.h"

#include <time.h>

#include "cl_test.h"

#define MS_PER_DAY INT64_C(86400000)

static void test_datetime_formats_utc_with_milliseconds(void)
{
    char out[CL_DATETIME_SIZE];
    CL_ASSERT_INT_EQ(CL_OK, cl_datetime_format(0, out));
    CL_ASSERT_STR_EQ("1970-01-01 00:00:00.000", out);
    CL_ASSERT_INT_EQ(CL_OK, cl_datetime_format(-1, out));
    CL_ASSERT_STR_EQ("1969-12-31 23:59:59.999", out);
    CL_ASSERT_INT_EQ(CL_OK, cl_datetime_format(INT64_C(1709208000500), out));
    CL_ASSERT_STR_EQ("2024-02-29 12:00:00.500", out);
    CL_ASSERT_INT_EQ(CL_OK, cl_datetime_format(INT64_C(1483228799999), out));
    CL_ASSERT_STR_EQ("2016-12-31 23:59:59.999", out);
    CL_ASSERT_INT_EQ(CL_OK, cl_datetime_format(CL_DATETIME_MAX_MS, out));
    CL_ASSERT_STR_EQ("9999-12-31 23:59:59.999", out);
    CL_ASSERT_INT_EQ(CL_OK, cl_datetime_format(CL_DATETIME_MIN_MS, out));
    CL_ASSERT_STR_EQ("1000-01-01 00:00:00.000", out);
}

static void test_datetime_refuses_values_outside_the_column_range(void)
{
    char out[CL_DATETIME_SIZE] = "x";
    CL_ASSERT_INT_EQ(CL_ERR, cl_datetime_format(CL_DATETIME_MAX_MS + 1, out));
    CL_ASSERT_STR_EQ("", out);
    CL_ASSERT_INT_EQ(CL_ERR, cl_datetime_format(CL_DATETIME_MIN_MS - 1, out));
    CL_ASSERT_INT_EQ(CL_ERR, cl_datetime_format(INT64_MIN, out));
    CL_ASSERT_INT_EQ(CL_ERR, cl_datetime_format(INT64_MAX, out));
}

/* Every day of the DATETIME range: days -> date -> days is the identity, and
 * consecutive days format as increasing dates. */
static void test_civil_date_round_trips_every_day_of_the_datetime_range(void)
{
    int64_t first = CL_DATETIME_MIN_MS / MS_PER_DAY, last = CL_DATETIME_MAX_MS / MS_PER_DAY;
    char previous[CL_DATETIME_SIZE] = "";
    for (int64_t days = first; days <= last; days++) {
        int64_t year;
        int month, day;
        cl_civil_from_days(days, &year, &month, &day);
        if (cl_days_from_civil(year, month, day) != days) {
            CL_FAIL_("day %" PRId64 " gives %04" PRId64 "-%02d-%02d, which gives %" PRId64, days,
                     year, month, day, cl_days_from_civil(year, month, day));
            return;
        }
        char text[CL_DATETIME_SIZE];
        if (cl_datetime_format(days * MS_PER_DAY + 45296789, text) != CL_OK ||
            strcmp(previous, text) >= 0) {
            CL_FAIL_("day %" PRId64 ": \"%s\" does not follow \"%s\"", days, text, previous);
            return;
        }
        memcpy(previous, text, sizeof previous);
    }
}

/* The C library is an independent oracle for the arithmetic, before and
 * after the epoch. */
static void test_civil_date_agrees_with_timegm(void)
{
    for (int year = 1000; year <= 9999; year += 7) {
        for (int month = 1; month <= 12; month++) {
            struct tm tm = {.tm_year = year - 1900, .tm_mon = month - 1, .tm_mday = 28};
            int64_t expected = (int64_t)timegm(&tm) / 86400;
            int64_t got = cl_days_from_civil(year, month, 28);
            if (got != expected) {
                CL_FAIL_("%04d-%02d-28: expected day %" PRId64 ", got %" PRId64, year, month,
                         expected, got);
                return;
            }
        }
    }
    CL_ASSERT_INT_EQ(0, cl_days_from_civil(1970, 1, 1));
    CL_ASSERT_INT_EQ(-1, cl_days_from_civil(1969, 12, 31));
    CL_ASSERT_INT_EQ(11016, cl_days_from_civil(2000, 2, 29));
}

typedef struct node_s {
    struct node_s *prev, *next;
    int id;
} node_t;

static void expect_order(node_t *head, const int *ids, size_t n)
{
    size_t i = 0;
    node_t *previous = NULL;
    for (node_t *x = head; x != NULL; x = x->next, i++) {
        if (i >= n || x->id != ids[i] || x->prev != previous) {
            CL_FAIL_("node %zu: unexpected id %d or back link", i, x->id);
            return;
        }
        previous = x;
    }
    CL_ASSERT_INT_EQ(n, i);
}

static void test_dlist_push_and_unlink_keep_both_directions(void)
{
    node_t a = {.id = 1}, b = {.id = 2}, c = {.id = 3};
    node_t *head = NULL;
    CL_DLIST_PUSH(head, &a);
    CL_DLIST_PUSH(head, &b);
    CL_DLIST_PUSH(head, &c);
    expect_order(head, (const int[]){3, 2, 1}, 3);
    CL_DLIST_UNLINK(head, &b); /* middle */
    expect_order(head, (const int[]){3, 1}, 2);
    CL_ASSERT(b.prev == NULL && b.next == NULL);
    CL_DLIST_UNLINK(head, &c); /* head */
    expect_order(head, (const int[]){1}, 1);
    CL_DLIST_UNLINK(head, &a); /* last */
    CL_ASSERT(head == NULL);
}

static void test_backoff_doubles_up_to_the_cap_with_jitter_below_it(void)
{
    /* random 0 gives the low end d/2, UINT32_MAX some value in [d/2, d]. */
    CL_ASSERT_INT_EQ(50, cl_backoff_ms(0, 100, 1000, 0));
    CL_ASSERT_INT_EQ(100, cl_backoff_ms(1, 100, 1000, 0));
    CL_ASSERT_INT_EQ(500, cl_backoff_ms(10, 100, 1000, 0));
    CL_ASSERT_INT_EQ(500, cl_backoff_ms(4000000000u, 100, 1000, 0));
    for (uint32_t r = 0; r < 2000; r++) {
        uint64_t d = cl_backoff_ms(3, 100, 1000, r * 2654435761u);
        if (d < 400 || d > 800) {
            CL_FAIL_("attempt 3, random %u: %" PRIu64 " outside [400, 800]", r, d);
            return;
        }
    }
}

static const cl_test_case_t cases[] = {
    CL_TEST(test_datetime_formats_utc_with_milliseconds),
    CL_TEST(test_datetime_refuses_values_outside_the_column_range),
    CL_TEST(test_civil_date_round_trips_every_day_of_the_datetime_range),
    CL_TEST(test_civil_date_agrees_with_timegm),
    CL_TEST(test_dlist_push_and_unlink_keep_both_directions),
    CL_TEST(test_backoff_doubles_up_to_the_cap_with_jitter_below_it),
};

CL_TEST_MAIN(cases)

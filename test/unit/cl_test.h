/* A tiny test harness for clickloop's unit tests.
 *
 * Each test is a function `static void test_name(void)` registered in a table
 * with CL_TEST(test_name); CL_TEST_MAIN(table) runs them, reports every failed
 * assertion with both values, and ends with the line `N passed, N failed`,
 * which .ci/run sums over all test programs. */
#ifndef CL_TEST_H
#define CL_TEST_H

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *name;
    void (*fn)(void);
} cl_test_case_t;

static int cl_test_failed_asserts;

#define CL_TEST(fn)                                                                                \
    {                                                                                              \
#fn, fn                                                                                    \
    }

#define CL_FAIL_(...)                                                                              \
    do {                                                                                           \
        fprintf(stderr, "    %s:%d: ", __FILE__, __LINE__);                                        \
        fprintf(stderr, __VA_ARGS__);                                                              \
        fputc('\n', stderr);                                                                       \
        cl_test_failed_asserts++;                                                                  \
    } while (0)

#define CL_ASSERT(cond)                                                                            \
    do {                                                                                           \
        if (!(cond))                                                                               \
            CL_FAIL_("assertion failed: %s", #cond);                                               \
    } while (0)

#define CL_ASSERT_INT_EQ(expected, actual)                                                         \
    do {                                                                                           \
        long long e_ = (long long)(expected), a_ = (long long)(actual);                            \
        if (e_ != a_)                                                                              \
            CL_FAIL_("%s == %s: expected %lld, got %lld", #expected, #actual, e_, a_);             \
    } while (0)

#define CL_ASSERT_STR_EQ(expected, actual)                                                         \
    do {                                                                                           \
        const char *e_ = (expected), *a_ = (actual);                                               \
        if (e_ == NULL || a_ == NULL ? e_ != a_ : strcmp(e_, a_) != 0)                             \
            CL_FAIL_("%s == %s: expected \"%s\", got \"%s\"", #expected, #actual,                  \
                     e_ ? e_ : "(null)", a_ ? a_ : "(null)");                                      \
    } while (0)

/* haystack contains needle */
#define CL_ASSERT_STR_CONTAINS(haystack, needle)                                                   \
    do {                                                                                           \
        const char *h_ = (haystack), *n_ = (needle);                                               \
        if (h_ == NULL || strstr(h_, n_) == NULL)                                                  \
            CL_FAIL_("expected \"%s\" to contain \"%s\"", h_ ? h_ : "(null)", n_);                 \
    } while (0)

static inline int cl_test_run(const cl_test_case_t *cases, size_t n, int argc, char **argv)
{
    int passed = 0, failed = 0;
    for (size_t i = 0; i < n; i++) {
        if (argc > 1 && strstr(cases[i].name, argv[1]) == NULL)
            continue;
        int before = cl_test_failed_asserts;
        cases[i].fn();
        if (cl_test_failed_asserts == before) {
            printf("ok   %s\n", cases[i].name);
            passed++;
        } else {
            printf("FAIL %s\n", cases[i].name);
            failed++;
        }
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}

#define CL_TEST_MAIN(cases)                                                                        \
    int main(int argc, char **argv)                                                                \
    {                                                                                              \
        return cl_test_run(cases, sizeof(cases) / sizeof((cases)[0]), argc, argv);                 \
    }

#endif

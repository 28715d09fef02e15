/* Unit tests for UTF-8 validation: the well-formed forms of every length and
 * each kind of ill-formed sequence, with the offset and problem reported. */
#include "clickloop/utf8.h"

#include "cl_test.h"

#include <stdlib.h>
#include "clickloop/common.h"

typedef struct {
    const char *name;
    const char *bytes;
    size_t len;
} utf8_valid_case_t;

#define BYTES(s) s, sizeof(s) - 1

static void test_well_formed_sequences_accepted(void)
{
    static const utf8_valid_case_t cases[] = {
        {"empty", BYTES("")},
        {"ascii longer than one word", BYTES("https://example.test/a/b/c?d=e")},
        {"two-byte e acute", BYTES("caf\xC3\xA9")},
        {"smallest two-byte U+0080", BYTES("\xC2\x80")},
        {"three-byte euro sign", BYTES("\xE2\x82\xAC")},
        {"smallest three-byte U+0800", BYTES("\xE0\xA0\x80")},
        {"last before surrogates U+D7FF", BYTES("\xED\x9F\xBF")},
        {"first after surrogates U+E000", BYTES("\xEE\x80\x80")},
        {"U+FFFF", BYTES("\xEF\xBF\xBF")},
        {"four-byte emoji U+1F600", BYTES("smile \xF0\x9F\x98\x80!")},
        {"smallest four-byte U+10000", BYTES("\xF0\x90\x80\x80")},
        {"largest code point U+10FFFF", BYTES("\xF4\x8F\xBF\xBF")},
        {"NUL byte", BYTES("a\0b")},
        {"multi-byte right after an ascii word", BYTES("12345678\xC3\xA9")},
    };
    for (size_t i = 0; i < CL_ARRAY_LEN(cases); i++) {
        size_t bad = 12345;
        int rc = cl_utf8_validate(cases[i].bytes, cases[i].len, &bad);
        if (rc != CL_OK)
            CL_FAIL_("%s: rejected at byte %zu", cases[i].name, bad);
    }
}

typedef struct {
    const char *name;
    const char *bytes;
    size_t len;
    size_t offset;
    const char *problem;
} utf8_invalid_case_t;

static void test_ill_formed_sequences_rejected_at_their_first_byte(void)
{
    static const utf8_invalid_case_t cases[] = {
        {"overlong two-byte '/'", BYTES("ab\xC0\xAF"), 2, "overlong"},
        {"overlong two-byte C1", BYTES("\xC1\xBF"), 0, "overlong"},
        {"overlong three-byte", BYTES("x\xE0\x80\xAF"), 1, "overlong"},
        {"overlong four-byte", BYTES("\xF0\x80\x80\xAF"), 0, "overlong"},
        {"surrogate U+D800", BYTES("a\xED\xA0\x80"), 1, "surrogate"},
        {"surrogate U+DFFF", BYTES("\xED\xBF\xBF"), 0, "surrogate"},
        {"above U+10FFFF", BYTES("\xF4\x90\x80\x80"), 0, "above U+10FFFF"},
        {"F5 lead byte", BYTES("\xF5\x80\x80\x80"), 0, "above U+10FFFF"},
        {"FF byte", BYTES("ok\xFF"), 2, "never appears"},
        {"lone continuation byte", BYTES("abc\x80"), 3, "continuation byte without"},
        {"two-byte truncated at end", BYTES("abc\xC3"), 3, "truncated"},
        {"four-byte truncated at end", BYTES("\xF0\x9F\x98"), 0, "truncated"},
        {"three-byte cut short", BYTES("\xE2\x82x"), 0, "cut short"},
        {"bad byte after ascii word", BYTES("0123456789\xC3(x"), 10, "cut short"},
    };
    for (size_t i = 0; i < CL_ARRAY_LEN(cases); i++) {
        size_t bad = 12345;
        if (cl_utf8_validate(cases[i].bytes, cases[i].len, &bad) != CL_ERR) {
            CL_FAIL_("%s: accepted", cases[i].name);
            continue;
        }
        if (bad != cases[i].offset)
            CL_FAIL_("%s: offset expected %zu, got %zu", cases[i].name, cases[i].offset, bad);
        CL_ASSERT_STR_CONTAINS(cl_utf8_problem(cases[i].bytes, cases[i].len, bad),
                               cases[i].problem);
    }
}

static void test_bad_offset_may_be_null(void)
{
    CL_ASSERT_INT_EQ(CL_ERR, cl_utf8_validate("\xC0\xAF", 2, NULL));
}

static void test_sanitize_replaces_ill_formed_bytes_and_measures_max_chars(void)
{
    size_t len = 0;
    /* "a", an invalid 0xff, "é" (2 bytes), "b" */
    char *s = cl_utf8_sanitize("a\xff\xc3\xa9"
                               "b",
                               10, &len);
    CL_ASSERT_STR_EQ("a?\xc3\xa9"
                     "b",
                     s);
    CL_ASSERT_INT_EQ(5, len);
    free(s);
    /* cut after 2 characters: "a?" */
    s = cl_utf8_sanitize("a\xff\xc3\xa9"
                         "b",
                         2, &len);
    CL_ASSERT_INT_EQ(2, len);
    free(s);
    /* never inside a multi-byte character: "é" counts as one */
    s = cl_utf8_sanitize("\xc3\xa9\xc3\xa9", 1, &len);
    CL_ASSERT_INT_EQ(2, len);
    free(s);
}

static const cl_test_case_t cases[] = {
    CL_TEST(test_sanitize_replaces_ill_formed_bytes_and_measures_max_chars),
    CL_TEST(test_well_formed_sequences_accepted),
    CL_TEST(test_ill_formed_sequences_rejected_at_their_first_byte),
    CL_TEST(test_bad_offset_may_be_null),
};

CL_TEST_MAIN(cases)

/* Unit tests for RFC 6901 JSON Pointers: syntax, escapes, array indices, and
 * the difference between a missing member and a JSON null. */
#include "clickloop/json_pointer.h"

#include <json-c/json.h>

#include "cl_test.h"

static const char document[] = "{"
                               "\"a/b\": 1,"
                               "\"m~n\": 2,"
                               "\"~1\": 3,"
                               "\"\": 4,"
                               "\"n\": null,"
                               "\"items\": [{\"url\": \"first\"}, {\"url\": \"second\"}],"
                               "\"deep\": {\"er\": {\"est\": \"bottom\"}},"
                               "\"s\": \"scalar\""
                               "}";

/* Resolve `pointer` in `document`; returns 1 and the value's int/string text
 * in `out` when found. */
static int lookup(const char *pointer, char out[64])
{
    json_object *root = json_tokener_parse(document);
    cl_json_pointer_t *ptr = NULL;
    char err[CL_ERR_LEN];
    int found = -1;
    if (cl_json_pointer_compile(pointer, &ptr, err) != CL_OK) {
        CL_FAIL_("compile \"%s\": %s", pointer, err);
    } else {
        json_object *v = NULL;
        found = cl_json_pointer_resolve(ptr, root, &v);
        snprintf(out, 64, "%s", v == NULL ? "null" : json_object_get_string(v));
    }
    cl_json_pointer_free(ptr);
    json_object_put(root);
    return found;
}

typedef struct {
    const char *pointer;
    int found;
    const char *value;
} resolve_case_t;

static void test_escapes_and_array_indices_resolve(void)
{
    static const resolve_case_t cases[] = {
        {"/a~1b", 1, "1"},
        {"/m~0n", 1, "2"},
        {"/~01", 1, "3"}, /* ~0 first: "~01" is "~1", not "/" + "1" */
        {"/", 1, "4"},    /* the member named "" */
        {"/items/0/url", 1, "first"},
        {"/items/1/url", 1, "second"},
        {"/deep/er/est", 1, "bottom"},
        {"/n", 1, "null"},
        {"/missing", 0, NULL},
        {"/a/b", 0, NULL},          /* unescaped: "a" then "b" */
        {"/items/2/url", 0, NULL},  /* past the end */
        {"/items/01/url", 0, NULL}, /* leading zero: not an index */
        {"/items/-", 0, NULL},      /* the element after the last */
        {"/items/x", 0, NULL},
        {"/items/99999999999999999999999", 0, NULL}, /* overflows size_t */
        {"/s/0", 0, NULL},                           /* into a string */
        {"/n/x", 0, NULL},                           /* through a null */
    };
    for (size_t i = 0; i < CL_ARRAY_LEN(cases); i++) {
        char value[64] = "";
        int found = lookup(cases[i].pointer, value);
        if (found != cases[i].found)
            CL_FAIL_("%s: found expected %d, got %d", cases[i].pointer, cases[i].found, found);
        else if (found == 1 && strcmp(value, cases[i].value) != 0)
            CL_FAIL_("%s: expected \"%s\", got \"%s\"", cases[i].pointer, cases[i].value, value);
    }
}

static void test_empty_pointer_names_the_whole_document(void)
{
    char value[64];
    CL_ASSERT_INT_EQ(1, lookup("", value));
    CL_ASSERT(value[0] == '{');
}

static void test_malformed_pointers_rejected(void)
{
    static const struct {
        const char *pointer;
        const char *reason;
    } cases[] = {
        {"url", "must be empty or start with '/'"},
        {"/a~2b", "'~' at byte 2 not followed by 0 or 1"},
        {"/a~", "'~' at byte 2"},
        {"#/url", "start with '/'"},
    };
    for (size_t i = 0; i < CL_ARRAY_LEN(cases); i++) {
        char err[CL_ERR_LEN] = "";
        cl_json_pointer_t *ptr = NULL;
        CL_ASSERT_INT_EQ(CL_ERR, cl_json_pointer_validate(cases[i].pointer, err));
        CL_ASSERT_STR_CONTAINS(err, cases[i].reason);
        CL_ASSERT_INT_EQ(CL_ERR, cl_json_pointer_compile(cases[i].pointer, &ptr, err));
        CL_ASSERT(ptr == NULL);
    }
}

static void test_well_formed_pointers_validate(void)
{
    static const char *const ok[] = {"", "/", "/url", "/a~0b~1c", "/a/0/b", "//"};
    for (size_t i = 0; i < CL_ARRAY_LEN(ok); i++) {
        char err[CL_ERR_LEN] = "";
        if (cl_json_pointer_validate(ok[i], err) != CL_OK)
            CL_FAIL_("\"%s\" rejected: %s", ok[i], err);
    }
}

static void test_text_is_kept_as_written(void)
{
    cl_json_pointer_t *ptr = NULL;
    char err[CL_ERR_LEN];
    CL_ASSERT_INT_EQ(CL_OK, cl_json_pointer_compile("/a~1b/0", &ptr, err));
    CL_ASSERT_STR_EQ("/a~1b/0", cl_json_pointer_text(ptr));
    cl_json_pointer_free(ptr);
}

static const cl_test_case_t cases[] = {
    CL_TEST(test_escapes_and_array_indices_resolve),
    CL_TEST(test_empty_pointer_names_the_whole_document),
    CL_TEST(test_malformed_pointers_rejected),
    CL_TEST(test_well_formed_pointers_validate),
    CL_TEST(test_text_is_kept_as_written),
};

CL_TEST_MAIN(cases)

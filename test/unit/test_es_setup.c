/* Unit tests for es_setup: the request of each index setup step and what
 * each answer leads to, without a cluster. */
#include "clickloop/es_setup.h"

#include <string.h>

#include "cl_test.h"

#define MAPPINGS "{\"properties\":{\"clicks\":{\"type\":\"long\"}}}"

typedef struct {
    cl_buf_t path, body;
} request_t;

static request_t request_of(const cl_es_setup_t *setup)
{
    request_t r;
    cl_buf_init(&r.path);
    cl_buf_init(&r.body);
    cl_es_setup_request(setup, &r.path, &r.body);
    return r;
}

static void request_free(request_t *r)
{
    cl_buf_free(&r->path);
    cl_buf_free(&r->body);
}

static cl_es_request_result_t answer(cl_es_request_outcome_t outcome, long http_status,
                                     const char *error_type)
{
    cl_es_request_result_t r;
    memset(&r, 0, sizeof r);
    r.outcome = outcome;
    r.http_status = http_status;
    snprintf(r.error_type, sizeof r.error_type, "%s", error_type);
    return r;
}

static void test_a_dated_pattern_puts_a_template_above_the_built_in_ones(void)
{
    cl_es_setup_t setup;
    char err[CL_ERR_LEN], what[128];
    CL_ASSERT_INT_EQ(CL_OK, cl_es_setup_init(&setup, "stats-%Y.%m", MAPPINGS, err));
    CL_ASSERT_INT_EQ(CL_ES_SETUP_TEMPLATE, setup.step);
    request_t r = request_of(&setup);
    CL_ASSERT_STR_EQ("/_index_template/stats-yyyy.mm", r.path.data);
    CL_ASSERT_STR_EQ("{\"index_patterns\":[\"stats-*.*\"],\"priority\":501,\"template\":{"
                     "\"mappings\":" MAPPINGS "},\"_meta\":{\"managed_by\":\"clickloop\"}}",
                     r.body.data);
    cl_es_setup_describe(&setup, what, sizeof what);
    CL_ASSERT_STR_EQ("index template stats-yyyy.mm", what);
    cl_es_request_result_t ok = answer(CL_ES_REQUEST_OK, 200, "");
    CL_ASSERT_INT_EQ(CL_ES_SETUP_DONE, cl_es_setup_answer(&setup, &ok));
    request_free(&r);
    cl_es_setup_free(&setup);
}

static void test_a_plain_index_is_created_with_its_mappings(void)
{
    cl_es_setup_t setup;
    char err[CL_ERR_LEN], what[128];
    CL_ASSERT_INT_EQ(CL_OK, cl_es_setup_init(&setup, "stats", MAPPINGS, err));
    CL_ASSERT_INT_EQ(CL_ES_SETUP_CREATE_INDEX, setup.step);
    request_t r = request_of(&setup);
    CL_ASSERT_STR_EQ("/stats", r.path.data);
    CL_ASSERT_STR_EQ("{\"mappings\":" MAPPINGS "}", r.body.data);
    cl_es_setup_describe(&setup, what, sizeof what);
    CL_ASSERT_STR_EQ("create index stats", what);
    request_free(&r);
    cl_es_setup_free(&setup);
}

static void test_an_existing_index_gets_its_mapping_updated(void)
{
    cl_es_setup_t setup;
    char err[CL_ERR_LEN], what[128];
    CL_ASSERT_INT_EQ(CL_OK, cl_es_setup_init(&setup, "stats", MAPPINGS, err));
    cl_es_request_result_t exists =
        answer(CL_ES_REQUEST_REFUSED, 400, "resource_already_exists_exception");
    CL_ASSERT_INT_EQ(CL_ES_SETUP_NEXT, cl_es_setup_answer(&setup, &exists));
    CL_ASSERT_INT_EQ(CL_ES_SETUP_UPDATE_MAPPING, setup.step);
    request_t r = request_of(&setup);
    CL_ASSERT_STR_EQ("/stats/_mapping", r.path.data);
    CL_ASSERT_STR_EQ(MAPPINGS, r.body.data);
    cl_es_setup_describe(&setup, what, sizeof what);
    CL_ASSERT_STR_EQ("mapping of index stats", what);
    /* A conflicting mapping is refused, and that is the end of it. */
    cl_es_request_result_t conflict =
        answer(CL_ES_REQUEST_REFUSED, 400, "illegal_argument_exception");
    CL_ASSERT_INT_EQ(CL_ES_SETUP_REFUSED, cl_es_setup_answer(&setup, &conflict));
    CL_ASSERT_INT_EQ(CL_ES_SETUP_UPDATE_MAPPING, setup.step);
    request_free(&r);
    cl_es_setup_free(&setup);
}

static void test_an_index_deleted_meanwhile_is_created_again(void)
{
    cl_es_setup_t setup;
    char err[CL_ERR_LEN];
    CL_ASSERT_INT_EQ(CL_OK, cl_es_setup_init(&setup, "stats", MAPPINGS, err));
    cl_es_request_result_t exists =
        answer(CL_ES_REQUEST_REFUSED, 400, "resource_already_exists_exception");
    CL_ASSERT_INT_EQ(CL_ES_SETUP_NEXT, cl_es_setup_answer(&setup, &exists));
    cl_es_request_result_t gone = answer(CL_ES_REQUEST_REFUSED, 404, "index_not_found_exception");
    CL_ASSERT_INT_EQ(CL_ES_SETUP_NEXT, cl_es_setup_answer(&setup, &gone));
    CL_ASSERT_INT_EQ(CL_ES_SETUP_CREATE_INDEX, setup.step);
    cl_es_setup_free(&setup);
}

static void test_a_transient_failure_retries_the_same_step(void)
{
    cl_es_setup_t setup;
    char err[CL_ERR_LEN];
    CL_ASSERT_INT_EQ(CL_OK, cl_es_setup_init(&setup, "stats", MAPPINGS, err));
    cl_es_request_result_t busy = answer(CL_ES_REQUEST_RETRY, 503, "");
    CL_ASSERT_INT_EQ(CL_ES_SETUP_RETRY, cl_es_setup_answer(&setup, &busy));
    CL_ASSERT_INT_EQ(CL_ES_SETUP_CREATE_INDEX, setup.step);
    /* "not found" means something else outside the mapping update. */
    cl_es_request_result_t missing =
        answer(CL_ES_REQUEST_REFUSED, 404, "index_not_found_exception");
    CL_ASSERT_INT_EQ(CL_ES_SETUP_REFUSED, cl_es_setup_answer(&setup, &missing));
    cl_es_setup_free(&setup);
}

static void test_names_are_percent_encoded_in_the_path(void)
{
    cl_es_setup_t setup;
    char err[CL_ERR_LEN];
    CL_ASSERT_INT_EQ(CL_OK, cl_es_setup_init(&setup, "stats-yyyy.mm a/b?\xc3\xbc+", MAPPINGS, err));
    request_t r = request_of(&setup);
    CL_ASSERT_STR_EQ("/stats-yyyy.mm%20a%2Fb%3F%C3%BC%2B", r.path.data);
    request_free(&r);
    cl_es_setup_free(&setup);
}

static void test_bad_names_and_mappings_are_refused_with_a_reason(void)
{
    cl_es_setup_t setup;
    char err[CL_ERR_LEN], long_name[300];
    memset(long_name, 'x', sizeof long_name - 1);
    long_name[sizeof long_name - 1] = '\0';
    CL_ASSERT_INT_EQ(CL_ERR, cl_es_setup_init(&setup, "", MAPPINGS, err));
    CL_ASSERT_STR_CONTAINS(err, "the index name must be 1 to 255 bytes");
    CL_ASSERT_INT_EQ(CL_ERR, cl_es_setup_init(&setup, long_name, MAPPINGS, err));
    CL_ASSERT_STR_CONTAINS(err, "the index name must be 1 to 255 bytes");
    CL_ASSERT_INT_EQ(CL_ERR, cl_es_setup_init(&setup, "stats", "{\"a\":", err));
    CL_ASSERT_STR_CONTAINS(err, "the mappings for stats are invalid");
    CL_ASSERT_INT_EQ(CL_ERR, cl_es_setup_init(&setup, "stats", NULL, err));
    CL_ASSERT_STR_CONTAINS(err, "invalid: missing");
}

static const cl_test_case_t cases[] = {
    CL_TEST(test_a_dated_pattern_puts_a_template_above_the_built_in_ones),
    CL_TEST(test_a_plain_index_is_created_with_its_mappings),
    CL_TEST(test_an_existing_index_gets_its_mapping_updated),
    CL_TEST(test_an_index_deleted_meanwhile_is_created_again),
    CL_TEST(test_a_transient_failure_retries_the_same_step),
    CL_TEST(test_names_are_percent_encoded_in_the_path),
    CL_TEST(test_bad_names_and_mappings_are_refused_with_a_reason),
};

CL_TEST_MAIN(cases)

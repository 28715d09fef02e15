/* Unit tests for the pure parts of the db module: error classification,
 * backoff arithmetic, escaping and parameter validation. The connection state
 * machine needs a server: the integration suite (test/integration) drives it. */
#include "clickloop/db.h"

#include <errmsg.h>
#include <mysqld_error.h>

#include "cl_test.h"

static void test_connection_errors_are_retried_after_reconnect(void)
{
    const unsigned int codes[] = {CR_SERVER_GONE_ERROR,  CR_SERVER_LOST,     CR_CONNECTION_ERROR,
                                  CR_CONN_HOST_ERROR,    ER_SERVER_SHUTDOWN, ER_CONNECTION_KILLED,
                                  ER_CON_COUNT_ERROR,    ER_NET_READ_ERROR,  CR_ERR_NET_READ,
                                  ER_ABORTING_CONNECTION};
    for (size_t i = 0; i < CL_ARRAY_LEN(codes); i++) {
        CL_ASSERT_INT_EQ(CL_DB_ERROR_CONNECTION, cl_db_error_classify(codes[i]));
        CL_ASSERT_INT_EQ(CL_ERR_RETRY, cl_db_error_status(cl_db_error_classify(codes[i])));
    }
    CL_ASSERT_INT_EQ(1053, ER_SERVER_SHUTDOWN);
}

static void test_lock_errors_are_transient(void)
{
    const unsigned int codes[] = {ER_LOCK_DEADLOCK, ER_LOCK_WAIT_TIMEOUT, ER_QUERY_INTERRUPTED,
                                  ER_STATEMENT_TIMEOUT, ER_TOO_MANY_CONCURRENT_TRXS};
    for (size_t i = 0; i < CL_ARRAY_LEN(codes); i++)
        CL_ASSERT_INT_EQ(CL_DB_ERROR_TRANSIENT, cl_db_error_classify(codes[i]));
    CL_ASSERT_INT_EQ(CL_ERR_RETRY, cl_db_error_status(CL_DB_ERROR_TRANSIENT));
}

static void test_credentials_privileges_schema_read_only_and_full_disk_need_an_operator(void)
{
    const unsigned int codes[] = {
        ER_ACCESS_DENIED_ERROR,
        ER_BAD_DB_ERROR,
        ER_DBACCESS_DENIED_ERROR,
        CR_UNKNOWN_HOST, /* credentials and addresses */
        ER_TABLEACCESS_DENIED_ERROR,
        ER_COLUMNACCESS_DENIED_ERROR,
        ER_SPECIFIC_ACCESS_DENIED_ERROR, /* privileges revoked */
        ER_NO_SUCH_TABLE,
        ER_BAD_FIELD_ERROR,
        ER_WRONG_VALUE_COUNT_ON_ROW,
        ER_NO_DEFAULT_FOR_FIELD, /* a table missing or altered */
        ER_OPTION_PREVENTS_STATEMENT,
        ER_READ_ONLY_MODE, /* read-only server */
        ER_DISK_FULL,
        ER_RECORD_FILE_FULL,
        ER_GET_ERRNO, /* disk full */
    };
    for (size_t i = 0; i < CL_ARRAY_LEN(codes); i++)
        CL_ASSERT_INT_EQ(CL_DB_ERROR_OPERATOR, cl_db_error_classify(codes[i]));
    CL_ASSERT_INT_EQ(1290, ER_OPTION_PREVENTS_STATEMENT);
    CL_ASSERT_INT_EQ(1146, ER_NO_SUCH_TABLE);
    CL_ASSERT_INT_EQ(CL_ERR, cl_db_error_status(CL_DB_ERROR_OPERATOR));
}

static void test_refused_values_and_oversized_statements_are_the_data(void)
{
    const unsigned int codes[] = {
        ER_DATA_TOO_LONG,
        ER_TRUNCATED_WRONG_VALUE_FOR_FIELD,
        ER_TRUNCATED_WRONG_VALUE,
        ER_WARN_DATA_OUT_OF_RANGE,
        ER_BAD_NULL_ERROR,
        ER_CONSTRAINT_FAILED,
        ER_SIGNAL_EXCEPTION,
        ER_DUP_ENTRY,
        ER_INVALID_CHARACTER_STRING,
        ER_NET_PACKET_TOO_LARGE,
        CR_NET_PACKET_TOO_LARGE,
    };
    for (size_t i = 0; i < CL_ARRAY_LEN(codes); i++)
        CL_ASSERT_INT_EQ(CL_DB_ERROR_DATA, cl_db_error_classify(codes[i]));
    CL_ASSERT_INT_EQ(1153, ER_NET_PACKET_TOO_LARGE);
    CL_ASSERT_INT_EQ(4025, ER_CONSTRAINT_FAILED);
    CL_ASSERT_INT_EQ(CL_ERR, cl_db_error_status(CL_DB_ERROR_DATA));
}

static void test_unclassified_errors_are_permanent(void)
{
    const unsigned int codes[] = {ER_PARSE_ERROR, ER_SYNTAX_ERROR, 0, 999999};
    for (size_t i = 0; i < CL_ARRAY_LEN(codes); i++)
        CL_ASSERT_INT_EQ(CL_DB_ERROR_PERMANENT, cl_db_error_classify(codes[i]));
    CL_ASSERT_INT_EQ(CL_ERR, cl_db_error_status(CL_DB_ERROR_PERMANENT));
}

static void test_backoff_first_retry_is_between_half_min_and_min(void)
{
    CL_ASSERT_INT_EQ(50, cl_backoff_ms(0, 100, 10000, 0));
    CL_ASSERT_INT_EQ(100, cl_backoff_ms(0, 100, 10000, 50));
    CL_ASSERT_INT_EQ(50, cl_backoff_ms(0, 100, 10000, 51)); /* wraps modulo 51 */
}

static void test_backoff_doubles_then_caps_at_max(void)
{
    for (uint32_t r = 0; r < 5000; r += 7) {
        uint64_t d3 = cl_backoff_ms(3, 100, 10000, r);
        CL_ASSERT(d3 >= 400 && d3 <= 800);
        uint64_t d20 = cl_backoff_ms(20, 100, 10000, r);
        CL_ASSERT(d20 >= 5000 && d20 <= 10000);
    }
    CL_ASSERT_INT_EQ(10000, cl_backoff_ms(7, 100, 10000, 5000));
}

static void test_backoff_survives_huge_attempt_counts(void)
{
    uint64_t d = cl_backoff_ms(UINT32_MAX, 1000, 60000, UINT32_MAX);
    CL_ASSERT(d >= 30000 && d <= 60000);
    CL_ASSERT_INT_EQ(4000000000u, cl_backoff_ms(64, 1, 4000000000u, 2000000000u));
}

static void test_escape_quotes_backslashes_and_control_bytes(void)
{
    const char in[] = "a'b\"c\\d\0e\nf\rg\032h";
    char out[2 * sizeof in + 1];
    size_t n = cl_db_escape_string(out, in, sizeof in - 1);
    const char want[] = "a\\'b\\\"c\\\\d\\0e\\nf\\rg\\Zh";
    CL_ASSERT_INT_EQ(sizeof want - 1, n);
    CL_ASSERT_STR_EQ(want, out);
}

static void test_escape_passes_utf8_and_invalid_bytes_through(void)
{
    const char in[] = "\xc3\xa9\xf0\x9f\x98\x80\xff\xc3";
    char out[2 * sizeof in + 1];
    size_t n = cl_db_escape_string(out, in, sizeof in - 1);
    CL_ASSERT_INT_EQ(sizeof in - 1, n);
    CL_ASSERT(memcmp(in, out, n) == 0);
    CL_ASSERT_INT_EQ(0, cl_db_escape_string(out, "", 0));
    CL_ASSERT_STR_EQ("", out);
}

static cl_db_params_t good_params(void)
{
    cl_db_params_t p = {
        .host = "127.0.0.1",
        .port = 3306,
        .user = "u",
        .password = "p",
        .database = "d",
        .connect_timeout_ms = 5000,
        .read_timeout_ms = 30000,
        .write_timeout_ms = 30000,
        .backoff_min_ms = 100,
        .backoff_max_ms = 10000,
    };
    return p;
}

static void test_params_need_all_three_timeouts(void)
{
    char err[CL_ERR_LEN];
    cl_db_params_t p = good_params();
    CL_ASSERT_INT_EQ(CL_OK, cl_db_params_validate(&p, err));
    p.read_timeout_ms = 0;
    CL_ASSERT_INT_EQ(CL_ERR, cl_db_params_validate(&p, err));
    CL_ASSERT_STR_CONTAINS(err, "timeouts must all be set");
}

static void test_params_need_a_host_or_socket_and_sane_backoff(void)
{
    char err[CL_ERR_LEN];
    cl_db_params_t p = good_params();
    p.host = NULL;
    CL_ASSERT_INT_EQ(CL_ERR, cl_db_params_validate(&p, err));
    CL_ASSERT_STR_CONTAINS(err, "host or unix_socket");
    p.unix_socket = "/run/mysqld/mysqld.sock";
    CL_ASSERT_INT_EQ(CL_OK, cl_db_params_validate(&p, err));
    p.backoff_max_ms = 10;
    CL_ASSERT_INT_EQ(CL_ERR, cl_db_params_validate(&p, err));
    CL_ASSERT_STR_CONTAINS(err, "backoff_min_ms (100) <= backoff_max_ms (10)");
}

static const cl_test_case_t cases[] = {
    CL_TEST(test_connection_errors_are_retried_after_reconnect),
    CL_TEST(test_lock_errors_are_transient),
    CL_TEST(test_credentials_privileges_schema_read_only_and_full_disk_need_an_operator),
    CL_TEST(test_refused_values_and_oversized_statements_are_the_data),
    CL_TEST(test_unclassified_errors_are_permanent),
    CL_TEST(test_backoff_first_retry_is_between_half_min_and_min),
    CL_TEST(test_backoff_doubles_then_caps_at_max),
    CL_TEST(test_backoff_survives_huge_attempt_counts),
    CL_TEST(test_escape_quotes_backslashes_and_control_bytes),
    CL_TEST(test_escape_passes_utf8_and_invalid_bytes_through),
    CL_TEST(test_params_need_all_three_timeouts),
    CL_TEST(test_params_need_a_host_or_socket_and_sane_backoff),
};

CL_TEST_MAIN(cases)

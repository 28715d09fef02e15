/* Unit tests for the Kafka source's reading of librdkafka's offset-reset log
 * line, the one sign librdkafka gives that a committed offset fell out of the
 * broker's retention and auto.offset.reset moved past it. The lines are the
 * ones librdkafka 2.0.2 wrote in the integration test, and the form newer
 * versions write (with the leader epoch). */
#include "clickloop/kafka_source.h"

#include "cl_test.h"

static void test_parses_the_reset_line_of_librdkafka_2_0(void)
{
    char topic[CL_KAFKA_TOPIC_MAX + 1];
    int32_t partition = -1;
    int64_t from = -1;
    const char *line = "[thrd:main]: reset-3aa783 [7]: offset reset (at offset 10, broker 1) to "
                       "BEGINNING: fetch failed due to requested offset not available on the "
                       "broker: Broker: Offset out of range";
    CL_ASSERT_INT_EQ(CL_OK,
                     cl_kafka_parse_offset_reset(line, topic, sizeof topic, &partition, &from));
    CL_ASSERT_STR_EQ("reset-3aa783", topic);
    CL_ASSERT_INT_EQ(7, partition);
    CL_ASSERT_INT_EQ(10, from);
}

static void test_parses_the_form_with_a_leader_epoch(void)
{
    char topic[CL_KAFKA_TOPIC_MAX + 1];
    int32_t partition = -1;
    int64_t from = -1;
    const char *line = "[thrd:main]: clicks.v2_x [0]: offset reset (at offset 123456789012 "
                       "(leader epoch 4), broker 2) to END: fetch failed: Offset out of range";
    CL_ASSERT_INT_EQ(CL_OK,
                     cl_kafka_parse_offset_reset(line, topic, sizeof topic, &partition, &from));
    CL_ASSERT_STR_EQ("clicks.v2_x", topic);
    CL_ASSERT_INT_EQ(0, partition);
    CL_ASSERT(from == 123456789012LL);
}

static void test_other_lines_and_logical_offsets_are_not_resets(void)
{
    char topic[CL_KAFKA_TOPIC_MAX + 1];
    int32_t partition;
    int64_t from;
    const char *lines[] = {
        "[thrd:main]: t [0]: offset reset (at offset INVALID, broker 1) to BEGINNING: no "
        "previously committed offset available",
        "[thrd:main]: t [0]: offset reset (at offset END, broker 1) to END: x",
        "[thrd:main]: t [0]: offset reset (at offset -1001, broker 1) to END: x",
        "[thrd:main]: t [x]: offset reset (at offset 5, broker 1) to END: x",
        "[thrd:main]: t []: offset reset (at offset 5, broker 1) to END: x",
        "[0]: offset reset (at offset 5, broker 1) to END: x",
        "]: offset reset (at offset 5, broker 1) to END: x",
        "[thrd:main]: t [0]: Fetch topic t [0] at offset 5",
        "",
    };
    for (size_t i = 0; i < CL_ARRAY_LEN(lines); i++)
        CL_ASSERT_INT_EQ(
            CL_ERR, cl_kafka_parse_offset_reset(lines[i], topic, sizeof topic, &partition, &from));
}

static void test_a_topic_longer_than_the_buffer_is_refused(void)
{
    char topic[8];
    int32_t partition;
    int64_t from;
    const char *line = "[thrd:main]: a-rather-long-topic [1]: offset reset (at offset 5, "
                       "broker 1) to END: x";
    CL_ASSERT_INT_EQ(CL_ERR,
                     cl_kafka_parse_offset_reset(line, topic, sizeof topic, &partition, &from));
}

static const cl_test_case_t cases[] = {
    CL_TEST(test_parses_the_reset_line_of_librdkafka_2_0),
    CL_TEST(test_parses_the_form_with_a_leader_epoch),
    CL_TEST(test_other_lines_and_logical_offsets_are_not_resets),
    CL_TEST(test_a_topic_longer_than_the_buffer_is_refused),
};

CL_TEST_MAIN(cases)

/* Unit tests for SHA-256 against the FIPS 180 examples (NIST CSRC "Example
 * Algorithms": "abc", the two-block 448-bit message, one million 'a') and
 * against lengths around the padding boundary (55, 56, 63, 64 bytes), whose
 * digests come from coreutils' sha256sum. */
#include "clickloop/sha256.h"

#include "clickloop/common.h"

#include "cl_test.h"

static void check_hex(const char *expected, const void *data, size_t len)
{
    char hex[CL_SHA256_HEX_SIZE];
    cl_sha256_hex(data, len, hex);
    CL_ASSERT_STR_EQ(expected, hex);
}

static void test_empty_message(void)
{
    check_hex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", "", 0);
}

static void test_fips_one_block_abc(void)
{
    check_hex("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", "abc", 3);
}

static void test_fips_two_block_448_bits(void)
{
    const char *m = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    check_hex("248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1", m, strlen(m));
}

static void test_fips_896_bits(void)
{
    const char *m = "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmn"
                    "hijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu";
    check_hex("cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1", m, strlen(m));
}

static void test_fips_one_million_a_fed_in_pieces(void)
{
    char chunk[1000];
    memset(chunk, 'a', sizeof chunk);
    cl_sha256_t ctx;
    cl_sha256_init(&ctx);
    for (int i = 0; i < 1000; i++)
        cl_sha256_update(&ctx, chunk, sizeof chunk);
    uint8_t digest[CL_SHA256_DIGEST_LEN];
    cl_sha256_final(&ctx, digest);
    static const uint8_t expected[CL_SHA256_DIGEST_LEN] = {
        0xcd, 0xc7, 0x6e, 0x5c, 0x99, 0x14, 0xfb, 0x92, 0x81, 0xa1, 0xc7,
        0xe2, 0x84, 0xd7, 0x3e, 0x67, 0xf1, 0x80, 0x9a, 0x48, 0xa4, 0x97,
        0x20, 0x0e, 0x04, 0x6d, 0x39, 0xcc, 0xc7, 0x11, 0x2c, 0xd0};
    CL_ASSERT(memcmp(expected, digest, sizeof expected) == 0);
}

static void test_lengths_around_the_padding_boundary(void)
{
    static const struct {
        size_t len;
        const char *hex;
    } cases[] = {
        {55, "d5e285683cd4efc02d021a5c62014694958901005d6f71e89e0989fac77e4072"},
        {56, "04c26261370ee7541549d16dee320c723e3fd14671e66a099afe0a377c16888e"},
        {63, "75220b47218278e656f2013bb8f0c455a25eaf01e86c64924e9d48d89776d6f2"},
        {64, "7ce100971f64e7001e8fe5a51973ecdfe1ced42befe7ee8d5fd6219506b5393c"},
        {119, "000b48d4edf0fa7bee3c6236ecd2785baa5db4eeb8bb54341b029e0d9fa5fb0c"},
    };
    char buf[128];
    memset(buf, 'x', sizeof buf);
    for (size_t i = 0; i < CL_ARRAY_LEN(cases); i++)
        check_hex(cases[i].hex, buf, cases[i].len);
}

static void test_split_updates_equal_one_shot(void)
{
    const char *m = "https://example.com/a/rather/long/path?with=query&and=more#fragment";
    size_t len = strlen(m);
    uint8_t whole[CL_SHA256_DIGEST_LEN];
    cl_sha256(m, len, whole);
    for (size_t cut = 0; cut <= len; cut++) {
        cl_sha256_t ctx;
        uint8_t parts[CL_SHA256_DIGEST_LEN];
        cl_sha256_init(&ctx);
        cl_sha256_update(&ctx, m, cut);
        cl_sha256_update(&ctx, m + cut, len - cut);
        cl_sha256_final(&ctx, parts);
        CL_ASSERT(memcmp(whole, parts, sizeof whole) == 0);
    }
}

static const cl_test_case_t cases[] = {
    CL_TEST(test_empty_message),
    CL_TEST(test_fips_one_block_abc),
    CL_TEST(test_fips_two_block_448_bits),
    CL_TEST(test_fips_896_bits),
    CL_TEST(test_fips_one_million_a_fed_in_pieces),
    CL_TEST(test_lengths_around_the_padding_boundary),
    CL_TEST(test_split_updates_equal_one_shot),
};

CL_TEST_MAIN(cases)

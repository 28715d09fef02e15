/* SHA-256 (FIPS 180-4), for deterministic document ids: a URL of any length
 * becomes 64 hex characters, so an Elasticsearch/OpenSearch `_id` stays far
 * below OpenSearch's 512-byte limit. Pure, no I/O; not for passwords (it is a
 * plain digest, with no salt or stretching). */
#ifndef CLICKLOOP_SHA256_H
#define CLICKLOOP_SHA256_H

#include <stddef.h>
#include <stdint.h>

#define CL_SHA256_DIGEST_LEN 32
/* 64 lower-case hex digits and a NUL. */
#define CL_SHA256_HEX_SIZE 65

/* Incremental state; feed any number of pieces, then finish once. */
typedef struct cl_sha256_s {
    uint32_t state[8];
    uint64_t total_bytes;
    uint8_t block[64];
    size_t block_used;
} cl_sha256_t;

void cl_sha256_init(cl_sha256_t *ctx);
void cl_sha256_update(cl_sha256_t *ctx, const void *data, size_t len);
/* Write the digest; ctx must be initialised again before reuse. */
void cl_sha256_final(cl_sha256_t *ctx, uint8_t digest[CL_SHA256_DIGEST_LEN]);

/* One-shot digest of `len` bytes. */
void cl_sha256(const void *data, size_t len, uint8_t digest[CL_SHA256_DIGEST_LEN]);
/* One-shot digest as lower-case hex, NUL-terminated. */
void cl_sha256_hex(const void *data, size_t len, char hex[CL_SHA256_HEX_SIZE]);

#endif

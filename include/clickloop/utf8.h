/* UTF-8 well-formedness (RFC 3629, Unicode Table 3-7), checked on raw bytes.
 *
 * Every byte that clickloop stores comes from a Kafka payload it has not
 * produced; MariaDB's utf8mb4 columns and Elasticsearch both refuse or mangle
 * ill-formed text, so the event module rejects such payloads up front, naming
 * the first bad byte. */
#ifndef CLICKLOOP_UTF8_H
#define CLICKLOOP_UTF8_H

#include <stddef.h>

/* Return 0 when the `len` bytes at `p` are well-formed UTF-8, else CL_ERR with
 * *bad_offset (if not NULL) set to the offset of the first byte of the first
 * ill-formed sequence. Overlong forms, UTF-16 surrogates (U+D800..U+DFFF),
 * code points above U+10FFFF and truncated sequences are all ill-formed. NUL
 * bytes are well-formed UTF-8 and accepted here. */
int cl_utf8_validate(const void *p, size_t len, size_t *bad_offset);

/* Say in a few words why the sequence starting at `offset` is ill-formed
 * (e.g. "overlong encoding"), for error messages. Call it only with an offset
 * that cl_utf8_validate reported. The string is static. */
const char *cl_utf8_problem(const void *p, size_t len, size_t offset);

/* A copy of the NUL-terminated `s` that a utf8mb4 text column can hold: each
 * ill-formed byte becomes '?', and *out_len is the length of the first
 * `max_chars` characters (the copy itself is not cut). The caller frees it. */
char *cl_utf8_sanitize(const char *s, size_t max_chars, size_t *out_len);

#endif

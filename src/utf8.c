/* UTF-8 validation; see include/clickloop/utf8.h. Runs on every Kafka payload,
 * so the common case (ASCII) is checked eight bytes at a time. */
#include "clickloop/utf8.h"

#include <stdint.h>
#include <string.h>

#include "clickloop/common.h"

/* The ranges allowed for the second byte of a sequence, by lead byte; the
 * third and fourth bytes are always 0x80..0xBF. This is Unicode's Table 3-7,
 * which excludes overlongs (E0 80..9F, F0 80..8F), surrogates (ED A0..BF) and
 * code points above U+10FFFF (F4 90..BF). */
static int second_byte_range(unsigned char lead, unsigned char *lo, unsigned char *hi)
{
    *lo = 0x80;
    *hi = 0xBF;
    if (lead >= 0xC2 && lead <= 0xDF)
        return 2;
    if (lead == 0xE0)
        *lo = 0xA0;
    else if (lead == 0xED)
        *hi = 0x9F;
    if (lead >= 0xE0 && lead <= 0xEF)
        return 3;
    if (lead == 0xF0)
        *lo = 0x90;
    else if (lead == 0xF4)
        *hi = 0x8F;
    if (lead >= 0xF0 && lead <= 0xF4)
        return 4;
    return 0;
}

/* Length of the well-formed multi-byte sequence at p (p[0] >= 0x80), or 0. */
static size_t sequence_length(const unsigned char *p, size_t avail)
{
    unsigned char lo, hi;
    size_t n = (size_t)second_byte_range(p[0], &lo, &hi);
    if (n == 0 || avail < n || p[1] < lo || p[1] > hi)
        return 0;
    for (size_t k = 2; k < n; k++) {
        if ((p[k] & 0xC0) != 0x80)
            return 0;
    }
    return n;
}

int cl_utf8_validate(const void *data, size_t len, size_t *bad_offset)
{
    const unsigned char *p = data;
    size_t i = 0;
    while (i < len) {
        while (len - i >= 8) {
            uint64_t word;
            memcpy(&word, p + i, sizeof word);
            if (word & UINT64_C(0x8080808080808080))
                break;
            i += 8;
        }
        if (i == len)
            break;
        if (p[i] < 0x80) {
            i++;
            continue;
        }
        size_t n = sequence_length(p + i, len - i);
        if (n == 0) {
            if (bad_offset != NULL)
                *bad_offset = i;
            return CL_ERR;
        }
        i += n;
    }
    return CL_OK;
}

const char *cl_utf8_problem(const void *data, size_t len, size_t offset)
{
    const unsigned char *p = (const unsigned char *)data + offset;
    size_t avail = len - offset;
    unsigned char lead = p[0];
    if (lead >= 0x80 && lead <= 0xBF)
        return "continuation byte without a lead byte";
    if (lead == 0xC0 || lead == 0xC1)
        return "overlong encoding";
    if (lead >= 0xF5 && lead <= 0xF7)
        return "code point above U+10FFFF";
    if (lead >= 0xF8)
        return "byte that never appears in UTF-8";

    unsigned char lo, hi;
    size_t n = (size_t)second_byte_range(lead, &lo, &hi);
    for (size_t k = 1; k < n; k++) {
        if (k == avail)
            return "sequence truncated by the end of the payload";
        if ((p[k] & 0xC0) != 0x80)
            return "sequence cut short (missing continuation byte)";
        if (k == 1 && (p[1] < lo || p[1] > hi)) {
            if (lead == 0xED)
                return "UTF-16 surrogate code point";
            if (lead == 0xF4)
                return "code point above U+10FFFF";
            return "overlong encoding"; /* E0 80..9F, F0 80..8F */
        }
    }
    return "ill-formed sequence";
}

char *cl_utf8_sanitize(const char *s, size_t max_chars, size_t *out_len)
{
    size_t len = strlen(s);
    char *copy = cl_xstrndup(s, len);
    size_t pos = 0, bad;
    while (pos < len && cl_utf8_validate(copy + pos, len - pos, &bad) != CL_OK) {
        copy[pos + bad] = '?';
        pos += bad + 1;
    }
    size_t chars = 0, i = 0;
    for (; i < len; i++) {
        if (((unsigned char)copy[i] & 0xC0) != 0x80 && chars++ == max_chars)
            break;
    }
    *out_len = i;
    return copy;
}

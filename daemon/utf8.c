/*
 * utf8.c: strict UTF-8 decoding.  The lead byte fixes the length and the
 * allowed range of the second byte (Unicode 15, table 3-7), which is what
 * rules out overlong forms, surrogates and code points past U+10FFFF
 * without decoding first and range-checking after.
 */
#include <stddef.h>

#include "utf8.h"

int
utf8_next(const unsigned char **p, const unsigned char *end, uint32_t *cp)
{
    const unsigned char *s = *p;
    unsigned char lo = 0x80, hi = 0xbf; /* the second byte's range */
    size_t extra;
    uint32_t c;

    if (s >= end)
        return -1;
    c = s[0];
    if (c < 0x80) {
        *cp = c;
        *p = s + 1;
        return 0;
    } else if (c >= 0xc2 && c <= 0xdf) {
        extra = 1;
        c &= 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        extra = 2;
        c &= 0x0f;
        if (s[0] == 0xe0)
            lo = 0xa0; /* overlong below U+0800 */
        else if (s[0] == 0xed)
            hi = 0x9f; /* surrogates */
    } else if (c >= 0xf0 && c <= 0xf4) {
        extra = 3;
        c &= 0x07;
        if (s[0] == 0xf0)
            lo = 0x90; /* overlong below U+10000 */
        else if (s[0] == 0xf4)
            hi = 0x8f; /* past U+10FFFF */
    } else {
        return -1; /* continuation byte, C0, C1 (overlong ASCII) or F5..FF */
    }
    if ((size_t)(end - s) <= extra || s[1] < lo || s[1] > hi)
        return -1;
    for (size_t i = 1; i <= extra; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return -1;
        c = (c << 6) | (s[i] & 0x3f);
    }
    *cp = c;
    *p = s + 1 + extra;
    return 0;
}

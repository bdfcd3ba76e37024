/*
 * fuzz_common.h: shared helpers for the libFuzzer targets.  An invariant
 * failure prints what broke and aborts, which libFuzzer reports as a crash
 * and saves as crash-<sha1>.
 */
#ifndef OTPD_FUZZ_COMMON_H
#define OTPD_FUZZ_COMMON_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond);           \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* A char array field is a C string: a NUL lies inside the array. */
#define NUL_IN(arr) (memchr((arr), '\0', sizeof(arr)) != NULL)

/* A NUL-terminated heap copy of the input, so ASan sees any overread. */
static inline char *
fuzz_strndup(const unsigned char *data, size_t size)
{
    char *s = malloc(size + 1);
    if (s == NULL)
        abort();
    memcpy(s, data, size);
    s[size] = '\0';
    return s;
}

/* Reference strict UTF-8 decoder (RFC 3629): code points, or -1. */
static inline long
ref_utf8_chars(const char *str)
{
    const unsigned char *s = (const unsigned char *)str;
    long n = 0;

    while (*s) {
        unsigned cp;
        int extra;
        if (s[0] < 0x80) {
            cp = s[0];
            extra = 0;
        } else if (s[0] >= 0xc0 && s[0] < 0xe0) {
            cp = s[0] & 0x1f;
            extra = 1;
        } else if (s[0] >= 0xe0 && s[0] < 0xf0) {
            cp = s[0] & 0x0f;
            extra = 2;
        } else if (s[0] >= 0xf0 && s[0] < 0xf8) {
            cp = s[0] & 0x07;
            extra = 3;
        } else {
            return -1;
        }
        for (int i = 1; i <= extra; i++) {
            if ((s[i] & 0xc0) != 0x80)
                return -1;
            cp = (cp << 6) | (s[i] & 0x3f);
        }
        static const unsigned minv[4] = {0, 0x80, 0x800, 0x10000};
        if (cp < minv[extra] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return -1;
        s += 1 + extra;
        n++;
    }
    return n;
}

#endif

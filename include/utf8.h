/*
 * utf8.h: the one strict UTF-8 decoder (RFC 3629, Unicode table 3-7).
 * Pure; otp.c counts template characters with it and segments.c sizes
 * SMS text with it, so both agree on what valid UTF-8 is.
 */
#ifndef OTPD_UTF8_H
#define OTPD_UTF8_H

#include <stdint.h>

/*
 * Decode the code point at *p into *cp and move *p past it; callers loop
 * while *p < end.  Returns -1, leaving *p and *cp alone, if the bytes at
 * *p are not one well-formed sequence: a stray continuation byte, a lead
 * byte C0, C1 or F5..FF, an overlong form, a surrogate (U+D800..U+DFFF),
 * a code point past U+10FFFF, or a sequence cut short by end.  Never reads
 * at or past end.
 */
int utf8_next(const unsigned char **p, const unsigned char *end, uint32_t *cp);

#endif

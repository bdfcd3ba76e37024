/*
 * fuzz_segments.c: segments_count() and the utf8_next() decoder under it.
 *
 * Input: the text itself, NULs and all, in a heap block of exactly its
 * size, so ASan sees any read past len.  Invariants: the text is valid
 * exactly when a reference decode says so (and the reference agrees with
 * otp_utf8_chars on each NUL-free piece); utf8_next yields the reference's
 * code points and fails where it fails; segments >= 1; GSM-7 iff every
 * character is in a reference copy of the GSM 03.38 tables, written from
 * the standard sorted by code point rather than by GSM code as segments.c
 * has it; GSM-7 units lie between chars and 2 * chars, UCS-2 units are the
 * UTF-16 length; the segment count is what a plain reference fill gives,
 * is 1 up to 160 septets / 70 units, and lies between units / part and
 * 1 + (units - 1) / (part - 1) (a segment loses at most one unit to a pair
 * that moved).
 */
#include <stdint.h>

#include "fuzz_common.h"
#include "otp.h"
#include "segments.h"
#include "utf8.h"

/* The ASCII members of the default alphabet (TS 23.038 6.2.1). */
static const char ref_ascii[] = "\n\r !\"#$%&'()*+,-./0123456789:;<=>?@"
                                "ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz";

/* Its other members, by code point. */
static const uint32_t ref_latin_greek[] = {
    0x00a1, 0x00a3, 0x00a4, 0x00a5, 0x00a7, 0x00bf, 0x00c4, 0x00c5, 0x00c6, 0x00c7,
    0x00c9, 0x00d1, 0x00d6, 0x00d8, 0x00dc, 0x00df, 0x00e0, 0x00e4, 0x00e5, 0x00e6,
    0x00e8, 0x00e9, 0x00ec, 0x00f1, 0x00f2, 0x00f6, 0x00f8, 0x00f9, 0x00fc, 0x0393,
    0x0394, 0x0398, 0x039b, 0x039e, 0x03a0, 0x03a3, 0x03a6, 0x03a8, 0x03a9,
};

/* The extension table (6.2.1.1): form feed, ^ { } \ [ ~ ] | and the euro. */
static const char ref_ext_ascii[] = "\f^{}\\[~]|";
#define REF_EURO 0x20ac

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

/* Septets for cp: 1, 2, or 0 if it is not GSM-7. */
static unsigned
ref_septets(uint32_t cp)
{
    if (cp == 0)
        return 0; /* memchr below would find the literals' terminators */
    if (cp < 0x80 && memchr(ref_ascii, (int)cp, sizeof(ref_ascii) - 1) != NULL)
        return 1;
    for (size_t i = 0; i < NELEM(ref_latin_greek); i++)
        if (ref_latin_greek[i] == cp)
            return 1;
    if ((cp < 0x80 && memchr(ref_ext_ascii, (int)cp, sizeof(ref_ext_ascii) - 1) != NULL) ||
        cp == REF_EURO)
        return 2;
    return 0;
}

/*
 * Code points of s[0..len) into cps, decoding first and range-checking
 * after (as ref_utf8_chars does).  Returns how many decoded before the
 * first invalid sequence; *valid says whether there was none.
 */
static size_t
ref_decode(const unsigned char *s, size_t len, uint32_t *cps, int *valid)
{
    static const uint32_t minv[4] = {0, 0x80, 0x800, 0x10000};
    size_t i = 0, n = 0;

    *valid = 0;
    while (i < len) {
        uint32_t cp;
        size_t extra;
        if (s[i] < 0x80) {
            cp = s[i];
            extra = 0;
        } else if (s[i] >= 0xc0 && s[i] < 0xe0) {
            cp = s[i] & 0x1f;
            extra = 1;
        } else if (s[i] >= 0xe0 && s[i] < 0xf0) {
            cp = s[i] & 0x0f;
            extra = 2;
        } else if (s[i] >= 0xf0 && s[i] < 0xf8) {
            cp = s[i] & 0x07;
            extra = 3;
        } else {
            return n;
        }
        if (len - i <= extra)
            return n;
        for (size_t k = 1; k <= extra; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return n;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        if (cp < minv[extra] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return n;
        cps[n++] = cp;
        i += 1 + extra;
    }
    *valid = 1;
    return n;
}

/* Segments for these costs: fill each with whole characters up to part. */
static size_t
ref_fill(const unsigned *cost, size_t n, size_t single, size_t part, size_t units)
{
    size_t segs = 0, i = 0;

    if (units <= single)
        return 1;
    while (i < n) {
        size_t room = part;
        segs++;
        while (i < n && cost[i] <= room)
            room -= cost[i++];
    }
    return segs;
}

/* The size of a valid text of chars code points cps; cost is scratch space. */
static void
check_size(const struct sms_size *sz, const uint32_t *cps, size_t chars, unsigned *cost)
{
    int gsm = 1;
    size_t septets = 0, utf16 = 0;

    for (size_t i = 0; i < chars; i++) {
        unsigned s7 = ref_septets(cps[i]);
        if (s7 == 0)
            gsm = 0;
        septets += s7;
        utf16 += cps[i] > 0xffff ? 2 : 1;
    }
    for (size_t i = 0; i < chars; i++)
        cost[i] = gsm ? ref_septets(cps[i]) : (cps[i] > 0xffff ? 2u : 1u);

    size_t single = gsm ? 160 : 70, part = gsm ? 153 : 67;
    CHECK(sz->encoding == (gsm ? SMS_GSM7 : SMS_UCS2));
    CHECK(strcmp(segments_encoding_name(sz->encoding), gsm ? "GSM-7" : "UCS-2") == 0);
    CHECK(sz->segments >= 1);
    if (gsm) {
        CHECK(sz->units == septets);
        CHECK(sz->units >= chars && sz->units <= 2 * chars);
        CHECK((sz->units <= 160 && sz->segments == 1) || (size_t)sz->segments * 153 >= sz->units);
    } else {
        CHECK(sz->units == utf16);
        CHECK(sz->units >= chars && sz->units <= 2 * chars);
    }
    CHECK((size_t)sz->segments == ref_fill(cost, chars, single, part, sz->units));
    if (sz->units <= single) {
        CHECK(sz->segments == 1);
    } else {
        CHECK(sz->segments >= 2);
        CHECK((size_t)sz->segments >= (sz->units + part - 1) / part);
        CHECK((size_t)sz->segments <= 1 + (sz->units - 1) / (part - 1));
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    unsigned char *text = malloc(size ? size : 1);
    uint32_t *cps = malloc((size ? size : 1) * sizeof(*cps));
    unsigned *cost = malloc((size ? size : 1) * sizeof(*cost));
    if (text == NULL || cps == NULL || cost == NULL)
        abort();
    memcpy(text, data, size);

    CHECK(strlen(ref_ascii) + NELEM(ref_latin_greek) == 127);
    CHECK(strlen(ref_ext_ascii) + 1 == 10);

    int valid;
    size_t chars = ref_decode(text, size, cps, &valid);

    /* The reference agrees with otp_utf8_chars() piece by piece between NULs. */
    {
        char *s = fuzz_strndup(text, size);
        long want = 0;
        int ok = 1;
        for (size_t off = 0; off <= size;) {
            long n = otp_utf8_chars(s + off);
            CHECK(n == ref_utf8_chars(s + off));
            if (n < 0) {
                ok = 0;
                break;
            }
            want += n;
            off += strlen(s + off);
            if (off < size)
                want++; /* the NUL: U+0000 */
            off++;
        }
        CHECK(ok == valid);
        CHECK(!valid || (size_t)want == chars);
        free(s);
    }

    /* utf8_next walks the same code points and fails where the reference does. */
    {
        const unsigned char *p = text, *end = text + size;
        size_t n = 0;
        uint32_t cp;
        while (p < end) {
            const unsigned char *before = p;
            if (utf8_next(&p, end, &cp) < 0) {
                CHECK(p == before);
                break;
            }
            CHECK(p > before && p <= end && p - before <= 4);
            CHECK(n < chars && cp == cps[n]);
            n++;
        }
        CHECK(n == chars);
        CHECK((p == end) == valid);
    }

    struct sms_size sz = {SMS_UCS2, 12345, -7};
    int rc = segments_count((const char *)text, size, &sz);
    CHECK(rc == 0 || rc == -1);
    CHECK((rc == 0) == valid);
    if (rc < 0)
        CHECK(sz.encoding == SMS_UCS2 && sz.units == 12345 && sz.segments == -7);
    else
        check_size(&sz, cps, chars, cost);

    free(cost);
    free(cps);
    free(text);
    return 0;
}

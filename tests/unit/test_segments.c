/*
 * test_segments.c: the SMS segment count (segments.c) and the UTF-8
 * decoder under it (utf8.c).  Every expected number is worked out by hand
 * in the comment beside it: 160 septets or 70 UTF-16 units fit one
 * message; past that, each concatenated segment holds 153 septets or 67
 * units, and a 2-unit character (escape pair, surrogate pair) that does
 * not fit the rest of a segment moves whole to the next one.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "segments.h"
#include "utf8.h"

/* A macro, not a function, so that a failure names the caller's line. */
#define assert_size(text, enc, nunits, nsegs)                                                      \
    do {                                                                                           \
        const char *t_ = (text);                                                                   \
        struct sms_size sz_;                                                                       \
        assert_int_equal(segments_count(t_, strlen(t_), &sz_), 0);                                 \
        assert_int_equal(sz_.encoding, (enc));                                                     \
        assert_int_equal(sz_.units, (nunits));                                                     \
        assert_int_equal(sz_.segments, (nsegs));                                                   \
    } while (0)

#define EMOJI "\xf0\x9f\x98\x80" /* U+1F600, a surrogate pair in UTF-16 */
#define EURO  "\xe2\x82\xac"     /* U+20AC, in the GSM-7 extension table */
#define C_CED "\xc3\xa7"         /* U+00E7, c cedilla: not in GSM-7 */

/* head, then n copies of unit, then tail; malloc'd. */
static char *
build(const char *head, const char *unit, size_t n, const char *tail)
{
    size_t hl = strlen(head), ul = strlen(unit), tl = strlen(tail);
    char *s = malloc(hl + ul * n + tl + 1);

    assert_non_null(s);
    memcpy(s, head, hl);
    for (size_t i = 0; i < n; i++)
        memcpy(s + hl + i * ul, unit, ul);
    memcpy(s + hl + ul * n, tail, tl + 1);
    return s;
}

/* n copies of 'a' between head and tail. */
static char *
as(const char *head, size_t n, const char *tail)
{
    return build(head, "a", n, tail);
}

/* ---- GSM-7 ---- */

static void
test_empty(void **state)
{
    (void)state;
    assert_size("", SMS_GSM7, 0, 1); /* nothing still goes out as one message */
}

static void
test_otp_text(void **state)
{
    (void)state;
    /* "Your code is " 13 + "123456" 6 = 19 septets <= 160: 1 */
    assert_size("Your code is 123456", SMS_GSM7, 19, 1);
    /* 19 + ". It expires in 10 minutes." 27 = 46 septets: 1 */
    assert_size("Your code is 123456. It expires in 10 minutes.", SMS_GSM7, 46, 1);
}

static void
test_ascii_boundaries(void **state)
{
    static const struct {
        size_t n;
        int segments;
    } cases[] = {
        {160, 1}, /* 160 <= 160: one message */
        {161, 2}, /* 161 > 160: 153 + 8 */
        {306, 2}, /* 153 + 153 */
        {307, 3}, /* 153 + 153 + 1 */
        {459, 3}, /* 3 * 153 */
        {460, 4}, /* 3 * 153 + 1 */
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *s = as("", cases[i].n, "");
        assert_size(s, SMS_GSM7, cases[i].n, cases[i].segments);
        free(s);
    }
}

static void
test_extension_table(void **state)
{
    char *s;

    (void)state;
    /* form feed ^ { } \ [ ~ ] | and the euro: 10 characters * 2 septets = 20 */
    assert_size("\f^{}\\[~]|" EURO, SMS_GSM7, 20, 1);
    /* and each one alone: 2 septets */
    assert_size("\f", SMS_GSM7, 2, 1);
    assert_size("^", SMS_GSM7, 2, 1);
    assert_size("{", SMS_GSM7, 2, 1);
    assert_size("}", SMS_GSM7, 2, 1);
    assert_size("\\", SMS_GSM7, 2, 1);
    assert_size("[", SMS_GSM7, 2, 1);
    assert_size("~", SMS_GSM7, 2, 1);
    assert_size("]", SMS_GSM7, 2, 1);
    assert_size("|", SMS_GSM7, 2, 1);
    assert_size(EURO, SMS_GSM7, 2, 1);

    /* 158 + 2 (the euro) = 160 septets: still one message */
    s = as("", 158, EURO);
    assert_size(s, SMS_GSM7, 160, 1);
    free(s);

    /* 159 + 2 = 161 septets > 160: 153 a, then 6 a + the euro = 8: 2 */
    s = as("", 159, EURO);
    assert_size(s, SMS_GSM7, 161, 2);
    free(s);

    /*
     * 152 + 2 + 10 = 164 septets: the escape pair would be septets 153 and
     * 154, so it moves; segment 1 is 152 a, segment 2 is "{" + 10 a = 12: 2.
     */
    s = as("", 152, "{aaaaaaaaaa");
    assert_size(s, SMS_GSM7, 164, 2);
    free(s);

    /*
     * 152 + 2 + 152 = 306 septets, which is 2 * 153, but the pair moves:
     * segment 1 is 152 a, segment 2 is "{" + 151 a = 153, segment 3 is the
     * last a: 3, one more than 306 / 153.
     */
    s = build("", "a", 152, "{");
    {
        char *t = as(s, 152, "");
        assert_size(t, SMS_GSM7, 306, 3);
        free(t);
    }
    free(s);

    /* 153 + 2 + 151 = 306 septets, the pair at 154-155 splits nothing: 153 + 153 = 2 */
    s = as("", 153, "{");
    {
        char *t = as(s, 151, "");
        assert_size(t, SMS_GSM7, 306, 2);
        free(t);
    }
    free(s);

    /* 80 euros = 160 septets: 1 */
    s = build("", EURO, 80, "");
    assert_size(s, SMS_GSM7, 160, 1);
    free(s);

    /* 81 euros = 162 septets: 76 euros (152; a 77th would be 154) + 5 euros (10): 2 */
    s = build("", EURO, 81, "");
    assert_size(s, SMS_GSM7, 162, 2);
    free(s);
}

/*
 * The default alphabet of TS 23.038 6.2.1, one row of its table a line:
 * 8 characters each but the row of the escape 0x1B, 127 in all.
 */
static const char *const gsm7_rows[16] = {
    "@\xc2\xa3$\xc2\xa5\xc3\xa8\xc3\xa9\xc3\xb9\xc3\xac",        /* 0x00 @£$¥èéùì */
    "\xc3\xb2\xc3\x87\n\xc3\x98\xc3\xb8\r\xc3\x85\xc3\xa5",      /* 0x08 òÇ LF Øø CR Åå */
    "\xce\x94_\xce\xa6\xce\x93\xce\x9b\xce\xa9\xce\xa0\xce\xa8", /* 0x10 Δ_ΦΓΛΩΠΨ */
    "\xce\xa3\xce\x98\xce\x9e\xc3\x86\xc3\xa6\xc3\x9f\xc3\x89",  /* 0x18 ΣΘΞ ESC ÆæßÉ */
    " !\"#\xc2\xa4%&'",                                          /* 0x20 SP !"#¤%&' */
    "()*+,-./",                                                  /* 0x28 ()*+,-./ */
    "01234567",                                                  /* 0x30 01234567 */
    "89:;<=>?",                                                  /* 0x38 89:;<=>? */
    "\xc2\xa1"
    "ABCDEFG",                                     /* 0x40 ¡ABCDEFG */
    "HIJKLMNO",                                    /* 0x48 HIJKLMNO */
    "PQRSTUVW",                                    /* 0x50 PQRSTUVW */
    "XYZ\xc3\x84\xc3\x96\xc3\x91\xc3\x9c\xc2\xa7", /* 0x58 XYZÄÖÑÜ§ */
    "\xc2\xbf"
    "abcdefg",                                     /* 0x60 ¿abcdefg */
    "hijklmno",                                    /* 0x68 hijklmno */
    "pqrstuvw",                                    /* 0x70 pqrstuvw */
    "xyz\xc3\xa4\xc3\xb6\xc3\xb1\xc3\xbc\xc3\xa0", /* 0x78 xyzäöñüà */
};

static void
test_default_alphabet(void **state)
{
    char all[512] = "";

    (void)state;
    for (size_t r = 0; r < 16; r++) {
        const unsigned char *p = (const unsigned char *)gsm7_rows[r];
        const unsigned char *end = p + strlen(gsm7_rows[r]);

        /* A row is 8 septets (7 for 0x18, without the escape): 1 segment. */
        assert_size(gsm7_rows[r], SMS_GSM7, r == 3 ? 7 : 8, 1);
        /* Each character alone: GSM-7, 1 septet. */
        while (p < end) {
            const unsigned char *start = p;
            struct sms_size sz;
            uint32_t cp;
            assert_int_equal(utf8_next(&p, end, &cp), 0);
            assert_int_equal(segments_count((const char *)start, (size_t)(p - start), &sz), 0);
            assert_int_equal(sz.encoding, SMS_GSM7);
            assert_int_equal(sz.units, 1);
        }
        strcat(all, gsm7_rows[r]);
    }
    /* 15 * 8 + 7 = 127 septets <= 160: 1 */
    assert_size(all, SMS_GSM7, 127, 1);
}

/* ---- UCS-2 ---- */

static void
test_not_in_gsm7(void **state)
{
    char *s;

    (void)state;
    /* One character outside both tables makes the whole text UCS-2. */
    assert_size("`", SMS_UCS2, 1, 1);                          /* backtick */
    assert_size(C_CED, SMS_UCS2, 1, 1);                        /* c cedilla; capital is 0x09 */
    assert_size("\xc3\x87", SMS_GSM7, 1, 1);                   /* capital C cedilla */
    assert_size("\xe2\x80\x9cok\xe2\x80\x9d", SMS_UCS2, 4, 1); /* curly quotes + "ok" */
    assert_size("it\xe2\x80\x99s", SMS_UCS2, 4, 1);            /* right single quote */
    assert_size("\xce\xb1", SMS_UCS2, 1, 1);                   /* Greek small alpha */
    assert_size("\xce\x91", SMS_UCS2, 1, 1); /* Greek capital Alpha, not Latin A */
    assert_size("\xc2\xa0", SMS_UCS2, 1, 1); /* no-break space */
    assert_size("\t", SMS_UCS2, 1, 1);       /* tab */
    assert_size("\x1b", SMS_UCS2, 1, 1);     /* ESC is not a character */
    assert_size("\x7f", SMS_UCS2, 1, 1);     /* DEL */
    /* The euro is 2 septets in GSM-7 but 1 unit in UCS-2. */
    assert_size(EURO C_CED, SMS_UCS2, 2, 1);

    /* A NUL inside len is a character too, and not a GSM-7 one. */
    {
        struct sms_size sz;
        assert_int_equal(segments_count("a\0b", 3, &sz), 0);
        assert_int_equal(sz.encoding, SMS_UCS2);
        assert_int_equal(sz.units, 3);
    }

    /* c cedilla + 149 a: 150 units > 70, so 67 + 67 + 16 = 3 (it was 1 in GSM-7) */
    s = as(C_CED, 149, "");
    assert_size(s, SMS_UCS2, 150, 3);
    free(s);
}

/*
 * U+0906 U+092A U+0915 U+093E (4) space (1) U+0915 U+094B U+0921 (3) space
 * (1) 123456 (6) space (1) U+0939 U+0948 (2): 18 characters, all in the BMP.
 */
#define HINDI                                                                                      \
    "\xe0\xa4\x86\xe0\xa4\xaa\xe0\xa4\x95\xe0\xa4\xbe "                                            \
    "\xe0\xa4\x95\xe0\xa5\x8b\xe0\xa4\xa1 123456 "                                                 \
    "\xe0\xa4\xb9\xe0\xa5\x88"

static void
test_hindi(void **state)
{
    char *s;

    (void)state;
    /* 18 units <= 70: 1 */
    assert_size(HINDI, SMS_UCS2, 18, 1);

    /* Four times, joined by spaces: 4 * 18 + 3 = 75 units > 70: 67 + 8 = 2 */
    s = build(HINDI, " " HINDI, 3, "");
    assert_size(s, SMS_UCS2, 75, 2);
    free(s);
}

static void
test_ucs2_boundaries(void **state)
{
    static const struct {
        size_t n; /* a after one c cedilla */
        size_t units;
        int segments;
    } cases[] = {
        {69, 70, 1},   /* 70 <= 70: one message */
        {70, 71, 2},   /* 71 > 70: 67 + 4 */
        {133, 134, 2}, /* 67 + 67 */
        {134, 135, 3}, /* 67 + 67 + 1 */
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *s = as(C_CED, cases[i].n, "");
        assert_size(s, SMS_UCS2, cases[i].units, cases[i].segments);
        free(s);
    }
}

static void
test_surrogate_pairs(void **state)
{
    char *s;

    (void)state;
    assert_size(EMOJI, SMS_UCS2, 2, 1);              /* one emoji, two units */
    assert_size("\xef\xbf\xbf", SMS_UCS2, 1, 1);     /* U+FFFF: the last 1-unit one */
    assert_size("\xf0\x90\x80\x80", SMS_UCS2, 2, 1); /* U+10000: the first pair */
    assert_size("\xf4\x8f\xbf\xbf", SMS_UCS2, 2, 1); /* U+10FFFF */

    /* 35 emoji = 70 units: 1 */
    s = build("", EMOJI, 35, "");
    assert_size(s, SMS_UCS2, 70, 1);
    free(s);

    /* 36 emoji = 72 units: 33 emoji (66; a 34th would be 68 > 67) + 3 emoji (6): 2 */
    s = build("", EMOJI, 36, "");
    assert_size(s, SMS_UCS2, 72, 2);
    free(s);

    /*
     * 66 a + emoji + 4 a = 72 units: the pair would be units 67 and 68, so
     * it moves; 66 + (2 + 4) = 2.
     */
    s = as("", 66, EMOJI "aaaa");
    assert_size(s, SMS_UCS2, 72, 2);
    free(s);

    /*
     * 66 a + emoji + 66 a = 134 units, which is 2 * 67, but the pair moves:
     * 66, then emoji + 65 a = 67, then the last a: 3.
     */
    s = as("", 66, EMOJI);
    {
        char *t = as(s, 66, "");
        assert_size(t, SMS_UCS2, 134, 3);
        free(t);
    }
    free(s);

    /* 67 a + emoji + 65 a = 134 units, the pair at 68-69 splits nothing: 67 + 67 = 2 */
    s = as("", 67, EMOJI);
    {
        char *t = as(s, 65, "");
        assert_size(t, SMS_UCS2, 134, 2);
        free(t);
    }
    free(s);
}

/* ---- invalid input, names ---- */

static void
test_invalid_utf8(void **state)
{
    static const char *bad[] = {
        "\xc3",             /* truncated 2-byte */
        "abc\xe2\x82",      /* truncated 3-byte at the end */
        "\xf0\x9f\x98",     /* truncated 4-byte */
        "\xe2\x82z",        /* non-continuation */
        "\x80",             /* stray continuation */
        "\xc0\x80",         /* overlong NUL */
        "\xc1\xbf",         /* overlong ASCII */
        "\xe0\x80\x80",     /* overlong 3-byte */
        "\xf0\x80\x80\x80", /* overlong 4-byte */
        "\xed\xa0\x80",     /* U+D800, a surrogate */
        "\xed\xbf\xbf",     /* U+DFFF */
        "\xf4\x90\x80\x80", /* U+110000 */
        "\xf5\x80\x80\x80", /* lead byte past F4 */
        "\xff",
        "ok" EMOJI "\xfe", /* valid, then not */
    };
    struct sms_size sz = {SMS_UCS2, 12345, 678};

    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(segments_count(bad[i], strlen(bad[i]), &sz), -1);
        assert_int_equal(sz.units, 12345); /* out untouched */
        assert_int_equal(sz.segments, 678);
    }
    /* len is the end: a euro cut after 2 of its 3 bytes is invalid... */
    assert_int_equal(segments_count(EURO, 2, &sz), -1);
    /* ...and what lies past len is not read: "abc" of "abcdef". */
    assert_int_equal(segments_count("abcdef", 3, &sz), 0);
    assert_int_equal(sz.units, 3);
}

static void
test_encoding_name(void **state)
{
    (void)state;
    assert_string_equal(segments_encoding_name(SMS_GSM7), "GSM-7");
    assert_string_equal(segments_encoding_name(SMS_UCS2), "UCS-2");
}

/* ---- utf8_next ---- */

static void
test_utf8_next(void **state)
{
    static const struct {
        const char *s;
        uint32_t cp;
        size_t len;
    } good[] = {
        {"A", 0x41, 1},
        {"\xc2\x80", 0x80, 2},
        {"\xdf\xbf", 0x7ff, 2},
        {"\xe0\xa0\x80", 0x800, 3},
        {"\xed\x9f\xbf", 0xd7ff, 3},
        {"\xee\x80\x80", 0xe000, 3},
        {EURO, 0x20ac, 3},
        {EMOJI, 0x1f600, 4},
        {"\xf4\x8f\xbf\xbf", 0x10ffff, 4},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        const unsigned char *p = (const unsigned char *)good[i].s;
        const unsigned char *end = p + strlen(good[i].s);
        uint32_t cp = 0;
        assert_int_equal(utf8_next(&p, end, &cp), 0);
        assert_int_equal(cp, good[i].cp);
        assert_ptr_equal(p, (const unsigned char *)good[i].s + good[i].len);
    }

    /* On failure neither the position nor the code point moves. */
    {
        const unsigned char *s = (const unsigned char *)EMOJI;
        const unsigned char *p = s;
        uint32_t cp = 7;
        assert_int_equal(utf8_next(&p, s + 3, &cp), -1); /* end cuts the pair */
        assert_ptr_equal(p, s);
        assert_int_equal(cp, 7);
        assert_int_equal(utf8_next(&p, s, &cp), -1); /* nothing left */
        assert_ptr_equal(p, s);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_otp_text),
        cmocka_unit_test(test_ascii_boundaries),
        cmocka_unit_test(test_extension_table),
        cmocka_unit_test(test_default_alphabet),
        cmocka_unit_test(test_not_in_gsm7),
        cmocka_unit_test(test_hindi),
        cmocka_unit_test(test_ucs2_boundaries),
        cmocka_unit_test(test_surrogate_pairs),
        cmocka_unit_test(test_invalid_utf8),
        cmocka_unit_test(test_encoding_name),
        cmocka_unit_test(test_utf8_next),
    };

    return cmocka_run_group_tests_name("segments", tests, NULL, NULL);
}

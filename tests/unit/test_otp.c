/*
 * test_otp.c: code generation, the keyed hash shared with the web app,
 * template rendering, UTF-8 counting and phone masking.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sodium.h>

#include "log.h"
#include "otp.h"

/* A template of n copies of unit (each one character) followed by tail. */
static char *
repeat(const char *unit, size_t n, const char *tail)
{
    size_t ul = strlen(unit), tl = strlen(tail);
    char *s = malloc(ul * n + tl + 1);

    assert_non_null(s);
    for (size_t i = 0; i < n; i++)
        memcpy(s + i * ul, unit, ul);
    memcpy(s + ul * n, tail, tl + 1);
    return s;
}

/* ---- otp_generate ---- */

static void
test_generate_lengths(void **state)
{
    (void)state;
    for (int digits = 4; digits <= OTP_DIGITS_MAX; digits++) {
        for (int round = 0; round < 100; round++) {
            char out[OTP_DIGITS_MAX + 2];
            memset(out, 'X', sizeof(out));
            otp_generate(out, digits);
            assert_int_equal(strlen(out), digits);
            for (int i = 0; i < digits; i++)
                assert_true(out[i] >= '0' && out[i] <= '9');
            assert_int_equal(out[digits + 1], 'X'); /* nothing past the NUL */
        }
    }
}

static void
test_generate_distribution(void **state)
{
    enum { DRAWS = 200000, DIGITS = 6 };
    long total[10] = {0};
    long per_pos[DIGITS][10];
    double expected = (double)DRAWS * DIGITS / 10.0, chi2 = 0.0;
    char code[DIGITS + 1];

    (void)state;
    memset(per_pos, 0, sizeof(per_pos));
    for (int n = 0; n < DRAWS; n++) {
        otp_generate(code, DIGITS);
        assert_int_equal(strlen(code), DIGITS);
        for (int i = 0; i < DIGITS; i++) {
            int d = code[i] - '0';
            assert_in_range(d, 0, 9);
            total[d]++;
            per_pos[i][d]++;
        }
    }
    for (int d = 0; d < 10; d++) {
        double diff = (double)total[d] - expected;
        chi2 += diff * diff / expected;
    }
    /* 9 degrees of freedom: P(chi2 >= 40) is below 1e-5 for a fair source. */
    if (chi2 >= 40.0)
        fail_msg("chi-square %.2f over 10 buckets is not below 40", chi2);
    /*
     * Every position varies: each digit shows up near DRAWS/10 = 20000 times
     * (standard deviation ~134), so 18000 is 15 sigma away from a fair
     * source but catches a constant or stuck position.
     */
    for (int i = 0; i < DIGITS; i++)
        for (int d = 0; d < 10; d++)
            if (per_pos[i][d] < 18000)
                fail_msg("position %d: digit %d seen %ld times", i, d, per_pos[i][d]);
}

/* ---- otp_mac ---- */

static const char *const kat_key_hex =
    "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

static void
kat_key(unsigned char key[32])
{
    assert_int_equal(sodium_hex2bin(key, 32, kat_key_hex, 64, NULL, NULL, NULL), 0);
}

static void
test_mac_known_answer(void **state)
{
    unsigned char key[32];
    char mac[OTP_MAC_HEX + 1];

    (void)state;
    kat_key(key);
    otp_mac(mac, key, "password_reset", "+14155552671", "123456");
    assert_string_equal(mac, "3cb21acf0a566344e21d12c74bb27fed3e9bdd3aa39ea4c3088366982e615819");
}

/* A sealed code opens with its key for its own purpose and number, and nowhere else. */
static void
test_seal_opens_only_for_its_record(void **state)
{
    unsigned char key[32];
    char sealed[OTP_SEALED_HEX + 1], again[OTP_SEALED_HEX + 1], code[OTP_DIGITS_MAX + 1];

    (void)state;
    kat_key(key);
    otp_seal(sealed, key, "login", "+14155552671", "042917");
    assert_int_equal(strlen(sealed), 2 * (24 + 6 + 16));
    assert_null(strstr(sealed, "042917"));
    assert_int_equal(otp_open(code, key, "login", "+14155552671", sealed), 0);
    assert_string_equal(code, "042917");
    /* A fresh nonce each time: the same code never seals to the same text. */
    otp_seal(again, key, "login", "+14155552671", "042917");
    assert_string_not_equal(sealed, again);
    /* Moved to another number or purpose, it does not open. */
    assert_int_equal(otp_open(code, key, "login", "+14155552672", sealed), -1);
    assert_int_equal(otp_open(code, key, "password_reset", "+14155552671", sealed), -1);
    /* Nor under another key, nor with one bit changed. */
    key[0] ^= 1;
    assert_int_equal(otp_open(code, key, "login", "+14155552671", sealed), -1);
    key[0] ^= 1;
    sealed[60] = sealed[60] == '0' ? '1' : '0';
    assert_int_equal(otp_open(code, key, "login", "+14155552671", sealed), -1);
    assert_int_equal(otp_open(code, key, "login", "+14155552671", "zz"), -1);
    assert_int_equal(otp_open(code, key, "login", "+14155552671", ""), -1);
    /* Ten digits, the longest code, round-trip. */
    otp_seal(sealed, key, "login", "+14155552671", "0123456789");
    assert_int_equal(otp_open(code, key, "login", "+14155552671", sealed), 0);
    assert_string_equal(code, "0123456789");
}

static void
test_mac_binds_every_field(void **state)
{
    unsigned char key[32];
    char base[OTP_MAC_HEX + 1], other[OTP_MAC_HEX + 1];

    (void)state;
    kat_key(key);
    otp_mac(base, key, "password_reset", "+14155552671", "123456");

    otp_mac(other, key, "login", "+14155552671", "123456");
    assert_string_not_equal(base, other);
    otp_mac(other, key, "password_reset", "+14155552672", "123456");
    assert_string_not_equal(base, other);
    otp_mac(other, key, "password_reset", "+14155552671", "123457");
    assert_string_not_equal(base, other);
    /* The separator keeps field boundaries: moving a character differs. */
    otp_mac(other, key, "password_reset+", "14155552671", "123456");
    assert_string_not_equal(base, other);

    key[31] ^= 1;
    otp_mac(other, key, "password_reset", "+14155552671", "123456");
    assert_string_not_equal(base, other);

    /* Same inputs, same answer. */
    key[31] ^= 1;
    otp_mac(other, key, "password_reset", "+14155552671", "123456");
    assert_string_equal(base, other);
    assert_int_equal(strlen(other), OTP_MAC_HEX);
}

/* ---- otp_render ---- */

static void
test_render_placeholders(void **state)
{
    char out[OTP_BODY_MAX], err[REASON_MAX];

    (void)state;
    assert_int_equal(otp_render(out, sizeof(out),
                                "Your code is {code}. It expires in {minutes} "
                                "minutes.",
                                "482913", 5, err, sizeof(err)),
                     0);
    assert_string_equal(out, "Your code is 482913. It expires in 5 minutes.");

    assert_int_equal(otp_render(out, sizeof(out), "{code}", "1234", 1, err, sizeof(err)), 0);
    assert_string_equal(out, "1234");

    assert_int_equal(otp_render(out, sizeof(out), "{minutes}m {code} / {code} {minutes}", "0042",
                                60, err, sizeof(err)),
                     0);
    assert_string_equal(out, "60m 0042 / 0042 60");

    assert_int_equal(otp_render(out, sizeof(out), "{code}{code}{minutes}{minutes}", "987654", 15,
                                err, sizeof(err)),
                     0);
    assert_string_equal(out, "987654987654"
                             "1515");

    /* Near misses are copied literally. */
    assert_int_equal(
        otp_render(out, sizeof(out), "{cod} {Code} {minute} {code}", "111111", 2, err, sizeof(err)),
        0);
    assert_string_equal(out, "{cod} {Code} {minute} 111111");
}

static void
test_render_missing_code(void **state)
{
    char out[OTP_BODY_MAX], err[REASON_MAX] = "";

    (void)state;
    assert_int_equal(otp_render(out, sizeof(out), "It expires in {minutes} minutes.", "123456", 5,
                                err, sizeof(err)),
                     -1);
    assert_non_null(strstr(err, "{code}"));

    err[0] = '\0';
    assert_int_equal(otp_render(out, sizeof(out), "", "123456", 5, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "{code}"));
}

static void
test_render_length_limit_ascii(void **state)
{
    char out[OTP_BODY_MAX], err[REASON_MAX] = "";
    /* 474 + 6 digits = 480 characters. */
    char *ok = repeat("a", 474, "{code}");
    char *over = repeat("a", 475, "{code}");

    (void)state;
    assert_int_equal(otp_render(out, sizeof(out), ok, "123456", 5, err, sizeof(err)), 0);
    assert_int_equal(strlen(out), 480);
    assert_string_equal(out + 474, "123456");

    assert_int_equal(otp_render(out, sizeof(out), over, "123456", 5, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "481"));

    /* {minutes} counts its rendered width, not the placeholder's. */
    free(ok);
    ok = repeat("a", 470, "{code}{minutes}"); /* 470 + 6 + 4 ("1000") = 480 */
    assert_int_equal(otp_render(out, sizeof(out), ok, "123456", 1000, err, sizeof(err)), 0);
    assert_int_equal(strlen(out), 480);
    assert_int_equal(otp_render(out, sizeof(out), ok, "1234567", 1000, err, sizeof(err)), -1);
    free(ok);
    free(over);
}

static void
test_render_length_limit_utf8(void **state)
{
    char out[OTP_BODY_MAX], err[REASON_MAX] = "";
    /* "é" is 2 bytes, "€" 3 and "😀" 4: all one character each. */
    char *two = repeat("\xc3\xa9", 474, "{code}");
    char *three = repeat("\xe2\x82\xac", 474, "{code}");
    char *four = repeat("\xf0\x9f\x98\x80", 474, "{code}");
    char *over = repeat("\xf0\x9f\x98\x80", 475, "{code}");

    (void)state;
    assert_int_equal(otp_render(out, sizeof(out), two, "123456", 5, err, sizeof(err)), 0);
    assert_int_equal(otp_utf8_chars(out), 480);
    assert_int_equal(strlen(out), 474 * 2 + 6);

    assert_int_equal(otp_render(out, sizeof(out), three, "123456", 5, err, sizeof(err)), 0);
    assert_int_equal(otp_utf8_chars(out), 480);

    assert_int_equal(otp_render(out, sizeof(out), four, "123456", 5, err, sizeof(err)), 0);
    assert_int_equal(otp_utf8_chars(out), 480);
    assert_int_equal(strlen(out), 474 * 4 + 6);
    assert_string_equal(out + 474 * 4, "123456");

    assert_int_equal(otp_render(out, sizeof(out), over, "123456", 5, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "481"));
    free(two);
    free(three);
    free(four);
    free(over);
}

static void
test_render_invalid_utf8(void **state)
{
    char out[OTP_BODY_MAX], err[REASON_MAX] = "";

    (void)state;
    assert_int_equal(
        otp_render(out, sizeof(out), "code \xff {code}", "123456", 5, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "UTF-8"));
    err[0] = '\0';
    assert_int_equal(otp_render(out, sizeof(out), "{code} \xc3", "123456", 5, err, sizeof(err)),
                     -1);
    assert_non_null(strstr(err, "UTF-8"));
}

static void
test_render_small_buffer(void **state)
{
    char out[8], err[REASON_MAX] = "";

    (void)state;
    /* "code 123456" needs 12 bytes. */
    assert_int_equal(otp_render(out, sizeof(out), "code {code}", "123456", 5, err, sizeof(err)),
                     -1);
    assert_true(strlen(err) > 0);
    /* Exactly fits: 7 characters and the NUL. */
    assert_int_equal(otp_render(out, sizeof(out), "c {code}", "12345", 5, err, sizeof(err)), 0);
    assert_string_equal(out, "c 12345");
}

static void
test_template_check(void **state)
{
    char err[REASON_MAX] = "";
    char *t = repeat("a", 470, "{code}");

    (void)state;
    assert_int_equal(otp_template_check(t, 10, 5, err, sizeof(err)), 0); /* 480 */
    free(t);
    t = repeat("a", 470, "{code}{minutes}");
    assert_int_equal(otp_template_check(t, 6, 9999, err, sizeof(err)), 0);   /* 480 */
    assert_int_equal(otp_template_check(t, 6, 10000, err, sizeof(err)), -1); /* 481 */
    free(t);
    t = repeat("a", 471, "{code}");
    assert_int_equal(otp_template_check(t, 10, 5, err, sizeof(err)), -1); /* 481 */
    assert_int_equal(otp_template_check(t, 6, 5, err, sizeof(err)), 0);   /* 477 */
    free(t);
    assert_int_equal(otp_template_check("no placeholder", 6, 5, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "{code}"));
}

/* ---- otp_utf8_chars ---- */

static void
test_utf8_chars(void **state)
{
    (void)state;
    assert_int_equal(otp_utf8_chars(""), 0);
    assert_int_equal(otp_utf8_chars("abc"), 3);
    assert_int_equal(otp_utf8_chars("caf\xc3\xa9"), 4); /* café */
    assert_int_equal(otp_utf8_chars("\xe2\x82\xac"
                                    "5"),
                     2);                                      /* €5 */
    assert_int_equal(otp_utf8_chars("\xf0\x9f\x98\x80!"), 2); /* 😀! */
    assert_int_equal(otp_utf8_chars("\xf4\x8f\xbf\xbf"), 1);  /* U+10FFFF */
    assert_int_equal(otp_utf8_chars("\xc2\x80"), 1);          /* U+0080 */

    /* Overlong encodings of NUL and '/'. */
    assert_int_equal(otp_utf8_chars("\xc0\x80"), -1);
    assert_int_equal(otp_utf8_chars("\xc1\xaf"), -1);
    /* Truncated sequences, at the end and followed by ASCII. */
    assert_int_equal(otp_utf8_chars("\xc3"), -1);
    assert_int_equal(otp_utf8_chars("a\xe2\x82"), -1);
    assert_int_equal(otp_utf8_chars("\xf0\x9f\x98"), -1);
    assert_int_equal(otp_utf8_chars("\xe2\x82z"), -1);
    /* A stray continuation byte, and bytes that never appear in UTF-8. */
    assert_int_equal(otp_utf8_chars("\x80"), -1);
    assert_int_equal(otp_utf8_chars("ok\xbf"), -1);
    assert_int_equal(otp_utf8_chars("\xff"), -1);
    assert_int_equal(otp_utf8_chars("\xf5\x80\x80\x80"), -1);
}

/* ---- log_mask_to ---- */

static void
test_mask_phone(void **state)
{
    char buf[LOG_MASK_MAX];

    (void)state;
    assert_string_equal(log_mask_to("+14155552671", buf, sizeof(buf)), "+1415*****71");
    assert_string_equal(log_mask_to("+1234567", buf, sizeof(buf)), "+1234*67");
    assert_string_equal(log_mask_to("+123456789012345", buf, sizeof(buf)), "+1234*********45");
    assert_string_equal(log_mask_to(NULL, buf, sizeof(buf)), "***");
    assert_string_equal(log_mask_to("", buf, sizeof(buf)), "***");
    assert_string_equal(log_mask_to("12345", buf, sizeof(buf)), "***");
    assert_string_equal(log_mask_to("garbage", buf, sizeof(buf)), "***");
    assert_string_equal(log_mask_to("+123456", buf, sizeof(buf)), "***");
    assert_string_equal(log_mask_to("14155552671", buf, sizeof(buf)), "***");
    /* The return value is the caller's buffer. */
    assert_ptr_equal(log_mask_to("+14155552671", buf, sizeof(buf)), buf);
}

static void
test_mask_phone_small_buffer(void **state)
{
    char buf[12];
    char exact[13];

    (void)state;
    /* 12 characters need 13 bytes: never a partial (unmasked) number. */
    memset(buf, 'X', sizeof(buf));
    assert_string_equal(log_mask_to("+14155552671", buf, sizeof(buf)), "***");
    assert_string_equal(log_mask_to("+14155552671", exact, sizeof(exact)), "+1415*****71");
}

/* Provider texts quote the recipient: every long digit run is masked in place. */
static void
test_mask_numbers_in_text(void **state)
{
    char a[] = "The 'To' number +14155552671 is not a valid phone number.";
    char b[] = "verify 14155552671 and 919876543210, code 21211, year 2026";
    char c[] = "+123456";

    (void)state;
    log_mask_numbers(a);
    assert_string_equal(a, "The 'To' number +141******71 is not a valid phone number.");
    log_mask_numbers(b);
    assert_string_equal(b, "verify 141******71 and 919*******10, code 21211, year 2026");
    log_mask_numbers(c);
    assert_string_equal(c, "+123456"); /* six digits: not a number worth hiding */
}

/* A burst per period, then silence, then the count of what was held back. */
static void
test_log_limit(void **state)
{
    struct log_limiter l = {.period_ms = 1000, .burst = 2};
    unsigned held = 99;
    int allowed = 0;

    (void)state;
    for (int i = 0; i < 10; i++)
        allowed += log_limit_allow(&l, "oom", 100, &held);
    assert_int_equal(allowed, 2);
    /* Another cause has its own budget, and alternating does not reset either. */
    assert_int_equal(log_limit_allow(&l, "execabort", 150, &held), 1);
    assert_int_equal(log_limit_allow(&l, "oom", 200, &held), 0);
    assert_int_equal(log_limit_allow(&l, "execabort", 250, &held), 1);
    assert_int_equal(log_limit_allow(&l, "execabort", 300, &held), 0);
    /* The next period: allowed again, told how many were held back. */
    assert_int_equal(log_limit_allow(&l, "oom", 1100, &held), 1);
    assert_int_equal(held, 9);
    /* Long causes are told apart by their first bytes, as stored. */
    {
        char long_key[300];
        memset(long_key, 'x', sizeof(long_key) - 1);
        long_key[sizeof(long_key) - 1] = '\0';
        assert_int_equal(log_limit_allow(&l, long_key, 1200, &held), 1);
        assert_int_equal(log_limit_allow(&l, long_key, 1201, &held), 1);
        assert_int_equal(log_limit_allow(&l, long_key, 1202, &held), 0);
    }
    /* More causes than slots: the least recent is forgotten, nothing breaks. */
    for (int i = 0; i < 3 * LOG_LIMIT_SLOTS; i++) {
        char key[16];
        snprintf(key, sizeof(key), "cause-%d", i);
        assert_int_equal(log_limit_allow(&l, key, 2000 + (uint64_t)i, &held), 1);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_generate_lengths),
        cmocka_unit_test(test_generate_distribution),
        cmocka_unit_test(test_mac_known_answer),
        cmocka_unit_test(test_mac_binds_every_field),
        cmocka_unit_test(test_seal_opens_only_for_its_record),
        cmocka_unit_test(test_render_placeholders),
        cmocka_unit_test(test_render_missing_code),
        cmocka_unit_test(test_render_length_limit_ascii),
        cmocka_unit_test(test_render_length_limit_utf8),
        cmocka_unit_test(test_render_invalid_utf8),
        cmocka_unit_test(test_render_small_buffer),
        cmocka_unit_test(test_template_check),
        cmocka_unit_test(test_utf8_chars),
        cmocka_unit_test(test_mask_phone),
        cmocka_unit_test(test_mask_phone_small_buffer),
        cmocka_unit_test(test_mask_numbers_in_text),
        cmocka_unit_test(test_log_limit),
    };

    if (sodium_init() < 0) {
        fprintf(stderr, "sodium_init failed\n");
        return 1;
    }
    return cmocka_run_group_tests_name("otp", tests, NULL, NULL);
}

/*
 * fuzz_template.c: otp_utf8_chars(), otp_template_check() and otp_render().
 *
 * Input: byte 0 picks the code length (4..10), byte 1 the minutes; the
 * rest is the template.  Invariants: otp_utf8_chars agrees with a strict
 * reference decoder; check and render agree; a render is exactly what a
 * reference renderer produces, is valid UTF-8 of at most 480 characters,
 * fits OTP_BODY_MAX, and never writes past the buffer it was given (the
 * output buffers are heap blocks of the exact size, so ASan sees overruns).
 */
#include <limits.h>
#include <stdint.h>

#include "fuzz_common.h"
#include "otp.h"

static size_t
count(const char *s, const char *needle)
{
    size_t n = 0, k = strlen(needle);
    for (const char *p = s; (p = strstr(p, needle)) != NULL; p += k)
        n++;
    return n;
}

/* Left-to-right substitution; returns a malloc'd string. */
static char *
ref_render(const char *tmpl, const char *code, const char *mins)
{
    size_t cap = strlen(tmpl) * (strlen(code) + strlen(mins) + 1) + 1, w = 0;
    char *out = malloc(cap);
    if (out == NULL)
        abort();
    for (const char *p = tmpl; *p;) {
        if (strncmp(p, "{code}", 6) == 0) {
            memcpy(out + w, code, strlen(code));
            w += strlen(code);
            p += 6;
        } else if (strncmp(p, "{minutes}", 9) == 0) {
            memcpy(out + w, mins, strlen(mins));
            w += strlen(mins);
            p += 9;
        } else {
            out[w++] = *p++;
        }
    }
    out[w] = '\0';
    return out;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const int odd_minutes[] = {0, -1, 99999, INT_MAX, INT_MIN};
    if (size < 2)
        return 0;
    int digits = 4 + data[0] % 7;
    int minutes = data[1] < 250 ? 1 + data[1] % 60 : odd_minutes[(data[1] - 250) % 5];
    char *tmpl = fuzz_strndup(data + 2, size - 2);
    char code[OTP_DIGITS_MAX + 1], mins[16], err[128];

    for (int i = 0; i < digits; i++)
        code[i] = (char)('0' + (data[0] + i) % 10);
    code[digits] = '\0';
    snprintf(mins, sizeof(mins), "%d", minutes);

    long chars = otp_utf8_chars(tmpl);
    CHECK(chars == ref_utf8_chars(tmpl));

    size_t ncode = count(tmpl, "{code}"), nmin = count(tmpl, "{minutes}");
    long want_chars = chars - (long)(6 * ncode + 9 * nmin) + (long)(ncode * (size_t)digits) +
                      (long)(nmin * strlen(mins));
    int want_ok = chars >= 0 && ncode > 0 && want_chars <= JOB_MESSAGE_CHARS;

    err[0] = '\0';
    int crc = otp_template_check(tmpl, digits, minutes, err, sizeof(err));
    CHECK(crc == 0 || crc == -1);
    CHECK((crc == 0) == want_ok);
    CHECK(crc == 0 || err[0] != '\0');

    char *out = malloc(OTP_BODY_MAX);
    if (out == NULL)
        abort();
    err[0] = '\0';
    int rrc = otp_render(out, OTP_BODY_MAX, tmpl, code, minutes, err, sizeof(err));
    CHECK(rrc == crc); /* a template that checks always renders into OTP_BODY_MAX */
    if (rrc == 0) {
        char *want = ref_render(tmpl, code, mins);
        size_t blen = strlen(out);
        CHECK(blen < OTP_BODY_MAX);
        CHECK(strcmp(out, want) == 0);
        long rchars = otp_utf8_chars(out);
        CHECK(rchars >= 0 && rchars == want_chars && rchars <= JOB_MESSAGE_CHARS);
        CHECK(strstr(out, code) != NULL);
        free(want);

        /* Exactly-sized buffers: blen+1 renders, blen fails without overrun. */
        char *exact = malloc(blen + 1);
        if (exact == NULL)
            abort();
        CHECK(otp_render(exact, blen + 1, tmpl, code, minutes, err, sizeof(err)) == 0);
        CHECK(strcmp(exact, out) == 0);
        free(exact);
        char *small = malloc(blen ? blen : 1);
        if (small == NULL)
            abort();
        err[0] = '\0';
        CHECK(otp_render(small, blen, tmpl, code, minutes, err, sizeof(err)) == -1);
        CHECK(err[0] != '\0');
        free(small);
    } else {
        CHECK(err[0] != '\0');
    }
    free(out);
    free(tmpl);
    return 0;
}

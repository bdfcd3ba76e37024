/*
 * fuzz_email.c: the e-mail channel's parsers: job_email_normalize() and
 * job_email_valid() (an address from a job), log_mask_to() on it,
 * otp_open() (a sealed code read back from Redis) and otp_render_email()
 * (an operator's template).
 *
 * Invariants: a valid address is lower-case, at most 254 characters, with
 * one '@' and no white space, and its mask keeps only the local part's
 * first and last characters and the domain; nothing random opens as a sealed code;
 * a render never writes past the exact-size buffer it was given and ends
 * every line in CRLF.
 */
#include <stdint.h>

#include <sodium.h>

#include "fuzz_common.h"
#include "job.h"
#include "log.h"
#include "otp.h"

static void
check_address(const char *in)
{
    char addr[JOB_TO_MAX + 1], masked[LOG_MASK_MAX];

    if (job_email_normalize(in, addr, sizeof(addr)) < 0 || !job_email_valid(addr))
        return;
    const char *at = strchr(addr, '@');
    CHECK(at != NULL && strchr(at + 1, '@') == NULL);
    CHECK(strlen(addr) <= JOB_EMAIL_MAX);
    for (const char *p = addr; *p; p++)
        CHECK(!(*p >= 'A' && *p <= 'Z') && *p != ' ' && *p != '\t' && *p != '\r' && *p != '\n');
    log_mask_to(addr, masked, sizeof(masked));
    CHECK(strchr(masked, '@') != NULL);
    /* The mask keeps at most the local part's first and last characters:
     * "a***e@domain", or "***@domain" for one character. Compared by shape,
     * since a local part may itself read "x***y". */
    if (at - addr >= 2) {
        CHECK(masked[0] == addr[0] && memcmp(masked + 1, "***", 3) == 0);
        CHECK(masked[4] == at[-1] && strcmp(masked + 5, at) == 0);
    } else {
        CHECK(memcmp(masked, "***", 3) == 0 && strcmp(masked + 3, at) == 0);
    }
}

static void
check_render(const char *tmpl)
{
    size_t len = strlen(tmpl) * 4 + 32;
    char *out = malloc(len);

    if (out == NULL)
        abort();
    if (otp_render_email(out, len, tmpl, "123456", 5) == 0) {
        CHECK(strlen(out) < len);
        for (const char *p = out; (p = strchr(p, '\n')) != NULL; p++)
            CHECK(p > out && p[-1] == '\r');
    }
    free(out);
    /* Exactly too small: must refuse, not overrun (ASan watches the heap block). */
    char *tiny = malloc(1);
    if (tiny == NULL)
        abort();
    CHECK(otp_render_email(tiny, 1, tmpl, "123456", 5) == (*tmpl ? -1 : 0));
    free(tiny);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const unsigned char key[32] = {0xfe, 0x1a, 0xb5, 0x3c};
    char *s = fuzz_strndup(data, size), code[OTP_DIGITS_MAX + 1];

    if (sodium_init() < 0)
        abort();
    check_address(s);
    CHECK(otp_open(code, key, "login", "+14155552671", s) == -1);
    check_render(s);
    free(s);
    return 0;
}

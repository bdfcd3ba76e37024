/*
 * fuzz_job.c: job_parse() on arbitrary payloads, plus the two validators
 * checked against independent reimplementations of their regexes.
 *
 * Invariants: a parsed job satisfies every rule of docs/protocol.md (the
 * validators, the ranges, expires = created + ttl, a message template that
 * passes otp_template_check and renders within 480 characters); a rejected
 * one carries a reason and, at most, a valid id.
 */
#include <stdint.h>

#include "fuzz_common.h"
#include "job.h"
#include "otp.h"

/* ^\+[1-9][0-9]{6,14}$ */
static int
ref_phone_valid(const char *s)
{
    size_t n = strlen(s);
    if (n < 8 || n > 16 || s[0] != '+' || s[1] < '1' || s[1] > '9')
        return 0;
    return strspn(s + 1, "0123456789") == n - 1;
}

/* ^[A-Za-z0-9_.:-]{1,64}$ */
static int
ref_id_valid(const char *s)
{
    size_t n = strlen(s);
    return n >= 1 && n <= JOB_ID_MAX &&
           strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.:-") == n;
}

static void
check_job(const struct job *job, int rc, const char *payload, size_t len, const char *err,
          size_t errlen, const struct job_defaults *defs)
{
    CHECK(rc == 0 || rc == -1);
    CHECK(memchr(err, '\0', errlen) != NULL);
    CHECK(NUL_IN(job->id) && NUL_IN(job->to) && NUL_IN(job->purpose) && NUL_IN(job->provider));
    /* The id is set whenever it was valid, even on failure; never an invalid one. */
    CHECK(job->id[0] == '\0' || job_id_valid(job->id));
    if (rc < 0) {
        CHECK(err[0] != '\0');
        CHECK(job->message == NULL);
        return;
    }
    /* A payload with a NUL byte is never accepted. */
    CHECK(memchr(payload, '\0', len) == NULL);
    CHECK(job_phone_valid(job->to));
    CHECK(ref_phone_valid(job->to));
    size_t plen = strlen(job->purpose);
    CHECK(plen >= 1 && plen <= JOB_PURPOSE_MAX);
    CHECK(strspn(job->purpose, "abcdefghijklmnopqrstuvwxyz0123456789_") == plen);
    CHECK(job->provider[0] == '\0' || strcmp(job->provider, "twilio") == 0 ||
          strcmp(job->provider, "msg91") == 0 || strcmp(job->provider, "console") == 0);
    CHECK(job->ttl >= 30 && job->ttl <= 3600);
    CHECK(job->digits >= 4 && job->digits <= OTP_DIGITS_MAX);
    CHECK(job->max_attempts >= 1 && job->max_attempts <= 20);
    /* No code outlives its ttl: never created after now. */
    CHECK(job->created_ms >= 0 && job->created_ms <= 1700000000000LL);
    CHECK(job->expires_ms == job->created_ms + (int64_t)job->ttl * 1000);
    (void)defs;
    if (job->message != NULL) {
        int minutes = (job->ttl + 59) / 60;
        char why[128], out[OTP_BODY_MAX], code[OTP_DIGITS_MAX + 1];
        CHECK(otp_template_check(job->message, job->digits, minutes, why, sizeof(why)) == 0);
        memset(code, '9', (size_t)job->digits);
        code[job->digits] = '\0';
        CHECK(otp_render(out, sizeof(out), job->message, code, minutes, why, sizeof(why)) == 0);
        long chars = otp_utf8_chars(out);
        CHECK(chars >= 0 && chars <= JOB_MESSAGE_CHARS);
        CHECK(strstr(out, code) != NULL);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* Exact-length copy, not NUL-terminated: job_parse takes (payload, len). */
    char *payload = malloc(size ? size : 1);
    if (payload == NULL)
        abort();
    memcpy(payload, data, size);

    /* The daemon's defaults come from the configuration: try typical and extreme ones. */
    static const struct job_defaults defs[] = {
        {300, 6, 5, 60000}, {3600, 10, 20, 0}, {30, 4, 1, 3600000}};
    for (size_t i = 0; i < sizeof(defs) / sizeof(defs[0]); i++) {
        struct job job;
        char err[256];
        memset(err, 'x', sizeof(err));
        err[sizeof(err) - 1] = '\0';
        int rc = job_parse(&job, payload, size, &defs[i], 1700000000000LL, err, sizeof(err));
        check_job(&job, rc, payload, size, err, sizeof(err), &defs[i]);
        job_clear(&job);
    }
    /* A tiny error buffer must still be NUL-terminated, never overrun. */
    {
        struct job job;
        char *err = malloc(8);
        if (err == NULL)
            abort();
        int rc = job_parse(&job, payload, size, &defs[0], 0, err, 8);
        if (rc < 0)
            CHECK(memchr(err, '\0', 8) != NULL);
        free(err);
        job_clear(&job);
    }
    free(payload);

    /* The validators, differentially, on the input as a C string. */
    char *s = fuzz_strndup(data, size);
    CHECK(!!job_phone_valid(s) == ref_phone_valid(s));
    CHECK(!!job_id_valid(s) == ref_id_valid(s));
    free(s);
    return 0;
}

/*
 * fuzz_twilio_receipt.c: Twilio's delivery receipts, twilio_parse_callback()
 * (messages' and calls' callbacks), twilio_parse_call() and twilio_twiml() too, and
 * on arbitrary status-callback bodies and twilio_parse_message() on
 * arbitrary Message fetches.  Input: byte 0 picks the case, the rest is
 * the body (an exact-length heap block without a NUL).
 *
 *   0  no X-Twilio-Signature          -> always 403
 *   1  a signature of the wrong token -> always 403
 *   2  signed honestly for the URL    -> never 403
 *   3  signed for the URL with :443   -> never 403 (Twilio may sign either)
 *   4  a Message fetch, HTTP 200 or not
 *
 * "Honestly" means as Twilio would sign what it sent: the body is decoded
 * here by a reference decoder of its own (form rules: "&" between pairs,
 * empty ones skipped, "+" for space, %XX), so a decoding that differs from
 * the daemon's shows up as a refused callback.  With a valid signature,
 * the receipt follows the parameters: 400 without MessageSid or
 * MessageStatus, else the sid as ref, the status word, the error code and
 * a hint whenever there is a code.  Every parse is deterministic.
 */
#include <ctype.h>

#include "fuzz_common.h"
#include "provider.h"

#define TOKEN    "fuzz-auth-token-0123456789abcdef"
#define URL      "https://example.test/otpd/webhooks/twilio"
#define URL_PORT "https://example.test:443/otpd/webhooks/twilio"
#define MAXP     64 /* pairs the daemon signs over */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* One form component decoded; a decoded NUL ends it (the daemon uses C strings). */
static char *
ref_decode(const char *s, size_t len)
{
    char *out = malloc(len + 1);
    size_t o = 0;

    if (out == NULL)
        abort();
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (c == '+') {
            c = ' ';
        } else if (c == '%' && i + 2 < len && isxdigit((unsigned char)s[i + 1]) &&
                   isxdigit((unsigned char)s[i + 2])) {
            char hex[3] = {s[i + 1], s[i + 2], '\0'};
            c = (char)strtol(hex, NULL, 16);
            i += 2;
        }
        out[o++] = c;
    }
    out[o] = '\0';
    return out;
}

/* The reference decoder: the pairs Twilio would have signed, at most MAXP. */
static int
ref_form(const char *body, size_t len, char **names, char **values)
{
    size_t end = strnlen(body, len), i = 0;
    int n = 0;

    while (i < end && n < MAXP) {
        const char *amp = memchr(body + i, '&', end - i), *eqp;
        size_t j = amp ? (size_t)(amp - body) : end, eq;
        if (j > i) {
            eqp = memchr(body + i, '=', j - i);
            eq = eqp ? (size_t)(eqp - body) : j;
            names[n] = ref_decode(body + i, eq - i);
            values[n] = eq < j ? ref_decode(body + eq + 1, j - eq - 1) : ref_decode("", 0);
            n++;
        }
        i = j + 1;
    }
    return n;
}

static const char *
ref_get(char **names, char **values, int n, const char *name)
{
    for (int i = 0; i < n; i++)
        if (strcmp(names[i], name) == 0)
            return values[i];
    return NULL;
}

static int
status_valid(enum job_status st)
{
    return st == RECEIPT_PENDING || st == JOB_SENT || st == JOB_DELIVERED ||
           st == JOB_UNDELIVERED || st == JOB_FAILED;
}

static void
check_receipt(const struct receipt *r)
{
    CHECK(NUL_IN(r->ref) && NUL_IN(r->provider_status) && NUL_IN(r->error_code) &&
          NUL_IN(r->error));
    CHECK(status_valid(r->status));
}

/* With a valid signature, the receipt says what the parameters say. */
static void
check_signed(int rc, const struct receipt *r, char **names, char **values, int n)
{
    const char *sid = ref_get(names, values, n, "MessageSid");
    const char *word = ref_get(names, values, n, "MessageStatus");
    const char *code = ref_get(names, values, n, "ErrorCode");

    CHECK(rc != 403);
    if (sid == NULL || word == NULL) {
        CHECK(rc == 400);
        return;
    }
    CHECK(rc == 200);
    /* Each field is the parameter, cut to its buffer. */
    CHECK(strncmp(r->ref, sid, sizeof(r->ref) - 1) == 0);
    CHECK(strncmp(r->provider_status, word, sizeof(r->provider_status) - 1) == 0);
    if (code && *code) {
        CHECK(strncmp(r->error_code, code, sizeof(r->error_code) - 1) == 0);
        CHECK(r->error[0] != '\0');
    } else {
        CHECK(r->error_code[0] == '\0' && r->error[0] == '\0');
    }
    if (strcmp(word, "delivered") == 0)
        CHECK(r->status == JOB_DELIVERED);
    if (strcmp(word, "queued") == 0)
        CHECK(r->status == RECEIPT_PENDING);
}

static void
fuzz_callback(int mode, const char *body, size_t len)
{
    char *names[MAXP], *values[MAXP], sig[64];
    const char *signature = NULL;
    struct receipt r, again;
    int n = ref_form(body, len, names, values), rc;

    if (mode == 1)
        twilio_signature("wrong-" TOKEN, URL, (const char *const *)names,
                         (const char *const *)values, n, sig, sizeof(sig));
    else if (mode >= 2)
        twilio_signature(TOKEN, mode == 2 ? URL : URL_PORT, (const char *const *)names,
                         (const char *const *)values, n, sig, sizeof(sig));
    if (mode >= 1)
        signature = sig;
    memset(&r, 0x5a, sizeof(r));
    rc = twilio_parse_callback(TOKEN, URL, signature, body, len, &r);
    check_receipt(&r);
    if (mode < 2) {
        CHECK(rc == 403 && r.status == RECEIPT_PENDING);
    } else {
        check_signed(rc, &r, names, values, n);
    }
    memset(&again, 0xa5, sizeof(again));
    CHECK(twilio_parse_callback(TOKEN, URL, signature, body, len, &again) == rc);
    CHECK(memcmp(&r, &again, sizeof(r)) == 0);
    for (int i = 0; i < n; i++) {
        free(names[i]);
        free(values[i]);
    }
}

static void
fuzz_message(long status, const char *body, size_t len)
{
    struct poll_result res, again;

    memset(&res, 0x5a, sizeof(res));
    twilio_parse_message(status, body, len, &res);
    check_receipt(&res.receipt);
    if (!res.ok) {
        CHECK(res.receipt.status == RECEIPT_PENDING && res.receipt.error[0] != '\0');
    }
    if (res.ok)
        CHECK(status == 200);
    if (res.receipt.status == JOB_DELIVERED)
        CHECK(res.receipt.error[0] == '\0');
    memset(&again, 0xa5, sizeof(again));
    twilio_parse_message(status, body, len, &again);
    CHECK(memcmp(&res, &again, sizeof(res)) == 0);
}

/* A Call resource: the same invariants, and the TwiML of any text is well formed and bounded. */
static void
fuzz_call(long status, const char *body, size_t len)
{
    struct poll_result res, again;
    char twiml[TWILIO_TWIML_MAX + 1], *text = malloc(len + 1);

    memset(&res, 0x5a, sizeof(res));
    twilio_parse_call(status, body, len, &res);
    check_receipt(&res.receipt);
    if (!res.ok)
        CHECK(res.receipt.status == RECEIPT_PENDING && res.receipt.error[0] != '\0');
    if (res.receipt.status == JOB_UNDELIVERED)
        CHECK(res.receipt.error[0] != '\0' && res.receipt.error_code[0] != '\0');
    memset(&again, 0xa5, sizeof(again));
    twilio_parse_call(status, body, len, &again);
    CHECK(memcmp(&res, &again, sizeof(res)) == 0);
    if (text == NULL)
        abort();
    memcpy(text, body, len);
    text[len] = '\0';
    if (twilio_twiml(twiml, sizeof(twiml), text, twilio_say_language(text), 3) == 0) {
        size_t n = strlen(twiml);
        CHECK(n <= TWILIO_TWIML_MAX);
        CHECK(strncmp(twiml, "<?xml", 5) == 0 && strcmp(twiml + n - 11, "</Response>") == 0);
        /* Every < or & of the text was escaped: the only tags are ours. */
        for (const char *p = strchr(twiml, '<'); p; p = strchr(p + 1, '<'))
            CHECK(strncmp(p, "<?xml", 5) == 0 || strncmp(p, "<Response>", 10) == 0 ||
                  strncmp(p, "</Response>", 11) == 0 || strncmp(p, "<Say language=", 14) == 0 ||
                  strncmp(p, "</Say>", 6) == 0 || strncmp(p, "<Pause length=\"1\"/>", 19) == 0);
    }
    free(text);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t len;
    char *body;
    int mode;

    if (size < 1)
        return 0;
    mode = data[0] % 6;
    len = size - 1;
    if ((body = malloc(len ? len : 1)) == NULL)
        abort();
    memcpy(body, data + 1, len);
    if (mode < 4)
        fuzz_callback(mode, body, len);
    else if (mode == 4)
        fuzz_message(data[0] & 0x80 ? 404 : 200, body, len);
    else
        fuzz_call(data[0] & 0x80 ? 404 : 200, body, len);
    free(body);
    return 0;
}

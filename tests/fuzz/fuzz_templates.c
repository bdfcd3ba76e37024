/*
 * fuzz_templates.c: a template file's bytes through templates.c: the
 * checks (templates_check_text), the directory loader (OTPD_TEMPLATES_DIR:
 * a file's final newline and CRLF), and for an SMS the WebOTP line
 * (templates_bind).
 *
 * Input: byte 0 picks the kind (low 3 bits, mod 5) and, with its high bit,
 * loading through a directory; byte 1 the digits (4..10); the rest is the
 * text.  Invariants: a text that passes the checks is valid UTF-8 without
 * NUL, within its kind's size, with {code} where one is required and one
 * line for a subject; the loader takes a file exactly when its text (final
 * newline dropped, CRLF as LF) passes them, and then serves that text;
 * a passing SMS, rendered and bound, fits TEMPLATE_SMS_MAX and its last
 * line parses, by the spec's own steps, to this code (the WebOTP line
 * appended, ending with the app hash, unless the text bound it already).
 */
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuzz_common.h"
#include "templates.h"

#define DOMAIN "example.com"
#define HASH   "FA+9qCX9VSu"

/* templates.c's bounds, repeated on purpose: widening one should be a conscious edit. */
static const size_t kind_max[TEMPLATE_KINDS] = {OTP_BODY_MAX - 1, OTP_BODY_MAX - 1, 200, 4000,
                                                8000};
static char dir[64];

static int
ascii_ws(char c)
{
    return c == '\t' || c == '\n' || c == '\f' || c == '\r' || c == ' ';
}

/* The spec's "parse an origin-bound one-time code message", as far as host and code. */
static int
spec_parse(const char *msg, char *host, size_t hostlen, char *code, size_t codelen)
{
    const char *line = msg, *p, *tok;

    for (p = msg; *p; p++)
        if (*p == '\n' || *p == '\r')
            line = p + 1;
    p = line;
    if (*p++ != '@' || *p == '\0')
        return -1;
    for (tok = p; *p && !ascii_ws(*p); p++)
        ;
    if (p == tok || (size_t)(p - tok) >= hostlen)
        return -1;
    snprintf(host, hostlen, "%.*s", (int)(p - tok), tok);
    if (*p++ != ' ' || *p++ != '#')
        return -1;
    for (tok = p; *p && !ascii_ws(*p); p++)
        ;
    if (p == tok || (size_t)(p - tok) >= codelen)
        return -1;
    snprintf(code, codelen, "%.*s", (int)(p - tok), tok);
    return 0;
}

/* A passing SMS: rendered and bound, it parses to this code. */
static void
check_sms(const char *text, int digits)
{
    char code[OTP_DIGITS_MAX + 1], host[300], got[64], why[160];
    char *body = malloc(TEMPLATE_SMS_MAX), *before;
    int bound_before;

    CHECK(body != NULL);
    snprintf(code, sizeof(code), "%.*s", digits, "9081726354");
    CHECK(otp_render(body, TEMPLATE_SMS_MAX, text, code, 5, why, sizeof(why)) == 0);
    before = strdup(body);
    CHECK(before != NULL);
    bound_before =
        spec_parse(body, host, sizeof(host), got, sizeof(got)) == 0 && strcmp(got, code) == 0;
    CHECK(templates_bind(body, TEMPLATE_SMS_MAX, DOMAIN, code, HASH) == 0);
    CHECK(strlen(body) < TEMPLATE_SMS_MAX);
    CHECK(spec_parse(body, host, sizeof(host), got, sizeof(got)) == 0);
    CHECK(strcmp(got, code) == 0);
    if (bound_before) {
        CHECK(strcmp(body, before) == 0);
    } else {
        size_t n = strlen(before);
        CHECK(strncmp(body, before, n) == 0 && strncmp(body + n, "\n\n@", 3) == 0);
        CHECK(strcmp(host, DOMAIN) == 0);
        CHECK(strcmp(body + strlen(body) - 11, HASH) == 0);
    }
    free(before);
    free(body);
}

/* The text a file holds: CRLF read as LF, the final newline dropped. */
static size_t
ref_strip(const unsigned char *in, size_t len, char *out)
{
    size_t w = 0;

    for (size_t i = 0; i < len; i++)
        if (!(in[i] == '\r' && i + 1 < len && in[i + 1] == '\n'))
            out[w++] = (char)in[i];
    if (w > 0 && out[w - 1] == '\n')
        w--;
    out[w] = '\0';
    return w;
}

static void
check_dir(enum template_kind kind, const unsigned char *data, size_t len, int digits)
{
    char path[128], err[512], why[160], *want = malloc(len + 1);
    struct templates_settings s = {
        .dir = dir,
        .default_locale = "en",
        .digits = digits,
        .minutes = 5,
        .webotp_domain = DOMAIN,
        .app_hash = HASH,
    };
    struct templates *t;
    size_t wlen;
    FILE *f;

    CHECK(want != NULL);
    for (int k = 0; k < TEMPLATE_KINDS; k++) {
        snprintf(path, sizeof(path), "%s/xx/%s", dir, templates_file_name(k));
        unlink(path);
    }
    snprintf(path, sizeof(path), "%s/xx/%s", dir, templates_file_name(kind));
    CHECK((f = fopen(path, "wb")) != NULL);
    CHECK(fwrite(data, 1, len, f) == len);
    fclose(f);
    wlen = ref_strip(data, len, want);
    int ok = templates_check_text(kind, want, wlen, digits, 5, why, sizeof(why)) == 0;
    err[0] = '\0';
    t = templates_load(&s, err, sizeof(err));
    CHECK((t != NULL) == ok);
    if (t != NULL) {
        const char *matched = NULL;
        CHECK(strcmp(templates_pick(t, "xx-YY", kind, &matched), want) == 0);
        CHECK(strcmp(matched, "xx") == 0);
    } else {
        CHECK(strstr(err, path) == err); /* the error names the file */
    }
    templates_free(t);
    free(want);
}

/* The scratch directory goes when the fuzzer exits. */
static void
remove_dir(void)
{
    char path[128];

    for (int k = 0; k < TEMPLATE_KINDS; k++) {
        snprintf(path, sizeof(path), "%s/xx/%s", dir, templates_file_name(k));
        unlink(path);
    }
    snprintf(path, sizeof(path), "%s/xx", dir);
    rmdir(path);
    rmdir(dir);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char why[160];

    if (size < 2)
        return 0;
    if (dir[0] == '\0') {
        char sub[96];
        snprintf(dir, sizeof(dir), "/tmp/fuzz-templates-XXXXXX");
        CHECK(mkdtemp(dir) != NULL);
        snprintf(sub, sizeof(sub), "%s/xx", dir);
        CHECK(mkdir(sub, 0700) == 0);
        atexit(remove_dir);
    }
    enum template_kind kind = (enum template_kind)((data[0] & 7) % TEMPLATE_KINDS);
    int digits = 4 + data[1] % 7;
    const char *text = (const char *)data + 2;
    size_t len = size - 2;

    if (data[0] & 0x80) {
        check_dir(kind, data + 2, len, digits);
        return 0;
    }
    /* The text is not NUL-terminated at len: the check reads len bytes, no more. */
    char *copy = malloc(len ? len : 1);
    CHECK(copy != NULL);
    memcpy(copy, text, len);
    why[0] = '\0';
    int rc = templates_check_text(kind, copy, len, digits, 5, why, sizeof(why));
    CHECK(rc == 0 || rc == -1);
    CHECK(NUL_IN(why));
    if (rc < 0) {
        CHECK(why[0] != '\0');
    } else {
        char *s = fuzz_strndup((const unsigned char *)copy, len);
        CHECK(len > 0 && len <= kind_max[kind] && memchr(copy, '\0', len) == NULL);
        CHECK(ref_utf8_chars(s) >= 0);
        if (kind == TEMPLATE_EMAIL_SUBJECT)
            CHECK(strpbrk(s, "\r\n") == NULL && strstr(s, "\\n") == NULL);
        else
            CHECK(strstr(s, "{code}") != NULL);
        if (kind == TEMPLATE_SMS)
            check_sms(s, digits);
        free(s);
    }
    free(copy);
    return 0;
}

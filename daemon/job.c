/*
 * job.c: job payload validation.  Every rule here is part of the contract
 * in docs/protocol.md; each failure names the field so the dead letter
 * tells the web app's developer what to fix.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "job.h"
#include "otp.h"
#include "provider.h"
#include "protocol.h"

int
job_phone_valid(const char *s)
{
    size_t n;

    /* ^\+[1-9][0-9]{6,14}$ */
    if (s[0] != '+' || s[1] < '1' || s[1] > '9')
        return 0;
    for (n = 1; s[n]; n++)
        if (s[n] < '0' || s[n] > '9')
            return 0;
    return n - 1 >= 7 && n - 1 <= 15;
}

int
job_id_valid(const char *s)
{
    size_t n;

    for (n = 0; s[n]; n++) {
        char c = s[n];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '.' || c == ':' || c == '-'))
            return 0;
    }
    return n >= 1 && n <= JOB_ID_MAX;
}

static int
purpose_valid(const char *s)
{
    size_t n;

    for (n = 0; s[n]; n++)
        if (!((s[n] >= 'a' && s[n] <= 'z') || (s[n] >= '0' && s[n] <= '9') || s[n] == '_'))
            return 0;
    return n >= 1 && n <= JOB_PURPOSE_MAX;
}

void
job_clear(struct job *job)
{
    free(job->message);
    memset(job, 0, sizeof(*job));
}

/* A JSON number that is an integer in [min, max]; absent leaves *out. */
static int
get_int(const cJSON *root, const char *name, long min, long max, long *out, char *err,
        size_t errlen)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(root, name);
    double d;

    if (it == NULL)
        return 0;
    if (!cJSON_IsNumber(it)) {
        otpd_seterr(err, errlen, "field %s: must be an integer", name);
        return -1;
    }
    d = it->valuedouble;
    /* Range first: casting an out-of-range double is undefined behaviour. */
    if (d < -9007199254740992.0 || d > 9007199254740992.0 || d != (double)(long long)d) {
        otpd_seterr(err, errlen, "field %s: must be an integer", name);
        return -1;
    }
    if (d < (double)min || d > (double)max) {
        otpd_seterr(err, errlen, "field %s: %.0f is out of range %ld..%ld", name, d, min, max);
        return -1;
    }
    *out = (long)d;
    return 0;
}

/* A JSON true or false; absent leaves *out. */
static int
get_bool(const cJSON *root, const char *name, int *out, char *err, size_t errlen)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(root, name);

    if (it == NULL)
        return 0;
    if (!cJSON_IsBool(it)) {
        otpd_seterr(err, errlen, "field %s: must be true or false", name);
        return -1;
    }
    *out = cJSON_IsTrue(it);
    return 0;
}

/* A JSON string; absent leaves *out NULL. */
static int
get_str(const cJSON *root, const char *name, const char **out, char *err, size_t errlen)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(root, name);

    *out = NULL;
    if (it == NULL)
        return 0;
    if (!cJSON_IsString(it) || it->valuestring == NULL) {
        otpd_seterr(err, errlen, "field %s: must be a string", name);
        return -1;
    }
    *out = it->valuestring;
    return 0;
}

static const char *const channel_names[JOB_CHANNELS] = {"sms", "email", "voice"};

const char *
job_channel_name(int channel)
{
    return channel >= 0 && channel < JOB_CHANNELS ? channel_names[channel] : "sms";
}

int
job_channel_parse(const char *s)
{
    for (int c = 0; c < JOB_CHANNELS; c++)
        if (strcmp(s, channel_names[c]) == 0)
            return c;
    return -1;
}

/*
 * A BCP 47 language tag as otpd takes it (RFC 5646 section 2.1, without
 * grandfathered tags): a 2-3 letter language, then subtags of 1-8 letters
 * or digits joined by "-".  Normalised as section 2.1.1 recommends:
 * language lower case, a 4-letter script title case, a 2-letter region
 * upper case ("PT-br" -> "pt-BR", "zh-hant-tw" -> "zh-Hant-TW").
 */
int
job_locale_normalize(const char *in, char *out, size_t outlen)
{
    size_t n = strlen(in), i = 0, len = 0;
    int first = 1;

    if (n == 0 || n >= outlen || n > JOB_LOCALE_MAX)
        return -1;
    while (i < n) {
        size_t start = i;
        while (i < n && in[i] != '-' && in[i] != '_')
            i++;
        len = i - start;
        if (len < 1 || len > 8 || (first && (len < 2 || len > 3)))
            return -1;
        for (size_t k = start; k < i; k++) {
            char c = in[k];
            int alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
            if (!alpha && !(c >= '0' && c <= '9' && !first))
                return -1;
            /* Upper case: a region's two letters, a script's first; the rest lower. */
            int upper = !first && (len == 2 || (len == 4 && k == start));
            if (upper && c >= 'a' && c <= 'z')
                c = (char)(c - 'a' + 'A');
            else if (!upper && c >= 'A' && c <= 'Z')
                c = (char)(c - 'A' + 'a');
            out[k] = c;
        }
        if (i < n) {
            out[i] = '-';
            if (++i == n)
                return -1; /* a trailing "-" */
        }
        first = 0;
    }
    out[n] = '\0';
    return 0;
}

int
job_email_normalize(const char *in, char *out, size_t outlen)
{
    size_t n;

    while (*in == ' ' || *in == '\t' || *in == '\r' || *in == '\n')
        in++;
    n = strlen(in);
    while (n > 0 &&
           (in[n - 1] == ' ' || in[n - 1] == '\t' || in[n - 1] == '\r' || in[n - 1] == '\n'))
        n--;
    if (n >= outlen)
        return -1;
    for (size_t i = 0; i < n; i++)
        out[i] = (in[i] >= 'A' && in[i] <= 'Z') ? (char)(in[i] - 'A' + 'a') : in[i];
    out[n] = '\0';
    return 0;
}

/* RFC 5322 atext, the characters of a dot-atom. */
static int
atext(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || strchr("!#$%&'*+-/=?^_`{|}~", c);
}

int
job_email_valid(const char *s)
{
    const char *at = strchr(s, '@'), *p;
    size_t local, label = 0;
    int labels = 1;

    if (at == NULL || strchr(at + 1, '@') != NULL || strlen(s) > JOB_EMAIL_MAX)
        return 0;
    local = (size_t)(at - s);
    if (local == 0 || local > 64 || s[0] == '.' || at[-1] == '.' || at[1] == '\0')
        return 0;
    for (p = s; p < at; p++)
        if (!(atext(*p) || (*p == '.' && p[1] != '.')))
            return 0;
    for (p = at + 1; *p; p++) {
        if (*p == '.') {
            if (label == 0 || p[-1] == '-' || p[1] == '\0')
                return 0;
            label = 0;
            labels++;
        } else if ((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
                   (*p == '-' && label > 0)) {
            if (++label > 63)
                return 0;
        } else {
            return 0;
        }
    }
    return labels >= 2 && p[-1] != '-';
}

/* to, by the job's channel: an E.164 number, or an e-mail address (normalized). */
static int
job_recipient(struct job *job, const cJSON *root, char *err, size_t errlen)
{
    const char *s, *ch;

    if (get_str(root, "channel", &ch, err, errlen) < 0)
        return -1;
    job->channel = ch != NULL ? job_channel_parse(ch) : JOB_CHANNEL_SMS;
    if (job->channel < 0) {
        otpd_seterr(err, errlen, "field channel: must be \"sms\", \"voice\" or \"email\"");
        return -1;
    }
    if (get_str(root, "to", &s, err, errlen) < 0)
        return -1;
    if (s == NULL || *s == '\0') {
        otpd_seterr(err, errlen,
                    job->channel == JOB_CHANNEL_EMAIL
                        ? "field to: missing (the recipient's e-mail address)"
                        : "field to: missing (the recipient, E.164 like +14155552671)");
        return -1;
    }
    if (job->channel == JOB_CHANNEL_EMAIL) {
        if (job_email_normalize(s, job->to, sizeof(job->to)) < 0 || !job_email_valid(job->to)) {
            otpd_seterr(err, errlen,
                        "field to: not an e-mail address (local@domain.example, "
                        "at most 254 characters)");
            return -1;
        }
        return 0;
    }
    if (!job_phone_valid(s)) {
        otpd_seterr(err, errlen,
                    "field to: not an E.164 number (+ then 7 to 15 digits, no spaces)");
        return -1;
    }
    strcpy(job->to, s);
    return 0;
}

/* locale and app_hash: how the text is written. */
static int
job_language(struct job *job, const cJSON *root, char *err, size_t errlen)
{
    const char *s;

    if (get_str(root, "locale", &s, err, errlen) < 0)
        return -1;
    if (s != NULL && job_locale_normalize(s, job->locale, sizeof(job->locale)) < 0) {
        otpd_seterr(err, errlen,
                    "field locale: not a BCP 47 language tag such as \"en\", \"pt-BR\" or "
                    "\"zh-Hant\" (at most %d characters)",
                    JOB_LOCALE_MAX);
        return -1;
    }
    if (get_str(root, "app_hash", &s, err, errlen) < 0)
        return -1;
    if (s != NULL) {
        /* Android's SMS Retriever hash: 11 characters of base64. */
        if (strlen(s) != 11 || strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                         "0123456789+/") != 11) {
            otpd_seterr(err, errlen, "field app_hash: must be Android's 11-character app hash");
            return -1;
        }
        strcpy(job->app_hash, s);
    }
    return 0;
}

/*
 * fallback (channels to try next), fallback_email (where an "email" one
 * goes), and what otpd itself writes into a fallback job: fallback_of and
 * code_for (the number whose code of record it delivers).
 */
static int
job_fallback(struct job *job, const cJSON *root, char *err, size_t errlen)
{
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(root, "fallback"), *it;
    const char *s;

    if (list != NULL && !cJSON_IsArray(list)) {
        otpd_seterr(err, errlen, "field fallback: must be a list of channels, e.g. [\"voice\"]");
        return -1;
    }
    cJSON_ArrayForEach(it, list)
    {
        int c = cJSON_IsString(it) ? job_channel_parse(it->valuestring) : -1;
        if (c < 0 || c == job->channel || job->nfallback == JOB_FALLBACK_MAX ||
            (job->nfallback > 0 && job->fallback[0] == c)) {
            otpd_seterr(err, errlen,
                        "field fallback: at most %d channels, each \"sms\", \"voice\" or "
                        "\"email\", none twice and none the job's own",
                        JOB_FALLBACK_MAX);
            return -1;
        }
        job->fallback[job->nfallback++] = c;
    }
    if (get_str(root, "fallback_email", &s, err, errlen) < 0)
        return -1;
    if (s != NULL &&
        (job_email_normalize(s, job->fallback_email, sizeof(job->fallback_email)) < 0 ||
         !job_email_valid(job->fallback_email))) {
        otpd_seterr(err, errlen, "field fallback_email: not an e-mail address");
        return -1;
    }
    for (int i = 0; i < job->nfallback; i++)
        if (job->fallback[i] == JOB_CHANNEL_EMAIL && job->fallback_email[0] == '\0') {
            otpd_seterr(err, errlen, "field fallback: \"email\" needs fallback_email");
            return -1;
        }
    if (job->nfallback > 0 && job->channel == JOB_CHANNEL_EMAIL) {
        otpd_seterr(err, errlen, "field fallback: an e-mail job has no fallback (no number)");
        return -1;
    }
    if (get_str(root, "fallback_of", &s, err, errlen) < 0)
        return -1;
    if (s != NULL) {
        if (!job_id_valid(s)) {
            otpd_seterr(err, errlen, "field fallback_of: not a job id");
            return -1;
        }
        strcpy(job->fallback_of, s);
    }
    if (get_str(root, "code_for", &s, err, errlen) < 0)
        return -1;
    if (s != NULL) {
        if (!job_phone_valid(s) || job->channel != JOB_CHANNEL_EMAIL) {
            otpd_seterr(err, errlen, "field code_for: an E.164 number, for an e-mail job only");
            return -1;
        }
        strcpy(job->code_for, s);
    }
    return 0;
}

/* ttl, digits, max_attempts (the defaults unless given) and fresh. */
static int
job_numbers(struct job *job, const cJSON *root, const struct job_defaults *defs, char *err,
            size_t errlen)
{
    long v;

    v = defs->ttl;
    if (get_int(root, "ttl", 30, 3600, &v, err, errlen) < 0)
        return -1;
    job->ttl = (int)v;
    v = defs->digits;
    if (get_int(root, "digits", 4, OTP_DIGITS_MAX, &v, err, errlen) < 0)
        return -1;
    job->digits = (int)v;
    v = defs->max_attempts;
    if (get_int(root, "max_attempts", 1, 20, &v, err, errlen) < 0)
        return -1;
    job->max_attempts = (int)v;

    return get_bool(root, "fresh", &job->fresh, err, errlen);
}

/* created_ms and the deadline it gives. */
static int
job_created(struct job *job, const cJSON *root, const struct job_defaults *defs, int64_t now_ms,
            char *err, size_t errlen)
{
    /* created_ms is the client's clock; a missing one means "now". */
    long long created = now_ms;
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(root, "created_ms");
    if (c != NULL) {
        if (!cJSON_IsNumber(c) || c->valuedouble < 0 || c->valuedouble > 1e15 ||
            c->valuedouble != (double)(long long)c->valuedouble) {
            otpd_seterr(err, errlen, "field created_ms: must be epoch milliseconds (an integer)");
            return -1;
        }
        created = (long long)c->valuedouble;
    }
    /*
     * The web host's clock, not ours: a little ahead is skew and the
     * lifetime counts from now, so no code outlives its ttl; far ahead is a
     * broken clock or a forged job that would keep a code alive, and block
     * the number's later codes, for as long as it says.
     */
    if (created > now_ms + defs->max_skew_ms) {
        otpd_seterr(err, errlen,
                    "field created_ms: %lld s ahead of this host's clock (more than "
                    "OTPD_MAX_CLOCK_SKEW_S allows): check the web host's clock (NTP)",
                    (created - now_ms) / 1000);
        return -1;
    }
    if (created > now_ms)
        created = now_ms;
    job->created_ms = created;
    job->expires_ms = created + (int64_t)job->ttl * 1000;
    return 0;
}

static int
job_fill(struct job *job, const cJSON *root, const struct job_defaults *defs, int64_t now_ms,
         char *err, size_t errlen)
{
    const char *s;
    long v;

    if (get_str(root, "id", &s, err, errlen) < 0)
        return -1;
    if (s != NULL) {
        if (!job_id_valid(s)) {
            otpd_seterr(err, errlen, "field id: must be 1 to 64 of A-Z a-z 0-9 _ . : -");
            return -1;
        }
        strcpy(job->id, s);
    }
    v = 1;
    if (get_int(root, "v", 0, 1000000, &v, err, errlen) < 0)
        return -1;
    if (v != 1) {
        otpd_seterr(err, errlen, "field v: unsupported contract version %ld (this daemon speaks 1)",
                    v);
        return -1;
    }
    if (job_recipient(job, root, err, errlen) < 0)
        return -1;
    if (get_str(root, "purpose", &s, err, errlen) < 0)
        return -1;
    if (s != NULL && !purpose_valid(s)) {
        otpd_seterr(err, errlen, "field purpose: must be 1 to 32 of a-z 0-9 _");
        return -1;
    }
    strcpy(job->purpose, s ? s : "login");

    if (job_numbers(job, root, defs, err, errlen) < 0)
        return -1;
    if (get_str(root, "provider", &s, err, errlen) < 0)
        return -1;
    if (s != NULL) {
        if (!provider_registered(s)) {
            char names[128];
            otpd_seterr(err, errlen, "field provider: must be one of %s",
                        provider_registered_names(names, sizeof(names)));
            return -1;
        }
        strcpy(job->provider, s);
    }

    if (job_created(job, root, defs, now_ms, err, errlen) < 0)
        return -1;
    if (job_language(job, root, err, errlen) < 0 || job_fallback(job, root, err, errlen) < 0)
        return -1;

    if (get_str(root, "message", &s, err, errlen) < 0)
        return -1;
    if (s != NULL) {
        char why[128];
        if (otp_template_check(s, job->digits, (job->ttl + 59) / 60, why, sizeof(why)) < 0) {
            otpd_seterr(err, errlen, "field message: %s", why);
            return -1;
        }
        if ((job->message = strdup(s)) == NULL) {
            otpd_seterr(err, errlen, "out of memory");
            return -1;
        }
    }
    return 0;
}

int
job_parse(struct job *job, const char *payload, size_t len, const struct job_defaults *defs,
          int64_t now_ms, char *err, size_t errlen)
{
    cJSON *root;
    const char *end = NULL;
    int rc;

    memset(job, 0, sizeof(*job));
    if (payload == NULL) {
        otpd_seterr(err, errlen, "entry has no \"job\" field");
        return -1;
    }
    if (len > JOB_PAYLOAD_MAX) {
        otpd_seterr(err, errlen, "payload is %zu bytes, over the %d byte limit", len,
                    JOB_PAYLOAD_MAX);
        return -1;
    }
    /* The whole payload must be one JSON value: no trailing bytes, no NULs. */
    if (memchr(payload, '\0', len) != NULL) {
        otpd_seterr(err, errlen, "payload is not valid JSON (contains a NUL byte)");
        return -1;
    }
    root = cJSON_ParseWithLengthOpts(payload, len, &end, 0);
    if (root != NULL) {
        while (end < payload + len && (*end == ' ' || *end == '\t' || *end == '\n' || *end == '\r'))
            end++;
        if (end != payload + len) {
            cJSON_Delete(root);
            root = NULL;
        }
    }
    if (root == NULL) {
        otpd_seterr(err, errlen, "payload is not valid JSON");
        return -1;
    }
    if (!cJSON_IsObject(root)) {
        otpd_seterr(err, errlen, "payload is JSON but not an object");
        cJSON_Delete(root);
        return -1;
    }
    rc = job_fill(job, root, defs, now_ms, err, errlen);
    cJSON_Delete(root);
    return rc;
}

const char *
job_status_name(enum job_status st)
{
    static const char *names[] = {
        [JOB_QUEUED] = PROTO_STATUS_QUEUED,       [JOB_SENDING] = PROTO_STATUS_SENDING,
        [JOB_RETRYING] = PROTO_STATUS_RETRYING,   [JOB_SENT] = PROTO_STATUS_SENT,
        [JOB_DELIVERED] = PROTO_STATUS_DELIVERED, [JOB_UNDELIVERED] = PROTO_STATUS_UNDELIVERED,
        [JOB_FAILED] = PROTO_STATUS_FAILED,       [JOB_EXPIRED] = PROTO_STATUS_EXPIRED,
        [JOB_REJECTED] = PROTO_STATUS_REJECTED,   [JOB_RATE_LIMITED] = PROTO_STATUS_RATE_LIMITED,
        [JOB_DUPLICATE] = PROTO_STATUS_DUPLICATE,
    };
    if ((unsigned)st < sizeof(names) / sizeof(names[0]) && names[st])
        return names[st];
    return "unknown";
}

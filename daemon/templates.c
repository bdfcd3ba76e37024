/*
 * templates.c: the texts otpd sends, by locale and kind, and the SMS's
 * WebOTP line.
 *
 * The set is built once per configuration (config_finish) in three layers,
 * each overriding the one before text by text:
 *   1. the shipped texts, python/otpd/data/templates/<locale>/<file>,
 *      compiled in (cmake/embed_templates.cmake), so the daemon and the
 *      Python package use the very same words;
 *   2. OTPD_TEMPLATES_DIR/<locale>/<file>, the same layout: the site's own
 *      wording and locales;
 *   3. OTPD_TEMPLATE and OTPD_EMAIL_*, for the default locale, when they
 *      differ from their defaults (config.c decides), so an operator's
 *      customised text stays in force.
 * Every text is checked as it is added, and the default locale must then
 * have all five, so a lookup always ends with a text.  Nothing here sends,
 * keeps a job or logs: doubts become warnings that config.c hands on.
 *
 * A file's final newline is not part of its text, and CRLF line ends read
 * as LF (python/otpd/data/templates/README.md).
 */
#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "job.h"
#include "segments.h"
#include "templates.h"

enum tpl_source { TPL_NONE, TPL_SHIPPED, TPL_DIR, TPL_SETTINGS };

struct tpl_locale {
    char tag[JOB_LOCALE_MAX + 1];
    char *text[TEMPLATE_KINDS];
    char *origin[TEMPLATE_KINDS]; /* the file or setting it came from, for errors */
    enum tpl_source source[TEMPLATE_KINDS];
    /* Its SMS as the table shows it: whose text, and what it costs. */
    const char *sms_from;
    struct sms_size sms;
    int sms_sized;
};

struct templates {
    struct tpl_locale *loc;
    size_t n, cap;
    size_t deflt; /* index of the default locale */
    char domain[TEMPLATE_HOST_MAX + 1];
    char app_hash[TEMPLATE_APP_HASH_LEN + 1];
    char **warnings;
    size_t nwarnings;
};

static const char *const tpl_files[TEMPLATE_KINDS] = {
    "sms.txt", "voice.txt", "email_subject.txt", "email.txt", "email.html",
};
/* The settings of the default locale's texts (voice has none). */
static const char *const tpl_settings[TEMPLATE_KINDS] = {
    "OTPD_TEMPLATE", NULL, "OTPD_EMAIL_SUBJECT", "OTPD_EMAIL_TEXT", "OTPD_EMAIL_HTML",
};
/* Bytes a text may take: OTPD_TEMPLATE's and OTPD_EMAIL_*'s bounds in config.c. */
static const size_t tpl_max[TEMPLATE_KINDS] = {OTP_BODY_MAX - 1, OTP_BODY_MAX - 1, 200, 4000, 8000};

#define TPL_FILE_MAX     8192         /* read at most this much of a file: any text fits */
#define TPL_SAMPLE_CODE  "1234567890" /* the longest code (OTP_DIGITS_MAX) */
#define TPL_SAMPLE_MINS  10
#define TPL_SHIPPED_PATH "python/otpd/data/templates"

static char *tpl_strdup(const char *text, size_t len);
static void tpl_warn(struct templates *t, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static struct tpl_locale *tpl_find(const struct templates *t, const char *tag);
static struct tpl_locale *tpl_locale(struct templates *t, const char *tag);
static int tpl_set(struct templates *t, const char *tag, enum template_kind kind, const char *text,
                   size_t len, const char *origin, enum tpl_source src,
                   const struct templates_settings *s, char *err, size_t errlen);
static size_t tpl_file_text(char *text, size_t len);
static int tpl_load_shipped(struct templates *t, const struct templates_settings *s, char *err,
                            size_t errlen);
static int tpl_load_dir(struct templates *t, const struct templates_settings *s, char *err,
                        size_t errlen);
static int tpl_load_locale_dir(struct templates *t, const char *path, const char *tag,
                               const struct templates_settings *s, char *err, size_t errlen);
static int tpl_path(char *out, size_t len, const char *dir, const char *name, char *err,
                    size_t errlen);
static int tpl_visible(const struct dirent *e);
static int tpl_read_file(const char *path, char **out, size_t *len, char *why, size_t whylen);
static int tpl_finish(struct templates *t, const struct templates_settings *s, char *err,
                      size_t errlen);
static void tpl_size_sms(struct templates *t, struct tpl_locale *l);
static int tpl_chain(const char *tag, char out[][JOB_LOCALE_MAX + 1], int max);
static int tpl_last_line_binds(const char *body, const char *code);
static int tpl_is_space(char c);

/* len bytes of text, which need not be NUL-terminated, as a string (strndup may look further). */
static char *
tpl_strdup(const char *text, size_t len)
{
    char *s = malloc(len + 1);

    if (s != NULL) {
        memcpy(s, text, len);
        s[len] = '\0';
    }
    return s;
}

/* --- names ------------------------------------------------------------------ */

const char *
templates_file_name(enum template_kind kind)
{
    return kind >= 0 && kind < TEMPLATE_KINDS ? tpl_files[kind] : "?";
}

int
templates_kind_of(const char *file_name)
{
    for (int k = 0; k < TEMPLATE_KINDS; k++)
        if (strcmp(file_name, tpl_files[k]) == 0)
            return k;
    return -1;
}

/* --- checks ----------------------------------------------------------------- */

int
templates_check_text(enum template_kind kind, const char *text, size_t len, int digits, int minutes,
                     char *why, size_t whylen)
{
    char *s;
    int rc = -1;

    if (memchr(text, '\0', len) != NULL) {
        otpd_seterr(why, whylen, "contains a NUL byte");
        return -1;
    }
    if (len == 0) {
        otpd_seterr(why, whylen, "is empty");
        return -1;
    }
    if (len > tpl_max[kind]) {
        otpd_seterr(why, whylen, "%zu bytes, over the %zu this text may take", len, tpl_max[kind]);
        return -1;
    }
    if ((s = tpl_strdup(text, len)) == NULL) {
        otpd_seterr(why, whylen, "out of memory");
        return -1;
    }
    if (otp_utf8_chars(s) < 0) {
        otpd_seterr(why, whylen, "not valid UTF-8");
    } else if (kind != TEMPLATE_EMAIL_SUBJECT && strstr(s, "{code}") == NULL) {
        otpd_seterr(why, whylen, "must contain {code}");
    } else if (kind == TEMPLATE_EMAIL_SUBJECT && (strpbrk(s, "\r\n") || strstr(s, "\\n"))) {
        /* otp_render_email turns "\n" into CRLF: in a header, that starts another one. */
        otpd_seterr(why, whylen, "must be one line");
    } else if (kind == TEMPLATE_SMS || kind == TEMPLATE_VOICE) {
        /* A call reads the code out as "1, 2, 3": three characters a digit. */
        rc = otp_template_check(s, kind == TEMPLATE_VOICE ? 3 * digits - 2 : digits, minutes, why,
                                whylen);
    } else {
        rc = 0;
    }
    free(s);
    return rc;
}

int
templates_host_valid(const char *host, char *why, size_t whylen)
{
    size_t n = strlen(host), label = 0;
    int numeric = 1;

    if (n == 0 || n > TEMPLATE_HOST_MAX) {
        otpd_seterr(why, whylen, "must be a host name of 1 to %d characters", TEMPLATE_HOST_MAX);
        return 0;
    }
    if (strstr(host, "://") || strchr(host, '/')) {
        otpd_seterr(why, whylen,
                    "a host name only, without scheme or path (example.com, not "
                    "https://example.com/)");
        return 0;
    }
    if (strchr(host, ':')) {
        /* The spec's origin is ("https", host, null): no port can be said. */
        otpd_seterr(why, whylen, "no port: the code is bound to https://host on its default port");
        return 0;
    }
    for (const char *p = host; *p; p++) {
        char c = *p;
        if (c == '.') {
            if (label == 0 || p[-1] == '-') {
                otpd_seterr(why, whylen, "an empty label, or one ending with \"-\"");
                return 0;
            }
            label = 0;
            numeric = 1;
        } else if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-') {
            if (label == 0 && c == '-') {
                otpd_seterr(why, whylen, "a label starts with \"-\"");
                return 0;
            }
            if (++label > 63) {
                otpd_seterr(why, whylen, "a label longer than 63 characters");
                return 0;
            }
            numeric &= c >= '0' && c <= '9';
        } else if (c >= 'A' && c <= 'Z') {
            otpd_seterr(why, whylen, "must be lower case (example.com)");
            return 0;
        } else {
            otpd_seterr(why, whylen,
                        "only letters, digits, \"-\" and \".\" (an internationalised name in "
                        "its xn-- form)");
            return 0;
        }
    }
    if (label == 0 || host[n - 1] == '-') {
        otpd_seterr(why, whylen, "ends with \".\" or \"-\"");
        return 0;
    }
    if (numeric) {
        otpd_seterr(why, whylen,
                    "an IP address or a numeric top label: a site's host name is needed");
        return 0;
    }
    return 1;
}

int
templates_app_hash_valid(const char *hash)
{
    return strlen(hash) == TEMPLATE_APP_HASH_LEN &&
           strspn(hash, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/") ==
               TEMPLATE_APP_HASH_LEN;
}

/* --- building the set ---------------------------------------------------------- */

static void
tpl_warn(struct templates *t, const char *fmt, ...)
{
    char buf[512], **w;
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if ((w = realloc(t->warnings, (t->nwarnings + 1) * sizeof(*w))) == NULL)
        return;
    t->warnings = w;
    if ((w[t->nwarnings] = strdup(buf)) != NULL)
        t->nwarnings++;
}

/* The locale of this tag, or NULL. */
static struct tpl_locale *
tpl_find(const struct templates *t, const char *tag)
{
    for (size_t i = 0; i < t->n; i++)
        if (strcasecmp(t->loc[i].tag, tag) == 0)
            return &t->loc[i];
    return NULL;
}

/* The locale of this (normalised) tag, added if new; NULL if out of memory. */
static struct tpl_locale *
tpl_locale(struct templates *t, const char *tag)
{
    struct tpl_locale *l = tpl_find(t, tag);

    if (l != NULL)
        return l;
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 16;
        if ((l = realloc(t->loc, cap * sizeof(*l))) == NULL)
            return NULL;
        t->loc = l;
        t->cap = cap;
    }
    l = &t->loc[t->n++];
    memset(l, 0, sizeof(*l));
    snprintf(l->tag, sizeof(l->tag), "%s", tag);
    return l;
}

/* Check one text and make it the locale's, replacing any before it. */
static int
tpl_set(struct templates *t, const char *tag, enum template_kind kind, const char *text, size_t len,
        const char *origin, enum tpl_source src, const struct templates_settings *s, char *err,
        size_t errlen)
{
    struct tpl_locale *l;
    char why[160], *copy, *orig;

    if (templates_check_text(kind, text, len, s->digits, s->minutes, why, sizeof(why)) < 0) {
        otpd_seterr(err, errlen, "%s: %s", origin, why);
        return -1;
    }
    if ((l = tpl_locale(t, tag)) == NULL || (copy = tpl_strdup(text, len)) == NULL) {
        otpd_seterr(err, errlen, "%s: out of memory", origin);
        return -1;
    }
    if ((orig = strdup(origin)) == NULL) {
        free(copy);
        otpd_seterr(err, errlen, "%s: out of memory", origin);
        return -1;
    }
    free(l->text[kind]);
    free(l->origin[kind]);
    l->text[kind] = copy;
    l->origin[kind] = orig;
    l->source[kind] = src;
    return 0;
}

/* A file's text in place: CRLF read as LF, the final newline dropped.  Returns its length. */
static size_t
tpl_file_text(char *text, size_t len)
{
    size_t w = 0;

    for (size_t r = 0; r < len; r++)
        if (!(text[r] == '\r' && r + 1 < len && text[r + 1] == '\n'))
            text[w++] = text[r];
    if (w > 0 && text[w - 1] == '\n')
        w--;
    text[w] = '\0';
    return w;
}

static int
tpl_load_shipped(struct templates *t, const struct templates_settings *s, char *err, size_t errlen)
{
    char origin[128];

    for (size_t i = 0; i < templates_builtin_count; i++) {
        const struct template_builtin *b = &templates_builtin[i];
        char *text = strdup(b->text);
        size_t len;
        int rc;

        if (text == NULL) {
            otpd_seterr(err, errlen, "templates: out of memory");
            return -1;
        }
        len = tpl_file_text(text, strlen(text));
        snprintf(origin, sizeof(origin), "%s/%s/%s (built in)", TPL_SHIPPED_PATH, b->locale,
                 tpl_files[b->kind]);
        rc = tpl_set(t, b->locale, b->kind, text, len, origin, TPL_SHIPPED, s, err, errlen);
        free(text);
        if (rc < 0)
            return -1;
    }
    return 0;
}

/* The whole file, NUL-terminated, if it is a regular file of at most TPL_FILE_MAX bytes. */
static int
tpl_read_file(const char *path, char **out, size_t *len, char *why, size_t whylen)
{
    FILE *f = fopen(path, "rb");
    struct stat st;
    char *buf = NULL;
    size_t n;
    int rc = -1;

    if (f == NULL) {
        otpd_seterr(why, whylen, "%s", strerror(errno));
        return -1;
    }
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        otpd_seterr(why, whylen, "not a regular file");
        goto out;
    }
    if ((buf = malloc(TPL_FILE_MAX + 2)) == NULL) {
        otpd_seterr(why, whylen, "out of memory");
        goto out;
    }
    n = fread(buf, 1, TPL_FILE_MAX + 1, f);
    if (ferror(f)) {
        otpd_seterr(why, whylen, "read error");
        goto out;
    }
    if (n > TPL_FILE_MAX) {
        otpd_seterr(why, whylen, "larger than %d bytes", TPL_FILE_MAX);
        goto out;
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    buf = NULL;
    rc = 0;
out:
    free(buf);
    fclose(f);
    return rc;
}

/* dir "/" name into out; -1 with the reason if it does not fit. */
static int
tpl_path(char *out, size_t len, const char *dir, const char *name, char *err, size_t errlen)
{
    int n = snprintf(out, len, "%s/%s", dir, name);

    if (n < 0 || (size_t)n >= len) {
        otpd_seterr(err, errlen, "OTPD_TEMPLATES_DIR: %s/%s: path too long", dir, name);
        return -1;
    }
    return 0;
}

/* Hidden entries (".", "..", editors' ".x.swp") are never looked at. */
static int
tpl_visible(const struct dirent *e)
{
    return e->d_name[0] != '.';
}

static int
tpl_load_locale_dir(struct templates *t, const char *path, const char *tag,
                    const struct templates_settings *s, char *err, size_t errlen)
{
    struct dirent **names = NULL;
    char file[4096], why[160];
    int n, rc = 0;

    if ((n = scandir(path, &names, tpl_visible, alphasort)) < 0) {
        otpd_seterr(err, errlen, "OTPD_TEMPLATES_DIR: %s: %s", path, strerror(errno));
        return -1;
    }
    for (int i = 0; i < n && rc == 0; i++) {
        const char *name = names[i]->d_name;
        int kind = templates_kind_of(name);
        const struct tpl_locale *at;
        char *text = NULL;
        size_t len = 0;

        if (tpl_path(file, sizeof(file), path, name, err, errlen) < 0) {
            rc = -1;
            break;
        }
        if (kind < 0) {
            tpl_warn(t, "templates: %s: not a template file name (%s, %s, %s, %s or %s); ignored",
                     file, tpl_files[0], tpl_files[1], tpl_files[2], tpl_files[3], tpl_files[4]);
            continue;
        }
        /* Two directories for one tag ("pt-BR", "pt_br"): which wins would be chance. */
        at = tpl_find(t, tag);
        if (at != NULL && at->source[kind] == TPL_DIR) {
            otpd_seterr(err, errlen, "%s: %s already gives %s's %s", file, at->origin[kind], tag,
                        name);
            rc = -1;
            break;
        }
        if (tpl_read_file(file, &text, &len, why, sizeof(why)) < 0) {
            otpd_seterr(err, errlen, "%s: %s", file, why);
            rc = -1;
            break;
        }
        len = tpl_file_text(text, len);
        rc = tpl_set(t, tag, (enum template_kind)kind, text, len, file, TPL_DIR, s, err, errlen);
        free(text);
    }
    for (int i = 0; i < n; i++)
        free(names[i]);
    free(names);
    return rc;
}

static int
tpl_load_dir(struct templates *t, const struct templates_settings *s, char *err, size_t errlen)
{
    struct dirent **names = NULL;
    char path[4096], tag[JOB_LOCALE_MAX + 1];
    int n, rc = 0;

    if ((n = scandir(s->dir, &names, tpl_visible, alphasort)) < 0) {
        otpd_seterr(err, errlen, "OTPD_TEMPLATES_DIR: %s: %s", s->dir, strerror(errno));
        return -1;
    }
    for (int i = 0; i < n && rc == 0; i++) {
        const char *name = names[i]->d_name;
        struct stat st;

        if (tpl_path(path, sizeof(path), s->dir, name, err, errlen) < 0) {
            rc = -1;
            break;
        }
        if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode)) {
            /* A README is fine; a template file here was meant for a locale. */
            if (templates_kind_of(name) >= 0)
                tpl_warn(t,
                         "templates: %s: outside any locale directory, so not used; move it to "
                         "%s/%s/",
                         path, s->dir, s->default_locale);
            continue;
        }
        if (job_locale_normalize(name, tag, sizeof(tag)) < 0) {
            tpl_warn(t,
                     "templates: %s: not a BCP 47 language tag (en, pt-BR, zh-Hant); "
                     "directory ignored",
                     path);
            continue;
        }
        rc = tpl_load_locale_dir(t, path, tag, s, err, errlen);
    }
    for (int i = 0; i < n; i++)
        free(names[i]);
    free(names);
    return rc;
}

/* What one locale's SMS costs, with the longest code and the WebOTP line. */
static void
tpl_size_sms(struct templates *t, struct tpl_locale *l)
{
    char body[TEMPLATE_SMS_MAX], why[128];
    const char *tmpl = templates_pick(t, l->tag, TEMPLATE_SMS, &l->sms_from);

    l->sms_sized =
        otp_render(body, sizeof(body), tmpl, TPL_SAMPLE_CODE, TPL_SAMPLE_MINS, why, sizeof(why)) ==
            0 &&
        templates_bind(body, sizeof(body), t->domain, TPL_SAMPLE_CODE, t->app_hash) == 0 &&
        segments_count(body, strlen(body), &l->sms) == 0;
    if (strcmp(l->sms_from, l->tag) != 0)
        return; /* judged with the locale whose text it is */
    if (!l->sms_sized)
        tpl_warn(t,
                 "templates: %s: with a %d-digit code the SMS renders over %d characters, so a "
                 "job asking for that many digits in locale %s is rejected",
                 l->origin[TEMPLATE_SMS], OTP_DIGITS_MAX, JOB_MESSAGE_CHARS, l->tag);
    else if (l->sms.segments > 1)
        tpl_warn(t,
                 "templates: locale %s: the SMS takes %d segments (%s, %zu units) with a "
                 "%d-digit code%s, so each code costs %d messages; shorten %s%s%s",
                 l->tag, l->sms.segments, segments_encoding_name(l->sms.encoding), l->sms.units,
                 OTP_DIGITS_MAX, *t->domain ? " and the WebOTP line" : "", l->sms.segments,
                 l->source[TEMPLATE_SMS] == TPL_SHIPPED ? "it with OTPD_TEMPLATES_DIR/" : "",
                 l->source[TEMPLATE_SMS] == TPL_SHIPPED ? l->tag : l->origin[TEMPLATE_SMS],
                 l->source[TEMPLATE_SMS] == TPL_SHIPPED ? "/sms.txt" : "");
}

/* The default locale, complete; every locale's SMS sized. */
static int
tpl_finish(struct templates *t, const struct templates_settings *s, char *err, size_t errlen)
{
    char tag[JOB_LOCALE_MAX + 1];
    const struct tpl_locale *d = NULL;

    if (job_locale_normalize(s->default_locale, tag, sizeof(tag)) < 0 ||
        (d = tpl_find(t, tag)) == NULL) {
        char have[512] = "";
        size_t w = 0;
        for (size_t i = 0; i < t->n && w < sizeof(have); i++)
            w += (size_t)snprintf(have + w, sizeof(have) - w, "%s%s", i ? " " : "", t->loc[i].tag);
        otpd_seterr(err, errlen,
                    "OTPD_DEFAULT_LOCALE: no templates for \"%s\" (there are: %s); add a "
                    "directory of that name to OTPD_TEMPLATES_DIR",
                    s->default_locale, have);
        return -1;
    }
    t->deflt = (size_t)(d - t->loc);
    for (int k = 0; k < TEMPLATE_KINDS; k++)
        if (d->text[k] == NULL) {
            otpd_seterr(err, errlen,
                        "OTPD_DEFAULT_LOCALE: locale %s has no %s; every other locale falls "
                        "back to the default one, so it needs all of %s, %s, %s, %s and %s",
                        d->tag, tpl_files[k], tpl_files[0], tpl_files[1], tpl_files[2],
                        tpl_files[3], tpl_files[4]);
            return -1;
        }
    for (size_t i = 0; i < t->n; i++)
        tpl_size_sms(t, &t->loc[i]);
    return 0;
}

struct templates *
templates_load(const struct templates_settings *s, char *err, size_t errlen)
{
    struct templates *t = calloc(1, sizeof(*t));
    char tag[JOB_LOCALE_MAX + 1];

    if (t == NULL) {
        otpd_seterr(err, errlen, "templates: out of memory");
        return NULL;
    }
    if (s->webotp_domain && *s->webotp_domain) {
        char why[160];
        if (!templates_host_valid(s->webotp_domain, why, sizeof(why))) {
            otpd_seterr(err, errlen, "OTPD_WEBOTP_DOMAIN: \"%s\": %s", s->webotp_domain, why);
            goto fail;
        }
        snprintf(t->domain, sizeof(t->domain), "%s", s->webotp_domain);
    }
    if (s->app_hash && *s->app_hash) {
        if (!templates_app_hash_valid(s->app_hash)) {
            otpd_seterr(err, errlen,
                        "OTPD_ANDROID_APP_HASH: must be the 11-character hash of the app's "
                        "signing key (A-Z, a-z, 0-9, + and /), as Android's AppSignatureHelper "
                        "prints it");
            goto fail;
        }
        snprintf(t->app_hash, sizeof(t->app_hash), "%s", s->app_hash);
    }
    if (job_locale_normalize(s->default_locale ? s->default_locale : "", tag, sizeof(tag)) < 0) {
        otpd_seterr(err, errlen,
                    "OTPD_DEFAULT_LOCALE: \"%s\" is not a BCP 47 language tag such as en, pt-BR "
                    "or zh-Hant",
                    s->default_locale ? s->default_locale : "");
        goto fail;
    }
    if (tpl_load_shipped(t, s, err, errlen) < 0)
        goto fail;
    if (s->dir && *s->dir && tpl_load_dir(t, s, err, errlen) < 0)
        goto fail;
    for (int k = 0; k < TEMPLATE_KINDS; k++)
        if (s->overrides[k] != NULL && tpl_settings[k] != NULL &&
            tpl_set(t, tag, (enum template_kind)k, s->overrides[k], strlen(s->overrides[k]),
                    tpl_settings[k], TPL_SETTINGS, s, err, errlen) < 0)
            goto fail;
    if (tpl_finish(t, s, err, errlen) < 0)
        goto fail;
    return t;
fail:
    templates_free(t);
    return NULL;
}

void
templates_free(struct templates *t)
{
    if (t == NULL)
        return;
    for (size_t i = 0; i < t->n; i++)
        for (int k = 0; k < TEMPLATE_KINDS; k++) {
            free(t->loc[i].text[k]);
            free(t->loc[i].origin[k]);
        }
    for (size_t i = 0; i < t->nwarnings; i++)
        free(t->warnings[i]);
    free(t->warnings);
    free(t->loc);
    free(t);
}

int
templates_same(const struct templates *a, const struct templates *b)
{
    if (a == NULL || b == NULL)
        return a == b;
    if (a->n != b->n || a->deflt != b->deflt || strcmp(a->domain, b->domain) != 0 ||
        strcmp(a->app_hash, b->app_hash) != 0)
        return 0;
    for (size_t i = 0; i < a->n; i++) {
        if (strcmp(a->loc[i].tag, b->loc[i].tag) != 0)
            return 0;
        for (int k = 0; k < TEMPLATE_KINDS; k++) {
            const char *x = a->loc[i].text[k], *y = b->loc[i].text[k];
            if ((x == NULL) != (y == NULL) || (x && strcmp(x, y) != 0) ||
                a->loc[i].source[k] != b->loc[i].source[k])
                return 0;
        }
    }
    return 1;
}

/* --- lookups --------------------------------------------------------------------- */

/*
 * The tags to try for tag, most specific first: the tag, then each shorter
 * prefix.  Chinese without a script takes it from the region the way CLDR's
 * likely subtags do for the regions that write Traditional characters, so
 * zh-TW tries zh-Hant before zh (Simplified).  Returns how many.
 */
static int
tpl_chain(const char *tag, char out[][JOB_LOCALE_MAX + 1], int max)
{
    char cur[JOB_LOCALE_MAX + 1];
    char *dash;
    int n = 0, script = 0, hant_region = 0;

    snprintf(cur, sizeof(cur), "%s", tag);
    for (const char *p = strchr(cur, '-'); p; p = strchr(p + 1, '-')) {
        size_t len = strcspn(p + 1, "-");
        if (len == 4)
            script = 1;
        else if (len == 2 && (strncasecmp(p + 1, "TW", 2) == 0 ||
                              strncasecmp(p + 1, "HK", 2) == 0 || strncasecmp(p + 1, "MO", 2) == 0))
            hant_region = 1;
    }
    while (n < max) {
        if (strcasecmp(cur, "zh") == 0 && !script && hant_region && n + 1 < max)
            snprintf(out[n++], JOB_LOCALE_MAX + 1, "%s", "zh-Hant");
        snprintf(out[n++], JOB_LOCALE_MAX + 1, "%s", cur);
        if ((dash = strrchr(cur, '-')) == NULL)
            break;
        *dash = '\0';
    }
    return n;
}

const char *
templates_pick(const struct templates *t, const char *locale, enum template_kind kind,
               const char **matched)
{
    char chain[10][JOB_LOCALE_MAX + 1];
    const struct tpl_locale *d = &t->loc[t->deflt];
    int n = locale && *locale ? tpl_chain(locale, chain, 10) : 0;

    for (int i = 0; i < n; i++) {
        const struct tpl_locale *l = tpl_find(t, chain[i]);
        if (l != NULL && l->text[kind] != NULL) {
            if (matched)
                *matched = l->tag;
            return l->text[kind];
        }
    }
    if (matched)
        *matched = d->tag;
    return d->text[kind];
}

const char *
templates_webotp_domain(const struct templates *t)
{
    return t->domain;
}

const char *
templates_app_hash(const struct templates *t)
{
    return t->app_hash;
}

/* --- the SMS and its WebOTP line ------------------------------------------------- */

/* The Infra standard's ASCII whitespace: TAB, LF, FF, CR, SPACE. */
static int
tpl_is_space(char c)
{
    return c == '\t' || c == '\n' || c == '\f' || c == '\r' || c == ' ';
}

/*
 * The spec's parse of the last line, as far as the code: "@" host, one
 * space, "#" code, each token a run of non-whitespace.  1 if it yields
 * this code.
 */
static int
tpl_last_line_binds(const char *body, const char *code)
{
    const char *line = body, *p, *tok;
    size_t clen = strlen(code);

    for (p = body; *p; p++)
        if (*p == '\n' || *p == '\r')
            line = p + 1; /* CR, LF and CRLF all end a line (newlines normalised) */
    p = line;
    if (*p++ != '@' || *p == '\0' || tpl_is_space(*p))
        return 0;
    while (*p && !tpl_is_space(*p))
        p++;
    if (*p++ != ' ' || *p++ != '#')
        return 0;
    for (tok = p; *p && !tpl_is_space(*p); p++)
        ;
    return (size_t)(p - tok) == clen && clen > 0 && memcmp(tok, code, clen) == 0;
}

int
templates_bind(char *body, size_t size, const char *domain, const char *code, const char *hash)
{
    size_t n = strlen(body), h;
    int w;

    domain = domain ? domain : "";
    hash = hash ? hash : "";
    h = strlen(hash);
    if (*domain) {
        if (tpl_last_line_binds(body, code))
            return 0;
        w = snprintf(body + n, size - n, "\n\n@%s #%s%s%s", domain, code, h ? " " : "", hash);
    } else if (h) {
        if (n >= h && strcmp(body + n - h, hash) == 0)
            return 0;
        w = snprintf(body + n, size - n, "\n\n%s", hash);
    } else {
        return 0;
    }
    if (w < 0 || (size_t)w >= size - n) {
        body[n] = '\0';
        return -1;
    }
    return 0;
}

int
templates_render_sms(const struct templates *t, const struct job *job, const char *code,
                     int minutes, char *out, size_t outlen, const char **matched, char *err,
                     size_t errlen)
{
    const char *tmpl = job->message;

    if (tmpl == NULL)
        tmpl = templates_pick(t, job->locale, TEMPLATE_SMS, matched);
    else if (matched)
        *matched = ""; /* the job's own text */
    if (otp_render(out, outlen, tmpl, code, minutes, err, errlen) < 0)
        return -1;
    if (job->channel == JOB_CHANNEL_SMS &&
        templates_bind(out, outlen, t->domain, code, *job->app_hash ? job->app_hash : t->app_hash) <
            0) {
        otpd_seterr(err, errlen, "no room for the WebOTP line");
        return -1;
    }
    return 0;
}

/* --- reporting ------------------------------------------------------------------- */

void
templates_warnings(const struct templates *t, templates_warn_fn *warn, void *arg)
{
    for (size_t i = 0; t != NULL && i < t->nwarnings; i++)
        warn(arg, t->warnings[i]);
}

int
templates_sms_size(const struct templates *t, const char *locale, struct sms_size *out)
{
    const struct tpl_locale *l = tpl_find(t, locale);

    if (l == NULL || !l->sms_sized)
        return -1;
    *out = l->sms;
    return 0;
}

void
templates_print_table(const struct templates *t, FILE *out)
{
    static const char *const names[] = {"", "shipped", "OTPD_TEMPLATES_DIR", "settings"};

    fprintf(out,
            "# templates: %zu locale(s), default %s; an SMS sized with a %d-digit code, %d "
            "minutes%s%s\n",
            t->n, t->loc[t->deflt].tag, OTP_DIGITS_MAX, TPL_SAMPLE_MINS,
            *t->domain ? " and the WebOTP line for " : "", t->domain);
    fprintf(out, "#   %-12s %-12s %-8s %5s %8s  %s\n", "locale", "sms from", "encoding", "units",
            "segments", "texts from");
    for (size_t i = 0; i < t->n; i++) {
        const struct tpl_locale *l = &t->loc[i];
        char from[64] = "";
        size_t w = 0;

        /* The layers its texts come from, in the order they apply. */
        for (int src = TPL_SHIPPED; src <= TPL_SETTINGS; src++)
            for (int k = 0; k < TEMPLATE_KINDS; k++)
                if (l->source[k] == (enum tpl_source)src) {
                    w += (size_t)snprintf(from + w, sizeof(from) - w, "%s%s", w ? "+" : "",
                                          names[src]);
                    break;
                }
        if (l->sms_sized)
            fprintf(out, "#   %-12s %-12s %-8s %5zu %8d  %s%s\n", l->tag, l->sms_from,
                    segments_encoding_name(l->sms.encoding), l->sms.units, l->sms.segments, from,
                    l->sms.segments > 1 ? "  (over one segment)" : "");
        else
            fprintf(out, "#   %-12s %-12s %-8s %5s %8s  %s  (over %d characters)\n", l->tag,
                    l->sms_from ? l->sms_from : "-", "-", "-", "-", from, JOB_MESSAGE_CHARS);
    }
}

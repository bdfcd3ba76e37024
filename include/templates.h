/*
 * templates.h: the texts otpd sends, by locale and kind.  One set is built
 * at start (config_finish) from the texts shipped in
 * python/otpd/data/templates (compiled in), then OTPD_TEMPLATES_DIR, then
 * the settings OTPD_TEMPLATE and OTPD_EMAIL_* for the default locale; every
 * text is checked then, so a lookup never fails.  The set hangs off struct
 * config (cfg->templates), which is how delivery and the providers reach
 * it, and a reload (SIGHUP) replaces it whole: a text returned here is good
 * until control returns to the loop, so render it at once, never keep it.
 *
 * Also the SMS's WebOTP line (https://wicg.github.io/sms-one-time-codes/):
 * "@host #code", the last line, followed by Android's app hash.
 */
#ifndef OTPD_TEMPLATES_H
#define OTPD_TEMPLATES_H

#include <stddef.h>
#include <stdio.h>

#include "otp.h"
#include "otpd.h"
#include "segments.h"

enum template_kind {
    TEMPLATE_SMS,           /* sms.txt: {code} required, {minutes} optional */
    TEMPLATE_VOICE,         /* voice.txt: read by a TTS voice; {code} becomes "1, 2, 3, ..." */
    TEMPLATE_EMAIL_SUBJECT, /* email_subject.txt: one line */
    TEMPLATE_EMAIL_TEXT,    /* email.txt: the plain-text part */
    TEMPLATE_EMAIL_HTML,    /* email.html: the HTML part */
    TEMPLATE_KINDS
};

/* One shipped text, as cmake/embed_templates.cmake generates them (the file's bytes). */
struct template_builtin {
    const char *locale;
    enum template_kind kind;
    const char *text;
};
extern const struct template_builtin templates_builtin[];
extern const size_t templates_builtin_count;

/* "sms.txt", ... for a kind; the kind of a file name, or -1. */
const char *templates_file_name(enum template_kind kind);
int templates_kind_of(const char *file_name);

/* Longest host OTPD_WEBOTP_DOMAIN takes (a DNS name), and Android's app hash. */
#define TEMPLATE_HOST_MAX     253
#define TEMPLATE_APP_HASH_LEN 11
/* "\n\n@" host " #" code " " hash: what binding may add to an SMS. */
#define TEMPLATE_WEBOTP_MAX (3 + TEMPLATE_HOST_MAX + 2 + OTP_DIGITS_MAX + 1 + TEMPLATE_APP_HASH_LEN)
/*
 * An SMS as sent: the rendered text (at most JOB_MESSAGE_CHARS characters,
 * OTP_BODY_MAX bytes with its NUL) and the WebOTP line, which the limit
 * does not count: a message the site checked stays valid with it.
 */
#define TEMPLATE_SMS_MAX (OTP_BODY_MAX + TEMPLATE_WEBOTP_MAX)

/* What the set is built from: the settings, as config_finish has them. */
struct templates_settings {
    const char *dir;            /* OTPD_TEMPLATES_DIR: <dir>/<locale>/<file>; "" or NULL: none */
    const char *default_locale; /* OTPD_DEFAULT_LOCALE, a BCP 47 tag */
    /* OTPD_TEMPLATE, OTPD_EMAIL_*: the default locale's texts; NULL: leave them */
    const char *overrides[TEMPLATE_KINDS];
    int digits;                /* OTPD_OTP_DIGITS, for the SMS check */
    int minutes;               /* ceil(OTPD_OTP_TTL / 60) */
    const char *webotp_domain; /* OTPD_WEBOTP_DOMAIN, or "" */
    const char *app_hash;      /* OTPD_ANDROID_APP_HASH, or "" */
};

struct templates;

/*
 * Build and check the set.  NULL with the reason in err ("path: why", or
 * the setting's name) if a text is refused or the default locale lacks one.
 * Doubtful things (an unknown file, an SMS over one segment) are kept as
 * warnings, for templates_warnings().
 */
struct templates *templates_load(const struct templates_settings *s, char *err, size_t errlen);
void templates_free(struct templates *t);
/* Same texts, settings and sources: nothing to announce after a reload. */
int templates_same(const struct templates *a, const struct templates *b);

/*
 * The text of this kind for a job's locale (normalised, "" for the
 * default): the tag itself, then shorter prefixes ("zh-Hant-TW", "zh-Hant",
 * "zh"; zh-TW, zh-HK and zh-MO try zh-Hant before zh), then the default
 * locale, which has every kind.  Tags compare case-insensitively.  The
 * locale whose text it is goes to *matched (if not NULL), for logs and
 * status records.  Never NULL.  Voice: render with otp_render_email() or
 * a substitution of your own; the text is checked for {code} and length.
 */
const char *templates_pick(const struct templates *t, const char *locale, enum template_kind kind,
                           const char **matched);

/*
 * The SMS for a job into out (TEMPLATE_SMS_MAX bytes are always enough):
 * its own message if it has one, else the SMS template for its locale,
 * with {code} and {minutes}; then, for the SMS channel, the WebOTP line
 * (templates_bind).  -1 with the reason in err if the text does not render
 * (a job message's limits are job_parse's; the templates were checked).
 */
int templates_render_sms(const struct templates *t, const struct job *job, const char *code,
                         int minutes, char *out, size_t outlen, const char **matched, char *err,
                         size_t errlen);

/*
 * Bind a rendered SMS to the site and the app, in place (body holds size
 * bytes):
 *   domain set:  body "\n\n@" domain " #" code, then " " hash with a hash
 *   no domain, a hash:  body "\n\n" hash (SMS Retriever's own format)
 * hash: the job's app_hash, else OTPD_ANDROID_APP_HASH ("" or NULL: none).
 * A body whose last line already binds this code ("@host #code ...", as
 * the spec parses it) or, without a domain, already ends with the hash is
 * left as it is: a site that writes its own line keeps it.  -1 if the
 * result would not fit (body untouched).
 */
int templates_bind(char *body, size_t size, const char *domain, const char *code, const char *hash);
/* The set's OTPD_WEBOTP_DOMAIN and OTPD_ANDROID_APP_HASH ("" when unset). */
const char *templates_webotp_domain(const struct templates *t);
const char *templates_app_hash(const struct templates *t);

/*
 * OTPD_WEBOTP_DOMAIN: a host as the spec's origin takes it, without scheme,
 * port or path: lower-case letter, digit and hyphen labels of 1 to 63
 * characters joined by dots, no label starting or ending with "-", at most
 * 253 characters (an IDN in its xn-- form).  0 with the reason in why.
 */
int templates_host_valid(const char *host, char *why, size_t whylen);
/* Android's app hash: 11 characters of base64 (A-Z a-z 0-9 + /). */
int templates_app_hash_valid(const char *hash);

/*
 * The checks one text of a kind must pass (len bytes, not NUL-terminated;
 * the final newline already stripped): valid UTF-8 without NUL, within
 * the kind's size, {code} where required, one line for a subject, and for
 * an SMS otp_template_check() at digits and minutes.  0, or -1 with why.
 */
int templates_check_text(enum template_kind kind, const char *text, size_t len, int digits,
                         int minutes, char *why, size_t whylen);

typedef void templates_warn_fn(void *arg, const char *text);
void templates_warnings(const struct templates *t, templates_warn_fn *warn, void *arg);
/*
 * For --check-config: "# "-prefixed lines, one per locale, with where its
 * SMS comes from and what it costs: encoding, units and segments for a
 * 10-digit code, 10 minutes and the WebOTP line.
 */
void templates_print_table(const struct templates *t, FILE *out);
/* What a locale's SMS costs, as the table says; -1 if it has none or it is over the limit. */
int templates_sms_size(const struct templates *t, const char *locale, struct sms_size *out);

#endif

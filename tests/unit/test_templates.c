/*
 * test_templates.c: the texts by locale (templates.c).  The shipped set
 * (complete, English exactly the old defaults, one segment each), the
 * fallback chains, a site's directory overriding and adding locales, bad
 * files refused with their path and reason, the settings overriding the
 * default locale, segment warnings, and the WebOTP line, checked with a
 * parser written here from the spec's own steps
 * (https://wicg.github.io/sms-one-time-codes/#parsing), not templates.c's.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"
#include "job.h"
#include "segments.h"
#include "templates.h"

#define KEY_HEX "fe1ab53ccdf61b29f349ed3b1df9a31956eff94b7ce788c1c5c9a71d9029a8e8"
#define HASH    "FA+9qCX9VSu"
#define SHIPPED "ar de en es fr hi pt pt-BR zh zh-Hant"

/* --- helpers ------------------------------------------------------------------ */

static struct templates_settings
settings(const char *dir)
{
    struct templates_settings s = {
        .dir = dir,
        .default_locale = "en",
        .digits = 6,
        .minutes = 5,
        .webotp_domain = "",
        .app_hash = "",
    };
    return s;
}

static struct templates *
load_ok(const struct templates_settings *s)
{
    char err[512] = "";
    struct templates *t = templates_load(s, err, sizeof(err));

    if (t == NULL)
        fail_msg("templates_load: %s", err);
    return t;
}

/* templates_load fails, and err holds every one of the NULL-terminated substrings. */
static void
load_fails(const struct templates_settings *s, ...)
{
    char err[512] = "";
    struct templates *t = templates_load(s, err, sizeof(err));
    const char *want;
    va_list ap;

    if (t != NULL) {
        templates_free(t);
        fail_msg("templates_load succeeded");
    }
    va_start(ap, s);
    while ((want = va_arg(ap, const char *)) != NULL)
        if (strstr(err, want) == NULL)
            fail_msg("error \"%s\" does not contain \"%s\"", err, want);
    va_end(ap);
}

static void
write_file(const char *dir, const char *rel, const char *text, size_t len)
{
    char path[1024];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", dir, rel);
    f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, len, f), len);
    fclose(f);
}

#define WRITE(dir, rel, lit) write_file((dir), (rel), (lit), sizeof(lit) - 1)

static void
make_dir(const char *dir, const char *rel)
{
    char path[1024];

    snprintf(path, sizeof(path), "%s/%s", dir, rel);
    assert_int_equal(mkdir(path, 0700), 0);
}

static int
rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int
setup_dir(void **state)
{
    char *dir = strdup("/tmp/otpd-templates-XXXXXX");

    if (dir == NULL || mkdtemp(dir) == NULL)
        return -1;
    *state = dir;
    return 0;
}

static int
teardown_dir(void **state)
{
    nftw(*state, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(*state);
    return 0;
}

struct warnings {
    char text[8192];
    int n;
};

static void
collect(void *arg, const char *text)
{
    struct warnings *w = arg;
    size_t len = strlen(w->text);

    snprintf(w->text + len, sizeof(w->text) - len, "%s\n", text);
    w->n++;
}

static char *
table(const struct templates *t)
{
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);

    assert_non_null(f);
    templates_print_table(t, f);
    fclose(f);
    return out;
}

/* The table's row for locale says where its SMS comes from, its encoding and its sources. */
static void
row_is(const char *tab, const char *locale, const char *from, const char *enc, const char *sources)
{
    char l[64], f[64], e[16], src[128];
    size_t units;
    int segs;

    for (const char *p = tab; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
        if (sscanf(p, "#   %63s %63s %15s %zu %d %127s", l, f, e, &units, &segs, src) == 6 &&
            strcmp(l, locale) == 0) {
            assert_string_equal(f, from);
            assert_string_equal(e, enc);
            assert_string_equal(src, sources);
            return;
        }
    fail_msg("no row for %s in\n%s", locale, tab);
}

static const char *
pick(const struct templates *t, const char *locale, enum template_kind kind)
{
    const char *matched = NULL;
    const char *text = templates_pick(t, locale, kind, &matched);

    assert_non_null(text);
    assert_non_null(matched);
    return matched;
}

/* --- the spec's parser, from its steps ----------------------------------------------- */

struct otc {
    char top[300];
    char code[64];
    char embedded[300]; /* "" for null */
};

static int
ascii_ws(char c)
{
    return c == '\t' || c == '\n' || c == '\f' || c == '\r' || c == ' ';
}

/* "extract a marked token": 0 and the token, or -1 for failure. */
static int
extract_marked(const char *s, size_t len, size_t *pos, char marker, char *tok, size_t toklen)
{
    size_t start;

    if (*pos >= len || s[*pos] != marker)
        return -1;
    (*pos)++;
    if (*pos >= len)
        return -1;
    start = *pos;
    while (*pos < len && !ascii_ws(s[*pos]))
        (*pos)++;
    if (*pos == start || *pos - start >= toklen)
        return -1;
    memcpy(tok, s + start, *pos - start);
    tok[*pos - start] = '\0';
    return 0;
}

/* "parse an origin-bound one-time code message": 0 and o, or -1 for failure. */
static int
spec_parse(const char *message, struct otc *o)
{
    char *norm = malloc(strlen(message) + 1), *line;
    size_t w = 0, len, pos = 0;
    int rc = -1;

    assert_non_null(norm);
    /* last line: normalise newlines (CRLF and CR to LF), strictly split on LF, last item */
    for (const char *p = message; *p; p++) {
        if (*p == '\r') {
            norm[w++] = '\n';
            if (p[1] == '\n')
                p++;
        } else {
            norm[w++] = *p;
        }
    }
    norm[w] = '\0';
    line = strrchr(norm, '\n') ? strrchr(norm, '\n') + 1 : norm;
    len = strlen(line);
    memset(o, 0, sizeof(*o));
    if (pos >= len)
        goto out;
    if (extract_marked(line, len, &pos, '@', o->top, sizeof(o->top)) < 0)
        goto out;
    if (pos >= len || line[pos] != ' ')
        goto out;
    pos++;
    if (pos >= len)
        goto out;
    if (extract_marked(line, len, &pos, '#', o->code, sizeof(o->code)) < 0)
        goto out;
    if (pos < len && line[pos] == ' ') {
        pos++;
        if (extract_marked(line, len, &pos, '@', o->embedded, sizeof(o->embedded)) < 0)
            o->embedded[0] = '\0';
    }
    rc = 0;
out:
    free(norm);
    return rc;
}

static void
test_spec_parser_itself(void **state)
{
    struct otc o;

    (void)state;
    /* The spec's own examples. */
    assert_int_equal(spec_parse("747723 is your ExampleCo authentication code.\n\n"
                                "@example.com #747723",
                                &o),
                     0);
    assert_string_equal(o.top, "example.com");
    assert_string_equal(o.code, "747723");
    assert_string_equal(o.embedded, "");
    assert_int_equal(spec_parse("x\n\n@example.com #747723 @ecommerce.example", &o), 0);
    assert_string_equal(o.embedded, "ecommerce.example");
    assert_int_equal(spec_parse("@example.com #747723 @ecommerce.example $future", &o), 0);
    assert_string_equal(o.embedded, "ecommerce.example");
    assert_int_equal(spec_parse("something @example.com #747723", &o), -1);
    assert_int_equal(spec_parse("#747723 @ecommerce.example @example.com", &o), -1);
    assert_int_equal(spec_parse("@example.com code #747723", &o), -1);
    assert_int_equal(spec_parse("@example.com  #747723", &o), -1);
    assert_int_equal(spec_parse("@example.com #747723\n", &o), -1); /* the last line is empty */
    assert_int_equal(spec_parse("a\r\n@example.com #1", &o), 0);
}

/* --- the shipped set -------------------------------------------------------------------- */

static void
test_shipped_set_is_complete(void **state)
{
    struct templates_settings s = settings(NULL);
    struct templates *t;
    struct warnings w = {.n = 0};
    char want[] = SHIPPED, *save = NULL;

    (void)state;
    t = load_ok(&s);
    for (char *loc = strtok_r(want, " ", &save); loc; loc = strtok_r(NULL, " ", &save))
        for (int k = 0; k < TEMPLATE_KINDS; k++)
            if (strcmp(pick(t, loc, (enum template_kind)k), loc) != 0)
                fail_msg("locale %s has no shipped %s", loc, templates_file_name(k));
    templates_warnings(t, collect, &w);
    assert_int_equal(w.n, 0);
    templates_free(t);
}

/* English is exactly what the settings said before locales, so nothing changes for anyone. */
static void
test_shipped_english_is_the_old_defaults(void **state)
{
    struct templates_settings s = settings(NULL);
    struct config cfg;
    struct templates *t;

    (void)state;
    config_init(&cfg);
    t = load_ok(&s);
    assert_string_equal(templates_pick(t, "en", TEMPLATE_SMS, NULL), cfg.template);
    assert_string_equal(templates_pick(t, "en", TEMPLATE_EMAIL_SUBJECT, NULL), cfg.email_subject);
    assert_string_equal(templates_pick(t, "en", TEMPLATE_EMAIL_TEXT, NULL), cfg.email_text);
    assert_string_equal(templates_pick(t, "en", TEMPLATE_EMAIL_HTML, NULL), cfg.email_html);
    assert_string_equal(templates_pick(t, "en", TEMPLATE_VOICE, NULL),
                        "Your verification code is {code}.");
    templates_free(t);
    config_free(&cfg);
}

/* Each shipped SMS is one segment with a 10-digit code; the Latin ones GSM-7 where they can be. */
static void
test_shipped_sms_fit_one_segment(void **state)
{
    static const struct {
        const char *locale;
        enum sms_encoding enc;
    } want[] = {
        {"en", SMS_GSM7}, {"de", SMS_GSM7},      {"fr", SMS_GSM7}, {"es", SMS_UCS2},
        {"pt", SMS_UCS2}, {"pt-BR", SMS_UCS2},   {"hi", SMS_UCS2}, {"ar", SMS_UCS2},
        {"zh", SMS_UCS2}, {"zh-Hant", SMS_UCS2},
    };
    struct templates_settings s = settings(NULL);
    struct templates *t;
    struct sms_size sz;

    (void)state;
    t = load_ok(&s);
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        assert_int_equal(templates_sms_size(t, want[i].locale, &sz), 0);
        if (sz.segments != 1 || sz.encoding != want[i].enc)
            fail_msg("%s: %s, %zu units, %d segments", want[i].locale,
                     segments_encoding_name(sz.encoding), sz.units, sz.segments);
    }
    templates_free(t);
}

/* --- lookups ------------------------------------------------------------------------------ */

static void
test_fallback_chains(void **state)
{
    struct templates_settings s = settings(NULL);
    struct templates *t;

    (void)state;
    t = load_ok(&s);
    assert_string_equal(pick(t, "pt-BR", TEMPLATE_SMS), "pt-BR");
    assert_string_equal(pick(t, "pt-PT", TEMPLATE_SMS), "pt");
    assert_string_equal(pick(t, "pt", TEMPLATE_SMS), "pt");
    assert_string_equal(pick(t, "PT-br", TEMPLATE_SMS), "pt-BR"); /* case does not matter */
    assert_string_equal(pick(t, "zh-Hant-TW", TEMPLATE_SMS), "zh-Hant");
    assert_string_equal(pick(t, "zh-Hans-CN", TEMPLATE_SMS), "zh");
    assert_string_equal(pick(t, "zh-CN", TEMPLATE_SMS), "zh");
    /* Regions that write Traditional characters, without a script subtag. */
    assert_string_equal(pick(t, "zh-TW", TEMPLATE_SMS), "zh-Hant");
    assert_string_equal(pick(t, "zh-HK", TEMPLATE_EMAIL_TEXT), "zh-Hant");
    assert_string_equal(pick(t, "zh-MO", TEMPLATE_VOICE), "zh-Hant");
    assert_string_equal(pick(t, "zh-Hans-TW", TEMPLATE_SMS), "zh"); /* the script decides */
    assert_string_equal(pick(t, "es-419", TEMPLATE_SMS), "es");
    assert_string_equal(pick(t, "de-CH-1996", TEMPLATE_SMS), "de");
    assert_string_equal(pick(t, "sv", TEMPLATE_SMS), "en"); /* not shipped: the default */
    assert_string_equal(pick(t, "sv-SE", TEMPLATE_SMS), "en");
    assert_string_equal(pick(t, "", TEMPLATE_SMS), "en"); /* no locale */
    assert_string_equal(pick(t, NULL, TEMPLATE_EMAIL_HTML), "en");
    templates_free(t);

    /* Another default locale ends every chain. */
    s.default_locale = "pt_br";
    t = load_ok(&s);
    assert_string_equal(pick(t, "sv", TEMPLATE_SMS), "pt-BR");
    assert_string_equal(pick(t, "", TEMPLATE_EMAIL_SUBJECT), "pt-BR");
    assert_string_equal(pick(t, "en-GB", TEMPLATE_SMS), "en");
    templates_free(t);
}

/* --- a site's directory ----------------------------------------------------------------------- */

static void
test_directory_overrides_and_adds(void **state)
{
    const char *dir = *state;
    struct templates_settings s = settings(dir);
    struct templates *t;
    struct warnings w = {.n = 0};
    char *tab;

    make_dir(dir, "fr");
    make_dir(dir, "it");
    make_dir(dir, "fr-CA");
    make_dir(dir, "notalocale_x");
    /* The final newline goes; CRLF reads as LF. */
    WRITE(dir, "fr/sms.txt", "Code : {code}\n");
    WRITE(dir, "fr/email.txt", "Code : {code}\r\n\r\nValable {minutes} min.\r\n");
    WRITE(dir, "fr/notes.md", "a note\n");
    WRITE(dir, "fr/.sms.txt.swp", "\xff\xfe");
    WRITE(dir, "it/sms.txt", "Il tuo codice di verifica è {code}.\n");
    WRITE(dir, "it/voice.txt", "Il tuo codice di verifica è {code}.\n");
    WRITE(dir, "it/email_subject.txt", "Il tuo codice di verifica\n");
    WRITE(dir, "it/email.txt", "Il tuo codice di verifica è {code}.\n");
    WRITE(dir, "it/email.html", "<p>{code}</p>\n");
    WRITE(dir, "fr-CA/email_subject.txt", "Votre code\n");
    WRITE(dir, "README.md", "the site's texts\n");
    WRITE(dir, "sms.txt", "lost {code}\n");
    t = load_ok(&s);

    assert_string_equal(templates_pick(t, "fr", TEMPLATE_SMS, NULL), "Code : {code}");
    assert_string_equal(templates_pick(t, "fr", TEMPLATE_EMAIL_TEXT, NULL),
                        "Code : {code}\n\nValable {minutes} min.");
    /* What the directory leaves alone stays shipped. */
    assert_string_equal(templates_pick(t, "fr", TEMPLATE_VOICE, NULL),
                        "Votre code de vérification est {code}.");
    assert_string_equal(pick(t, "it-CH", TEMPLATE_SMS), "it");
    assert_string_equal(templates_pick(t, "it", TEMPLATE_EMAIL_HTML, NULL), "<p>{code}</p>");
    /* A partial locale: its own subject, the rest from fr, kind by kind. */
    assert_string_equal(pick(t, "fr-CA", TEMPLATE_EMAIL_SUBJECT), "fr-CA");
    assert_string_equal(pick(t, "fr-CA", TEMPLATE_SMS), "fr");
    assert_string_equal(templates_pick(t, "fr-CA", TEMPLATE_SMS, NULL), "Code : {code}");

    templates_warnings(t, collect, &w);
    assert_int_equal(w.n, 3);
    assert_non_null(strstr(w.text, "/fr/notes.md: not a template file name"));
    assert_non_null(strstr(w.text, "notalocale_x: not a BCP 47 language tag"));
    assert_non_null(strstr(w.text, "/sms.txt: outside any locale directory"));
    assert_null(strstr(w.text, "README"));

    tab = table(t);
    row_is(tab, "fr", "fr", "GSM-7", "shipped+OTPD_TEMPLATES_DIR");
    row_is(tab, "fr-CA", "fr", "GSM-7", "OTPD_TEMPLATES_DIR");
    row_is(tab, "it", "it", "GSM-7", "OTPD_TEMPLATES_DIR"); /* "è" is in GSM 03.38 */
    row_is(tab, "de", "de", "GSM-7", "shipped");
    free(tab);
    templates_free(t);
}

static void
test_bad_files_refused(void **state)
{
    const char *dir = *state;
    struct templates_settings s = settings(dir);
    char path[1024];

    make_dir(dir, "de");
    WRITE(dir, "de/sms.txt", "Code \xc3\x28 {code}\n");
    load_fails(&s, "/de/sms.txt: not valid UTF-8", NULL);
    WRITE(dir, "de/sms.txt", "Ihr Code\n");
    load_fails(&s, "/de/sms.txt: must contain {code}", NULL);
    WRITE(dir, "de/sms.txt", "Code {code}\0hidden\n");
    load_fails(&s, "/de/sms.txt: contains a NUL byte", NULL);
    WRITE(dir, "de/sms.txt", "\n");
    load_fails(&s, "/de/sms.txt: is empty", NULL);
    {
        char big[600];
        memset(big, 'x', sizeof(big));
        memcpy(big, "{code}", 6);
        write_file(dir, "de/sms.txt", big, sizeof(big));
        load_fails(&s, "/de/sms.txt: renders to", "over the 480 limit", NULL);
    }
    WRITE(dir, "de/sms.txt", "{code}\n");
    WRITE(dir, "de/email_subject.txt", "Ihr Code\nBcc: x@example.com\n");
    load_fails(&s, "/de/email_subject.txt: must be one line", NULL);
    WRITE(dir, "de/email_subject.txt", "Ihr Code\\nBcc: x@example.com\n");
    load_fails(&s, "/de/email_subject.txt: must be one line", NULL);
    WRITE(dir, "de/email_subject.txt", "Ihr Code {code}\n"); /* {code} may be in a subject */
    WRITE(dir, "de/email.html", "<p>Code</p>\n");
    load_fails(&s, "/de/email.html: must contain {code}", NULL);
    snprintf(path, sizeof(path), "%s/de/email.html", dir);
    remove(path);
    make_dir(dir, "de/email.html"); /* not a regular file */
    load_fails(&s, "/de/email.html: not a regular file", NULL);
    snprintf(path, sizeof(path), "%s/de/email.html", dir);
    rmdir(path);
    {
        /* Twice the one locale, under two spellings: which wins would be chance. */
        make_dir(dir, "DE");
        WRITE(dir, "DE/sms.txt", "{code}\n");
        load_fails(&s, "/de/sms.txt: ", "already gives de's sms.txt", NULL);
        snprintf(path, sizeof(path), "%s/DE/sms.txt", dir);
        remove(path);
    }
    s.dir = "/nonexistent/otpd-templates";
    load_fails(&s, "OTPD_TEMPLATES_DIR: /nonexistent/otpd-templates: No such file", NULL);
}

static void
test_default_locale_checked(void **state)
{
    const char *dir = *state;
    struct templates_settings s = settings(dir);

    s.default_locale = "e";
    load_fails(&s, "OTPD_DEFAULT_LOCALE: \"e\" is not a BCP 47 language tag", NULL);
    s.default_locale = "sv";
    load_fails(&s, "OTPD_DEFAULT_LOCALE: no templates for \"sv\"", "en", "pt-BR", NULL);
    /* A locale of the directory's may be the default only with all five texts. */
    make_dir(dir, "sv");
    WRITE(dir, "sv/sms.txt", "Din kod: {code}\n");
    load_fails(&s, "OTPD_DEFAULT_LOCALE: locale sv has no voice.txt", NULL);
    WRITE(dir, "sv/voice.txt", "Din kod är {code}.\n");
    WRITE(dir, "sv/email_subject.txt", "Din kod\n");
    WRITE(dir, "sv/email.txt", "Din kod är {code}.\n");
    WRITE(dir, "sv/email.html", "<p>{code}</p>\n");
    s.default_locale = "SV";
    struct templates *t = load_ok(&s);
    assert_string_equal(pick(t, "fi", TEMPLATE_SMS), "sv");
    templates_free(t);
}

/* --- the settings ---------------------------------------------------------------------------- */

static void
config_with(struct config *cfg, ...)
{
    char err[512] = "";
    const char *k, *v;
    va_list ap;

    config_init(cfg);
    assert_int_equal(config_set(cfg, "OTPD_HASH_KEY", KEY_HEX, err, sizeof(err)), 0);
    va_start(ap, cfg);
    while ((k = va_arg(ap, const char *)) != NULL) {
        v = va_arg(ap, const char *);
        if (config_set(cfg, k, v, err, sizeof(err)) < 0)
            fail_msg("%s", err);
    }
    va_end(ap);
    if (config_finish(cfg, err, sizeof(err)) < 0)
        fail_msg("config_finish: %s", err);
}

static void
test_settings_override_the_default_locale(void **state)
{
    struct config cfg;

    (void)state;
    /* Changed from its default, OTPD_TEMPLATE is the default locale's SMS. */
    config_with(&cfg, "OTPD_TEMPLATE", "Code {code}", "OTPD_EMAIL_SUBJECT", "Sign-in code", NULL);
    assert_string_equal(templates_pick(cfg.templates, "en", TEMPLATE_SMS, NULL), "Code {code}");
    assert_string_equal(templates_pick(cfg.templates, "sv", TEMPLATE_EMAIL_SUBJECT, NULL),
                        "Sign-in code");
    assert_string_equal(templates_pick(cfg.templates, "de", TEMPLATE_SMS, NULL),
                        "Ihr Bestätigungscode lautet {code}. Er ist {minutes} Minuten gültig.");
    config_free(&cfg);

    /* At their defaults (English), they leave another default locale's texts alone. */
    config_with(&cfg, "OTPD_DEFAULT_LOCALE", "de", NULL);
    assert_string_equal(templates_pick(cfg.templates, "sv", TEMPLATE_SMS, NULL),
                        "Ihr Bestätigungscode lautet {code}. Er ist {minutes} Minuten gültig.");
    assert_string_equal(templates_pick(cfg.templates, "", TEMPLATE_EMAIL_SUBJECT, NULL),
                        "Ihr Bestätigungscode");
    config_free(&cfg);

    config_with(&cfg, "OTPD_DEFAULT_LOCALE", "de", "OTPD_EMAIL_TEXT", "Code: {code}", NULL);
    assert_string_equal(templates_pick(cfg.templates, "", TEMPLATE_EMAIL_TEXT, NULL),
                        "Code: {code}");
    /* English keeps its shipped text. */
    assert_string_equal(templates_pick(cfg.templates, "en", TEMPLATE_EMAIL_TEXT, NULL),
                        "Your verification code is {code}.\n\nIt expires in {minutes} minutes. "
                        "If you did not ask for it, you can ignore this message.");
    config_free(&cfg);
}

static void
test_settings_checked_by_config(void **state)
{
    struct config cfg;
    char err[512] = "";
    static const char *const bad[][3] = {
        {"OTPD_DEFAULT_LOCALE", "klingon", "OTPD_DEFAULT_LOCALE: \"klingon\" is not"},
        {"OTPD_DEFAULT_LOCALE", "sv", "OTPD_DEFAULT_LOCALE: no templates for \"sv\""},
        {"OTPD_WEBOTP_DOMAIN", "https://example.com", "OTPD_WEBOTP_DOMAIN: \"https://"},
        {"OTPD_WEBOTP_DOMAIN", "Example.com", "must be lower case"},
        {"OTPD_WEBOTP_DOMAIN", "example.com:8443", "no port"},
        {"OTPD_ANDROID_APP_HASH", "short", "OTPD_ANDROID_APP_HASH: must be the 11-character"},
        {"OTPD_ANDROID_APP_HASH", "FA+9qCX9VS_", "OTPD_ANDROID_APP_HASH"},
        {"OTPD_TEMPLATES_DIR", "/nonexistent/x", "OTPD_TEMPLATES_DIR: /nonexistent/x"},
        {"OTPD_EMAIL_SUBJECT", "a\\nBcc: x@example.com", "OTPD_EMAIL_SUBJECT: must be one line"},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        config_init(&cfg);
        assert_int_equal(config_set(&cfg, "OTPD_HASH_KEY", KEY_HEX, err, sizeof(err)), 0);
        assert_int_equal(config_set(&cfg, bad[i][0], bad[i][1], err, sizeof(err)), 0);
        assert_int_equal(config_finish(&cfg, err, sizeof(err)), -1);
        if (strstr(err, bad[i][2]) == NULL)
            fail_msg("%s=%s: error \"%s\" lacks \"%s\"", bad[i][0], bad[i][1], err, bad[i][2]);
        config_free(&cfg);
    }
}

/* A reload takes the new set; the old one goes with next. */
static void
test_reload_swaps_the_set(void **state)
{
    struct config cur, next;
    const struct templates *before;

    (void)state;
    config_with(&cur, NULL);
    config_with(&next, "OTPD_DEFAULT_LOCALE", "fr", NULL);
    before = cur.templates;
    assert_false(templates_same(cur.templates, next.templates));
    config_reload(&cur, &next);
    assert_ptr_equal(next.templates, before);
    assert_string_equal(pick(cur.templates, "", TEMPLATE_SMS), "fr");
    assert_true(templates_same(cur.templates, cur.templates));
    config_free(&next);
    config_free(&cur);
}

/* --- segments ----------------------------------------------------------------------------------
 */

static void
test_segment_warnings(void **state)
{
    const char *dir = *state;
    struct templates_settings s = settings(dir);
    struct templates *t;
    struct warnings w = {.n = 0};
    struct sms_size sz;
    char *tab;

    make_dir(dir, "xx");
    /* 168 septets with a 10-digit code and 10 minutes: two segments. */
    WRITE(dir, "xx/sms.txt",
          "This deliberately long text is here to cost two segments once a ten-digit code and "
          "the minutes are in it, which the start-up check must notice {code} in {minutes} "
          "minutes.\n");
    t = load_ok(&s);
    templates_warnings(t, collect, &w);
    assert_int_equal(w.n, 1);
    assert_non_null(strstr(w.text, "locale xx: the SMS takes 2 segments (GSM-7, "));
    assert_non_null(strstr(w.text, "/xx/sms.txt"));
    assert_int_equal(templates_sms_size(t, "xx", &sz), 0);
    assert_int_equal(sz.segments, 2);
    tab = table(t);
    assert_non_null(strstr(tab, "(over one segment)"));
    free(tab);
    templates_free(t);

    /* The WebOTP line and the hash count: the shipped UCS-2 texts then take two. */
    s.dir = NULL;
    s.webotp_domain = "example.com";
    s.app_hash = HASH;
    w.n = 0;
    w.text[0] = '\0';
    t = load_ok(&s);
    templates_warnings(t, collect, &w);
    assert_non_null(strstr(w.text, "locale hi: the SMS takes 2 segments (UCS-2"));
    assert_non_null(strstr(w.text, "and the WebOTP line"));
    assert_non_null(strstr(w.text, "OTPD_TEMPLATES_DIR/hi/sms.txt"));
    assert_null(strstr(w.text, "locale en:"));
    assert_null(strstr(w.text, "locale zh:"));
    assert_int_equal(templates_sms_size(t, "en", &sz), 0);
    /* en's 63 GSM-7 characters + "\n\n@example.com #1234567890 FA+9qCX9VSu" (38) */
    assert_int_equal(sz.units, 63 + 38);
    tab = table(t);
    assert_non_null(strstr(tab, "and the WebOTP line for example.com"));
    free(tab);
    templates_free(t);
}

/* --- WebOTP ----------------------------------------------------------------------------------- */

static void
job_init(struct job *job, int channel, const char *locale, const char *hash, const char *message)
{
    memset(job, 0, sizeof(*job));
    job->channel = channel;
    snprintf(job->locale, sizeof(job->locale), "%s", locale);
    snprintf(job->app_hash, sizeof(job->app_hash), "%s", hash);
    job->message = (char *)message;
}

static void
test_webotp_line(void **state)
{
    struct templates_settings s = settings(NULL);
    struct templates *t;
    struct job job;
    struct otc o;
    char body[TEMPLATE_SMS_MAX], err[160];
    const char *matched;
    size_t n;

    (void)state;
    s.webotp_domain = "www.example.com";
    s.app_hash = HASH;
    t = load_ok(&s);

    /* A template: the text, a blank line, "@host #code hash". */
    job_init(&job, JOB_CHANNEL_SMS, "fr-FR", "", NULL);
    assert_int_equal(
        templates_render_sms(t, &job, "042917", 5, body, sizeof(body), &matched, err, sizeof(err)),
        0);
    assert_string_equal(matched, "fr");
    assert_string_equal(body, "Votre code de vérification est 042917. Il expire dans 5 minutes."
                              "\n\n@www.example.com #042917 " HASH);
    assert_int_equal(spec_parse(body, &o), 0);
    assert_string_equal(o.top, "www.example.com");
    assert_string_equal(o.code, "042917");
    assert_string_equal(o.embedded, ""); /* the hash is trailing text, not a host */
    n = strlen(body);
    assert_string_equal(body + n - 11, HASH);

    /* The job's own hash wins over the setting's; the longest code. */
    job_init(&job, JOB_CHANNEL_SMS, "zh-Hant-TW", "AbCdEfGh+/9", NULL);
    assert_int_equal(
        templates_render_sms(t, &job, "1234567890", 10, body, sizeof(body), NULL, err, sizeof(err)),
        0);
    assert_int_equal(spec_parse(body, &o), 0);
    assert_string_equal(o.top, "www.example.com");
    assert_string_equal(o.code, "1234567890");
    assert_string_equal(body + strlen(body) - 11, "AbCdEfGh+/9");
    assert_non_null(strstr(body, "您的驗證碼是1234567890，10分鐘內有效。\n\n@"));

    /* A job's message gets the line too. */
    job_init(&job, JOB_CHANNEL_SMS, "", "", "{code} is your ExampleCo code.");
    assert_int_equal(
        templates_render_sms(t, &job, "747723", 5, body, sizeof(body), &matched, err, sizeof(err)),
        0);
    assert_string_equal(matched, "");
    assert_string_equal(body, "747723 is your ExampleCo code.\n\n@www.example.com #747723 " HASH);

    /* A message that binds its code itself keeps its own line, and gets no second one. */
    job_init(&job, JOB_CHANNEL_SMS, "", "", "{code} is your code.\n\n@shop.example #{code}");
    assert_int_equal(
        templates_render_sms(t, &job, "747723", 5, body, sizeof(body), NULL, err, sizeof(err)), 0);
    assert_string_equal(body, "747723 is your code.\n\n@shop.example #747723");
    assert_int_equal(spec_parse(body, &o), 0);
    assert_string_equal(o.top, "shop.example");

    /* One that names another code (or is malformed) does not bind this one: ours follows. */
    job_init(&job, JOB_CHANNEL_SMS, "", "", "Code {code}\n@shop.example #123");
    assert_int_equal(
        templates_render_sms(t, &job, "747723", 5, body, sizeof(body), NULL, err, sizeof(err)), 0);
    assert_int_equal(spec_parse(body, &o), 0);
    assert_string_equal(o.top, "www.example.com");
    assert_string_equal(o.code, "747723");

    /* Not an SMS: no line. */
    job_init(&job, JOB_CHANNEL_EMAIL, "de", "", NULL);
    assert_int_equal(
        templates_render_sms(t, &job, "747723", 5, body, sizeof(body), NULL, err, sizeof(err)), 0);
    assert_null(strchr(body, '@'));
    templates_free(t);

    /* No domain, a hash: SMS Retriever's own format, the hash on the last line. */
    s.webotp_domain = "";
    t = load_ok(&s);
    job_init(&job, JOB_CHANNEL_SMS, "en", "", NULL);
    assert_int_equal(
        templates_render_sms(t, &job, "747723", 5, body, sizeof(body), NULL, err, sizeof(err)), 0);
    assert_string_equal(body,
                        "Your verification code is 747723. It expires in 5 minutes.\n\n" HASH);
    assert_int_equal(spec_parse(body, &o), -1);
    job_init(&job, JOB_CHANNEL_SMS, "en", "", "Code {code} " HASH);
    assert_int_equal(
        templates_render_sms(t, &job, "747723", 5, body, sizeof(body), NULL, err, sizeof(err)), 0);
    assert_string_equal(body, "Code 747723 " HASH); /* already ends with it */
    templates_free(t);

    /* Neither: the text alone, as before. */
    s.app_hash = "";
    t = load_ok(&s);
    job_init(&job, JOB_CHANNEL_SMS, "en", "", NULL);
    assert_int_equal(
        templates_render_sms(t, &job, "747723", 5, body, sizeof(body), NULL, err, sizeof(err)), 0);
    assert_string_equal(body, "Your verification code is 747723. It expires in 5 minutes.");
    templates_free(t);
}

/* The buffer bound: the longest text, host, code and hash fit TEMPLATE_SMS_MAX. */
static void
test_webotp_fits_and_overflows(void **state)
{
    char host[TEMPLATE_HOST_MAX + 1], tmpl[2048], body[TEMPLATE_SMS_MAX], err[160];
    struct templates_settings s = settings(NULL);
    struct templates *t;
    struct job job;
    struct otc o;
    size_t w = 0;

    (void)state;
    /* 253 characters: three labels of 63 and one of 61. */
    memset(host, 'a', TEMPLATE_HOST_MAX);
    host[63] = host[127] = host[191] = '.';
    host[TEMPLATE_HOST_MAX] = '\0';
    assert_int_equal(strlen(host), 253);
    assert_true(templates_host_valid(host, err, sizeof(err)));
    s.webotp_domain = host;
    s.app_hash = HASH;
    t = load_ok(&s);
    /* 470 four-byte characters and a 10-digit code: 480 characters, 1890 bytes. */
    w = 0;
    for (int i = 0; i < 470; i++)
        w += (size_t)snprintf(tmpl + w, sizeof(tmpl) - w, "\xf0\x9f\x98\x80");
    snprintf(tmpl + w, sizeof(tmpl) - w, "{code}");
    job_init(&job, JOB_CHANNEL_SMS, "", "", tmpl);
    assert_int_equal(
        templates_render_sms(t, &job, "1234567890", 5, body, sizeof(body), NULL, err, sizeof(err)),
        0);
    assert_int_equal(spec_parse(body, &o), 0);
    assert_string_equal(o.top, host);
    assert_string_equal(body + strlen(body) - 11, HASH);
    templates_free(t);

    /* templates_bind never writes past size, and leaves the body as it was. */
    strcpy(body, "text 1234");
    assert_int_equal(templates_bind(body, 20, "example.com", "1234", NULL), -1);
    assert_string_equal(body, "text 1234");
    assert_int_equal(templates_bind(body, 9 + 20, "example.com", "1234", NULL), -1);
    assert_int_equal(templates_bind(body, 9 + 20 + 1, "example.com", "1234", NULL), 0);
    assert_string_equal(body, "text 1234\n\n@example.com #1234");
}

static void
test_host_and_hash_validation(void **state)
{
    static const char *const good[] = {"example.com",           "www.example.com", "localhost",
                                       "xn--bcher-kva.example", "a-b.c-d.example", "1password.com"};
    static const char *const bad[] = {"",
                                      "Example.com",
                                      "https://example.com",
                                      "example.com/login",
                                      "example.com:443",
                                      ".example.com",
                                      "example.com.",
                                      "exa..mple.com",
                                      "-example.com",
                                      "example-.com",
                                      "exam_ple.com",
                                      "bücher.example",
                                      "192.168.1.10",
                                      "[::1]",
                                      "example.com #123"};
    char why[160];

    (void)state;
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        if (!templates_host_valid(good[i], why, sizeof(why)))
            fail_msg("\"%s\" refused: %s", good[i], why);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        why[0] = '\0';
        if (templates_host_valid(bad[i], why, sizeof(why)))
            fail_msg("\"%s\" accepted", bad[i]);
        assert_true(why[0] != '\0');
    }
    assert_true(templates_app_hash_valid(HASH));
    assert_true(templates_app_hash_valid("0123456789+"));
    assert_false(templates_app_hash_valid("FA+9qCX9VS"));
    assert_false(templates_app_hash_valid("FA+9qCX9VSuu"));
    assert_false(templates_app_hash_valid("FA-9qCX9VSu"));
    assert_false(templates_app_hash_valid(""));
}

static void
test_check_text(void **state)
{
    char why[160];

    (void)state;
    assert_int_equal(templates_check_text(TEMPLATE_SMS, "{code}", 6, 6, 5, why, sizeof(why)), 0);
    assert_int_equal(
        templates_check_text(TEMPLATE_EMAIL_SUBJECT, "Code", 4, 6, 5, why, sizeof(why)), 0);
    assert_int_equal(
        templates_check_text(TEMPLATE_EMAIL_SUBJECT, "a\rb", 3, 6, 5, why, sizeof(why)), -1);
    assert_string_equal(why, "must be one line");
    assert_int_equal(templates_check_text(TEMPLATE_VOICE, "code", 4, 6, 5, why, sizeof(why)), -1);
    assert_string_equal(why, "must contain {code}");
    /* Not NUL-terminated at len: only len bytes count. */
    assert_int_equal(templates_check_text(TEMPLATE_SMS, "{code}xyz", 6, 6, 5, why, sizeof(why)), 0);
    /* Voice: the code is read out as "1, 2, 3", three characters a digit. */
    {
        char v[480];
        memset(v, 'a', sizeof(v));
        memcpy(v, "{code}", 6);
        /* len - 6 characters and the code read out: 10 of them at 4 digits, 16 at 6, 28 at 10 */
        assert_int_equal(templates_check_text(TEMPLATE_VOICE, v, 476, 4, 5, why, sizeof(why)), 0);
        assert_int_equal(templates_check_text(TEMPLATE_VOICE, v, 477, 4, 5, why, sizeof(why)), -1);
        assert_int_equal(templates_check_text(TEMPLATE_VOICE, v, 470, 6, 5, why, sizeof(why)), 0);
        assert_int_equal(templates_check_text(TEMPLATE_VOICE, v, 471, 6, 5, why, sizeof(why)), -1);
        assert_int_equal(templates_check_text(TEMPLATE_VOICE, v, 458, 10, 5, why, sizeof(why)), 0);
        assert_int_equal(templates_check_text(TEMPLATE_VOICE, v, 459, 10, 5, why, sizeof(why)), -1);
    }
    assert_int_equal(templates_kind_of("email.html"), TEMPLATE_EMAIL_HTML);
    assert_int_equal(templates_kind_of("email.htm"), -1);
    assert_string_equal(templates_file_name(TEMPLATE_EMAIL_SUBJECT), "email_subject.txt");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spec_parser_itself),
        cmocka_unit_test(test_shipped_set_is_complete),
        cmocka_unit_test(test_shipped_english_is_the_old_defaults),
        cmocka_unit_test(test_shipped_sms_fit_one_segment),
        cmocka_unit_test(test_fallback_chains),
        cmocka_unit_test_setup_teardown(test_directory_overrides_and_adds, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_bad_files_refused, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_default_locale_checked, setup_dir, teardown_dir),
        cmocka_unit_test(test_settings_override_the_default_locale),
        cmocka_unit_test(test_settings_checked_by_config),
        cmocka_unit_test(test_reload_swaps_the_set),
        cmocka_unit_test_setup_teardown(test_segment_warnings, setup_dir, teardown_dir),
        cmocka_unit_test(test_webotp_line),
        cmocka_unit_test(test_webotp_fits_and_overflows),
        cmocka_unit_test(test_host_and_hash_validation),
        cmocka_unit_test(test_check_text),
    };

    return cmocka_run_group_tests_name("templates", tests, NULL, NULL);
}

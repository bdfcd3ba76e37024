/*
 * test_config.c: defaults, the .env file syntax, per-key validation, the
 * environment override, cross-field checks, Redis URLs and redaction.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <sodium.h>

#include "config.h"
#include "route.h"
#include "spend.h"

#define KEY_HEX "fe1ab53ccdf61b29f349ed3b1df9a31956eff94b7ce788c1c5c9a71d9029a8e8"
/* The documentation's test vector: public, so refused by config_finish(). */
#define DOC_KEY_HEX "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
#define KEY2_HEX    "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100"

static int
setup(void **state)
{
    struct config *cfg = malloc(sizeof(*cfg));

    if (cfg == NULL)
        return -1;
    config_init(cfg);
    *state = cfg;
    return 0;
}

static int
teardown(void **state)
{
    config_free(*state);
    free(*state);
    return 0;
}

/* err contains every one of the NULL-terminated substrings. */
static void
assert_err_has(const char *err, ...)
{
    va_list ap;
    const char *want;

    va_start(ap, err);
    while ((want = va_arg(ap, const char *)) != NULL)
        if (strstr(err, want) == NULL)
            fail_msg("error \"%s\" does not contain \"%s\"", err, want);
    va_end(ap);
}

/* ---- defaults ---- */

static void
test_defaults(void **state)
{
    struct config *cfg = *state;

    assert_int_equal(cfg->otp_ttl, 300);
    assert_int_equal(cfg->otp_digits, 6);
    assert_int_equal(cfg->verify_attempts, 5);
    assert_int_equal(cfg->status_ttl, 86400);
    assert_int_equal(cfg->block_ms, 5000);
    assert_string_equal(cfg->prefix, "otpd:");
    assert_string_equal(cfg->group, "otpd");
    assert_string_equal(cfg->provider, "");   /* auto: from the credentials set */
    assert_int_equal(cfg->http_max_conns, 0); /* follow the request caps */
    assert_int_equal(cfg->dead_maxlen, 10000);
    assert_string_equal(cfg->consumer, "");
    assert_string_equal(cfg->log_level, "info");
    assert_non_null(strstr(cfg->template, "{code}"));
    assert_null(cfg->hash_key_hex);
    assert_string_equal(cfg->redis_url, "redis://127.0.0.1:6379/0");
    assert_non_null(cfg->redis.host);
    assert_string_equal(cfg->redis.host, "127.0.0.1");
    assert_int_equal(cfg->redis.port, 6379);
    assert_int_equal(cfg->redis.db, 0);
    assert_null(cfg->redis.path);
    assert_null(cfg->redis.password);
    assert_string_equal(cfg->twilio_api_base, "https://api.twilio.com");
    assert_string_equal(cfg->twilio_auth_token, "");
}

/* ---- the .env syntax ---- */

static void
test_parse_syntax(void **state)
{
    struct config *cfg = *state;
    char err[512] = "";
    const char *text = "# otpd settings\n"
                       "\n"
                       "   \n"
                       "  # an indented comment\n"
                       "OTPD_OTP_TTL=600\n"
                       "export OTPD_OTP_DIGITS=8\n"
                       "OTPD_PREFIX = 'app:otp:'\n"
                       "OTPD_TEMPLATE='Code #{code} # not a comment'\n"
                       "TWILIO_AUTH_TOKEN=\"tab\\there \\\"quoted\\\" back\\\\slash\\nline\"\n"
                       "OTPD_GROUP=workers # the consumer group\n"
                       "OTPD_CONSUMER=web#1\n"
                       "OTPD_CA_FILE=/etc/ssl/ca.pem   \n"
                       "OTPD_HASH_KEY=" KEY_HEX "\n"
                       "DEBUG=1\n"
                       "SECRET_KEY=django-insecure-#x=y\n"
                       "DATABASE_URL=\"postgres://u:p@db/app\"\n"
                       "OTPD_VERIFY_ATTEMPTS=3"; /* no final newline */

    assert_int_equal(config_parse_text(cfg, text, "otpd.env", err, sizeof(err)), 0);
    assert_string_equal(err, "");
    assert_int_equal(cfg->otp_ttl, 600);
    assert_int_equal(cfg->otp_digits, 8);
    assert_string_equal(cfg->prefix, "app:otp:");
    assert_string_equal(cfg->template, "Code #{code} # not a comment");
    assert_string_equal(cfg->twilio_auth_token, "tab\there \"quoted\" back\\slash\nline");
    assert_string_equal(cfg->group, "workers");
    assert_string_equal(cfg->consumer, "web#1"); /* '#' without a space before is data */
    assert_string_equal(cfg->ca_file, "/etc/ssl/ca.pem");
    assert_string_equal(cfg->hash_key_hex, KEY_HEX);
    assert_int_equal(cfg->hash_key[0], 0xfe);
    assert_int_equal(cfg->hash_key[31], 0xe8);
    assert_int_equal(cfg->verify_attempts, 3);
}

static void
test_parse_quotes_literal(void **state)
{
    struct config *cfg = *state;
    char err[512] = "";

    /* Single quotes: no escapes; double quotes: a quoted value may carry " #". */
    assert_int_equal(config_parse_text(cfg,
                                       "OTPD_TEMPLATE='a\\nb {code}'  # trailing comment\n"
                                       "TWILIO_ACCOUNT_SID=\"AC # x\"\n"
                                       "MSG91_SENDER_ID=''\n",
                                       "t", err, sizeof(err)),
                     0);
    assert_string_equal(cfg->template, "a\\nb {code}");
    assert_string_equal(cfg->twilio_account_sid, "AC # x");
    assert_string_equal(cfg->msg91_sender_id, "");
}

static void
test_parse_crlf(void **state)
{
    struct config *cfg = *state;
    char err[512] = "";

    assert_int_equal(config_parse_text(cfg,
                                       "# windows\r\n"
                                       "\r\n"
                                       "OTPD_OTP_TTL=120\r\n"
                                       "OTPD_PREFIX=win:\r\n"
                                       "OTPD_GROUP=\"g1\"\r\n",
                                       "crlf.env", err, sizeof(err)),
                     0);
    assert_int_equal(cfg->otp_ttl, 120);
    assert_string_equal(cfg->prefix, "win:");
    assert_string_equal(cfg->group, "g1");
}

static void
test_parse_errors(void **state)
{
    struct config *cfg = *state;
    char err[512] = "";

    assert_int_equal(
        config_parse_text(cfg, "DEBUG=1\n# c\nOTPD_OTP_TLL=300\n", "otpd.env", err, sizeof(err)),
        -1);
    assert_err_has(err, "otpd.env:3: ", "OTPD_OTP_TLL", NULL);

    assert_int_equal(config_parse_text(cfg, "OTPD_TEMPLATE=\"Code {code}\n", "f", err, sizeof(err)),
                     -1);
    assert_err_has(err, "f:1: ", "unterminated quote", NULL);

    assert_int_equal(config_parse_text(cfg, "\n\nOTPD_PREFIX='abc\n", "f", err, sizeof(err)), -1);
    assert_err_has(err, "f:3: ", "unterminated quote", NULL);

    assert_int_equal(config_parse_text(cfg, "OTPD_PREFIX='a'b\n", "f", err, sizeof(err)), -1);
    assert_err_has(err, "f:1: ", "after the closing quote", NULL);

    assert_int_equal(config_parse_text(cfg, "OTPD_OTP_TTL\n", "f", err, sizeof(err)), -1);
    assert_err_has(err, "f:1: ", "KEY=VALUE", NULL);

    /* A bad value names the file, the line and the key. */
    assert_int_equal(
        config_parse_text(cfg, "OTPD_OTP_TTL=60\r\nOTPD_OTP_TTL=29\r\n", "x.env", err, sizeof(err)),
        -1);
    assert_err_has(err, "x.env:2: ", "OTPD_OTP_TTL", "29", NULL);
    assert_int_equal(cfg->otp_ttl, 60); /* the good line applied, the bad one did not */
}

/* ---- config_set ---- */

static void
test_set_errors_name_key(void **state)
{
    static const struct {
        const char *key, *value;
    } bad[] = {
        {"OTPD_OTP_TTL", "29"},
        {"OTPD_OTP_TTL", "3601"},
        {"OTPD_OTP_TTL", "abc"},
        {"OTPD_OTP_TTL", ""},
        {"OTPD_OTP_TTL", "300s"},
        {"OTPD_OTP_DIGITS", "11"},
        {"OTPD_HASH_KEY", "0011"},
        {"OTPD_HASH_KEY", KEY_HEX "00"},
        {"OTPD_HASH_KEY", "zz0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"},
        {"TWILIO_PHONE_NUMBER", "12345"},
        {"TWILIO_PHONE_NUMBER", "+1 415 555 2671"},
        {"REDIS_URL", "http://x"},
        {"OTPD_LOG_LEVEL", "loud"},
        {"OTPD_PREFIX", ""},
        {"OTPD_PREFIX", "has space"},
        {"TWILIO_API_BASE", "http://api.twilio.com"},
        {"TWILIO_STATUS_CALLBACK", "not a url"},
    };
    struct config *cfg = *state;
    char err[512];

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        if (config_set(cfg, bad[i].key, bad[i].value, err, sizeof(err)) != -1)
            fail_msg("%s=%s accepted", bad[i].key, bad[i].value);
        if (strncmp(err, bad[i].key, strlen(bad[i].key)) != 0)
            fail_msg("%s=%s: error \"%s\" does not start with the key", bad[i].key, bad[i].value,
                     err);
    }
    assert_int_equal(config_set(cfg, "NOT_A_KEY", "1", err, sizeof(err)), -1);
    assert_err_has(err, "NOT_A_KEY", NULL);
    assert_int_equal(config_set(cfg, "OTPD_HASH_KEY", "0011", err, sizeof(err)), -1);
    assert_err_has(err, "--gen-key", NULL);

    /* Nothing changed. */
    assert_int_equal(cfg->otp_ttl, 300);
    assert_null(cfg->hash_key_hex);
    assert_string_equal(cfg->redis.host, "127.0.0.1");
    assert_string_equal(cfg->log_level, "info");
    assert_string_equal(cfg->twilio_phone_number, "");
}

static void
test_set_accepts(void **state)
{
    struct config *cfg = *state;
    char err[512] = "";
    unsigned char want[32];

    assert_int_equal(config_set(cfg, "OTPD_OTP_TTL", "30", err, sizeof(err)), 0);
    assert_int_equal(cfg->otp_ttl, 30);
    assert_int_equal(config_set(cfg, "OTPD_OTP_TTL", "3600", err, sizeof(err)), 0);
    assert_int_equal(cfg->otp_ttl, 3600);
    assert_int_equal(config_set(cfg, "OTPD_HASH_KEY", KEY_HEX, err, sizeof(err)), 0);
    assert_int_equal(config_set(cfg, "OTPD_HASH_KEY", KEY2_HEX, err, sizeof(err)), 0);
    assert_string_equal(cfg->hash_key_hex, KEY2_HEX);
    assert_int_equal(sodium_hex2bin(want, 32, KEY2_HEX, 64, NULL, NULL, NULL), 0);
    assert_memory_equal(cfg->hash_key, want, 32);
    assert_int_equal(config_set(cfg, "TWILIO_PHONE_NUMBER", "+14155552671", err, sizeof(err)), 0);
    assert_string_equal(cfg->twilio_phone_number, "+14155552671");
    assert_int_equal(config_set(cfg, "TWILIO_PHONE_NUMBER", "", err, sizeof(err)), 0);
    assert_int_equal(config_set(cfg, "OTPD_LOG_LEVEL", "debug", err, sizeof(err)), 0);
    assert_string_equal(cfg->log_level, "debug");
    assert_int_equal(config_set(cfg, "REDIS_URL", "redis://cache:6380/3", err, sizeof(err)), 0);
    assert_string_equal(cfg->redis_url, "redis://cache:6380/3");
    assert_string_equal(cfg->redis.host, "cache");
    assert_int_equal(cfg->redis.port, 6380);
    assert_int_equal(cfg->redis.db, 3);
    assert_int_equal(
        config_set(cfg, "TWILIO_API_BASE", "https://mock.local:8443", err, sizeof(err)), 0);
    assert_string_equal(cfg->twilio_api_base, "https://mock.local:8443");
}

/* ---- the environment ---- */

static const char *
fake_getenv(const char *name)
{
    static const struct {
        const char *name, *value;
    } env[] = {
        {"OTPD_OTP_TTL", "900"},
        {"OTPD_PREFIX", "env:"},
        {"OTPD_HASH_KEY", KEY2_HEX},
        {"REDIS_URL", "redis://:envpw@redis.internal:6390/5"},
        {"OTPD_BOGUS", "ignored: only table keys are looked up"},
    };

    for (size_t i = 0; i < sizeof(env) / sizeof(env[0]); i++)
        if (strcmp(env[i].name, name) == 0)
            return env[i].value;
    return NULL;
}

static const char *
bad_getenv(const char *name)
{
    return strcmp(name, "OTPD_OTP_DIGITS") == 0 ? "12" : NULL;
}

static void
test_env_overrides_file(void **state)
{
    struct config *cfg = *state;
    char err[512] = "";

    assert_int_equal(config_parse_text(cfg,
                                       "OTPD_OTP_TTL=600\n"
                                       "OTPD_PREFIX=file:\n"
                                       "OTPD_GROUP=filegroup\n"
                                       "OTPD_HASH_KEY=" KEY_HEX "\n",
                                       "f", err, sizeof(err)),
                     0);
    assert_int_equal(config_read_env(cfg, fake_getenv, err, sizeof(err)), 0);
    assert_int_equal(cfg->otp_ttl, 900);
    assert_string_equal(cfg->prefix, "env:");
    assert_string_equal(cfg->group, "filegroup"); /* not in the environment: file wins */
    assert_string_equal(cfg->hash_key_hex, KEY2_HEX);
    assert_int_equal(cfg->hash_key[0], 0xff);
    assert_string_equal(cfg->redis.host, "redis.internal");
    assert_int_equal(cfg->redis.port, 6390);
    assert_int_equal(cfg->redis.db, 5);
    assert_string_equal(cfg->redis.password, "envpw");

    assert_int_equal(config_read_env(cfg, bad_getenv, err, sizeof(err)), -1);
    assert_err_has(err, "environment", "OTPD_OTP_DIGITS", NULL);
    assert_int_equal(cfg->otp_digits, 6);
}

/* ---- config_finish ---- */

static void
test_finish_needs_hash_key(void **state)
{
    struct config *cfg = *state;
    char err[512] = "";

    assert_int_equal(config_finish(cfg, err, sizeof(err)), -1);
    assert_err_has(err, "OTPD_HASH_KEY", "--gen-key", NULL);
}

static void
test_finish_provider_checks(void **state)
{
    struct config *cfg = *state;
    char err[512] = "";

    assert_int_equal(config_set(cfg, "OTPD_HASH_KEY", KEY_HEX, err, sizeof(err)), 0);

    assert_int_equal(config_set(cfg, "OTPD_PROVIDER", "sns", err, sizeof(err)), 0);
    assert_int_equal(config_finish(cfg, err, sizeof(err)), -1);
    assert_err_has(err, "OTPD_PROVIDER", "sns", NULL);

    assert_int_equal(config_set(cfg, "OTPD_PROVIDER", "twilio", err, sizeof(err)), 0);
    assert_int_equal(config_finish(cfg, err, sizeof(err)), -1);
    assert_err_has(err, "TWILIO_ACCOUNT_SID", NULL);
    assert_int_equal(config_set(cfg, "TWILIO_ACCOUNT_SID", "AC0123", err, sizeof(err)), 0);
    assert_int_equal(config_finish(cfg, err, sizeof(err)), -1);
    assert_err_has(err, "TWILIO_AUTH_TOKEN", NULL);
    assert_int_equal(config_set(cfg, "TWILIO_AUTH_TOKEN", "tok", err, sizeof(err)), 0);
    assert_int_equal(config_finish(cfg, err, sizeof(err)), -1);
    assert_err_has(err, "TWILIO_PHONE_NUMBER", NULL);
    assert_int_equal(config_set(cfg, "TWILIO_MESSAGING_SERVICE_SID", "MG1", err, sizeof(err)), 0);
    assert_int_equal(config_finish(cfg, err, sizeof(err)), 0);

    assert_int_equal(config_set(cfg, "OTPD_PROVIDER", "msg91", err, sizeof(err)), 0);
    assert_int_equal(config_finish(cfg, err, sizeof(err)), -1);
    assert_err_has(err, "MSG91_AUTH_KEY", NULL);
    assert_int_equal(config_set(cfg, "MSG91_AUTH_KEY", "k", err, sizeof(err)), 0);
    assert_int_equal(config_set(cfg, "MSG91_TEMPLATE_ID", "t", err, sizeof(err)), 0);
    assert_int_equal(config_finish(cfg, err, sizeof(err)), 0);

    assert_int_equal(config_set(cfg, "OTPD_TEMPLATE", "no placeholder", err, sizeof(err)), 0);
    assert_int_equal(config_finish(cfg, err, sizeof(err)), -1);
    assert_err_has(err, "OTPD_TEMPLATE", "{code}", NULL);
}

/* Keys anyone can read, or with little variety, are refused. */
static void
test_finish_weak_keys(void **state)
{
    struct config *cfg = *state;
    char err[512] = "";
    const char *weak[] = {
        DOC_KEY_HEX,
        "0000000000000000000000000000000000000000000000000000000000000000",
        "4141414141414141414141414141414141414141414141414141414141414141",
        "deadbeefdeadbeefdeadbeefdeadbeefdeadbeefdeadbeefdeadbeefdeadbeef",
    };

    for (size_t i = 0; i < sizeof(weak) / sizeof(weak[0]); i++) {
        assert_int_equal(config_set(cfg, "OTPD_HASH_KEY", weak[i], err, sizeof(err)), 0);
        assert_int_equal(config_finish(cfg, err, sizeof(err)), -1);
        assert_err_has(err, "OTPD_HASH_KEY", "--gen-key", NULL);
    }
    assert_int_equal(config_set(cfg, "OTPD_HASH_KEY", KEY_HEX, err, sizeof(err)), 0);
    assert_int_equal(config_finish(cfg, err, sizeof(err)), 0);
}

/* With OTPD_PROVIDER unset, credentials decide; console only when none are set. */
static void
test_finish_provider_auto(void **state)
{
    struct config *cfg = *state;
    char err[512] = "";

    assert_int_equal(config_set(cfg, "OTPD_HASH_KEY", KEY_HEX, err, sizeof(err)), 0);
    assert_int_equal(config_finish(cfg, err, sizeof(err)), 0);
    assert_string_equal(cfg->provider_default, "console");

    /* The site guide's MSG91 lines alone (no DLT template): refused, never console. */
    assert_int_equal(config_set(cfg, "MSG91_AUTH_KEY", "k", err, sizeof(err)), 0);
    assert_int_equal(config_finish(cfg, err, sizeof(err)), -1);
    assert_err_has(err, "MSG91_TEMPLATE_ID", NULL);
    assert_int_equal(config_set(cfg, "MSG91_TEMPLATE_ID", "t", err, sizeof(err)), 0);
    assert_int_equal(config_finish(cfg, err, sizeof(err)), 0);
    assert_string_equal(cfg->provider_default, "msg91");

    /* Half the Twilio credentials: refused. */
    assert_int_equal(config_set(cfg, "TWILIO_AUTH_TOKEN", "tok", err, sizeof(err)), 0);
    assert_int_equal(config_finish(cfg, err, sizeof(err)), -1);
    assert_err_has(err, "TWILIO_ACCOUNT_SID", NULL);
    /* The site guide's three Twilio lines: Twilio first. */
    assert_int_equal(config_set(cfg, "TWILIO_ACCOUNT_SID", "AC0123", err, sizeof(err)), 0);
    assert_int_equal(config_set(cfg, "TWILIO_PHONE_NUMBER", "+14155550100", err, sizeof(err)), 0);
    assert_int_equal(config_finish(cfg, err, sizeof(err)), 0);
    assert_string_equal(cfg->provider_default, "twilio");

    /* An explicit choice wins, console included. */
    assert_int_equal(config_set(cfg, "OTPD_PROVIDER", "console", err, sizeof(err)), 0);
    assert_int_equal(config_finish(cfg, err, sizeof(err)), 0);
    assert_string_equal(cfg->provider_default, "console");
}

static void
count_warning(void *arg, const char *text)
{
    (void)text;
    ++*(int *)arg;
}

static void
test_finish_weak_settings(void **state)
{
    struct config *cfg = *state;
    char err[512] = "";
    int n = 0;

    assert_int_equal(config_set(cfg, "OTPD_HASH_KEY", KEY_HEX, err, sizeof(err)), 0);
    /* MSG91's path token is its only authentication: short ones are refused. */
    assert_int_equal(config_set(cfg, "MSG91_WEBHOOK_TOKEN", "s3cret", err, sizeof(err)), 0);
    assert_int_equal(config_finish(cfg, err, sizeof(err)), -1);
    assert_err_has(err, "MSG91_WEBHOOK_TOKEN", "32", NULL);
    assert_int_equal(config_set(cfg, "MSG91_WEBHOOK_TOKEN", "0123456789abcdef0123456789abcdef", err,
                                sizeof(err)),
                     0);
    assert_int_equal(config_finish(cfg, err, sizeof(err)), 0);
    /* console in use: one warning */
    config_warnings(cfg, count_warning, &n);
    assert_int_equal(n, 1);
    /* a public metrics address, and callbacks that cannot arrive */
    n = 0;
    assert_int_equal(config_set(cfg, "OTPD_METRICS_ADDR", "0.0.0.0:9464", err, sizeof(err)), 0);
    config_warnings(cfg, count_warning, &n);
    assert_int_equal(n, 2);
    n = 0;
    assert_int_equal(config_set(cfg, "OTPD_METRICS_ADDR", "", err, sizeof(err)), 0);
    assert_int_equal(
        config_set(cfg, "TWILIO_STATUS_CALLBACK", "https://x.example/cb", err, sizeof(err)), 0);
    config_warnings(cfg, count_warning, &n);
    assert_int_equal(n, 2);
    assert_int_equal(config_twilio_callbacks(cfg), 0);
    assert_int_equal(config_set(cfg, "OTPD_METRICS_ADDR", "127.0.0.1:9464", err, sizeof(err)), 0);
    assert_int_equal(config_twilio_callbacks(cfg), 1);
}

static void
test_finish_consumer(void **state)
{
    struct config *cfg = *state;
    char err[512] = "", pid[32];

    assert_int_equal(config_set(cfg, "OTPD_HASH_KEY", KEY_HEX, err, sizeof(err)), 0);
    assert_int_equal(config_finish(cfg, err, sizeof(err)), 0);
    assert_non_null(strchr(cfg->consumer, ':'));
    snprintf(pid, sizeof(pid), ":%ld", (long)getpid());
    assert_true(strlen(cfg->consumer) > strlen(pid));
    assert_string_equal(cfg->consumer + strlen(cfg->consumer) - strlen(pid), pid);

    /* An explicit consumer is kept. */
    assert_int_equal(config_set(cfg, "OTPD_CONSUMER", "worker-7", err, sizeof(err)), 0);
    assert_int_equal(config_finish(cfg, err, sizeof(err)), 0);
    assert_string_equal(cfg->consumer, "worker-7");
}

static void
test_load_file_and_env(void **state)
{
    struct config *cfg = *state;
    char path[] = "/tmp/otpd-test-config-XXXXXX", err[512] = "";
    int fd = mkstemp(path);
    const char *text = "OTPD_OTP_TTL=600\nOTPD_GROUP=g\nOTPD_HASH_KEY=" KEY_HEX "\n";

    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    assert_int_equal(config_load(cfg, path, fake_getenv, err, sizeof(err)), 0);
    assert_int_equal(cfg->otp_ttl, 900);
    assert_string_equal(cfg->group, "g");
    assert_string_equal(cfg->hash_key_hex, KEY2_HEX);
    assert_non_null(strchr(cfg->consumer, ':'));
    unlink(path);

    assert_int_equal(config_read_file(cfg, path, err, sizeof(err)), -1);
    assert_err_has(err, path, NULL);
}

/* ---- Sentinels ---- */

static void
test_sentinels_parse(void **state)
{
    struct sentinel_addr sa[SENTINELS_MAX];
    char err[256] = "";

    (void)state;
    assert_int_equal(config_parse_sentinels("", sa, SENTINELS_MAX, err, sizeof(err)), 0);
    assert_int_equal(config_parse_sentinels(" 10.0.0.1:26380 , s2.example.com,[::1]:5 ", sa,
                                            SENTINELS_MAX, err, sizeof(err)),
                     3);
    assert_string_equal(sa[0].host, "10.0.0.1");
    assert_int_equal(sa[0].port, 26380);
    assert_string_equal(sa[1].host, "s2.example.com");
    assert_int_equal(sa[1].port, 26379); /* Sentinel's own port when left out */
    assert_string_equal(sa[2].host, "::1");
    assert_int_equal(sa[2].port, 5);
}

static void
test_sentinels_refused(void **state)
{
    static const struct {
        const char *spec, *why;
    } bad[] = {
        {"a:1,,b:2", "empty entry"},
        {"a:99999", "not host:port"},
        {"a:0", "bad port"},
        {"user:pw@a:1", "OTPD_REDIS_SENTINEL_PASSWORD"},
        {"a:1/2", "not host:port"},
        {"a:1?x=1", "not host:port"},
        {"a b:1", "not host:port"},
        {"a:1,b:1,c:1,d:1,e:1,f:1,g:1,h:1,i:1,j:1,k:1,l:1,m:1,n:1,o:1,p:1,q:1", "more than 16"},
    };
    struct sentinel_addr sa[SENTINELS_MAX];
    char err[256];

    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        if (config_parse_sentinels(bad[i].spec, sa, SENTINELS_MAX, err, sizeof(err)) != -1)
            fail_msg("\"%s\" was accepted", bad[i].spec);
        assert_err_has(err, bad[i].why, NULL);
    }
}

static void
test_sentinels_need_a_tcp_url(void **state)
{
    struct config *cfg = *state;
    char err[512] = "";

    assert_int_equal(config_set(cfg, "OTPD_HASH_KEY", KEY2_HEX, err, sizeof(err)), 0);
    assert_int_equal(config_set(cfg, "OTPD_REDIS_SENTINELS", "10.0.0.1,10.0.0.2", err, sizeof(err)),
                     0);
    assert_int_equal(config_finish(cfg, err, sizeof(err)), 0);
    assert_int_equal(cfg->nsentinels, 2);
    assert_string_equal(cfg->redis_master_name, "mymaster");
    assert_int_equal(config_set(cfg, "REDIS_URL", "unix:///run/redis.sock", err, sizeof(err)), 0);
    assert_int_equal(config_finish(cfg, err, sizeof(err)), -1);
    assert_err_has(err, "OTPD_REDIS_SENTINELS", "unix socket", NULL);
}

/* ---- Redis URLs ---- */

static void
test_redis_url_valid(void **state)
{
    struct redis_addr a;
    char err[256] = "";

    (void)state;
    assert_int_equal(config_parse_redis_url("redis://127.0.0.1:6380/2", &a, err, sizeof(err)), 0);
    assert_string_equal(a.host, "127.0.0.1");
    assert_int_equal(a.port, 6380);
    assert_int_equal(a.db, 2);
    assert_null(a.path);
    assert_null(a.password);
    assert_null(a.username);
    config_redis_addr_free(&a);

    assert_int_equal(config_parse_redis_url("redis://:pa%40ss@h:1/0", &a, err, sizeof(err)), 0);
    assert_string_equal(a.host, "h");
    assert_int_equal(a.port, 1);
    assert_int_equal(a.db, 0);
    assert_non_null(a.password);
    assert_string_equal(a.password, "pa@ss");
    assert_null(a.username);
    config_redis_addr_free(&a);

    assert_int_equal(config_parse_redis_url("redis://user:pw@h/3", &a, err, sizeof(err)), 0);
    assert_non_null(a.username);
    assert_string_equal(a.username, "user");
    assert_string_equal(a.password, "pw");
    assert_string_equal(a.host, "h");
    assert_int_equal(a.port, 6379);
    assert_int_equal(a.db, 3);
    config_redis_addr_free(&a);

    assert_int_equal(config_parse_redis_url("redis://h", &a, err, sizeof(err)), 0);
    assert_string_equal(a.host, "h");
    assert_int_equal(a.port, 6379);
    assert_int_equal(a.db, 0);
    config_redis_addr_free(&a);

    assert_int_equal(config_parse_redis_url("redis://h/", &a, err, sizeof(err)), 0);
    assert_int_equal(a.db, 0);
    config_redis_addr_free(&a);

    assert_int_equal(config_parse_redis_url("unix:///tmp/r.sock", &a, err, sizeof(err)), 0);
    assert_null(a.host);
    assert_non_null(a.path);
    assert_string_equal(a.path, "/tmp/r.sock");
    assert_int_equal(a.db, 0);
    config_redis_addr_free(&a);

    assert_int_equal(config_parse_redis_url("unix:///tmp/r.sock?db=4", &a, err, sizeof(err)), 0);
    assert_string_equal(a.path, "/tmp/r.sock");
    assert_int_equal(a.db, 4);
    config_redis_addr_free(&a);
    /* config_redis_addr_free leaves a zeroed address. */
    assert_null(a.host);
    assert_null(a.path);
}

static void
test_redis_url_errors(void **state)
{
    static const char *const bad[] = {
        "redis://h:99999",
        "redis://h:0",
        "redis://h/x",
        "redis://h/-1",
        "redis://h/1/2",
        "ftp://h",
        "http://x",
        "rediss://h",
        "unix://relative",
        "unix:///tmp/r.sock?db=x",
        "",
        "not a url",
    };
    struct redis_addr a;
    char err[256];

    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        if (config_parse_redis_url(bad[i], &a, err, sizeof(err)) != -1)
            fail_msg("\"%s\" accepted", bad[i]);
        if (err[0] == '\0')
            fail_msg("\"%s\": no reason given", bad[i]);
        /* Failure leaves nothing to free. */
        assert_null(a.host);
        assert_null(a.path);
        assert_null(a.password);
        assert_null(a.username);
    }
    assert_int_equal(config_parse_redis_url("redis://h/x", &a, err, sizeof(err)), -1);
    assert_err_has(err, "db", NULL);
    assert_int_equal(config_parse_redis_url("ftp://h", &a, err, sizeof(err)), -1);
    assert_err_has(err, "scheme", NULL);
    assert_int_equal(config_parse_redis_url("unix://relative", &a, err, sizeof(err)), -1);
    assert_err_has(err, "absolute", NULL);
}

static void
test_redis_url_redacted(void **state)
{
    struct config *cfg = *state;
    char err[256] = "", buf[512];

    assert_string_equal(config_redis_url_redacted(cfg, buf, sizeof(buf)),
                        "redis://127.0.0.1:6379/0");

    assert_int_equal(config_set(cfg, "REDIS_URL", "redis://:s3cr3tpw@h:6380/2", err, sizeof(err)),
                     0);
    config_redis_url_redacted(cfg, buf, sizeof(buf));
    assert_null(strstr(buf, "s3cr3tpw"));
    assert_non_null(strstr(buf, "***"));
    assert_non_null(strstr(buf, "h:6380/2"));

    assert_int_equal(config_set(cfg, "REDIS_URL", "redis://alice:pa%40ss@h/3", err, sizeof(err)),
                     0);
    config_redis_url_redacted(cfg, buf, sizeof(buf));
    assert_null(strstr(buf, "pa@ss"));
    assert_null(strstr(buf, "pa%40ss"));
    assert_non_null(strstr(buf, "***"));

    assert_int_equal(config_set(cfg, "REDIS_URL", "unix:///run/redis.sock?db=4", err, sizeof(err)),
                     0);
    assert_string_equal(config_redis_url_redacted(cfg, buf, sizeof(buf)),
                        "unix:///run/redis.sock?db=4");
}

/* ---- config_print ---- */

static void
test_print_redacts_secrets(void **state)
{
    struct config *cfg = *state;
    char err[256] = "", *out = NULL;
    size_t outlen = 0;
    FILE *f;

    assert_int_equal(config_parse_text(cfg,
                                       "OTPD_HASH_KEY=" KEY_HEX "\n"
                                       "REDIS_URL=redis://:redispw9@h:6379/1\n"
                                       "TWILIO_ACCOUNT_SID=AC1234\n"
                                       "TWILIO_AUTH_TOKEN=twiliotok5\n"
                                       "MSG91_AUTH_KEY=msgkey77\n"
                                       "OTPD_OTP_TTL=420\n",
                                       "f", err, sizeof(err)),
                     0);
    f = open_memstream(&out, &outlen);
    assert_non_null(f);
    config_print(cfg, f);
    fclose(f);
    assert_non_null(out);

    assert_null(strstr(out, KEY_HEX));
    assert_null(strstr(out, "000102030405")); /* not even a prefix of it */
    assert_null(strstr(out, "twiliotok5"));
    assert_null(strstr(out, "msgkey77"));
    assert_null(strstr(out, "redispw9"));
    /* The rest is there, and a set secret says so. */
    assert_non_null(strstr(out, "OTPD_OTP_TTL=420\n"));
    assert_non_null(strstr(out, "TWILIO_ACCOUNT_SID=\"AC1234\"\n"));
    assert_non_null(strstr(out, "OTPD_HASH_KEY=(set, redacted)\n"));
    assert_non_null(strstr(out, "TWILIO_AUTH_TOKEN=(set, redacted)\n"));
    assert_non_null(strstr(out, "MSG91_AUTH_KEY=(set, redacted)\n"));
    assert_non_null(strstr(out, "REDIS_URL="));
    free(out);
}

/* ---- config_print_example ---- */

/* The generated example, uncommented and with a key filled in, is the defaults. */
static void
test_example_round_trips(void **state)
{
    struct config *cfg = *state, fresh;
    char *ex = NULL, *text, *w, *a = NULL, *b = NULL, err[512] = "";
    size_t exlen = 0, alen = 0, blen = 0;
    int keys = 0;
    FILE *f;

    f = open_memstream(&ex, &exlen);
    assert_non_null(f);
    config_print_example(f);
    fclose(f);

    /* "#KEY=value" lines become settings; prose comments stay comments. */
    text = malloc(exlen + 128);
    assert_non_null(text);
    w = text;
    for (char *line = strtok(ex, "\n"); line != NULL; line = strtok(NULL, "\n")) {
        if (strncmp(line, "#OTPD_HASH_KEY=", 15) == 0) {
            w += sprintf(w, "OTPD_HASH_KEY=%s\n", KEY_HEX);
        } else if (line[0] == '#' && line[1] >= 'A' && line[1] <= 'Z' && strchr(line, '=')) {
            w += sprintf(w, "%s\n", line + 1);
            keys++;
        } else {
            assert_true(line[0] == '#');
            w += sprintf(w, "%s\n", line);
        }
    }
    assert_true(keys >= 25);
    config_init(&fresh);
    if (config_parse_text(&fresh, text, "example", err, sizeof(err)) != 0)
        fail_msg("generated example does not parse: %s", err);
    assert_int_equal(config_set(cfg, "OTPD_HASH_KEY", KEY_HEX, err, sizeof(err)), 0);

    f = open_memstream(&a, &alen);
    config_print(cfg, f);
    fclose(f);
    f = open_memstream(&b, &blen);
    config_print(&fresh, f);
    fclose(f);
    assert_string_equal(a, b);

    config_free(&fresh);
    free(a);
    free(b);
    free(text);
    free(ex);
}

/* ---- SMS pumping and spend ---- */

static void
test_prices_budgets_and_block_list(void **state)
{
    struct config *cfg = *state;
    char err[512] = "";

    assert_int_equal(config_set(cfg, "OTPD_HASH_KEY", KEY_HEX, err, sizeof(err)), 0);
    assert_int_equal(
        config_set(cfg, "OTPD_SMS_PRICES", "44=0.0524; 91=0.0827;*=0.1", err, sizeof(err)), 0);
    assert_int_equal(config_set(cfg, "OTPD_DAILY_SPEND_BUDGET", "50", err, sizeof(err)), 0);
    assert_int_equal(
        config_set(cfg, "OTPD_COUNTRY_DAILY_SPEND_BUDGET", "91=20.5;*=5", err, sizeof(err)), 0);
    assert_int_equal(config_set(cfg, "OTPD_BLOCKED_PREFIXES", "+88216, 4470", err, sizeof(err)), 0);
    assert_int_equal(config_finish(cfg, err, sizeof(err)), 0);
    /* Micro-units: 0.0524 is 52400, 50 is 50,000,000. */
    assert_int_equal(route_country_value(&cfg->prices, "44"), 52400);
    assert_int_equal(route_country_value(&cfg->prices, "1"), 100000);
    assert_int_equal(cfg->spend_budget, 50000000);
    assert_int_equal(route_country_value(&cfg->spend_budgets, "91"), 20500000);
    assert_int_equal(cfg->blocked.n, 2);
    assert_string_equal(route_prefix_match(&cfg->blocked, "+882161234567"), "88216");
    assert_string_equal(route_prefix_match(&cfg->blocked, "+447012345678"), "4470");
    assert_null(route_prefix_match(&cfg->blocked, "+447912345678"));
    assert_int_equal(cfg->fraud_prefix_digits, 6);
    assert_int_equal(cfg->fraud_min_conversion, 25);
}

static void
test_budget_needs_a_star_price(void **state)
{
    struct config *cfg = *state;
    char err[512] = "";

    assert_int_equal(config_set(cfg, "OTPD_HASH_KEY", KEY_HEX, err, sizeof(err)), 0);
    assert_int_equal(config_set(cfg, "OTPD_SMS_PRICES", "44=0.05", err, sizeof(err)), 0);
    assert_int_equal(config_set(cfg, "OTPD_DAILY_SPEND_BUDGET", "10", err, sizeof(err)), 0);
    assert_int_equal(config_finish(cfg, err, sizeof(err)), -1);
    assert_err_has(err, "spend budget", "OTPD_SMS_PRICES", "\"*\"", NULL);
}

static void
test_bad_money_and_prefixes(void **state)
{
    static const char *const bad[][3] = {
        {"OTPD_SMS_PRICES", "44=free", "OTPD_SMS_PRICES"},
        {"OTPD_SMS_PRICES", "44=-0.05", "OTPD_SMS_PRICES"},
        {"OTPD_SMS_PRICES", "4=0.05", "not a country calling code"},
        {"OTPD_DAILY_SPEND_BUDGET", "12,50", "OTPD_DAILY_SPEND_BUDGET"},
        {"OTPD_BLOCKED_PREFIXES", "+0123", "OTPD_BLOCKED_PREFIXES"},
        {"OTPD_BLOCKED_PREFIXES", "+44x", "+DIGITS"},
        {"OTPD_BLOCKED_PREFIXES", "+1234567890123456", "OTPD_BLOCKED_PREFIXES"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct config cfg;
        char err[512] = "";
        config_init(&cfg);
        assert_int_equal(config_set(&cfg, "OTPD_HASH_KEY", KEY_HEX, err, sizeof(err)), 0);
        assert_int_equal(config_set(&cfg, "OTPD_SMS_PRICES", "*=0.05", err, sizeof(err)), 0);
        assert_int_equal(config_set(&cfg, bad[i][0], bad[i][1], err, sizeof(err)), 0);
        assert_int_equal(config_finish(&cfg, err, sizeof(err)), -1);
        assert_err_has(err, bad[i][2], NULL);
        config_free(&cfg);
    }
    (void)state;
}

static void
test_money_format(void **state)
{
    char buf[32];

    assert_string_equal(spend_format(7900, buf, sizeof(buf)), "0.0079");
    assert_string_equal(spend_format(50000000, buf, sizeof(buf)), "50.00");
    assert_string_equal(spend_format(-15800, buf, sizeof(buf)), "-0.0158");
    assert_string_equal(spend_format(1, buf, sizeof(buf)), "0.000001");
    assert_int_equal(route_parse_money("0.000001"), 1);
    assert_int_equal(route_parse_money(".5"), 500000);
    assert_int_equal(route_parse_money(""), -1);
    assert_int_equal(route_parse_money("-1"), -1);
    (void)state;
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_defaults, setup, teardown),
        cmocka_unit_test_setup_teardown(test_parse_syntax, setup, teardown),
        cmocka_unit_test_setup_teardown(test_parse_quotes_literal, setup, teardown),
        cmocka_unit_test_setup_teardown(test_parse_crlf, setup, teardown),
        cmocka_unit_test_setup_teardown(test_parse_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_set_errors_name_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_set_accepts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_env_overrides_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_finish_needs_hash_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_finish_provider_checks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_finish_weak_keys, setup, teardown),
        cmocka_unit_test_setup_teardown(test_finish_provider_auto, setup, teardown),
        cmocka_unit_test_setup_teardown(test_finish_weak_settings, setup, teardown),
        cmocka_unit_test_setup_teardown(test_finish_consumer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_load_file_and_env, setup, teardown),
        cmocka_unit_test(test_redis_url_valid),
        cmocka_unit_test(test_redis_url_errors),
        cmocka_unit_test_setup_teardown(test_redis_url_redacted, setup, teardown),
        cmocka_unit_test(test_sentinels_parse),
        cmocka_unit_test(test_sentinels_refused),
        cmocka_unit_test_setup_teardown(test_sentinels_need_a_tcp_url, setup, teardown),
        cmocka_unit_test_setup_teardown(test_print_redacts_secrets, setup, teardown),
        cmocka_unit_test_setup_teardown(test_example_round_trips, setup, teardown),
        cmocka_unit_test_setup_teardown(test_prices_budgets_and_block_list, setup, teardown),
        cmocka_unit_test_setup_teardown(test_budget_needs_a_star_price, setup, teardown),
        cmocka_unit_test(test_bad_money_and_prefixes),
        cmocka_unit_test(test_money_format),
    };

    if (sodium_init() < 0) {
        fprintf(stderr, "sodium_init failed\n");
        return 1;
    }
    return cmocka_run_group_tests_name("config", tests, NULL, NULL);
}

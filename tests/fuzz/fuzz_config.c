/*
 * fuzz_config.c: config_parse_text() (the .env syntax) and
 * config_parse_redis_url() on arbitrary text.
 *
 * Invariants: a parse that succeeds leaves every value inside the bounds
 * of config.c's table (repeated here on purpose: a table edit that widens
 * a bound should be a conscious one) and a usable Redis address; a parse
 * that fails says "name:line: why"; config_finish() success implies a
 * template that renders; a failed Redis URL parse leaves nothing behind.
 * Always config_free(): LeakSanitizer checks the rest.
 */
#include <stdint.h>

#include <sodium.h>

#include "config.h"
#include "fuzz_common.h"
#include "job.h"
#include "log.h"
#include "otp.h"

static FILE *devnull;

static void
check_redis(const struct redis_addr *a)
{
    CHECK((a->host == NULL) != (a->path == NULL));
    if (a->host != NULL) {
        CHECK(a->host[0] != '\0' && a->host[0] != '[');
        CHECK(a->port >= 1 && a->port <= 65535);
    } else {
        CHECK(a->path[0] == '/' && a->path[1] != '\0');
    }
    CHECK(a->db >= 0 && a->db <= 1000000);
    CHECK(a->username == NULL || a->username[0] != '\0');
}

static void
check_len(const char *s, size_t min, size_t max)
{
    CHECK(s != NULL);
    size_t n = strlen(s);
    CHECK(n >= min && n <= max);
}

static int
name_ok(const char *s)
{
    return strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.:{}-") ==
           strlen(s);
}

static void
check_config(const struct config *c)
{
    check_redis(&c->redis);
    CHECK(c->redis_url != NULL);
    check_len(c->prefix, 1, 64);
    CHECK(name_ok(c->prefix));
    check_len(c->group, 1, 64);
    CHECK(name_ok(c->group));
    check_len(c->consumer, 0, 128);
    check_len(c->provider, 0, 32); /* empty: chosen from the credentials */
    check_len(c->template, 1, 1920);
    check_len(c->metrics_addr, 0, 128);
    check_len(c->ca_file, 0, 4096);
    check_len(c->twilio_account_sid, 0, 64);
    check_len(c->twilio_auth_token, 0, 128);
    check_len(c->twilio_messaging_service_sid, 0, 64);
    check_len(c->msg91_auth_key, 0, 128);
    check_len(c->msg91_sender_id, 0, 16);
    check_len(c->msg91_template_id, 0, 64);
    check_len(c->msg91_code_var, 1, 32);
    CHECK(name_ok(c->msg91_code_var));
    CHECK(c->twilio_phone_number != NULL);
    CHECK(c->twilio_phone_number[0] == '\0' || job_phone_valid(c->twilio_phone_number));
    CHECK(c->log_level != NULL && log_level_parse(c->log_level) >= 0);
    CHECK(c->twilio_status_callback && c->twilio_api_base && c->msg91_api_base);
    CHECK(c->otp_ttl >= 30 && c->otp_ttl <= 3600);
    CHECK(c->otp_digits >= 4 && c->otp_digits <= 10);
    CHECK(c->verify_attempts >= 1 && c->verify_attempts <= 20);
    CHECK(c->status_ttl >= 60 && c->status_ttl <= 30 * 86400);
    CHECK(c->events_maxlen >= 100 && c->events_maxlen <= 100000000);
    CHECK(c->max_inflight >= 1 && c->max_inflight <= 100000);
    CHECK(c->batch >= 1 && c->batch <= 10000);
    CHECK(c->block_ms >= 100 && c->block_ms <= 60000);
    CHECK(c->shutdown_timeout_ms >= 0 && c->shutdown_timeout_ms <= 600000);
    CHECK(c->claim_idle_ms >= 500 && c->claim_idle_ms <= 3600000);
    CHECK(c->heartbeat_ms >= 100 && c->heartbeat_ms <= 60000);
    CHECK(c->http_connect_timeout_ms >= 100 && c->http_connect_timeout_ms <= 60000);
    CHECK(c->http_timeout_ms >= 500 && c->http_timeout_ms <= 120000);
    CHECK(c->http_max_conns >= 0 && c->http_max_conns <= 100000);
    CHECK(c->http_max_clients >= 1 && c->http_max_clients <= 100000);
    CHECK(c->dead_maxlen >= 100 && c->dead_maxlen <= 10000000);
    CHECK(c->max_clock_skew_s >= 0 && c->max_clock_skew_s <= 3600);
    CHECK(c->retry_base_ms >= 10 && c->retry_base_ms <= 60000);
    CHECK(c->retry_max_ms >= 100 && c->retry_max_ms <= 600000);
    CHECK(c->provider_recheck_ms >= 100 && c->provider_recheck_ms <= 3600000);
    if (c->hash_key_hex != NULL && c->hash_key_hex[0] != '\0') {
        unsigned char bin[32];
        size_t binlen = 0;
        CHECK(strlen(c->hash_key_hex) == 64);
        CHECK(sodium_hex2bin(bin, sizeof(bin), c->hash_key_hex, 64, NULL, &binlen, NULL) == 0);
        CHECK(binlen == 32 && memcmp(bin, c->hash_key, 32) == 0);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = fuzz_strndup(data, size);
    char err[512];
    struct config cfg;

    if (devnull == NULL && (devnull = fopen("/dev/null", "w")) == NULL)
        abort();

    /* 1. The whole input as a configuration file. */
    config_init(&cfg);
    memset(err, 0, sizeof(err));
    int rc = config_parse_text(&cfg, text, "fuzz", err, sizeof(err));
    CHECK(rc == 0 || rc == -1);
    CHECK(NUL_IN(err));
    if (rc < 0) {
        CHECK(strncmp(err, "fuzz:", 5) == 0 && err[5] >= '1' && err[5] <= '9');
    } else {
        CHECK(err[0] == '\0');
    }
    /* Whatever happened, the configuration is still a consistent one. */
    check_config(&cfg);
    config_print(&cfg, devnull);
    char redacted[1024];
    config_redis_url_redacted(&cfg, redacted, sizeof(redacted));
    /* The log form of the URL never shows the password. */
    CHECK(NUL_IN(redacted));
    if (cfg.redis.password != NULL && cfg.redis.host != NULL)
        CHECK(strstr(redacted, ":***@") != NULL);
    if (rc == 0 && config_finish(&cfg, err, sizeof(err)) == 0) {
        char why[128];
        CHECK(otp_template_check(cfg.template, cfg.otp_digits, (cfg.otp_ttl + 59) / 60, why,
                                 sizeof(why)) == 0);
        CHECK(cfg.consumer[0] != '\0');
        CHECK(cfg.provider[0] == '\0' || strcmp(cfg.provider, "console") == 0 ||
              strcmp(cfg.provider, "twilio") == 0 || strcmp(cfg.provider, "msg91") == 0);
        /* A provider is always decided, and console never while credentials are set. */
        CHECK(cfg.provider_default != NULL);
        if (cfg.provider[0] == '\0' && cfg.twilio_account_sid[0] && cfg.twilio_auth_token[0])
            CHECK(strcmp(cfg.provider_default, "twilio") == 0);
        CHECK(!(cfg.twilio_account_sid[0] || cfg.twilio_auth_token[0]) ||
              (cfg.twilio_account_sid[0] && cfg.twilio_auth_token[0]));
        check_config(&cfg);
    }
    config_free(&cfg);

    /* 2. The input (up to its first NUL) as a Redis URL. */
    struct redis_addr a;
    memset(&a, 0x5a, sizeof(a));
    err[0] = '\0';
    rc = config_parse_redis_url(text, &a, err, sizeof(err));
    CHECK(rc == 0 || rc == -1);
    if (rc == 0) {
        check_redis(&a);
    } else {
        CHECK(err[0] != '\0');
        CHECK(a.host == NULL && a.path == NULL && a.password == NULL && a.username == NULL);
    }
    config_redis_addr_free(&a);
    free(text);
    return 0;
}

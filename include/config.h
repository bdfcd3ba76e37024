/*
 * config.h: the configuration, read from a KEY=VALUE file in the Django
 * .env syntax and overridden by environment variables of the same names.
 * One table in config.c defines every key: its type, default, bounds and
 * help text.
 */
#ifndef OTPD_CONFIG_H
#define OTPD_CONFIG_H

#include <stddef.h>
#include <stdio.h>

#include "route.h"

struct templates;

struct redis_addr {
    char *host; /* NULL for a unix socket */
    int port;
    char *path; /* unix socket path, or NULL */
    char *password;
    char *username;
    int db;
};

#define SENTINELS_MAX 16

/* A Redis Sentinel to ask for the master's address. */
struct sentinel_addr {
    char host[256];
    int port;
};

struct config {
    char *redis_url;
    struct redis_addr redis;
    /* Redis under Sentinel (empty list: REDIS_URL's host is the server). */
    char *redis_sentinels_spec;
    char *redis_master_name;
    char *redis_sentinel_password;
    int redis_wait_replicas;   /* WAIT for this many replicas before texting (0: off) */
    int redis_wait_timeout_ms; /* how long one WAIT may take */
    char *hash_key_hex;
    unsigned char hash_key[32];
    char *prefix;
    char *group;
    char *consumer;
    char *provider;
    int otp_ttl;
    int otp_digits;
    int verify_attempts;
    int max_sends_per_code;
    char *template;
    /* The e-mail channel, under Django's own setting names. */
    char *email_host;
    int email_port;
    char *email_host_user, *email_host_password;
    int email_use_tls, email_use_ssl;
    int email_timeout; /* seconds */
    char *default_from_email;
    int email_max_inflight;
    char *email_subject, *email_text, *email_html;
    /* The texts by locale (templates.h), and the SMS's WebOTP line. */
    char *templates_dir;
    char *default_locale;
    char *webotp_domain;
    char *android_app_hash;
    int status_ttl;
    int events_maxlen;
    int max_inflight;
    int batch;
    int block_ms;
    int shutdown_timeout_ms;
    char *log_level;
    char *ca_file;
    int http_connect_timeout_ms;
    int http_timeout_ms;
    int http_max_conns;
    int http_max_clients;
    int dead_maxlen;
    int max_clock_skew_s;
    char *twilio_account_sid;
    char *twilio_auth_token;
    char *twilio_phone_number;
    char *twilio_messaging_service_sid;
    char *twilio_status_callback;
    char *twilio_voice_status_callback;
    int twilio_voice_rate;
    int voice_repeat;
    char *fallback_spec;  /* OTPD_FALLBACK: channels after every SMS job without its own */
    int fallback_delay_s; /* how long a code may stay unverified before the next channel */
    int fallback[2], nfallback;
    char *twilio_api_base;
    char *msg91_auth_key;
    char *msg91_sender_id;
    char *msg91_template_id;
    char *msg91_api_base;
    char *msg91_code_var;
    int retry_base_ms;
    int retry_max_ms;
    int provider_recheck_ms;
    int claim_idle_ms;
    int heartbeat_ms;
    char *metrics_addr;
    char *routes_spec;
    char *allowed_spec;
    char *budget_spec;
    int limit_interval_s;
    int limit_per_hour;
    int limit_per_day;
    int limit_global_per_hour;
    int twilio_rate;
    int twilio_max_inflight;
    int msg91_rate;
    int msg91_max_inflight;
    int circuit_failures;
    int circuit_cooloff_ms;
    char *msg91_webhook_token;
    int dlr_poll_horizon_s;
    int dlr_poll_first_ms;
    /* The SMS-pumping model (docs/fraud.md). */
    int fraud_prefix_digits;
    int fraud_window_s, fraud_settle_s, fraud_baseline_s, fraud_pause_s;
    int fraud_spike_factor, fraud_min_codes, fraud_min_conversion;
    int fraud_auto_pause;
    char *blocked_prefixes_spec;
    /* What SMS costs, and the daily money budgets. */
    char *sms_prices_spec;
    char *price_currency;
    char *spend_budget_spec;
    char *country_spend_budget_spec;
    /* derived by config_finish() */
    struct sentinel_addr sentinels[SENTINELS_MAX];
    int nsentinels;
    struct route_table routes;
    struct country_limits allowed;
    struct country_limits budgets;
    struct prefix_list blocked;
    struct country_limits prices;        /* micro-units per SMS segment */
    long spend_budget;                   /* micro-units a day, -1 for none */
    struct country_limits spend_budgets; /* micro-units a day per country */
    const char *provider_default;        /* OTPD_PROVIDER, or the one chosen for it */
    /*
     * Every text otpd sends, by locale and kind (templates_pick); built by
     * config_finish, owned, replaced whole by a reload.
     */
    struct templates *templates;
};

typedef const char *config_env_fn(const char *name);

void config_init(struct config *cfg);
void config_free(struct config *cfg);
/* Apply one KEY=VALUE; err names the key on failure. */
int config_set(struct config *cfg, const char *key, const char *value, char *err, size_t errlen);
/* Parse .env-syntax text; errors carry "name:line: text". */
int config_parse_text(struct config *cfg, const char *text, const char *name, char *err,
                      size_t errlen);
int config_read_file(struct config *cfg, const char *path, char *err, size_t errlen);
int config_read_env(struct config *cfg, config_env_fn *getenv_fn, char *err, size_t errlen);
/* Cross-field checks and derived values; the daemon never runs without them. */
int config_finish(struct config *cfg, char *err, size_t errlen);
/* Defaults, then the file (if any), then the environment, then checks. */
int config_load(struct config *cfg, const char *path, config_env_fn *getenv_fn, char *err,
                size_t errlen);
void config_print(const struct config *cfg, FILE *out);
typedef void config_warn_fn(void *arg, const char *text);
/* Settings that are valid but probably not meant (console provider, public metrics, ...). */
void config_warnings(const struct config *cfg, config_warn_fn *warn, void *arg);
/* The provider's credentials are set (the set opens it; OTPD_PROVIDER may default to it). */
int config_twilio_configured(const struct config *cfg);
int config_msg91_configured(const struct config *cfg);
/* Twilio posts status callbacks and otpd listens for them (else otpd polls). */
int config_twilio_callbacks(const struct config *cfg);
/* Calls need a Twilio number to call from (a Messaging Service cannot place calls). */
int config_twilio_voice_configured(const struct config *cfg);
int config_twilio_voice_callbacks(const struct config *cfg);
/* SIGHUP: apply what can change live; returns how many keys changed. */
int config_reload(struct config *cur, struct config *next);
void config_print_example(FILE *out);

/* "host:port,host:port,..." (port 26379 if left out; [v6]:port) into out[]. */
int config_parse_sentinels(const char *spec, struct sentinel_addr *out, int max, char *err,
                           size_t errlen);
int config_parse_redis_url(const char *url, struct redis_addr *addr, char *err, size_t errlen);
void config_redis_addr_free(struct redis_addr *addr);
/* The URL with any password replaced by "***", for logs. */
const char *config_redis_url_redacted(const struct config *cfg, char *buf, size_t len);

#endif

/*
 * config.c: table-driven configuration.
 *
 * One entry per key drives defaults, parsing, bounds, --check-config output
 * and redaction.  The file syntax is the one Django projects use for .env
 * (python-dotenv): KEY=VALUE, "export " allowed, # comments, single or
 * double quotes, blank lines.  Keys the daemon does not know are ignored so
 * the site's own .env can be shared, except unknown OTPD_* keys, which are
 * almost always typos and are refused.
 */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <curl/curl.h>
#include <sodium.h>

#include "config.h"
#include "fallback.h"
#include "job.h"
#include "log.h"
#include "otp.h"
#include "templates.h"

enum config_type {
    CT_STR,
    CT_INT,
    CT_BOOL,
    CT_HEXKEY,
    CT_REDIS_URL,
    CT_PHONE,
    CT_LOGLEVEL,
    CT_URL
};

#define CF_SECRET  0x1 /* never printed */
#define CF_NAME    0x2 /* a name: [A-Za-z0-9_.:{}-]+ */
#define CF_RESTART 0x4 /* not applied by a reload (SIGHUP): needs a restart */

struct config_entry {
    const char *key;
    enum config_type type;
    size_t offset;
    const char *def;
    long min, max;
    int flags;
    const char *help;
};

#define OFF(f) offsetof(struct config, f)

/* Stored as an int: CT_INT, and CT_BOOL (0 or 1). */
static int
config_is_int(const struct config_entry *e)
{
    return e->type == CT_INT || e->type == CT_BOOL;
}

/* Django's True/False as a .env or settings file writes them, and the usual others. */
static int
parse_bool(const char *v, int *out)
{
    static const char *const yes[] = {"1", "true", "yes", "on"}, *const no[] = {"0", "false", "no",
                                                                                "off", ""};

    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++)
        if (strcasecmp(v, yes[i]) == 0)
            return *out = 1, 0;
    for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++)
        if (strcasecmp(v, no[i]) == 0)
            return *out = 0, 0;
    return -1;
}

static const struct config_entry config_table[] = {
    {"REDIS_URL", CT_REDIS_URL, OFF(redis_url), "redis://127.0.0.1:6379/0", 0, 0, CF_RESTART,
     "Redis to use: redis://[[user]:password@]host:port/db or unix:///path?db=N"},
    {"OTPD_REDIS_SENTINELS", CT_STR, OFF(redis_sentinels_spec), "", 0, 2048, CF_RESTART,
     "Redis under Sentinel: the sentinels to ask for the master, host:port,host:port,... "
     "(empty: REDIS_URL's host is the server); REDIS_URL then gives only the user, "
     "password and db"},
    {"OTPD_REDIS_MASTER_NAME", CT_STR, OFF(redis_master_name), "mymaster", 1, 128,
     CF_NAME | CF_RESTART, "the master's name in the sentinels' configuration"},
    {"OTPD_REDIS_SENTINEL_PASSWORD", CT_STR, OFF(redis_sentinel_password), "", 0, 255,
     CF_SECRET | CF_RESTART, "the sentinels' own password (requirepass), if they have one"},
    {"OTPD_REDIS_WAIT_REPLICAS", CT_INT, OFF(redis_wait_replicas), "0", 0, 16, CF_RESTART,
     "replicas the OTP record and the sending status must reach (WAIT) before the code is "
     "texted, and the final status before the job is let go; a job waits while fewer "
     "answer (0: off)"},
    {"OTPD_REDIS_WAIT_TIMEOUT_MS", CT_INT, OFF(redis_wait_timeout_ms), "1000", 10, 5000, CF_RESTART,
     "the longest one WAIT for replicas may take"},
    {"OTPD_HASH_KEY", CT_HEXKEY, OFF(hash_key_hex), NULL, 0, 0, CF_SECRET,
     "64 hex characters (32 bytes) shared with the web app; make one with otpd --gen-key. "
     "Refused at start: the documentation's test key and keys with fewer than 16 distinct "
     "bytes (all zero, a repeated pattern), since anyone could forge codes' hashes with them"},
    {"OTPD_PREFIX", CT_STR, OFF(prefix), "otpd:", 1, 64, CF_NAME | CF_RESTART,
     "prefix of every Redis key"},
    {"OTPD_GROUP", CT_STR, OFF(group), "otpd", 1, 64, CF_NAME | CF_RESTART,
     "consumer group on the job stream"},
    {"OTPD_CONSUMER", CT_STR, OFF(consumer), "", 0, 128, CF_RESTART,
     "consumer name, unique per instance (default host:pid)"},
    {"OTPD_PROVIDER", CT_STR, OFF(provider), "", 0, 32, CF_RESTART,
     "default provider: twilio, msg91 or console (development: prints codes, sends nothing); "
     "empty: the first provider whose credentials are set (twilio, then msg91), console only "
     "when none is"},
    {"OTPD_OTP_TTL", CT_INT, OFF(otp_ttl), "300", 30, 3600, 0,
     "default lifetime of a code in seconds; also the delivery deadline"},
    {"OTPD_OTP_DIGITS", CT_INT, OFF(otp_digits), "6", 4, 10, 0, "default code length"},
    {"OTPD_VERIFY_ATTEMPTS", CT_INT, OFF(verify_attempts), "5", 1, 20, 0,
     "default wrong guesses allowed before a code is burned"},
    {"OTPD_MAX_SENDS_PER_CODE", CT_INT, OFF(max_sends_per_code), "5", 1, 100, 0,
     "texts of one code (first send and resends) before a further job is refused"},
    {"OTPD_TEMPLATE", CT_STR, OFF(template),
     "Your verification code is {code}. It expires in {minutes} minutes.", 1, 1920, 0,
     "default SMS text; must contain {code}, may contain {minutes}. Changed from this "
     "default, it replaces the default locale's sms.txt"},
    {"EMAIL_HOST", CT_STR, OFF(email_host), "", 0, 253, 0,
     "SMTP server for e-mail codes (Django's setting); empty: e-mail jobs are printed by the "
     "development console instead"},
    {"EMAIL_PORT", CT_INT, OFF(email_port), "25", 1, 65535, 0,
     "SMTP port: 587 with EMAIL_USE_TLS, 465 with EMAIL_USE_SSL"},
    {"EMAIL_HOST_USER", CT_STR, OFF(email_host_user), "", 0, 255, 0, "SMTP AUTH user"},
    {"EMAIL_HOST_PASSWORD", CT_STR, OFF(email_host_password), "", 0, 255, CF_SECRET,
     "SMTP AUTH password"},
    {"EMAIL_USE_TLS", CT_BOOL, OFF(email_use_tls), "False", 0, 1, 0,
     "STARTTLS, required (one of EMAIL_USE_TLS and EMAIL_USE_SSL must be True with EMAIL_HOST)"},
    {"EMAIL_USE_SSL", CT_BOOL, OFF(email_use_ssl), "False", 0, 1, 0,
     "implicit TLS (smtps), usually port 465"},
    {"EMAIL_TIMEOUT", CT_INT, OFF(email_timeout), "10", 1, 300, 0,
     "seconds an SMTP conversation for one message may take"},
    {"DEFAULT_FROM_EMAIL", CT_STR, OFF(default_from_email), "webmaster@localhost", 3, 254, 0,
     "sender of e-mail codes, an address or \"Name <address>\""},
    {"OTPD_EMAIL_MAX_INFLIGHT", CT_INT, OFF(email_max_inflight), "10", 1, 1000, 0,
     "e-mails in progress at once (and SMTP connections)"},
    {"OTPD_EMAIL_SUBJECT", CT_STR, OFF(email_subject), "Your verification code", 1, 200, 0,
     "e-mail subject; may contain {code} and {minutes}"},
    {"OTPD_EMAIL_TEXT", CT_STR, OFF(email_text),
     "Your verification code is {code}.\n\nIt expires in {minutes} minutes. If you did not ask "
     "for it, you can ignore this message.",
     1, 4000, 0,
     "e-mail plain-text body; must contain {code}, may contain {minutes}; \\n in double quotes is "
     "a new line"},
    {"OTPD_EMAIL_HTML", CT_STR, OFF(email_html),
     "<p>Your verification code is</p><p style='font-size:24px;font-weight:bold;letter-spacing:"
     "4px'>{code}</p><p>It expires in {minutes} minutes. If you did not ask for it, you can "
     "ignore this message.</p>",
     1, 8000, 0, "e-mail HTML body; must contain {code}, may contain {minutes}"},
    {"OTPD_DEFAULT_LOCALE", CT_STR, OFF(default_locale), "en", 1, JOB_LOCALE_MAX, 0,
     "language of the texts for a job without \"locale\", and the last step of every "
     "locale's fallback (zh-Hant-TW, zh-Hant, zh, then this one): a BCP 47 tag with all five "
     "texts, shipped (python/otpd/data/templates) or in OTPD_TEMPLATES_DIR. The settings "
     "OTPD_TEMPLATE and OTPD_EMAIL_*, when changed from their defaults, replace this "
     "locale's texts"},
    {"OTPD_TEMPLATES_DIR", CT_STR, OFF(templates_dir), "", 0, 1024, 0,
     "directory of your own texts, laid out as the shipped ones: <dir>/<locale>/sms.txt, "
     "voice.txt, email_subject.txt, email.txt, email.html; each file replaces that locale's "
     "shipped text or adds a locale, and a bad one stops the start (empty: the shipped texts "
     "only). Read again on reload"},
    {"OTPD_WEBOTP_DOMAIN", CT_STR, OFF(webotp_domain), "", 0, 253, 0,
     "your site's host name, e.g. example.com: every SMS then ends with the line "
     "\"@example.com #CODE\" (origin-bound one-time codes), so browsers and phones offer the "
     "code to that site only (Safari's AutoFill, Chrome's WebOTP). Lower case, no scheme, "
     "port or path; an internationalised name in its xn-- form (empty: off)"},
    {"OTPD_ANDROID_APP_HASH", CT_STR, OFF(android_app_hash), "", 0, 11, 0,
     "your Android app's 11-character SMS Retriever hash, put at the very end of every SMS so "
     "the app can read its code (after the WebOTP line, or on a line of its own); a job's "
     "\"app_hash\" takes its place (empty: none)"},
    {"OTPD_STATUS_TTL", CT_INT, OFF(status_ttl), "86400", 60, 30L * 86400, 0,
     "seconds a job's status record is kept"},
    {"OTPD_DEAD_MAXLEN", CT_INT, OFF(dead_maxlen), "10000", 100, 10000000, 0,
     "approximate length the dead-letter stream is trimmed to: a burst of bad jobs cannot "
     "fill Redis"},
    {"OTPD_MAX_CLOCK_SKEW_S", CT_INT, OFF(max_clock_skew_s), "60", 0, 3600, 0,
     "a job whose created_ms lies further than this in the future is rejected (the web "
     "host's clock is wrong); within it, the lifetime counts from now"},
    {"OTPD_EVENTS_MAXLEN", CT_INT, OFF(events_maxlen), "100000", 100, 100000000, 0,
     "approximate length the events stream is trimmed to"},
    {"OTPD_MAX_INFLIGHT", CT_INT, OFF(max_inflight), "1000", 1, 100000, CF_RESTART,
     "jobs claimed and not yet finished, at most; no more are read when full"},
    {"OTPD_BATCH", CT_INT, OFF(batch), "100", 1, 10000, CF_RESTART, "entries read per XREADGROUP"},
    {"OTPD_BLOCK_MS", CT_INT, OFF(block_ms), "5000", 100, 60000, 0,
     "XREADGROUP BLOCK time; also the reader's liveness period"},
    {"OTPD_SHUTDOWN_TIMEOUT_MS", CT_INT, OFF(shutdown_timeout_ms), "10000", 0, 600000, 0,
     "on SIGTERM, how long in-flight jobs may take to finish"},
    {"OTPD_CLAIM_IDLE_MS", CT_INT, OFF(claim_idle_ms), "30000", 500, 3600000, 0,
     "a pending job idle this long belongs to a dead instance and is taken over; live "
     "instances refresh theirs every third of it"},
    {"OTPD_HEARTBEAT_MS", CT_INT, OFF(heartbeat_ms), "5000", 100, 60000, CF_RESTART,
     "how often the instance heartbeat is written; it expires after three periods"},
    {"OTPD_METRICS_ADDR", CT_STR, OFF(metrics_addr), "", 0, 128, CF_RESTART,
     "address for the Prometheus endpoint and the delivery-receipt webhooks, e.g. "
     "127.0.0.1:9464 (empty: off); a warning at start when it is not a loopback address: "
     "keep it behind a firewall or a reverse proxy that forwards only /webhooks/"},
    {"OTPD_ROUTES", CT_STR, OFF(routes_spec), "", 0, 2048, 0,
     "providers by destination, tried in order: PREFIX=provider,provider;... with the longest "
     "digit prefix winning and * as the rest, e.g. \"91=msg91,twilio;*=twilio,msg91\" "
     "(empty: the default provider, then any other configured one)"},
    {"OTPD_ALLOWED_COUNTRIES", CT_STR, OFF(allowed_spec), "", 0, 1024, 0,
     "calling codes codes may be sent to, e.g. \"1,44,91\" (empty: all); SMS-pumping "
     "defence"},
    {"OTPD_COUNTRY_HOURLY_BUDGET", CT_STR, OFF(budget_spec), "", 0, 1024, 0,
     "codes per hour per destination country, e.g. \"91=5000;*=200\"; past it sends to that "
     "country stop and an alert is raised (empty: no budget)"},
    {"OTPD_BLOCKED_PREFIXES", CT_STR, OFF(blocked_prefixes_spec), "", 0, 2048, 0,
     "number prefixes never texted, e.g. \"+88213,+4470\" (satellite and premium ranges); "
     "their jobs end failed with error_code blocked_prefix (empty: none)"},
    {"OTPD_FRAUD_PREFIX_DIGITS", CT_INT, OFF(fraud_prefix_digits), "6", 0, 15, 0,
     "leading digits of a number (country code included) that make its prefix, the unit the "
     "SMS-pumping model counts and pauses (0: the model is off)"},
    {"OTPD_FRAUD_WINDOW_S", CT_INT, OFF(fraud_window_s), "3600", 60, 86400, 0,
     "the recent window the model compares with a prefix's baseline"},
    {"OTPD_FRAUD_SETTLE_S", CT_INT, OFF(fraud_settle_s), "60", 0, 3600, 0,
     "a code younger than this is not counted as unverified yet (people need time to type it)"},
    {"OTPD_FRAUD_BASELINE_S", CT_INT, OFF(fraud_baseline_s), "604800", 3600, 7776000, 0,
     "time constant of a prefix's baseline (a moving average of its codes per window)"},
    {"OTPD_FRAUD_SPIKE_FACTOR", CT_INT, OFF(fraud_spike_factor), "3", 1, 1000, 0,
     "a prefix is suspect when its codes in the window exceed this many times its baseline"},
    {"OTPD_FRAUD_MIN_CODES", CT_INT, OFF(fraud_min_codes), "20", 1, 1000000, 0,
     "and it has at least this many codes in the window, and as many judged for conversion"},
    {"OTPD_FRAUD_MIN_CONVERSION", CT_INT, OFF(fraud_min_conversion), "25", 0, 100, 0,
     "and fewer than this percentage of its codes were verified: then it is paused"},
    {"OTPD_FRAUD_PAUSE_S", CT_INT, OFF(fraud_pause_s), "43200", 60, 2592000, 0,
     "how long an automatic pause lasts (otpctl fraud allow or clear ends it sooner)"},
    {"OTPD_FRAUD_AUTO_PAUSE", CT_BOOL, OFF(fraud_auto_pause), "1", 0, 1, 0,
     "pause suspect prefixes (0: measure and report only)"},
    {"OTPD_SMS_PRICES", CT_STR, OFF(sms_prices_spec), "", 0, 2048, 0,
     "price of one SMS segment by calling code, in OTPD_PRICE_CURRENCY, e.g. "
     "\"1=0.0083;44=0.0524;91=0.0827;*=0.10\" (empty: unknown until a provider reports it)"},
    {"OTPD_PRICE_CURRENCY", CT_STR, OFF(price_currency), "USD", 3, 3, CF_NAME,
     "currency of OTPD_SMS_PRICES and the spend budgets (ISO 4217); provider prices in "
     "another currency are not counted"},
    {"OTPD_DAILY_SPEND_BUDGET", CT_STR, OFF(spend_budget_spec), "", 0, 32, 0,
     "SMS spend per UTC day, at most, e.g. \"50.00\"; past it sends stop until midnight UTC "
     "and an alert is raised (empty: no budget; needs OTPD_SMS_PRICES)"},
    {"OTPD_COUNTRY_DAILY_SPEND_BUDGET", CT_STR, OFF(country_spend_budget_spec), "", 0, 1024, 0,
     "SMS spend per UTC day by calling code, e.g. \"91=20;*=5\" (empty: none; needs "
     "OTPD_SMS_PRICES)"},
    {"OTPD_LIMIT_INTERVAL_S", CT_INT, OFF(limit_interval_s), "30", 0, 86400, 0,
     "least time between two codes to one number for one purpose (0: off)"},
    {"OTPD_LIMIT_PER_HOUR", CT_INT, OFF(limit_per_hour), "10", 0, 1000000, 0,
     "codes to one number per hour, at most (0: no limit)"},
    {"OTPD_LIMIT_PER_DAY", CT_INT, OFF(limit_per_day), "20", 0, 1000000, 0,
     "codes to one number per day, at most (0: no limit)"},
    {"OTPD_LIMIT_GLOBAL_PER_HOUR", CT_INT, OFF(limit_global_per_hour), "0", 0, 100000000, 0,
     "codes per hour in all, at most (0: no limit)"},
    {"OTPD_TWILIO_RATE", CT_INT, OFF(twilio_rate), "0", 0, 100000, 0,
     "Twilio requests per second, at most (0: no limit); excess jobs wait in otpd"},
    {"OTPD_TWILIO_MAX_INFLIGHT", CT_INT, OFF(twilio_max_inflight), "100", 0, 100000, 0,
     "Twilio requests in progress, at most (0: no cap); Twilio answers 429 past its account "
     "concurrency limit, and each request in progress costs about 25 KB"},
    {"OTPD_MSG91_RATE", CT_INT, OFF(msg91_rate), "0", 0, 100000, 0,
     "MSG91 requests per second, at most (0: no limit)"},
    {"OTPD_MSG91_MAX_INFLIGHT", CT_INT, OFF(msg91_max_inflight), "100", 0, 100000, 0,
     "MSG91 requests in progress, at most (0: no cap)"},
    {"OTPD_CIRCUIT_FAILURES", CT_INT, OFF(circuit_failures), "5", 1, 1000, 0,
     "consecutive failed requests that open a provider's circuit"},
    {"OTPD_CIRCUIT_COOLOFF_MS", CT_INT, OFF(circuit_cooloff_ms), "30000", 100, 3600000, 0,
     "how long an open circuit sends nothing before one probe request"},
    {"MSG91_WEBHOOK_TOKEN", CT_STR, OFF(msg91_webhook_token), "", 0, 128, CF_SECRET,
     "secret path token for MSG91 delivery reports: MSG91 does not sign its webhooks, so "
     "configure the URL https://YOUR-SITE/.../webhooks/msg91/TOKEN in its dashboard. At least "
     "32 characters (refused at start otherwise: it is the reports' only authentication); "
     "make one with: openssl rand -hex 16"},
    {"OTPD_DLR_POLL_HORIZON_S", CT_INT, OFF(dlr_poll_horizon_s), "600", 0, 86400, 0,
     "without TWILIO_STATUS_CALLBACK, poll Twilio for a sent message's delivery for this long "
     "(0: never poll)"},
    {"OTPD_DLR_POLL_FIRST_MS", CT_INT, OFF(dlr_poll_first_ms), "5000", 100, 600000, 0,
     "first status poll after a send; later ones back off to a minute"},
    {"OTPD_LOG_LEVEL", CT_LOGLEVEL, OFF(log_level), "info", 0, 0, 0,
     "error, warning, notice, info or debug"},
    {"OTPD_CA_FILE", CT_STR, OFF(ca_file), "", 0, 4096, 0,
     "CA bundle for provider TLS (default: the system bundle); verification is always on"},
    {"OTPD_HTTP_CONNECT_TIMEOUT_MS", CT_INT, OFF(http_connect_timeout_ms), "5000", 100, 60000, 0,
     "provider connect (TCP+TLS) timeout"},
    {"OTPD_HTTP_TIMEOUT_MS", CT_INT, OFF(http_timeout_ms), "15000", 500, 120000, 0,
     "provider request total timeout"},
    {"OTPD_HTTP_MAX_CONNS", CT_INT, OFF(http_max_conns), "0", 0, 100000, 0,
     "connections per provider host, at most (0: as many as the provider's request cap, "
     "OTPD_TWILIO_MAX_INFLIGHT or OTPD_MSG91_MAX_INFLIGHT, so an HTTP/1.1 provider gets one "
     "per open request; HTTP/2 still multiplexes over few)"},
    {"OTPD_HTTP_MAX_CLIENTS", CT_INT, OFF(http_max_clients), "256", 1, 100000, CF_RESTART,
     "connections to OTPD_METRICS_ADDR held at once; past it the oldest idle one is closed, so "
     "a connection flood cannot take the descriptors sending needs"},
    {"TWILIO_ACCOUNT_SID", CT_STR, OFF(twilio_account_sid), "", 0, 64, 0,
     "Twilio Account SID (AC...)"},
    {"TWILIO_AUTH_TOKEN", CT_STR, OFF(twilio_auth_token), "", 0, 128, CF_SECRET,
     "Twilio Auth Token"},
    {"TWILIO_PHONE_NUMBER", CT_PHONE, OFF(twilio_phone_number), "", 0, 0, 0,
     "Twilio sender number, E.164"},
    {"TWILIO_MESSAGING_SERVICE_SID", CT_STR, OFF(twilio_messaging_service_sid), "", 0, 64, 0,
     "Twilio Messaging Service (MG...); preferred over TWILIO_PHONE_NUMBER"},
    {"TWILIO_VOICE_STATUS_CALLBACK", CT_URL, OFF(twilio_voice_status_callback), "", 0, 0, 0,
     "public https URL of /webhooks/twilio_voice behind your proxy: Twilio reports each call's "
     "end there (empty: otpd polls each call)"},
    {"OTPD_TWILIO_VOICE_RATE", CT_INT, OFF(twilio_voice_rate), "1", 0, 1000, 0,
     "calls started per second, at most (Twilio's default for an account is 1; 0: no limit)"},
    {"OTPD_FALLBACK", CT_STR, OFF(fallback_spec), "", 0, 64, 0,
     "channels that follow every SMS job without its own \"fallback\": \"voice\" calls with the "
     "same code when the SMS is undelivered or not verified in OTPD_FALLBACK_DELAY_S (empty: "
     "none)"},
    {"OTPD_FALLBACK_DELAY_S", CT_INT, OFF(fallback_delay_s), "60", 5, 3600, 0,
     "how long a sent code may stay unverified before its fallback channel is tried"},
    {"OTPD_VOICE_REPEAT", CT_INT, OFF(voice_repeat), "3", 1, 5, 0,
     "how many times a call reads the code out"},
    {"TWILIO_STATUS_CALLBACK", CT_URL, OFF(twilio_status_callback), "", 0, 0, 0,
     "public URL Twilio posts delivery status to, routed to OTPD_METRICS_ADDR's "
     "/webhooks/twilio (optional). Set without OTPD_METRICS_ADDR, otpd cannot hear the "
     "callbacks: it warns at start and polls Twilio instead"},
    {"TWILIO_API_BASE", CT_URL, OFF(twilio_api_base), "https://api.twilio.com", 0, 0, 0,
     "Twilio API base URL (tests and staging point it at a mock)"},
    {"MSG91_AUTH_KEY", CT_STR, OFF(msg91_auth_key), "", 0, 128, CF_SECRET, "MSG91 auth key"},
    {"MSG91_SENDER_ID", CT_STR, OFF(msg91_sender_id), "", 0, 16, 0, "MSG91 DLT sender ID"},
    {"MSG91_TEMPLATE_ID", CT_STR, OFF(msg91_template_id), "", 0, 64, 0,
     "MSG91 flow template ID (DLT-approved)"},
    {"MSG91_API_BASE", CT_URL, OFF(msg91_api_base), "https://control.msg91.com", 0, 0, 0,
     "MSG91 API base URL"},
    {"MSG91_CODE_VAR", CT_STR, OFF(msg91_code_var), "otp", 1, 32, CF_NAME,
     "name of the template variable that carries the code in the MSG91 flow"},
    {"OTPD_RETRY_BASE_MS", CT_INT, OFF(retry_base_ms), "500", 10, 60000, 0,
     "first retry delay; doubles per attempt, with full jitter"},
    {"OTPD_RETRY_MAX_MS", CT_INT, OFF(retry_max_ms), "30000", 100, 600000, 0,
     "longest retry delay (retries never run past the code's expiry)"},
    {"OTPD_PROVIDER_RECHECK_MS", CT_INT, OFF(provider_recheck_ms), "5000", 100, 3600000, 0,
     "after a provider-wide failure (bad credentials), first wait before trying it again; "
     "doubles up to 5 minutes"},
};

#define CONFIG_NENTRIES (sizeof(config_table) / sizeof(config_table[0]))

static const struct config_entry *
config_lookup(const char *key)
{
    for (size_t i = 0; i < CONFIG_NENTRIES; i++)
        if (strcmp(config_table[i].key, key) == 0)
            return &config_table[i];
    return NULL;
}

static char **
config_str_slot(struct config *cfg, const struct config_entry *e)
{
    return (char **)((char *)cfg + e->offset);
}

static int
parse_int(const char *s, long min, long max, long *out)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

static int
valid_name(const char *s)
{
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && !strchr("_.:{}-", *s))
            return 0;
    return 1;
}

static int
valid_http_url(const char *s, char *why, size_t whylen)
{
    CURLU *u = curl_url();
    char *scheme = NULL;
    int ok = 0;

    if (u == NULL)
        return 0;
    if (curl_url_set(u, CURLUPART_URL, s, 0) != CURLUE_OK) {
        otpd_seterr(why, whylen, "not a URL");
    } else if (curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
               strcmp(scheme, "https") != 0) {
        otpd_seterr(why, whylen, "must be an https:// URL");
    } else {
        ok = 1;
    }
    curl_free(scheme);
    curl_url_cleanup(u);
    return ok;
}

int
config_set(struct config *cfg, const char *key, const char *value, char *err, size_t errlen)
{
    const struct config_entry *e = config_lookup(key);
    char why[128] = "";
    long v;

    if (e == NULL) {
        otpd_seterr(err, errlen, "%s: unknown key", key);
        return -1;
    }
    switch (e->type) {
    case CT_BOOL:
        if (parse_bool(value, (int *)((char *)cfg + e->offset)) < 0) {
            otpd_seterr(err, errlen, "%s: must be True or False, got \"%s\"", key, value);
            return -1;
        }
        return 0;
    case CT_INT:
        if (parse_int(value, e->min, e->max, &v) < 0) {
            otpd_seterr(err, errlen, "%s: must be an integer from %ld to %ld, got \"%s\"", key,
                        e->min, e->max, value);
            return -1;
        }
        *(int *)((char *)cfg + e->offset) = (int)v;
        return 0;
    case CT_STR:
        if (e->max && (long)strlen(value) > e->max) {
            otpd_seterr(err, errlen, "%s: longer than %ld characters", key, e->max);
            return -1;
        }
        if (e->min && (long)strlen(value) < e->min) {
            otpd_seterr(err, errlen, "%s: must not be empty", key);
            return -1;
        }
        if ((e->flags & CF_NAME) && !valid_name(value)) {
            otpd_seterr(err, errlen, "%s: only letters, digits and _.:{}- are allowed", key);
            return -1;
        }
        break;
    case CT_HEXKEY: {
        unsigned char bin[32];
        /* Decode aside: a bad value must not clobber the key in use. */
        if (strlen(value) != 64 ||
            sodium_hex2bin(bin, sizeof(bin), value, 64, NULL, NULL, NULL) != 0) {
            sodium_memzero(bin, sizeof(bin));
            if (*value == '\0')
                otpd_seterr(err, errlen, "%s: not set; make one with otpd --gen-key", key);
            else
                otpd_seterr(err, errlen,
                            "%s: must be 64 hex characters (32 bytes); make one with "
                            "otpd --gen-key",
                            key);
            return -1;
        }
        memcpy(cfg->hash_key, bin, sizeof(bin));
        sodium_memzero(bin, sizeof(bin));
        break;
    }
    case CT_REDIS_URL: {
        struct redis_addr a;
        if (config_parse_redis_url(value, &a, why, sizeof(why)) < 0) {
            otpd_seterr(err, errlen, "%s: %s", key, why);
            return -1;
        }
        config_redis_addr_free(&cfg->redis);
        cfg->redis = a;
        break;
    }
    case CT_PHONE:
        if (*value && !job_phone_valid(value)) {
            otpd_seterr(err, errlen,
                        "%s: \"%s\" is not an E.164 number (+ then 7 to 15 digits, e.g. "
                        "+14155552671)",
                        key, value);
            return -1;
        }
        break;
    case CT_LOGLEVEL:
        if (log_level_parse(value) < 0) {
            otpd_seterr(err, errlen, "%s: must be error, warning, notice, info or debug", key);
            return -1;
        }
        break;
    case CT_URL:
        if (*value && !valid_http_url(value, why, sizeof(why))) {
            otpd_seterr(err, errlen, "%s: %s", key, why);
            return -1;
        }
        break;
    }
    char **slot = config_str_slot(cfg, e);
    char *copy = strdup(value);
    if (copy == NULL) {
        otpd_seterr(err, errlen, "%s: out of memory", key);
        return -1;
    }
    if (*slot && (e->flags & CF_SECRET))
        sodium_memzero(*slot, strlen(*slot));
    free(*slot);
    *slot = copy;
    return 0;
}

void
config_init(struct config *cfg)
{
    char err[256];

    memset(cfg, 0, sizeof(*cfg));
    for (size_t i = 0; i < CONFIG_NENTRIES; i++) {
        const struct config_entry *e = &config_table[i];
        if (e->def != NULL && config_set(cfg, e->key, e->def, err, sizeof(err)) < 0)
            fatalx("config: built-in default: %s", err);
    }
}

void
config_free(struct config *cfg)
{
    for (size_t i = 0; i < CONFIG_NENTRIES; i++) {
        const struct config_entry *e = &config_table[i];
        if (config_is_int(e))
            continue;
        char **slot = config_str_slot(cfg, e);
        if (*slot && (e->flags & CF_SECRET))
            sodium_memzero(*slot, strlen(*slot));
        free(*slot);
        *slot = NULL;
    }
    config_redis_addr_free(&cfg->redis);
    sodium_memzero(cfg->hash_key, sizeof(cfg->hash_key));
    templates_free(cfg->templates);
    cfg->templates = NULL;
}

/*
 * Value syntax, as python-dotenv reads it: 'single' is literal, "double"
 * knows \n \t \" \\ escapes, unquoted ends at " #" and is trimmed.
 */
static int
config_unquote(char *v, char *why, size_t whylen)
{
    size_t n = strlen(v);

    if (n > 0 && (v[0] == '"' || v[0] == '\'')) {
        char q = v[0];
        char *r = v + 1, *w = v;
        for (; *r && *r != q; r++) {
            if (q == '"' && *r == '\\' && r[1]) {
                r++;
                *w++ = *r == 'n' ? '\n' : *r == 't' ? '\t' : *r;
            } else {
                *w++ = *r;
            }
        }
        if (*r != q) {
            otpd_seterr(why, whylen, "unterminated quote");
            return -1;
        }
        *w = '\0';
        for (r++; *r == ' ' || *r == '\t'; r++)
            ;
        if (*r && *r != '#') {
            otpd_seterr(why, whylen, "text after the closing quote");
            return -1;
        }
        return 0;
    }
    char *hash = v;
    while ((hash = strchr(hash, '#')) != NULL) {
        if (hash == v || hash[-1] == ' ' || hash[-1] == '\t') {
            *hash = '\0';
            break;
        }
        hash++;
    }
    n = strlen(v);
    while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t'))
        v[--n] = '\0';
    return 0;
}

static char *
trim_left(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    return s;
}

static int
config_parse_line(struct config *cfg, char *line, char *why, size_t whylen)
{
    char *p = trim_left(line), *eq, *key, *val;
    size_t n;

    if (*p == '\0' || *p == '#')
        return 0;
    if (strncmp(p, "export ", 7) == 0)
        p = trim_left(p + 7);
    eq = strchr(p, '=');
    if (eq == NULL) {
        otpd_seterr(why, whylen, "expected KEY=VALUE");
        return -1;
    }
    *eq = '\0';
    key = p;
    n = strlen(key);
    while (n > 0 && (key[n - 1] == ' ' || key[n - 1] == '\t'))
        key[--n] = '\0';
    val = trim_left(eq + 1);
    if (config_unquote(val, why, whylen) < 0)
        return -1;
    if (config_lookup(key) == NULL) {
        if (strncmp(key, "OTPD_", 5) == 0) {
            otpd_seterr(why, whylen, "unknown key %s (misspelt?)", key);
            return -1;
        }
        return 0; /* the web app's own settings */
    }
    return config_set(cfg, key, val, why, whylen);
}

int
config_parse_text(struct config *cfg, const char *text, const char *name, char *err, size_t errlen)
{
    const char *p = text;
    int lineno = 0;

    while (*p) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        char *line = strndup(p, len), why[256] = "";
        int rc;

        lineno++;
        if (line == NULL) {
            otpd_seterr(err, errlen, "%s: out of memory", name);
            return -1;
        }
        if (len > 0 && line[len - 1] == '\r')
            line[len - 1] = '\0';
        rc = config_parse_line(cfg, line, why, sizeof(why));
        sodium_memzero(line, len);
        free(line);
        if (rc < 0) {
            otpd_seterr(err, errlen, "%s:%d: %s", name, lineno, why);
            return -1;
        }
        p += len;
        if (*p == '\n')
            p++;
    }
    return 0;
}

int
config_read_file(struct config *cfg, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    char *buf = NULL;
    size_t cap = 0, len = 0;
    int rc = -1;

    if (f == NULL) {
        otpd_seterr(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    for (;;) {
        if (len + 4096 + 1 > cap) {
            char *nb = realloc(buf, cap = cap ? cap * 2 : 8192);
            if (nb == NULL) {
                otpd_seterr(err, errlen, "%s: out of memory", path);
                goto out;
            }
            buf = nb;
        }
        size_t n = fread(buf + len, 1, cap - len - 1, f);
        len += n;
        if (n == 0)
            break;
        if (len > (size_t)1024 * 1024) {
            otpd_seterr(err, errlen, "%s: larger than 1 MiB", path);
            goto out;
        }
    }
    if (ferror(f)) {
        otpd_seterr(err, errlen, "%s: read error", path);
        goto out;
    }
    buf[len] = '\0';
    rc = config_parse_text(cfg, buf, path, err, errlen);
out:
    if (buf) {
        sodium_memzero(buf, len);
        free(buf);
    }
    fclose(f);
    return rc;
}

int
config_read_env(struct config *cfg, config_env_fn *getenv_fn, char *err, size_t errlen)
{
    char why[256];

    for (size_t i = 0; i < CONFIG_NENTRIES; i++) {
        const char *v = getenv_fn(config_table[i].key);
        if (v == NULL)
            continue;
        if (config_set(cfg, config_table[i].key, v, why, sizeof(why)) < 0) {
            otpd_seterr(err, errlen, "environment: %s", why);
            return -1;
        }
    }
    return 0;
}

/*
 * Keys anyone can read: the documentation's test vector and keys with
 * little variety (all zero, a repeated byte or short pattern).  A random
 * key has about 31 distinct bytes of 32; fewer than 16 happens with
 * negligible probability.
 */
static const char *const config_public_keys[] = {
    "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
};

static int
config_key_weak(const struct config *cfg, char *why, size_t whylen)
{
    unsigned char seen[256] = {0};
    int distinct = 0;

    for (size_t i = 0; i < sizeof(config_public_keys) / sizeof(config_public_keys[0]); i++)
        if (strcasecmp(cfg->hash_key_hex, config_public_keys[i]) == 0) {
            otpd_seterr(why, whylen, "is the documentation's published test key");
            return 1;
        }
    for (size_t i = 0; i < sizeof(cfg->hash_key); i++)
        if (!seen[cfg->hash_key[i]]++)
            distinct++;
    if (distinct < 16) {
        otpd_seterr(why, whylen, "has only %d distinct bytes: not a random key", distinct);
        return 1;
    }
    return 0;
}

/* The block list, the prices and the money budgets. */
static int
config_finish_fraud(struct config *cfg, char *err, size_t errlen)
{
    char why[160];

    if (route_parse_prefixes(&cfg->blocked, cfg->blocked_prefixes_spec, why, sizeof(why)) < 0) {
        otpd_seterr(err, errlen, "OTPD_BLOCKED_PREFIXES: %s", why);
        return -1;
    }
    if (route_parse_countries(&cfg->prices, cfg->sms_prices_spec, ROUTE_MONEY, why, sizeof(why)) <
        0) {
        otpd_seterr(err, errlen, "OTPD_SMS_PRICES: %s", why);
        return -1;
    }
    if (route_parse_countries(&cfg->spend_budgets, cfg->country_spend_budget_spec, ROUTE_MONEY, why,
                              sizeof(why)) < 0) {
        otpd_seterr(err, errlen, "OTPD_COUNTRY_DAILY_SPEND_BUDGET: %s", why);
        return -1;
    }
    cfg->spend_budget = -1;
    if (*cfg->spend_budget_spec &&
        (cfg->spend_budget = route_parse_money(cfg->spend_budget_spec)) < 0) {
        otpd_seterr(err, errlen, "OTPD_DAILY_SPEND_BUDGET: \"%s\" is not an amount such as 50.00",
                    cfg->spend_budget_spec);
        return -1;
    }
    /* A budget counts only what has a price: without a "*" price, some sends would pass free. */
    if ((cfg->spend_budget >= 0 || cfg->spend_budgets.n > 0 || cfg->spend_budgets.deflt >= 0) &&
        cfg->prices.deflt < 0) {
        otpd_seterr(err, errlen,
                    "a spend budget needs OTPD_SMS_PRICES with a \"*\" price for the countries "
                    "it does not list, e.g. OTPD_SMS_PRICES=\"91=0.0827;*=0.10\"");
        return -1;
    }
    return 0;
}

int
config_twilio_configured(const struct config *cfg)
{
    return *cfg->twilio_account_sid && *cfg->twilio_auth_token;
}

int
config_msg91_configured(const struct config *cfg)
{
    return *cfg->msg91_auth_key && *cfg->msg91_template_id;
}

/*
 * Credentials that are half there must stop the start, not silently leave
 * the console provider printing codes for a site that believes it sends SMS.
 */
static int
config_check_credentials(const struct config *cfg, char *err, size_t errlen)
{
    int tw_any = *cfg->twilio_account_sid || *cfg->twilio_auth_token;
    int explicit_tw = strcmp(cfg->provider, "twilio") == 0;

    if ((tw_any || explicit_tw) && !config_twilio_configured(cfg)) {
        otpd_seterr(err, errlen,
                    "TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN: both are required to send "
                    "through Twilio");
        return -1;
    }
    if (config_twilio_configured(cfg) && !*cfg->twilio_phone_number &&
        !*cfg->twilio_messaging_service_sid) {
        otpd_seterr(err, errlen,
                    "TWILIO_PHONE_NUMBER: required with Twilio credentials (or set "
                    "TWILIO_MESSAGING_SERVICE_SID)");
        return -1;
    }
    if (strcmp(cfg->provider, "msg91") == 0 && !config_msg91_configured(cfg)) {
        otpd_seterr(err, errlen,
                    "MSG91_AUTH_KEY and MSG91_TEMPLATE_ID: required when OTPD_PROVIDER=msg91");
        return -1;
    }
    if (*cfg->msg91_auth_key && !*cfg->msg91_template_id && !config_twilio_configured(cfg) &&
        strcmp(cfg->provider, "console") != 0) {
        otpd_seterr(err, errlen,
                    "MSG91_TEMPLATE_ID: MSG91_AUTH_KEY is set but otpd sends through MSG91's "
                    "Flow API, which needs the DLT-approved template's id");
        return -1;
    }
    return 0;
}

/* With OTPD_PROVIDER unset, the configured providers are used; console only with none. */
static int
config_pick_provider(struct config *cfg, char *err, size_t errlen)
{
    if (*cfg->provider == '\0') {
        cfg->provider_default = config_twilio_configured(cfg)  ? "twilio"
                                : config_msg91_configured(cfg) ? "msg91"
                                                               : "console";
        return 0;
    }
    if (strcmp(cfg->provider, "console") == 0)
        cfg->provider_default = "console";
    else if (strcmp(cfg->provider, "twilio") == 0)
        cfg->provider_default = "twilio";
    else if (strcmp(cfg->provider, "msg91") == 0)
        cfg->provider_default = "msg91";
    else {
        otpd_seterr(err, errlen, "OTPD_PROVIDER: \"%s\" is not one of console, twilio, msg91",
                    cfg->provider);
        return -1;
    }
    return 0;
}

/* MSG91 does not sign its reports: the path token is the only secret, and guesses are free. */
#define CONFIG_WEBHOOK_TOKEN_MIN 32

/* The e-mail channel's settings, checked at start like the SMS template. */
static int
config_finish_email(struct config *cfg, char *err, size_t errlen)
{
    static const char *const names[] = {"OTPD_EMAIL_TEXT", "OTPD_EMAIL_HTML"};
    const char *tmpls[] = {cfg->email_text, cfg->email_html};
    char why[128];

    if (strchr(cfg->email_subject, '\n') || strchr(cfg->email_subject, '\r')) {
        otpd_seterr(err, errlen, "OTPD_EMAIL_SUBJECT: must be one line");
        return -1;
    }
    for (int i = 0; i < 2; i++)
        if (strstr(tmpls[i], "{code}") == NULL || otp_utf8_chars(tmpls[i]) < 0) {
            snprintf(why, sizeof(why), "%s",
                     strstr(tmpls[i], "{code}") ? "not valid UTF-8" : "must contain {code}");
            otpd_seterr(err, errlen, "%s: %s", names[i], why);
            return -1;
        }
    if (otp_utf8_chars(cfg->email_subject) < 0) {
        otpd_seterr(err, errlen, "OTPD_EMAIL_SUBJECT: not valid UTF-8");
        return -1;
    }
    if (cfg->email_use_tls && cfg->email_use_ssl) {
        otpd_seterr(err, errlen,
                    "EMAIL_USE_TLS and EMAIL_USE_SSL are mutually exclusive: "
                    "STARTTLS (usually port 587) or implicit TLS (usually 465)");
        return -1;
    }
    /* Codes never cross the network in clear. */
    if (*cfg->email_host && !cfg->email_use_tls && !cfg->email_use_ssl) {
        otpd_seterr(err, errlen,
                    "EMAIL_HOST is set but neither EMAIL_USE_TLS nor EMAIL_USE_SSL "
                    "is True: otpd sends codes only over TLS");
        return -1;
    }
    return 0;
}

/*
 * The texts by locale: the shipped ones, OTPD_TEMPLATES_DIR's, then the
 * SMS and e-mail settings for the default locale, those an operator
 * changed only: at their defaults they are the shipped English, which must
 * not replace another default locale's texts.
 */
static int
config_finish_templates(struct config *cfg, char *err, size_t errlen)
{
    static const char *const keys[TEMPLATE_KINDS] = {
        [TEMPLATE_SMS] = "OTPD_TEMPLATE",
        [TEMPLATE_EMAIL_SUBJECT] = "OTPD_EMAIL_SUBJECT",
        [TEMPLATE_EMAIL_TEXT] = "OTPD_EMAIL_TEXT",
        [TEMPLATE_EMAIL_HTML] = "OTPD_EMAIL_HTML",
    };
    const char *values[TEMPLATE_KINDS] = {
        [TEMPLATE_SMS] = cfg->template,
        [TEMPLATE_EMAIL_SUBJECT] = cfg->email_subject,
        [TEMPLATE_EMAIL_TEXT] = cfg->email_text,
        [TEMPLATE_EMAIL_HTML] = cfg->email_html,
    };
    struct templates_settings s = {
        .dir = cfg->templates_dir,
        .default_locale = cfg->default_locale,
        .digits = cfg->otp_digits,
        .minutes = (cfg->otp_ttl + 59) / 60,
        .webotp_domain = cfg->webotp_domain,
        .app_hash = cfg->android_app_hash,
    };
    struct templates *t;

    for (int k = 0; k < TEMPLATE_KINDS; k++)
        if (keys[k] != NULL && strcmp(values[k], config_lookup(keys[k])->def) != 0)
            s.overrides[k] = values[k];
    if ((t = templates_load(&s, err, errlen)) == NULL)
        return -1;
    templates_free(cfg->templates);
    cfg->templates = t;
    return 0;
}

int
config_finish(struct config *cfg, char *err, size_t errlen)
{
    char why[128];

    if (cfg->hash_key_hex == NULL || *cfg->hash_key_hex == '\0') {
        otpd_seterr(err, errlen,
                    "OTPD_HASH_KEY: not set; it must be 64 hex characters shared with "
                    "the web app (make one with otpd --gen-key)");
        return -1;
    }
    if (config_key_weak(cfg, why, sizeof(why))) {
        otpd_seterr(err, errlen,
                    "OTPD_HASH_KEY: %s; anyone who knows it can forge codes' hashes. Make one "
                    "with otpd --gen-key",
                    why);
        return -1;
    }
    if (config_check_credentials(cfg, err, errlen) < 0 ||
        config_pick_provider(cfg, err, errlen) < 0)
        return -1;
    if (*cfg->msg91_webhook_token && strlen(cfg->msg91_webhook_token) < CONFIG_WEBHOOK_TOKEN_MIN) {
        otpd_seterr(err, errlen,
                    "MSG91_WEBHOOK_TOKEN: shorter than %d characters; it is the only thing "
                    "that authenticates MSG91's reports. Make one with: openssl rand -hex 16",
                    CONFIG_WEBHOOK_TOKEN_MIN);
        return -1;
    }
    if (*cfg->ca_file && access(cfg->ca_file, R_OK) != 0) {
        otpd_seterr(err, errlen, "OTPD_CA_FILE: %s: %s", cfg->ca_file, strerror(errno));
        return -1;
    }
    if (otp_template_check(cfg->template, cfg->otp_digits, (cfg->otp_ttl + 59) / 60, why,
                           sizeof(why)) < 0) {
        otpd_seterr(err, errlen, "OTPD_TEMPLATE: %s", why);
        return -1;
    }
    if (config_finish_email(cfg, err, errlen) < 0 || config_finish_templates(cfg, err, errlen) < 0)
        return -1;
    if (route_parse(&cfg->routes, cfg->routes_spec, why, sizeof(why)) < 0) {
        otpd_seterr(err, errlen, "OTPD_ROUTES: %s", why);
        return -1;
    }
    if (route_parse_countries(&cfg->allowed, cfg->allowed_spec, 0, why, sizeof(why)) < 0) {
        otpd_seterr(err, errlen, "OTPD_ALLOWED_COUNTRIES: %s", why);
        return -1;
    }
    if (route_parse_countries(&cfg->budgets, cfg->budget_spec, 1, why, sizeof(why)) < 0) {
        otpd_seterr(err, errlen, "OTPD_COUNTRY_HOURLY_BUDGET: %s", why);
        return -1;
    }
    if (config_finish_fraud(cfg, err, errlen) < 0)
        return -1;
    if (fallback_parse_setting(cfg->fallback_spec, cfg->fallback, &cfg->nfallback, why,
                               sizeof(why)) < 0) {
        otpd_seterr(err, errlen, "OTPD_FALLBACK: %s", why);
        return -1;
    }
    if ((cfg->nsentinels = config_parse_sentinels(cfg->redis_sentinels_spec, cfg->sentinels,
                                                  SENTINELS_MAX, why, sizeof(why))) < 0) {
        otpd_seterr(err, errlen, "OTPD_REDIS_SENTINELS: %s", why);
        return -1;
    }
    if (cfg->nsentinels > 0 && cfg->redis.path != NULL) {
        otpd_seterr(err, errlen,
                    "OTPD_REDIS_SENTINELS is set but REDIS_URL is a unix socket: with "
                    "sentinels, REDIS_URL is redis://[user:password@]any-host/db (its host "
                    "and port are not used)");
        return -1;
    }
    if (*cfg->consumer == '\0') {
        char host[256] = "otpd", name[300];
        gethostname(host, sizeof(host) - 1);
        snprintf(name, sizeof(name), "%s:%ld", host, (long)getpid());
        free(cfg->consumer);
        if ((cfg->consumer = strdup(name)) == NULL) {
            otpd_seterr(err, errlen, "out of memory");
            return -1;
        }
    }
    return 0;
}

int
config_twilio_callbacks(const struct config *cfg)
{
    return *cfg->twilio_status_callback && *cfg->metrics_addr;
}

int
config_twilio_voice_configured(const struct config *cfg)
{
    return config_twilio_configured(cfg) && *cfg->twilio_phone_number;
}

int
config_twilio_voice_callbacks(const struct config *cfg)
{
    return *cfg->twilio_voice_status_callback && *cfg->metrics_addr;
}

/* 127.0.0.0/8 or ::1: only this host can reach the endpoint. */
static int
config_addr_loopback(const char *addr)
{
    return strncmp(addr, "127.", 4) == 0 || strncmp(addr, "[::1]:", 6) == 0 ||
           strncmp(addr, "localhost:", 10) == 0;
}

/*
 * Settings that work but are likely not what the operator meant.  The
 * daemon logs them at start, --check-config prints them.
 */
void
config_warnings(const struct config *cfg, config_warn_fn *warn, void *arg)
{
    if (strcmp(cfg->provider_default, "console") == 0)
        warn(arg, "the console provider is in use (development only): every code and full "
                  "number is printed to standard output (the journal under systemd) and NO SMS "
                  "is sent. Set TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN and TWILIO_PHONE_NUMBER "
                  "(or MSG91_*) to send");
    if (*cfg->msg91_auth_key && !*cfg->msg91_template_id)
        warn(arg, "MSG91_AUTH_KEY is set but MSG91_TEMPLATE_ID is not: MSG91 is not used");
    if (*cfg->metrics_addr && !config_addr_loopback(cfg->metrics_addr))
        warn(arg, "OTPD_METRICS_ADDR is not a loopback address: /metrics and the webhook paths "
                  "answer anyone who can reach it; keep it behind a firewall or a reverse proxy "
                  "that forwards only /webhooks/");
    if (*cfg->twilio_status_callback && !*cfg->metrics_addr)
        warn(arg, "TWILIO_STATUS_CALLBACK is set but OTPD_METRICS_ADDR is not, so otpd cannot "
                  "receive Twilio's callbacks: it polls Twilio for delivery status instead. Set "
                  "OTPD_METRICS_ADDR and route the callback URL to it to use callbacks");
    templates_warnings(cfg->templates, warn, arg);
}

int
config_load(struct config *cfg, const char *path, config_env_fn *getenv_fn, char *err,
            size_t errlen)
{
    if (path && config_read_file(cfg, path, err, errlen) < 0)
        return -1;
    if (config_read_env(cfg, getenv_fn, err, errlen) < 0)
        return -1;
    return config_finish(cfg, err, errlen);
}

static void
config_print_warning(void *arg, const char *text)
{
    fprintf(arg, "# WARNING: %s\n", text);
}

/* A value in double quotes, written so the parser reads it back (\n \" \\). */
static void
config_print_quoted(FILE *out, const char *v)
{
    fputc('"', out);
    for (; v && *v; v++) {
        if (*v == '\n')
            fputs("\\n", out);
        else if (*v == '"' || *v == '\\')
            fprintf(out, "\\%c", *v);
        else
            fputc(*v, out);
    }
    fputc('"', out);
}

void
config_print(const struct config *cfg, FILE *out)
{
    for (size_t i = 0; i < CONFIG_NENTRIES; i++) {
        const struct config_entry *e = &config_table[i];
        if (e->type == CT_BOOL) {
            fprintf(out, "%s=%s\n", e->key,
                    *(const int *)((const char *)cfg + e->offset) ? "True" : "False");
            continue;
        }
        if (e->type == CT_INT) {
            fprintf(out, "%s=%d\n", e->key, *(const int *)((const char *)cfg + e->offset));
            continue;
        }
        const char *v = *(char *const *)((const char *)cfg + e->offset);
        if (e->type == CT_REDIS_URL) {
            char buf[1024];
            v = config_redis_url_redacted(cfg, buf, sizeof(buf));
            fprintf(out, "%s=%s\n", e->key, v);
        } else if (e->flags & CF_SECRET) {
            fprintf(out, "%s=%s\n", e->key, v && *v ? "(set, redacted)" : "(not set)");
        } else {
            fprintf(out, "%s=", e->key);
            config_print_quoted(out, v);
            fputc('\n', out);
        }
    }
    if (cfg->provider_default == NULL)
        return; /* not checked by config_finish(): nothing decided yet */
    fprintf(out, "# default provider: %s%s\n", cfg->provider_default,
            *cfg->provider ? "" : " (OTPD_PROVIDER is empty: chosen from the credentials set)");
    config_warnings(cfg, config_print_warning, out);
    if (cfg->templates != NULL)
        templates_print_table(cfg->templates, out);
}

void
config_redis_addr_free(struct redis_addr *a)
{
    free(a->host);
    free(a->path);
    if (a->password)
        sodium_memzero(a->password, strlen(a->password));
    free(a->password);
    free(a->username);
    memset(a, 0, sizeof(*a));
}

static char *
url_part(CURLU *u, CURLUPart part)
{
    char *v = NULL, *copy;

    if (curl_url_get(u, part, &v, CURLU_URLDECODE) != CURLUE_OK)
        return NULL;
    copy = strdup(v);
    curl_free(v);
    return copy;
}

/*
 * redis://[[user]:password@]host[:port][/db] and unix:///path[?db=N].
 * curl_url does the URL grammar (and percent-decoding of the password).
 */
/* One sentinel, "host[:port]" or "[v6][:port]"; curl_url does the grammar. */
static int
config_parse_sentinel(const char *entry, struct sentinel_addr *sa, char *err, size_t errlen)
{
    char url[320];
    CURLU *u = curl_url();
    char *host = NULL, *port = NULL, *user = NULL, *path = NULL;
    long v = 26379;
    int rc = -1;

    if (u == NULL) {
        otpd_seterr(err, errlen, "out of memory");
        return -1;
    }
    snprintf(url, sizeof(url), "redis://%s", entry);
    if (strlen(entry) > 262 ||
        curl_url_set(u, CURLUPART_URL, url, CURLU_NON_SUPPORT_SCHEME) != CURLUE_OK ||
        (host = url_part(u, CURLUPART_HOST)) == NULL || *host == '\0') {
        otpd_seterr(err, errlen, "\"%s\" is not host:port", entry);
        goto out;
    }
    user = url_part(u, CURLUPART_USER);
    path = url_part(u, CURLUPART_PATH);
    port = url_part(u, CURLUPART_PORT);
    if (user != NULL || (path != NULL && strcmp(path, "/") != 0) || strchr(entry, '?')) {
        otpd_seterr(err, errlen,
                    "\"%s\" is not host:port (the sentinels' password is "
                    "OTPD_REDIS_SENTINEL_PASSWORD)",
                    entry);
        goto out;
    }
    if (port != NULL && parse_int(port, 1, 65535, &v) < 0) {
        otpd_seterr(err, errlen, "bad port in \"%s\"", entry);
        goto out;
    }
    /* An IPv6 literal: bare, as getaddrinfo wants it. */
    snprintf(sa->host, sizeof(sa->host), "%.*s", (int)strlen(host) - (host[0] == '[' ? 2 : 0),
             host + (host[0] == '['));
    sa->port = (int)v;
    rc = 0;
out:
    free(host);
    free(port);
    free(user);
    free(path);
    curl_url_cleanup(u);
    return rc;
}

int
config_parse_sentinels(const char *spec, struct sentinel_addr *out, int max, char *err,
                       size_t errlen)
{
    char entry[300];
    int n = 0;

    for (const char *p = spec; *p;) {
        size_t len = strcspn(p, ",");
        const char *s = p, *e = p + len;
        while (s < e && (*s == ' ' || *s == '\t'))
            s++;
        while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
            e--;
        if (e == s) {
            otpd_seterr(err, errlen, "an empty entry (host:port,host:port,...)");
            return -1;
        }
        if (n == max) {
            otpd_seterr(err, errlen, "more than %d sentinels", max);
            return -1;
        }
        snprintf(entry, sizeof(entry), "%.*s", (int)(e - s), s);
        if (config_parse_sentinel(entry, &out[n++], err, errlen) < 0)
            return -1;
        p += len + (p[len] == ',');
    }
    return n;
}

int
config_parse_redis_url(const char *url, struct redis_addr *a, char *err, size_t errlen)
{
    CURLU *u;
    char *scheme = NULL, *port = NULL, *path = NULL, *query = NULL;
    long v;
    int rc = -1;

    memset(a, 0, sizeof(*a));
    a->port = 6379;
    /*
     * unix:///path by hand: curl_url (7.88) drops the empty authority and
     * takes the first path segment as the host ("/tmp/r.sock" -> host
     * "tmp", path "/r.sock").
     */
    if (strncmp(url, "unix://", 7) == 0) {
        const char *p = url + 7, *q = strchr(p, '?');
        size_t plen = q ? (size_t)(q - p) : strlen(p);
        if (plen < 2 || p[0] != '/') {
            otpd_seterr(err, errlen, "unix:// URL needs an absolute socket path");
            return -1;
        }
        if (q && strncmp(q + 1, "db=", 3) == 0) {
            if (parse_int(q + 4, 0, 1000000, &v) < 0) {
                otpd_seterr(err, errlen, "bad db number in \"%s\"", q + 1);
                return -1;
            }
            a->db = (int)v;
        }
        if ((a->path = strndup(p, plen)) == NULL) {
            otpd_seterr(err, errlen, "out of memory");
            return -1;
        }
        return 0;
    }
    if ((u = curl_url()) == NULL) {
        otpd_seterr(err, errlen, "out of memory");
        return -1;
    }
    if (curl_url_set(u, CURLUPART_URL, url, CURLU_NON_SUPPORT_SCHEME) != CURLUE_OK) {
        otpd_seterr(err, errlen, "\"%s\" is not a URL (redis://host:port/db or unix:///path)", url);
        goto out;
    }
    scheme = url_part(u, CURLUPART_SCHEME);
    path = url_part(u, CURLUPART_PATH);
    query = url_part(u, CURLUPART_QUERY);
    a->password = url_part(u, CURLUPART_PASSWORD);
    a->username = url_part(u, CURLUPART_USER);
    if (a->username && *a->username == '\0') {
        free(a->username);
        a->username = NULL;
    }
    if (scheme && strcmp(scheme, "unix") == 0) {
        if (path == NULL || path[0] != '/' || path[1] == '\0') {
            otpd_seterr(err, errlen, "unix:// URL needs an absolute socket path");
            goto out;
        }
        a->path = path;
        path = NULL;
        if (query && strncmp(query, "db=", 3) == 0) {
            if (parse_int(query + 3, 0, 1000000, &v) < 0) {
                otpd_seterr(err, errlen, "bad db number in \"%s\"", query);
                goto out;
            }
            a->db = (int)v;
        }
    } else if (scheme && strcmp(scheme, "redis") == 0) {
        a->host = url_part(u, CURLUPART_HOST);
        if (a->host && a->host[0] == '[') { /* IPv6 literal: hiredis wants it bare */
            size_t n = strlen(a->host);
            memmove(a->host, a->host + 1, n);
            if (n >= 2 && a->host[n - 2] == ']')
                a->host[n - 2] = '\0';
        }
        if (a->host == NULL || *a->host == '\0') {
            otpd_seterr(err, errlen, "redis:// URL needs a host");
            goto out;
        }
        if ((port = url_part(u, CURLUPART_PORT)) != NULL) {
            if (parse_int(port, 1, 65535, &v) < 0) {
                otpd_seterr(err, errlen, "bad port \"%s\"", port);
                goto out;
            }
            a->port = (int)v;
        }
        if (path && strcmp(path, "/") != 0) {
            if (parse_int(path + 1, 0, 1000000, &v) < 0) {
                otpd_seterr(err, errlen, "bad db number \"%s\" (expected /0, /1, ...)", path + 1);
                goto out;
            }
            a->db = (int)v;
        }
    } else {
        otpd_seterr(err, errlen,
                    "scheme must be redis:// or unix:// (rediss:// TLS is not supported "
                    "by this build)");
        goto out;
    }
    rc = 0;
out:
    if (rc < 0)
        config_redis_addr_free(a);
    free(scheme);
    free(port);
    free(path);
    free(query);
    curl_url_cleanup(u);
    return rc;
}

const char *
config_redis_url_redacted(const struct config *cfg, char *buf, size_t len)
{
    const struct redis_addr *a = &cfg->redis;
    if (a->path)
        snprintf(buf, len, "unix://%s?db=%d", a->path, a->db);
    else
        snprintf(buf, len, "redis://%s%s%s%s:%d/%d", a->username ? a->username : "",
                 a->password ? ":***" : "", a->password || a->username ? "@" : "", a->host, a->port,
                 a->db);
    return buf;
}

/* "# "-prefixed lines of at most width characters, broken at spaces. */
static void
print_wrapped(FILE *out, const char *text, size_t width)
{
    const char *p = text;

    while (*p) {
        size_t n = strlen(p);
        if (n > width) {
            n = width;
            while (n > 0 && p[n] != ' ')
                n--;
            if (n == 0)
                n = width;
        }
        fprintf(out, "# %.*s\n", (int)n, p);
        p += n;
        while (*p == ' ')
            p++;
    }
}

/* The documented example file, generated from the table so it cannot drift. */
void
config_print_example(FILE *out)
{
    fputs("# otpd configuration.  The syntax is the Django .env one (KEY=VALUE, # comments,\n"
          "# quotes); the web app's own .env can be used as it is, since keys otpd does not\n"
          "# know are ignored (except misspelt OTPD_* keys, which are errors).  Environment\n"
          "# variables of the same names override this file.  Check a file with\n"
          "#   otpd -c FILE --check-config\n"
          "# It holds secrets: mode 0640, owner root, group otpd (the service reads it).\n",
          out);
    for (size_t i = 0; i < CONFIG_NENTRIES; i++) {
        const struct config_entry *e = &config_table[i];
        char help[512];
        if (e->type == CT_INT)
            snprintf(help, sizeof(help), "%s (%ld..%ld)", e->help, e->min, e->max);
        else if (e->type == CT_BOOL)
            snprintf(help, sizeof(help), "%s (True or False)", e->help);
        else
            snprintf(help, sizeof(help), "%s", e->help);
        fputc('\n', out);
        print_wrapped(out, help, 78);
        if (e->type == CT_HEXKEY)
            fprintf(out, "#%s=<64 hex characters: otpd --gen-key>\n", e->key);
        else if (e->def && strpbrk(e->def, " \n\"\\")) {
            fprintf(out, "#%s=", e->key);
            config_print_quoted(out, e->def);
            fputc('\n', out);
        } else
            fprintf(out, "#%s=%s\n", e->key, e->def ? e->def : "");
    }
}

static void
config_log_warning(void *arg, const char *text)
{
    (void)arg;
    log_warnx("WARNING: %s", text);
}

static int
config_entry_equal(const struct config *a, const struct config *b, const struct config_entry *e)
{
    if (config_is_int(e))
        return *(const int *)((const char *)a + e->offset) ==
               *(const int *)((const char *)b + e->offset);
    const char *x = *(char *const *)((const char *)a + e->offset);
    const char *y = *(char *const *)((const char *)b + e->offset);
    return strcmp(x ? x : "", y ? y : "") == 0;
}

/*
 * Take next's values into cur, key by key, except those that need a
 * restart (logged).  Strings are swapped, so freeing next frees the old
 * values.  Returns the number of keys applied.
 */
int
config_reload(struct config *cur, struct config *next)
{
    int applied = 0;

    for (size_t i = 0; i < CONFIG_NENTRIES; i++) {
        const struct config_entry *e = &config_table[i];
        if (config_entry_equal(cur, next, e))
            continue;
        if (e->flags & CF_RESTART) {
            log_warnx("reload: %s changed; it takes effect at the next restart", e->key);
            continue;
        }
        if (config_is_int(e)) {
            *(int *)((char *)cur + e->offset) = *(int *)((char *)next + e->offset);
        } else {
            char **a = config_str_slot(cur, e), **b = config_str_slot(next, e);
            char *t = *a;
            *a = *b;
            *b = t;
        }
        if (e->type == CT_HEXKEY)
            memcpy(cur->hash_key, next->hash_key, sizeof(cur->hash_key));
        log_notice("reload: %s updated", e->key);
        applied++;
    }
    /* Derived tables follow their strings. */
    cur->routes = next->routes;
    cur->allowed = next->allowed;
    cur->budgets = next->budgets;
    cur->blocked = next->blocked;
    cur->prices = next->prices;
    cur->spend_budget = next->spend_budget;
    cur->spend_budgets = next->spend_budgets;
    memcpy(cur->fallback, next->fallback, sizeof(cur->fallback));
    cur->nfallback = next->nfallback;
    /* The texts follow their files and settings; next frees the old set. */
    if (!templates_same(cur->templates, next->templates)) {
        log_notice("reload: templates updated");
        templates_warnings(next->templates, config_log_warning, NULL);
    }
    struct templates *t = cur->templates;
    cur->templates = next->templates;
    next->templates = t;
    return applied;
}

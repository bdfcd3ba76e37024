/*
 * metrics.c: counters and latency histograms in fixed arrays (up to eight
 * providers, named as first seen; six outcomes), rendered in the Prometheus
 * text format 0.0.4.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fallback.h"
#include "job.h"
#include "metrics.h"
#include "spend.h"

/* From 5 ms: enqueue to sent is often well under the 50 ms the others start at. */
static const double buckets[] = {0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};
#define NBUCKETS  (sizeof(buckets) / sizeof(buckets[0]))
#define NOUTCOMES 6

/* Providers are named as they are first seen, so a new provider needs no change here. */
#define NPROVIDERS 8

struct histogram {
    uint64_t bucket[NBUCKETS];
    uint64_t count;
    double sum;
};

static char provider_names[NPROVIDERS][16];
static size_t nproviders;
static struct histogram latency[NPROVIDERS][NOUTCOMES];

static int
provider_slot(const char *provider)
{
    for (size_t p = 0; p < nproviders; p++)
        if (strcmp(provider, provider_names[p]) == 0)
            return (int)p;
    if (nproviders == NPROVIDERS)
        return -1; /* bounded label set */
    snprintf(provider_names[nproviders], sizeof(provider_names[0]), "%s", provider);
    return (int)nproviders++;
}

void
metrics_observe_request(const char *provider, enum send_outcome outcome, double seconds)
{
    int p = provider_slot(provider);
    struct histogram *h;

    if (p < 0 || (unsigned)outcome >= NOUTCOMES)
        return;
    h = &latency[p][outcome];
    for (size_t b = 0; b < NBUCKETS; b++)
        if (seconds <= buckets[b])
            h->bucket[b]++;
    h->count++;
    h->sum += seconds;
}

/* Delivery latency: a small table of (provider, calling code) histograms. */
#define NDELIVERY 64
static struct {
    char provider[16], cc[4];
    struct histogram h;
} delivery[NDELIVERY];
static int ndelivery;

void
metrics_observe_delivery(const char *provider, const char *cc, double seconds)
{
    int i;

    for (i = 0; i < ndelivery; i++)
        if (strcmp(delivery[i].provider, provider) == 0 && strcmp(delivery[i].cc, cc) == 0)
            break;
    if (i == ndelivery) {
        if (ndelivery == NDELIVERY)
            return; /* bounded label set */
        snprintf(delivery[i].provider, sizeof(delivery[i].provider), "%s", provider);
        snprintf(delivery[i].cc, sizeof(delivery[i].cc), "%s", cc);
        ndelivery++;
    }
    for (size_t b = 0; b < NBUCKETS; b++)
        if (seconds <= buckets[b])
            delivery[i].h.bucket[b]++;
    delivery[i].h.count++;
    delivery[i].h.sum += seconds;
}

/*
 * Counts by provider, calling code and status, in a bounded table (a
 * pumping run across many countries must not grow the page without end):
 * jobs' ends ("" provider: ended before one was tried) and the receipts
 * that changed a job.
 */
#define NOUTCOME_ROWS 128
struct outcome_table {
    struct {
        char provider[16], cc[4];
        uint64_t n[JOB_STATUS_COUNT];
    } row[NOUTCOME_ROWS];
    int nrows;
};

static struct outcome_table ends, receipts;
static struct histogram to_sent[NPROVIDERS]; /* enqueue to sent, per provider */

static void
outcome_count(struct outcome_table *t, const char *provider, const char *cc, enum job_status status)
{
    int i;

    if ((unsigned)status >= JOB_STATUS_COUNT)
        return;
    for (i = 0; i < t->nrows; i++)
        if (strcmp(t->row[i].provider, provider) == 0 && strcmp(t->row[i].cc, cc) == 0)
            break;
    if (i == t->nrows) {
        if (t->nrows == NOUTCOME_ROWS)
            return; /* bounded label set */
        snprintf(t->row[i].provider, sizeof(t->row[i].provider), "%s", provider);
        snprintf(t->row[i].cc, sizeof(t->row[i].cc), "%s", cc);
        t->nrows++;
    }
    t->row[i].n[status]++;
}

void
metrics_observe_end(const char *provider, const char *cc, enum job_status status,
                    double since_enqueue_s)
{
    int p;

    if (status == JOB_SENT && (p = provider_slot(provider)) >= 0) {
        for (size_t b = 0; b < NBUCKETS; b++)
            if (since_enqueue_s <= buckets[b])
                to_sent[p].bucket[b]++;
        to_sent[p].count++;
        to_sent[p].sum += since_enqueue_s;
    }
    outcome_count(&ends, provider, cc, status);
}

void
metrics_observe_receipt(const char *provider, const char *cc, enum job_status status)
{
    outcome_count(&receipts, provider, cc, status);
}

/* SMS segments sent, by provider and calling code (bounded like the outcomes). */
static struct {
    char provider[16], cc[4];
    uint64_t messages, segments;
} sms_rows[NOUTCOME_ROWS];
static int nsms_rows;

void
metrics_observe_segments(const char *provider, const char *cc, int segments)
{
    int i;

    for (i = 0; i < nsms_rows; i++)
        if (strcmp(sms_rows[i].provider, provider) == 0 && strcmp(sms_rows[i].cc, cc) == 0)
            break;
    if (i == nsms_rows) {
        if (nsms_rows == NOUTCOME_ROWS)
            return;
        snprintf(sms_rows[i].provider, sizeof(sms_rows[i].provider), "%s", provider);
        snprintf(sms_rows[i].cc, sizeof(sms_rows[i].cc), "%s", cc);
        nsms_rows++;
    }
    sms_rows[i].messages++;
    sms_rows[i].segments += (uint64_t)(segments > 0 ? segments : 0);
}

struct page {
    char *buf;
    size_t len, cap;
    int failed;
};

static void
out(struct page *pg, const char *fmt, ...)
{
    va_list ap;
    int n;

    for (;;) {
        va_start(ap, fmt);
        n = vsnprintf(pg->buf + pg->len, pg->cap - pg->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            pg->failed = 1;
            return;
        }
        if ((size_t)n < pg->cap - pg->len) {
            pg->len += (size_t)n;
            return;
        }
        char *nb = realloc(pg->buf, pg->cap * 2 + (size_t)n);
        if (nb == NULL) {
            pg->failed = 1;
            return;
        }
        pg->buf = nb;
        pg->cap = pg->cap * 2 + (size_t)n;
    }
}

static void
family(struct page *pg, const char *name, const char *type, const char *help)
{
    out(pg, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void
render_redis(struct page *pg, const struct metrics_redis *r)
{
    static const char *const steps[] = {"begin", "finish"};

    family(pg, "otpd_redis_connected", "gauge",
           "1 while the connection is up (and, under Sentinel, to the master).");
    out(pg, "otpd_redis_connected{connection=\"reader\"} %d\n", r->reader_up);
    out(pg, "otpd_redis_connected{connection=\"writer\"} %d\n", r->writer_up);
    family(pg, "otpd_redis_waits_total", "counter",
           "WAITs for replicas after a batch (OTPD_REDIS_WAIT_REPLICAS), by step.");
    for (int i = 0; i < 2; i++)
        out(pg, "otpd_redis_waits_total{step=\"%s\"} %llu\n", steps[i], r->ledger->waits[i]);
    family(pg, "otpd_redis_waits_short_total", "counter",
           "WAITs that fewer replicas answered than asked for: begin holds its jobs back, "
           "finish goes on.");
    for (int i = 0; i < 2; i++)
        out(pg, "otpd_redis_waits_short_total{step=\"%s\"} %llu\n", steps[i],
            r->ledger->waits_short[i]);
    if (r->sentinel == NULL)
        return;
    family(pg, "otpd_redis_sentinel_asks_total", "counter",
           "Times the sentinels were asked where the master is, and times none answered.");
    out(pg, "otpd_redis_sentinel_asks_total{result=\"asked\"} %llu\n", r->sentinel->asked);
    out(pg, "otpd_redis_sentinel_asks_total{result=\"unanswered\"} %llu\n", r->sentinel->failures);
    family(pg, "otpd_redis_master_switches_total", "counter",
           "+switch-master announcements heard for this master (failovers).");
    out(pg, "otpd_redis_master_switches_total %llu\n", r->sentinel->switches);
}

static void
render_histogram(struct page *pg, const char *name, const char *labels, const struct histogram *h)
{
    for (size_t b = 0; b < NBUCKETS; b++)
        out(pg, "%s_bucket{%s,le=\"%g\"} %llu\n", name, labels, buckets[b],
            (unsigned long long)h->bucket[b]);
    out(pg, "%s_bucket{%s,le=\"+Inf\"} %llu\n", name, labels, (unsigned long long)h->count);
    out(pg, "%s_sum{%s} %.6f\n", name, labels, h->sum);
    out(pg, "%s_count{%s} %llu\n", name, labels, (unsigned long long)h->count);
}

static void
render_latency(struct page *pg)
{
    char labels[64];

    family(pg, "otpd_provider_request_duration_seconds", "histogram",
           "Provider send requests by provider and result, from request to answer.");
    for (size_t p = 0; p < nproviders; p++) {
        for (int o = 0; o < NOUTCOMES; o++) {
            if (latency[p][o].count == 0)
                continue;
            snprintf(labels, sizeof(labels), "provider=\"%s\",result=\"%s\"", provider_names[p],
                     provider_outcome_name((enum send_outcome)o));
            render_histogram(pg, "otpd_provider_request_duration_seconds", labels, &latency[p][o]);
        }
    }
}

static void
render_outcomes(struct page *pg, const char *name, const struct outcome_table *t)
{
    for (int i = 0; i < t->nrows; i++)
        for (int st = 0; st < JOB_STATUS_COUNT; st++)
            if (t->row[i].n[st] > 0)
                out(pg, "%s{provider=\"%s\",country=\"%s\",status=\"%s\"} %llu\n", name,
                    t->row[i].provider, t->row[i].cc, job_status_name((enum job_status)st),
                    (unsigned long long)t->row[i].n[st]);
}

static void
render_ends(struct page *pg)
{
    char labels[64];

    family(pg, "otpd_enqueue_to_sent_seconds", "histogram",
           "From the site enqueuing a job to the provider accepting its message, by provider.");
    for (size_t p = 0; p < nproviders; p++) {
        snprintf(labels, sizeof(labels), "provider=\"%s\"", provider_names[p]);
        render_histogram(pg, "otpd_enqueue_to_sent_seconds", labels, &to_sent[p]);
    }
    family(pg, "otpd_country_jobs_total", "counter",
           "Jobs ended by this instance after their claim, by provider (empty: none was tried), "
           "destination calling code and status.");
    render_outcomes(pg, "otpd_country_jobs_total", &ends);
    family(pg, "otpd_receipts_total", "counter",
           "Delivery receipts that changed a job (delivered, undelivered, failed), by provider, "
           "calling code and status; counted by the instance that received them.");
    render_outcomes(pg, "otpd_receipts_total", &receipts);
}

static void
render_sms(struct page *pg, const struct delivery_stats *s)
{
    family(pg, "otpd_sms_segments_total", "counter",
           "SMS segments in the messages providers accepted from this instance, by provider and "
           "calling code (GSM-7: 160, then 153 a segment; UCS-2: 70, then 67).");
    for (int i = 0; i < nsms_rows; i++)
        out(pg, "otpd_sms_segments_total{provider=\"%s\",country=\"%s\"} %llu\n",
            sms_rows[i].provider, sms_rows[i].cc, (unsigned long long)sms_rows[i].segments);
    family(pg, "otpd_sms_messages_total", "counter",
           "SMS messages providers accepted from this instance, by provider and calling code.");
    for (int i = 0; i < nsms_rows; i++)
        out(pg, "otpd_sms_messages_total{provider=\"%s\",country=\"%s\"} %llu\n",
            sms_rows[i].provider, sms_rows[i].cc, (unsigned long long)sms_rows[i].messages);
    family(pg, "otpd_fraud_refused_total", "counter",
           "SMS jobs this instance ended unsent by the SMS-pumping defences, by reason: an "
           "automatic pause (suspected_pumping), a blocked prefix, a money budget.");
    out(pg, "otpd_fraud_refused_total{reason=\"suspected_pumping\"} %llu\n",
        (unsigned long long)s->pumping_refused);
    out(pg, "otpd_fraud_refused_total{reason=\"blocked_prefix\"} %llu\n",
        (unsigned long long)s->blocked_refused);
    out(pg, "otpd_fraud_refused_total{reason=\"spend_budget\"} %llu\n",
        (unsigned long long)s->spend_refused);
    family(pg, "otpd_fraud_pauses_total", "counter",
           "Prefixes this instance paused as suspected SMS pumping.");
    out(pg, "otpd_fraud_pauses_total %llu\n", (unsigned long long)s->pauses);
}

/* The shared report (fraud_stats.lua, read every 15 s): every instance shows the same. */
static void
render_report(struct page *pg, const struct config *cfg, const struct fraud_view *v)
{
    char money[32];

    if (!v->valid)
        return;
    family(pg, "otpd_conversion_codes", "gauge",
           "New codes over the pumping model's window (OTPD_FRAUD_WINDOW_S, whole 5-minute "
           "buckets), by channel and calling code.");
    for (int i = 0; i < v->nconv; i++)
        out(pg, "otpd_conversion_codes{channel=\"%s\",country=\"%s\"} %ld\n", v->conv[i].channel,
            v->conv[i].cc, v->conv[i].codes);
    family(pg, "otpd_conversion_verified", "gauge",
           "Codes verified over the same window, by channel and calling code.");
    for (int i = 0; i < v->nconv; i++)
        out(pg, "otpd_conversion_verified{channel=\"%s\",country=\"%s\"} %ld\n", v->conv[i].channel,
            v->conv[i].cc, v->conv[i].verified);
    family(pg, "otpd_conversion_ratio", "gauge",
           "Verified codes / new codes over the window, by channel and calling code.");
    for (int i = 0; i < v->nconv; i++)
        if (v->conv[i].codes > 0)
            out(pg, "otpd_conversion_ratio{channel=\"%s\",country=\"%s\"} %.4f\n",
                v->conv[i].channel, v->conv[i].cc,
                (double)v->conv[i].verified / (double)v->conv[i].codes);
    family(pg, "otpd_prefix_codes", "gauge",
           "New SMS codes over the window for the busiest number prefixes (and any with a rule).");
    for (int i = 0; i < v->nprefixes; i++)
        out(pg, "otpd_prefix_codes{prefix=\"%s\",rule=\"%s\"} %ld\n", v->prefixes[i].prefix,
            v->prefixes[i].rule, v->prefixes[i].codes);
    family(pg, "otpd_prefix_baseline", "gauge",
           "A prefix's own baseline: its usual codes per window (a moving average).");
    for (int i = 0; i < v->nprefixes; i++)
        out(pg, "otpd_prefix_baseline{prefix=\"%s\"} %.2f\n", v->prefixes[i].prefix,
            v->prefixes[i].baseline);
    family(pg, "otpd_prefix_conversion_ratio", "gauge",
           "A prefix's verified codes / codes judged (verified, or older than OTPD_FRAUD_SETTLE_S "
           "and not verified) over the window.");
    for (int i = 0; i < v->nprefixes; i++)
        if (v->prefixes[i].judged > 0)
            out(pg, "otpd_prefix_conversion_ratio{prefix=\"%s\"} %.4f\n", v->prefixes[i].prefix,
                (double)v->prefixes[i].verified / (double)v->prefixes[i].judged);
    family(pg, "otpd_fraud_rules", "gauge",
           "Prefix rules in force: automatic pauses, operator blocks and allows.");
    out(pg, "otpd_fraud_rules{kind=\"paused\"} %d\n", v->paused);
    out(pg, "otpd_fraud_rules{kind=\"block\"} %d\n", v->blocked);
    out(pg, "otpd_fraud_rules{kind=\"allow\"} %d\n", v->allowed);
    family(pg, "otpd_sms_spend", "gauge",
           "SMS spend of the current UTC day and hour, by calling code (\"*\": all), all "
           "instances together: expected prices, replaced by the provider's where it reports one.");
    for (int i = 0; i < v->nspend; i++) {
        out(pg, "otpd_sms_spend{period=\"day\",country=\"%s\",currency=\"%s\"} %s\n",
            v->spend[i].cc, cfg->price_currency,
            spend_format(v->spend[i].day, money, sizeof(money)));
        out(pg, "otpd_sms_spend{period=\"hour\",country=\"%s\",currency=\"%s\"} %s\n",
            v->spend[i].cc, cfg->price_currency,
            spend_format(v->spend[i].hour, money, sizeof(money)));
    }
    family(pg, "otpd_sms_spend_budget", "gauge",
           "OTPD_DAILY_SPEND_BUDGET (\"*\") and OTPD_COUNTRY_DAILY_SPEND_BUDGET, per UTC day.");
    if (cfg->spend_budget >= 0)
        out(pg, "otpd_sms_spend_budget{country=\"*\",currency=\"%s\"} %s\n", cfg->price_currency,
            spend_format(cfg->spend_budget, money, sizeof(money)));
    for (int i = 0; i < cfg->spend_budgets.n; i++)
        out(pg, "otpd_sms_spend_budget{country=\"%s\",currency=\"%s\"} %s\n",
            cfg->spend_budgets.cc[i], cfg->price_currency,
            spend_format(cfg->spend_budgets.value[i], money, sizeof(money)));
    family(pg, "otpd_fraud_report_age_seconds", "gauge", "Age of the report above.");
    out(pg, "otpd_fraud_report_age_seconds %.1f\n", (double)(otpd_now_ms() - v->at_ms) / 1000.0);
}

char *
metrics_render(const struct config *cfg, const struct deliveries *d, const struct monitor_gauges *g,
               const struct fraud_view *fraud, struct provider_set *providers,
               const struct httpd_stats *http, const struct metrics_redis *redis, uint64_t now,
               size_t *len)
{
    const struct delivery_stats *s = delivery_stats(d);
    struct page pg = {.cap = 8192};
    char desc[256], labels[64];

    if ((pg.buf = malloc(pg.cap)) == NULL)
        return NULL;
    family(&pg, "otpd_jobs_total", "counter", "Jobs finished by this instance, by outcome.");
    out(&pg, "otpd_jobs_total{outcome=\"sent\"} %llu\n", (unsigned long long)s->sent);
    out(&pg, "otpd_jobs_total{outcome=\"failed\"} %llu\n", (unsigned long long)s->failed);
    out(&pg, "otpd_jobs_total{outcome=\"expired\"} %llu\n", (unsigned long long)s->expired);
    out(&pg, "otpd_jobs_total{outcome=\"rejected\"} %llu\n", (unsigned long long)s->rejected);
    out(&pg, "otpd_jobs_total{outcome=\"duplicate\"} %llu\n", (unsigned long long)s->duplicates);
    out(&pg, "otpd_jobs_total{outcome=\"rate_limited\"} %llu\n",
        (unsigned long long)s->rate_limited);
    family(&pg, "otpd_country_budget_exceeded_total", "counter",
           "Jobs stopped by a country's hourly budget (possible SMS pumping).");
    out(&pg, "otpd_country_budget_exceeded_total %llu\n", (unsigned long long)s->budget_alerts);
    family(&pg, "otpd_channel_jobs_total", "counter",
           "Jobs that ended after being claimed, by channel and outcome (failed includes "
           "expired).");
    for (int c = 0; c < JOB_CHANNELS; c++) {
        const char *name = job_channel_name(c);
        out(&pg, "otpd_channel_jobs_total{channel=\"%s\",outcome=\"sent\"} %llu\n", name,
            (unsigned long long)s->channel_sent[c]);
        out(&pg, "otpd_channel_jobs_total{channel=\"%s\",outcome=\"failed\"} %llu\n", name,
            (unsigned long long)s->channel_failed[c]);
    }
    family(&pg, "otpd_codes_resent_total", "counter",
           "Jobs that texted the valid code of record again (a resend, or a job after a crash) "
           "instead of a new code.");
    out(&pg, "otpd_codes_resent_total %llu\n", (unsigned long long)s->resent);
    family(&pg, "otpd_jobs_claimed_total", "counter",
           "Stream entries claimed (read or reclaimed).");
    out(&pg, "otpd_jobs_claimed_total %llu\n", (unsigned long long)s->claimed);
    family(&pg, "otpd_jobs_reclaimed_total", "counter",
           "Entries taken over from a consumer that stopped.");
    out(&pg, "otpd_jobs_reclaimed_total %llu\n", (unsigned long long)s->reclaimed);
    family(&pg, "otpd_retries_total", "counter", "Send attempts scheduled again after a failure.");
    out(&pg, "otpd_retries_total %llu\n", (unsigned long long)s->retries);
    family(&pg, "otpd_inflight", "gauge", "Jobs claimed and not yet finished.");
    out(&pg, "otpd_inflight %d\n", delivery_inflight(d));
    family(&pg, "otpd_backlog", "gauge", "Entries waiting in the job stream (XLEN).");
    out(&pg, "otpd_backlog %lld\n", (long long)g->backlog);
    family(&pg, "otpd_pending", "gauge", "Entries claimed by the group and not acknowledged.");
    out(&pg, "otpd_pending %lld\n", (long long)g->pending);
    family(&pg, "otpd_oldest_pending_seconds", "gauge",
           "Age of the oldest entry claimed by the group and not acknowledged (0: none); past "
           "a code's lifetime, a job is stuck.");
    out(&pg, "otpd_oldest_pending_seconds %.3f\n", (double)g->oldest_pending_ms / 1000.0);
    family(&pg, "otpd_dead_letters", "gauge", "Entries in the dead-letter stream.");
    out(&pg, "otpd_dead_letters %lld\n", (long long)g->dead_letters);
    family(&pg, "otpd_dead_letters_max", "gauge",
           "Length the dead-letter stream is trimmed to (OTPD_DEAD_MAXLEN).");
    out(&pg, "otpd_dead_letters_max %d\n", cfg->dead_maxlen);
    family(&pg, "otpd_dead_letters_written_total", "counter",
           "Rejected entries this instance wrote to the dead-letter stream.");
    out(&pg, "otpd_dead_letters_written_total %llu\n", (unsigned long long)s->dead_letters);
    family(&pg, "otpd_http_connections", "gauge",
           "Connections open to this endpoint (capped by OTPD_HTTP_MAX_CLIENTS).");
    out(&pg, "otpd_http_connections %llu\n", http->open);
    family(&pg, "otpd_http_connections_total", "counter",
           "Connections to this endpoint, by fate: accepted, evicted (the oldest idle one, closed "
           "to make room) or refused (no room could be made).");
    out(&pg, "otpd_http_connections_total{fate=\"accepted\"} %llu\n", http->accepted);
    out(&pg, "otpd_http_connections_total{fate=\"evicted\"} %llu\n", http->evicted);
    out(&pg, "otpd_http_connections_total{fate=\"refused\"} %llu\n", http->refused);
    family(&pg, "otpd_loop_lag_seconds", "gauge",
           "Worst lateness of the event loop's timers over the last heartbeat period.");
    out(&pg, "otpd_loop_lag_seconds %.3f\n", (double)g->loop_lag_ms / 1000.0);
    family(&pg, "otpd_provider_up", "gauge", "1 if the provider is usable, 0 if marked down.");
    provider_set_describe(providers, now, desc, sizeof(desc));
    char *save = NULL;
    for (char *tok = strtok_r(desc, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(tok, '=');
        if (eq == NULL)
            continue;
        *eq = '\0';
        out(&pg, "otpd_provider_up{provider=\"%s\"} %d\n", tok, strcmp(eq + 1, "up") == 0);
    }
    family(&pg, "otpd_provider_inflight_cap", "gauge",
           "Requests in progress allowed now: the configured cap, or lower after the provider "
           "said too many concurrent requests (0: no cap).");
    {
        const char *names[8];
        int caps[8], n = provider_set_caps(providers, names, caps, 8);
        for (int i = 0; i < n; i++)
            out(&pg, "otpd_provider_inflight_cap{provider=\"%s\"} %d\n", names[i], caps[i]);
    }
    render_redis(&pg, redis);
    render_latency(&pg);
    render_ends(&pg);
    render_sms(&pg, s);
    family(&pg, "otpd_fallbacks_total", "counter",
           "Fallbacks that came due on this instance, by result: queued (the same code went by "
           "the next channel) or not_needed (verified, expired, replaced, locked).");
    out(&pg, "otpd_fallbacks_total{result=\"queued\"} %llu\n",
        (unsigned long long)redis->fallbacks->queued);
    out(&pg, "otpd_fallbacks_total{result=\"not_needed\"} %llu\n",
        (unsigned long long)redis->fallbacks->not_needed);
    render_report(&pg, cfg, fraud);
    family(&pg, "otpd_delivery_latency_seconds", "histogram",
           "From the provider accepting a message to its delivery receipt.");
    for (int i = 0; i < ndelivery; i++) {
        snprintf(labels, sizeof(labels), "provider=\"%.15s\",country=\"%.3s\"",
                 delivery[i].provider, delivery[i].cc);
        render_histogram(&pg, "otpd_delivery_latency_seconds", labels, &delivery[i].h);
    }
    if (pg.failed) {
        free(pg.buf);
        return NULL;
    }
    *len = pg.len;
    return pg.buf;
}

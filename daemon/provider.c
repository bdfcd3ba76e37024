/*
 * provider.c: the provider registry, and the providers' health.
 *
 * It opens the providers a configuration enables and orders them per job
 * (provider_set_route()).  Every attempt asks it which provider may go
 * (provider_set_pick()) and tells it what came back (provider_set_report()),
 * so the policies that govern providers live here, with them: the circuit
 * breaker and its probe, failover along a job's route, the concurrency cap
 * lowered by a provider's "too many requests", and telling otpd's own
 * trouble apart from the provider's.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "backoff.h"
#include "gate.h"
#include "http.h"
#include "log.h"
#include "job.h"
#include "provider.h"
#include "provider_impl.h"

/* Rate and concurrency caps from the configuration (0: unlimited). */
static void
provider_configure_gate(struct provider *p, const struct config *cfg)
{
    int rate = 0, max_inflight = 0;

    if (p->ops->caps)
        p->ops->caps(cfg, &rate, &max_inflight);
    gate_configure(p->gate, rate, max_inflight);
}

static const struct provider_ops *const provider_registry[] = {
    &provider_twilio_ops,        &provider_msg91_ops,         &provider_console_ops,
    &provider_smtp_ops,          &provider_console_email_ops, &provider_twilio_voice_ops,
    &provider_console_voice_ops,
};

#define PROVIDER_NREG (sizeof(provider_registry) / sizeof(provider_registry[0]))

int
provider_registered(const char *name)
{
    for (size_t i = 0; i < PROVIDER_NREG; i++)
        if (strcmp(provider_registry[i]->name, name) == 0)
            return 1;
    return 0;
}

const char *
provider_registered_names(char *buf, size_t len)
{
    size_t off = 0;

    buf[0] = '\0';
    for (size_t i = 0; i < PROVIDER_NREG && off < len; i++)
        off += (size_t)snprintf(buf + off, len - off, "%s%s", i ? ", " : "",
                                provider_registry[i]->name);
    return buf;
}

/* Descriptors the providers' connections may take, for the start-up fd budget. */
int
provider_conns_needed(const struct config *cfg)
{
    int total = 0;

    for (size_t i = 0; i < PROVIDER_NREG; i++) {
        int rate = 0, cap = 0, conns;
        if (provider_registry[i]->caps == NULL)
            continue; /* no connections (console) */
        provider_registry[i]->caps(cfg, &rate, &cap);
        conns = http_conns_cap(cfg, cap);
        /* No cap: at most one connection per job in flight. */
        total += conns > 0 ? conns : cfg->max_inflight;
    }
    return total;
}

struct provider_set {
    uv_loop_t *loop;
    const struct config *cfg;
    struct provider *open[PROVIDER_NREG];
    struct provider *deflt;
    provider_recovered_cb *recovered_cb;
    void *recovered_arg;
    struct log_limiter busy_log; /* concurrency and local failures: once per 10 s each */
    provider_closed_cb *closed_cb;
    void *closed_arg;
};

const char *
provider_outcome_name(enum send_outcome o)
{
    switch (o) {
    case SEND_OK:
        return "ok";
    case SEND_FAIL_JOB:
        return "failed";
    case SEND_FAIL_PROVIDER:
        return "provider_failed";
    case SEND_RETRY:
        return "retry";
    case SEND_AMBIGUOUS:
        return "ambiguous";
    case SEND_LOCAL:
        return "local";
    }
    return "unknown";
}

const char *
provider_name(const struct provider *p)
{
    return p->ops->name;
}

/* Console is for development: only the explicit default enables it. */
static int
provider_enabled(const struct provider_ops *ops, const struct config *cfg)
{
    if (strcmp(ops->name, cfg->provider_default) == 0)
        return 1;
    return ops->configured != NULL && ops->configured(cfg);
}

struct provider_set *
provider_set_open(uv_loop_t *loop, const struct config *cfg, char *err, size_t errlen)
{
    struct provider_set *set = calloc(1, sizeof(*set));

    if (set == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    set->loop = loop;
    set->cfg = cfg;
    set->busy_log.period_ms = 10000;
    set->busy_log.burst = 1;
    for (size_t i = 0; i < PROVIDER_NREG; i++) {
        const struct provider_ops *ops = provider_registry[i];
        if (!provider_enabled(ops, cfg))
            continue;
        if ((set->open[i] = ops->open(loop, cfg, err, errlen)) == NULL) {
            provider_set_close(set, NULL, NULL);
            return NULL;
        }
        if ((set->open[i]->gate = gate_new(loop, 0, 0)) == NULL) {
            snprintf(err, errlen, "out of memory");
            provider_set_close(set, NULL, NULL);
            return NULL;
        }
        provider_configure_gate(set->open[i], cfg);
        if (strcmp(ops->name, cfg->provider_default) == 0)
            set->deflt = set->open[i];
        log_info("provider %s: enabled%s", ops->name,
                 set->deflt == set->open[i] ? " (default)" : "");
    }
    if (set->deflt == NULL) {
        snprintf(err, errlen, "OTPD_PROVIDER: provider \"%s\" is not built in",
                 cfg->provider_default);
        provider_set_close(set, NULL, NULL);
        return NULL;
    }
    return set;
}

static struct provider *
provider_set_named(struct provider_set *set, const char *name)
{
    return provider_set_find(set, name, strlen(name));
}

static int
route_add(struct provider **out, int n, struct provider *p)
{
    for (int i = 0; i < n; i++)
        if (out[i] == p)
            return n;
    if (n < ROUTE_PROVIDERS_MAX)
        out[n++] = p;
    return n;
}

int
provider_set_route(struct provider_set *set, const struct config *cfg, const struct job *job,
                   struct provider **out, char *err, size_t errlen)
{
    const struct route *r;
    int n = 0;

    if (job->provider[0] != '\0') {
        if ((out[0] = provider_set_named(set, job->provider)) == NULL) {
            snprintf(err, errlen, "provider %s is not configured on this daemon", job->provider);
            return 0;
        }
        if (out[0]->ops->channel != job->channel) {
            snprintf(err, errlen, "provider %s does not carry %s", job->provider,
                     job_channel_name(job->channel));
            return 0;
        }
        return 1;
    }
    /*
     * E-mail and voice: the one provider of the channel (SMTP, Twilio's
     * calls), or the development console without one.  Registry order puts
     * the real one first.
     */
    if (job->channel != JOB_CHANNEL_SMS) {
        for (size_t i = 0; i < PROVIDER_NREG; i++)
            if (set->open[i] && set->open[i]->ops->channel == job->channel)
                return route_add(out, 0, set->open[i]);
        snprintf(err, errlen, "no %s provider is configured on this daemon%s",
                 job->channel == JOB_CHANNEL_EMAIL ? "e-mail" : "voice",
                 job->channel == JOB_CHANNEL_VOICE
                     ? " (calls need TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN and TWILIO_PHONE_NUMBER)"
                     : "");
        return 0;
    }
    if ((r = route_lookup(&cfg->routes, job->to)) != NULL)
        for (int i = 0; i < r->n; i++) {
            struct provider *p = provider_set_named(set, r->providers[i]);
            if (p != NULL)
                n = route_add(out, n, p);
        }
    if (n > 0)
        return n;
    /* Console never stands in for a real provider. */
    n = route_add(out, n, set->deflt);
    for (size_t i = 0; i < PROVIDER_NREG; i++)
        if (set->open[i] && strcmp(set->open[i]->ops->name, "console") != 0 &&
            set->open[i]->ops->channel == JOB_CHANNEL_SMS)
            n = route_add(out, n, set->open[i]);
    return n;
}

static void
provider_set_one_closed(void *arg)
{
    struct provider_set *set = arg;

    for (size_t i = 0; i < PROVIDER_NREG; i++) {
        struct provider *p = set->open[i];
        if (p == NULL)
            continue;
        if (p->gate != NULL) {
            struct gate *g = p->gate;
            p->gate = NULL;
            gate_close(g, provider_set_one_closed, set);
            return;
        }
        set->open[i] = NULL;
        p->ops->close(p, provider_set_one_closed, set);
        return;
    }
    if (set->closed_cb)
        set->closed_cb(set->closed_arg);
    free(set);
}

/* Providers close one after another; the set goes when the last is done. */
void
provider_set_close(struct provider_set *set, provider_closed_cb *cb, void *arg)
{
    set->closed_cb = cb;
    set->closed_arg = arg;
    provider_set_one_closed(set);
}

void
provider_set_describe(struct provider_set *set, uint64_t now, char *buf, size_t len)
{
    size_t off = 0;

    buf[0] = '\0';
    for (size_t i = 0; i < PROVIDER_NREG && off < len; i++) {
        const struct provider *p = set->open[i];
        if (p == NULL)
            continue;
        off += (size_t)snprintf(buf + off, len - off, "%s%s=%s", off ? "," : "", p->ops->name,
                                !p->down               ? "up"
                                : now >= p->recheck_at ? "probing"
                                                       : "down");
    }
}

int
provider_set_caps(struct provider_set *set, const char **names, int *caps, int max)
{
    int n = 0;

    for (size_t i = 0; i < PROVIDER_NREG && n < max; i++) {
        if (set->open[i] == NULL || set->open[i]->gate == NULL)
            continue;
        names[n] = set->open[i]->ops->name;
        caps[n++] = gate_limit(set->open[i]->gate);
    }
    return n;
}

void
provider_set_reload(struct provider_set *set, const struct config *cfg)
{
    for (size_t i = 0; i < PROVIDER_NREG; i++) {
        struct provider *p = set->open[i];
        if (p == NULL) {
            if (provider_enabled(provider_registry[i], cfg))
                log_warnx("reload: provider %s is now configured; it starts at the next "
                          "restart",
                          provider_registry[i]->name);
            continue;
        }
        if (p->ops->reload)
            p->ops->reload(p);
        provider_configure_gate(p, cfg);
        /* New credentials deserve a try now, not at the next recheck. */
        p->recheck_at = 0;
    }
}

/* --- health: the circuit breaker, failover, concurrency ------------------- */

void
provider_set_on_recovery(struct provider_set *set, provider_recovered_cb *cb, void *arg)
{
    set->recovered_cb = cb;
    set->recovered_arg = arg;
}

static int
provider_usable(const struct provider *p, uint64_t now)
{
    return !p->down || now >= p->recheck_at;
}

struct provider_pick
provider_set_pick(struct provider_set *set, struct provider *const *route, int nroute, int *ri)
{
    struct provider_pick pick = {.p = NULL, .probe = 0, .wait_ms = UINT64_MAX};
    uint64_t now = uv_now(set->loop);

    /* The current provider if usable, else the next usable one in the route. */
    for (int k = 0; k < nroute; k++) {
        struct provider *c = route[(*ri + k) % nroute];
        if (provider_usable(c, now)) {
            pick.p = c;
            *ri = (*ri + k) % nroute;
            break;
        }
        if (c->recheck_at - now < pick.wait_ms)
            pick.wait_ms = c->recheck_at - now;
    }
    if (pick.p != NULL && pick.p->down) {
        /* This is the probe; the others wait for its answer, which wakes them. */
        pick.p->recheck_at = now + (uint64_t)set->cfg->http_timeout_ms;
        pick.probe = 1;
    }
    return pick;
}

/*
 * Open the provider's circuit: no traffic until recheck_at, then one probe.
 * cooloff_ms 0 means a provider-wide failure (credentials, suspended
 * account): rechecked with exponential backoff.  The backoff grows once
 * per failed probe, not once per failed request: forty requests in flight
 * when the credentials broke are one failure, not forty.
 */
static void
provider_mark_down(struct provider_set *set, struct provider *p, const char *why,
                   uint64_t cooloff_ms, int was_probe)
{
    if (p->down && !was_probe)
        return; /* already open: an answer to a request sent before it opened */
    p->down_count++;
    if (cooloff_ms == 0)
        cooloff_ms =
            backoff_ceiling(p->down_count, (uint64_t)set->cfg->provider_recheck_ms, 300000);
    if (!p->down)
        log_err("provider %s: circuit open: %s; jobs go to the next provider in their route or "
                "wait; one probe in %llu ms",
                provider_name(p), why, (unsigned long long)cooloff_ms);
    else
        log_warnx("provider %s: probe failed: %s; next probe in %llu ms", provider_name(p), why,
                  (unsigned long long)cooloff_ms);
    p->down = 1;
    p->recheck_at = uv_now(set->loop) + cooloff_ms;
    snprintf(p->down_reason, sizeof(p->down_reason), "%s", why);
}

static void
provider_mark_up(struct provider_set *set, struct provider *p)
{
    int was_down = p->down;

    p->down = 0;
    p->down_count = 0;
    p->fail_streak = 0;
    if (was_down) {
        log_notice("provider %s: working again (circuit closed)", provider_name(p));
        if (set->recovered_cb)
            set->recovered_cb(set->recovered_arg);
    }
}

/* Move to the next usable provider in the route; 1 if there is one other than the current. */
static int
provider_failover(struct provider_set *set, struct provider *const *route, int nroute, int *ri)
{
    uint64_t now = uv_now(set->loop);

    for (int k = 1; k < nroute; k++) {
        int i = (*ri + k) % nroute;
        if (provider_usable(route[i], now)) {
            *ri = i;
            return 1;
        }
    }
    return 0;
}

static uint64_t
provider_backoff(const struct provider_set *set, int attempts, const struct send_result *res)
{
    uint64_t delay = backoff_full_jitter(attempts, (uint64_t)set->cfg->retry_base_ms,
                                         (uint64_t)set->cfg->retry_max_ms, randombytes_random());

    if (res->retry_after_ms > 0 && (uint64_t)res->retry_after_ms > delay)
        delay = (uint64_t)res->retry_after_ms;
    return delay;
}

/* otpd's own trouble (no descriptor, no memory): retried, never the provider's fault. */
static void
provider_local_failure(struct provider_set *set, struct provider *p, const struct send_result *res,
                       int was_probe)
{
    unsigned held;

    if (was_probe)
        p->recheck_at = uv_now(set->loop); /* the probe never reached it: probe again */
    if (log_limit_allow(&set->busy_log, "local", uv_now(set->loop), &held))
        log_warnx("local failure sending to %s: %s; retried, not counted against the provider "
                  "(%u similar lines held back)",
                  provider_name(p), res->error, held);
}

/* Over its concurrency limit (Twilio 20429) the provider is busy, not failing. */
static void
provider_congested(struct provider_set *set, struct provider *p, int was_probe)
{
    unsigned held;

    if (was_probe)
        p->recheck_at = uv_now(set->loop); /* busy is alive: the next request probes at once */
    if (log_limit_allow(&set->busy_log, provider_name(p), uv_now(set->loop), &held))
        log_notice("provider %s: over its concurrency limit; requests in progress now capped "
                   "at %d (grows back as requests succeed; %u similar lines held back)",
                   provider_name(p), gate_limit(p->gate), held);
}

/* A request that failed and may be retried: strike the circuit, maybe move on. */
static struct provider_verdict
provider_retryable(struct provider_set *set, struct provider *const *route, int nroute, int *ri,
                   const struct send_result *res, int was_probe, int attempts)
{
    struct provider *p = route[*ri];
    struct provider_verdict v = {.delay_ms = provider_backoff(set, attempts, res)};

    if (res->retry_after_ms > 0)
        gate_pause(p->gate, uv_now(set->loop) + (uint64_t)res->retry_after_ms);
    if (res->congested) {
        provider_congested(set, p, was_probe);
    } else if (was_probe || ++p->fail_streak >= set->cfg->circuit_failures) {
        char why[REASON_MAX];
        snprintf(why, sizeof(why), "%d failed requests in a row, the last: %.180s", p->fail_streak,
                 res->error);
        provider_mark_down(set, p, why, (uint64_t)set->cfg->circuit_cooloff_ms, was_probe);
    }
    /*
     * A request that certainly did not reach the provider moves on to the
     * next one in the route; a maybe-sent one stays to be reconciled unless
     * its provider's circuit just opened.
     */
    if ((res->outcome == SEND_RETRY || p->down) && provider_failover(set, route, nroute, ri)) {
        v.delay_ms = 0;
        v.moved = 1;
    }
    return v;
}

struct provider_verdict
provider_set_report(struct provider_set *set, struct provider *const *route, int nroute, int *ri,
                    const struct send_result *res, int was_probe, int attempts)
{
    struct provider *p = route[*ri];
    struct provider_verdict v = {0};

    /* Before leaving the gate: no waiter may take this slot under the old cap. */
    if (res->congested)
        gate_congested(p->gate);
    gate_leave(p->gate);
    switch (res->outcome) {
    case SEND_OK:
        gate_relieved(p->gate);
        provider_mark_up(set, p);
        return v;
    case SEND_FAIL_JOB:
        provider_mark_up(set, p); /* it answered sensibly: the provider works */
        return v;
    case SEND_LOCAL:
        provider_local_failure(set, p, res, was_probe);
        v.delay_ms = provider_backoff(set, attempts, res);
        return v;
    case SEND_FAIL_PROVIDER:
        provider_mark_down(set, p, res->error, 0, was_probe);
        if (provider_failover(set, route, nroute, ri)) {
            v.moved = 1;
            return v;
        }
        v.awaits_circuit = 1;
        v.delay_ms = p->recheck_at > uv_now(set->loop) ? p->recheck_at - uv_now(set->loop) : 0;
        return v;
    default:
        return provider_retryable(set, route, nroute, ri, res, was_probe, attempts);
    }
}

int
provider_enter(struct provider *p, struct gate_waiter *w, gate_ready_cb *cb)
{
    return gate_enter(p->gate, w, cb);
}

void
provider_unwait(struct provider *p, struct gate_waiter *w)
{
    gate_cancel(p->gate, w);
}

void
provider_release(struct provider *p)
{
    gate_leave(p->gate);
}

const char *
provider_down_reason(const struct provider *p)
{
    return p->down_reason;
}

struct provider_call *
provider_send(struct provider *p, const struct send_request *req, provider_done_cb *cb, void *arg)
{
    return p->ops->send(p, req, cb, arg);
}

void
provider_cancel(struct provider *p, struct provider_call *call)
{
    p->ops->cancel(p, call);
    gate_leave(p->gate);
}

/* --- receipts ------------------------------------------------------------ */

struct provider *
provider_set_find(struct provider_set *set, const char *name, size_t len)
{
    for (size_t i = 0; i < PROVIDER_NREG; i++) {
        struct provider *p = set->open[i];
        if (p && strlen(p->ops->name) == len && strncmp(p->ops->name, name, len) == 0)
            return p;
    }
    return NULL;
}

int
provider_webhook(struct provider *p, const char *rest, const struct httpd_request *req,
                 struct httpd_response *resp, provider_receipt_cb *cb, void *arg)
{
    if (p->ops->webhook == NULL)
        return 0;
    p->ops->webhook(p, rest, req, resp, cb, arg);
    return 1;
}

int
provider_needs_polling(const struct provider *p)
{
    return p->ops->poll != NULL && !(p->ops->pushes_receipts && p->ops->pushes_receipts(p));
}

struct provider_call *
provider_poll_spare(struct provider *p, const char *ref, provider_poll_cb *cb, void *arg)
{
    struct provider_call *call;

    if (p->ops->poll == NULL || !gate_try_enter(p->gate))
        return NULL;
    if ((call = p->ops->poll(p, ref, cb, arg)) == NULL)
        gate_leave(p->gate);
    return call;
}

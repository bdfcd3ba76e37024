/*
 * dispatch.c: one struct delivery per claimed entry, moved through its
 * steps by dlv_run():
 *
 *   REJECT_STATUS -> DEAD_LETTER -> done           (bad input)
 *   CLAIM -> LIMIT -> BEGIN -> SEND -> RESULT -> ACK -> done (a good job)
 *   CLAIM -> LIMIT -> RESULT -> ACK -> done        (rate limited, blocked country)
 *   CLAIM -> ACK -> done                           (already final: a reclaim)
 *   CLAIM -> DUPLICATE -> ACK -> done              (its id is taken)
 *           SEND -> RETRY_STATUS -> (timer) SEND   (a retryable failure)
 *   RESULT -> ACK -> done                          (expired before sending)
 *
 * A step that needs Redis and cannot get it (connection down, error reply)
 * parks the delivery; the tick or the writer's return runs the step again.
 * Every Redis step is safe to repeat.  The entry is acknowledged only after
 * the job's final status is written.
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "backoff.h"
#include "dispatch.h"
#include "dlr.h"
#include "gate.h"
#include "job.h"
#include "log.h"
#include "metrics.h"
#include "otp.h"
#include "secmem.h"

enum dlv_step {
    STEP_REJECT_STATUS,
    STEP_DEAD_LETTER,
    STEP_CLAIM,
    STEP_DUPLICATE,
    STEP_LIMIT,
    STEP_BEGIN,
    STEP_SEND,
    STEP_RETRY_STATUS,
    STEP_RESULT,
    STEP_ACK,
    STEP_DONE,
};

struct dlv_secret {
    char code[OTP_DIGITS_MAX + 1];
    char body[OTP_BODY_MAX];
};

struct delivery {
    struct delivery *prev, *next;
    struct dispatch *d;
    char stream_id[STREAM_ID_MAX + 1];
    struct job job;
    enum dlv_step step;
    int parked;
    int busy; /* a Redis or provider call is outstanding */
    uint64_t claimed_at;
    /* rejects */
    char *payload;
    size_t len;
    char reason[REASON_MAX];
    /* sending */
    struct provider *provider; /* the one in use: route[ri] */
    struct provider *route[ROUTE_PROVIDERS_MAX];
    int nroute, ri;
    struct gate_waiter gw;
    int opted_out;
    int64_t retry_at_ms; /* rate_limited: when a new request will be accepted */
    char cc[4];
    struct provider_call *call;
    int attempts;
    uv_timer_t timer; /* retry backoff; closing it frees the delivery */
    uint64_t retry_delay_ms;
    int64_t attempt_ms;        /* when the current attempt started */
    int64_t ambiguous_since;   /* first attempt that may have been sent */
    int probe;                 /* this attempt is its provider's circuit probe */
    int awaits_circuit;        /* waiting for a provider's circuit to close */
    struct dlv_secret *secret; /* code and text, in locked memory until sent */
    /* the outcome to record */
    enum job_status final;
    struct send_result result;
    int delete_otp;
    int64_t sent_ms;
};

struct dispatch {
    uv_loop_t *loop;
    const struct config *cfg;
    struct store *store;
    struct queue *queue;
    struct provider_set *providers;
    struct delivery *head;
    int inflight;
    int draining;
    uv_timer_t tick;
    uv_timer_t drain_timer;
    dispatch_drained_cb *drained_cb;
    void *drained_arg;
    struct dispatch_stats stats;
    struct secmem *secrets;
    struct dlr *dlr;
    int closed_handles;
    uint64_t last_refresh, last_reclaim, last_publish;
    int parked_any;                /* some step waits for Redis: say when it recovers */
    struct log_limiter park_log;   /* one line per cause a minute, however they alternate */
    struct log_limiter reject_log; /* a burst of bad jobs: a few lines, then a count */
    struct log_limiter busy_log;   /* provider concurrency and local failures */
    struct {
        char cc[4];
        uint64_t at;
    } alerts[ROUTE_MAX];
    int nalerts;
};

static void dlv_run(struct delivery *dlv);
static void dlv_retry_fire(uv_timer_t *t);
static void dlv_log_outcome(struct delivery *dlv);
static void dlv_fail(struct delivery *dlv, enum job_status st, int delete_otp);

static const char *const step_names[] = {
    "reject_status", "dead_letter",  "claim",  "duplicate", "limit", "begin",
    "send",          "retry_status", "result", "ack",       "done",
};

static void
dispatch_update_room(struct dispatch *d)
{
    if (d->queue && !d->draining)
        queue_set_room(d->queue, d->cfg->max_inflight - d->inflight);
}

static void
dispatch_check_drained(struct dispatch *d)
{
    if (d->draining && d->inflight == 0 && d->drained_cb) {
        dispatch_drained_cb *cb = d->drained_cb;
        d->drained_cb = NULL;
        uv_timer_stop(&d->drain_timer);
        cb(d->drained_arg, 0);
    }
}

/* The code is gone for good: after the last attempt, or with the delivery. */
static void
dlv_wipe(struct delivery *dlv)
{
    secmem_put(dlv->d->secrets, dlv->secret);
    dlv->secret = NULL;
}

static void
dlv_closed(uv_handle_t *h)
{
    free(h->data);
}

/* Unlinks now; the memory goes when the embedded timer has closed. */
static void
dlv_free(struct delivery *dlv)
{
    struct dispatch *d = dlv->d;

    if (dlv->prev)
        dlv->prev->next = dlv->next;
    else
        d->head = dlv->next;
    if (dlv->next)
        dlv->next->prev = dlv->prev;
    d->inflight--;
    if (dlv->provider && dlv->provider->gate)
        gate_cancel(dlv->provider->gate, &dlv->gw);
    job_clear(&dlv->job);
    free(dlv->payload);
    dlv_wipe(dlv);
    uv_close((uv_handle_t *)&dlv->timer, dlv_closed);
}

static void
dlv_finish(struct delivery *dlv)
{
    struct dispatch *d = dlv->d;

    dlv_free(dlv);
    dispatch_update_room(d);
    dispatch_check_drained(d);
}

static void
dlv_park(struct delivery *dlv, const char *why)
{
    struct dispatch *d = dlv->d;

    unsigned held;

    /* One line per cause a minute, not one per job: an outage parks them all. */
    if (log_limit_allow(&d->park_log, why, uv_now(d->loop), &held))
        log_warnx("jobs wait for Redis to accept writes: %s (held in memory, retried; %u "
                  "similar lines held back)",
                  why, held);
    d->parked_any = 1;
    if (!dlv->parked)
        log_debug("job %s: %s step waits for Redis: %s", dlv->job.id, step_names[dlv->step], why);
    dlv->parked = 1;
    dlv->busy = 0;
}

static void
dlv_advance(struct delivery *dlv, enum dlv_step next)
{
    if (dlv->parked && dlv->d->parked_any) {
        log_notice("Redis accepts writes again; held jobs continue");
        dlv->d->parked_any = 0;
    }
    dlv->busy = 0;
    dlv->parked = 0;
    dlv->step = next;
    dlv_run(dlv);
}

static void
dlv_retry_fire(uv_timer_t *t)
{
    dlv_advance(t->data, STEP_SEND);
}

/* --- Redis step callbacks -------------------------------------------- */

static void
dlv_store_done(void *arg, int ok, const char *err)
{
    struct delivery *dlv = arg;

    if (ok < 0) {
        dlv_park(dlv, err);
        return;
    }
    switch (dlv->step) {
    case STEP_REJECT_STATUS:
        dlv_advance(dlv, STEP_DEAD_LETTER);
        break;
    case STEP_BEGIN:
        if (ok == 1) {
            /* A newer code for this number exists: sending ours would only confuse. */
            dlv->final = JOB_FAILED;
            snprintf(dlv->result.error, sizeof(dlv->result.error),
                     "superseded: a newer code for this number and purpose was already issued");
            dlv_advance(dlv, STEP_RESULT);
        } else {
            dlv_advance(dlv, STEP_SEND);
        }
        break;
    case STEP_RESULT:
    case STEP_DUPLICATE:
        dlv_advance(dlv, STEP_ACK);
        break;
    case STEP_RETRY_STATUS:
        dlv->busy = 1; /* waiting on the timer */
        dlv->parked = 0;
        uv_timer_start(&dlv->timer, dlv_retry_fire, dlv->retry_delay_ms, 0);
        break;
    default:
        break;
    }
}

static void
dlv_claim_done(void *arg, int verdict, const char *status, const char *err)
{
    struct delivery *dlv = arg;

    if (verdict < 0) {
        dlv_park(dlv, err);
        return;
    }
    if (verdict == CLAIM_DONE) {
        /* It reached a final status before; only the ack was lost. */
        log_info("job %s: already %s; acknowledging it as it stands", dlv->job.id, status);
        dlv_advance(dlv, STEP_ACK);
    } else if (verdict == CLAIM_DUPLICATE) {
        log_notice("job %s: duplicate (entry %s): this id is already %s; not sent again",
                   dlv->job.id, dlv->stream_id, *status ? status : "in use");
        dlv->d->stats.duplicates++;
        dlv_advance(dlv, STEP_DUPLICATE);
    } else {
        dlv_advance(dlv, STEP_LIMIT);
    }
}

/* A denied job ends without an OTP record: nothing to burn. */
static void
dlv_deny(struct delivery *dlv, enum job_status st, const char *code, const char *why)
{
    snprintf(dlv->result.error_code, sizeof(dlv->result.error_code), "%s", code);
    snprintf(dlv->result.error, sizeof(dlv->result.error), "%s", why);
    dlv_fail(dlv, st, 0);
}

/* SMS pumping shows as one country's volume jumping: say so, once an hour. */
static void
dispatch_budget_alert(struct dispatch *d, const char *cc)
{
    uint64_t now = uv_now(d->loop);
    int i;

    d->stats.budget_alerts++;
    for (i = 0; i < d->nalerts; i++)
        if (strcmp(d->alerts[i].cc, cc) == 0)
            break;
    if (i < d->nalerts && now - d->alerts[i].at < 3600000)
        return;
    if (i == d->nalerts) {
        if (d->nalerts == ROUTE_MAX)
            i = 0;
        else
            d->nalerts++;
    }
    snprintf(d->alerts[i].cc, sizeof(d->alerts[i].cc), "%s", cc);
    d->alerts[i].at = now;
    log_err("ALERT: hourly budget for country +%s exceeded (OTPD_COUNTRY_HOURLY_BUDGET); sends "
            "there stop until the hour rolls over. Possible SMS pumping: check the otpd:events "
            "stream and the site's traffic",
            cc);
}

static void
dlv_limit_done(void *arg, int limited, const char *reason, long long retry_after_ms,
               const char *err)
{
    struct delivery *dlv = arg;
    char why[REASON_MAX];

    if (limited < 0) {
        dlv_park(dlv, err);
        return;
    }
    if (limited == 0) {
        dlv_advance(dlv, STEP_BEGIN);
        return;
    }
    if (strcmp(reason, "opted_out") == 0) {
        dlv_deny(dlv, JOB_FAILED, "opted_out",
                 "the recipient replied STOP: they must text START to the sender first; then "
                 "remove the number with: otpctl optout remove NUMBER");
        return;
    }
    if (strcmp(reason, "country_budget") == 0)
        dispatch_budget_alert(dlv->d, dlv->cc);
    dlv->retry_at_ms = otpd_now_ms() + retry_after_ms;
    snprintf(why, sizeof(why), "over the %s limit; a new request is accepted in %lld s", reason,
             (retry_after_ms + 999) / 1000);
    dlv_deny(dlv, JOB_RATE_LIMITED, reason, why);
}

static int
dlv_limit(struct delivery *dlv)
{
    const struct config *cfg = dlv->d->cfg;

    if (cfg->allowed.n > 0 && route_country_value(&cfg->allowed, dlv->cc) < 0) {
        char why[REASON_MAX];
        snprintf(why, sizeof(why),
                 "destination country +%s is not in OTPD_ALLOWED_COUNTRIES (SMS-pumping "
                 "defence)",
                 dlv->cc);
        dlv_deny(dlv, JOB_FAILED, "country_not_allowed", why);
        return 0;
    }
    return store_limit(dlv->d->store, &dlv->job, dlv->cc, dlv_limit_done, dlv);
}

static void
dlv_queue_done(void *arg, int ok, const char *err)
{
    struct delivery *dlv = arg;

    if (ok < 0) {
        dlv_park(dlv, err);
        return;
    }
    if (dlv->step == STEP_DEAD_LETTER)
        dlv->d->stats.dead_letters++;
    dlv->busy = 0;
    dlv->step = STEP_DONE;
    dlv_finish(dlv);
}

/* --- sending -------------------------------------------------------- */

static void
dlv_log_outcome(struct delivery *dlv)
{
    char masked[LOG_MASK_MAX];
    uint64_t ms = uv_now(dlv->d->loop) - dlv->claimed_at;

    log_mask_phone(dlv->job.to, masked, sizeof(masked));
    if (dlv->final == JOB_SENT)
        log_info("job %s: sent to %s via %s (ref %s) in %llu ms", dlv->job.id, masked,
                 provider_name(dlv->provider), dlv->result.ref, (unsigned long long)ms);
    else
        log_notice("job %s: %s for %s%s%s: %s", dlv->job.id, job_status_name(dlv->final), masked,
                   dlv->result.error_code[0] ? " code " : "", dlv->result.error_code,
                   dlv->result.error);
}

/*
 * Open the provider's circuit: no traffic until recheck_at, then one probe.
 * cooloff_ms 0 means a provider-wide failure (credentials, suspended
 * account): rechecked with exponential backoff.  The backoff grows once
 * per failed probe, not once per failed request: forty requests in flight
 * when the credentials broke are one failure, not forty.
 */
static void
provider_mark_down(struct dispatch *d, struct provider *p, const char *why, uint64_t cooloff_ms,
                   int was_probe)
{
    uint64_t now = uv_now(d->loop);

    if (p->down && !was_probe)
        return; /* already open: an answer to a request sent before it opened */
    p->down_count++;
    if (cooloff_ms == 0)
        cooloff_ms = backoff_ceiling(p->down_count, (uint64_t)d->cfg->provider_recheck_ms, 300000);
    if (!p->down)
        log_err("provider %s: circuit open: %s; jobs go to the next provider in their route or "
                "wait; one probe in %llu ms",
                provider_name(p), why, (unsigned long long)cooloff_ms);
    else
        log_warnx("provider %s: probe failed: %s; next probe in %llu ms", provider_name(p), why,
                  (unsigned long long)cooloff_ms);
    p->down = 1;
    p->recheck_at = now + cooloff_ms;
    snprintf(p->down_reason, sizeof(p->down_reason), "%s", why);
}

/* Jobs that wait for a circuit to close try again now rather than at their timer. */
static void
dispatch_wake_waiters(struct dispatch *d)
{
    for (struct delivery *dlv = d->head; dlv; dlv = dlv->next)
        if (dlv->awaits_circuit && dlv->step == STEP_RETRY_STATUS && dlv->busy &&
            uv_is_active((uv_handle_t *)&dlv->timer))
            uv_timer_start(&dlv->timer, dlv_retry_fire, 0, 0);
}

static void
provider_mark_up(struct dispatch *d, struct provider *p)
{
    int was_down = p->down;

    if (p->down)
        log_notice("provider %s: working again (circuit closed)", provider_name(p));
    p->down = 0;
    p->down_count = 0;
    p->fail_streak = 0;
    if (was_down)
        dispatch_wake_waiters(d);
}

static int
provider_usable(const struct provider *p, uint64_t now)
{
    return !p->down || now >= p->recheck_at;
}

/* Move to the next usable provider in the route; 1 if there is one other than the current. */
static int
dlv_failover(struct delivery *dlv)
{
    uint64_t now = uv_now(dlv->d->loop);

    for (int k = 1; k < dlv->nroute; k++) {
        int i = (dlv->ri + k) % dlv->nroute;
        if (provider_usable(dlv->route[i], now)) {
            log_notice("job %s: next attempt goes to %s instead of %s", dlv->job.id,
                       provider_name(dlv->route[i]), provider_name(dlv->route[dlv->ri]));
            dlv->ri = i;
            dlv->provider = dlv->route[i];
            dlv->ambiguous_since = 0; /* reconciliation is per provider */
            return 1;
        }
    }
    return 0;
}

static void
dlv_fail(struct delivery *dlv, enum job_status st, int delete_otp)
{
    dlv->final = st;
    dlv->delete_otp = delete_otp;
    if (st == JOB_EXPIRED)
        dlv->d->stats.expired++;
    else if (st == JOB_RATE_LIMITED)
        dlv->d->stats.rate_limited++;
    else
        dlv->d->stats.failed++;
    dlv_wipe(dlv);
    dlv_log_outcome(dlv);
    dlv_advance(dlv, STEP_RESULT);
}

/*
 * Retry after delay_ms unless that would pass the code's expiry, when
 * the job ends "expired": a code that arrives late is no use to anyone.
 */
static void
dlv_retry_later(struct delivery *dlv, uint64_t delay_ms)
{
    char masked[LOG_MASK_MAX];

    if (otpd_now_ms() + (int64_t)delay_ms >= dlv->job.expires_ms) {
        char last[REASON_MAX];
        snprintf(last, sizeof(last), "%s", dlv->result.error);
        snprintf(dlv->result.error, sizeof(dlv->result.error),
                 "not delivered before the code expired after %d attempt(s); last error: %.180s",
                 dlv->attempts, last);
        dlv_fail(dlv, JOB_EXPIRED, 1);
        return;
    }
    dlv->retry_delay_ms = delay_ms;
    dlv->d->stats.retries++;
    log_mask_phone(dlv->job.to, masked, sizeof(masked));
    log_notice("job %s: attempt %d to %s via %s: %s%s%s; retrying in %llu ms", dlv->job.id,
               dlv->attempts, masked, provider_name(dlv->provider),
               provider_outcome_name(dlv->result.outcome), dlv->result.error[0] ? ": " : "",
               dlv->result.error, (unsigned long long)delay_ms);
    dlv_advance(dlv, STEP_RETRY_STATUS);
}

/* otpd's own trouble (no descriptor, no memory): retried, never the provider's fault. */
static uint64_t
dlv_local_failure(struct delivery *dlv, const struct send_result *res)
{
    struct dispatch *d = dlv->d;
    unsigned held;

    if (log_limit_allow(&d->busy_log, "local", uv_now(d->loop), &held))
        log_warnx("local failure sending to %s: %s; retried, not counted against the provider "
                  "(%u similar lines held back)",
                  provider_name(dlv->provider), res->error, held);
    return backoff_full_jitter(dlv->attempts, (uint64_t)d->cfg->retry_base_ms,
                               (uint64_t)d->cfg->retry_max_ms, randombytes_random());
}

/* The provider's concurrency limit (Twilio 20429): the gate's cap came down; say so. */
static void
dlv_congested(struct delivery *dlv)
{
    struct dispatch *d = dlv->d;
    struct provider *p = dlv->provider;
    unsigned held;

    if (log_limit_allow(&d->busy_log, provider_name(p), uv_now(d->loop), &held))
        log_notice("provider %s: over its concurrency limit; requests in progress now capped "
                   "at %d (grows back as requests succeed; %u similar lines held back)",
                   provider_name(p), gate_limit(p->gate), held);
}

/* A request that failed: open the circuit if need be, pick the next provider; the delay. */
static uint64_t
dlv_failed_attempt(struct delivery *dlv, const struct send_result *res, int was_probe)
{
    struct dispatch *d = dlv->d;
    const struct config *cfg = d->cfg;
    struct provider *p = dlv->provider;
    uint64_t now = uv_now(d->loop), delay;

    if (res->outcome == SEND_FAIL_PROVIDER) {
        provider_mark_down(d, p, res->error, 0, was_probe);
        if (dlv_failover(dlv))
            return 0;
        dlv->awaits_circuit = 1;
        return p->recheck_at > now ? p->recheck_at - now : 0;
    }
    if (res->outcome == SEND_AMBIGUOUS && dlv->ambiguous_since == 0)
        dlv->ambiguous_since = dlv->attempt_ms; /* the next attempt reconciles first */
    if (res->retry_after_ms > 0)
        gate_pause(p->gate, now + (uint64_t)res->retry_after_ms);
    /* Over its concurrency limit, the provider is busy, not failing: no strike. */
    if (res->congested) {
        dlv_congested(dlv);
        if (was_probe)
            p->recheck_at = now; /* busy is alive: let the next request probe at once */
    } else if (was_probe || ++p->fail_streak >= cfg->circuit_failures) {
        char why[REASON_MAX];
        snprintf(why, sizeof(why), "%d failed requests in a row, the last: %.180s", p->fail_streak,
                 res->error);
        provider_mark_down(d, p, why, (uint64_t)cfg->circuit_cooloff_ms, was_probe);
    }
    delay = backoff_full_jitter(dlv->attempts, (uint64_t)cfg->retry_base_ms,
                                (uint64_t)cfg->retry_max_ms, randombytes_random());
    if (res->retry_after_ms > 0 && (uint64_t)res->retry_after_ms > delay)
        delay = (uint64_t)res->retry_after_ms;
    /*
     * A request that certainly did not reach the provider moves on to
     * the next one in the route; a maybe-sent one stays to be reconciled
     * unless its provider's circuit just opened.
     */
    if ((res->outcome == SEND_RETRY || p->down) && dlv_failover(dlv))
        delay = 0;
    return delay;
}

static void
dlv_send_done(void *arg, const struct send_result *res)
{
    struct delivery *dlv = arg;
    struct dispatch *d = dlv->d;
    struct provider *p = dlv->provider;
    int was_probe = dlv->probe;

    dlv->call = NULL;
    dlv->probe = 0;
    dlv->awaits_circuit = 0;
    dlv->result = *res;
    log_mask_numbers(dlv->result.error); /* providers quote the number back */
    if (res->congested)
        gate_congested(p->gate); /* before leaving: no waiter takes its slot under the old cap */
    gate_leave(p->gate);
    metrics_observe_request(provider_name(p), res->outcome,
                            (double)(otpd_now_ms() - dlv->attempt_ms) / 1000.0);
    switch (res->outcome) {
    case SEND_OK:
        provider_mark_up(d, p);
        gate_relieved(p->gate);
        dlv->final = JOB_SENT;
        dlv->sent_ms = otpd_now_ms();
        d->stats.sent++;
        if (d->dlr)
            dlr_sent(d->dlr, p, res->ref);
        dlv_wipe(dlv);
        dlv_log_outcome(dlv);
        dlv_advance(dlv, STEP_RESULT);
        return;
    case SEND_FAIL_JOB:
        provider_mark_up(d, p); /* it answered sensibly: the provider works */
        dlv->opted_out = res->opted_out;
        dlv_fail(dlv, JOB_FAILED, 1);
        return;
    case SEND_LOCAL:
        if (was_probe)
            p->recheck_at = uv_now(d->loop); /* the probe never reached it: probe again */
        dlv_retry_later(dlv, dlv_local_failure(dlv, res));
        return;
    default:
        dlv_retry_later(dlv, dlv_failed_attempt(dlv, res, was_probe));
        return;
    }
}

static void
dlv_expire(struct delivery *dlv, int delete_otp)
{
    snprintf(dlv->result.error, sizeof(dlv->result.error),
             "the code's lifetime ended before it could be sent");
    dlv_fail(dlv, JOB_EXPIRED, delete_otp);
}

static void
dlv_send_now(struct delivery *dlv)
{
    struct send_request req;

    dlv->attempts++;
    dlv->attempt_ms = otpd_now_ms();
    req.job = &dlv->job;
    req.body = dlv->secret->body;
    req.code = dlv->secret->code;
    req.deadline_ms = dlv->job.expires_ms;
    req.attempt = dlv->attempts;
    req.reconcile = dlv->ambiguous_since != 0;
    req.since_ms = dlv->ambiguous_since;
    dlv->busy = 1;
    dlv->call = dlv->provider->ops->send(dlv->provider, &req, dlv_send_done, dlv);
    if (dlv->call == NULL) {
        gate_leave(dlv->provider->gate);
        dlv->busy = 0;
        dlv->result.outcome = SEND_RETRY;
        snprintf(dlv->result.error, sizeof(dlv->result.error), "could not start a request to %s",
                 provider_name(dlv->provider));
        dlv_retry_later(dlv, (uint64_t)dlv->d->cfg->retry_base_ms);
    }
}

/* The provider's gate lets this job go (rate, concurrency or pause allowed it). */
static void
dlv_gate_ready(struct gate_waiter *w)
{
    struct delivery *dlv = (struct delivery *)((char *)w - offsetof(struct delivery, gw));

    if (otpd_now_ms() >= dlv->job.expires_ms) {
        gate_leave(dlv->provider->gate);
        dlv_expire(dlv, 1);
        return;
    }
    dlv_send_now(dlv);
}

static void
dlv_send(struct delivery *dlv)
{
    uint64_t now = uv_now(dlv->d->loop), wait = UINT64_MAX;
    struct provider *p = NULL;

    if (otpd_now_ms() >= dlv->job.expires_ms) {
        dlv_expire(dlv, 1);
        return;
    }
    /* The current provider if usable, else the next usable one in the route. */
    for (int k = 0; k < dlv->nroute && p == NULL; k++) {
        struct provider *c = dlv->route[(dlv->ri + k) % dlv->nroute];
        if (provider_usable(c, now)) {
            p = c;
            dlv->ri = (dlv->ri + k) % dlv->nroute;
        } else if (c->recheck_at - now < wait) {
            wait = c->recheck_at - now;
        }
    }
    if (p == NULL) {
        /* Every provider for this number is out: wait for the first probe. */
        snprintf(dlv->result.error, sizeof(dlv->result.error), "no provider available: %.200s",
                 dlv->route[dlv->ri]->down_reason);
        dlv->result.outcome = SEND_FAIL_PROVIDER;
        dlv->awaits_circuit = 1;
        dlv_retry_later(dlv, wait);
        return;
    }
    if (p != dlv->provider)
        dlv->ambiguous_since = 0;
    dlv->provider = p;
    if (p->down) {
        /* This is the probe; the others wait for its answer, which wakes them. */
        p->recheck_at = now + (uint64_t)dlv->d->cfg->http_timeout_ms;
        dlv->probe = 1;
    }
    dlv->busy = 1;
    if (gate_enter(p->gate, &dlv->gw, dlv_gate_ready))
        dlv_send_now(dlv);
}

/* Code, hash and text are made at claim time; only the hash leaves memory. */
static int
dlv_prepare(struct delivery *dlv)
{
    const struct config *cfg = dlv->d->cfg;
    const char *tmpl = dlv->job.message ? dlv->job.message : cfg->template;
    char err[128];

    if ((dlv->secret = secmem_get(dlv->d->secrets)) == NULL) {
        snprintf(dlv->reason, sizeof(dlv->reason), "no secure memory slot free");
        return -1;
    }
    otp_generate(dlv->secret->code, dlv->job.digits);
    if (otp_render(dlv->secret->body, sizeof(dlv->secret->body), tmpl, dlv->secret->code,
                   (dlv->job.ttl + 59) / 60, err, sizeof(err)) < 0) {
        snprintf(dlv->reason, sizeof(dlv->reason), "message: %s", err);
        return -1;
    }
    return 0;
}

/* --- the step machine ------------------------------------------------- */

static int
dlv_result_update(struct delivery *dlv)
{
    struct status_update u = {
        .status = dlv->final,
        .provider = dlv->provider ? provider_name(dlv->provider) : "",
        .provider_ref = dlv->result.ref,
        .provider_status = dlv->result.provider_status,
        .error_code = dlv->result.error_code,
        .error = dlv->result.error,
        .attempts = dlv->attempts,
        .sent_ms = dlv->sent_ms,
        .delete_otp = dlv->delete_otp,
        .opted_out = dlv->opted_out,
        .retry_at_ms = dlv->retry_at_ms,
    };
    return store_status(dlv->d->store, &dlv->job, &u, dlv_store_done, dlv);
}

static void
dlv_run(struct delivery *dlv)
{
    struct dispatch *d = dlv->d;
    char mac[OTP_MAC_HEX + 1];
    int rc = 0;

    dlv->busy = 1;
    switch (dlv->step) {
    case STEP_REJECT_STATUS:
        rc = store_reject(d->store, &dlv->job, dlv->stream_id, dlv->reason, dlv_store_done, dlv);
        break;
    case STEP_DEAD_LETTER:
        rc = queue_dead_letter(d->queue, dlv->stream_id, dlv->payload, dlv->len, dlv->reason,
                               dlv_queue_done, dlv);
        break;
    case STEP_CLAIM:
        rc = store_claim(d->store, &dlv->job, dlv->stream_id, dlv_claim_done, dlv);
        break;
    case STEP_DUPLICATE:
        rc = store_duplicate(d->store, &dlv->job, dlv_store_done, dlv);
        break;
    case STEP_LIMIT:
        rc = dlv_limit(dlv);
        break;
    case STEP_BEGIN:
        if (otpd_now_ms() >= dlv->job.expires_ms) {
            dlv_expire(dlv, 0);
            return;
        }
        otp_mac(mac, d->cfg->hash_key, dlv->job.purpose, dlv->job.to, dlv->secret->code);
        rc = store_begin(d->store, &dlv->job, mac, dlv_store_done, dlv);
        sodium_memzero(mac, sizeof(mac));
        break;
    case STEP_SEND:
        dlv_send(dlv);
        return;
    case STEP_RETRY_STATUS: {
        struct status_update u = {
            .status = JOB_RETRYING,
            .provider = provider_name(dlv->provider),
            .error_code = dlv->result.error_code,
            .error = dlv->result.error,
            .attempts = dlv->attempts,
        };
        rc = store_status(d->store, &dlv->job, &u, dlv_store_done, dlv);
        break;
    }
    case STEP_RESULT:
        rc = dlv_result_update(dlv);
        break;
    case STEP_ACK:
        rc = queue_ack(d->queue, dlv->stream_id, dlv_queue_done, dlv);
        break;
    case STEP_DONE:
        return;
    }
    if (rc < 0)
        dlv_park(dlv, "not connected");
}

/* --- intake ------------------------------------------------------------ */

static struct delivery *
dlv_new(struct dispatch *d, const struct queue_entry *e)
{
    struct delivery *dlv = calloc(1, sizeof(*dlv));

    if (dlv == NULL)
        return NULL;
    dlv->d = d;
    uv_timer_init(d->loop, &dlv->timer);
    dlv->timer.data = dlv;
    memcpy(dlv->stream_id, e->id, sizeof(dlv->stream_id));
    dlv->claimed_at = uv_now(d->loop);
    dlv->next = d->head;
    if (d->head)
        d->head->prev = dlv;
    d->head = dlv;
    d->inflight++;
    d->stats.claimed++;
    return dlv;
}

static void
dlv_reject(struct delivery *dlv, const struct queue_entry *e)
{
    /* As for any job, an entry without a usable id is named by its stream id. */
    if (dlv->job.id[0] == '\0')
        snprintf(dlv->job.id, sizeof(dlv->job.id), "%s", e->id);
    size_t keep = e->len < 4096 ? e->len : 4096;

    /* The dead letter keeps the start of the payload, enough to debug. */
    if (e->payload && (dlv->payload = malloc(keep + 1)) != NULL) {
        memcpy(dlv->payload, e->payload, keep);
        dlv->payload[keep] = '\0';
        dlv->len = keep;
    }
    unsigned held;

    dlv->d->stats.rejected++;
    /* A flood of bad jobs must not become a flood of log lines: a few, then a count. */
    if (log_limit_allow(&dlv->d->reject_log, "rejected", uv_now(dlv->d->loop), &held)) {
        if (held)
            log_notice("%u more jobs were rejected and not logged (see the %sdead stream)", held,
                       dlv->d->cfg->prefix);
        log_notice("job %s: rejected (entry %s): %s", dlv->job.id[0] ? dlv->job.id : "-",
                   dlv->stream_id, dlv->reason);
    }
    dlv->step = STEP_REJECT_STATUS;
}

static void
dispatch_take(struct dispatch *d, const struct queue_entry *e)
{
    struct job_defaults defs = {d->cfg->otp_ttl, d->cfg->otp_digits, d->cfg->verify_attempts,
                                (int64_t)d->cfg->max_clock_skew_s * 1000};
    struct delivery *dlv = dlv_new(d, e);
    char err[200];

    if (dlv == NULL) {
        log_err("dispatch: out of memory; entry %s stays pending", e->id);
        return;
    }
    if (e->reclaimed)
        d->stats.reclaimed++;
    if (job_parse(&dlv->job, e->payload, e->len, &defs, otpd_now_ms(), dlv->reason,
                  sizeof(dlv->reason)) < 0) {
        dlv_reject(dlv, e);
    } else {
        if (dlv->job.id[0] == '\0')
            snprintf(dlv->job.id, sizeof(dlv->job.id), "%s", e->id);
        route_country_code(dlv->job.to, dlv->cc, sizeof(dlv->cc));
        dlv->nroute =
            provider_set_route(d->providers, d->cfg, &dlv->job, dlv->route, err, sizeof(err));
        dlv->provider = dlv->nroute > 0 ? dlv->route[0] : NULL;
        if (dlv->nroute == 0) {
            snprintf(dlv->reason, sizeof(dlv->reason), "field provider: %s", err);
            dlv_reject(dlv, e);
        } else if (dlv_prepare(dlv) < 0) {
            dlv_reject(dlv, e);
        } else {
            dlv->step = STEP_CLAIM;
        }
    }
    dlv_run(dlv);
}

void
dispatch_batch(void *arg, const struct queue_entry *entries, size_t n)
{
    struct dispatch *d = arg;

    for (size_t i = 0; i < n; i++)
        dispatch_take(d, &entries[i]);
    dispatch_update_room(d);
}

/* --- resuming, draining ------------------------------------------------ */

static void
dispatch_resume(struct dispatch *d)
{
    struct delivery *dlv, *next;

    for (dlv = d->head; dlv; dlv = next) {
        next = dlv->next;
        if (dlv->parked && !dlv->busy)
            dlv_run(dlv);
    }
}

/* Keep our pending entries young so no other instance takes them. */
static void
dispatch_refresh(struct dispatch *d)
{
    const char **ids;
    size_t n = 0;

    if (d->inflight == 0 || (ids = calloc((size_t)d->inflight, sizeof(*ids))) == NULL)
        return;
    for (struct delivery *dlv = d->head; dlv && n < (size_t)d->inflight; dlv = dlv->next)
        if (dlv->step != STEP_DONE)
            ids[n++] = dlv->stream_id;
    queue_refresh(d->queue, ids, n);
    free(ids);
}

/* Once a second: resume parked steps, refresh, look for orphans. */
static void
dispatch_tick(uv_timer_t *t)
{
    struct dispatch *d = t->data;
    uint64_t now = uv_now(d->loop);
    uint64_t refresh_every = (uint64_t)d->cfg->claim_idle_ms / 3;
    uint64_t reclaim_every = (uint64_t)d->cfg->claim_idle_ms / 2;

    dispatch_resume(d);
    if (d->queue == NULL || d->draining)
        return;
    dispatch_update_room(d); /* re-arms a read that an error reply ended */
    if (reclaim_every > 5000)
        reclaim_every = 5000;
    if (now - d->last_refresh >= refresh_every) {
        d->last_refresh = now;
        dispatch_refresh(d);
    }
    if (now - d->last_reclaim >= reclaim_every) {
        d->last_reclaim = now;
        queue_reclaim(d->queue);
    }
    /*
     * The daemon passes its limits to the script itself; the published copy
     * is for the web app's early check, so a FLUSHDB or an eviction heals.
     */
    if (now - d->last_publish >= 10000) {
        d->last_publish = now;
        store_publish_limits(d->store);
    }
}

void
dispatch_writer_state(struct dispatch *d, int up)
{
    if (up) {
        store_load_scripts(d->store);
        store_publish_limits(d->store);
        dispatch_resume(d);
    }
}

struct dispatch *
dispatch_new(uv_loop_t *loop, const struct config *cfg, struct store *st,
             struct provider_set *providers)
{
    struct dispatch *d = calloc(1, sizeof(*d));

    if (d == NULL)
        return NULL;
    d->loop = loop;
    d->cfg = cfg;
    d->store = st;
    d->providers = providers;
    d->park_log.period_ms = 60000;
    d->park_log.burst = 1;
    d->reject_log.period_ms = 10000;
    d->reject_log.burst = 5;
    d->busy_log.period_ms = 10000;
    d->busy_log.burst = 1;
    /* Room for every job in flight, and one batch more for a reclaim. */
    if ((d->secrets = secmem_new(sizeof(struct dlv_secret),
                                 (size_t)cfg->max_inflight + (size_t)cfg->batch)) == NULL) {
        free(d);
        return NULL;
    }
    uv_timer_init(loop, &d->tick);
    uv_timer_init(loop, &d->drain_timer);
    d->tick.data = d;
    d->drain_timer.data = d;
    /* Fast enough for short claim idle times in tests, cheap otherwise. */
    uv_timer_start(&d->tick, dispatch_tick, 250, 250);
    return d;
}

void
dispatch_set_dlr(struct dispatch *d, struct dlr *r)
{
    d->dlr = r;
}

void
dispatch_set_queue(struct dispatch *d, struct queue *q)
{
    d->queue = q;
    dispatch_update_room(d);
}

int
dispatch_inflight(const struct dispatch *d)
{
    return d->inflight;
}

const struct config *
dispatch_config(const struct dispatch *d)
{
    return d->cfg;
}

const struct dispatch_stats *
dispatch_stats(const struct dispatch *d)
{
    return &d->stats;
}

static void
dispatch_drain_timeout(uv_timer_t *t)
{
    struct dispatch *d = t->data;
    struct delivery *dlv;

    /* What is left stays pending in the stream for a later reclaim. */
    for (dlv = d->head; dlv; dlv = dlv->next)
        if (dlv->provider && dlv->provider->gate)
            gate_cancel(dlv->provider->gate, &dlv->gw);
    for (dlv = d->head; dlv; dlv = dlv->next) {
        if (dlv->call && dlv->provider) {
            dlv->provider->ops->cancel(dlv->provider, dlv->call);
            gate_leave(dlv->provider->gate);
            dlv->call = NULL;
        }
    }
    if (d->drained_cb) {
        dispatch_drained_cb *cb = d->drained_cb;
        d->drained_cb = NULL;
        cb(d->drained_arg, d->inflight);
    }
}

void
dispatch_drain(struct dispatch *d, int timeout_ms, dispatch_drained_cb *cb, void *arg)
{
    d->draining = 1;
    d->drained_cb = cb;
    d->drained_arg = arg;
    uv_timer_start(&d->drain_timer, dispatch_drain_timeout, (uint64_t)timeout_ms, 0);
    dispatch_check_drained(d);
}

void
dispatch_abandon(struct dispatch *d)
{
    while (d->head)
        dlv_free(d->head);
}

static void
dispatch_closed(uv_handle_t *h)
{
    struct dispatch *d = h->data;

    /* Both timers live inside d: free it after the second one has closed. */
    if (++d->closed_handles == 2) {
        secmem_free(d->secrets);
        free(d);
    }
}

void
dispatch_free(struct dispatch *d)
{
    dispatch_abandon(d);
    uv_close((uv_handle_t *)&d->tick, dispatch_closed);
    uv_close((uv_handle_t *)&d->drain_timer, dispatch_closed);
}

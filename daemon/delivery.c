/*
 * delivery.c: one job's way from its stream entry to its final status.
 *
 *                 bad input
 *   (entry) ---------------------------> REJECTING ---------------------+
 *      |                                  status, dead letter, ack      |
 *      | parsed, code made                                              |
 *      v         limited, duplicate, already final, newer code (acked)  v
 *   CLAIMED ------------------------------------------------------> DONE
 *      |  begin: claim, limits, OTP record, "sending"                   ^
 *      |                                                                |
 *      | go            expired, country not allowed                     |
 *      v             +--------------------------------> FINISHING -----+
 *   SENDING ---------+  sent, failed                    final status,
 *    ^   |  gate, provider call                         event, ack
 *    |   | retryable                                        ^
 *    |   v                                                  |
 *   BACKOFF -- "retrying" noted; a timer; past expiry ------+
 *
 * The state changes in one place, enter_state(), which logs each
 * transition at debug level.  A state whose Redis write cannot be made
 * (not connected, a refusal) parks; the tick and the writer's return run
 * the state's action again, and every action is safe to repeat.  Every
 * write is one ledger script, so an entry is acknowledged exactly when its
 * final status is written.  No policy lives here: the providers decide
 * circuit breaking and failover, the ledger the limits.
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "delivery.h"
#include "dlr.h"
#include "fallback.h"
#include "fraud.h"
#include "job.h"
#include "log.h"
#include "metrics.h"
#include "otp.h"
#include "protocol.h"
#include "route.h"
#include "secmem.h"
#include "segments.h"
#include "spend.h"
#include "templates.h"

enum dlv_state {
    DLV_REJECTING,
    DLV_CLAIMED,
    DLV_SENDING,
    DLV_BACKOFF,
    DLV_FINISHING,
    DLV_DONE,
};

static const char *const state_names[] = {
    "REJECTING", "CLAIMED", "SENDING", "BACKOFF", "FINISHING", "DONE",
};

#define DLV_PAYLOAD_KEEP 4096 /* of a rejected payload, for its dead letter */

struct dlv_secret {
    char code[OTP_DIGITS_MAX + 1];
    char body[TEMPLATE_SMS_MAX]; /* the text and its WebOTP line */
};

struct dlv {
    struct dlv *prev, *next;
    struct deliveries *d;
    enum dlv_state state;
    int busy;   /* a Redis write, the gate, a provider call or the timer is outstanding */
    int parked; /* the state's Redis write waits for Redis */
    char stream_id[STREAM_ID_MAX + 1];
    struct job job;
    char cc[4];
    struct ledger_job lj;
    uint64_t claimed_at;
    /* rejects */
    char *payload;
    size_t len;
    char reason[REASON_MAX];
    /* sending */
    struct provider *route[ROUTE_PROVIDERS_MAX];
    int nroute, ri;
    struct provider *provider; /* route[ri] while an attempt is out */
    struct gate_waiter gw;
    struct provider_call *call;
    int replace_code;   /* the code of record did not open: begin makes a new one */
    int probe;          /* this attempt is its provider's circuit probe */
    int awaits_circuit; /* BACKOFF until a circuit closes */
    int attempts;
    int64_t attempt_ms;      /* when the current attempt started */
    int64_t ambiguous_since; /* first attempt that may have been sent */
    uint64_t backoff_ms;
    uv_timer_t timer;          /* BACKOFF; closing it frees the delivery */
    struct dlv_secret *secret; /* code and text, in locked memory until sent */
    struct sms_size size;      /* of the text (SMS) */
    struct fallback_next *fb;  /* the next channel's job, when this one ends (owned) */
    char fraud_px[16];         /* the number's prefix for the pumping model */
    /* the outcome to record */
    struct ledger_outcome out;
    struct send_result result;
};

struct deliveries {
    uv_loop_t *loop;
    const struct config *cfg;
    struct ledger *ledger;
    struct provider_set *providers;
    struct queue *queue;
    struct dlr *dlr;
    struct dlv *head;
    int inflight;
    int draining;
    uv_timer_t tick;
    uv_timer_t drain_timer;
    delivery_drained_cb *drained_cb;
    void *drained_arg;
    struct delivery_stats stats;
    struct secmem *secrets;
    int closed_handles;
    int parked_any;                /* some state waits for Redis: say when it recovers */
    struct log_limiter park_log;   /* one line per cause a minute, however they alternate */
    struct log_limiter reject_log; /* a burst of bad jobs: a few lines, then a count */
    delivery_observer_fn *observer;
    void *observer_arg;
};

static void enter_state(struct dlv *dlv, enum dlv_state next);
static void dlv_plan_fallback(struct dlv *dlv, enum job_status st);
static void state_run(struct dlv *dlv);
static void dlv_retry_later(struct dlv *dlv, uint64_t delay_ms);

/* --- bookkeeping --------------------------------------------------------- */

static void
deliveries_update_room(struct deliveries *d)
{
    if (d->queue && !d->draining)
        queue_set_room(d->queue, d->cfg->max_inflight - d->inflight);
}

static void
deliveries_check_drained(struct deliveries *d)
{
    if (d->draining && d->inflight == 0 && d->drained_cb) {
        delivery_drained_cb *cb = d->drained_cb;
        d->drained_cb = NULL;
        uv_timer_stop(&d->drain_timer);
        cb(d->drained_arg, 0);
    }
}

/* The code is gone for good: after the last attempt, or with the delivery. */
static void
dlv_wipe(struct dlv *dlv)
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
dlv_free(struct dlv *dlv)
{
    struct deliveries *d = dlv->d;

    if (dlv->prev)
        dlv->prev->next = dlv->next;
    else
        d->head = dlv->next;
    if (dlv->next)
        dlv->next->prev = dlv->prev;
    d->inflight--;
    if (dlv->provider && dlv->gw.waiting)
        provider_unwait(dlv->provider, &dlv->gw);
    job_clear(&dlv->job);
    free(dlv->payload);
    free(dlv->fb);
    dlv_wipe(dlv);
    uv_close((uv_handle_t *)&dlv->timer, dlv_closed);
}

/* --- parking: a write Redis cannot take now ------------------------------ */

static void
dlv_park(struct dlv *dlv, const char *why)
{
    struct deliveries *d = dlv->d;
    unsigned held;

    /* One line per cause a minute, not one per job: an outage parks them all. */
    if (log_limit_allow(&d->park_log, why, uv_now(d->loop), &held))
        log_warnx("jobs wait for Redis to accept writes: %s (held in memory, retried; %u "
                  "similar lines held back)",
                  why, held);
    if (!dlv->parked)
        log_debug("job %s: %s waits for Redis: %s", dlv->job.id, state_names[dlv->state], why);
    d->parked_any = 1;
    dlv->parked = 1;
    dlv->busy = 0;
}

/* A ledger write came back; 0 if it was refused (the delivery is parked). */
static int
dlv_written(struct dlv *dlv, int ok, const char *err)
{
    if (ok < 0) {
        dlv_park(dlv, err ? err : "refused");
        return 0;
    }
    if (dlv->parked && dlv->d->parked_any) {
        log_notice("Redis accepts writes again; held jobs continue");
        dlv->d->parked_any = 0;
    }
    dlv->parked = 0;
    dlv->busy = 0;
    return 1;
}

/* --- outcomes ------------------------------------------------------------ */

static void
dlv_log_outcome(struct dlv *dlv)
{
    char masked[LOG_MASK_MAX];
    uint64_t ms = uv_now(dlv->d->loop) - dlv->claimed_at;

    log_mask_to(dlv->job.to, masked, sizeof(masked));
    if (dlv->out.status == JOB_SENT)
        log_info("job %s: sent to %s via %s (ref %s) in %llu ms", dlv->job.id, masked,
                 provider_name(dlv->provider), dlv->result.ref, (unsigned long long)ms);
    else
        log_notice("job %s: %s for %s%s%s: %s", dlv->job.id, job_status_name(dlv->out.status),
                   masked, dlv->out.error_code[0] ? " code " : "", dlv->out.error_code,
                   dlv->out.error);
}

/* The job ends with status st; its code is burnt if it was made and written. */
static void
dlv_end(struct dlv *dlv, enum job_status st, int burn_code)
{
    struct delivery_stats *s = &dlv->d->stats;

    dlv->out.status = st;
    dlv_plan_fallback(dlv, st);
    /* A code with a channel still to try is kept for it. */
    dlv->out.burn_code = burn_code && dlv->out.fallback == NULL;
    dlv->out.provider = dlv->attempts > 0 ? provider_name(dlv->provider) : "";
    dlv->out.provider_ref = dlv->result.ref;
    dlv->out.provider_status = dlv->result.provider_status;
    dlv->out.error_code = dlv->result.error_code;
    dlv->out.error = dlv->result.error;
    dlv->out.attempts = dlv->attempts;
    if (st == JOB_SENT)
        s->sent++;
    else if (st == JOB_EXPIRED)
        s->expired++;
    else
        s->failed++;
    if (st == JOB_SENT)
        s->channel_sent[dlv->job.channel]++;
    else
        s->channel_failed[dlv->job.channel]++;
    metrics_observe_end(dlv->out.provider, dlv->cc, st,
                        (double)(otpd_now_ms() - dlv->job.created_ms) / 1000.0);
    dlv_wipe(dlv);
    dlv_log_outcome(dlv);
    enter_state(dlv, DLV_FINISHING);
}

/*
 * The next channel, if the job has one and its code was written: after the
 * delay when sent (unless it is verified first), at once when the send
 * failed.  An expired code has nothing left to deliver.
 */
static void
dlv_plan_fallback(struct dlv *dlv, enum job_status st)
{
    dlv->out.fallback = NULL;
    if (dlv->job.nfallback == 0 || !dlv->out.begun || (st != JOB_SENT && st != JOB_FAILED))
        return;
    if (dlv->fb == NULL && (dlv->fb = malloc(sizeof(*dlv->fb))) == NULL)
        return;
    if (fallback_next_job(dlv->d->cfg, &dlv->job, dlv->out.sent_ms, dlv->fb) < 0) {
        log_warnx("job %s: its fallback job does not fit; none will follow", dlv->job.id);
        return;
    }
    dlv->out.fallback = &dlv->fb->lf;
}

static void
dlv_fail(struct dlv *dlv, enum job_status st, const char *code, const char *why)
{
    snprintf(dlv->result.error_code, sizeof(dlv->result.error_code), "%s", code);
    snprintf(dlv->result.error, sizeof(dlv->result.error), "%s", why);
    dlv_end(dlv, st, dlv->out.begun);
}

/* --- REJECTING ------------------------------------------------------------- */

static void
rejecting_done(void *arg, int ok, const char *err)
{
    struct dlv *dlv = arg;

    if (!dlv_written(dlv, ok, err))
        return;
    dlv->d->stats.dead_letters++;
    enter_state(dlv, DLV_DONE);
}

static int
rejecting_run(struct dlv *dlv)
{
    return ledger_reject(dlv->d->ledger, &dlv->lj, dlv->payload, dlv->len, dlv->reason,
                         rejecting_done, dlv);
}

/* --- CLAIMED: begin -------------------------------------------------------- */

/*
 * What the text costs (SMS): its segments, and the price the ledger
 * charges until the provider says.  Email costs nothing here.
 */
static void
dlv_measure(struct dlv *dlv)
{
    const struct config *cfg = dlv->d->cfg;
    struct ledger_job *lj = &dlv->lj;

    lj->segments = 0;
    lj->encoding = NULL;
    lj->price_micro = -1;
    lj->fraud_prefix = "";
    if (dlv->job.channel != JOB_CHANNEL_SMS)
        return;
    if (segments_count(dlv->secret->body, strlen(dlv->secret->body), &dlv->size) < 0)
        return; /* otp_render wrote valid UTF-8: cannot happen */
    lj->segments = dlv->size.segments;
    lj->encoding = dlv->size.encoding == SMS_GSM7 ? "gsm7" : "ucs2";
    lj->price_micro = spend_price(cfg, dlv->cc, dlv->size.segments);
    fraud_prefix(cfg, dlv->job.to, dlv->fraud_px);
    lj->fraud_prefix = dlv->fraud_px;
}

/*
 * The code of record instead of the one made at intake: a resend keeps the
 * record's deadline and says how many minutes are left; this job's own code
 * after a crash is rendered exactly as the first time, and the provider is
 * asked first whether that text already went out (Twilio can tell).
 */
static int
dlv_take_code(struct dlv *dlv, const struct ledger_begun *b)
{
    const struct config *cfg = dlv->d->cfg;
    int64_t left = b->expires_ms - otpd_now_ms();
    int minutes = b->reclaimed ? (dlv->job.ttl + 59) / 60 : (int)((left + 59999) / 60000);
    char err[128];

    /* An e-mail fallback delivers a number's code: the record is that number's. */
    if (otp_open(dlv->secret->code, cfg->hash_key, dlv->job.purpose,
                 dlv->job.code_for[0] ? dlv->job.code_for : dlv->job.to, b->sealed) < 0)
        return -1;
    if (templates_render_sms(cfg->templates, &dlv->job, dlv->secret->code,
                             minutes < 1 ? 1 : minutes, dlv->secret->body,
                             sizeof(dlv->secret->body), NULL, err, sizeof(err)) < 0)
        return -1;
    if (b->expires_ms > 0)
        dlv->job.expires_ms = b->expires_ms;
    dlv_measure(dlv);
    if (b->reclaimed)
        dlv->ambiguous_since = dlv->job.created_ms;
    dlv->d->stats.resent++;
    return 0;
}

static void
claimed_begun(void *arg, const struct ledger_begun *b)
{
    struct dlv *dlv = arg;
    struct delivery_stats *s = &dlv->d->stats;

    if (b->verdict == LEDGER_ERROR) {
        dlv_park(dlv, b->err);
        return;
    }
    dlv_written(dlv, 0, NULL);
    switch (b->verdict) {
    case LEDGER_GO:
        dlv->out.begun = 1;
        enter_state(dlv, DLV_SENDING);
        return;
    case LEDGER_RESEND:
        if (dlv_take_code(dlv, b) < 0) {
            log_warnx("job %s: the code of record does not open with this OTPD_HASH_KEY (was "
                      "the key changed?); a new code replaces it",
                      dlv->job.id);
            dlv->replace_code = 1;
            enter_state(dlv, DLV_CLAIMED);
            return;
        }
        dlv->out.begun = 1;
        enter_state(dlv, DLV_SENDING);
        return;
    case LEDGER_DONE:
        /* It reached a final status before; only the ack was lost. */
        log_info("job %s: already %s; acknowledged as it stands", dlv->job.id, b->status);
        break;
    case LEDGER_DUPLICATE:
        log_notice("job %s: duplicate (entry %s): this id is already %s; not sent again",
                   dlv->job.id, dlv->stream_id, *b->status ? b->status : "in use");
        s->duplicates++;
        break;
    default: {
        char masked[LOG_MASK_MAX];
        int limited = strcmp(b->status, PROTO_STATUS_RATE_LIMITED) == 0;
        if (limited)
            s->rate_limited++;
        else
            s->failed++;
        if (strcmp(b->error_code, "suspected_pumping") == 0)
            s->pumping_refused++;
        else if (strcmp(b->error_code, "blocked_prefix") == 0)
            s->blocked_refused++;
        else if (strstr(b->error_code, "spend_budget") != NULL)
            s->spend_refused++;
        if (b->paused) {
            s->pauses++;
            fraud_pause_alert(dlv->job.id, b->error);
        }
        metrics_observe_end("", dlv->cc, limited ? JOB_RATE_LIMITED : JOB_FAILED, 0);
        if (strcmp(b->error_code, "country_budget") == 0)
            s->budget_alerts++;
        log_notice("job %s: %s for %s code %s: %s", dlv->job.id, b->status,
                   log_mask_to(dlv->job.to, masked, sizeof(masked)), b->error_code, b->error);
        break;
    }
    }
    enter_state(dlv, DLV_DONE);
}

static int
claimed_run(struct dlv *dlv)
{
    const struct config *cfg = dlv->d->cfg;
    char mac[OTP_MAC_HEX + 1], sealed[OTP_SEALED_HEX + 1], why[REASON_MAX];
    const char *blocked;
    int rc;

    if (otpd_now_ms() >= dlv->job.expires_ms) {
        dlv_fail(dlv, JOB_EXPIRED, "", "the code's lifetime ended before it could be sent");
        return 0;
    }
    /* Calls are pumped as texts are (toll fraud): the same country and prefix rules. */
    if (dlv->job.channel != JOB_CHANNEL_EMAIL && cfg->allowed.n > 0 &&
        route_country_value(&cfg->allowed, dlv->cc) < 0) {
        snprintf(why, sizeof(why),
                 "destination country +%s is not in OTPD_ALLOWED_COUNTRIES (SMS-pumping "
                 "defence)",
                 dlv->cc);
        dlv_fail(dlv, JOB_FAILED, "country_not_allowed", why);
        return 0;
    }
    if (dlv->job.channel != JOB_CHANNEL_EMAIL &&
        (blocked = route_prefix_match(&cfg->blocked, dlv->job.to)) != NULL) {
        snprintf(why, sizeof(why),
                 "numbers starting +%s are in OTPD_BLOCKED_PREFIXES (SMS-pumping defence)",
                 blocked);
        dlv->d->stats.blocked_refused++;
        dlv_fail(dlv, JOB_FAILED, "blocked_prefix", why);
        return 0;
    }
    otp_mac(mac, cfg->hash_key, dlv->job.purpose, dlv->job.to, dlv->secret->code);
    otp_seal(sealed, cfg->hash_key, dlv->job.purpose, dlv->job.to, dlv->secret->code);
    dlv->lj.replace_code = dlv->replace_code;
    rc = ledger_begin(dlv->d->ledger, &dlv->lj, mac, sealed, claimed_begun, dlv);
    sodium_memzero(mac, sizeof(mac));
    return rc;
}

/* --- SENDING --------------------------------------------------------------- */

static void
sending_done(void *arg, const struct send_result *res)
{
    struct dlv *dlv = arg;
    struct deliveries *d = dlv->d;
    struct provider *p = dlv->provider;
    struct provider_verdict v;

    dlv->call = NULL;
    dlv->busy = 0;
    dlv->result = *res;
    log_mask_numbers(dlv->result.error); /* providers quote the number back */
    metrics_observe_request(provider_name(p), res->outcome,
                            (double)(otpd_now_ms() - dlv->attempt_ms) / 1000.0);
    v = provider_set_report(d->providers, dlv->route, dlv->nroute, &dlv->ri, res, dlv->probe,
                            dlv->attempts);
    dlv->probe = 0;
    switch (res->outcome) {
    case SEND_OK:
        dlv->out.sent_ms = otpd_now_ms();
        if (dlv->job.channel == JOB_CHANNEL_SMS)
            metrics_observe_segments(provider_name(p), dlv->cc, dlv->lj.segments);
        /* Followed by polling where no webhook will report it (finish schedules it). */
        dlv->out.poll = d->dlr != NULL && provider_needs_polling(p) &&
                        d->cfg->dlr_poll_horizon_s > 0 && res->ref[0] != '\0';
        dlv_end(dlv, JOB_SENT, 0);
        return;
    case SEND_FAIL_JOB:
        dlv->out.opted_out = res->opted_out;
        dlv_end(dlv, JOB_FAILED, 1);
        return;
    default:
        break;
    }
    if (res->outcome == SEND_AMBIGUOUS && dlv->ambiguous_since == 0)
        dlv->ambiguous_since = dlv->attempt_ms; /* the next attempt reconciles first */
    if (v.moved) {
        log_notice("job %s: next attempt goes to %s instead of %s", dlv->job.id,
                   provider_name(dlv->route[dlv->ri]), provider_name(p));
        dlv->ambiguous_since = 0; /* reconciliation is per provider */
    }
    dlv->awaits_circuit = v.awaits_circuit;
    dlv_retry_later(dlv, v.delay_ms);
}

/*
 * What a call says: the voice text with the code digit by digit ("1, 2, 3,
 * 4, 5, 6": text-to-speech reads "123456" as a number), in the job's
 * language.  Rendered into the secret buffer, which the SMS text held.
 */
static const char *
dlv_voice_text(struct dlv *dlv)
{
    char spoken[OTP_DIGITS_MAX * 3 + 1], err[128];
    size_t off = 0;
    int minutes = (int)((dlv->job.expires_ms - otpd_now_ms() + 59999) / 60000);
    const char *matched;
    const char *tmpl =
        templates_pick(dlv->d->cfg->templates, dlv->job.locale, TEMPLATE_VOICE, &matched);

    for (const char *p = dlv->secret->code; *p; p++)
        off += (size_t)snprintf(spoken + off, sizeof(spoken) - off, "%s%c", off ? ", " : "", *p);
    if (otp_render(dlv->secret->body, sizeof(dlv->secret->body), tmpl, spoken,
                   minutes < 1 ? 1 : minutes, err, sizeof(err)) < 0)
        snprintf(dlv->secret->body, sizeof(dlv->secret->body), "%s", spoken);
    sodium_memzero(spoken, sizeof(spoken));
    return dlv->secret->body;
}

static void
sending_call(struct dlv *dlv)
{
    struct send_request req;

    dlv->attempts++;
    dlv->attempt_ms = otpd_now_ms();
    req.job = &dlv->job;
    req.body = dlv->job.channel == JOB_CHANNEL_VOICE ? dlv_voice_text(dlv) : dlv->secret->body;
    req.code = dlv->secret->code;
    req.deadline_ms = dlv->job.expires_ms;
    req.minutes = (int)((dlv->job.expires_ms - otpd_now_ms() + 59999) / 60000);
    if (req.minutes < 1)
        req.minutes = 1;
    req.attempt = dlv->attempts;
    req.reconcile = dlv->ambiguous_since != 0;
    req.since_ms = dlv->ambiguous_since;
    dlv->busy = 1;
    if ((dlv->call = provider_send(dlv->provider, &req, sending_done, dlv)) == NULL) {
        struct send_result res = {.outcome = SEND_LOCAL};
        snprintf(res.error, sizeof(res.error), "could not start a request to %s",
                 provider_name(dlv->provider));
        sending_done(dlv, &res);
    }
}

/* The provider's gate lets this job go (rate, concurrency or pause allowed it). */
static void
sending_gate_ready(struct gate_waiter *w)
{
    struct dlv *dlv = (struct dlv *)((char *)w - offsetof(struct dlv, gw));

    if (otpd_now_ms() >= dlv->job.expires_ms) {
        provider_release(dlv->provider);
        dlv->busy = 0;
        dlv_fail(dlv, JOB_EXPIRED, "", "the code's lifetime ended before it could be sent");
        return;
    }
    sending_call(dlv);
}

static int
sending_run(struct dlv *dlv)
{
    struct provider_pick pick;

    if (otpd_now_ms() >= dlv->job.expires_ms) {
        dlv_fail(dlv, JOB_EXPIRED, "", "the code's lifetime ended before it could be sent");
        return 0;
    }
    pick = provider_set_pick(dlv->d->providers, dlv->route, dlv->nroute, &dlv->ri);
    if (pick.p == NULL) {
        /* Every provider for this number is out: wait for the first probe. */
        snprintf(dlv->result.error, sizeof(dlv->result.error), "no provider available: %.200s",
                 provider_down_reason(dlv->route[dlv->ri]));
        dlv->result.outcome = SEND_FAIL_PROVIDER;
        dlv->awaits_circuit = 1;
        dlv_retry_later(dlv, pick.wait_ms);
        return 0;
    }
    /* Reconciliation is per provider; a reclaimed job's first pick keeps it. */
    if (dlv->provider != NULL && pick.p != dlv->provider)
        dlv->ambiguous_since = 0;
    dlv->provider = pick.p;
    dlv->probe = pick.probe;
    dlv->busy = 1;
    if (provider_enter(pick.p, &dlv->gw, sending_gate_ready))
        sending_call(dlv);
    return 0;
}

/* --- BACKOFF --------------------------------------------------------------- */

/*
 * Retry after delay_ms unless that would pass the code's expiry, when the
 * job ends "expired": a code that arrives late is no use to anyone.
 */
static void
dlv_retry_later(struct dlv *dlv, uint64_t delay_ms)
{
    char masked[LOG_MASK_MAX];

    if (otpd_now_ms() + (int64_t)delay_ms >= dlv->job.expires_ms) {
        char last[REASON_MAX];
        snprintf(last, sizeof(last), "%s", dlv->result.error);
        snprintf(dlv->result.error, sizeof(dlv->result.error),
                 "not delivered before the code expired after %d attempt(s); last error: %.180s",
                 dlv->attempts, last);
        dlv_end(dlv, JOB_EXPIRED, 1);
        return;
    }
    dlv->backoff_ms = delay_ms;
    dlv->d->stats.retries++;
    log_mask_to(dlv->job.to, masked, sizeof(masked));
    log_notice("job %s: attempt %d to %s via %s: %s%s%s; retrying in %llu ms", dlv->job.id,
               dlv->attempts, masked, provider_name(dlv->route[dlv->ri]),
               provider_outcome_name(dlv->result.outcome), dlv->result.error[0] ? ": " : "",
               dlv->result.error, (unsigned long long)delay_ms);
    enter_state(dlv, DLV_BACKOFF);
}

static void
backoff_fire(uv_timer_t *t)
{
    struct dlv *dlv = t->data;

    dlv->busy = 0;
    dlv->awaits_circuit = 0;
    enter_state(dlv, DLV_SENDING);
}

static void
backoff_noted(void *arg, int ok, const char *err)
{
    struct dlv *dlv = arg;

    if (!dlv_written(dlv, ok, err))
        return;
    dlv->busy = 1; /* the timer */
    uv_timer_start(&dlv->timer, backoff_fire, dlv->backoff_ms, 0);
}

static int
backoff_run(struct dlv *dlv)
{
    struct ledger_outcome note = {
        .status = JOB_RETRYING,
        .provider = provider_name(dlv->route[dlv->ri]),
        .error_code = dlv->result.error_code,
        .error = dlv->result.error,
        .attempts = dlv->attempts,
    };

    return ledger_note(dlv->d->ledger, &dlv->lj, &note, backoff_noted, dlv);
}

/* A circuit closed: jobs waiting for one try now rather than at their timers. */
static void
deliveries_recovered(void *arg)
{
    struct deliveries *d = arg;

    for (struct dlv *dlv = d->head; dlv; dlv = dlv->next)
        if (dlv->state == DLV_BACKOFF && dlv->awaits_circuit &&
            uv_is_active((uv_handle_t *)&dlv->timer))
            uv_timer_start(&dlv->timer, backoff_fire, 0, 0);
}

/* --- FINISHING, DONE --------------------------------------------------------- */

static void
finishing_done(void *arg, int ok, const char *err)
{
    struct dlv *dlv = arg;

    if (!dlv_written(dlv, ok, err))
        return;
    enter_state(dlv, DLV_DONE);
}

static int
finishing_run(struct dlv *dlv)
{
    return ledger_finish(dlv->d->ledger, &dlv->lj, &dlv->out, finishing_done, dlv);
}

static void
done_run(struct dlv *dlv)
{
    struct deliveries *d = dlv->d;

    dlv_free(dlv);
    deliveries_update_room(d);
    deliveries_check_drained(d);
}

/* --- the state machine ------------------------------------------------------- */

/* Runs the current state's action: on entry, and again after a park. */
static void
state_run(struct dlv *dlv)
{
    int rc = 0;

    dlv->busy = 1;
    switch (dlv->state) {
    case DLV_REJECTING:
        rc = rejecting_run(dlv);
        break;
    case DLV_CLAIMED:
        rc = claimed_run(dlv);
        break;
    case DLV_SENDING:
        rc = sending_run(dlv);
        break;
    case DLV_BACKOFF:
        rc = backoff_run(dlv);
        break;
    case DLV_FINISHING:
        rc = finishing_run(dlv);
        break;
    case DLV_DONE:
        done_run(dlv);
        return;
    }
    if (rc < 0)
        dlv_park(dlv, "not connected");
}

static void
enter_state(struct dlv *dlv, enum dlv_state next)
{
    log_debug("job %s: %s -> %s", dlv->job.id, state_names[dlv->state], state_names[next]);
    if (dlv->d->observer)
        dlv->d->observer(dlv->d->observer_arg, dlv->job.id, state_names[dlv->state],
                         state_names[next]);
    dlv->state = next;
    dlv->parked = 0;
    state_run(dlv);
}

/* --- intake ------------------------------------------------------------------ */

static struct dlv *
dlv_new(struct deliveries *d, const struct queue_entry *e)
{
    struct dlv *dlv = calloc(1, sizeof(*dlv));

    if (dlv == NULL)
        return NULL;
    dlv->d = d;
    uv_timer_init(d->loop, &dlv->timer);
    dlv->timer.data = dlv;
    memcpy(dlv->stream_id, e->id, sizeof(dlv->stream_id));
    dlv->claimed_at = uv_now(d->loop);
    dlv->lj.job = &dlv->job;
    dlv->lj.stream_id = dlv->stream_id;
    dlv->lj.cc = dlv->cc;
    dlv->next = d->head;
    if (d->head)
        d->head->prev = dlv;
    d->head = dlv;
    d->inflight++;
    d->stats.claimed++;
    return dlv;
}

static enum dlv_state
dlv_reject(struct dlv *dlv, const struct queue_entry *e)
{
    struct deliveries *d = dlv->d;
    size_t keep = e->len < DLV_PAYLOAD_KEEP ? e->len : DLV_PAYLOAD_KEEP;
    unsigned held;

    /* As for any job, an entry without a usable id is named by its stream id. */
    if (dlv->job.id[0] == '\0')
        snprintf(dlv->job.id, sizeof(dlv->job.id), "%s", e->id);
    if (e->payload && (dlv->payload = malloc(keep + 1)) != NULL) {
        memcpy(dlv->payload, e->payload, keep);
        dlv->payload[keep] = '\0';
        dlv->len = keep;
    }
    d->stats.rejected++;
    /* A flood of bad jobs must not become a flood of log lines: a few, then a count. */
    if (log_limit_allow(&d->reject_log, "rejected", uv_now(d->loop), &held)) {
        if (held)
            log_notice("%u more jobs were rejected and not logged (see the %sdead stream)", held,
                       d->cfg->prefix);
        log_notice("job %s: rejected (entry %s): %s", dlv->job.id, dlv->stream_id, dlv->reason);
    }
    return DLV_REJECTING;
}

/* Code, hash and text are made at claim time; only the hash leaves memory. */
static int
dlv_prepare(struct dlv *dlv)
{
    const struct config *cfg = dlv->d->cfg;
    const char *locale;
    char err[128];

    if ((dlv->secret = secmem_get(dlv->d->secrets)) == NULL) {
        snprintf(dlv->reason, sizeof(dlv->reason), "no secure memory slot free");
        return -1;
    }
    otp_generate(dlv->secret->code, dlv->job.digits);
    if (templates_render_sms(cfg->templates, &dlv->job, dlv->secret->code, (dlv->job.ttl + 59) / 60,
                             dlv->secret->body, sizeof(dlv->secret->body), &locale, err,
                             sizeof(err)) < 0) {
        snprintf(dlv->reason, sizeof(dlv->reason), "message: %s", err);
        return -1;
    }
    log_debug("job %s: text of locale %s", dlv->job.id, *locale ? locale : "(the job's message)");
    dlv_measure(dlv);
    return 0;
}

/* Which state a fresh entry starts in: CLAIMED, or REJECTING with the reason. */
static enum dlv_state
dlv_intake(struct dlv *dlv, const struct queue_entry *e)
{
    struct deliveries *d = dlv->d;
    struct job_defaults defs = {d->cfg->otp_ttl, d->cfg->otp_digits, d->cfg->verify_attempts,
                                (int64_t)d->cfg->max_clock_skew_s * 1000};
    char err[200];

    if (job_parse(&dlv->job, e->payload, e->len, &defs, otpd_now_ms(), dlv->reason,
                  sizeof(dlv->reason)) < 0)
        return dlv_reject(dlv, e);
    if (dlv->job.id[0] == '\0')
        snprintf(dlv->job.id, sizeof(dlv->job.id), "%s", e->id);
    /* OTPD_FALLBACK: the channels after every SMS job that names none (not after a fallback). */
    if (dlv->job.channel == JOB_CHANNEL_SMS && dlv->job.nfallback == 0 &&
        dlv->job.fallback_of[0] == '\0') {
        memcpy(dlv->job.fallback, d->cfg->fallback, sizeof(dlv->job.fallback));
        dlv->job.nfallback = d->cfg->nfallback;
    }
    route_country_code(dlv->job.to, dlv->cc, sizeof(dlv->cc));
    dlv->nroute = provider_set_route(d->providers, d->cfg, &dlv->job, dlv->route, err, sizeof(err));
    if (dlv->nroute == 0) {
        snprintf(dlv->reason, sizeof(dlv->reason), "field provider: %s", err);
        return dlv_reject(dlv, e);
    }
    if (dlv_prepare(dlv) < 0)
        return dlv_reject(dlv, e);
    return DLV_CLAIMED;
}

void
delivery_batch(void *arg, const struct queue_entry *entries, size_t n)
{
    struct deliveries *d = arg;

    for (size_t i = 0; i < n; i++) {
        struct dlv *dlv = dlv_new(d, &entries[i]);
        if (dlv == NULL) {
            log_err("delivery: out of memory; entry %s stays pending", entries[i].id);
            continue;
        }
        if (entries[i].reclaimed)
            d->stats.reclaimed++;
        dlv->state = dlv_intake(dlv, &entries[i]);
        log_debug("job %s: entry %s taken, %s", dlv->job.id, dlv->stream_id,
                  state_names[dlv->state]);
        if (d->observer)
            d->observer(d->observer_arg, dlv->job.id, "", state_names[dlv->state]);
        state_run(dlv);
    }
    deliveries_update_room(d);
}

/* --- resuming, draining -------------------------------------------------------- */

static void
deliveries_resume(struct deliveries *d)
{
    struct dlv *dlv, *next;

    for (dlv = d->head; dlv; dlv = next) {
        next = dlv->next;
        if (dlv->parked && !dlv->busy)
            state_run(dlv);
    }
}

size_t
delivery_stream_ids(void *arg, const char **ids, size_t max)
{
    struct deliveries *d = arg;
    size_t n = 0;

    for (struct dlv *dlv = d->head; dlv && n < max; dlv = dlv->next)
        if (dlv->state != DLV_DONE)
            ids[n++] = dlv->stream_id;
    return n;
}

/* Four times a second: resume parked states, re-arm a read an error reply ended. */
static void
deliveries_tick(uv_timer_t *t)
{
    struct deliveries *d = t->data;

    deliveries_resume(d);
    if (d->queue != NULL && !d->draining)
        deliveries_update_room(d);
}

void
delivery_writer_state(struct deliveries *d, int up)
{
    if (up) {
        ledger_writer_up(d->ledger);
        deliveries_resume(d);
    }
}

struct deliveries *
delivery_new(uv_loop_t *loop, const struct config *cfg, struct ledger *ledger,
             struct provider_set *providers)
{
    struct deliveries *d = calloc(1, sizeof(*d));

    if (d == NULL)
        return NULL;
    d->loop = loop;
    d->cfg = cfg;
    d->ledger = ledger;
    d->providers = providers;
    d->park_log.period_ms = 60000;
    d->park_log.burst = 1;
    d->reject_log.period_ms = 10000;
    d->reject_log.burst = 5;
    /* Room for every job in flight, and one batch more for a reclaim. */
    if ((d->secrets = secmem_new(sizeof(struct dlv_secret),
                                 (size_t)cfg->max_inflight + (size_t)cfg->batch)) == NULL) {
        free(d);
        return NULL;
    }
    provider_set_on_recovery(providers, deliveries_recovered, d);
    uv_timer_init(loop, &d->tick);
    uv_timer_init(loop, &d->drain_timer);
    d->tick.data = d;
    d->drain_timer.data = d;
    uv_timer_start(&d->tick, deliveries_tick, 250, 250);
    return d;
}

void
delivery_set_observer(struct deliveries *d, delivery_observer_fn *fn, void *arg)
{
    d->observer = fn;
    d->observer_arg = arg;
}

void
delivery_set_dlr(struct deliveries *d, struct dlr *r)
{
    d->dlr = r;
}

void
delivery_set_queue(struct deliveries *d, struct queue *q)
{
    d->queue = q;
    deliveries_update_room(d);
}

int
delivery_inflight(const struct deliveries *d)
{
    return d->inflight;
}

const struct delivery_stats *
delivery_stats(const struct deliveries *d)
{
    return &d->stats;
}

static void
deliveries_drain_timeout(uv_timer_t *t)
{
    struct deliveries *d = t->data;

    /* What is left stays pending in the stream for a later reclaim. */
    for (struct dlv *dlv = d->head; dlv; dlv = dlv->next) {
        if (dlv->provider && dlv->gw.waiting)
            provider_unwait(dlv->provider, &dlv->gw);
        if (dlv->call && dlv->provider) {
            provider_cancel(dlv->provider, dlv->call);
            dlv->call = NULL;
        }
    }
    if (d->drained_cb) {
        delivery_drained_cb *cb = d->drained_cb;
        d->drained_cb = NULL;
        cb(d->drained_arg, d->inflight);
    }
}

void
delivery_drain(struct deliveries *d, int timeout_ms, delivery_drained_cb *cb, void *arg)
{
    d->draining = 1;
    d->drained_cb = cb;
    d->drained_arg = arg;
    uv_timer_start(&d->drain_timer, deliveries_drain_timeout, (uint64_t)timeout_ms, 0);
    deliveries_check_drained(d);
}

void
delivery_abandon(struct deliveries *d)
{
    while (d->head)
        dlv_free(d->head);
}

static void
deliveries_closed(uv_handle_t *h)
{
    struct deliveries *d = h->data;

    /* Both timers live inside d: free it after the second one has closed. */
    if (++d->closed_handles == 2) {
        secmem_free(d->secrets);
        free(d);
    }
}

void
delivery_free(struct deliveries *d)
{
    delivery_abandon(d);
    uv_close((uv_handle_t *)&d->tick, deliveries_closed);
    uv_close((uv_handle_t *)&d->drain_timer, deliveries_closed);
}

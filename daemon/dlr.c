/*
 * dlr.c: delivery receipts, whatever the provider.
 *
 * A request under /webhooks/<name> goes to the open provider of that name,
 * whose webhook op authenticates and parses it (only the provider knows its
 * wire format) and hands back receipts in otpd's words.  Other paths, and
 * names of providers without a webhook, are not ours (0: the caller's 404).
 *
 * A sent message that no webhook will report is polled through its
 * provider's poll op, on a backoff schedule from OTPD_DLR_POLL_FIRST_MS up
 * to a minute, until a final status or OTPD_DLR_POLL_HORIZON_S, and only
 * when the provider's gate has spare capacity, so polling never delays a
 * send.  The schedule lives in Redis ({p}polls, written by the ledger: the
 * job's finish adds the message), so a restart or another instance goes on
 * polling what was sent before it; a message being polled is leased to the
 * instance that took it.
 *
 * Either way a receipt is recorded with ledger_receipt(), tried once more
 * if that fails after the webhook was already answered.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dlr.h"
#include "log.h"
#include "metrics.h"

#define DLR_POLL_CAP      60000
#define DLR_POLL_TAKE     64    /* due messages taken from Redis per tick */
#define DLR_POLL_LEASE_MS 30000 /* a taken message is this instance's for so long */
#define DLR_TICK_MS       500
#define DLR_PREFIX        "/webhooks/"
#define DLR_MEMBER_MAX    192

/* One message being polled now, taken from the schedule in Redis. */
struct dlr_poll {
    struct dlr_poll *next;
    struct dlr *r;
    struct provider *p;
    struct provider_call *call;
    char member[DLR_MEMBER_MAX]; /* provider|ref|until_ms|backoff_ms, as scheduled */
    char ref[72];
    int64_t until, backoff;
    int done;
};

struct dlr {
    uv_loop_t *loop;
    const struct config *cfg;
    struct ledger *ledger;
    struct provider_set *providers;
    uv_timer_t tick;
    struct dlr_poll *polls; /* being polled now */
    int taking;             /* a take from the schedule is on its way */
    void (*closed_cb)(void *arg);
    void *closed_arg;
};

/* A webhook's receipts go to this provider's records. */
struct dlr_sink {
    struct dlr *r;
    const char *provider;
};

/* --- applying a receipt -------------------------------------------------- */

struct receipt_ctx {
    struct dlr *r;
    char provider[16];
    struct receipt rc;
    int retried;
};

static int dlr_submit(struct receipt_ctx *c);

static void
dlr_applied(void *arg, int verdict, const char *job_id, long long sent_ms, const char *cc,
            const char *err)
{
    struct receipt_ctx *c = arg;

    if (verdict < 0 && !c->retried) {
        /* The webhook was already answered: try once more (scripts reloaded on NOSCRIPT). */
        c->retried = 1;
        if (dlr_submit(c) == 0)
            return;
    }
    if (verdict < 0)
        log_warnx("receipt: could not record %s for a %s message: %s",
                  job_status_name(c->rc.status), c->provider, err);
    else if (verdict == 0)
        log_debug("receipt: a %s message otpd does not know (expired or not ours)", c->provider);
    else if (verdict == 2) {
        log_info("job %s: %s (%s receipt)", job_id, job_status_name(c->rc.status), c->provider);
        metrics_observe_receipt(c->provider, cc, c->rc.status);
        if (c->rc.status == JOB_DELIVERED && sent_ms > 0)
            metrics_observe_delivery(c->provider, cc, (double)(otpd_now_ms() - sent_ms) / 1000.0);
    }
    free(c);
}

static int
dlr_apply(struct dlr *r, const char *provider, const struct receipt *rc)
{
    struct receipt_ctx *c = calloc(1, sizeof(*c));

    if (c == NULL)
        return -1;
    c->r = r;
    c->rc = *rc;
    snprintf(c->provider, sizeof(c->provider), "%s", provider);
    log_mask_numbers(c->rc.error); /* carriers' texts may quote the number */
    if (dlr_submit(c) < 0) {
        free(c);
        return -1;
    }
    return 0;
}

static int
dlr_submit(struct receipt_ctx *c)
{
    const struct receipt *rc = &c->rc;

    return ledger_receipt(c->r->ledger, c->provider, rc->ref, rc->status, rc->provider_status,
                          rc->error_code, rc->error, rc->priced ? rc->price_micro : -1,
                          rc->price_unit, dlr_applied, c);
}

/* --- webhooks ------------------------------------------------------------- */

/* A webhook's receipt: record it, or -1 so the provider is told to retry. */
static int
dlr_received(void *arg, const struct receipt *rc)
{
    struct dlr_sink *sink = arg;

    return dlr_apply(sink->r, sink->provider, rc);
}

int
dlr_handle(struct dlr *r, const struct httpd_request *req, struct httpd_response *resp)
{
    const char *name = req->path + strlen(DLR_PREFIX), *rest;
    struct dlr_sink sink = {r, NULL};
    struct provider *p;

    if (strncmp(req->path, DLR_PREFIX, strlen(DLR_PREFIX)) != 0)
        return 0;
    rest = name + strcspn(name, "/");
    if ((p = provider_set_find(r->providers, name, (size_t)(rest - name))) == NULL)
        return 0;
    sink.provider = provider_name(p);
    return provider_webhook(p, rest, req, resp, dlr_received, &sink);
}

/* --- polling ----------------------------------------------------------------- */

/* Only these end polling; "sent" and the provider's intermediate words do not. */
static int
dlr_final(enum job_status st)
{
    return st == JOB_DELIVERED || st == JOB_UNDELIVERED || st == JOB_FAILED;
}

/* Poll again after the doubled backoff, or drop it past the horizon. */
static void
dlr_poll_later(struct dlr_poll *e)
{
    char next[DLR_MEMBER_MAX];
    int64_t now = otpd_now_ms();

    e->backoff = e->backoff * 2 > DLR_POLL_CAP ? DLR_POLL_CAP : e->backoff * 2;
    if (now + e->backoff > e->until) {
        ledger_poll_next(e->r->ledger, e->member, NULL, 0); /* horizon: it stays "sent" */
        return;
    }
    snprintf(next, sizeof(next), "%s|%s|%lld|%lld", provider_name(e->p), e->ref,
             (long long)e->until, (long long)e->backoff);
    ledger_poll_next(e->r->ledger, e->member, next, now + e->backoff);
}

static void
dlr_polled(void *arg, const struct poll_result *res)
{
    struct dlr_poll *e = arg;

    e->call = NULL;
    e->done = 1; /* freed by the tick, not inside its own callback */
    provider_release(e->p);
    if (res->ok && dlr_final(res->receipt.status)) {
        dlr_apply(e->r, provider_name(e->p), &res->receipt);
        ledger_poll_next(e->r->ledger, e->member, NULL, 0);
        return;
    }
    dlr_poll_later(e);
}

/* provider|ref|until_ms|backoff_ms into e; -1 if it is not one. */
static int
dlr_poll_parse(struct dlr *r, const char *member, struct dlr_poll *e)
{
    const char *bar1 = strchr(member, '|'), *bar2, *bar3;
    size_t reflen;

    if (bar1 == NULL || (bar2 = strchr(bar1 + 1, '|')) == NULL ||
        (bar3 = strchr(bar2 + 1, '|')) == NULL || strlen(member) >= sizeof(e->member))
        return -1;
    reflen = (size_t)(bar2 - bar1 - 1);
    if (reflen == 0 || reflen >= sizeof(e->ref))
        return -1;
    snprintf(e->member, sizeof(e->member), "%s", member);
    memcpy(e->ref, bar1 + 1, reflen);
    e->ref[reflen] = '\0';
    e->until = atoll(bar2 + 1);
    e->backoff = atoll(bar3 + 1);
    if (e->backoff < 100)
        e->backoff = 100;
    e->p = provider_set_find(r->providers, member, (size_t)(bar1 - member));
    return 0;
}

/* Due messages from the schedule: poll each one the provider has room for. */
static void
dlr_taken(void *arg, const char *const *members, size_t n, const char *err)
{
    struct dlr *r = arg;

    r->taking = 0;
    if (err != NULL) {
        log_debug("dlr: could not read the polling schedule: %s", err);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        struct dlr_poll *e = calloc(1, sizeof(*e));
        if (e == NULL)
            return; /* the rest are due again when their lease ends */
        e->r = r;
        if (dlr_poll_parse(r, members[i], e) < 0 || otpd_now_ms() > e->until) {
            ledger_poll_next(r->ledger, members[i], NULL, 0);
            free(e);
            continue;
        }
        /* Not a provider of this instance: another one will take it after the lease. */
        if (e->p == NULL || !provider_needs_polling(e->p)) {
            free(e);
            continue;
        }
        /* Sending first: poll only on spare capacity. */
        if ((e->call = provider_poll_spare(e->p, e->ref, dlr_polled, e)) == NULL) {
            e->backoff /= 2; /* the same step again, not a longer one */
            dlr_poll_later(e);
            free(e);
            continue;
        }
        e->next = r->polls;
        r->polls = e;
    }
}

static void
dlr_tick(uv_timer_t *t)
{
    struct dlr *r = t->data;
    struct dlr_poll **pp = &r->polls, *e;

    while ((e = *pp) != NULL) {
        if (e->done && e->call == NULL) {
            *pp = e->next;
            free(e);
            continue;
        }
        pp = &e->next;
    }
    if (r->cfg->dlr_poll_horizon_s > 0 && !r->taking &&
        ledger_poll_take(r->ledger, DLR_POLL_TAKE, DLR_POLL_LEASE_MS, dlr_taken, r) == 0)
        r->taking = 1;
}

struct dlr *
dlr_new(uv_loop_t *loop, const struct config *cfg, struct ledger *ledger,
        struct provider_set *providers)
{
    struct dlr *r = calloc(1, sizeof(*r));

    if (r == NULL)
        return NULL;
    r->loop = loop;
    r->cfg = cfg;
    r->ledger = ledger;
    r->providers = providers;
    uv_timer_init(loop, &r->tick);
    r->tick.data = r;
    uv_timer_start(&r->tick, dlr_tick, DLR_TICK_MS, DLR_TICK_MS);
    return r;
}

static void
dlr_closed(uv_handle_t *h)
{
    struct dlr *r = h->data;

    if (r->closed_cb)
        r->closed_cb(r->closed_arg);
    free(r);
}

/* Before the providers close: cancel lookups in flight. */
void
dlr_close(struct dlr *r, void (*cb)(void *arg), void *arg)
{
    /* Their schedule is in Redis: another instance polls them after the lease. */
    while (r->polls) {
        struct dlr_poll *e = r->polls;
        r->polls = e->next;
        if (e->call)
            provider_cancel(e->p, e->call);
        free(e);
    }
    r->closed_cb = cb;
    r->closed_arg = arg;
    uv_close((uv_handle_t *)&r->tick, dlr_closed);
}

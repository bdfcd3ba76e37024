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
 * send.
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

#define DLR_POLL_MAX 10000
#define DLR_POLL_CAP 60000
#define DLR_TICK_MS  500
#define DLR_PREFIX   "/webhooks/"

struct dlr_poll {
    struct dlr_poll *next;
    struct dlr *r;
    struct provider *p;
    struct provider_call *call;
    char ref[72];
    uint64_t next_at, until, backoff;
    int done;
};

struct dlr {
    uv_loop_t *loop;
    const struct config *cfg;
    struct ledger *ledger;
    struct provider_set *providers;
    uv_timer_t tick;
    struct dlr_poll *polls;
    int npolls;
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
                          rc->error_code, rc->error, dlr_applied, c);
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

static void
dlr_polled(void *arg, const struct poll_result *res)
{
    struct dlr_poll *e = arg;
    struct dlr *r = e->r;
    uint64_t now = uv_now(r->loop);

    e->call = NULL;
    provider_release(e->p);
    if (res->ok && dlr_final(res->receipt.status)) {
        dlr_apply(r, provider_name(e->p), &res->receipt);
        e->done = 1;
        return;
    }
    e->backoff = e->backoff * 2 > DLR_POLL_CAP ? DLR_POLL_CAP : e->backoff * 2;
    e->next_at = now + e->backoff;
    if (e->next_at > e->until)
        e->done = 1; /* horizon: the status stays "sent" */
}

static void
dlr_tick(uv_timer_t *t)
{
    struct dlr *r = t->data;
    struct dlr_poll **pp = &r->polls, *e;
    uint64_t now = uv_now(r->loop);

    while ((e = *pp) != NULL) {
        if (e->done && e->call == NULL) {
            *pp = e->next;
            r->npolls--;
            free(e);
            continue;
        }
        /* Sending first: poll only on spare capacity. */
        if (!e->done && e->call == NULL && now >= e->next_at) {
            e->call = provider_poll_spare(e->p, e->ref, dlr_polled, e);
            if (e->call == NULL)
                e->next_at = now + e->backoff;
        }
        pp = &e->next;
    }
}

void
dlr_sent(struct dlr *r, struct provider *p, const char *ref)
{
    struct dlr_poll *e;

    /* Poll only where no webhook will come. */
    if (!provider_needs_polling(p) || r->cfg->dlr_poll_horizon_s <= 0 ||
        r->npolls >= DLR_POLL_MAX || *ref == '\0')
        return;
    if ((e = calloc(1, sizeof(*e))) == NULL)
        return;
    e->r = r;
    e->p = p;
    snprintf(e->ref, sizeof(e->ref), "%s", ref);
    e->backoff = (uint64_t)r->cfg->dlr_poll_first_ms;
    e->next_at = uv_now(r->loop) + e->backoff;
    e->until = uv_now(r->loop) + (uint64_t)r->cfg->dlr_poll_horizon_s * 1000;
    e->next = r->polls;
    r->polls = e;
    r->npolls++;
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

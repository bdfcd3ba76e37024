/*
 * gate.c: token bucket plus concurrency cap plus pause, with a FIFO of
 * waiters and one timer for the next moment something may change.
 */
#include <stdlib.h>

#include "gate.h"

struct gate {
    uv_loop_t *loop;
    uv_timer_t timer;
    int rate, max_inflight, inflight, nwaiting;
    int limit;        /* the cap in force: max_inflight, or lower after congestion */
    int since_raised; /* successes since the limit last grew */
    double tokens;
    uint64_t refilled_at, paused_until;
    struct gate_waiter *head, **tail;
    void (*closed_cb)(void *arg);
    void *closed_arg;
};

static void gate_pump(struct gate *g);

static void
gate_timer_cb(uv_timer_t *t)
{
    gate_pump(t->data);
}

struct gate *
gate_new(uv_loop_t *loop, int rate, int max_inflight)
{
    struct gate *g = calloc(1, sizeof(*g));

    if (g == NULL)
        return NULL;
    g->loop = loop;
    g->tail = &g->head;
    uv_timer_init(loop, &g->timer);
    g->timer.data = g;
    gate_configure(g, rate, max_inflight);
    g->tokens = rate > 0 ? rate : 0;
    g->refilled_at = uv_now(loop);
    return g;
}

void
gate_configure(struct gate *g, int rate, int max_inflight)
{
    g->rate = rate;
    g->max_inflight = max_inflight;
    g->limit = max_inflight;
    g->since_raised = 0;
    if (g->tokens > rate)
        g->tokens = rate;
}

static void
gate_refill(struct gate *g, uint64_t now)
{
    if (g->rate <= 0)
        return;
    g->tokens += (double)(now - g->refilled_at) * g->rate / 1000.0;
    /* Burst of at most one second's worth. */
    if (g->tokens > g->rate)
        g->tokens = g->rate;
    g->refilled_at = now;
}

/* 0 if a request may go now, else how many ms until it might (-1: on a leave). */
static int64_t
gate_wait_ms(struct gate *g, uint64_t now)
{
    if (now < g->paused_until)
        return (int64_t)(g->paused_until - now);
    if (g->limit > 0 && g->inflight >= g->limit)
        return -1;
    gate_refill(g, now);
    if (g->rate > 0 && g->tokens < 1.0)
        return (int64_t)((1.0 - g->tokens) * 1000.0 / g->rate) + 1;
    return 0;
}

static void
gate_take(struct gate *g)
{
    if (g->rate > 0)
        g->tokens -= 1.0;
    g->inflight++;
}

int
gate_enter(struct gate *g, struct gate_waiter *w, gate_ready_cb *cb)
{
    /* FIFO: nobody overtakes a waiter. */
    if (g->head == NULL && gate_wait_ms(g, uv_now(g->loop)) == 0) {
        gate_take(g);
        return 1;
    }
    w->cb = cb;
    w->next = NULL;
    w->waiting = 1;
    *g->tail = w;
    g->tail = &w->next;
    g->nwaiting++;
    gate_pump(g);
    return 0;
}

int
gate_try_enter(struct gate *g)
{
    if (g->head != NULL || gate_wait_ms(g, uv_now(g->loop)) != 0)
        return 0;
    gate_take(g);
    return 1;
}

static void
gate_pump(struct gate *g)
{
    int64_t wait;

    while (g->head != NULL) {
        wait = gate_wait_ms(g, uv_now(g->loop));
        if (wait != 0) {
            if (wait > 0)
                uv_timer_start(&g->timer, gate_timer_cb, (uint64_t)wait, 0);
            return;
        }
        struct gate_waiter *w = g->head;
        g->head = w->next;
        if (g->head == NULL)
            g->tail = &g->head;
        g->nwaiting--;
        w->waiting = 0;
        gate_take(g);
        w->cb(w);
    }
}

void
gate_leave(struct gate *g)
{
    if (g->inflight > 0)
        g->inflight--;
    gate_pump(g);
}

void
gate_cancel(struct gate *g, struct gate_waiter *w)
{
    struct gate_waiter **pp;

    if (!w->waiting)
        return;
    for (pp = &g->head; *pp; pp = &(*pp)->next) {
        if (*pp == w) {
            *pp = w->next;
            if (g->tail == &w->next)
                g->tail = pp;
            g->nwaiting--;
            w->waiting = 0;
            return;
        }
    }
}

/*
 * The provider refused a request for concurrency (Twilio 20429): it held
 * the others open plus this one, so its limit is at most the others.
 * Called before gate_leave() for that request, which is still counted, so
 * that no waiter takes its place under the old cap.  Requests over the new
 * cap wait here instead of failing.
 */
int
gate_congested(struct gate *g)
{
    int cap = g->inflight > 2 ? g->inflight - 1 : 1;

    if (g->limit == 0 || cap < g->limit) {
        g->limit = cap;
        g->since_raised = 0;
    }
    return g->limit;
}

/* Additive increase: one more request in flight per window of successes. */
void
gate_relieved(struct gate *g)
{
    if (g->limit == g->max_inflight)
        return;
    if (++g->since_raised >= g->limit) {
        g->since_raised = 0;
        g->limit++;
        if (g->max_inflight > 0 && g->limit >= g->max_inflight)
            g->limit = g->max_inflight;
        gate_pump(g);
    }
}

int
gate_limit(const struct gate *g)
{
    return g->limit;
}

void
gate_pause(struct gate *g, uint64_t until_ms)
{
    if (until_ms > g->paused_until)
        g->paused_until = until_ms;
}

int
gate_inflight(const struct gate *g)
{
    return g->inflight;
}

int
gate_waiting(const struct gate *g)
{
    return g->nwaiting;
}

static void
gate_closed(uv_handle_t *h)
{
    struct gate *g = h->data;

    if (g->closed_cb)
        g->closed_cb(g->closed_arg);
    free(g);
}

void
gate_close(struct gate *g, void (*cb)(void *arg), void *arg)
{
    g->closed_cb = cb;
    g->closed_arg = arg;
    uv_close((uv_handle_t *)&g->timer, gate_closed);
}

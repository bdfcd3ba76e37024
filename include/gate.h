/*
 * gate.h: a provider's throughput gate: a token bucket (requests per
 * second), a cap on requests in progress, and a pause (after a 429).
 * Jobs that cannot go now wait in FIFO order and are called back when
 * they may; nothing fails for want of capacity.
 */
#ifndef OTPD_GATE_H
#define OTPD_GATE_H

#include <stdint.h>

#include <uv.h>

struct gate_waiter;
typedef void gate_ready_cb(struct gate_waiter *w);

/* Embedded in the waiting object. */
struct gate_waiter {
    struct gate_waiter *next;
    gate_ready_cb *cb;
    int waiting;
};

struct gate;

/* rate: per second (0: unlimited); max_inflight: 0 for unlimited. */
struct gate *gate_new(uv_loop_t *loop, int rate, int max_inflight);
void gate_configure(struct gate *g, int rate, int max_inflight);
/* 1: go now (counted in flight); 0: queued, cb runs when it may go (counted then). */
int gate_enter(struct gate *g, struct gate_waiter *w, gate_ready_cb *cb);
/* 1 and counted in flight if a request may go right now and nobody waits; else 0. */
int gate_try_enter(struct gate *g);
void gate_leave(struct gate *g);
void gate_cancel(struct gate *g, struct gate_waiter *w);
/* No request goes before loop time until_ms (Retry-After). */
void gate_pause(struct gate *g, uint64_t until_ms);
/*
 * The provider said "too many concurrent requests": lower the cap to the
 * other requests in flight (at least 1).  Call it before gate_leave() for
 * the refused request.  Returns the new cap.
 */
int gate_congested(struct gate *g);
/* A request succeeded: a lowered cap grows back by one per window, up to max_inflight. */
void gate_relieved(struct gate *g);
/* The cap in force (0: none). */
int gate_limit(const struct gate *g);
int gate_inflight(const struct gate *g);
int gate_waiting(const struct gate *g);
void gate_close(struct gate *g, void (*cb)(void *arg), void *arg);

#endif

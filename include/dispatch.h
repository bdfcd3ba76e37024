/*
 * dispatch.h: the deliveries in flight.  Takes claimed entries from the
 * queue, drives each through store -> provider -> store -> ack, and tells
 * the queue how much room is left (backpressure).
 */
#ifndef OTPD_DISPATCH_H
#define OTPD_DISPATCH_H

#include <stdint.h>

#include <uv.h>

#include "config.h"
#include "provider.h"
#include "queue.h"
#include "store.h"

struct dispatch_stats {
    uint64_t claimed, sent, failed, expired, rejected;
    uint64_t retries, duplicates, reclaimed;
    uint64_t rate_limited, budget_alerts;
    uint64_t dead_letters; /* entries written to the dead-letter stream */
};

struct dispatch;
typedef void dispatch_drained_cb(void *arg, int handed_back);

struct dispatch *dispatch_new(uv_loop_t *loop, const struct config *cfg, struct store *st,
                              struct provider_set *providers);
void dispatch_set_queue(struct dispatch *d, struct queue *q);
struct dlr;
/* Where to report accepted messages for delivery tracking (optional). */
void dispatch_set_dlr(struct dispatch *d, struct dlr *r);
void dispatch_free(struct dispatch *d);

/* queue_batch_cb: take ownership of freshly claimed entries. */
void dispatch_batch(void *arg, const struct queue_entry *entries, size_t n);
/* The writer connection came back: resume deliveries waiting on Redis. */
void dispatch_writer_state(struct dispatch *d, int up);

int dispatch_inflight(const struct dispatch *d);
const struct dispatch_stats *dispatch_stats(const struct dispatch *d);
const struct config *dispatch_config(const struct dispatch *d);

/*
 * Stop taking jobs and let those in flight finish for up to timeout_ms.
 * cb gets the number still unfinished, left pending in the stream for a
 * later reclaim; after cb every delivery is gone.
 */
void dispatch_drain(struct dispatch *d, int timeout_ms, dispatch_drained_cb *cb, void *arg);
/* After a drain timed out: cancel sends and free what is left. */
void dispatch_abandon(struct dispatch *d);

#endif

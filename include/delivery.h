/*
 * delivery.h: the jobs in flight, each moved through a small state machine
 * (see the diagram at the top of delivery.c).  Takes claimed entries from
 * the queue, writes through the ledger, sends through the provider set, and
 * tells the queue how much room is left (backpressure).  Policies live
 * elsewhere: the circuit breaker and failover with the providers, the
 * limits and their alerts with the ledger, the reclaim schedule with the
 * queue.
 */
#ifndef OTPD_DELIVERY_H
#define OTPD_DELIVERY_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "config.h"
#include "ledger.h"
#include "provider.h"
#include "queue.h"

struct delivery_stats {
    uint64_t claimed, sent, failed, expired, rejected;
    uint64_t retries, duplicates, reclaimed;
    uint64_t rate_limited, budget_alerts;
    uint64_t resent; /* jobs that sent the code of record again (a resend, or after a crash) */
    uint64_t channel_sent[JOB_CHANNELS], channel_failed[JOB_CHANNELS]; /* failed includes expired */
    uint64_t dead_letters; /* entries written to the dead-letter stream */
    /* refused by the pumping model, the block lists, the money budgets; pauses made here */
    uint64_t pumping_refused, blocked_refused, spend_refused, pauses;
};

struct deliveries;
typedef void delivery_drained_cb(void *arg, int handed_back);

struct deliveries *delivery_new(uv_loop_t *loop, const struct config *cfg, struct ledger *ledger,
                                struct provider_set *providers);
void delivery_set_queue(struct deliveries *d, struct queue *q);
struct dlr;
/* Where to report accepted messages for delivery tracking (optional). */
void delivery_set_dlr(struct deliveries *d, struct dlr *r);
void delivery_free(struct deliveries *d);

/* queue_batch_cb: take ownership of freshly claimed entries. */
void delivery_batch(void *arg, const struct queue_entry *entries, size_t n);
/* The writer connection came back: resume deliveries waiting on Redis. */
void delivery_writer_state(struct deliveries *d, int up);
/* queue_ids_fn: the stream ids of the jobs still in flight (their entries stay ours). */
size_t delivery_stream_ids(void *arg, const char **ids, size_t max);

/*
 * Optional: told every state change, after the debug log line (tests
 * follow a job's path with it).  from == to == NULL never happens; a new
 * entry's first state comes with from "".
 */
typedef void delivery_observer_fn(void *arg, const char *job_id, const char *from, const char *to);
void delivery_set_observer(struct deliveries *d, delivery_observer_fn *fn, void *arg);

int delivery_inflight(const struct deliveries *d);
const struct delivery_stats *delivery_stats(const struct deliveries *d);

/*
 * Stop taking jobs and let those in flight finish for up to timeout_ms.
 * cb gets the number still unfinished, left pending in the stream for a
 * later reclaim; after cb every delivery is gone.
 */
void delivery_drain(struct deliveries *d, int timeout_ms, delivery_drained_cb *cb, void *arg);
/* After a drain timed out: cancel sends and free what is left. */
void delivery_abandon(struct deliveries *d);

#endif

/*
 * queue.h: reading the job stream: the consumer group, XREADGROUP with
 * backpressure, and crash recovery (keeping our own entries young, taking
 * over a dead instance's).  Acknowledging an entry is part of the job's
 * last write, which the ledger makes.
 */
#ifndef OTPD_QUEUE_H
#define OTPD_QUEUE_H

#include <stddef.h>

#include <uv.h>

#include "config.h"
#include "otpd.h"
#include "rconn.h"

struct queue_entry {
    char id[STREAM_ID_MAX + 1];
    const char *payload; /* the "job" field, NULL if absent; valid during the callback */
    size_t len;
    int reclaimed; /* taken over from a consumer that stopped */
};

typedef void queue_batch_cb(void *arg, const struct queue_entry *entries, size_t n);
typedef void queue_stopped_cb(void *arg);
/* The stream ids of the jobs still being worked on (at most max). */
typedef size_t queue_ids_fn(void *arg, const char **ids, size_t max);

struct queue;

struct queue *queue_new(uv_loop_t *loop, const struct config *cfg, struct rconn *reader,
                        struct rconn *writer, queue_batch_cb *cb, void *arg);
/* Who tells the queue which entries are still ours (refreshed, never reclaimed). */
void queue_set_ids(struct queue *q, queue_ids_fn *fn, void *arg);
void queue_free(struct queue *q);
/* cb runs each time the group is ready on a (re)connected reader. */
void queue_on_ready(struct queue *q, void (*cb)(void *arg), void *arg);
/* Connection state changes, forwarded from the rconn callbacks. */
void queue_reader_state(struct queue *q, int up);
/* Entries the consumer can take now; 0 pauses reading (backpressure). */
void queue_set_room(struct queue *q, int room);
/* Stop reading and the schedule; cb once no read is outstanding. */
void queue_stop(struct queue *q, queue_stopped_cb *cb, void *arg);

/* Take over entries idle past OTPD_CLAIM_IDLE_MS (their consumer died). */
void queue_reclaim(struct queue *q);
/* Reset the idle time of our own pending entries (jobs we still work on). */
void queue_refresh(struct queue *q, const char **ids, size_t n);

#endif

/*
 * queue.h: the job stream.  Only queue.c speaks the stream protocol
 * (XGROUP, XREADGROUP, XACK, XDEL, the dead-letter stream).
 */
#ifndef OTPD_QUEUE_H
#define OTPD_QUEUE_H

#include <stddef.h>

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
/* ok is 0 on success; otherwise err says why (Redis error or lost connection). */
typedef void queue_done_cb(void *arg, int ok, const char *err);
typedef void queue_stopped_cb(void *arg);

struct queue;

struct queue *queue_new(const struct config *cfg, struct rconn *reader, struct rconn *writer,
                        queue_batch_cb *cb, void *arg);
void queue_free(struct queue *q);
/* cb runs each time the group is ready on a (re)connected reader. */
void queue_on_ready(struct queue *q, void (*cb)(void *arg), void *arg);
/* Connection state changes, forwarded from the rconn callbacks. */
void queue_reader_state(struct queue *q, int up);
/* Entries the consumer can take now; 0 pauses reading (backpressure). */
void queue_set_room(struct queue *q, int room);
/* Stop reading; cb once no read is outstanding. */
void queue_stop(struct queue *q, queue_stopped_cb *cb, void *arg);

/* Take over entries idle past OTPD_CLAIM_IDLE_MS (their consumer died). */
void queue_reclaim(struct queue *q);
/* Reset the idle time of our own pending entries (jobs we still work on). */
void queue_refresh(struct queue *q, const char *const *ids, size_t n);

/* Acknowledge and delete a finished entry, atomically. */
int queue_ack(struct queue *q, const char *stream_id, queue_done_cb *cb, void *arg);
/* Copy to the dead-letter stream with a reason, ack and delete, atomically. */
int queue_dead_letter(struct queue *q, const char *stream_id, const char *payload, size_t len,
                      const char *reason, queue_done_cb *cb, void *arg);

#endif

/*
 * queue.c: claims jobs from the stream through the consumer group, keeps
 * our pending entries young and takes over a dead instance's.  A job's
 * acknowledgement is part of its last write, which the ledger makes.
 *
 * The reader connection is used for nothing but XREADGROUP ... BLOCK, since
 * a blocked connection answers nothing else; everything that writes goes
 * through the writer.  Reads continue while earlier jobs are in flight, as
 * long as the deliveries report room.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "protocol.h"
#include "queue.h"

struct queue {
    uv_loop_t *loop;
    const struct config *cfg;
    struct rconn *reader, *writer;
    char stream[128];
    uv_timer_t tick; /* keeps our entries young and looks for orphans */
    int tick_closed;
    uint64_t last_refresh, last_reclaim;
    queue_ids_fn *ids_fn;
    void *ids_arg;
    int group_ready;
    int reading; /* an XGROUP or XREADGROUP is outstanding on the reader */
    int room;
    int stopping;
    queue_batch_cb *batch_cb;
    void *batch_arg;
    queue_stopped_cb *stopped_cb;
    void *stopped_arg;
    void (*ready_cb)(void *arg);
    void *ready_arg;
    int reclaiming;
    char reclaim_cursor[STREAM_ID_MAX + 1];
    char last_error[128]; /* said once, not on every retry */
};

static void queue_read(struct queue *q);

static int
queue_new_error(struct queue *q, const char *err)
{
    if (strncmp(q->last_error, err, sizeof(q->last_error) - 1) == 0)
        return 0;
    snprintf(q->last_error, sizeof(q->last_error), "%s", err);
    return 1;
}

static void queue_tick(uv_timer_t *t);

struct queue *
queue_new(uv_loop_t *loop, const struct config *cfg, struct rconn *reader, struct rconn *writer,
          queue_batch_cb *cb, void *arg)
{
    struct queue *q = calloc(1, sizeof(*q));

    if (q == NULL)
        return NULL;
    q->loop = loop;
    q->cfg = cfg;
    q->reader = reader;
    q->writer = writer;
    q->batch_cb = cb;
    q->batch_arg = arg;
    snprintf(q->stream, sizeof(q->stream), "%s" PROTO_KEY_JOBS, cfg->prefix);
    strcpy(q->reclaim_cursor, "0-0");
    uv_timer_init(loop, &q->tick);
    q->tick.data = q;
    /* Fast enough for short claim idle times in tests, cheap otherwise. */
    uv_timer_start(&q->tick, queue_tick, 250, 250);
    return q;
}

void
queue_set_ids(struct queue *q, queue_ids_fn *fn, void *arg)
{
    q->ids_fn = fn;
    q->ids_arg = arg;
}

void
queue_on_ready(struct queue *q, void (*cb)(void *arg), void *arg)
{
    q->ready_cb = cb;
    q->ready_arg = arg;
}

void
queue_free(struct queue *q)
{
    free(q);
}

static void
queue_check_stopped(struct queue *q)
{
    if (q->stopping && !q->reading && q->tick_closed && q->stopped_cb) {
        queue_stopped_cb *cb = q->stopped_cb;
        q->stopped_cb = NULL;
        cb(q->stopped_arg);
    }
}

static void
queue_group_reply(redisAsyncContext *ac, void *r, void *priv)
{
    struct queue *q = priv;
    redisReply *reply = r;

    (void)ac;
    q->reading = 0;
    if (reply == NULL) {
        queue_check_stopped(q);
        return; /* the reconnect brings us back */
    }
    if (reply->type == REDIS_REPLY_ERROR && strncmp(reply->str, "BUSYGROUP", 9) != 0) {
        if (queue_new_error(q, reply->str))
            log_err("queue: cannot create group %s on %s: %s (retrying)", q->cfg->group, q->stream,
                    reply->str);
        queue_check_stopped(q);
        return;
    }
    if (reply->type != REDIS_REPLY_ERROR)
        log_notice("queue: created consumer group %s on %s", q->cfg->group, q->stream);
    log_notice("queue: ready: reading %s as %s/%s", q->stream, q->cfg->group, q->cfg->consumer);
    q->group_ready = 1;
    if (q->ready_cb)
        q->ready_cb(q->ready_arg);
    queue_check_stopped(q);
    queue_read(q);
}

/*
 * MKSTREAM so the daemon may start before the first job; id 0 so jobs the
 * site queued before the group existed are not skipped.
 */
static void
queue_create_group(struct queue *q)
{
    const char *argv[] = {"XGROUP", "CREATE", q->stream, q->cfg->group, "0", "MKSTREAM"};

    if (rconn_command(q->reader, queue_group_reply, q, NARGS(argv), argv, NULL) == 0)
        q->reading = 1;
}

void
queue_reader_state(struct queue *q, int up)
{
    if (!up) {
        q->group_ready = 0;
        return;
    }
    if (!q->stopping && !q->reading)
        queue_create_group(q);
}

static const redisReply *
entry_field(const redisReply *fields, const char *name)
{
    if (fields == NULL || fields->type != REDIS_REPLY_ARRAY)
        return NULL;
    for (size_t i = 0; i + 1 < fields->elements; i += 2) {
        const redisReply *k = fields->element[i];
        if (k->type == REDIS_REPLY_STRING && strcmp(k->str, name) == 0)
            return fields->element[i + 1];
    }
    return NULL;
}

/* entries: [[id, [field, value, ...]], ...], from XREADGROUP or XAUTOCLAIM. */
static void
queue_deliver_entries(struct queue *q, const redisReply *entries, int reclaimed)
{
    struct queue_entry *batch;
    size_t n = 0;

    if (entries->type != REDIS_REPLY_ARRAY || entries->elements == 0)
        return;
    if ((batch = calloc(entries->elements, sizeof(*batch))) == NULL) {
        log_err("queue: out of memory for a batch of %zu", entries->elements);
        return; /* stays pending; reclaimed later */
    }
    for (size_t i = 0; i < entries->elements; i++) {
        const redisReply *e = entries->element[i];
        const redisReply *job;
        if (e->type != REDIS_REPLY_ARRAY || e->elements < 2 ||
            e->element[0]->type != REDIS_REPLY_STRING || e->element[0]->len > STREAM_ID_MAX)
            continue;
        memcpy(batch[n].id, e->element[0]->str, e->element[0]->len + 1);
        batch[n].reclaimed = reclaimed;
        job = entry_field(e->element[1], "job");
        if (job != NULL && job->type == REDIS_REPLY_STRING) {
            batch[n].payload = job->str;
            batch[n].len = job->len;
        }
        n++;
    }
    q->batch_cb(q->batch_arg, batch, n);
    free(batch);
}

/* Reply shape: [[stream, [[id, [field, value, ...]], ...]]], or nil. */
static void
queue_deliver(struct queue *q, const redisReply *reply)
{
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 1)
        return;
    if (reply->element[0]->type != REDIS_REPLY_ARRAY || reply->element[0]->elements < 2)
        return;
    queue_deliver_entries(q, reply->element[0]->element[1], 0);
}

static void
queue_read_reply(redisAsyncContext *ac, void *r, void *priv)
{
    struct queue *q = priv;
    redisReply *reply = r;

    (void)ac;
    q->reading = 0;
    if (reply == NULL) {
        queue_check_stopped(q);
        return;
    }
    if (reply->type == REDIS_REPLY_ERROR) {
        /* The stream or group was deleted under us: make it again. */
        if (strncmp(reply->str, "NOGROUP", 7) == 0) {
            log_warnx("queue: group %s vanished from %s; recreating it", q->cfg->group, q->stream);
            q->group_ready = 0;
            if (!q->stopping)
                queue_create_group(q);
        } else {
            if (queue_new_error(q, reply->str))
                log_err("queue: XREADGROUP failed: %s (retrying)", reply->str);
        }
        queue_check_stopped(q);
        return;
    }
    q->last_error[0] = '\0';
    if (reply->type == REDIS_REPLY_ARRAY)
        queue_deliver(q, reply);
    queue_check_stopped(q);
    queue_read(q);
}

static void
queue_read(struct queue *q)
{
    char count[16], block[16];
    int n;

    if (q->reading || q->stopping || !rconn_is_up(q->reader))
        return;
    /* A failed XGROUP CREATE (OOM, NOAUTH, ...) is retried from here. */
    if (!q->group_ready) {
        queue_create_group(q);
        return;
    }
    if (q->room <= 0)
        return;
    n = q->room < q->cfg->batch ? q->room : q->cfg->batch;
    snprintf(count, sizeof(count), "%d", n);
    snprintf(block, sizeof(block), "%d", q->cfg->block_ms);
    const char *argv[] = {"XREADGROUP", "GROUP", q->cfg->group, q->cfg->consumer, "COUNT", count,
                          "BLOCK",      block,   "STREAMS",     q->stream,        ">"};
    if (rconn_command(q->reader, queue_read_reply, q, NARGS(argv), argv, NULL) == 0)
        q->reading = 1;
}

void
queue_set_room(struct queue *q, int room)
{
    q->room = room;
    queue_read(q);
}

static void
queue_tick_closed(uv_handle_t *h)
{
    struct queue *q = h->data;

    q->tick_closed = 1;
    queue_check_stopped(q);
}

static void
queue_unblock_reply(redisAsyncContext *ac, void *r, void *priv)
{
    (void)ac;
    (void)r;
    (void)priv;
}

void
queue_stop(struct queue *q, queue_stopped_cb *cb, void *arg)
{
    char id[32];

    q->stopping = 1;
    q->stopped_cb = cb;
    q->stopped_arg = arg;
    uv_close((uv_handle_t *)&q->tick, queue_tick_closed);
    /*
     * Wake the blocked XREADGROUP now rather than wait out BLOCK: it then
     * returns what it has (possibly nothing) and no further read is made.
     */
    if (q->reading && rconn_is_up(q->reader)) {
        snprintf(id, sizeof(id), "%lld", rconn_client_id(q->reader));
        const char *argv[] = {"CLIENT", "UNBLOCK", id};
        rconn_command(q->writer, queue_unblock_reply, NULL, NARGS(argv), argv, NULL);
    }
    queue_check_stopped(q);
}

/* --- crash recovery ---------------------------------------------------- */

/*
 * XAUTOCLAIM reply (Redis 7): [next-cursor, [entries], [deleted ids]].
 * Entries deleted from the stream meanwhile are dropped from the PEL by
 * Redis itself and reported in the third element; nothing to do for them.
 */
static void
queue_reclaim_reply(redisAsyncContext *ac, void *r, void *priv)
{
    struct queue *q = priv;
    redisReply *reply = r;

    (void)ac;
    q->reclaiming = 0;
    if (reply == NULL)
        return;
    if (reply->type == REDIS_REPLY_ERROR) {
        if (strncmp(reply->str, "NOGROUP", 7) != 0)
            log_warnx("queue: XAUTOCLAIM failed: %s", reply->str);
        return;
    }
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 2)
        return;
    if (reply->element[0]->type == REDIS_REPLY_STRING)
        snprintf(q->reclaim_cursor, sizeof(q->reclaim_cursor), "%s", reply->element[0]->str);
    /* Stopping: what was taken stays pending for another instance to reclaim. */
    if (q->stopping)
        return;
    if (reply->element[1]->type == REDIS_REPLY_ARRAY && reply->element[1]->elements > 0) {
        log_notice("queue: reclaimed %zu job(s) idle over %d ms (their consumer stopped)",
                   reply->element[1]->elements, q->cfg->claim_idle_ms);
        queue_deliver_entries(q, reply->element[1], 1);
    }
}

void
queue_reclaim(struct queue *q)
{
    char idle[16], count[16];
    int n = q->room < q->cfg->batch ? q->room : q->cfg->batch;

    if (q->reclaiming || q->stopping || !q->group_ready || n <= 0 || !rconn_is_up(q->writer))
        return;
    snprintf(idle, sizeof(idle), "%d", q->cfg->claim_idle_ms);
    snprintf(count, sizeof(count), "%d", n);
    const char *argv[] = {"XAUTOCLAIM", q->stream,         q->cfg->group, q->cfg->consumer,
                          idle,         q->reclaim_cursor, "COUNT",       count};
    if (rconn_command(q->writer, queue_reclaim_reply, q, NARGS(argv), argv, NULL) == 0)
        q->reclaiming = 1;
}

/*
 * A live instance keeps its own pending entries young, so a short claim
 * idle time never lets another instance take a job that is only waiting
 * for its retry.  JUSTID leaves the delivery counter alone.
 */
void
queue_refresh(struct queue *q, const char **ids, size_t n)
{
    const char *argv[6 + 256];
    size_t i = 0;

    if (!rconn_is_up(q->writer))
        return;
    while (i < n) {
        int argc = 0;
        argv[argc++] = "XCLAIM";
        argv[argc++] = q->stream;
        argv[argc++] = q->cfg->group;
        argv[argc++] = q->cfg->consumer;
        argv[argc++] = "0";
        for (; i < n && argc < 5 + 256; i++)
            argv[argc++] = ids[i];
        argv[argc++] = "JUSTID";
        rconn_command(q->writer, NULL, NULL, argc, argv, NULL);
    }
}

/* Keep our pending entries young so no other instance takes them. */
static void
queue_refresh_ours(struct queue *q)
{
    const char *ids[1024];
    size_t n;

    if (q->ids_fn == NULL)
        return;
    /* In slices of what fits here; the rest waits for the next tick. */
    n = q->ids_fn(q->ids_arg, ids, sizeof(ids) / sizeof(ids[0]));
    if (n > 0)
        queue_refresh(q, ids, n);
}

/* The reclaim schedule: refresh every third of the claim idle time, reclaim every half. */
static void
queue_tick(uv_timer_t *t)
{
    struct queue *q = t->data;
    uint64_t now = uv_now(q->loop);
    uint64_t refresh_every = (uint64_t)q->cfg->claim_idle_ms / 3;
    uint64_t reclaim_every = (uint64_t)q->cfg->claim_idle_ms / 2;

    if (q->stopping)
        return;
    if (reclaim_every > 5000)
        reclaim_every = 5000;
    if (now - q->last_refresh >= refresh_every) {
        q->last_refresh = now;
        queue_refresh_ours(q);
    }
    if (now - q->last_reclaim >= reclaim_every) {
        q->last_reclaim = now;
        queue_reclaim(q);
    }
}

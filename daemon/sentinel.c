/*
 * sentinel.c: asking Redis Sentinel where the master is, and hearing when
 * it moves.
 *
 * Two kinds of connection to a sentinel, each a libuv TCP stream whose
 * replies hiredis's reader parses (the sentinels speak RESP; hiredis's
 * async context would bring its own reconnect-less life, which rconn
 * already works around once):
 *
 *   ASK    AUTH (if set), SENTINEL get-master-addr-by-name; one answer,
 *          then closed.  Each sentinel in turn, SENTINEL_ASK_TIMEOUT_MS
 *          each; the first to answer moves to the front of the list.
 *   WATCH  AUTH (if set), SUBSCRIBE +switch-master; kept open, and on
 *          failure opened again on the next sentinel a second later.
 *
 * A connection's life: RESOLVING (getaddrinfo) -> CONNECTING -> OPEN ->
 * closed; it is freed once its handles and its lookup are done, never
 * inside its own callbacks.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "buf.h"
#include "log.h"
#include "rconn.h"
#include "sentinel.h"

#define SENTINEL_WAITERS_MAX    8
#define SENTINEL_REWATCH_MS     1000
#define SENTINEL_REPLY_MAX_ARGS 4

enum sc_kind { SC_ASK, SC_WATCH };

struct sconn {
    struct sentinel *s;
    enum sc_kind kind;
    int pos;   /* ASK: its place in s->order */
    int which; /* the sentinel: an index into cfg->sentinels */
    int closing;
    int handles;    /* tcp and timer, while open */
    int gai_active; /* the lookup has not called back */
    int tcp_open;
    int authed; /* AUTH answered, or none sent */
    uv_getaddrinfo_t gai;
    uv_connect_t connect;
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_write_t wr;
    redisReader *reader;
    struct buf out; /* the commands, RESP */
    char in[4096];
};

struct sentinel_waiter {
    sentinel_resolved_cb *cb;
    void *arg;
};

struct sentinel {
    uv_loop_t *loop;
    const struct config *cfg;
    int order[SENTINELS_MAX]; /* indexes into cfg->sentinels, the last to answer first */
    struct sconn *ask, *watch;
    int watch_next; /* the sentinel to watch next */
    uv_timer_t rewatch;
    sentinel_moved_cb *moved_cb;
    void *moved_arg;
    struct sentinel_waiter waiters[SENTINEL_WAITERS_MAX];
    int nwaiters;
    char master_host[256];
    int master_port;
    char last_error[600];
    struct sentinel_stats stats;
    int live; /* connections not yet freed, and the rewatch timer */
    void (*closed_cb)(void *);
    void *closed_arg;
};

static void sconn_fail(struct sconn *sc, const char *why);
static void sentinel_ask_next(struct sentinel *s, int pos);
static void sentinel_watch_start(struct sentinel *s);
static void sentinel_rewatch(uv_timer_t *t);

static const struct sentinel_addr *
sconn_addr(const struct sconn *sc)
{
    return &sc->s->cfg->sentinels[sc->which];
}

/* --- a connection's life --------------------------------------------------- */

static void
sentinel_maybe_closed(struct sentinel *s)
{
    if (s->closed_cb != NULL && s->live == 0) {
        void (*cb)(void *) = s->closed_cb;
        s->closed_cb = NULL;
        cb(s->closed_arg);
    }
}

static void
sconn_maybe_free(struct sconn *sc)
{
    struct sentinel *s = sc->s;

    if (sc->handles > 0 || sc->gai_active)
        return;
    if (sc->reader)
        redisReaderFree(sc->reader);
    buf_free(&sc->out);
    free(sc);
    s->live--;
    sentinel_maybe_closed(s);
}

static void
sconn_handle_closed(uv_handle_t *h)
{
    struct sconn *sc = h->data;

    sc->handles--;
    sconn_maybe_free(sc);
}

/* Ends the connection; what it was for is the caller's to carry on. */
static void
sconn_close(struct sconn *sc)
{
    if (sc->closing)
        return;
    sc->closing = 1;
    if (sc->s->ask == sc)
        sc->s->ask = NULL;
    if (sc->s->watch == sc)
        sc->s->watch = NULL;
    uv_close((uv_handle_t *)&sc->timer, sconn_handle_closed);
    if (sc->tcp_open)
        uv_close((uv_handle_t *)&sc->tcp, sconn_handle_closed);
    if (sc->gai_active)
        uv_cancel((uv_req_t *)&sc->gai);
}

static void
sconn_timeout(uv_timer_t *t)
{
    sconn_fail(t->data, "no answer in time");
}

static int
sconn_queue(struct sconn *sc, int argc, const char **argv)
{
    char *cmd = NULL;
    size_t cap = 0, len = 0;

    if (rconn_format_command(&cmd, &cap, &len, argc, argv, NULL) < 0 || cmd == NULL) {
        free(cmd);
        return -1;
    }
    int rc = buf_append(&sc->out, cmd, len, 256, 0);

    free(cmd);
    return rc == 0 ? 0 : -1;
}

/* What this connection says first: AUTH if the sentinels want it, then its question. */
static int
sconn_commands(struct sconn *sc)
{
    const struct config *c = sc->s->cfg;

    sc->authed = *c->redis_sentinel_password == '\0';
    if (!sc->authed) {
        const char *auth[] = {"AUTH", c->redis_sentinel_password};
        if (sconn_queue(sc, NARGS(auth), auth) < 0)
            return -1;
    }
    if (sc->kind == SC_ASK) {
        const char *ask[] = {"SENTINEL", "get-master-addr-by-name", c->redis_master_name};
        return sconn_queue(sc, NARGS(ask), ask);
    }
    const char *sub[] = {"SUBSCRIBE", "+switch-master"};
    return sconn_queue(sc, NARGS(sub), sub);
}

/* pos: for ASK its place in s->order; for WATCH the sentinel itself. */
static struct sconn *
sconn_new(struct sentinel *s, enum sc_kind kind, int pos)
{
    struct sconn *sc = calloc(1, sizeof(*sc));

    if (sc == NULL)
        return NULL;
    sc->s = s;
    sc->kind = kind;
    sc->pos = pos;
    sc->which = kind == SC_ASK ? s->order[pos] : pos;
    if ((sc->reader = redisReaderCreate()) == NULL || sconn_commands(sc) < 0) {
        if (sc->reader)
            redisReaderFree(sc->reader);
        buf_free(&sc->out);
        free(sc);
        return NULL;
    }
    uv_timer_init(s->loop, &sc->timer);
    sc->timer.data = sc;
    sc->handles = 1;
    s->live++;
    return sc;
}

/* --- replies ------------------------------------------------------------- */

static void
sentinel_answer(struct sentinel *s, const char *host, int port, const char *err)
{
    struct sentinel_waiter w[SENTINEL_WAITERS_MAX];
    int n = s->nwaiters;

    /* Taken first: a waiter may ask again from its callback. */
    memcpy(w, s->waiters, sizeof(w[0]) * (size_t)n);
    s->nwaiters = 0;
    for (int i = 0; i < n; i++)
        w[i].cb(w[i].arg, host, port, err);
}

static int
parse_port(const char *text, int *port)
{
    char *end;
    long v = strtol(text, &end, 10);

    if (end == text || *end != '\0' || v <= 0 || v > 65535)
        return -1;
    *port = (int)v;
    return 0;
}

/* A host as a sentinel names one: an address or a name, nothing that could be more. */
static int
host_valid(const char *host, size_t hostlen)
{
    size_t n = strlen(host);

    return n > 0 && n < hostlen &&
           strspn(host, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.:-_") == n;
}

int
sentinel_parse_master(const redisReply *r, const char *name, char *host, size_t hostlen, int *port,
                      char *why, size_t whylen)
{
    if (r->type == REDIS_REPLY_NIL) {
        snprintf(why, whylen, "does not know a master named %s", name);
        return -1;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        snprintf(why, whylen, "refused: %s", r->str[0] ? r->str : "(no reason given)");
        return -1;
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
        r->element[0]->type != REDIS_REPLY_STRING || r->element[1]->type != REDIS_REPLY_STRING ||
        !host_valid(r->element[0]->str, hostlen) || parse_port(r->element[1]->str, port) < 0) {
        snprintf(why, whylen, "answered something that is not a host and a port");
        return -1;
    }
    snprintf(host, hostlen, "%s", r->element[0]->str);
    return 0;
}

int
sentinel_parse_switch(const char *text, const char *name, char *host, size_t hostlen, int *port)
{
    char who[129], addr[256], port_text[16], rest;

    if (sscanf(text, "%128s %*s %*s %255s %15s %c", who, addr, port_text, &rest) != 3 ||
        strcmp(who, name) != 0 || !host_valid(addr, hostlen) || parse_port(port_text, port) < 0)
        return -1;
    snprintf(host, hostlen, "%s", addr);
    return 0;
}

static void
sentinel_found(struct sconn *sc, const char *host, int port)
{
    struct sentinel *s = sc->s;
    const struct sentinel_addr *sa = sconn_addr(sc);

    if (strcmp(host, s->master_host) != 0 || port != s->master_port)
        log_notice("sentinel: master %s is at %s:%d (asked of %s:%d)", s->cfg->redis_master_name,
                   host, port, sa->host, sa->port);
    snprintf(s->master_host, sizeof(s->master_host), "%s", host);
    s->master_port = port;
    /* The client rules: the sentinel that answered is asked first next time. */
    memmove(&s->order[1], &s->order[0], sizeof(s->order[0]) * (size_t)sc->pos);
    s->order[0] = sc->which;
    sconn_close(sc);
    sentinel_answer(s, s->master_host, s->master_port, NULL);
}

static void
sconn_ask_reply(struct sconn *sc, const redisReply *r)
{
    char why[256], host[256];
    int port;

    if (sentinel_parse_master(r, sc->s->cfg->redis_master_name, host, sizeof(host), &port, why,
                              sizeof(why)) < 0)
        sconn_fail(sc, why);
    else
        sentinel_found(sc, host, port);
}

static void
sconn_switch_message(struct sconn *sc, const char *text)
{
    struct sentinel *s = sc->s;
    char host[256];
    int port;

    /* Other masters' switches, and anything unreadable, are not ours. */
    if (sentinel_parse_switch(text, s->cfg->redis_master_name, host, sizeof(host), &port) < 0)
        return;
    s->stats.switches++;
    log_notice("sentinel: +switch-master: master %s moved to %s:%d", s->cfg->redis_master_name,
               host, port);
    snprintf(s->master_host, sizeof(s->master_host), "%s", host);
    s->master_port = port;
    if (s->moved_cb)
        s->moved_cb(s->moved_arg, host, port);
}

static void
sconn_watch_reply(struct sconn *sc, const redisReply *r)
{
    const char *kind;

    if (r->type == REDIS_REPLY_ERROR) {
        sconn_fail(sc, r->str);
        return;
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 3 ||
        r->element[0]->type != REDIS_REPLY_STRING)
        return;
    kind = r->element[0]->str;
    if (strcmp(kind, "subscribe") == 0) {
        const struct sentinel_addr *sa = sconn_addr(sc);
        uv_timer_stop(&sc->timer);
        log_info("sentinel: watching %s:%d for +switch-master", sa->host, sa->port);
    } else if (strcmp(kind, "message") == 0 && r->element[2]->type == REDIS_REPLY_STRING) {
        sconn_switch_message(sc, r->element[2]->str);
    }
}

static void
sconn_reply(struct sconn *sc, const redisReply *r)
{
    if (!sc->authed) {
        if (r->type == REDIS_REPLY_ERROR) {
            char why[256];
            snprintf(why, sizeof(why), "AUTH refused (OTPD_REDIS_SENTINEL_PASSWORD): %s", r->str);
            sconn_fail(sc, why);
            return;
        }
        sc->authed = 1;
        return;
    }
    if (sc->kind == SC_ASK)
        sconn_ask_reply(sc, r);
    else
        sconn_watch_reply(sc, r);
}

/* --- I/O ------------------------------------------------------------------- */

static void
sconn_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct sconn *sc = h->data;

    (void)suggested;
    *buf = uv_buf_init(sc->in, sizeof(sc->in));
}

static void
sconn_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    struct sconn *sc = stream->data;
    void *reply;

    if (sc->closing || nread == 0)
        return;
    if (nread < 0) {
        sconn_fail(sc, nread == UV_EOF ? "closed the connection" : uv_strerror((int)nread));
        return;
    }
    if (redisReaderFeed(sc->reader, buf->base, (size_t)nread) != REDIS_OK) {
        sconn_fail(sc, "unreadable reply");
        return;
    }
    while (!sc->closing) {
        if (redisReaderGetReply(sc->reader, &reply) != REDIS_OK) {
            sconn_fail(sc, "unreadable reply");
            return;
        }
        if (reply == NULL)
            return;
        sconn_reply(sc, reply);
        freeReplyObject(reply);
    }
}

static void
sconn_written(uv_write_t *req, int status)
{
    struct sconn *sc = req->data;

    if (status < 0 && !sc->closing)
        sconn_fail(sc, uv_strerror(status));
}

static void
sconn_connected(uv_connect_t *req, int status)
{
    struct sconn *sc = req->data;
    uv_buf_t b = uv_buf_init(sc->out.data, (unsigned)sc->out.len);

    if (sc->closing)
        return;
    if (status < 0) {
        sconn_fail(sc, uv_strerror(status));
        return;
    }
    if (sc->kind == SC_WATCH)
        uv_tcp_keepalive(&sc->tcp, 1, 30); /* a quiet subscription still notices a dead peer */
    sc->wr.data = sc;
    if (uv_read_start((uv_stream_t *)&sc->tcp, sconn_alloc, sconn_read) != 0 ||
        uv_write(&sc->wr, (uv_stream_t *)&sc->tcp, &b, 1, sconn_written) != 0)
        sconn_fail(sc, "cannot use the connection");
}

static void
sconn_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *ai)
{
    struct sconn *sc = req->data;

    sc->gai_active = 0;
    if (sc->closing) {
        uv_freeaddrinfo(ai);
        sconn_maybe_free(sc);
        return;
    }
    if (status < 0) {
        sconn_fail(sc, uv_strerror(status));
        return;
    }
    uv_tcp_init(sc->s->loop, &sc->tcp);
    sc->tcp.data = sc;
    sc->tcp_open = 1;
    sc->handles++;
    sc->connect.data = sc;
    if (uv_tcp_connect(&sc->connect, &sc->tcp, ai->ai_addr, sconn_connected) != 0)
        sconn_fail(sc, "cannot connect");
    uv_freeaddrinfo(ai);
}

static int
sconn_start(struct sconn *sc)
{
    const struct sentinel_addr *sa = sconn_addr(sc);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    char port[8];

    snprintf(port, sizeof(port), "%d", sa->port);
    sc->gai.data = sc;
    uv_timer_start(&sc->timer, sconn_timeout, SENTINEL_ASK_TIMEOUT_MS, 0);
    if (uv_getaddrinfo(sc->s->loop, &sc->gai, sconn_resolved, sa->host, port, &hints) != 0)
        return -1;
    sc->gai_active = 1;
    return 0;
}

/* --- asking and watching --------------------------------------------------- */

static void
sconn_fail(struct sconn *sc, const char *why)
{
    struct sentinel *s = sc->s;
    const struct sentinel_addr *sa = sconn_addr(sc);
    enum sc_kind kind = sc->kind;
    int pos = sc->pos, which = sc->which;

    snprintf(s->last_error, sizeof(s->last_error), "sentinel %s:%d: %s", sa->host, sa->port, why);
    log_debug("%s", s->last_error);
    sconn_close(sc);
    if (s->closed_cb != NULL)
        return;
    if (kind == SC_ASK) {
        sentinel_ask_next(s, pos + 1);
    } else {
        log_warnx("%s; watching the next sentinel for +switch-master", s->last_error);
        s->watch_next = (which + 1) % s->cfg->nsentinels;
        uv_timer_start(&s->rewatch, sentinel_rewatch, SENTINEL_REWATCH_MS, 0);
    }
}

static void
sentinel_ask_next(struct sentinel *s, int pos)
{
    char why[800];

    for (; pos < s->cfg->nsentinels; pos++) {
        struct sconn *sc = sconn_new(s, SC_ASK, pos);
        if (sc == NULL) {
            snprintf(s->last_error, sizeof(s->last_error), "out of memory");
            break;
        }
        s->ask = sc;
        if (sconn_start(sc) == 0)
            return;
        sconn_close(sc);
    }
    s->stats.failures++;
    snprintf(why, sizeof(why), "no sentinel knows the master %s (last: %s)",
             s->cfg->redis_master_name, s->last_error);
    sentinel_answer(s, NULL, 0, why);
}

static void
sentinel_watch_start(struct sentinel *s)
{
    struct sconn *sc;

    if (s->closed_cb != NULL || s->watch != NULL)
        return;
    if ((sc = sconn_new(s, SC_WATCH, s->watch_next)) == NULL) {
        uv_timer_start(&s->rewatch, sentinel_rewatch, SENTINEL_REWATCH_MS, 0);
        return;
    }
    s->watch = sc;
    if (sconn_start(sc) < 0)
        sconn_fail(sc, "cannot look the address up");
}

static void
sentinel_rewatch(uv_timer_t *t)
{
    sentinel_watch_start(t->data);
}

/* --- the module's face ----------------------------------------------------- */

struct sentinel *
sentinel_new(uv_loop_t *loop, const struct config *cfg)
{
    struct sentinel *s = calloc(1, sizeof(*s));

    if (s == NULL)
        return NULL;
    s->loop = loop;
    s->cfg = cfg;
    for (int i = 0; i < cfg->nsentinels; i++)
        s->order[i] = i;
    uv_timer_init(loop, &s->rewatch);
    s->rewatch.data = s;
    s->live = 1;
    return s;
}

void
sentinel_watch(struct sentinel *s, sentinel_moved_cb *cb, void *arg)
{
    s->moved_cb = cb;
    s->moved_arg = arg;
    sentinel_watch_start(s);
}

int
sentinel_resolve(struct sentinel *s, sentinel_resolved_cb *cb, void *arg)
{
    if (s->nwaiters == SENTINEL_WAITERS_MAX || s->closed_cb != NULL)
        return -1;
    s->waiters[s->nwaiters].cb = cb;
    s->waiters[s->nwaiters++].arg = arg;
    s->stats.asked++;
    if (s->ask == NULL)
        sentinel_ask_next(s, 0);
    return 0;
}

void
sentinel_cancel(struct sentinel *s, void *arg)
{
    int j = 0;

    for (int i = 0; i < s->nwaiters; i++)
        if (s->waiters[i].arg != arg)
            s->waiters[j++] = s->waiters[i];
    s->nwaiters = j;
}

const struct sentinel_stats *
sentinel_stats(const struct sentinel *s)
{
    return &s->stats;
}

static void
sentinel_timer_closed(uv_handle_t *h)
{
    struct sentinel *s = h->data;

    s->live--;
    sentinel_maybe_closed(s);
}

void
sentinel_close(struct sentinel *s, void (*cb)(void *arg), void *arg)
{
    s->closed_cb = cb;
    s->closed_arg = arg;
    s->nwaiters = 0;
    if (s->ask)
        sconn_close(s->ask);
    if (s->watch)
        sconn_close(s->watch);
    uv_close((uv_handle_t *)&s->rewatch, sentinel_timer_closed);
}

void
sentinel_free(struct sentinel *s)
{
    free(s);
}

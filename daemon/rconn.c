/*
 * rconn.c: a self-healing hiredis async connection on libuv.
 *
 * States: DOWN -> (timer) [RESOLVING ->] CONNECTING -> (setup replies) UP
 * -> DOWN ...; CLOSING -> CLOSED ends it.  RESOLVING asks the sentinels
 * where the master is (sentinel.c), on every connect.  The context pointer
 * is only valid in CONNECTING, UP and CLOSING; hiredis frees it after the
 * connect-failure or disconnect callback.
 *
 * The setup also asks ROLE and refuses a server that is not the master; a
 * READONLY reply (the server became a replica) ends the connection once
 * its pending replies are in, so the next connect asks the sentinels again.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "rconn.h"
#include "sentinel.h"

enum rconn_state { RC_DOWN, RC_RESOLVING, RC_CONNECTING, RC_UP, RC_CLOSING, RC_CLOSED };

#define RC_BACKOFF_MIN_MS  100
#define RC_BACKOFF_MAX_MS  5000
#define RC_CONNECT_TIMEOUT 5000

struct rconn_ev {
    redisAsyncContext *ac;
    uv_poll_t poll;
    int events;
};

struct rconn {
    uv_loop_t *loop;
    const struct redis_addr *addr;
    struct sentinel *sentinel; /* NULL: addr's host and port are the server */
    char host[256];            /* the server of this connection */
    int port;
    char name[32];
    redisAsyncContext *ac;
    enum rconn_state state;
    uv_timer_t retry;
    uv_timer_t watchdog;
    int handles_open;
    int backoff_ms;
    int pending;
    uint64_t progress_at;
    int reply_deadline_ms;
    long long client_id;
    char last_error[300];
    char refusal[300]; /* the last setup refusal said, until the connection is up */
    int refused;       /* this connection's setup was refused: the drop is no news */
    char *fmt;         /* the command being formatted; reused */
    size_t fmtlen, fmtcap;
    rconn_state_cb *state_cb;
    void *state_arg;
    rconn_closed_cb *closed_cb;
    void *closed_arg;
};

struct rconn_req {
    struct rconn *rc;
    redisCallbackFn *cb;
    void *priv;
};

static void rconn_connect(struct rconn *rc);
static void rconn_schedule(struct rconn *rc);
static void rconn_finish_close(struct rconn *rc);
static void rconn_drop(struct rconn *rc, const char *why);

/* --- the libuv adapter: like hiredis's, but socket errors reach hiredis -- */

static void
ev_poll_cb(uv_poll_t *h, int status, int events)
{
    struct rconn_ev *ev = h->data;

    /*
     * On an error libuv stops polling; letting hiredis read makes it see
     * the error (or EOF) and tear the connection down, which the stock
     * 0.14 adapter never does.
     */
    if (status < 0)
        events = UV_READABLE;
    if (ev->ac != NULL && (events & UV_READABLE))
        redisAsyncHandleRead(ev->ac);
    if (ev->ac != NULL && (events & UV_WRITABLE))
        redisAsyncHandleWrite(ev->ac);
}

static void
ev_update(struct rconn_ev *ev)
{
    if (ev->events)
        uv_poll_start(&ev->poll, ev->events, ev_poll_cb);
    else
        uv_poll_stop(&ev->poll);
}

static void
ev_add_read(void *p)
{
    struct rconn_ev *ev = p;
    ev->events |= UV_READABLE;
    ev_update(ev);
}

static void
ev_del_read(void *p)
{
    struct rconn_ev *ev = p;
    ev->events &= ~UV_READABLE;
    ev_update(ev);
}

static void
ev_add_write(void *p)
{
    struct rconn_ev *ev = p;
    ev->events |= UV_WRITABLE;
    ev_update(ev);
}

static void
ev_del_write(void *p)
{
    struct rconn_ev *ev = p;
    ev->events &= ~UV_WRITABLE;
    ev_update(ev);
}

static void
ev_closed(uv_handle_t *h)
{
    free(h->data);
}

static void
ev_cleanup(void *p)
{
    struct rconn_ev *ev = p;

    ev->ac = NULL; /* hiredis is freeing the context */
    uv_close((uv_handle_t *)&ev->poll, ev_closed);
}

static int
ev_attach(redisAsyncContext *ac, uv_loop_t *loop)
{
    struct rconn_ev *ev = calloc(1, sizeof(*ev));

    if (ev == NULL)
        return -1;
    if (uv_poll_init(loop, &ev->poll, ac->c.fd) != 0) {
        free(ev);
        return -1;
    }
    ev->ac = ac;
    ev->poll.data = ev;
    ac->ev.data = ev;
    ac->ev.addRead = ev_add_read;
    ac->ev.delRead = ev_del_read;
    ac->ev.addWrite = ev_add_write;
    ac->ev.delWrite = ev_del_write;
    ac->ev.cleanup = ev_cleanup;
    return 0;
}

/* --- connection life --------------------------------------------------- */

const char *
rconn_reply_error(const redisReply *reply)
{
    if (reply == NULL)
        return "connection lost";
    if (reply->type == REDIS_REPLY_ERROR)
        return reply->str;
    return "unexpected reply";
}

static void
rconn_set_down(struct rconn *rc, const char *why)
{
    int was_up = rc->state == RC_UP;

    rc->ac = NULL;
    rc->pending = 0;
    if (rc->state == RC_CLOSING) {
        rc->state = RC_CLOSED;
        rconn_finish_close(rc);
        return;
    }
    rc->state = RC_DOWN;
    /* Say it once per outage, not once per retry; a refused setup has said why already. */
    if (rc->refused)
        rc->refused = 0;
    else if (was_up || strcmp(rc->last_error, why) != 0)
        log_warnx("redis %s: %s; reconnecting", rc->name, why);
    snprintf(rc->last_error, sizeof(rc->last_error), "%s", why);
    if (was_up && rc->state_cb)
        rc->state_cb(rc, 0, rc->state_arg);
    if (rc->state == RC_DOWN)
        rconn_schedule(rc);
}

static void
rconn_on_connect(const redisAsyncContext *ac, int status)
{
    struct rconn *rc = ac->data;

    if (status != REDIS_OK)
        rconn_set_down(rc, ac->errstr[0] ? ac->errstr : "connect failed");
}

static void
rconn_on_disconnect(const redisAsyncContext *ac, int status)
{
    struct rconn *rc = ac->data;

    rconn_set_down(rc, status == REDIS_OK ? "disconnected" : ac->errstr);
}

/* A write refused because the server is a replica now (also from inside a script). */
static int
rconn_is_readonly(const redisReply *reply)
{
    return reply != NULL && reply->type == REDIS_REPLY_ERROR &&
           (strncmp(reply->str, "READONLY", 8) == 0 || strstr(reply->str, "-READONLY") != NULL ||
            strstr(reply->str, "read only replica") != NULL);
}

static void
rconn_reply(redisAsyncContext *ac, void *r, void *privdata)
{
    struct rconn_req *req = privdata;
    struct rconn *rc = req->rc;

    if (rc->pending > 0)
        rc->pending--;
    rc->progress_at = uv_now(rc->loop);
    if (req->cb)
        req->cb(ac, r, req->priv);
    free(req);
    /* The pending replies still come in; then the connection ends and finds the master. */
    if (rconn_is_readonly(r) && rc->state == RC_UP && !(ac->c.flags & REDIS_DISCONNECTING)) {
        log_warnx("redis %s: %s:%d answered READONLY: it is a replica now; reconnecting%s",
                  rc->name, rc->host, rc->port,
                  rc->sentinel ? " to the master the sentinels name" : "");
        rc->backoff_ms = 0;
        redisAsyncDisconnect(ac);
    }
}

static char *
put_uint(char *p, size_t v)
{
    char tmp[24];
    int n = 0;

    do
        tmp[n++] = (char)('0' + v % 10);
    while ((v /= 10) != 0);
    while (n > 0)
        *p++ = tmp[--n];
    return p;
}

/*
 * RESP by hand into one reused buffer: hiredis 0.14 formats every argument
 * through sdscatfmt and several reallocations, which the profile showed as
 * a fifth of otpd's own CPU.  The format is four lines of the protocol:
 * "*argc\r\n" then "$len\r\n<bytes>\r\n" per argument.
 */
int
rconn_format_command(char **buf, size_t *cap, size_t *len, int argc, const char **argv,
                     const size_t *argvlen)
{
    size_t need = 16, alen;
    char *p;

    for (int i = 0; i < argc; i++)
        need += (argvlen ? argvlen[i] : strlen(argv[i])) + 32;
    if (need > *cap) {
        char *nb = realloc(*buf, need);
        if (nb == NULL)
            return -1;
        *buf = nb;
        *cap = need;
    }
    p = *buf;
    *p++ = '*';
    p = put_uint(p, (size_t)argc);
    *p++ = '\r';
    *p++ = '\n';
    for (int i = 0; i < argc; i++) {
        alen = argvlen ? argvlen[i] : strlen(argv[i]);
        *p++ = '$';
        p = put_uint(p, alen);
        *p++ = '\r';
        *p++ = '\n';
        memcpy(p, argv[i], alen);
        p += alen;
        *p++ = '\r';
        *p++ = '\n';
    }
    *len = (size_t)(p - *buf);
    /*
     * hiredis 0.14 compares a command's name with "subscribe\r\n" and the
     * like over 11 bytes, past the end of a short one ("ROLE"): what it reads
     * there must be defined (valgrind), and need left 16 bytes for it.
     */
    memset(p, 0, *cap - *len < 16 ? *cap - *len : 16);
    return 0;
}

static int
rconn_send(struct rconn *rc, redisCallbackFn *cb, void *priv, int argc, const char **argv,
           const size_t *argvlen)
{
    struct rconn_req *req = malloc(sizeof(*req));

    if (req == NULL)
        return -1;
    req->rc = rc;
    req->cb = cb;
    req->priv = priv;
    if (rconn_format_command(&rc->fmt, &rc->fmtcap, &rc->fmtlen, argc, argv, argvlen) < 0 ||
        redisAsyncFormattedCommand(rc->ac, rconn_reply, req, rc->fmt, rc->fmtlen) != REDIS_OK) {
        free(req);
        return -1;
    }
    if (rc->pending++ == 0)
        rc->progress_at = uv_now(rc->loop);
    return 0;
}

/* The last setup reply (CLIENT ID) makes the connection usable. */
static void
rconn_setup_reply(redisAsyncContext *ac, void *r, void *priv)
{
    struct rconn *rc = priv;
    redisReply *reply = r;

    /* After a refusal the rest of the setup is moot: never "up" on the way out. */
    if (reply == NULL || rc->state != RC_CONNECTING || (ac->c.flags & REDIS_DISCONNECTING))
        return;
    if (reply->type == REDIS_REPLY_ERROR) {
        /* Wrong password or db: retried until it is fixed; said once per distinct refusal. */
        if (strncmp(rc->refusal, reply->str, sizeof(rc->refusal) - 1) != 0)
            log_err("redis %s: setup refused: %s (retrying)", rc->name, reply->str);
        snprintf(rc->refusal, sizeof(rc->refusal), "%s", reply->str);
        snprintf(rc->last_error, sizeof(rc->last_error), "%s", reply->str);
        rc->refused = 1;
        redisAsyncDisconnect(ac);
        return;
    }
    if (reply->type == REDIS_REPLY_INTEGER) {
        rc->client_id = reply->integer;
        rc->state = RC_UP;
        rc->backoff_ms = 0;
        rc->last_error[0] = '\0';
        rc->refusal[0] = '\0';
        if (rc->sentinel)
            log_notice("redis %s: connected to the master at %s:%d (client id %lld)", rc->name,
                       rc->host, rc->port, rc->client_id);
        else
            log_info("redis %s: connected (client id %lld)", rc->name, rc->client_id);
        if (rc->state_cb)
            rc->state_cb(rc, 1, rc->state_arg);
    }
}

/*
 * The server must say it is the master: a replica refuses every write.
 * Under Sentinel an error counts as a refusal; without, a server that
 * cannot answer ROLE (a proxy, a user without it) is taken at its word.
 */
static void
rconn_role_reply(redisAsyncContext *ac, void *r, void *priv)
{
    struct rconn *rc = priv;
    redisReply *reply = r;
    const char *role;

    if (reply == NULL || rc->state != RC_CONNECTING || (ac->c.flags & REDIS_DISCONNECTING))
        return;
    if (reply->type == REDIS_REPLY_ERROR && rc->sentinel == NULL)
        return;
    role = reply->type == REDIS_REPLY_ARRAY && reply->elements > 0 &&
                   reply->element[0]->type == REDIS_REPLY_STRING
               ? reply->element[0]->str
               : "?";
    if (strcmp(role, "master") == 0)
        return;
    /* Under Sentinel: a failover in progress, the sentinels have not caught up yet. */
    snprintf(rc->last_error, sizeof(rc->last_error), "%s:%d is not the master (ROLE %s)", rc->host,
             rc->port, reply->type == REDIS_REPLY_ERROR ? reply->str : role);
    if (strncmp(rc->refusal, rc->last_error, sizeof(rc->refusal) - 1) != 0)
        log_warnx("redis %s: %s; %s", rc->name, rc->last_error,
                  rc->sentinel ? "asking the sentinels again"
                               : "retrying (does REDIS_URL name a replica?)");
    snprintf(rc->refusal, sizeof(rc->refusal), "%s", rc->last_error);
    rc->refused = 1;
    redisAsyncDisconnect(ac);
}

static void
rconn_queue_setup(struct rconn *rc)
{
    const struct redis_addr *a = rc->addr;
    char db[16], cname[64];

    if (a->password) {
        if (a->username) {
            const char *argv[] = {"AUTH", a->username, a->password};
            rconn_send(rc, rconn_setup_reply, rc, NARGS(argv), argv, NULL);
        } else {
            const char *argv[] = {"AUTH", a->password};
            rconn_send(rc, rconn_setup_reply, rc, NARGS(argv), argv, NULL);
        }
    }
    if (a->db != 0) {
        snprintf(db, sizeof(db), "%d", a->db);
        const char *argv[] = {"SELECT", db};
        rconn_send(rc, rconn_setup_reply, rc, NARGS(argv), argv, NULL);
    }
    const char *role[] = {"ROLE"};
    rconn_send(rc, rconn_role_reply, rc, NARGS(role), role, NULL);
    snprintf(cname, sizeof(cname), "otpd-%s", rc->name);
    const char *setname[] = {"CLIENT", "SETNAME", cname};
    rconn_send(rc, rconn_setup_reply, rc, NARGS(setname), setname, NULL);
    const char *id[] = {"CLIENT", "ID"};
    rconn_send(rc, rconn_setup_reply, rc, NARGS(id), id, NULL);
}

static void
rconn_connect_server(struct rconn *rc)
{
    redisAsyncContext *ac;

    if (rc->addr->path)
        ac = redisAsyncConnectUnix(rc->addr->path);
    else
        ac = redisAsyncConnect(rc->host, rc->port);
    if (ac == NULL) {
        rconn_set_down(rc, "out of memory");
        return;
    }
    if (ac->err) {
        char why[128];
        snprintf(why, sizeof(why), "%s", ac->errstr);
        redisAsyncFree(ac);
        rconn_set_down(rc, why);
        return;
    }
    if (ev_attach(ac, rc->loop) < 0) {
        redisAsyncFree(ac);
        rconn_set_down(rc, "cannot poll socket");
        return;
    }
    ac->data = rc;
    rc->ac = ac;
    rc->state = RC_CONNECTING;
    rc->pending = 0;
    rc->progress_at = uv_now(rc->loop);
    /* TCP only: on a unix socket the TCP_KEEPIDLE option fails the connection. */
    if (rc->addr->path == NULL)
        redisEnableKeepAlive(&ac->c);
    /* The connect callback needs the adapter attached first (hiredis 0.14). */
    redisAsyncSetConnectCallback(ac, rconn_on_connect);
    redisAsyncSetDisconnectCallback(ac, rconn_on_disconnect);
    rconn_queue_setup(rc);
}

static void
rconn_resolved(void *arg, const char *host, int port, const char *err)
{
    struct rconn *rc = arg;

    if (rc->state != RC_RESOLVING)
        return;
    if (host == NULL) {
        rconn_set_down(rc, err);
        return;
    }
    snprintf(rc->host, sizeof(rc->host), "%s", host);
    rc->port = port;
    rconn_connect_server(rc);
}

static void
rconn_connect(struct rconn *rc)
{
    if (rc->sentinel == NULL) {
        rconn_connect_server(rc);
        return;
    }
    rc->state = RC_RESOLVING;
    if (sentinel_resolve(rc->sentinel, rconn_resolved, rc) < 0)
        rconn_set_down(rc, "cannot ask the sentinels");
}

static void
rconn_retry_cb(uv_timer_t *t)
{
    struct rconn *rc = t->data;

    if (rc->state == RC_DOWN)
        rconn_connect(rc);
}

static void
rconn_schedule(struct rconn *rc)
{
    /* Capped exponential backoff, never a tight loop against a dead server. */
    rc->backoff_ms = rc->backoff_ms ? rc->backoff_ms * 2 : RC_BACKOFF_MIN_MS;
    if (rc->backoff_ms > RC_BACKOFF_MAX_MS)
        rc->backoff_ms = RC_BACKOFF_MAX_MS;
    uv_timer_start(&rc->retry, rconn_retry_cb, (uint64_t)rc->backoff_ms, 0);
}

/*
 * hiredis 0.14 has no command timeouts: a server that stops answering (or
 * a socket error the poll never reported) would hang us forever.
 */
static void
rconn_watchdog_cb(uv_timer_t *t)
{
    struct rconn *rc = t->data;
    uint64_t idle = uv_now(rc->loop) - rc->progress_at;
    int limit = rc->state == RC_CONNECTING ? RC_CONNECT_TIMEOUT : rc->reply_deadline_ms;

    if (rc->ac != NULL && rc->state != RC_DOWN && rc->pending > 0 && idle > (uint64_t)limit) {
        log_warnx("redis %s: no reply for %llu ms; dropping the connection", rc->name,
                  (unsigned long long)idle);
        snprintf(rc->last_error, sizeof(rc->last_error), "timed out");
        rconn_drop(rc, "timed out");
    }
}

/*
 * Frees the context now, running every pending callback with NULL.
 * hiredis 0.14 marks an async context connected only on its first I/O
 * event and calls the disconnect callback only for one that got there, so
 * for a connect still in progress rconn goes down (or closed) here.
 */
static void
rconn_drop(struct rconn *rc, const char *why)
{
    int connected = (rc->ac->c.flags & REDIS_CONNECTED) != 0;

    redisAsyncFree(rc->ac);
    if (!connected)
        rconn_set_down(rc, why);
}

struct rconn *
rconn_new(uv_loop_t *loop, const struct redis_addr *addr, const char *name, int reply_deadline_ms,
          rconn_state_cb *cb, void *arg)
{
    struct rconn *rc = calloc(1, sizeof(*rc));

    if (rc == NULL)
        return NULL;
    rc->loop = loop;
    rc->addr = addr;
    snprintf(rc->name, sizeof(rc->name), "%s", name);
    rc->reply_deadline_ms = reply_deadline_ms;
    if (addr->host != NULL)
        snprintf(rc->host, sizeof(rc->host), "%s", addr->host);
    rc->port = addr->port;
    rc->state_cb = cb;
    rc->state_arg = arg;
    rc->state = RC_DOWN;
    uv_timer_init(loop, &rc->retry);
    uv_timer_init(loop, &rc->watchdog);
    rc->retry.data = rc;
    rc->watchdog.data = rc;
    rc->handles_open = 2;
    return rc;
}

void
rconn_start(struct rconn *rc)
{
    uv_timer_start(&rc->watchdog, rconn_watchdog_cb, 500, 500);
    rconn_connect(rc);
}

void
rconn_set_sentinel(struct rconn *rc, struct sentinel *s)
{
    rc->sentinel = s;
}

void
rconn_master_moved(struct rconn *rc, const char *host, int port)
{
    if (rc->state == RC_DOWN) {
        /* Not waiting out a long backoff for a master that is there now. */
        rc->backoff_ms = 0;
        uv_timer_start(&rc->retry, rconn_retry_cb, 0, 0);
        return;
    }
    if ((rc->state != RC_UP && rc->state != RC_CONNECTING) ||
        (strcmp(rc->host, host) == 0 && rc->port == port))
        return;
    /* The old master may be gone: its pending replies would only come at the deadline. */
    log_notice("redis %s: leaving %s:%d for the new master %s:%d", rc->name, rc->host, rc->port,
               host, port);
    rc->backoff_ms = 0;
    snprintf(rc->last_error, sizeof(rc->last_error), "the master moved");
    rconn_drop(rc, "the master moved");
}

int
rconn_is_up(const struct rconn *rc)
{
    return rc->state == RC_UP;
}

long long
rconn_client_id(const struct rconn *rc)
{
    return rc->client_id;
}

const char *
rconn_name(const struct rconn *rc)
{
    return rc->name;
}

int
rconn_command(struct rconn *rc, redisCallbackFn *cb, void *priv, int argc, const char **argv,
              const size_t *argvlen)
{
    if (rc->state != RC_UP)
        return -1;
    return rconn_send(rc, cb, priv, argc, argv, argvlen);
}

static void
rconn_handle_closed(uv_handle_t *h)
{
    struct rconn *rc = h->data;

    if (--rc->handles_open == 0 && rc->closed_cb) {
        rconn_closed_cb *cb = rc->closed_cb;
        rc->closed_cb = NULL;
        cb(rc->closed_arg);
    }
}

static void
rconn_finish_close(struct rconn *rc)
{
    uv_close((uv_handle_t *)&rc->retry, rconn_handle_closed);
    uv_close((uv_handle_t *)&rc->watchdog, rconn_handle_closed);
}

void
rconn_close(struct rconn *rc, int force, rconn_closed_cb *cb, void *arg)
{
    int had_context = rc->ac != NULL;

    uv_timer_stop(&rc->retry);
    if (rc->sentinel != NULL)
        sentinel_cancel(rc->sentinel, rc);
    rc->state = RC_CLOSING;
    /* The timers close once the context is gone; then the caller hears. */
    rc->closed_cb = cb;
    rc->closed_arg = arg;
    if (had_context && force)
        rconn_drop(rc, "closed");
    else if (had_context)
        redisAsyncDisconnect(rc->ac);
    else
        rconn_set_down(rc, "closed");
}

void
rconn_free(struct rconn *rc)
{
    free(rc->fmt);
    free(rc);
}

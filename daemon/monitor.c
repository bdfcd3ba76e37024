/*
 * monitor.c: what an operator watches.  Every OTPD_HEARTBEAT_MS it writes
 * the heartbeat hash (expiring after three periods), reads the backlog and
 * dead-letter lengths, and tells systemd its status.  A 250 ms probe timer
 * measures how late the loop runs timers: the loop lag.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include "log.h"
#include "monitor.h"
#include "protocol.h"

#define PROBE_MS 250

struct monitor {
    uv_loop_t *loop;
    const struct config *cfg;
    struct rconn *w;
    struct deliveries *d;
    struct provider_set *providers;
    uv_timer_t beat, probe, watchdog;
    int open_handles;
    uint64_t probe_due;  /* uv_hrtime() ns the probe should fire at */
    uint64_t lag_max_ns; /* worst this period */
    char key[256], stream[128], dead[128];
    char host[128];
    struct monitor_gauges g;
    int ready_sent;
    monitor_closed_cb *closed_cb;
    void *closed_arg;
};

static void
monitor_probe_cb(uv_timer_t *t)
{
    struct monitor *m = t->data;
    uint64_t now = uv_hrtime();

    if (now > m->probe_due && now - m->probe_due > m->lag_max_ns)
        m->lag_max_ns = now - m->probe_due;
    m->probe_due = now + (uint64_t)PROBE_MS * 1000000;
}

static void
monitor_len_reply(redisAsyncContext *ac, void *r, void *priv)
{
    redisReply *reply = r;

    (void)ac;
    if (reply && reply->type == REDIS_REPLY_INTEGER)
        *(int64_t *)priv = reply->integer;
}

static void
monitor_pending_reply(redisAsyncContext *ac, void *r, void *priv)
{
    redisReply *reply = r;
    struct monitor *m = priv;

    (void)ac;
    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY || reply->elements < 2 ||
        reply->element[0]->type != REDIS_REPLY_INTEGER)
        return;
    m->g.pending = reply->element[0]->integer;
    m->g.oldest_pending_ms = 0;
    /* The summary's smallest id: "<ms>-<seq>", the time the site added the oldest one. */
    if (m->g.pending > 0 && reply->element[1]->type == REDIS_REPLY_STRING) {
        long long added = atoll(reply->element[1]->str), now = (long long)otpd_now_ms();
        if (added > 0 && now > added)
            m->g.oldest_pending_ms = now - added;
    }
}

static void
monitor_notify_status(struct monitor *m)
{
    const struct delivery_stats *s = delivery_stats(m->d);

    sd_notifyf(0,
               "STATUS=%d in flight, backlog %lld, %llu sent, %llu failed, %llu expired, "
               "%llu rejected; redis %s",
               delivery_inflight(m->d), (long long)m->g.backlog, (unsigned long long)s->sent,
               (unsigned long long)s->failed, (unsigned long long)s->expired,
               (unsigned long long)s->rejected, rconn_is_up(m->w) ? "up" : "down");
}

static void
monitor_beat(struct monitor *m)
{
    const struct delivery_stats *s = delivery_stats(m->d);
    char f[16][32], prov[256], period[16];
    int i = 0;

    m->g.loop_lag_ms = m->lag_max_ns / 1000000;
    m->lag_max_ns = 0;
    monitor_notify_status(m);
    if (!rconn_is_up(m->w))
        return;
    provider_set_describe(m->providers, uv_now(m->loop), prov, sizeof(prov));
    snprintf(f[i++], 32, "%ld", (long)getpid());
    snprintf(f[i++], 32, "%lld", (long long)m->g.started_ms);
    snprintf(f[i++], 32, "%lld", (long long)otpd_now_ms());
    snprintf(f[i++], 32, "%d", delivery_inflight(m->d));
    snprintf(f[i++], 32, "%llu", (unsigned long long)s->claimed);
    snprintf(f[i++], 32, "%llu", (unsigned long long)s->sent);
    snprintf(f[i++], 32, "%llu", (unsigned long long)s->failed);
    snprintf(f[i++], 32, "%llu", (unsigned long long)s->expired);
    snprintf(f[i++], 32, "%llu", (unsigned long long)s->rejected);
    snprintf(f[i++], 32, "%llu", (unsigned long long)s->retries);
    snprintf(f[i++], 32, "%llu", (unsigned long long)s->duplicates);
    snprintf(f[i++], 32, "%llu", (unsigned long long)s->reclaimed);
    snprintf(f[i++], 32, "%llu", (unsigned long long)m->g.loop_lag_ms);
    snprintf(f[i++], 32, "%llu", (unsigned long long)s->rate_limited);
    snprintf(f[i++], 32, "%llu", (unsigned long long)s->budget_alerts);
    const char *hset[] = {"HSET",          m->key,  "version",      OTPD_VERSION,
                          "host",          m->host, "consumer",     m->cfg->consumer,
                          "pid",           f[0],    "started_ms",   f[1],
                          "updated_ms",    f[2],    "inflight",     f[3],
                          "claimed",       f[4],    "sent",         f[5],
                          "failed",        f[6],    "expired",      f[7],
                          "rejected",      f[8],    "retries",      f[9],
                          "duplicates",    f[10],   "reclaimed",    f[11],
                          "loop_lag_ms",   f[12],   "redis",        "up",
                          "providers",     prov,    "rate_limited", f[13],
                          "budget_alerts", f[14]};
    rconn_command(m->w, NULL, NULL, NARGS(hset), hset, NULL);
    snprintf(period, sizeof(period), "%d", 3 * m->cfg->heartbeat_ms);
    const char *expire[] = {"PEXPIRE", m->key, period};
    rconn_command(m->w, NULL, NULL, NARGS(expire), expire, NULL);
    const char *xlen[] = {"XLEN", m->stream};
    rconn_command(m->w, monitor_len_reply, &m->g.backlog, NARGS(xlen), xlen, NULL);
    const char *dlen[] = {"XLEN", m->dead};
    rconn_command(m->w, monitor_len_reply, &m->g.dead_letters, NARGS(dlen), dlen, NULL);
    const char *pend[] = {"XPENDING", m->stream, m->cfg->group};
    rconn_command(m->w, monitor_pending_reply, m, NARGS(pend), pend, NULL);
}

static void
monitor_beat_cb(uv_timer_t *t)
{
    monitor_beat(t->data);
}

static void
monitor_watchdog_cb(uv_timer_t *t)
{
    (void)t;
    /* Only a running loop gets here: a stalled one is restarted by systemd. */
    sd_notify(0, "WATCHDOG=1");
}

struct monitor *
monitor_new(uv_loop_t *loop, const struct config *cfg, struct rconn *writer, struct deliveries *d,
            struct provider_set *providers)
{
    struct monitor *m = calloc(1, sizeof(*m));

    if (m == NULL)
        return NULL;
    m->loop = loop;
    m->cfg = cfg;
    m->w = writer;
    m->d = d;
    m->providers = providers;
    snprintf(m->key, sizeof(m->key), "%s" PROTO_KEY_INSTANCE, cfg->prefix, cfg->consumer);
    snprintf(m->stream, sizeof(m->stream), "%s" PROTO_KEY_JOBS, cfg->prefix);
    snprintf(m->dead, sizeof(m->dead), "%s" PROTO_KEY_DEAD, cfg->prefix);
    gethostname(m->host, sizeof(m->host) - 1);
    m->g.started_ms = otpd_now_ms();
    uv_timer_init(loop, &m->beat);
    uv_timer_init(loop, &m->probe);
    uv_timer_init(loop, &m->watchdog);
    m->beat.data = m->probe.data = m->watchdog.data = m;
    m->open_handles = 3;
    return m;
}

void
monitor_start(struct monitor *m)
{
    uint64_t usec = 0;

    m->probe_due = uv_hrtime() + (uint64_t)PROBE_MS * 1000000;
    uv_timer_start(&m->probe, monitor_probe_cb, PROBE_MS, PROBE_MS);
    uv_timer_start(&m->beat, monitor_beat_cb, (uint64_t)m->cfg->heartbeat_ms,
                   (uint64_t)m->cfg->heartbeat_ms);
    /* systemd asks for a ping at least every WATCHDOG_USEC; we ping at half. */
    if (sd_watchdog_enabled(0, &usec) > 0 && usec >= 2000) {
        uint64_t ms = usec / 2000;
        uv_timer_start(&m->watchdog, monitor_watchdog_cb, ms, ms);
        log_info("systemd watchdog: pinging every %llu ms", (unsigned long long)ms);
    }
}

void
monitor_ready(struct monitor *m)
{
    if (m->ready_sent)
        return;
    m->ready_sent = 1;
    sd_notify(0, "READY=1");
    monitor_beat(m); /* the heartbeat appears at once, not after a period */
}

/* Ready before the writer was up, or back after an outage: the heartbeat now, not a period late. */
void
monitor_writer_up(struct monitor *m)
{
    if (m->ready_sent)
        monitor_beat(m);
}

static void
monitor_closed(uv_handle_t *h)
{
    struct monitor *m = h->data;

    if (--m->open_handles == 0 && m->closed_cb)
        m->closed_cb(m->closed_arg);
}

void
monitor_stop(struct monitor *m, monitor_closed_cb *cb, void *arg)
{
    m->closed_cb = cb;
    m->closed_arg = arg;
    sd_notify(0, "STOPPING=1");
    /* A clean exit removes its heartbeat; only a dead instance's expires. */
    if (rconn_is_up(m->w)) {
        const char *del[] = {"DEL", m->key};
        rconn_command(m->w, NULL, NULL, NARGS(del), del, NULL);
    }
    uv_close((uv_handle_t *)&m->beat, monitor_closed);
    uv_close((uv_handle_t *)&m->probe, monitor_closed);
    uv_close((uv_handle_t *)&m->watchdog, monitor_closed);
}

void
monitor_free(struct monitor *m)
{
    free(m);
}

const struct monitor_gauges *
monitor_gauges(const struct monitor *m)
{
    return &m->g;
}

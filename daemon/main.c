/*
 * main.c: command line, start-up and the shutdown sequence.
 *
 * Start-up order: configuration (fatal on error), logging, libsodium,
 * providers, Redis connections, then the loop.  Everything after uv_run()
 * is event-driven; a failure at run time is logged and retried, never
 * fatal.
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include <curl/curl.h>
#include <sodium.h>
#include <uv.h>

#include "config.h"
#include "delivery.h"
#include "dlr.h"
#include "fallback.h"
#include "fraud.h"
#include "httpd.h"
#include "ledger.h"
#include "log.h"
#include "metrics.h"
#include "monitor.h"
#include "provider.h"
#include "queue.h"
#include "rconn.h"
#include "sentinel.h"

struct otpd {
    uv_loop_t loop;
    struct config cfg;
    struct provider_set *providers;
    struct rconn *reader, *writer;
    struct sentinel *sentinel; /* NULL unless OTPD_REDIS_SENTINELS */
    struct ledger *ledger;
    struct queue *queue;
    struct deliveries *deliveries;
    struct monitor *monitor;
    struct fraud *fraud;
    struct fallbacks *fallbacks;
    struct httpd *httpd;
    struct dlr *dlr;
    uv_signal_t sigterm, sigint, sighup;
    int stopping;
    int closing; /* parts still closing */
    int forced;
    struct delivery_stats totals;
    const char *path; /* configuration file, for reloads */
};

static void otpd_shutdown(struct otpd *o);

static void
usage(FILE *out)
{
    fprintf(out, "usage: otpd [-c FILE] [--check-config] [--gen-key] [--version]\n"
                 "\n"
                 "  -c, --config FILE   KEY=VALUE file (.env syntax); environment variables\n"
                 "                      of the same names override it (default: $OTPD_CONFIG)\n"
                 "  -n, --check-config  print the effective configuration, secrets redacted,\n"
                 "                      and exit non-zero if it is not valid\n"
                 "      --gen-key       print a fresh OTPD_HASH_KEY and exit\n"
                 "      --config-example  print a documented configuration file\n"
                 "  -V, --version       print the version and exit\n");
}

static const char *
env_lookup(const char *name)
{
    return getenv(name);
}

static void
gen_key(void)
{
    unsigned char key[32];
    char hex[65];

    randombytes_buf(key, sizeof(key));
    sodium_bin2hex(hex, sizeof(hex), key, sizeof(key));
    printf("OTPD_HASH_KEY=%s\n", hex);
    sodium_memzero(key, sizeof(key));
    sodium_memzero(hex, sizeof(hex));
}

/* --- connection state fan-out ------------------------------------------ */

static void
on_reader_state(struct rconn *rc, int up, void *arg)
{
    struct otpd *o = arg;

    (void)rc;
    queue_reader_state(o->queue, up);
}

static void
on_writer_state(struct rconn *rc, int up, void *arg)
{
    struct otpd *o = arg;

    (void)rc;
    delivery_writer_state(o->deliveries, up);
    if (up) {
        monitor_writer_up(o->monitor);
        fraud_writer_up(o->fraud);
    }
}

static void
on_http(void *arg, const struct httpd_request *req, struct httpd_response *resp)
{
    struct otpd *o = arg;
    struct httpd_stats http;

    if (dlr_handle(o->dlr, req, resp))
        return;
    if (strcmp(req->path, "/metrics") != 0) {
        resp->status = 404;
        return;
    }
    if (strcmp(req->method, "GET") != 0) {
        resp->status = 405;
        return;
    }
    httpd_get_stats(o->httpd, &http);
    struct metrics_redis redis = {
        .fallbacks = fallbacks_stats(o->fallbacks),
        .reader_up = rconn_is_up(o->reader),
        .writer_up = rconn_is_up(o->writer),
        .ledger = ledger_stats(o->ledger),
        .sentinel = o->sentinel ? sentinel_stats(o->sentinel) : NULL,
    };
    resp->body =
        metrics_render(&o->cfg, o->deliveries, monitor_gauges(o->monitor), fraud_view(o->fraud),
                       o->providers, &http, &redis, uv_now(&o->loop), &resp->len);
    resp->status = resp->body ? 200 : 500;
    resp->content_type = "text/plain; version=0.0.4; charset=utf-8";
}

/* A failover: both connections leave the old master now, not at their deadlines. */
static void
on_master_moved(void *arg, const char *host, int port)
{
    struct otpd *o = arg;

    if (o->stopping)
        return;
    rconn_master_moved(o->writer, host, port);
    rconn_master_moved(o->reader, host, port);
}

static void
on_queue_ready(void *arg)
{
    struct otpd *o = arg;

    monitor_ready(o->monitor);
}

/* --- shutdown: stop claiming, drain, close in order -------------------- */

static void
on_part_closed(void *arg)
{
    struct otpd *o = arg;

    if (--o->closing > 0)
        return;
    /* Last of the async parts: what remains are our own handles. */
    o->totals = *delivery_stats(o->deliveries);
    delivery_free(o->deliveries);
    o->deliveries = NULL;
    uv_close((uv_handle_t *)&o->sigterm, NULL);
    uv_close((uv_handle_t *)&o->sigint, NULL);
    uv_close((uv_handle_t *)&o->sighup, NULL);
}

static void
on_drained(void *arg, int handed_back)
{
    struct otpd *o = arg;

    if (handed_back > 0)
        log_warnx("shutdown: %d job(s) unfinished after %d ms; left pending for another "
                  "instance to reclaim",
                  handed_back, o->cfg.shutdown_timeout_ms);
    /* Unfinished jobs' Redis callbacks run now, with NULL, before they go. */
    /* Receipts' lookups end before the providers they use. */
    dlr_close(o->dlr, on_part_closed, o);
    ledger_close(o->ledger, on_part_closed, o);
    rconn_close(o->reader, 1, on_part_closed, o);
    rconn_close(o->writer, handed_back > 0 || o->forced, on_part_closed, o);
    if (o->sentinel)
        sentinel_close(o->sentinel, on_part_closed, o);
    if (handed_back > 0)
        delivery_abandon(o->deliveries);
    provider_set_close(o->providers, on_part_closed, o);
}

static void
on_queue_stopped(void *arg)
{
    struct otpd *o = arg;

    delivery_drain(o->deliveries, o->forced ? 0 : o->cfg.shutdown_timeout_ms, on_drained, o);
}

static void
otpd_shutdown(struct otpd *o)
{
    o->stopping = 1;
    /* monitor (and httpd) now; reader, writer and providers after the drain */
    o->closing = 8 + (o->httpd != NULL) + (o->sentinel != NULL);
    monitor_stop(o->monitor, on_part_closed, o);
    fraud_close(o->fraud, on_part_closed, o);
    fallbacks_close(o->fallbacks, on_part_closed, o);
    if (o->httpd)
        httpd_close(o->httpd, on_part_closed, o);
    log_notice("shutting down: %d job(s) in flight, waiting up to %d ms",
               delivery_inflight(o->deliveries), o->cfg.shutdown_timeout_ms);
    queue_stop(o->queue, on_queue_stopped, o);
}

/*
 * SIGHUP: read the file and environment again; an invalid result changes
 * nothing.  Requests already in flight finish with what they were sent
 * with; the next ones use the new values (credential rotation).
 */
static void
otpd_reload(struct otpd *o)
{
    struct config next;
    char err[512];
    int n;

    config_init(&next);
    if (config_load(&next, o->path, env_lookup, err, sizeof(err)) < 0) {
        log_err("reload: %s; keeping the running configuration", err);
        config_free(&next);
        return;
    }
    n = config_reload(&o->cfg, &next);
    config_free(&next);
    log_init(log_level_parse(o->cfg.log_level));
    provider_set_reload(o->providers, &o->cfg);
    ledger_reload(o->ledger);
    log_notice("reload: configuration re-read from %s: %d change(s) applied",
               o->path ? o->path : "the environment", n);
}

static void
on_signal(uv_signal_t *h, int signum)
{
    struct otpd *o = h->data;

    if (signum == SIGHUP) {
        otpd_reload(o);
        return;
    }
    if (!o->stopping) {
        otpd_shutdown(o);
    } else if (!o->forced) {
        log_warnx("second signal: not waiting for in-flight jobs");
        o->forced = 1;
    }
}

/* --- start-up ----------------------------------------------------------- */

static void
warn_at_start(void *arg, const char *text)
{
    (void)arg;
    log_warnx("WARNING: %s", text);
}

/*
 * Descriptors are what a connection flood takes first.  systemd's default
 * soft limit is 1,024 whatever the hard limit: raise ours to the hard limit,
 * then check that the HTTP clients' cap still leaves room for Redis, every
 * provider connection and curl's resolver.
 */
static void
raise_fd_limit(const struct config *cfg)
{
    struct rlimit rl;
    rlim_t need;

    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            getrlimit(RLIMIT_NOFILE, &rl);
    }
    need = (rlim_t)cfg->http_max_clients + (rlim_t)provider_conns_needed(cfg) + 64;
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < need)
        log_warnx("open files limit %llu is below the %llu that OTPD_HTTP_MAX_CLIENTS, the "
                  "providers' connections and Redis may need; raise LimitNOFILE or lower "
                  "OTPD_HTTP_MAX_CLIENTS",
                  (unsigned long long)rl.rlim_cur, (unsigned long long)need);
    else
        log_info("open files limit %llu (%d for HTTP clients)", (unsigned long long)rl.rlim_cur,
                 cfg->http_max_clients);
}

static void
otpd_start(struct otpd *o)
{
    char err[512], url[512];
    struct config *cfg = &o->cfg;

    if (uv_loop_init(&o->loop) != 0)
        fatalx("cannot create the event loop");
    if ((o->providers = provider_set_open(&o->loop, cfg, err, sizeof(err))) == NULL)
        fatalx("providers: %s", err);
    o->reader =
        rconn_new(&o->loop, &cfg->redis, "reader", cfg->block_ms + 5000, on_reader_state, o);
    o->writer = rconn_new(&o->loop, &cfg->redis, "writer", 10000, on_writer_state, o);
    if (cfg->nsentinels > 0 && o->reader && o->writer) {
        if ((o->sentinel = sentinel_new(&o->loop, cfg)) == NULL)
            fatalx("out of memory at start-up");
        rconn_set_sentinel(o->reader, o->sentinel);
        rconn_set_sentinel(o->writer, o->sentinel);
    }
    o->ledger = ledger_new(&o->loop, cfg, o->writer);
    o->deliveries = delivery_new(&o->loop, cfg, o->ledger, o->providers);
    o->queue = queue_new(&o->loop, cfg, o->reader, o->writer, delivery_batch, o->deliveries);
    if (!o->reader || !o->writer || !o->ledger || !o->deliveries || !o->queue)
        fatalx("out of memory at start-up");
    queue_set_ids(o->queue, delivery_stream_ids, o->deliveries);
    delivery_set_queue(o->deliveries, o->queue);
    if ((o->monitor = monitor_new(&o->loop, cfg, o->writer, o->deliveries, o->providers)) == NULL)
        fatalx("out of memory at start-up");
    if ((o->fraud = fraud_new(&o->loop, cfg, o->writer)) == NULL ||
        (o->fallbacks = fallbacks_new(&o->loop, o->ledger)) == NULL)
        fatalx("out of memory at start-up");
    queue_on_ready(o->queue, on_queue_ready, o);
    if ((o->dlr = dlr_new(&o->loop, cfg, o->ledger, o->providers)) == NULL)
        fatalx("out of memory at start-up");
    delivery_set_dlr(o->deliveries, o->dlr);

    uv_signal_init(&o->loop, &o->sigterm);
    uv_signal_init(&o->loop, &o->sigint);
    uv_signal_init(&o->loop, &o->sighup);
    o->sigterm.data = o->sigint.data = o->sighup.data = o;
    uv_signal_start(&o->sigterm, on_signal, SIGTERM);
    uv_signal_start(&o->sigint, on_signal, SIGINT);
    uv_signal_start(&o->sighup, on_signal, SIGHUP);

    log_notice("otpd %s starting: redis %s, stream %sjobs, group %s, consumer %s, provider %s, "
               "up to %d in flight",
               OTPD_VERSION, config_redis_url_redacted(cfg, url, sizeof(url)), cfg->prefix,
               cfg->group, cfg->consumer, cfg->provider_default, cfg->max_inflight);
    config_warnings(cfg, warn_at_start, NULL);
    raise_fd_limit(cfg);
    if (*cfg->metrics_addr) {
        if ((o->httpd = httpd_new(&o->loop, cfg->metrics_addr, cfg->http_max_clients, on_http, o,
                                  err, sizeof(err))) == NULL)
            fatalx("OTPD_METRICS_ADDR: %s", err);
        log_notice("metrics: http://%s/metrics", cfg->metrics_addr);
    }
    monitor_start(o->monitor);
    if (o->sentinel) {
        log_notice("redis: master %s, asked of %d sentinel(s)", cfg->redis_master_name,
                   cfg->nsentinels);
        sentinel_watch(o->sentinel, on_master_moved, o);
    }
    if (cfg->redis_wait_replicas > 0)
        log_notice("redis: codes are texted only once %d replica(s) have their record (WAIT, "
                   "up to %d ms)",
                   cfg->redis_wait_replicas, cfg->redis_wait_timeout_ms);
    rconn_start(o->writer);
    rconn_start(o->reader);
}

static void
otpd_cleanup(struct otpd *o)
{
    queue_free(o->queue);
    monitor_free(o->monitor);
    ledger_free(o->ledger);
    rconn_free(o->reader);
    rconn_free(o->writer);
    fraud_free(o->fraud); /* after the writer: its callbacks name it */
    fallbacks_free(o->fallbacks);
    if (o->sentinel)
        sentinel_free(o->sentinel);
    if (uv_loop_close(&o->loop) != 0)
        log_warnx("event loop closed with handles still open");
    sodium_munlock(o->cfg.hash_key, sizeof(o->cfg.hash_key));
    config_free(&o->cfg);
    curl_global_cleanup();
}

int
main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"config", required_argument, NULL, 'c'},
        {"check-config", no_argument, NULL, 'n'},
        {"gen-key", no_argument, NULL, 'k'},
        {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},
        {"config-example", no_argument, NULL, 'E'},
        {"print-limits-script", no_argument, NULL, 'L'},
        {NULL, 0, NULL, 0},
    };
    const char *path = getenv("OTPD_CONFIG");
    int check = 0, ch;
    char err[512];
    struct otpd o;
    struct rlimit nocore = {0, 0};

    memset(&o, 0, sizeof(o));
    while ((ch = getopt_long(argc, argv, "c:nVh", longopts, NULL)) != -1) {
        switch (ch) {
        case 'c':
            path = optarg;
            break;
        case 'n':
            check = 1;
            break;
        case 'k':
            if (sodium_init() < 0)
                fatalx("libsodium failed to initialise");
            gen_key();
            return 0;
        case 'E':
            config_print_example(stdout);
            return 0;
        case 'L': /* the web app's client must run this very script */
            fputs(lua_limits, stdout);
            return 0;
        case 'V':
            printf("otpd %s\n", OTPD_VERSION);
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind != argc) {
        usage(stderr);
        return 2;
    }
    if (sodium_init() < 0)
        fatalx("libsodium failed to initialise");
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        fatalx("libcurl failed to initialise");
    if (path && *path == '\0')
        path = NULL;
    o.path = path;
    config_init(&o.cfg);
    if (config_load(&o.cfg, path, env_lookup, err, sizeof(err)) < 0) {
        fprintf(stderr, "otpd: configuration error: %s\n", err);
        config_free(&o.cfg);
        return 1;
    }
    if (check) {
        config_print(&o.cfg, stdout);
        printf("configuration OK\n");
        config_free(&o.cfg);
        curl_global_cleanup();
        return 0;
    }
    log_init(log_level_parse(o.cfg.log_level));
    /* Codes and keys live in this process: keep them out of core files and swap. */
    setrlimit(RLIMIT_CORE, &nocore);
    sodium_mlock(o.cfg.hash_key, sizeof(o.cfg.hash_key));
    signal(SIGPIPE, SIG_IGN); /* hiredis writes with write(2) */

    otpd_start(&o);
    uv_run(&o.loop, UV_RUN_DEFAULT);
    log_notice("stopped: %llu claimed, %llu sent, %llu failed, %llu expired, %llu rejected",
               (unsigned long long)o.totals.claimed, (unsigned long long)o.totals.sent,
               (unsigned long long)o.totals.failed, (unsigned long long)o.totals.expired,
               (unsigned long long)o.totals.rejected);
    otpd_cleanup(&o);
    return 0;
}

/*
 * test_delivery.c: the delivery state machine on a real libuv loop against
 * a real redis-server, wired as daemon/main.c's otpd_start() wires it.
 *
 * Each test starts its own redis-server on a unix socket in a temporary
 * directory, adds jobs with a plain hiredis connection as the web app
 * would (XADD otpd:jobs * job {json}), starts the providers, the two Redis
 * connections, the ledger, the deliveries and the queue, and runs the loop
 * until every entry has reached DONE.  delivery_set_observer() records
 * every transition, so each entry's exact path through the states is
 * asserted, and then what the ledger wrote: the job's status record, its
 * events, the dead letters, the stream's pending entries.  Each test ends
 * with main.c's shutdown sequence and uv_loop_close() == 0, so a handle a
 * module forgets to close fails the test (libuv's MAKE_VALGRIND_HAPPY).
 *
 * Without redis-server on PATH every test is skipped, saying why.  The
 * observer only records; assertions follow uv_run, as in libuv's tests.
 */
#include <setjmp.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <curl/curl.h>
#include <hiredis/hiredis.h>
#include <sodium.h>
#include <uv.h>

#include "config.h"
#include "delivery.h"
#include "ledger.h"
#include "log.h"
#include "otpd.h"
#include "provider.h"
#include "queue.h"
#include "rconn.h"
#include "redis_server.h"
#include "run_until.h"

#define HASH_KEY     "fe1ab53ccdf61b29f349ed3b1df9a31956eff94b7ce788c1c5c9a71d9029a8e8"
#define MAX_STEPS    1024 /* transitions recorded per test */
#define MAX_PATHS    4    /* entries sharing one job id */
#define PATH_MAX_LEN 4096

static const char *redis_bin; /* NULL: every test skips */

/* One transition, as the observer heard it. */
struct step {
    char id[JOB_ID_MAX + 1];
    char from[16];
    char to[16];
};

struct fx {
    uv_loop_t loop;
    uv_timer_t deadline; /* bounds every wait, so a hang is a failure */
    int expired;
    /* the daemon's parts, as struct otpd holds them */
    struct config cfg;
    struct provider_set *providers;
    struct rconn *reader, *writer;
    struct ledger *ledger;
    struct deliveries *deliveries;
    struct queue *queue;
    int closing;     /* parts still closing */
    int closed;      /* all of them: delivery_free() ran */
    int handed_back; /* from the drain; -1 before it */
    struct delivery_stats totals;
    /* what the observer recorded */
    struct step steps[MAX_STEPS];
    int nsteps, dropped, dones;
    /* redis-server and the web app's connection to it */
    struct test_redis srv; /* its unix socket only */
    redisContext *plain;
};

/* --- redis-server (redis_server.c) ------------------------------------------ */

/* Started with the web app's plain connection to it. */
static void
redis_start(struct fx *f)
{
    struct timeval tv = {2, 0};

    test_redis_start(&f->srv);
    f->plain = redisConnectUnixWithTimeout(f->srv.sock, tv);
    assert_non_null(f->plain);
    assert_int_equal(f->plain->err, 0);
}

static void
redis_kill(struct fx *f)
{
    if (f->plain != NULL) {
        redisFree(f->plain);
        f->plain = NULL;
    }
    test_redis_kill(&f->srv);
}

/* --- the web app's side: plain synchronous commands --------------------- */

/*
 * One command, in hiredis's format (each %s one argument); the caller
 * frees the reply.  A NULL reply fails the test.
 */
static redisReply *plain_vcmd(struct fx *f, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));
static redisReply *plain_cmd(struct fx *f, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static long long int_cmd(struct fx *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static redisReply *
plain_vcmd(struct fx *f, const char *fmt, va_list ap)
{
    redisReply *r = redisvCommand(f->plain, fmt, ap);

    if (r == NULL)
        fail_msg("redis: %s", f->plain->errstr);
    return r;
}

static redisReply *
plain_cmd(struct fx *f, const char *fmt, ...)
{
    va_list ap;
    redisReply *r;

    va_start(ap, fmt);
    r = plain_vcmd(f, fmt, ap);
    va_end(ap);
    return r;
}

/* A command answering an integer, or a number as a string (HGET). */
static long long
int_cmd(struct fx *f, const char *fmt, ...)
{
    va_list ap;
    redisReply *r;
    long long n = 0;

    va_start(ap, fmt);
    r = plain_vcmd(f, fmt, ap);
    va_end(ap);
    if (r->type == REDIS_REPLY_INTEGER)
        n = r->integer;
    else if (r->type == REDIS_REPLY_STRING)
        n = atoll(r->str);
    else
        fail_msg("redis: %s: neither an integer nor a string (type %d)", fmt, r->type);
    freeReplyObject(r);
    return n;
}

/* XADD otpd:jobs * job {json}; the entry's stream id into id. */
static void
add_job(struct fx *f, const char *json, char id[STREAM_ID_MAX + 1])
{
    redisReply *r = plain_cmd(f, "XADD otpd:jobs * job %s", json);

    assert_int_equal(r->type, REDIS_REPLY_STRING);
    assert_true(r->len <= STREAM_ID_MAX);
    if (id != NULL)
        memcpy(id, r->str, r->len + 1);
    freeReplyObject(r);
}

/* The field of otpd:job:{id}, "" if absent. */
static void
job_field(struct fx *f, const char *id, const char *field, char *out, size_t len)
{
    redisReply *r = plain_cmd(f, "HGET otpd:job:%s %s", id, field);

    out[0] = '\0';
    if (r->type == REDIS_REPLY_STRING)
        snprintf(out, len, "%s", r->str);
    else
        assert_int_equal(r->type, REDIS_REPLY_NIL);
    freeReplyObject(r);
}

static void
expect_field(struct fx *f, const char *id, const char *field, const char *want)
{
    char got[512];

    job_field(f, id, field, got, sizeof(got));
    if (strcmp(got, want) != 0)
        fail_msg("otpd:job:%s %s is \"%s\", expected \"%s\"", id, field, got, want);
}

/* Entries read by the group and not yet acknowledged. */
static long long
pending(struct fx *f)
{
    redisReply *r = plain_cmd(f, "XPENDING otpd:jobs otpd");
    long long n;

    assert_int_equal(r->type, REDIS_REPLY_ARRAY);
    assert_true(r->elements >= 1);
    assert_int_equal(r->element[0]->type, REDIS_REPLY_INTEGER);
    n = r->element[0]->integer;
    freeReplyObject(r);
    return n;
}

static const char *
entry_value(const redisReply *fields, const char *name)
{
    for (size_t i = 0; i + 1 < fields->elements; i += 2)
        if (strcmp(fields->element[i]->str, name) == 0)
            return fields->element[i + 1]->str;
    return "";
}

/* How many entries of stream key have field a equal to va and b to vb. */
static int
stream_count(struct fx *f, const char *key, const char *a, const char *va, const char *b,
             const char *vb)
{
    redisReply *r = plain_cmd(f, "XRANGE %s - +", key);
    int n = 0;

    assert_int_equal(r->type, REDIS_REPLY_ARRAY);
    for (size_t i = 0; i < r->elements; i++) {
        const redisReply *fields = r->element[i]->element[1];
        if (strcmp(entry_value(fields, a), va) == 0 && strcmp(entry_value(fields, b), vb) == 0)
            n++;
    }
    freeReplyObject(r);
    return n;
}

/* --- the observer and the paths --------------------------------------- */

static void
on_transition(void *arg, const char *job_id, const char *from, const char *to)
{
    struct fx *f = arg;
    struct step *s;

    if (strcmp(to, "DONE") == 0)
        f->dones++;
    /* The waits check their condition after each loop turn: end this one now. */
    uv_stop(&f->loop);
    if (f->nsteps == MAX_STEPS) {
        f->dropped++;
        return;
    }
    s = &f->steps[f->nsteps++];
    snprintf(s->id, sizeof(s->id), "%s", job_id);
    snprintf(s->from, sizeof(s->from), "%s", from);
    snprintf(s->to, sizeof(s->to), "%s", to);
}

/*
 * The path of the nth entry (from 0, in the order they were taken) that
 * carried this job id, as "CLAIMED > SENDING > ...": a transition from ""
 * starts an entry's path, any other continues the oldest unfinished path
 * of the id that stands in its from state, and one that continues none
 * fails the test.  Two entries of one id standing in the same state are
 * interchangeable from there on, so this pairing gives every entry's path
 * whatever order their transitions interleave in.  Returns how many
 * entries the id had.
 */
static int
job_path(const struct fx *f, const char *id, int nth, char *out, size_t len)
{
    char paths[MAX_PATHS][PATH_MAX_LEN];
    const char *at[MAX_PATHS];
    int n = 0;

    assert_int_equal(f->dropped, 0);
    for (int i = 0; i < f->nsteps; i++) {
        const struct step *s = &f->steps[i];
        int k;
        if (strcmp(s->id, id) != 0)
            continue;
        if (s->from[0] == '\0') {
            assert_true(n < MAX_PATHS);
            snprintf(paths[n], sizeof(paths[n]), "%s", s->to);
            at[n++] = s->to;
            continue;
        }
        for (k = 0; k < n; k++)
            if (strcmp(at[k], s->from) == 0 && strcmp(at[k], "DONE") != 0)
                break;
        if (k == n)
            fail_msg("job %s: transition %s -> %s continues no path", id, s->from, s->to);
        size_t used = strlen(paths[k]);
        assert_true(used + strlen(s->to) + 4 < sizeof(paths[k]));
        snprintf(paths[k] + used, sizeof(paths[k]) - used, " > %s", s->to);
        at[k] = s->to;
    }
    if (out != NULL) {
        assert_true(nth < n);
        snprintf(out, len, "%s", paths[nth]);
    }
    return n;
}

/* For the test's output: a run of retries is shown as "(BACKOFF > SENDING) xN". */
static void
print_path(const char *id, const char *path)
{
    static const char retry[] = " > BACKOFF > SENDING";
    const char *run = strstr(path, retry), *end;
    int n = 0;

    if (run == NULL) {
        print_message("  %s: \"\" > %s\n", id, path);
        return;
    }
    for (end = run; strncmp(end, retry, sizeof(retry) - 1) == 0; end += sizeof(retry) - 1)
        n++;
    print_message("  %s: \"\" > %.*s > (BACKOFF > SENDING) x%d%s\n", id, (int)(run - path), path, n,
                  end);
}

static void
expect_path(const struct fx *f, const char *id, int nth, const char *want)
{
    char got[PATH_MAX_LEN];

    job_path(f, id, nth, got, sizeof(got));
    print_path(id, got);
    assert_string_equal(got, want);
}

/* Transitions of this id from one state to another. */
static int
count_steps(const struct fx *f, const char *id, const char *from, const char *to)
{
    int n = 0;

    for (int i = 0; i < f->nsteps; i++)
        if (strcmp(f->steps[i].id, id) == 0 && strcmp(f->steps[i].from, from) == 0 &&
            strcmp(f->steps[i].to, to) == 0)
            n++;
    return n;
}

/* Where the nth (from 0) transition of this id from one state to another is; -1 if none. */
static int
step_index(const struct fx *f, const char *id, const char *from, const char *to, int nth)
{
    for (int i = 0; i < f->nsteps; i++)
        if (strcmp(f->steps[i].id, id) == 0 && strcmp(f->steps[i].from, from) == 0 &&
            strcmp(f->steps[i].to, to) == 0 && nth-- == 0)
            return i;
    return -1;
}

/* --- the loop (run_until.h) -------------------------------------------- */

/* Every entry taken so far has reached DONE, and n of them in all. */
#define RUN_UNTIL_DONE(f, n)                                                                       \
    do {                                                                                           \
        RUN_UNTIL(f, (f)->dones >= (n) && delivery_inflight((f)->deliveries) == 0, 3000);          \
        assert_int_equal((f)->dones, (n));                                                         \
        assert_int_equal(delivery_inflight((f)->deliveries), 0);                                   \
    } while (0)

/* --- the daemon: main.c's otpd_start() and shutdown ---------------------- */

static void
on_reader_state(struct rconn *rc, int up, void *arg)
{
    struct fx *f = arg;

    (void)rc;
    queue_reader_state(f->queue, up);
}

static void
on_writer_state(struct rconn *rc, int up, void *arg)
{
    struct fx *f = arg;

    (void)rc;
    delivery_writer_state(f->deliveries, up);
}

/*
 * Configuration as otpd reads it: the test's settings over these, then
 * config_finish().  OTPD_LOG_LEVEL from the environment shows the daemon's
 * log when a test needs looking into.
 */
static void
fx_configure(struct fx *f, const char *const *settings)
{
    char url[160], err[512];
    const char *level = getenv("OTPD_LOG_LEVEL");
    const char *base[] = {
        "REDIS_URL",
        url,
        "OTPD_HASH_KEY",
        HASH_KEY,
        "OTPD_PROVIDER",
        "console",
        "OTPD_CONSUMER",
        "test",
        "OTPD_LOG_LEVEL",
        level && *level ? level : "warning",
        "OTPD_MAX_INFLIGHT",
        "64",
        "OTPD_BATCH",
        "16",
        "OTPD_BLOCK_MS",
        "2000",
        NULL,
    };

    snprintf(url, sizeof(url), "unix://%s", f->srv.sock);
    config_init(&f->cfg);
    for (int i = 0; base[i] != NULL; i += 2)
        if (config_set(&f->cfg, base[i], base[i + 1], err, sizeof(err)) < 0)
            fail_msg("config: %s", err);
    for (int i = 0; settings && settings[i] != NULL; i += 2)
        if (config_set(&f->cfg, settings[i], settings[i + 1], err, sizeof(err)) < 0)
            fail_msg("config: %s", err);
    if (config_finish(&f->cfg, err, sizeof(err)) < 0)
        fail_msg("config: %s", err);
    log_init(log_level_parse(f->cfg.log_level));
}

#define NEED_REDIS()                                                                               \
    do {                                                                                           \
        if (redis_bin == NULL) {                                                                   \
            print_message("skipped: redis-server is not installed (apt install redis-server)\n");  \
            skip();                                                                                \
        }                                                                                          \
    } while (0)

/* The daemon's parts in otpd_start()'s order (no monitor, metrics or receipts). */
static void
fx_start(struct fx *f, const char *const *settings)
{
    char err[512];
    struct config *cfg = &f->cfg;

    fx_configure(f, settings);
    assert_int_equal(uv_loop_init(&f->loop), 0);
    assert_int_equal(uv_timer_init(&f->loop, &f->deadline), 0);
    if ((f->providers = provider_set_open(&f->loop, cfg, err, sizeof(err))) == NULL)
        fail_msg("providers: %s", err);
    f->reader =
        rconn_new(&f->loop, &cfg->redis, "reader", cfg->block_ms + 5000, on_reader_state, f);
    f->writer = rconn_new(&f->loop, &cfg->redis, "writer", 10000, on_writer_state, f);
    f->ledger = ledger_new(&f->loop, cfg, f->writer);
    f->deliveries = delivery_new(&f->loop, cfg, f->ledger, f->providers);
    f->queue = queue_new(&f->loop, cfg, f->reader, f->writer, delivery_batch, f->deliveries);
    assert_non_null(f->reader);
    assert_non_null(f->writer);
    assert_non_null(f->ledger);
    assert_non_null(f->deliveries);
    assert_non_null(f->queue);
    queue_set_ids(f->queue, delivery_stream_ids, f->deliveries);
    delivery_set_queue(f->deliveries, f->queue);
    delivery_set_observer(f->deliveries, on_transition, f);
    rconn_start(f->writer);
    rconn_start(f->reader);
}

static void
on_part_closed(void *arg)
{
    struct fx *f = arg;

    if (--f->closing > 0)
        return;
    f->totals = *delivery_stats(f->deliveries);
    delivery_free(f->deliveries);
    f->deliveries = NULL;
    f->closed = 1;
    uv_stop(&f->loop);
}

static void
on_drained(void *arg, int handed_back)
{
    struct fx *f = arg;

    f->handed_back = handed_back;
    ledger_close(f->ledger, on_part_closed, f);
    rconn_close(f->reader, 1, on_part_closed, f);
    rconn_close(f->writer, handed_back > 0, on_part_closed, f);
    if (handed_back > 0)
        delivery_abandon(f->deliveries);
    provider_set_close(f->providers, on_part_closed, f);
}

static void
on_queue_stopped(void *arg)
{
    struct fx *f = arg;

    delivery_drain(f->deliveries, f->cfg.shutdown_timeout_ms, on_drained, f);
}

/*
 * main.c's shutdown: stop claiming, drain, close the ledger, both
 * connections and the providers, free the deliveries, then what
 * otpd_cleanup() frees; the loop must close with nothing left open.
 */
static void
fx_shutdown(struct fx *f)
{
    f->closing = 4; /* ledger, reader, writer, providers */
    f->handed_back = -1;
    queue_stop(f->queue, on_queue_stopped, f);
    RUN_UNTIL(f, f->closed, 3000);
    assert_true(f->closed);
    uv_close((uv_handle_t *)&f->deadline, NULL);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    queue_free(f->queue);
    ledger_free(f->ledger);
    rconn_free(f->reader);
    rconn_free(f->writer);
    if (uv_loop_alive(&f->loop))
        uv_print_all_handles(&f->loop, stderr);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    config_free(&f->cfg);
}

static int
fx_setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));

    assert_non_null(f);
    test_redis_init(&f->srv, 0);
    f->handed_back = -1;
    *state = f;
    return 0;
}

static int
fx_teardown(void **state)
{
    struct fx *f = *state;

    /* A failed test may leave the loop and its parts behind: abandoned. */
    redis_kill(f);
    free(f);
    return 0;
}

/* --- the paths ------------------------------------------------------------ */

/* A good job through the console provider: claimed, sent, finished. */
static void
test_sent(void **state)
{
    struct fx *f = *state;
    char entry[STREAM_ID_MAX + 1], ref[80];

    NEED_REDIS();
    redis_start(f);
    add_job(f, "{\"id\":\"good-1\",\"to\":\"+14155550101\",\"purpose\":\"login\"}", entry);
    fx_start(f, NULL);
    RUN_UNTIL_DONE(f, 1);

    expect_path(f, "good-1", 0, "CLAIMED > SENDING > FINISHING > DONE");
    assert_int_equal(job_path(f, "good-1", 0, NULL, 0), 1);
    expect_field(f, "good-1", "status", "sent");
    expect_field(f, "good-1", "provider", "console");
    expect_field(f, "good-1", "attempts", "1");
    expect_field(f, "good-1", "stream_id", entry);
    job_field(f, "good-1", "provider_ref", ref, sizeof(ref));
    assert_int_equal(strncmp(ref, "CON", 3), 0);
    /* The code's record stays for the web app to verify against. */
    assert_int_equal(int_cmd(f, "HEXISTS otpd:otp:login:+14155550101 mac"), 1);
    assert_int_equal(stream_count(f, "otpd:events", "id", "good-1", "status", "sent"), 1);
    assert_int_equal(pending(f), 0);
    assert_int_equal(int_cmd(f, "XLEN otpd:jobs"), 0);

    fx_shutdown(f);
    assert_int_equal(f->handed_back, 0);
    assert_int_equal(f->totals.claimed, 1);
    assert_int_equal(f->totals.sent, 1);
    assert_int_equal(f->totals.retries, 0);
}

/* Bad input of three kinds: each rejected in one step, with its dead letter. */
static void
test_rejected(void **state)
{
    struct fx *f = *state;
    char bad_to[STREAM_ID_MAX + 1], not_json[STREAM_ID_MAX + 1], no_job[STREAM_ID_MAX + 1];
    redisReply *r;

    NEED_REDIS();
    redis_start(f);
    add_job(f, "{\"id\":\"bad-1\",\"to\":\"4155550102\"}", bad_to);
    add_job(f, "{\"id\":\"bad-2\",\"to\":", not_json);
    r = plain_cmd(f, "XADD otpd:jobs * note no-job-field");
    assert_int_equal(r->type, REDIS_REPLY_STRING);
    snprintf(no_job, sizeof(no_job), "%s", r->str);
    freeReplyObject(r);
    fx_start(f, NULL);
    RUN_UNTIL_DONE(f, 3);

    /* A payload with a valid id is known by it; any other by its stream id. */
    expect_path(f, "bad-1", 0, "REJECTING > DONE");
    expect_path(f, not_json, 0, "REJECTING > DONE");
    expect_path(f, no_job, 0, "REJECTING > DONE");
    expect_field(f, "bad-1", "status", "rejected");
    expect_field(f, "bad-1", "error",
                 "field to: not an E.164 number (+ then 7 to 15 digits, no spaces)");
    expect_field(f, not_json, "status", "rejected");
    expect_field(f, not_json, "error", "payload is not valid JSON");
    expect_field(f, no_job, "status", "rejected");
    expect_field(f, no_job, "error", "entry has no \"job\" field");

    assert_int_equal(int_cmd(f, "XLEN otpd:dead"), 3);
    assert_int_equal(stream_count(f, "otpd:dead", "stream_id", bad_to, "job",
                                  "{\"id\":\"bad-1\",\"to\":\"4155550102\"}"),
                     1);
    assert_int_equal(
        stream_count(f, "otpd:dead", "stream_id", not_json, "reason", "payload is not valid JSON"),
        1);
    assert_int_equal(stream_count(f, "otpd:dead", "stream_id", no_job, "job", ""), 1);
    assert_int_equal(stream_count(f, "otpd:events", "id", "bad-1", "status", "rejected"), 1);
    assert_int_equal(pending(f), 0);
    assert_int_equal(int_cmd(f, "XLEN otpd:jobs"), 0);

    fx_shutdown(f);
    assert_int_equal(f->totals.rejected, 3);
    assert_int_equal(f->totals.dead_letters, 3);
    assert_int_equal(f->totals.sent, 0);
}

/*
 * The limits end a job at begin: the second job to a number over
 * OTPD_LIMIT_PER_HOUR=1, and a number that replied STOP.  Neither is sent.
 */
static void
test_denied(void **state)
{
    static const char *const settings[] = {
        "OTPD_LIMIT_PER_HOUR", "1", "OTPD_LIMIT_INTERVAL_S", "0", NULL,
    };
    struct fx *f = *state;
    char retry_at[32];

    NEED_REDIS();
    redis_start(f);
    freeReplyObject(plain_cmd(f, "HSET otpd:optout +14155550109 1"));
    add_job(f, "{\"id\":\"first\",\"to\":\"+14155550103\"}", NULL);
    add_job(f, "{\"id\":\"second\",\"to\":\"+14155550103\"}", NULL);
    add_job(f, "{\"id\":\"stopped\",\"to\":\"+14155550109\"}", NULL);
    fx_start(f, settings);
    RUN_UNTIL_DONE(f, 3);

    expect_path(f, "first", 0, "CLAIMED > SENDING > FINISHING > DONE");
    expect_path(f, "second", 0, "CLAIMED > DONE");
    expect_path(f, "stopped", 0, "CLAIMED > DONE");
    expect_field(f, "first", "status", "sent");
    expect_field(f, "second", "status", "rate_limited");
    expect_field(f, "second", "error_code", "per_hour");
    job_field(f, "second", "retry_at_ms", retry_at, sizeof(retry_at));
    assert_true(atoll(retry_at) > otpd_now_ms());
    expect_field(f, "stopped", "status", "failed");
    expect_field(f, "stopped", "error_code", "opted_out");
    expect_field(f, "stopped", "attempts", "0");
    /* No code was made for them: only the first job's record exists. */
    assert_int_equal(int_cmd(f, "EXISTS otpd:otp:login:+14155550109"), 0);
    assert_int_equal(stream_count(f, "otpd:events", "id", "second", "status", "rate_limited"), 1);
    assert_int_equal(pending(f), 0);

    fx_shutdown(f);
    assert_int_equal(f->totals.sent, 1);
    assert_int_equal(f->totals.rate_limited, 1);
    assert_int_equal(f->totals.failed, 1);
}

/*
 * A second entry with a job id already taken: acknowledged at begin with a
 * "duplicate" event, never sent; the first entry's record stands.  Once
 * after the first entry finished, once while it is still in flight (both
 * in one read).
 */
static void
test_duplicate(void **state)
{
    struct fx *f = *state;
    char first[STREAM_ID_MAX + 1], a[STREAM_ID_MAX + 1];
    redisReply *r;

    NEED_REDIS();
    redis_start(f);
    add_job(f, "{\"id\":\"dup-1\",\"to\":\"+14155550104\"}", first);
    fx_start(f, NULL);
    RUN_UNTIL_DONE(f, 1);
    add_job(f, "{\"id\":\"dup-1\",\"to\":\"+14155550104\"}", NULL);
    RUN_UNTIL_DONE(f, 2);

    assert_int_equal(job_path(f, "dup-1", 0, NULL, 0), 2);
    expect_path(f, "dup-1", 0, "CLAIMED > SENDING > FINISHING > DONE");
    expect_path(f, "dup-1", 1, "CLAIMED > DONE");
    expect_field(f, "dup-1", "status", "sent");
    expect_field(f, "dup-1", "stream_id", first);
    assert_int_equal(stream_count(f, "otpd:events", "id", "dup-1", "status", "duplicate"), 1);
    assert_int_equal(stream_count(f, "otpd:events", "id", "dup-1", "status", "sent"), 1);

    /*
     * Both entries in one read: one script adds them, so the blocked
     * XREADGROUP wakes to both, and the second's begin finds the first
     * still "sending".
     */
    r = plain_cmd(f, "EVAL %s 1 otpd:jobs %s",
                  "return {redis.call('XADD', KEYS[1], '*', 'job', ARGV[1]), "
                  "redis.call('XADD', KEYS[1], '*', 'job', ARGV[1])}",
                  "{\"id\":\"dup-2\",\"to\":\"+14155550114\"}");
    assert_int_equal(r->type, REDIS_REPLY_ARRAY);
    assert_int_equal(r->elements, 2);
    snprintf(a, sizeof(a), "%s", r->element[0]->str);
    freeReplyObject(r);
    RUN_UNTIL_DONE(f, 4);
    assert_int_equal(job_path(f, "dup-2", 0, NULL, 0), 2);
    assert_true(step_index(f, "dup-2", "", "CLAIMED", 1) <
                step_index(f, "dup-2", "CLAIMED", "SENDING", 0));
    expect_path(f, "dup-2", 0, "CLAIMED > SENDING > FINISHING > DONE");
    expect_path(f, "dup-2", 1, "CLAIMED > DONE");
    expect_field(f, "dup-2", "status", "sent");
    expect_field(f, "dup-2", "stream_id", a);
    assert_int_equal(stream_count(f, "otpd:events", "id", "dup-2", "status", "duplicate"), 1);
    assert_int_equal(int_cmd(f, "HGET otpd:stats jobs:duplicate"), 2);
    assert_int_equal(pending(f), 0);
    assert_int_equal(int_cmd(f, "XLEN otpd:jobs"), 0);

    fx_shutdown(f);
    assert_int_equal(f->totals.duplicates, 2);
    assert_int_equal(f->totals.sent, 2);
}

/*
 * Jobs that end before any send: one whose code expired in the queue
 * (created ten minutes ago, ttl 30 s), one to a country outside
 * OTPD_ALLOWED_COUNTRIES.  Neither reaches begin.
 */
static void
test_ends_before_sending(void **state)
{
    static const char *const settings[] = {"OTPD_ALLOWED_COUNTRIES", "1", NULL};
    struct fx *f = *state;
    char json[256], created[32];
    long long then = (long long)otpd_now_ms() - 600000;

    NEED_REDIS();
    redis_start(f);
    snprintf(json, sizeof(json),
             "{\"id\":\"old-1\",\"to\":\"+14155550105\",\"ttl\":30,\"created_ms\":%lld}", then);
    add_job(f, json, NULL);
    add_job(f, "{\"id\":\"abroad-1\",\"to\":\"+447700900105\"}", NULL);
    fx_start(f, settings);
    RUN_UNTIL_DONE(f, 2);

    expect_path(f, "old-1", 0, "CLAIMED > FINISHING > DONE");
    expect_path(f, "abroad-1", 0, "CLAIMED > FINISHING > DONE");
    expect_field(f, "old-1", "status", "expired");
    expect_field(f, "old-1", "attempts", "0");
    expect_field(f, "old-1", "provider", "");
    expect_field(f, "old-1", "error", "the code's lifetime ended before it could be sent");
    snprintf(created, sizeof(created), "%lld", then);
    expect_field(f, "old-1", "created_ms", created);
    expect_field(f, "abroad-1", "status", "failed");
    expect_field(f, "abroad-1", "error_code", "country_not_allowed");
    assert_int_equal(int_cmd(f, "EXISTS otpd:otp:login:+14155550105"), 0);
    assert_int_equal(stream_count(f, "otpd:events", "id", "old-1", "status", "expired"), 1);
    assert_int_equal(pending(f), 0);

    fx_shutdown(f);
    assert_int_equal(f->totals.expired, 1);
    assert_int_equal(f->totals.failed, 1);
    assert_int_equal(f->totals.sent, 0);
}

/* Twilio at a loopback port nobody listens on: every attempt fails, retryable. */
static void
twilio_settings(const char **settings, char *base, size_t len, const char *shutdown_ms)
{
    const char *s[] = {
        "TWILIO_ACCOUNT_SID",
        "ACtest",
        "TWILIO_AUTH_TOKEN",
        "test-token",
        "TWILIO_PHONE_NUMBER",
        "+15005550006",
        "TWILIO_API_BASE",
        base,
        "OTPD_RETRY_BASE_MS",
        "50",
        "OTPD_RETRY_MAX_MS",
        "100",
        "OTPD_CIRCUIT_FAILURES",
        "1000", /* the circuit stays closed: every retry goes to Twilio again */
        "OTPD_SHUTDOWN_TIMEOUT_MS",
        shutdown_ms,
        NULL,
    };

    snprintf(base, len, "https://127.0.0.1:%d", test_free_port());
    memcpy(settings, s, sizeof(s));
}

/* "CLAIMED > SENDING", then n times " > BACKOFF > SENDING", then tail. */
static void
retry_path(char *out, size_t len, int n, const char *tail)
{
    size_t used;

    snprintf(out, len, "CLAIMED > SENDING");
    for (int i = 0; i < n; i++) {
        used = strlen(out);
        snprintf(out + used, len - used, " > BACKOFF > SENDING");
    }
    used = strlen(out);
    snprintf(out + used, len - used, "%s", tail);
}

/*
 * A job pinned to Twilio whose attempts all fail with "could not connect":
 * SENDING and BACKOFF alternate, each retry noted as "retrying", until the
 * next retry would come after the code's expiry (created 29 s ago, ttl 30)
 * and the job ends "expired" from SENDING.
 */
static void
test_retry_until_expired(void **state)
{
    struct fx *f = *state;
    const char *settings[17];
    char base[64], json[256], want[PATH_MAX_LEN], attempts[16];
    int backoffs;

    NEED_REDIS();
    redis_start(f);
    twilio_settings(settings, base, sizeof(base), "2000");
    snprintf(json, sizeof(json),
             "{\"id\":\"retry-1\",\"to\":\"+14155550106\",\"provider\":\"twilio\",\"ttl\":30,"
             "\"created_ms\":%lld}",
             (long long)otpd_now_ms() - 29000);
    add_job(f, json, NULL);
    fx_start(f, settings);
    RUN_UNTIL_DONE(f, 1);

    backoffs = count_steps(f, "retry-1", "SENDING", "BACKOFF");
    print_message("  retry-1: %d retries before the code expired\n", backoffs);
    assert_true(backoffs >= 2);
    assert_int_equal(count_steps(f, "retry-1", "BACKOFF", "SENDING"), backoffs);
    retry_path(want, sizeof(want), backoffs, " > FINISHING > DONE");
    expect_path(f, "retry-1", 0, want);
    expect_field(f, "retry-1", "status", "expired");
    expect_field(f, "retry-1", "provider", "twilio");
    /* Each BACKOFF follows a failed attempt; the last SENDING may have made none. */
    job_field(f, "retry-1", "attempts", attempts, sizeof(attempts));
    assert_true(atoi(attempts) >= backoffs && atoi(attempts) <= backoffs + 1);
    assert_int_equal(stream_count(f, "otpd:events", "id", "retry-1", "status", "retrying"),
                     backoffs);
    assert_int_equal(int_cmd(f, "EXISTS otpd:otp:login:+14155550106"), 0); /* burnt */
    assert_int_equal(pending(f), 0);

    fx_shutdown(f);
    assert_int_equal(f->handed_back, 0);
    assert_int_equal(f->totals.retries, backoffs);
    assert_int_equal(f->totals.expired, 1);
}

/*
 * The same failing job with its whole lifetime ahead (OTPD_OTP_TTL, 300 s):
 * after two retries the daemon shuts down.  The drain gives it 100 ms, it
 * is still retrying, so it is handed back: its entry stays pending for
 * another instance, its record says "retrying", and everything closes all
 * the same.
 */
static void
test_retry_drained(void **state)
{
    struct fx *f = *state;
    const char *settings[17];
    char base[64], want[PATH_MAX_LEN], attempts[16];
    int backoffs, resumed;

    NEED_REDIS();
    redis_start(f);
    twilio_settings(settings, base, sizeof(base), "100");
    add_job(f, "{\"id\":\"retry-2\",\"to\":\"+14155550107\",\"provider\":\"twilio\"}", NULL);
    fx_start(f, settings);
    RUN_UNTIL(f, count_steps(f, "retry-2", "BACKOFF", "SENDING") >= 2, 3000);
    assert_true(count_steps(f, "retry-2", "BACKOFF", "SENDING") >= 2);

    fx_shutdown(f);
    assert_int_equal(f->handed_back, 1);
    assert_int_equal(f->dones, 0);
    backoffs = count_steps(f, "retry-2", "SENDING", "BACKOFF");
    resumed = count_steps(f, "retry-2", "BACKOFF", "SENDING");
    assert_true(resumed == backoffs || resumed == backoffs - 1);
    /* Abandoned where it stood: waiting in BACKOFF, or in SENDING. */
    retry_path(want, sizeof(want), resumed, resumed < backoffs ? " > BACKOFF" : "");
    expect_path(f, "retry-2", 0, want);
    assert_int_equal(f->totals.retries, backoffs);
    assert_int_equal(f->totals.sent + f->totals.failed + f->totals.expired, 0);

    /* Redis was left as a crash would leave it: the entry pending, the record retrying. */
    assert_int_equal(pending(f), 1);
    expect_field(f, "retry-2", "status", "retrying");
    expect_field(f, "retry-2", "provider", "twilio");
    job_field(f, "retry-2", "attempts", attempts, sizeof(attempts));
    assert_true(atoi(attempts) >= 2);
    assert_int_equal(int_cmd(f, "HEXISTS otpd:otp:login:+14155550107 mac"), 1);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_sent, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_rejected, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_denied, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_duplicate, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_ends_before_sending, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_retry_until_expired, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_retry_drained, fx_setup, fx_teardown),
    };
    int failed;

    /* As otpd's main: hiredis writes with write(2); libsodium and libcurl first. */
    signal(SIGPIPE, SIG_IGN);
    if (sodium_init() < 0 || curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "test_delivery: libsodium or libcurl failed to initialise\n");
        return 1;
    }
    redis_bin = test_redis_setup("dlv");
    if (redis_bin == NULL)
        print_message("test_delivery: redis-server not on PATH: every test skips\n");
    failed = cmocka_run_group_tests(tests, NULL, NULL);
    test_redis_cleanup();
    curl_global_cleanup();
    return failed;
}

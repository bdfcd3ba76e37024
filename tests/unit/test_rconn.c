/*
 * test_rconn.c: the reconnecting Redis connection on a real libuv loop
 * against a real redis-server, and its hand-written RESP formatter against
 * hiredis's.
 *
 * Each connection test starts its own redis-server on a free loopback port
 * (plus a unix socket) in a temporary directory, kills and restarts it as
 * it needs, and ends with uv_loop_close() == 0, so a handle rconn forgets
 * to close fails the test (libuv's MAKE_VALGRIND_HAPPY).  Without
 * redis-server on PATH those tests are skipped, saying why; the formatter
 * tests need no server.  Callbacks only count and record; the assertions
 * follow uv_run, as in libuv's own tests.
 */
#include <setjmp.h>
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <poll.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <hiredis/hiredis.h>
#include <hiredis/sds.h>
#include <uv.h>

#include "config.h"
#include "rconn.h"
#include "redis_server.h"
#include "run_until.h"

#define NO_REPLY (-1) /* a callback's "reply" was NULL (REDIS_REPLY_* are > 0) */

static const char *redis_bin; /* NULL: the server tests skip */

struct fx;

/* One command's callback: how often it ran and with what. */
struct call {
    struct fx *f;
    int calls;
    int type;
    char str[512];
    size_t len;
    uint64_t at;
    int seq; /* order among the fixture's events */
};

struct fx {
    uv_loop_t loop;
    uv_timer_t deadline; /* bounds every wait, so a hang is a failure */
    int expired;
    struct redis_addr addr;
    struct rconn *rc;
    struct test_redis srv; /* its port, socket and extra arguments */
    int ups, downs, closed, seq;
    uint64_t up_at, down_at;
    int down_seq;
    uv_tcp_t listener; /* stands in for Redis while counting connection attempts */
    uint64_t accept_at[8];
    int accepts;
};

/* --- redis-server (redis_server.c) ----------------------------------------- */

/* A blocking hiredis connection, as an operator's redis-cli would be. */
static redisContext *
plain_connect(const struct fx *f)
{
    struct timeval tv = {1, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", f->srv.port, tv);

    assert_non_null(c);
    assert_int_equal(c->err, 0);
    return c;
}

/* --- the loop (run_until.h) -------------------------------------------- */

static uint64_t
now_ms(struct fx *f)
{
    uv_update_time(&f->loop);
    return uv_now(&f->loop);
}

static void
on_state(struct rconn *rc, int up, void *arg)
{
    struct fx *f = arg;

    assert_ptr_equal(rc, f->rc);
    assert_int_equal(up, rconn_is_up(rc));
    if (up) {
        f->ups++;
        f->up_at = uv_now(&f->loop);
    } else {
        f->downs++;
        f->down_at = uv_now(&f->loop);
        f->down_seq = ++f->seq;
    }
    uv_stop(&f->loop);
}

static void
on_reply(redisAsyncContext *ac, void *r, void *priv)
{
    struct call *c = priv;
    redisReply *reply = r;

    (void)ac;
    c->calls++;
    c->type = reply ? reply->type : NO_REPLY;
    c->str[0] = '\0';
    c->len = 0;
    if (reply && reply->str) {
        c->len = reply->len < sizeof(c->str) - 1 ? reply->len : sizeof(c->str) - 1;
        memcpy(c->str, reply->str, c->len);
        c->str[c->len] = '\0';
    } else if (reply && reply->type == REDIS_REPLY_INTEGER)
        snprintf(c->str, sizeof(c->str), "%lld", reply->integer);
    c->at = uv_now(&c->f->loop);
    c->seq = ++c->f->seq;
    uv_stop(&c->f->loop);
}

static void
on_closed(void *arg)
{
    struct fx *f = arg;

    f->closed = ++f->seq;
    uv_stop(&f->loop);
}

/* The daemon's way: free the connection as soon as it says it is closed. */
static void
on_closed_free(void *arg)
{
    struct fx *f = arg;

    f->closed = ++f->seq;
    rconn_free(f->rc);
    f->rc = NULL;
    uv_stop(&f->loop);
}

static int
fx_setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));

    assert_non_null(f);
    assert_int_equal(uv_loop_init(&f->loop), 0);
    assert_int_equal(uv_timer_init(&f->loop, &f->deadline), 0);
    test_redis_init(&f->srv, test_free_port());
    f->addr.host = "127.0.0.1";
    f->addr.port = f->srv.port;
    *state = f;
    return 0;
}

static int
fx_teardown(void **state)
{
    struct fx *f = *state;

    /* A failed test may leave handles open: the loop is abandoned then. */
    test_redis_kill(&f->srv);
    free(f);
    return 0;
}

/* Everything closed: the loop must end with no handle left. */
static void
fx_finish(struct fx *f)
{
    uv_close((uv_handle_t *)&f->deadline, NULL);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    if (uv_loop_alive(&f->loop))
        uv_print_all_handles(&f->loop, stderr);
    assert_int_equal(uv_loop_close(&f->loop), 0);
}

#define NEED_REDIS()                                                                               \
    do {                                                                                           \
        if (redis_bin == NULL) {                                                                   \
            print_message("skipped: redis-server is not installed (apt install redis-server)\n");  \
            skip();                                                                                \
        }                                                                                          \
    } while (0)

static void
fx_connect(struct fx *f, int deadline_ms)
{
    f->rc = rconn_new(&f->loop, &f->addr, "test", deadline_ms, on_state, f);
    assert_non_null(f->rc);
    rconn_start(f->rc);
    RUN_UNTIL(f, f->ups == 1, 3000);
    assert_int_equal(f->ups, 1);
    assert_true(rconn_is_up(f->rc));
}

/* One command of up to three NUL-terminated words, answered into c. */
static int
cmd(struct fx *f, struct call *c, const char *a0, const char *a1, const char *a2)
{
    const char *argv[] = {a0, a1, a2};
    int argc = a1 == NULL ? 1 : a2 == NULL ? 2 : 3;

    memset(c, 0, sizeof(*c));
    c->f = f;
    return rconn_command(f->rc, on_reply, c, argc, argv, NULL);
}

static void
expect_reply(const struct call *c, int type, const char *str)
{
    assert_int_equal(c->calls, 1);
    assert_int_equal(c->type, type);
    if (str != NULL)
        assert_string_equal(c->str, str);
}

/* --- the formatter: byte for byte what hiredis writes -------------------- */

static void
expect_same(char **buf, size_t *cap, int argc, const char **argv, const size_t *argvlen)
{
    char *want = NULL;
    sds want_sds = NULL;
    size_t len = 0, oldcap = *cap;
    int wlen = redisFormatCommandArgv(&want, argc, argv, argvlen);
    int slen = redisFormatSdsCommandArgv(&want_sds, argc, argv, argvlen);

    assert_true(wlen > 0);
    assert_int_equal(rconn_format_command(buf, cap, &len, argc, argv, argvlen), 0);
    assert_int_equal(len, (size_t)wlen);
    assert_memory_equal(*buf, want, len);
    assert_true(len <= *cap && *cap >= oldcap); /* the buffer only grows */
    /* redisAsyncCommandArgv's formatter, the one rconn replaces, agrees too. */
    assert_int_equal(slen, wlen);
    assert_memory_equal(want_sds, want, len);
    free(want);
    sdsfree(want_sds);
}

static void
test_format_matches_hiredis(void **state)
{
    static const size_t sizes[] = {0,   1,   9,    10,   11,    99,    100,
                                   101, 999, 1000, 9999, 10000, 99999, 100000};
    static const int counts[] = {1, 2, 9, 10, 11, 99, 100, 101, 1000, 1001};
    const char *argv[1001], *none[1] = {"unused"};
    size_t argvlen[1001];
    char *buf = NULL, *big;
    size_t cap = 0;

    (void)state;
    /* The shapes otpd sends, with and without lengths. */
    argv[0] = "PING";
    expect_same(&buf, &cap, 1, argv, NULL);
    expect_same(&buf, &cap, 0, none, NULL);
    argv[0] = "";
    expect_same(&buf, &cap, 1, argv, NULL);
    argv[1] = "";
    argv[2] = "";
    argvlen[0] = argvlen[1] = argvlen[2] = 0;
    expect_same(&buf, &cap, 3, argv, argvlen);
    expect_same(&buf, &cap, 3, argv, NULL);
    /* Binary values: NULs, CR LF and RESP's own markers inside arguments. */
    argv[0] = "SET";
    argv[1] = "k\0ey";
    argv[2] = "\0\r\n$*\xff-+:";
    argvlen[0] = 3;
    argvlen[1] = 4;
    argvlen[2] = 10;
    expect_same(&buf, &cap, 3, argv, argvlen);
    argvlen[1] = 1; /* a length shorter than the string: only that prefix */
    expect_same(&buf, &cap, 3, argv, argvlen);

    /* Every change in the number of digits of a length and of argc. */
    big = malloc(100001);
    assert_non_null(big);
    memset(big, 'x', 100000);
    big[100000] = '\0';
    big[500] = '\0'; /* a NUL that only the explicit length carries past */
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        argv[0] = "XADD";
        argv[1] = big;
        argvlen[0] = 4;
        argvlen[1] = sizes[i];
        expect_same(&buf, &cap, 2, argv, argvlen);
    }
    big[500] = 'x';
    expect_same(&buf, &cap, 2, argv, NULL); /* strlen: all 100000 */
    for (size_t i = 0; i < sizeof(counts) / sizeof(counts[0]); i++) {
        for (int j = 0; j < counts[i]; j++) {
            argv[j] = j % 3 ? "a" : "otpd:job:login-8fcb4246f3f2c269";
            argvlen[j] = strlen(argv[j]);
        }
        expect_same(&buf, &cap, counts[i], argv, NULL);
        expect_same(&buf, &cap, counts[i], argv, argvlen);
    }
    /* A small command after the big ones reuses the grown buffer. */
    argv[0] = "PING";
    expect_same(&buf, &cap, 1, argv, NULL);
    assert_true(cap >= 100000);
    free(big);
    free(buf);
}

static uint64_t
xorshift(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/*
 * Random vectors from a fixed seed, so a failure repeats: mostly short
 * arguments, now and then a long one or very many, every byte value, with
 * explicit lengths or (NUL-free) through strlen.
 */
static void
test_format_fuzz(void **state)
{
    uint64_t seed = 0x6f74706472636f6eULL; /* "otpdrcon" */
    const char *argv[300];
    size_t argvlen[300];
    char *args[300];
    char *buf = NULL;
    size_t cap = 0;

    (void)state;
    for (int n = 0; n < 3000; n++) {
        int argc = (int)(xorshift(&seed) % 24);
        int with_len = xorshift(&seed) % 4 != 0;

        if (xorshift(&seed) % 50 == 0)
            argc = (int)(xorshift(&seed) % 300);
        for (int i = 0; i < argc; i++) {
            size_t len = xorshift(&seed) % 8 == 0 ? xorshift(&seed) % 3000 : xorshift(&seed) % 16;
            args[i] = malloc(len + 1);
            assert_non_null(args[i]);
            for (size_t j = 0; j < len; j++) {
                int b = (int)(xorshift(&seed) & 0xff);
                args[i][j] = (char)(with_len || b != 0 ? b : 'z');
            }
            args[i][len] = '\0';
            argv[i] = args[i];
            argvlen[i] = len;
        }
        if (argc == 0) {
            argv[0] = "unused";
            expect_same(&buf, &cap, 0, argv, NULL);
            continue;
        }
        expect_same(&buf, &cap, argc, argv, with_len ? argvlen : NULL);
        for (int i = 0; i < argc; i++)
            free(args[i]);
    }
    free(buf);
}

/* --- the connection ------------------------------------------------------ */

static void
test_connect_and_reply(void **state)
{
    struct fx *f = *state;
    struct call early, ping, echo;
    const char *bin[] = {"ECHO", "a\0b\r\n"};
    const size_t binlen[] = {4, 5};

    NEED_REDIS();
    test_redis_start(&f->srv);
    f->rc = rconn_new(&f->loop, &f->addr, "test", 1000, on_state, f);
    assert_non_null(f->rc);
    assert_string_equal(rconn_name(f->rc), "test");
    /* Not up yet: refused at once, and the callback never runs. */
    assert_int_equal(cmd(f, &early, "PING", NULL, NULL), -1);
    rconn_start(f->rc);
    assert_int_equal(cmd(f, &early, "PING", NULL, NULL), -1);
    RUN_UNTIL(f, f->ups == 1, 3000);
    assert_int_equal(f->ups, 1);
    assert_true(rconn_is_up(f->rc));
    assert_true(rconn_client_id(f->rc) > 0);

    assert_int_equal(cmd(f, &ping, "PING", NULL, NULL), 0);
    memset(&echo, 0, sizeof(echo));
    echo.f = f;
    assert_int_equal(rconn_command(f->rc, on_reply, &echo, 2, bin, binlen), 0);
    RUN_UNTIL(f, ping.calls && echo.calls, 2000);
    RUN_FOR(f, 50); /* a second call would show now */
    expect_reply(&ping, REDIS_REPLY_STATUS, "PONG");
    assert_int_equal(echo.calls, 1);
    assert_int_equal(echo.type, REDIS_REPLY_STRING);
    assert_int_equal(echo.len, 5);
    assert_memory_equal(echo.str, "a\0b\r\n", 5);
    assert_true(ping.seq < echo.seq); /* replies in request order */
    assert_int_equal(early.calls, 0);

    rconn_close(f->rc, 0, on_closed, f);
    RUN_UNTIL(f, f->closed, 2000);
    assert_true(f->closed);
    assert_int_equal(f->downs, 0); /* a close is not an outage */
    rconn_free(f->rc);
    fx_finish(f);
}

static void
free_handle(uv_handle_t *h)
{
    free(h);
}

/* Counts a connection attempt and hangs up, as a server refusing it would. */
static void
on_attempt(uv_stream_t *server, int status)
{
    struct fx *f = server->data;
    uv_tcp_t *c;

    if (status < 0)
        return;
    c = malloc(sizeof(*c));
    assert_non_null(c);
    assert_int_equal(uv_tcp_init(server->loop, c), 0);
    if (uv_accept(server, (uv_stream_t *)c) == 0 && f->accepts < 8)
        f->accept_at[f->accepts++] = uv_now(server->loop);
    uv_close((uv_handle_t *)c, free_handle);
    uv_stop(server->loop);
}

static void
listen_start(struct fx *f)
{
    struct sockaddr_in sin;

    assert_int_equal(uv_ip4_addr("127.0.0.1", f->srv.port, &sin), 0);
    assert_int_equal(uv_tcp_init(&f->loop, &f->listener), 0);
    f->listener.data = f;
    assert_int_equal(uv_tcp_bind(&f->listener, (const struct sockaddr *)&sin, 0), 0);
    assert_int_equal(uv_listen((uv_stream_t *)&f->listener, 16, on_attempt), 0);
}

/* At least want ms, and not wildly more on a loaded machine. */
static void
expect_interval(const char *what, uint64_t from, uint64_t to, uint64_t want)
{
    print_message("  %s after %llu ms (backoff %llu)\n", what, (unsigned long long)(to - from),
                  (unsigned long long)want);
    assert_true(to - from >= want);
    assert_true(to - from < want * 3 / 2 + 150);
}

/*
 * The server dies with two commands pending: both callbacks run once with
 * NULL before the state callback says down.  Attempts then come 100, 200,
 * 400, 800 ms apart (a listener of our own counts them on the port), and
 * the restarted server gets the connection back, up again.  The 5 s cap
 * itself would take 6 s of refusals to reach, too slow for a unit test.
 */
static void
test_kill_and_reconnect(void **state)
{
    struct fx *f = *state;
    struct call blpop, ping, late, again;

    NEED_REDIS();
    test_redis_start(&f->srv);
    fx_connect(f, 10000);
    assert_int_equal(cmd(f, &blpop, "BLPOP", "otpd:test:never", "0"), 0);
    assert_int_equal(cmd(f, &ping, "PING", NULL, NULL), 0); /* queued behind the BLPOP */
    RUN_FOR(f, 100);
    assert_int_equal(blpop.calls + ping.calls, 0);

    test_redis_kill(&f->srv);
    listen_start(f); /* before the loop runs again, so the first retry finds it */
    RUN_UNTIL(f, f->downs == 1 && blpop.calls && ping.calls, 2000);
    expect_reply(&blpop, NO_REPLY, NULL);
    expect_reply(&ping, NO_REPLY, NULL);
    assert_int_equal(f->downs, 1);
    assert_true(blpop.seq < ping.seq && ping.seq < f->down_seq);
    assert_false(rconn_is_up(f->rc));
    assert_int_equal(cmd(f, &late, "PING", NULL, NULL), -1);

    RUN_UNTIL(f, f->accepts >= 3, 3000);
    assert_int_equal(f->accepts, 3);
    uv_close((uv_handle_t *)&f->listener, NULL);
    expect_interval("attempt 1", f->down_at, f->accept_at[0], 100);
    expect_interval("attempt 2", f->accept_at[0], f->accept_at[1], 200);
    expect_interval("attempt 3", f->accept_at[1], f->accept_at[2], 400);

    test_redis_start(&f->srv); /* same port */
    RUN_UNTIL(f, f->ups == 2, 3000);
    assert_int_equal(f->ups, 2);
    expect_interval("up again", f->accept_at[2], f->up_at, 800);
    assert_int_equal(f->downs, 1); /* refused attempts are not outages of their own */
    assert_int_equal(cmd(f, &again, "PING", NULL, NULL), 0);
    RUN_UNTIL(f, again.calls, 2000);
    expect_reply(&again, REDIS_REPLY_STATUS, "PONG");
    assert_int_equal(blpop.calls + ping.calls + late.calls, 2); /* never again */

    rconn_close(f->rc, 1, on_closed_free, f);
    RUN_UNTIL(f, f->closed, 2000);
    assert_true(f->closed);
    fx_finish(f);
}

static void
client_info(struct fx *f, struct call *info)
{
    assert_int_equal(cmd(f, info, "CLIENT", "INFO", NULL), 0);
    RUN_UNTIL(f, info->calls, 2000);
    assert_int_equal(info->calls, 1);
    assert_int_equal(info->type, REDIS_REPLY_STRING);
}

static void
close_and_free(struct fx *f)
{
    f->closed = 0;
    rconn_close(f->rc, 0, on_closed_free, f);
    RUN_UNTIL(f, f->closed, 2000);
    assert_true(f->closed);
    assert_null(f->rc);
}

static const char *const with_password[] = {"--requirepass", "secret", NULL};

/* Password and db from the URL: AUTH, SELECT, the name, then up. */
static void
test_auth_select(void **state)
{
    struct fx *f = *state;
    struct call info;
    redisContext *c;
    redisReply *r;

    NEED_REDIS();
    f->srv.args = with_password;
    test_redis_start(&f->srv);
    c = plain_connect(f);
    r = redisCommand(c, "AUTH secret");
    assert_non_null(r);
    freeReplyObject(r);
    r = redisCommand(c, "ACL SETUSER otpd on >userpw ~* &* +@all");
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_STATUS);
    freeReplyObject(r);
    redisFree(c);

    /* TCP, the default user's password, db 3. */
    f->addr.password = "secret";
    f->addr.db = 3;
    fx_connect(f, 1000);
    client_info(f, &info);
    assert_non_null(strstr(info.str, " name=otpd-test "));
    assert_non_null(strstr(info.str, " db=3 "));
    assert_non_null(strstr(info.str, " user=default "));
    close_and_free(f);

    /* The unix socket, an ACL user, db 5. */
    f->ups = 0;
    f->addr.host = NULL;
    f->addr.path = f->srv.sock;
    f->addr.username = "otpd";
    f->addr.password = "userpw";
    f->addr.db = 5;
    fx_connect(f, 1000);
    client_info(f, &info);
    assert_non_null(strstr(info.str, " db=5 "));
    assert_non_null(strstr(info.str, " user=otpd "));
    assert_non_null(strstr(info.str, " addr=/"));
    close_and_free(f);
    fx_finish(f);
}

/*
 * A refused setup (wrong password, a db the server does not have) must
 * never be reported up: rconn keeps retrying with backoff, and nothing may
 * use the connection meanwhile.
 */
static void
test_setup_refused(void **state)
{
    struct fx *f = *state;

    NEED_REDIS();
    f->srv.args = with_password;
    test_redis_start(&f->srv);

    f->addr.password = "wrong";
    f->rc = rconn_new(&f->loop, &f->addr, "test", 1000, on_state, f);
    rconn_start(f->rc);
    RUN_FOR(f, 500);
    assert_int_equal(f->ups, 0);
    assert_int_equal(f->downs, 0);
    assert_false(rconn_is_up(f->rc));
    close_and_free(f);

    f->addr.password = "secret";
    f->addr.db = 99; /* the server has 16 */
    f->rc = rconn_new(&f->loop, &f->addr, "test", 1000, on_state, f);
    rconn_start(f->rc);
    RUN_FOR(f, 500);
    assert_int_equal(f->ups, 0);
    assert_int_equal(f->downs, 0);
    assert_false(rconn_is_up(f->rc));
    close_and_free(f);
    fx_finish(f);
}

/*
 * A server that stops answering (CLIENT PAUSE from an operator's
 * connection) must not hang rconn: past the reply deadline the watchdog
 * drops the connection, the pending callback gets NULL, and once the
 * server answers again the connection comes back.
 */
static void
test_watchdog(void **state)
{
    struct fx *f = *state;
    struct call ping, again;
    redisContext *c;
    redisReply *r;
    uint64_t t0;

    NEED_REDIS();
    test_redis_start(&f->srv);
    fx_connect(f, 200);
    c = plain_connect(f);
    r = redisCommand(c, "CLIENT PAUSE 1000");
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_STATUS);
    freeReplyObject(r);
    redisFree(c);

    t0 = now_ms(f);
    assert_int_equal(cmd(f, &ping, "PING", NULL, NULL), 0);
    RUN_UNTIL(f, ping.calls, 2000);
    expect_reply(&ping, NO_REPLY, NULL);
    print_message("  watchdog dropped the connection after %llu ms (deadline 200)\n",
                  (unsigned long long)(ping.at - t0));
    assert_true(ping.at - t0 >= 200);
    assert_true(ping.at - t0 < 200 + 500 + 400); /* the deadline, a watchdog period, slack */
    assert_int_equal(f->downs, 1);
    assert_true(ping.seq < f->down_seq);

    RUN_UNTIL(f, f->ups == 2, 3000);
    assert_int_equal(f->ups, 2);
    assert_int_equal(cmd(f, &again, "PING", NULL, NULL), 0);
    RUN_UNTIL(f, again.calls, 2000);
    expect_reply(&again, REDIS_REPLY_STATUS, "PONG");
    assert_int_equal(ping.calls, 1);

    rconn_close(f->rc, 1, on_closed_free, f);
    RUN_UNTIL(f, f->closed, 2000);
    assert_true(f->closed);
    fx_finish(f);
}

/* Graceful: what was sent is answered, then the close callback runs. */
static void
test_close_graceful(void **state)
{
    struct fx *f = *state;
    struct call blpop, ping, late;

    NEED_REDIS();
    test_redis_start(&f->srv);
    fx_connect(f, 2000);
    assert_int_equal(cmd(f, &blpop, "BLPOP", "otpd:test:never", "0.2"), 0);
    assert_int_equal(cmd(f, &ping, "PING", NULL, NULL), 0);
    rconn_close(f->rc, 0, on_closed, f);
    assert_false(rconn_is_up(f->rc));
    assert_int_equal(cmd(f, &late, "PING", NULL, NULL), -1);
    assert_int_equal(blpop.calls + ping.calls, 0);

    RUN_UNTIL(f, f->closed, 3000);
    assert_true(f->closed);
    expect_reply(&blpop, REDIS_REPLY_NIL, NULL); /* the BLPOP timed out on the server */
    expect_reply(&ping, REDIS_REPLY_STATUS, "PONG");
    assert_true(blpop.seq < ping.seq && ping.seq < f->closed);
    assert_int_equal(late.calls, 0);
    assert_int_equal(f->downs, 0);
    rconn_free(f->rc);
    fx_finish(f);
}

/* Forced: pending callbacks run with NULL before rconn_close() returns. */
static void
test_close_forced(void **state)
{
    struct fx *f = *state;
    struct call blpop, ping;

    NEED_REDIS();
    test_redis_start(&f->srv);
    fx_connect(f, 2000);
    assert_int_equal(cmd(f, &blpop, "BLPOP", "otpd:test:never", "0"), 0);
    assert_int_equal(cmd(f, &ping, "PING", NULL, NULL), 0);
    RUN_FOR(f, 50);
    rconn_close(f->rc, 1, on_closed_free, f);
    expect_reply(&blpop, NO_REPLY, NULL);
    expect_reply(&ping, NO_REPLY, NULL);
    assert_true(blpop.seq < ping.seq);

    RUN_UNTIL(f, f->closed, 2000);
    assert_true(f->closed);
    assert_null(f->rc);
    assert_int_equal(blpop.calls + ping.calls, 2);
    assert_int_equal(f->downs, 0);
    fx_finish(f);
}

/* No server at all: closing while retrying, and before ever starting. */
static void
test_close_while_down(void **state)
{
    struct fx *f = *state;

    f->rc = rconn_new(&f->loop, &f->addr, "test", 1000, on_state, f);
    rconn_start(f->rc); /* nobody listens on the port */
    RUN_FOR(f, 250);
    assert_int_equal(f->ups + f->downs, 0);
    close_and_free(f);

    f->rc = rconn_new(&f->loop, &f->addr, "test", 1000, on_state, f);
    close_and_free(f);
    fx_finish(f);
}

/*
 * Closing before the socket ever became writable: hiredis 0.14 marks an
 * async context connected only on its first I/O event, and does not call
 * the disconnect callback for a context that never got there.
 */
static void
test_close_while_connecting(void **state)
{
    struct fx *f = *state;

    NEED_REDIS();
    test_redis_start(&f->srv);
    f->rc = rconn_new(&f->loop, &f->addr, "test", 1000, on_state, f);
    rconn_start(f->rc);
    close_and_free(f); /* graceful: the setup replies come, then it closes */

    f->rc = rconn_new(&f->loop, &f->addr, "test", 1000, on_state, f);
    rconn_start(f->rc);
    f->closed = 0;
    rconn_close(f->rc, 1, on_closed_free, f);
    RUN_UNTIL(f, f->closed, 1000);
    assert_true(f->closed);
    assert_int_equal(f->ups + f->downs, 0);
    fx_finish(f);
}

/*
 * A port whose connects hang: a listener with a backlog of 0 that never
 * accepts, its queue filled by a connect of our own, so the kernel drops
 * the next SYN and connect(2) stays in progress.  Returns how many fds.
 */
static int
jam_port(const struct fx *f, int *fds, int max)
{
    struct sockaddr_in sin = {.sin_family = AF_INET,
                              .sin_port = htons((uint16_t)f->srv.port),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int one = 1, n = 0;

    fds[n] = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fds[n] >= 0);
    assert_int_equal(setsockopt(fds[n], SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)), 0);
    assert_int_equal(bind(fds[n], (struct sockaddr *)&sin, sizeof(sin)), 0);
    assert_int_equal(listen(fds[n++], 0), 0);
    while (n < max) {
        struct pollfd p = {.events = POLLOUT};
        p.fd = fds[n++] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        assert_true(p.fd >= 0);
        if (connect(p.fd, (struct sockaddr *)&sin, sizeof(sin)) == 0)
            continue;
        assert_int_equal(errno, EINPROGRESS);
        if (poll(&p, 1, 100) == 0)
            return n; /* this one hangs: the queue is full */
    }
    fail_msg("could not fill the listen queue of port %d", f->srv.port);
    return n;
}

/*
 * A connect that never completes (a host that drops SYNs) and a graceful
 * close meanwhile: the setup replies never come, so the watchdog drops the
 * context at the reply deadline and the close completes.
 */
static void
test_close_while_connect_hangs(void **state)
{
    struct fx *f = *state;
    int fds[8], n;

    n = jam_port(f, fds, 8);
    f->rc = rconn_new(&f->loop, &f->addr, "test", 200, on_state, f);
    rconn_start(f->rc);
    RUN_FOR(f, 100);
    assert_int_equal(f->ups + f->downs, 0);
    rconn_close(f->rc, 0, on_closed_free, f);
    RUN_UNTIL(f, f->closed, 2000);
    assert_true(f->closed);
    while (n > 0)
        close(fds[--n]);
    fx_finish(f);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_format_matches_hiredis),
        cmocka_unit_test(test_format_fuzz),
        cmocka_unit_test_setup_teardown(test_connect_and_reply, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_kill_and_reconnect, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_auth_select, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_setup_refused, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_watchdog, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_close_graceful, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_close_forced, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_close_while_down, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_close_while_connecting, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_close_while_connect_hangs, fx_setup, fx_teardown),
    };
    int failed;

    signal(SIGPIPE, SIG_IGN); /* as otpd's main: hiredis writes with write(2) */
    redis_bin = test_redis_setup("rconn");
    if (redis_bin == NULL)
        print_message("test_rconn: redis-server not on PATH: the connection tests skip\n");
    failed = cmocka_run_group_tests(tests, NULL, NULL);
    test_redis_cleanup();
    return failed;
}

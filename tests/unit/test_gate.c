/*
 * test_gate.c: the provider gate on a real libuv loop: the cap on requests
 * in flight, FIFO waiters, the cap lowered by a provider's concurrency
 * refusal (Twilio 20429) and grown back by successes, and, with the gate's
 * own timer firing, the token-bucket rate, a pause (Retry-After) and a
 * waiter cancelled while it waits.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <uv.h>

#include "gate.h"

struct waiter {
    struct gate_waiter w; /* first: the callback gets its address */
    int ready;
};

/* A waiter that notes when, and in which order, it was let through. */
struct twaiter {
    struct gate_waiter w; /* first, as above */
    int ready;
    uv_loop_t *loop;
    uint64_t at;
    int seq;
};

static int ready_seq;

static void
on_ready(struct gate_waiter *w)
{
    ((struct waiter *)w)->ready = 1;
}

static void
on_ready_at(struct gate_waiter *gw)
{
    struct twaiter *w = (struct twaiter *)gw;

    w->ready++;
    w->at = uv_now(w->loop);
    w->seq = ++ready_seq;
}

static void
stop_cb(uv_timer_t *t)
{
    uv_stop(t->loop);
}

/* The loop's time now, not as of the last iteration. */
static uint64_t
now_ms(uv_loop_t *loop)
{
    uv_update_time(loop);
    return uv_now(loop);
}

static void
on_closed(void *arg)
{
    *(int *)arg = 1;
}

static void
close_gate(uv_loop_t *loop, struct gate *g)
{
    int closed = 0;

    gate_close(g, on_closed, &closed);
    uv_run(loop, UV_RUN_DEFAULT);
    assert_int_equal(closed, 1);
}

static void
test_cap_and_fifo(void **state)
{
    uv_loop_t loop;
    struct gate *g;
    struct waiter w[3] = {{{0}, 0}};

    (void)state;
    assert_int_equal(uv_loop_init(&loop), 0);
    g = gate_new(&loop, 0, 2);
    assert_int_equal(gate_try_enter(g), 1);
    assert_int_equal(gate_try_enter(g), 1);
    assert_int_equal(gate_enter(g, &w[0].w, on_ready), 0);
    assert_int_equal(gate_enter(g, &w[1].w, on_ready), 0);
    assert_int_equal(gate_waiting(g), 2);
    gate_leave(g);
    assert_true(w[0].ready && !w[1].ready); /* first come, first served */
    gate_leave(g);
    assert_true(w[1].ready);
    assert_int_equal(gate_inflight(g), 2);
    close_gate(&loop, g);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* 20429 with 10 others in flight: the cap becomes 10, and waiters stay waiting. */
static void
test_congestion_lowers_then_grows(void **state)
{
    uv_loop_t loop;
    struct gate *g;
    struct waiter w = {{0}, 0};

    (void)state;
    assert_int_equal(uv_loop_init(&loop), 0);
    g = gate_new(&loop, 0, 100);
    for (int i = 0; i < 11; i++)
        assert_int_equal(gate_try_enter(g), 1);
    assert_int_equal(gate_congested(g), 10); /* before the refused one leaves */
    gate_leave(g);
    assert_int_equal(gate_limit(g), 10);
    assert_int_equal(gate_enter(g, &w.w, on_ready), 0); /* 10 in flight: full */
    /* A second refusal with fewer open lowers it further, never below 1. */
    for (int i = 0; i < 9; i++)
        gate_leave(g);
    assert_true(w.ready); /* one left in flight, room under 10 */
    assert_int_equal(gate_inflight(g), 2);
    assert_int_equal(gate_congested(g), 1);
    gate_leave(g);
    assert_int_equal(gate_congested(g), 1);
    /* Additive increase: a window of `limit` successes adds one. */
    gate_relieved(g);
    assert_int_equal(gate_limit(g), 2);
    gate_relieved(g);
    assert_int_equal(gate_limit(g), 2);
    gate_relieved(g);
    assert_int_equal(gate_limit(g), 3);
    for (int i = 0; i < 10000; i++)
        gate_relieved(g);
    assert_int_equal(gate_limit(g), 100); /* never above the configured cap */
    /* A reload restores the configured cap at once. */
    gate_congested(g);
    gate_configure(g, 0, 50);
    assert_int_equal(gate_limit(g), 50);
    close_gate(&loop, g);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/*
 * 10 per second: the full bucket (one second's worth) goes at once; after
 * that the gate's timer lets one through per 100 ms, so a second of the
 * loop lets about 10 more through, each no earlier than its token.
 */
static void
test_rate_on_loop(void **state)
{
    uv_loop_t loop;
    uv_timer_t stop;
    struct gate *g;
    struct twaiter w[14];
    uint64_t t0;
    int n = 0;

    (void)state;
    memset(w, 0, sizeof(w));
    assert_int_equal(uv_loop_init(&loop), 0);
    t0 = now_ms(&loop);
    g = gate_new(&loop, 10, 0);
    for (int i = 0; i < 10; i++)
        assert_int_equal(gate_try_enter(g), 1);
    assert_int_equal(gate_try_enter(g), 0);
    for (int i = 0; i < 14; i++) {
        w[i].loop = &loop;
        assert_int_equal(gate_enter(g, &w[i].w, on_ready_at), 0);
    }
    assert_int_equal(uv_timer_init(&loop, &stop), 0);
    uv_timer_start(&stop, stop_cb, 1050, 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    for (int i = 0; i < 14; i++) {
        if (!w[i].ready)
            continue;
        n++;
        assert_int_equal(w[i].ready, 1);
        if (i > 0)
            assert_int_equal(w[i].seq, w[i - 1].seq + 1);
        assert_true(w[i].at - t0 >= (uint64_t)(i + 1) * 100);
    }
    print_message("  rate 10/s: %d let through in 1050 ms of loop time\n", n);
    /* 10 on time; one more only if the machine stalled the loop past 1100 ms. */
    assert_true(n >= 9 && n <= 11);
    for (int i = 0; i < n; i++)
        assert_true(w[i].ready); /* FIFO: the first n */
    for (int i = n; i < 14; i++)
        gate_cancel(g, &w[i].w);
    assert_int_equal(gate_waiting(g), 0);
    assert_int_equal(gate_inflight(g), 10 + n);
    uv_close((uv_handle_t *)&stop, NULL);
    close_gate(&loop, g);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/*
 * A pause (Retry-After) holds everyone, newcomers and those already
 * waiting for the cap, until the loop time given, then lets them go in
 * arrival order.  A shorter pause never shortens a longer one.
 */
static void
test_pause_then_fifo(void **state)
{
    uv_loop_t loop;
    struct gate *g;
    struct twaiter w[4];
    uint64_t t0, t1;

    (void)state;
    memset(w, 0, sizeof(w));
    assert_int_equal(uv_loop_init(&loop), 0);
    g = gate_new(&loop, 0, 0);
    t0 = now_ms(&loop);
    gate_pause(g, t0 + 150);
    gate_pause(g, t0 + 20);
    assert_int_equal(gate_try_enter(g), 0);
    for (int i = 0; i < 3; i++) {
        w[i].loop = &loop;
        assert_int_equal(gate_enter(g, &w[i].w, on_ready_at), 0);
    }
    assert_int_equal(gate_waiting(g), 3);
    uv_run(&loop, UV_RUN_DEFAULT); /* returns once nothing waits */
    for (int i = 0; i < 3; i++) {
        assert_int_equal(w[i].ready, 1);
        assert_true(w[i].at >= t0 + 150);
        if (i > 0)
            assert_true(w[i].seq == w[i - 1].seq + 1);
    }
    assert_int_equal(gate_inflight(g), 3);

    /* Waiting for the cap when the pause comes: a leave does not let it through. */
    gate_configure(g, 0, 3);
    w[3].loop = &loop;
    assert_int_equal(gate_enter(g, &w[3].w, on_ready_at), 0);
    t1 = now_ms(&loop);
    gate_pause(g, t1 + 100);
    gate_leave(g);
    assert_int_equal(w[3].ready, 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(w[3].ready, 1);
    assert_true(w[3].at >= t1 + 100);
    close_gate(&loop, g);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* A cancelled waiter is never called; the others keep their order. */
static void
test_cancel_waiter(void **state)
{
    uv_loop_t loop;
    struct gate *g;
    struct twaiter w[6];
    uint64_t t0;

    (void)state;
    memset(w, 0, sizeof(w));
    for (int i = 0; i < 6; i++)
        w[i].loop = &loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    g = gate_new(&loop, 0, 1);
    assert_int_equal(gate_try_enter(g), 1);
    for (int i = 0; i < 3; i++)
        assert_int_equal(gate_enter(g, &w[i].w, on_ready_at), 0);
    gate_cancel(g, &w[1].w); /* the middle */
    assert_int_equal(gate_waiting(g), 2);
    assert_int_equal(w[1].w.waiting, 0);
    gate_cancel(g, &w[1].w); /* twice: nothing */
    assert_int_equal(gate_waiting(g), 2);
    gate_cancel(g, &w[2].w); /* the tail: a newcomer must still queue behind w[0] */
    assert_int_equal(gate_enter(g, &w[3].w, on_ready_at), 0);
    assert_int_equal(gate_waiting(g), 2);
    gate_leave(g);
    assert_true(w[0].ready && !w[3].ready);
    gate_leave(g);
    assert_true(w[3].ready);
    assert_int_equal(w[1].ready + w[2].ready, 0);
    gate_cancel(g, &w[0].w); /* already through: nothing */
    assert_int_equal(gate_inflight(g), 1);
    close_gate(&loop, g);

    /* On the loop: the head cancelled while the timer runs for it. */
    t0 = now_ms(&loop);
    g = gate_new(&loop, 10, 0);
    for (int i = 0; i < 10; i++)
        assert_int_equal(gate_try_enter(g), 1);
    assert_int_equal(gate_enter(g, &w[4].w, on_ready_at), 0);
    assert_int_equal(gate_enter(g, &w[5].w, on_ready_at), 0);
    gate_cancel(g, &w[4].w);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(w[4].ready, 0);
    assert_int_equal(w[5].ready, 1); /* the token w[4] waited for */
    assert_true(w[5].at >= t0 + 100);
    assert_int_equal(gate_waiting(g), 0);
    close_gate(&loop, g);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cap_and_fifo),
        cmocka_unit_test(test_congestion_lowers_then_grows),
        /* The gate's own timer firing on uv_run. */
        cmocka_unit_test(test_rate_on_loop),
        cmocka_unit_test(test_pause_then_fifo),
        cmocka_unit_test(test_cancel_waiter),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * test_gate.c: the provider gate on a real libuv loop: the cap on requests
 * in flight, FIFO waiters, and the cap lowered by a provider's concurrency
 * refusal (Twilio 20429) and grown back by successes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <uv.h>

#include "gate.h"

struct waiter {
    struct gate_waiter w; /* first: the callback gets its address */
    int ready;
};

static void
on_ready(struct gate_waiter *w)
{
    ((struct waiter *)w)->ready = 1;
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

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cap_and_fifo),
        cmocka_unit_test(test_congestion_lowers_then_grows),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * run_until.h: how the event-core tests drive a real libuv loop until a
 * condition holds.  The fixture f has uv_loop_t loop, uv_timer_t deadline
 * (uv_timer_init'ed on that loop) and int expired.
 *
 * Every callback of a fixture ends its uv_run(UV_RUN_ONCE) with uv_stop():
 * without it, a timer callback that makes the awaited condition true would
 * be followed by a poll blocking until the next event.
 */
#ifndef OTPD_TEST_RUN_UNTIL_H
#define OTPD_TEST_RUN_UNTIL_H

#include <uv.h>

static inline void
run_until_expired(uv_timer_t *t)
{
    *(int *)t->data = 1;
    uv_stop(t->loop);
}

/* Runs the loop until cond holds or ms pass; the caller asserts cond. */
#define RUN_UNTIL(f, cond, ms)                                                                     \
    do {                                                                                           \
        (f)->expired = 0;                                                                          \
        (f)->deadline.data = &(f)->expired;                                                        \
        uv_update_time(&(f)->loop);                                                                \
        uv_timer_start(&(f)->deadline, run_until_expired, (ms), 0);                                \
        while (!(cond) && !(f)->expired)                                                           \
            uv_run(&(f)->loop, UV_RUN_ONCE);                                                       \
        uv_timer_stop(&(f)->deadline);                                                             \
    } while (0)

/* Runs the loop for ms. */
#define RUN_FOR(f, ms) RUN_UNTIL(f, 0, ms)

#endif

/*
 * redis_server.h: a private redis-server for the unit tests that need a
 * real one (test_rconn, test_delivery).  It lives in a scratch directory of
 * the test's own, listens on a unix socket (and a loopback port if asked),
 * and dies with the test.
 */
#ifndef OTPD_TEST_REDIS_SERVER_H
#define OTPD_TEST_REDIS_SERVER_H

#include <sys/types.h>

struct test_redis {
    pid_t pid;               /* 0: not running */
    int port;                /* 0: the unix socket only */
    char sock[128];          /* set by test_redis_init() */
    const char *const *args; /* extra redis-server arguments, NULL-terminated */
};

/*
 * Finds redis-server on PATH and makes the scratch directory
 * ($TMPDIR/otpd-<name>.XXXXXX, short enough for a socket path).  Returns
 * the binary, or NULL if there is none (the caller's tests skip); exits
 * if the directory cannot be made.
 */
const char *test_redis_setup(const char *name);
/* Removes the scratch directory and what redis-server left in it. */
void test_redis_cleanup(void);
/* Fills r->sock for a new server in the scratch directory. */
void test_redis_init(struct test_redis *r, int port);
/* Starts it and waits until it answers; fails the test otherwise. */
void test_redis_start(struct test_redis *r);
void test_redis_kill(struct test_redis *r);

/* A loopback port nobody listens on now (the kernel's pick, released at once). */
int test_free_port(void);
void test_sleep_ms(int ms);

#endif

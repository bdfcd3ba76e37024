/*
 * sentinel.h: where the Redis master is, asked of Redis Sentinel.
 *
 * The documented client rules (redis.io, "Sentinel client spec"): ask each
 * sentinel in turn with a short timeout, move the first that answers to
 * the front of the list, and hear "+switch-master" to move at once.  The
 * connections (rconn) ask again on every reconnect; confirming ROLE and
 * leaving on a READONLY reply are theirs.
 */
#ifndef OTPD_SENTINEL_H
#define OTPD_SENTINEL_H

#include <hiredis/hiredis.h>
#include <uv.h>

#include "config.h"

#define SENTINEL_ASK_TIMEOUT_MS 500 /* per sentinel, connect and answer */

struct sentinel;

/* host NULL: no sentinel answered; err says why. */
typedef void sentinel_resolved_cb(void *arg, const char *host, int port, const char *err);
/* The sentinels moved the master (+switch-master for our master's name). */
typedef void sentinel_moved_cb(void *arg, const char *host, int port);

struct sentinel_stats {
    unsigned long long asked;    /* master addresses asked for */
    unsigned long long failures; /* askings no sentinel answered */
    unsigned long long switches; /* +switch-master heard */
};

/*
 * The two answers a sentinel gives, read (pure; fuzz_sentinel.c): the reply
 * to SENTINEL get-master-addr-by-name, and a +switch-master message
 * ("<name> <old-ip> <old-port> <new-ip> <new-port>") for our master's
 * name.  0 with host and port set, or -1 (why says it for the first).
 */
int sentinel_parse_master(const redisReply *r, const char *name, char *host, size_t hostlen,
                          int *port, char *why, size_t whylen);
int sentinel_parse_switch(const char *text, const char *name, char *host, size_t hostlen,
                          int *port);

struct sentinel *sentinel_new(uv_loop_t *loop, const struct config *cfg);
/* Subscribe to +switch-master on one sentinel (the next one if it goes). */
void sentinel_watch(struct sentinel *s, sentinel_moved_cb *cb, void *arg);
/*
 * The master's address, from the first sentinel that answers; cb runs
 * later (inside this call only if no sentinel could even be tried: out of
 * memory).  Callers asking at once share one asking.  -1 if too many wait
 * already.
 */
int sentinel_resolve(struct sentinel *s, sentinel_resolved_cb *cb, void *arg);
/* arg no longer wants an answer. */
void sentinel_cancel(struct sentinel *s, void *arg);
const struct sentinel_stats *sentinel_stats(const struct sentinel *s);
/* Closes its connections; cb once they are gone, then sentinel_free(). */
void sentinel_close(struct sentinel *s, void (*cb)(void *arg), void *arg);
void sentinel_free(struct sentinel *s);

#endif

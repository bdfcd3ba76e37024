/*
 * rconn.h: one Redis connection on the libuv loop, kept alive.
 *
 * hiredis 0.14 has no reconnect and no timeouts for async contexts, and
 * its libuv adapter swallows socket errors.  rconn carries its own adapter,
 * reconnects with capped backoff, and drops a connection whose replies
 * stall past a deadline.  Each command's callback runs exactly once, with
 * a NULL reply if the connection went away first.
 */
#ifndef OTPD_RCONN_H
#define OTPD_RCONN_H

#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <uv.h>

#include "config.h"

#define NARGS(a) ((int)(sizeof(a) / sizeof((a)[0])))

struct rconn;
struct sentinel;
/* up is 1 once connected, authenticated and on the right db; 0 when lost. */
typedef void rconn_state_cb(struct rconn *rc, int up, void *arg);
typedef void rconn_closed_cb(void *arg);

/*
 * reply_deadline_ms: longest wait for a reply before the connection is
 * declared dead (a blocking reader passes its BLOCK time plus a margin).
 */
struct rconn *rconn_new(uv_loop_t *loop, const struct redis_addr *addr, const char *name,
                        int reply_deadline_ms, rconn_state_cb *cb, void *arg);
/* Ask s for the master on every connect, and confirm its ROLE (before rconn_start). */
void rconn_set_sentinel(struct rconn *rc, struct sentinel *s);
void rconn_start(struct rconn *rc);
/* The sentinels moved the master: leave the old one now, connect to the new one soon. */
void rconn_master_moved(struct rconn *rc, const char *host, int port);
int rconn_is_up(const struct rconn *rc);
/* Redis's CLIENT ID for this connection (valid while up). */
long long rconn_client_id(const struct rconn *rc);
const char *rconn_name(const struct rconn *rc);

/* 0 if queued; -1 if the connection is not up (cb is not called). */
int rconn_command(struct rconn *rc, redisCallbackFn *cb, void *priv, int argc, const char **argv,
                  const size_t *argvlen);

/*
 * Graceful: pending replies are awaited, then cb; then rconn_free().  With
 * force, pending callbacks run at once with a NULL reply.
 */
void rconn_close(struct rconn *rc, int force, rconn_closed_cb *cb, void *arg);
void rconn_free(struct rconn *rc);

/*
 * The RESP text of one command (argvlen NULL: NUL-terminated arguments),
 * byte for byte what hiredis's redisFormatCommandArgv() writes, into *buf:
 * grown as needed, *cap its size, the caller frees it.  rconn formats every
 * command with it into one reused buffer; it is public for
 * tests/unit/test_rconn.c, which holds it to hiredis's bytes, and for
 * bench/resp_format.c, which times it.  0, or -1 out of memory.
 */
int rconn_format_command(char **buf, size_t *cap, size_t *len, int argc, const char **argv,
                         const size_t *argvlen);

/* Text of an error reply or the connection's error, for logs. */
const char *rconn_reply_error(const redisReply *reply);

#endif

/*
 * store.h: what the daemon writes back for the web app: the OTP record
 * (keyed hash of the code), the job's status record and the events stream.
 * Only store.c knows those key layouts.
 */
#ifndef OTPD_STORE_H
#define OTPD_STORE_H

#include <stdint.h>

#include "config.h"
#include "otpd.h"
#include "rconn.h"

struct status_update {
    enum job_status status;
    const char *provider;
    const char *provider_ref;
    const char *provider_status; /* the provider's own word, e.g. Twilio "queued" */
    const char *error_code;
    const char *error;
    int attempts;
    int64_t sent_ms;
    int delete_otp; /* the code can no longer be delivered: burn its record */
    int opted_out;  /* remember the number as unsubscribed (STOP) */
    int64_t retry_at_ms;
};

/* ok: 0 done, 1 (store_begin only) superseded by a newer code, -1 error. */
typedef void store_done_cb(void *arg, int ok, const char *err);

struct store;
struct store *store_new(const struct config *cfg, struct rconn *writer);
void store_free(struct store *st);

/*
 * Before sending: the OTP record (unless a newer code for the same number
 * and purpose already exists) and status "sending", in one transaction.
 */
int store_begin(struct store *st, const struct job *job, const char *mac, store_done_cb *cb,
                void *arg);
/*
 * Before anything else: take the job's id for this stream entry.  The
 * verdict says whether to go on (CLAIM_NEW), acknowledge as it stands
 * because the job already reached a final status (CLAIM_DONE: a reclaim
 * after a crash between the status write and the ack), or drop it as a
 * second job with an id already in use (CLAIM_DUPLICATE).
 */
enum store_claim_verdict { CLAIM_NEW, CLAIM_DONE, CLAIM_DUPLICATE };
typedef void store_claim_cb(void *arg, int verdict, const char *status, const char *err);
int store_claim(struct store *st, const struct job *job, const char *stream_id, store_claim_cb *cb,
                void *arg);
/* Record a duplicate (an event and a counter) without touching the first job's record. */
/* A rejected job's record, event and count; never overwrites another job's record. */
int store_reject(struct store *st, const struct job *job, const char *stream_id, const char *reason,
                 store_done_cb *cb, void *arg);
int store_duplicate(struct store *st, const struct job *job, store_done_cb *cb, void *arg);

/*
 * Per-number, global and per-country limits and opt-outs, atomically
 * (the script in store_limits_lua).  limited is 0 (go), 1 (reason and
 * retry_after_ms say why and until when) or -1 (Redis error in err).
 */
typedef void store_limit_cb(void *arg, int limited, const char *reason, long long retry_after_ms,
                            const char *err);
int store_limit(struct store *st, const struct job *job, const char *cc, store_limit_cb *cb,
                void *arg);
void store_publish_limits(struct store *st);
/* SCRIPT LOAD every script; on each writer (re)connect, before anything else. */
void store_load_scripts(struct store *st);
extern const char store_limits_lua[];

/*
 * A delivery receipt for a provider's message (webhook or poll).  verdict:
 * 0 unknown message, 1 nothing changed (late or repeated), 2 applied, -1
 * Redis error.  sent_ms and the calling code let the caller measure latency.
 */
typedef void store_receipt_cb(void *arg, int verdict, const char *job_id, long long sent_ms,
                              const char *cc, const char *err);
int store_receipt(struct store *st, const char *provider, const char *ref, enum job_status status,
                  const char *provider_status, const char *error_code, const char *error,
                  store_receipt_cb *cb, void *arg);

int store_status(struct store *st, const struct job *job, const struct status_update *u,
                 store_done_cb *cb, void *arg);

#endif

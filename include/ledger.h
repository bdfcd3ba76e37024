/*
 * ledger.h: every write a job makes to Redis, and nothing else writes them.
 *
 * A job's life is two atomic steps, each one script and one round trip:
 *
 *   begin   claim the id, apply the limits and opt-outs, write the OTP
 *           record (a newer code wins) and the "sending" status; or end
 *           the job there (duplicate, already final, limited, superseded)
 *           with its entry acknowledged;
 *   finish  the final status, event, counters, receipt reference, opt-out
 *           and burnt code, together with XACK and XDEL.
 *
 * So no crash can leave a final status without its acknowledgement or the
 * reverse.  Both steps run in batches: every job that reaches a step in one
 * turn of the loop (up to 64) shares one EVALSHA, sent when the turn ends,
 * and each job gets its own answer through its callback.  Between the two, "retrying" is noted
 * (ledger_note()); a job otpd cannot parse is rejected in one step (ledger_reject()).  The scripts
 * are the .lua files of python/otpd/lua, compiled in; the web app's client loads limits.lua and
 * verify.lua from the same files.
 */
#ifndef OTPD_LEDGER_H
#define OTPD_LEDGER_H

#include <stdint.h>

#include <uv.h>

#include "config.h"
#include "otpd.h"
#include "rconn.h"

struct ledger;
struct ledger *ledger_new(uv_loop_t *loop, const struct config *cfg, struct rconn *writer);
/* Stops the timer that publishes the limits again every 10 s; then ledger_free(). */
void ledger_close(struct ledger *l, void (*cb)(void *arg), void *arg);
void ledger_free(struct ledger *l);
/* On every (re)connect: load the scripts and publish the limits. */
void ledger_writer_up(struct ledger *l);
/* The limits the web app's early check reads ({p}limits); see docs/protocol.md section 7. */
void ledger_publish_limits(struct ledger *l);
/* The configuration was reloaded (SIGHUP): take its numbers, publish the limits. */
void ledger_reload(struct ledger *l);

/* A job as the ledger writes it: the job, its stream entry, its calling code. */
struct ledger_job {
    const struct job *job;
    const char *stream_id;
    const char *cc;
    int replace_code; /* the code of record did not open: replace it, whoever made it */
    /* SMS: what the pumping model and the spend count (docs/fraud.md) */
    const char *fraud_prefix; /* the number's prefix ("" or NULL: not counted) */
    int segments;             /* of the text as it will be sent */
    const char *encoding;     /* "gsm7" or "ucs2" */
    long price_micro;         /* expected, in micro-units of OTPD_PRICE_CURRENCY; -1 unknown */
};

enum ledger_verdict {
    LEDGER_ERROR = -1,    /* Redis refused or went away: nothing changed, try again */
    LEDGER_GO = 0,        /* begun: send the code */
    LEDGER_DONE = 1,      /* already final (a reclaim whose ack was lost): acknowledged */
    LEDGER_DUPLICATE = 2, /* the id belongs to another entry: acknowledged */
    LEDGER_DENIED = 3,    /* ended by the limits, an opt-out or a newer code: acknowledged */
    LEDGER_RESEND = 4,    /* a valid code exists for this number and purpose: send that one */
};

/* What begin decided; the strings live until the callback returns. */
struct ledger_begun {
    enum ledger_verdict verdict;
    const char *status;     /* DONE/DUPLICATE: the id's status; DENIED: the job's */
    const char *error_code; /* DENIED: per_hour, opted_out, superseded, ... */
    const char *error;      /* DENIED: the reason, for humans */
    long long retry_after_ms;
    const char *sealed;   /* RESEND: the code of record, sealed (otp_open) */
    long long expires_ms; /* RESEND: its deadline, which the resend keeps */
    int reclaimed;        /* RESEND: it is this job's own code (a reclaim after a crash) */
    int paused;           /* DENIED suspected_pumping: this job's code made the pause */
    const char *err;      /* LEDGER_ERROR: why */
};
typedef void ledger_begin_cb(void *arg, const struct ledger_begun *b);
/*
 * mac: the new code's keyed hash, sealed: the new code sealed (otp_seal),
 * written unless a valid code of record is sent again (LEDGER_RESEND).
 * -1 if not connected (the callback does not run).
 */
int ledger_begin(struct ledger *l, const struct ledger_job *lj, const char *mac, const char *sealed,
                 ledger_begin_cb *cb, void *arg);

/*
 * The next channel for a job that may not have reached its user: finish
 * schedules it (fallback.lua fires it when due, or at once if not sent).
 */
struct ledger_fallback {
    const char *job_json; /* the next job, as the stream takes it */
    const char *next_id;
    int channel;        /* enum job_channel */
    const char *otp;    /* the code's record: purpose:number */
    int64_t expires_ms; /* the code's deadline when this job sent it */
    int64_t due_ms;     /* when to send it unless the code is verified first */
};

/* A job's end. */
struct ledger_outcome {
    enum job_status status;
    const char *provider; /* "" before a provider was tried */
    const char *provider_ref;
    const char *provider_status;
    const char *error_code;
    const char *error;
    int attempts;
    int64_t sent_ms; /* 0 unless sent */
    int burn_code;   /* the code can no longer be delivered: delete its record */
    int opted_out;   /* remember the number as unsubscribed (STOP) */
    int begun;       /* begin wrote the record: the number and times are there */
    int poll;        /* sent, and no webhook will report it: schedule polling (poll.lua) */
    const struct ledger_fallback *fallback; /* or NULL */
};
/* ok: 0 written and acknowledged, -1 refused (err says why; try again). */
typedef void ledger_done_cb(void *arg, int ok, const char *err);
int ledger_finish(struct ledger *l, const struct ledger_job *lj, const struct ledger_outcome *o,
                  ledger_done_cb *cb, void *arg);
/* "retrying": the status, event and counters, the entry left pending. */
int ledger_note(struct ledger *l, const struct ledger_job *lj, const struct ledger_outcome *o,
                ledger_done_cb *cb, void *arg);
/*
 * A job otpd cannot run: its status record (never another job's), the dead
 * letter with the payload's first bytes and the reason, the acknowledgement.
 */
int ledger_reject(struct ledger *l, const struct ledger_job *lj, const char *payload, size_t len,
                  const char *reason, ledger_done_cb *cb, void *arg);

/*
 * A delivery receipt for a provider's message.  verdict: 0 unknown ref,
 * 1 no change (late or repeated), 2 applied, -1 error.  price_micro: the
 * provider's price for the message in micro-units of price_unit (-1: it
 * gave none); it replaces the expected one in the spend.
 */
typedef void ledger_receipt_cb(void *arg, int verdict, const char *job_id, long long sent_ms,
                               const char *cc, const char *err);
int ledger_receipt(struct ledger *l, const char *provider, const char *ref, enum job_status status,
                   const char *provider_status, const char *error_code, const char *error,
                   long price_micro, const char *price_unit, ledger_receipt_cb *cb, void *arg);

/*
 * The receipt-polling schedule, {p}polls (poll.lua; finish adds to it):
 * ledger_poll_take() hands the due members (provider|ref|until_ms|backoff_ms)
 * to cb, each leased for lease_ms so no other instance polls it meanwhile;
 * ledger_poll_next() reschedules a member as next at next_ms, or removes it
 * (next NULL).  -1 if not connected.
 */
typedef void ledger_polls_cb(void *arg, const char *const *members, size_t n, const char *err);
int ledger_poll_take(struct ledger *l, int max, int lease_ms, ledger_polls_cb *cb, void *arg);
int ledger_poll_next(struct ledger *l, const char *member, const char *next, int64_t next_ms);

/*
 * The fallbacks that are due (fallback.lua): each one's next job queued, or
 * the reason it was not needed (verified, expired, replaced, locked, gone).
 */
struct ledger_fallback_fired {
    const char *id, *verdict, *channel, *next_id;
};
typedef void ledger_fallbacks_cb(void *arg, const struct ledger_fallback_fired *f, size_t n,
                                 const char *err);
int ledger_fallbacks_fire(struct ledger *l, int max, ledger_fallbacks_cb *cb, void *arg);

/* WAITs for replicas after batches ([0] begin, [1] finish), and those fewer answered. */
struct ledger_stats {
    unsigned long long waits[2], waits_short[2];
};
const struct ledger_stats *ledger_stats(const struct ledger *l);

/* The scripts, as compiled in (otpd --print-limits-script). */
extern const char lua_limits[];

#endif

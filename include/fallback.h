/*
 * fallback.h: when a code may not have reached its user, the same code by
 * the next channel.  A job names its fallback channels ("fallback":
 * ["voice"], or OTPD_FALLBACK for SMS jobs without one); when it ends,
 * finish schedules the next job, due OTPD_FALLBACK_DELAY_S after it was
 * sent, or at once if it was not sent; an undelivered or failed receipt
 * makes it due at once.  When it is due and the code is still valid and
 * not verified, fallback.lua queues the next job, which delivers the code
 * of record and never a new one.  Once per channel, within the code's
 * lifetime and the limits.  See docs/protocol.md section 15.
 */
#ifndef OTPD_FALLBACK_H
#define OTPD_FALLBACK_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "config.h"
#include "ledger.h"

/* The next job after `job` (JSON for the stream), or -1 if it has none (or it does not fit). */
struct fallback_next {
    char json[2048];
    char next_id[JOB_ID_MAX + 1];
    char otp[JOB_PURPOSE_MAX + JOB_TO_MAX + 2]; /* the code's record: purpose:number */
    struct ledger_fallback lf;
};
int fallback_next_job(const struct config *cfg, const struct job *job, int64_t sent_ms,
                      struct fallback_next *out);

/* Channels of OTPD_FALLBACK ("voice" or ""), checked at start. */
int fallback_parse_setting(const char *spec, int *channels, int *n, char *err, size_t errlen);

struct fallback_stats {
    uint64_t queued, not_needed;
};

struct fallbacks;
struct fallbacks *fallbacks_new(uv_loop_t *loop, struct ledger *ledger);
void fallbacks_close(struct fallbacks *f, void (*cb)(void *arg), void *arg);
void fallbacks_free(struct fallbacks *f);
const struct fallback_stats *fallbacks_stats(const struct fallbacks *f);

#endif

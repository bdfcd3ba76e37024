/* backoff.h: retry delays.  Pure, so it is unit-tested. */
#ifndef OTPD_BACKOFF_H
#define OTPD_BACKOFF_H

#include <stdint.h>

/*
 * Exponential backoff with full jitter: uniform in [0, min(cap, base*2^(n-1))]
 * for the n-th retry, from the random value rnd.  Full jitter spreads the
 * retries of many jobs that failed together (a provider outage) instead of
 * sending them back in one wave.
 */
uint64_t backoff_full_jitter(int retry, uint64_t base_ms, uint64_t cap_ms, uint32_t rnd);

/* The plain exponential ceiling, used for provider rechecks. */
uint64_t backoff_ceiling(int retry, uint64_t base_ms, uint64_t cap_ms);

#endif

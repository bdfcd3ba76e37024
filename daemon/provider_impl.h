/*
 * provider_impl.h: the head every provider object starts with, for the
 * provider set (provider.c) and the provider files only.  The rest of the
 * daemon sees struct provider as opaque (provider.h): a provider's health
 * and gate belong to the set, its wire format to its own file.
 */
#ifndef OTPD_PROVIDER_IMPL_H
#define OTPD_PROVIDER_IMPL_H

#include <stdint.h>

#include "gate.h"
#include "provider.h"

struct provider {
    const struct provider_ops *ops;
    struct gate *gate;   /* throughput: rate, concurrency, pause */
    int fail_streak;     /* consecutive failed requests (circuit breaker) */
    int down;            /* circuit open: provider-wide failure or too many failures */
    int down_count;      /* consecutive failed probes */
    uint64_t recheck_at; /* loop time when traffic may try it again */
    char down_reason[REASON_MAX];
};

#endif

/* backoff.c: retry delay arithmetic. */
#include "backoff.h"

uint64_t
backoff_ceiling(int retry, uint64_t base_ms, uint64_t cap_ms)
{
    uint64_t d = base_ms;

    for (int i = 1; i < retry && d < cap_ms; i++) {
        if (d > cap_ms / 2)
            return cap_ms;
        d *= 2;
    }
    return d < cap_ms ? d : cap_ms;
}

uint64_t
backoff_full_jitter(int retry, uint64_t base_ms, uint64_t cap_ms, uint32_t rnd)
{
    uint64_t ceil = backoff_ceiling(retry, base_ms, cap_ms);

    return (uint64_t)(((double)rnd / 4294967296.0) * (double)(ceil + 1));
}

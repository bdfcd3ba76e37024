/*
 * metrics.h: Prometheus text exposition of what the daemon counts.
 * Provider request latencies are observed here as they happen; the rest
 * is read from the deliveries, the monitor and the providers at scrape time.
 */
#ifndef OTPD_METRICS_H
#define OTPD_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "delivery.h"
#include "fraud.h"
#include "httpd.h"
#include "ledger.h"
#include "monitor.h"
#include "provider.h"
#include "sentinel.h"

void metrics_observe_request(const char *provider, enum send_outcome outcome, double seconds);
/* Sent -> delivered, by provider and destination calling code. */
void metrics_observe_delivery(const char *provider, const char *cc, double seconds);

/*
 * A job's end: its status by provider ("" if none was tried) and calling
 * code; for sent, the time since the site enqueued it (created_ms).
 */
void metrics_observe_end(const char *provider, const char *cc, enum job_status status,
                         double since_enqueue_s);

/* A delivery receipt that changed a job: its new status, by provider and calling code. */
void metrics_observe_receipt(const char *provider, const char *cc, enum job_status status);

/* An SMS the provider accepted: its segments, by provider and calling code. */
void metrics_observe_segments(const char *provider, const char *cc, int segments);

/* Redis as this instance sees it. */
struct fallback_stats;
struct metrics_redis {
    const struct fallback_stats *fallbacks;
    int reader_up, writer_up;
    const struct ledger_stats *ledger;
    const struct sentinel_stats *sentinel; /* NULL without Sentinel */
};

/* The whole page; malloc'd, *len set.  http: the endpoint's own connection counts. */
char *metrics_render(const struct config *cfg, const struct deliveries *d,
                     const struct monitor_gauges *g, const struct fraud_view *fraud,
                     struct provider_set *providers, const struct httpd_stats *http,
                     const struct metrics_redis *redis, uint64_t now, size_t *len);

#endif

/*
 * monitor.h: the instance heartbeat ({p}instance:{consumer}, a hash that
 * expires unless refreshed, so a missing key means a dead instance), the
 * event-loop lag probe and the backlog gauges.  Also the systemd notify
 * protocol, which reports the same numbers.
 */
#ifndef OTPD_MONITOR_H
#define OTPD_MONITOR_H

#include <stdint.h>

#include <uv.h>

#include "config.h"
#include "delivery.h"
#include "provider.h"
#include "rconn.h"

struct monitor_gauges {
    int64_t backlog;           /* XLEN of the job stream */
    int64_t dead_letters;      /* XLEN of the dead-letter stream */
    int64_t pending;           /* entries claimed by the group, not yet acked */
    int64_t oldest_pending_ms; /* age of the oldest of them (its entry id's time); 0 if none */
    uint64_t loop_lag_ms;      /* worst lateness of a timer over the last period */
    int64_t started_ms;
};

struct monitor;
typedef void monitor_closed_cb(void *arg);

struct monitor *monitor_new(uv_loop_t *loop, const struct config *cfg, struct rconn *writer,
                            struct deliveries *d, struct provider_set *providers);
void monitor_start(struct monitor *m);
/* Say READY=1 to systemd (once Redis is reachable and the group exists). */
void monitor_ready(struct monitor *m);
/* The writer connected (again): write the heartbeat at once. */
void monitor_writer_up(struct monitor *m);
/* STOPPING=1, delete the heartbeat key, close timers. */
void monitor_stop(struct monitor *m, monitor_closed_cb *cb, void *arg);
void monitor_free(struct monitor *m);
const struct monitor_gauges *monitor_gauges(const struct monitor *m);

#endif

/*
 * dlr.h: delivery receipts.  Routes the providers' webhooks to the
 * provider that owns them, polls providers for messages no webhook will
 * report (the schedule is in Redis: finish adds a message, see
 * ledger_poll_take()), and records what the providers answer: each receipt moves the
 * job's status record forward to delivered/undelivered/failed.
 */
#ifndef OTPD_DLR_H
#define OTPD_DLR_H

#include <stddef.h>

#include <uv.h>

#include "config.h"
#include "httpd.h"
#include "provider.h"
#include "ledger.h"

struct dlr;

struct dlr *dlr_new(uv_loop_t *loop, const struct config *cfg, struct ledger *ledger,
                    struct provider_set *providers);
/* An HTTP request for a webhook path: 1 if it was one (resp filled), else 0. */
int dlr_handle(struct dlr *r, const struct httpd_request *req, struct httpd_response *resp);
void dlr_close(struct dlr *r, void (*cb)(void *arg), void *arg);

#endif

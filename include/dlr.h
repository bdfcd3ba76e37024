/*
 * dlr.h: delivery receipts.  Twilio status callbacks (signature checked
 * as Twilio computes it), MSG91 delivery reports (secret path token), and
 * polling Twilio when no callback URL is configured.  Each receipt moves
 * the job's status record forward to delivered/undelivered/failed.
 */
#ifndef OTPD_DLR_H
#define OTPD_DLR_H

#include <stddef.h>

#include <uv.h>

#include "config.h"
#include "httpd.h"
#include "provider.h"
#include "store.h"

struct dlr;

struct dlr *dlr_new(uv_loop_t *loop, const struct config *cfg, struct store *st,
                    struct provider_set *providers);
/* An HTTP request for a webhook path: 1 if it was one (resp filled), else 0. */
int dlr_handle(struct dlr *r, const struct httpd_request *req, struct httpd_response *resp);
/* A provider accepted a message: follow it by polling where no webhook will come. */
void dlr_sent(struct dlr *r, struct provider *p, const char *ref);
void dlr_close(struct dlr *r, void (*cb)(void *arg), void *arg);

/*
 * X-Twilio-Signature for a URL and form parameters (names and values,
 * nparams of each): base64(HMAC-SHA1(token, url + sorted name+value)).
 * Pure; out needs 29 bytes.  Unit-tested against twilio-python.
 */
void dlr_twilio_signature(const char *token, const char *url, const char *const *names,
                          const char *const *values, int nparams, char *out, size_t outlen);
/* A human explanation for a carrier error code (Twilio 3xxxx), or NULL. */
const char *dlr_twilio_hint(const char *code);

#endif

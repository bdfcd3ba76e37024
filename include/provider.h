/*
 * provider.h: the one interface every SMS provider implements.  A
 * delivery hands a rendered message to send() and hears back once,
 * through the done callback, never from inside send() itself.  Delivery
 * receipts come back through the same provider: its webhook op reads the
 * provider's callbacks, its poll op looks a message up, and both answer in
 * otpd's words (struct receipt).  Only a provider_*.c file knows its
 * provider's wire format, receipts included.
 */
#ifndef OTPD_PROVIDER_H
#define OTPD_PROVIDER_H

#include <stdint.h>

#include <uv.h>

#include "config.h"
#include "gate.h"
#include "otpd.h"

enum send_outcome {
    SEND_OK,            /* accepted by the provider */
    SEND_FAIL_JOB,      /* permanent for this job (bad number, opted out, ...) */
    SEND_FAIL_PROVIDER, /* permanent for the provider (credentials, suspended) */
    SEND_RETRY,         /* certainly not sent; safe to try again */
    SEND_AMBIGUOUS,     /* may have been sent (timeout after the body, 5xx) */
    SEND_LOCAL,         /* otpd's own trouble (no fd, no memory, CA file): not sent, retry */
};

struct send_request {
    const struct job *job;
    const char *body;    /* the rendered SMS, holding the code */
    const char *code;    /* for template-based providers (MSG91, e-mail) */
    int minutes;         /* {minutes} in the text: whole minutes of the code's life left */
    int64_t deadline_ms; /* the code's expiry; nothing is sent after it */
    int attempt;         /* 1 for the first */
    int reconcile;       /* an earlier attempt may have been sent: check first */
    int64_t since_ms;    /* when that earlier attempt started */
};

struct send_result {
    enum send_outcome outcome;
    char ref[72];             /* provider's message id */
    char provider_status[24]; /* e.g. Twilio "queued" */
    char error_code[24];
    char error[REASON_MAX]; /* human text with a fix where one is known */
    int opted_out;          /* the recipient unsubscribed (STOP): remember the number */
    int congested;          /* over the provider's concurrency limit (Twilio 20429): not sent */
    int64_t retry_after_ms; /* from Retry-After, or 0 */
};

/*
 * A delivery receipt: what a provider says about a message it accepted,
 * already in otpd's words.  status is JOB_SENT, JOB_DELIVERED,
 * JOB_UNDELIVERED or JOB_FAILED, or RECEIPT_PENDING for a word that
 * records nothing (queued, accepted, sending: the provider still holds it).
 */
#define RECEIPT_PENDING JOB_QUEUED

struct receipt {
    char ref[72]; /* the provider's message id, as send_result.ref had it */
    enum job_status status;
    char provider_status[24]; /* the provider's own word, e.g. "undelivered" */
    char error_code[24];      /* e.g. Twilio 30003, or "" */
    char error[REASON_MAX];   /* human text (the carrier hint) when not delivered */
    int priced;               /* the provider said what the message cost: */
    long price_micro;         /* that, in micro-units */
    char price_unit[8];       /* of this currency (ISO 4217) */
};

/* A status lookup's answer (poll). */
struct poll_result {
    int ok;                 /* 0: the lookup itself failed (receipt.error says why); try later */
    struct receipt receipt; /* the message's status now, ref included */
};

struct provider;
struct provider_call;
struct httpd_request;
struct httpd_response;
typedef void provider_done_cb(void *arg, const struct send_result *res);
typedef void provider_poll_cb(void *arg, const struct poll_result *res);
typedef void provider_closed_cb(void *arg);
/* Takes one receipt from a webhook: 0, or -1 if it cannot be recorded now. */
typedef int provider_receipt_cb(void *arg, const struct receipt *r);

/*
 * Receipt parsers, pure (unit-tested and fuzzed).  twilio_parse_callback
 * takes a status callback's form body and X-Twilio-Signature (or NULL),
 * checked against the public url (also tried with the default port added
 * or removed); it returns the HTTP status to answer (200, 400, 403, 503)
 * and, with 200, the receipt (RECEIPT_PENDING: nothing to record).
 * msg91_parse_reports hands each report of a body (form field data, or
 * JSON) to cb and returns 200, 400 (not a report) or 503 (cb refused one).
 */
int twilio_parse_callback(const char *token, const char *url, const char *signature,
                          const char *body, size_t len, struct receipt *r);
void twilio_parse_message(long http_status, const char *body, size_t len, struct poll_result *res);
/* The answer to a call's create (a CA sid), as twilio_parse_create is to a message's. */
void twilio_parse_call_create(long http_status, const char *body, size_t len,
                              struct send_result *res);
/* A Call resource: completed -> delivered, busy/no-answer -> undelivered, failed -> failed. */
void twilio_parse_call(long http_status, const char *body, size_t len, struct poll_result *res);
/* The TwiML that reads text out `repeat` times in `language`; -1 if over TWILIO_TWIML_MAX. */
#define TWILIO_TWIML_MAX 4000
int twilio_twiml(char *out, size_t len, const char *text, const char *language, int repeat);
/* Twilio's <Say> language for a BCP 47 locale ("pt-BR" -> "pt-BR", "ar" -> "arb"). */
const char *twilio_say_language(const char *locale);
/* base64(HMAC-SHA1(token, url + names and values sorted by name)); out needs 29 bytes. */
void twilio_signature(const char *token, const char *url, const char *const *names,
                      const char *const *values, int nparams, char *out, size_t outlen);
/* A human explanation for a carrier error code (Twilio 3xxxx), or NULL. */
const char *twilio_carrier_hint(const char *code);
int msg91_parse_reports(const char *content_type, const char *body, size_t len,
                        provider_receipt_cb *cb, void *arg);

struct provider_ops {
    const char *name;
    int channel; /* enum job_channel: the jobs it carries (SMS unless set) */
    /* Its credentials are set, so the set opens it (console: never; only when chosen). */
    int (*configured)(const struct config *cfg);
    /* Its caps from the configuration: requests per second and in progress (0: none). */
    void (*caps)(const struct config *cfg, int *rate, int *max_inflight);
    struct provider *(*open)(uv_loop_t *loop, const struct config *cfg, char *err, size_t errlen);
    struct provider_call *(*send)(struct provider *p, const struct send_request *req,
                                  provider_done_cb *cb, void *arg);
    /* The done callback of a cancelled call never runs. */
    void (*cancel)(struct provider *p, struct provider_call *call);
    void (*close)(struct provider *p, provider_closed_cb *cb, void *arg);
    /* Optional: look up a sent message's status (where no webhook will report it). */
    struct provider_call *(*poll)(struct provider *p, const char *ref, provider_poll_cb *cb,
                                  void *arg);
    /* Optional: 1 if messages sent now will be reported to the webhook (no need to poll). */
    int (*pushes_receipts)(const struct provider *p);
    /*
     * Optional: a request to /webhooks/<name><rest>, rest being "" or
     * "/...".  Authenticates and parses it, hands each receipt it carries
     * to cb and fills resp: 503 if cb refused one, so the provider retries.
     */
    void (*webhook)(struct provider *p, const char *rest, const struct httpd_request *req,
                    struct httpd_response *resp, provider_receipt_cb *cb, void *arg);
    /* Optional: the configuration changed (SIGHUP); recompute derived state. */
    void (*reload)(struct provider *p);
};

/*
 * A provider.  Opaque outside the provider set and the provider files,
 * which share its head through daemon/provider_impl.h: its health and its
 * gate are the set's to keep.
 */
struct provider;

const char *provider_outcome_name(enum send_outcome o);
/* A provider of that name is built in (pure: the registry, not the open set). */
int provider_registered(const char *name);
/* "twilio, msg91, console": the built-in providers, for error messages. */
const char *provider_registered_names(char *buf, size_t len);
/* Descriptors the providers' connections may take (start-up fd budget). */
int provider_conns_needed(const struct config *cfg);

/* The set of providers this configuration enables. */
struct provider_set;
struct provider_set *provider_set_open(uv_loop_t *loop, const struct config *cfg, char *err,
                                       size_t errlen);
/*
 * The providers to try for a job, in order: its pin alone, else the
 * OTPD_ROUTES entry for its number, else the default provider followed by
 * the other configured ones.  Returns how many (0 with a reason).
 */
int provider_set_route(struct provider_set *set, const struct config *cfg, const struct job *job,
                       struct provider **out, char *err, size_t errlen);
const char *provider_name(const struct provider *p);
/* "twilio=up,msg91=down" for the heartbeat and logs. */
void provider_set_describe(struct provider_set *set, uint64_t now, char *buf, size_t len);
void provider_set_close(struct provider_set *set, provider_closed_cb *cb, void *arg);
/* Each open provider's cap on requests in progress now (0: none); returns how many. */
int provider_set_caps(struct provider_set *set, const char **names, int *caps, int max);
/* After a reload: let providers recompute, and clear "down" marks so new credentials get tried. */
void provider_set_reload(struct provider_set *set, const struct config *cfg);

/* --- health and traffic: every attempt goes through these ---------------- */

/* Which provider the next attempt uses. */
struct provider_pick {
    struct provider *p; /* NULL: every provider of the route is out */
    int probe;          /* this attempt is p's circuit probe */
    uint64_t wait_ms;   /* p NULL: until the first recheck */
};
/*
 * route[*ri] if usable, else the next usable one in the route (*ri moves).
 * A provider whose circuit is open is usable once its recheck is due, for
 * one probe.
 */
struct provider_pick provider_set_pick(struct provider_set *set, struct provider *const *route,
                                       int nroute, int *ri);

/* What to do after an attempt that did not end the job. */
struct provider_verdict {
    uint64_t delay_ms;  /* before the next attempt (0: at once) */
    int moved;          /* failover: *ri names another provider */
    int awaits_circuit; /* the delay ends at a recheck; a recovery ends it early */
};
/*
 * An attempt's result, for route[*ri], whose gate slot it releases.  The
 * circuit breaker, failover, the concurrency cap and local failures are
 * decided here.  probe: the attempt was the circuit's probe.
 */
struct provider_verdict provider_set_report(struct provider_set *set, struct provider *const *route,
                                            int nroute, int *ri, const struct send_result *res,
                                            int probe, int attempts);
/* Called whenever a provider's circuit closes, so waiting jobs may go now. */
typedef void provider_recovered_cb(void *arg);
void provider_set_on_recovery(struct provider_set *set, provider_recovered_cb *cb, void *arg);

/* The provider's gate: 1 go now, 0 queued (cb runs when it may go). */
int provider_enter(struct provider *p, struct gate_waiter *w, gate_ready_cb *cb);
/* A queued waiter gives up its place. */
void provider_unwait(struct provider *p, struct gate_waiter *w);
/* A slot taken but not used for a request (the job expired at the gate). */
void provider_release(struct provider *p);
/* Starts a send; NULL if it could not start (the slot is still held). */
struct provider_call *provider_send(struct provider *p, const struct send_request *req,
                                    provider_done_cb *cb, void *arg);
/* Cancels a send in progress and releases its slot; its callback never runs. */
void provider_cancel(struct provider *p, struct provider_call *call);
/* Why its circuit is open, for the job's error text. */
const char *provider_down_reason(const struct provider *p);

/* --- receipts: dlr.c asks, the provider answers ----------------------------- */

/* The open provider named by name[0..len), or NULL. */
struct provider *provider_set_find(struct provider_set *set, const char *name, size_t len);
/* Its webhook under /webhooks/<name><rest>: 1 if it has one (resp filled), else 0. */
int provider_webhook(struct provider *p, const char *rest, const struct httpd_request *req,
                     struct httpd_response *resp, provider_receipt_cb *cb, void *arg);
/* Sent messages of this provider are polled: it has a poll op and no webhook will come. */
int provider_needs_polling(const struct provider *p);
/*
 * A status lookup, only on the gate's spare capacity so polling never
 * delays a send; NULL if none now.  The callback's owner calls
 * provider_release() once it has the answer.
 */
struct provider_call *provider_poll_spare(struct provider *p, const char *ref, provider_poll_cb *cb,
                                          void *arg);

extern const struct provider_ops provider_console_ops;
extern const struct provider_ops provider_twilio_ops;
extern const struct provider_ops provider_twilio_voice_ops;
extern const struct provider_ops provider_console_voice_ops;
extern const struct provider_ops provider_msg91_ops;
extern const struct provider_ops provider_smtp_ops;
extern const struct provider_ops provider_console_email_ops;

/*
 * Wire parsers, pure (unit-tested and fuzzed): turn a provider's HTTP
 * answer into a send result with its failure class and a human hint.
 */
void twilio_parse_create(long http_status, const char *body, size_t len, struct send_result *res);
void msg91_parse_flow(long http_status, const char *body, size_t len, struct send_result *res);
/* An SMTP conversation's end: curl's result and the server's last reply code (0: none). */
void smtp_classify(int curl_result, long smtp_code, int request_sent, int os_errno,
                   struct send_result *res);

#endif

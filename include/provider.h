/*
 * provider.h: the one interface every SMS provider implements.  The
 * dispatcher hands a rendered message to send() and hears back once,
 * through the done callback, never from inside send() itself.  Only a
 * provider_*.c file knows its provider's wire format.
 */
#ifndef OTPD_PROVIDER_H
#define OTPD_PROVIDER_H

#include <stdint.h>

#include <uv.h>

#include "config.h"
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
    const char *code;    /* for template-based providers (MSG91) */
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

/* What a provider says now about a message it accepted (delivery receipts). */
struct poll_result {
    int ok;              /* 0: the lookup itself failed; try later */
    char status[24];     /* the provider's word: queued, sent, delivered, ... */
    char error_code[24]; /* e.g. Twilio 30003, or "" */
    char error[REASON_MAX];
};

struct provider;
struct provider_call;
typedef void provider_done_cb(void *arg, const struct send_result *res);
typedef void provider_poll_cb(void *arg, const struct poll_result *res);
typedef void provider_closed_cb(void *arg);

struct provider_ops {
    const char *name;
    struct provider *(*open)(uv_loop_t *loop, const struct config *cfg, char *err, size_t errlen);
    struct provider_call *(*send)(struct provider *p, const struct send_request *req,
                                  provider_done_cb *cb, void *arg);
    /* The done callback of a cancelled call never runs. */
    void (*cancel)(struct provider *p, struct provider_call *call);
    void (*close)(struct provider *p, provider_closed_cb *cb, void *arg);
    /* Optional: look up a sent message's status (for providers without a webhook). */
    struct provider_call *(*poll)(struct provider *p, const char *ref, provider_poll_cb *cb,
                                  void *arg);
    /* Optional: the configuration changed (SIGHUP); recompute derived state. */
    void (*reload)(struct provider *p);
};

/* Common head of every provider object; health is kept by the dispatcher. */
struct provider {
    const struct provider_ops *ops;
    struct gate *gate;   /* throughput: rate, concurrency, pause */
    int fail_streak;     /* consecutive failed requests (circuit breaker) */
    int down;            /* circuit open: provider-wide failure or too many failures */
    int down_count;      /* consecutive rechecks that failed */
    uint64_t recheck_at; /* loop time when traffic may try it again */
    char down_reason[REASON_MAX];
};

const char *provider_outcome_name(enum send_outcome o);
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

extern const struct provider_ops provider_console_ops;
extern const struct provider_ops provider_twilio_ops;
extern const struct provider_ops provider_msg91_ops;

/*
 * Wire parsers, pure (unit-tested and fuzzed): turn a provider's HTTP
 * answer into a send result with its failure class and a human hint.
 */
void twilio_parse_create(long http_status, const char *body, size_t len, struct send_result *res);
void msg91_parse_flow(long http_status, const char *body, size_t len, struct send_result *res);
void twilio_parse_message(long http_status, const char *body, size_t len, struct poll_result *res);

#endif

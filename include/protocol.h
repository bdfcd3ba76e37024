/*
 * protocol.h: the names otpd's Redis protocol fixes, key names and status
 * words, as docs/protocol.md defines them (the key table at its top and the
 * status table of section 4).  python/otpd/protocol.py is the Python
 * spelling of the same names; tests/integration/test_protocol_constants.py
 * checks both against the document.
 *
 * A key is OTPD_PREFIX followed by one of the PROTO_KEY_* formats; their
 * %s are the document's {fields}, in order.  Paste the prefix in front so
 * that the compiler still checks the arguments:
 *
 *     snprintf(buf, len, "%s" PROTO_KEY_JOB, cfg->prefix, job->id);
 */
#ifndef OTPD_PROTOCOL_H
#define OTPD_PROTOCOL_H

#define PROTO_KEY_JOBS                       "jobs"
#define PROTO_KEY_OTP                        "otp:%s:%s" /* purpose, to */
#define PROTO_KEY_JOB                        "job:%s"    /* id */
#define PROTO_KEY_REF                        "ref:%s:%s" /* provider, provider_ref */
#define PROTO_KEY_EVENTS                     "events"
#define PROTO_KEY_DEAD                       "dead"
#define PROTO_KEY_LIMITS                     "limits"
#define PROTO_KEY_RL_NUM                     "rl:num:%s" /* to */
#define PROTO_KEY_RL_GLOBAL                  "rl:global"
#define PROTO_KEY_RL_CC                      "rl:cc:%s" /* calling code */
#define PROTO_KEY_OPTOUT                     "optout"
#define PROTO_KEY_STATS                      "stats"
#define PROTO_KEY_INSTANCE                   "instance:%s"             /* consumer */
#define PROTO_KEY_ALERT_COUNTRY_BUDGET       "alert:country_budget:%s" /* calling code */
#define PROTO_KEY_POLLS                      "polls"
#define PROTO_KEY_FALLBACKS                  "fallbacks"
#define PROTO_KEY_FALLBACK                   "fallback:%s" /* id */
#define PROTO_KEY_FRAUD_RULES                "fraud:rules"
#define PROTO_KEY_FRAUD_CODES                "fraud:codes:%s" /* px */
#define PROTO_KEY_FRAUD_OK                   "fraud:ok:%s"    /* px */
#define PROTO_KEY_FRAUD_BASE                 "fraud:base"
#define PROTO_KEY_FRAUD_ACTIVE               "fraud:active"
#define PROTO_KEY_FRAUD_COUNTS               "fraud:counts:%s"  /* bucket */
#define PROTO_KEY_SPEND_DAY                  "spend:day:%s"     /* day */
#define PROTO_KEY_SPEND_HOUR                 "spend:hour:%s"    /* hour */
#define PROTO_KEY_ALERT_PUMPING              "alert:pumping:%s" /* px */
#define PROTO_KEY_ALERT_SPEND_BUDGET         "alert:spend_budget:*"
#define PROTO_KEY_ALERT_COUNTRY_SPEND_BUDGET "alert:country_spend_budget:%s" /* calling code */

/* Status words, in the document's order (section 4). */
#define PROTO_STATUS_QUEUED       "queued"
#define PROTO_STATUS_SENDING      "sending"
#define PROTO_STATUS_RETRYING     "retrying"
#define PROTO_STATUS_SENT         "sent"
#define PROTO_STATUS_DELIVERED    "delivered"
#define PROTO_STATUS_UNDELIVERED  "undelivered"
#define PROTO_STATUS_FAILED       "failed"
#define PROTO_STATUS_EXPIRED      "expired"
#define PROTO_STATUS_REJECTED     "rejected"
#define PROTO_STATUS_RATE_LIMITED "rate_limited"
/* Not a status: the event and counter of a second entry with a taken id. */
#define PROTO_STATUS_DUPLICATE "duplicate"

/*
 * The final statuses, for an initialiser:
 * static const char *const final[] = {PROTO_FINAL_STATUSES};
 */
#define PROTO_FINAL_STATUSES                                                                       \
    PROTO_STATUS_SENT, PROTO_STATUS_DELIVERED, PROTO_STATUS_UNDELIVERED, PROTO_STATUS_FAILED,      \
        PROTO_STATUS_EXPIRED, PROTO_STATUS_REJECTED, PROTO_STATUS_RATE_LIMITED

#endif

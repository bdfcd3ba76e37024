/*
 * otpd.h: value types shared by every module.  The data flows one way:
 * queue (stream entry) -> job -> provider (send result) -> store.
 */
#ifndef OTPD_H
#define OTPD_H

#include <stddef.h>
#include <stdint.h>

#define JOB_ID_MAX       64
#define JOB_PHONE_MAX    16  /* "+" and at most 15 digits (E.164) */
#define JOB_EMAIL_MAX    254 /* RFC 5321's limit on a forward path's address */
#define JOB_TO_MAX       JOB_EMAIL_MAX
#define JOB_PURPOSE_MAX  32
#define JOB_PROVIDER_MAX 15
#define JOB_LOCALE_MAX                                                                             \
    35 /* BCP 47, as long as RFC 5646 section 4.4.1 asks implementations to take */
#define JOB_FALLBACK_MAX  2 /* channels tried after the job's own, at most */
#define JOB_PAYLOAD_MAX   65536
#define JOB_MESSAGE_CHARS 480
#define STREAM_ID_MAX     41 /* "<ms>-<seq>": two 64-bit numbers */
#define OTP_DIGITS_MAX    10
#define OTP_MAC_HEX       64
#define REASON_MAX        256

/* Fields that never change once a job is parsed. */
struct job {
    char id[JOB_ID_MAX + 1];
    char to[JOB_TO_MAX + 1]; /* E.164, or for e-mail the address trimmed and lower-cased */
    int channel;             /* enum job_channel */
    char purpose[JOB_PURPOSE_MAX + 1];
    char provider[JOB_PROVIDER_MAX + 1]; /* empty: routing decides */
    int ttl;                             /* seconds */
    int digits;
    int max_attempts;
    int fresh;                       /* a new code even if a valid one exists ("fresh": true) */
    char *message;                   /* template, owned; NULL: the configured default */
    char locale[JOB_LOCALE_MAX + 1]; /* BCP 47 ("pt-BR"), normalised; empty: the default */
    char app_hash[12];               /* Android SMS Retriever's 11 characters, or empty */
    /* Channels to try next, in order, if this one fails or is not verified in time. */
    int fallback[JOB_FALLBACK_MAX];
    int nfallback;
    char fallback_email[JOB_EMAIL_MAX + 1]; /* the address an "email" fallback goes to */
    /* A fallback job: the job it follows, and the number whose code it delivers. */
    char fallback_of[JOB_ID_MAX + 1];
    char code_for[16]; /* E.164; empty: to */
    int64_t created_ms;
    int64_t expires_ms; /* created_ms + ttl: the code's deadline */
};

/* How a code travels: "channel" in the job, "sms" unless it says "email". */
enum job_channel {
    JOB_CHANNEL_SMS,
    JOB_CHANNEL_EMAIL,
    JOB_CHANNEL_VOICE, /* the code read out in a phone call (Twilio) */
    JOB_CHANNELS
};

/* Every status a job record can hold; see docs/protocol.md. */
enum job_status {
    JOB_QUEUED,
    JOB_SENDING,
    JOB_RETRYING,
    JOB_SENT,
    JOB_DELIVERED,
    JOB_UNDELIVERED,
    JOB_FAILED,
    JOB_EXPIRED,
    JOB_REJECTED,
    JOB_RATE_LIMITED,
    JOB_DUPLICATE,
};
#define JOB_STATUS_COUNT (JOB_DUPLICATE + 1)

const char *job_status_name(enum job_status st);

int64_t otpd_now_ms(void); /* wall clock, epoch milliseconds */

/* Errors travel as text to where they are reported: fill the caller's buffer. */
void otpd_seterr(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif

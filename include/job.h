/*
 * job.h: parse and validate a job payload (the JSON in a stream entry's
 * "job" field).  Pure: no I/O, so it is unit-tested and fuzzed directly.
 */
#ifndef OTPD_JOB_H
#define OTPD_JOB_H

#include "otpd.h"

struct job_defaults {
    int ttl;
    int digits;
    int max_attempts;
    int64_t max_skew_ms; /* created_ms further ahead of now is rejected */
};

/*
 * Fill *job from payload.  On failure return -1 with the reason in err
 * (the dead-letter reason).  job->id is set whenever the payload carried a
 * valid id, even if something else was wrong, so a status record can say
 * "rejected" under the name the web app knows.  job_clear() always.
 */
int job_parse(struct job *job, const char *payload, size_t len, const struct job_defaults *defs,
              int64_t now_ms, char *err, size_t errlen);
void job_clear(struct job *job);

int job_phone_valid(const char *s);
/*
 * An e-mail address otpd accepts: local@domain, at most 254 characters,
 * already trimmed and lower-cased (job_email_normalize()); a dot-atom local
 * part of 1..64 and a domain of dot-separated letter/digit/hyphen labels.
 */
int job_email_valid(const char *s);
/* Trimmed of surrounding white space and lower-cased as a whole, into out; -1 if too long. */
int job_email_normalize(const char *in, char *out, size_t outlen);
const char *job_channel_name(int channel);
/* "sms", "email" or "voice" as enum job_channel; -1 for anything else. */
int job_channel_parse(const char *s);
/* A BCP 47 tag checked and normalised ("PT-br" -> "pt-BR") into out; -1 if it is not one. */
int job_locale_normalize(const char *in, char *out, size_t outlen);
int job_id_valid(const char *s);

#endif

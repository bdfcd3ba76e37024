/*
 * twilio_errors.h: the Twilio error codes otpd explains, with what each
 * means for a send and the fix to show.  The table is data, kept once for
 * the daemon and otpctl in python/otpd/data/twilio_errors.tsv;
 * cmake/embed_data.cmake compiles it into twilio_errors.c.  Only
 * provider_twilio.c reads it.
 */
#ifndef OTPD_TWILIO_ERRORS_H
#define OTPD_TWILIO_ERRORS_H

#include <stddef.h>

/* The file's class column. */
enum twilio_error_class {
    TWILIO_ERR_JOB,      /* permanent for this job: SEND_FAIL_JOB */
    TWILIO_ERR_PROVIDER, /* permanent for the provider: SEND_FAIL_PROVIDER */
    TWILIO_ERR_RETRY,    /* temporary: SEND_RETRY */
    TWILIO_ERR_CARRIER,  /* from a delivery receipt, never from a send */
};

struct twilio_error {
    int code;
    enum twilio_error_class cls;
    const char *hint; /* what went wrong, then the fix */
};

/* In the file's order; codes are unique. */
extern const struct twilio_error twilio_errors[];
extern const size_t twilio_errors_count;

#endif

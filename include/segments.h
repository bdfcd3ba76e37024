/*
 * segments.h: what an SMS text costs.  Pure: the encoding a carrier will
 * send it in, its length in that encoding's units, and the segments
 * (separately billed messages) it takes.  It does not encode or split the
 * text; the provider does that.
 */
#ifndef OTPD_SEGMENTS_H
#define OTPD_SEGMENTS_H

#include <stddef.h>

enum sms_encoding { SMS_GSM7, SMS_UCS2 };

struct sms_size {
    enum sms_encoding encoding;
    size_t units; /* GSM-7 septets (an extension-table character counts 2) or UTF-16 code units */
    int segments; /* 1 if it fits one SMS, else the concatenated segments */
};

/*
 * Size the UTF-8 text (len bytes; NUL is a character like any other) into
 * out: GSM-7 if every character is in the GSM 03.38 default alphabet or its
 * extension table, else UCS-2.  Empty text is 1 segment of 0 units.
 * -1, out untouched, if text is not valid UTF-8.
 */
int segments_count(const char *text, size_t len, struct sms_size *out);

/* "GSM-7" or "UCS-2", as Twilio and the carriers name them. */
const char *segments_encoding_name(enum sms_encoding e);

#endif

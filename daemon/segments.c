/*
 * segments.c: how many SMS segments a UTF-8 text costs, and in which
 * encoding.
 *
 * Hand-written because no Debian library does this for a daemon: libosmocore's
 * gsm_7bit_encode() maps single bytes (ASCII), not Unicode text, and
 * libgammu's GSM_SMSCounter() wants gammu's own UCS-2 buffer, leaves the
 * choice of encoding to the caller and brings a phone-management library
 * into the process.  What is needed is two tables and a loop.  The tables
 * are copied from the standard in its order, so that they can be checked
 * against it entry by entry:
 *
 *   3GPP TS 23.038 6.2.1       the GSM 7 bit default alphabet (gsm7_basic)
 *   3GPP TS 23.038 6.2.1.1     its extension table, reached through the
 *                              escape 0x1B, so 2 septets a character
 *                              (gsm7_ext)
 *   3GPP TS 23.038 6.2.3       UCS2; what carriers send is UTF-16, so a
 *                              character past U+FFFF is a surrogate pair
 *   3GPP TS 23.040 9.2.3.16    TP-UDL: one message holds 160 septets or
 *                              140 octets (70 UTF-16 units)
 *   3GPP TS 23.040 9.2.3.24.1  concatenation: the 6-octet user data header
 *                              (UDHL, IEI 00, IEDL, reference, count,
 *                              sequence) leaves 134 octets, which is 153
 *                              septets or 67 units a segment
 *
 * An escape pair or a surrogate pair is never split across two segments,
 * since the receiver could not put the character back together: a 2-unit
 * character that does not fit the rest of a segment starts the next one.
 * A text can therefore cost one segment more than units / 153 (or 67)
 * rounded up.  Twilio's public segment calculator goes one step further
 * and keeps whole grapheme clusters together (a Devanagari consonant and
 * its vowel sign, an emoji ZWJ sequence), so for a long UCS-2 text whose
 * cluster straddles a boundary its count can be one higher than this one.
 */
#include <limits.h>
#include <stdint.h>

#include "segments.h"
#include "utf8.h"

#define GSM7_SINGLE 160 /* septets in a message that stands alone */
#define GSM7_PART   153 /* septets in one segment of a concatenated message */
#define UCS2_SINGLE 70
#define UCS2_PART   67
#define GSM7_ESC    0x1b /* escape to the extension table: not a character */

/* A running fill of segments of cap units each, whole characters only. */
struct fill {
    size_t units;
    size_t segments;
    size_t used; /* units in the last segment */
};

static int gsm7_septets(uint32_t cp);
static void fill_add(struct fill *f, unsigned int cost, size_t cap);
static int fill_segments(const struct fill *f, size_t single);

/* TS 23.038 6.2.1: the Unicode character at each GSM 7 bit code. */
static const uint16_t gsm7_basic[128] = {
    /* 0x00 @£$¥èéùì */
    0x0040, 0x00a3, 0x0024, 0x00a5, 0x00e8, 0x00e9, 0x00f9, 0x00ec,
    /* 0x08 òÇ LF Øø CR Åå */
    0x00f2, 0x00c7, 0x000a, 0x00d8, 0x00f8, 0x000d, 0x00c5, 0x00e5,
    /* 0x10 Δ_ΦΓΛΩΠΨ */
    0x0394, 0x005f, 0x03a6, 0x0393, 0x039b, 0x03a9, 0x03a0, 0x03a8,
    /* 0x18 ΣΘΞ ESC ÆæßÉ */
    0x03a3, 0x0398, 0x039e, 0x001b, 0x00c6, 0x00e6, 0x00df, 0x00c9,
    /* 0x20 SP !"#¤%&' */
    0x0020, 0x0021, 0x0022, 0x0023, 0x00a4, 0x0025, 0x0026, 0x0027,
    /* 0x28 ()*+,-./ */
    0x0028, 0x0029, 0x002a, 0x002b, 0x002c, 0x002d, 0x002e, 0x002f,
    /* 0x30 01234567 */
    0x0030, 0x0031, 0x0032, 0x0033, 0x0034, 0x0035, 0x0036, 0x0037,
    /* 0x38 89:;<=>? */
    0x0038, 0x0039, 0x003a, 0x003b, 0x003c, 0x003d, 0x003e, 0x003f,
    /* 0x40 ¡ABCDEFG */
    0x00a1, 0x0041, 0x0042, 0x0043, 0x0044, 0x0045, 0x0046, 0x0047,
    /* 0x48 HIJKLMNO */
    0x0048, 0x0049, 0x004a, 0x004b, 0x004c, 0x004d, 0x004e, 0x004f,
    /* 0x50 PQRSTUVW */
    0x0050, 0x0051, 0x0052, 0x0053, 0x0054, 0x0055, 0x0056, 0x0057,
    /* 0x58 XYZÄÖÑÜ§ */
    0x0058, 0x0059, 0x005a, 0x00c4, 0x00d6, 0x00d1, 0x00dc, 0x00a7,
    /* 0x60 ¿abcdefg */
    0x00bf, 0x0061, 0x0062, 0x0063, 0x0064, 0x0065, 0x0066, 0x0067,
    /* 0x68 hijklmno */
    0x0068, 0x0069, 0x006a, 0x006b, 0x006c, 0x006d, 0x006e, 0x006f,
    /* 0x70 pqrstuvw */
    0x0070, 0x0071, 0x0072, 0x0073, 0x0074, 0x0075, 0x0076, 0x0077,
    /* 0x78 xyzäöñüà */
    0x0078, 0x0079, 0x007a, 0x00e4, 0x00f6, 0x00f1, 0x00fc, 0x00e0};

/*
 * TS 23.038 6.2.1.1: the characters after an escape, by code.  0x0D (CR2)
 * and 0x1B (SS2) are controls with no character of their own.
 */
static const struct {
    uint8_t code;
    uint16_t cp;
} gsm7_ext[] = {
    {0x0a, 0x000c}, /* form feed */
    {0x14, 0x005e}, /* ^ */
    {0x28, 0x007b}, /* { */
    {0x29, 0x007d}, /* } */
    {0x2f, 0x005c}, /* \ */
    {0x3c, 0x005b}, /* [ */
    {0x3d, 0x007e}, /* ~ */
    {0x3e, 0x005d}, /* ] */
    {0x40, 0x007c}, /* | */
    {0x65, 0x20ac}, /* € */
};

int
segments_count(const char *text, size_t len, struct sms_size *out)
{
    const unsigned char *p = (const unsigned char *)text, *end = p + len;
    struct fill gsm = {0, 1, 0}, ucs = {0, 1, 0};
    int gsm_ok = 1;
    uint32_t cp;

    /* Both fills run in one pass: the encoding is known only at the end. */
    while (p < end) {
        if (utf8_next(&p, end, &cp) < 0)
            return -1;
        if (gsm_ok) {
            int septets = gsm7_septets(cp);
            if (septets == 0)
                gsm_ok = 0;
            else
                fill_add(&gsm, (unsigned int)septets, GSM7_PART);
        }
        fill_add(&ucs, cp > 0xffff ? 2 : 1, UCS2_PART);
    }
    if (gsm_ok) {
        out->encoding = SMS_GSM7;
        out->units = gsm.units;
        out->segments = fill_segments(&gsm, GSM7_SINGLE);
    } else {
        out->encoding = SMS_UCS2;
        out->units = ucs.units;
        out->segments = fill_segments(&ucs, UCS2_SINGLE);
    }
    return 0;
}

const char *
segments_encoding_name(enum sms_encoding e)
{
    return e == SMS_GSM7 ? "GSM-7" : "UCS-2";
}

/* Septets for cp in GSM-7: 1 (default alphabet), 2 (extension) or 0 (neither). */
static int
gsm7_septets(uint32_t cp)
{
    for (size_t i = 0; i < sizeof(gsm7_basic) / sizeof(gsm7_basic[0]); i++)
        if (i != GSM7_ESC && gsm7_basic[i] == cp)
            return 1;
    for (size_t i = 0; i < sizeof(gsm7_ext) / sizeof(gsm7_ext[0]); i++)
        if (gsm7_ext[i].cp == cp)
            return 2;
    return 0;
}

/* Add a character of cost units; one that does not fit opens a new segment. */
static void
fill_add(struct fill *f, unsigned int cost, size_t cap)
{
    f->units += cost;
    if (f->used + cost > cap) {
        f->segments++;
        f->used = 0;
    }
    f->used += cost;
}

/* One message if it all fits in single units, else the concatenated fill. */
static int
fill_segments(const struct fill *f, size_t single)
{
    if (f->units <= single)
        return 1;
    return f->segments > INT_MAX ? INT_MAX : (int)f->segments;
}

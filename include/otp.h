/*
 * otp.h: the code, its keyed hash and the SMS text.  Pure functions over
 * libsodium; the code itself never leaves the caller's buffer.
 */
#ifndef OTPD_OTP_H
#define OTPD_OTP_H

#include <stddef.h>

#include "otpd.h"

/* digits uniform decimal digits from randombytes_uniform; out >= digits+1. */
void otp_generate(char *out, int digits);

/* hex(HMAC-SHA-256(key, purpose "\n" to "\n" code)); out >= 65 bytes. */
void otp_mac(char *out, const unsigned char key[32], const char *purpose, const char *to,
             const char *code);

/*
 * The code sealed for its OTP record, so that a resend or a reclaimed job
 * texts the same code: XChaCha20-Poly1305 under a key derived from key
 * (crypto_kdf, context "otpdseal", a key for nothing else), with purpose
 * "\n" to as associated data, so it opens only for the record it was made
 * for.  out: hex of nonce || ciphertext, at least OTP_SEALED_HEX + 1 bytes.
 */
#define OTP_SEALED_HEX (2 * (24 + OTP_DIGITS_MAX + 16))
void otp_seal(char *out, const unsigned char key[32], const char *purpose, const char *to,
              const char *code);
/* The code back into code (>= OTP_DIGITS_MAX + 1); -1 if it does not open. */
int otp_open(char *code, const unsigned char key[32], const char *purpose, const char *to,
             const char *sealed);

/* Characters (UTF-8 code points) in s; -1 if s is not valid UTF-8. */
long otp_utf8_chars(const char *s);

/*
 * Render tmpl with {code} and {minutes}.  Fails, with the reason in err,
 * if tmpl lacks {code}, is not UTF-8, or renders over JOB_MESSAGE_CHARS.
 */
int otp_render(char *out, size_t outlen, const char *tmpl, const char *code, int minutes, char *err,
               size_t errlen);

/*
 * An e-mail template (subject, text or HTML) with {code} and {minutes};
 * a new line, or "\\n" as an environment variable may spell it, becomes CRLF.
 * -1 if it does not fit in len.
 */
int otp_render_email(char *out, size_t len, const char *tmpl, const char *code, int minutes);

/* Check only: would this template render within the limits? */
int otp_template_check(const char *tmpl, int digits, int minutes, char *err, size_t errlen);

#define OTP_BODY_MAX (JOB_MESSAGE_CHARS * 4 + 1)

#endif

/*
 * otp.c: code generation, the keyed hash the web app verifies against, and
 * template rendering.  The web app recomputes the hash with Python's hmac
 * module, so the message layout here is part of the contract.
 */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <sodium.h>

#include "otp.h"
#include "utf8.h"

void
otp_generate(char *out, int digits)
{
    /*
     * Up to nine digits per draw (10^9 < 2^32): randombytes_uniform() rejects
     * biased values, and one draw is one getrandom() instead of one a digit.
     */
    int w = 0;

    while (w < digits) {
        int n = digits - w < 9 ? digits - w : 9;
        uint32_t bound = 1;
        for (int i = 0; i < n; i++)
            bound *= 10;
        uint32_t v = randombytes_uniform(bound);
        for (int i = n - 1; i >= 0; i--, v /= 10)
            out[w + i] = (char)('0' + v % 10);
        w += n;
    }
    out[digits] = '\0';
}

void
otp_mac(char *out, const unsigned char key[32], const char *purpose, const char *to,
        const char *code)
{
    crypto_auth_hmacsha256_state st;
    unsigned char mac[crypto_auth_hmacsha256_BYTES];

    crypto_auth_hmacsha256_init(&st, key, 32);
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)purpose, strlen(purpose));
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)"\n", 1);
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)to, strlen(to));
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)"\n", 1);
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)code, strlen(code));
    crypto_auth_hmacsha256_final(&st, mac);
    sodium_bin2hex(out, OTP_MAC_HEX + 1, mac, sizeof(mac));
    sodium_memzero(&st, sizeof(st));
}

#define SEAL_CONTEXT "otpdseal" /* crypto_kdf: 8 bytes, this use only */
#define SEAL_SUBKEY  1

/* What sealing and opening share: the key for this use and the record's bytes. */
struct seal {
    unsigned char k[crypto_aead_xchacha20poly1305_ietf_KEYBYTES];
    unsigned char ad[160]; /* purpose "\n" to (neither holds a newline) */
    size_t adlen;
    unsigned char box[crypto_aead_xchacha20poly1305_ietf_NPUBBYTES + OTP_DIGITS_MAX +
                      crypto_aead_xchacha20poly1305_ietf_ABYTES]; /* nonce || ciphertext */
};

static void
seal_begin(struct seal *se, const unsigned char key[32], const char *purpose, const char *to)
{
    int n = snprintf((char *)se->ad, sizeof(se->ad), "%s\n%s", purpose, to);

    se->adlen = n < 0 || (size_t)n >= sizeof(se->ad) ? sizeof(se->ad) - 1 : (size_t)n;
    crypto_kdf_derive_from_key(se->k, sizeof(se->k), SEAL_SUBKEY, SEAL_CONTEXT, key);
}

void
otp_seal(char *out, const unsigned char key[32], const char *purpose, const char *to,
         const char *code)
{
    const size_t head = crypto_aead_xchacha20poly1305_ietf_NPUBBYTES;
    struct seal se;
    unsigned long long ctlen;

    seal_begin(&se, key, purpose, to);
    randombytes_buf(se.box, head);
    crypto_aead_xchacha20poly1305_ietf_encrypt(se.box + head, &ctlen, (const unsigned char *)code,
                                               strlen(code), se.ad, se.adlen, NULL, se.box, se.k);
    sodium_bin2hex(out, OTP_SEALED_HEX + 1, se.box, head + (size_t)ctlen);
    sodium_memzero(&se, sizeof(se));
}

int
otp_open(char *code, const unsigned char key[32], const char *purpose, const char *to,
         const char *sealed)
{
    const size_t head = crypto_aead_xchacha20poly1305_ietf_NPUBBYTES;
    struct seal se;
    unsigned char plain[OTP_DIGITS_MAX];
    unsigned long long n;
    size_t len;
    int rc = -1;

    if (sodium_hex2bin(se.box, sizeof(se.box), sealed, strlen(sealed), NULL, &len, NULL) != 0 ||
        len < head + crypto_aead_xchacha20poly1305_ietf_ABYTES + 4)
        return -1;
    seal_begin(&se, key, purpose, to);
    if (crypto_aead_xchacha20poly1305_ietf_decrypt(plain, &n, NULL, se.box + head, len - head,
                                                   se.ad, se.adlen, se.box, se.k) == 0) {
        rc = 0;
        for (unsigned long long i = 0; i < n; i++)
            if (plain[i] < '0' || plain[i] > '9')
                rc = -1;
        if (rc == 0) {
            memcpy(code, plain, (size_t)n);
            code[n] = '\0';
        }
    }
    sodium_memzero(&se, sizeof(se));
    sodium_memzero(plain, sizeof(plain));
    return rc;
}

long
otp_utf8_chars(const char *s)
{
    const unsigned char *p = (const unsigned char *)s, *end = p + strlen(s);
    uint32_t cp;
    long n = 0;

    while (p < end) {
        if (utf8_next(&p, end, &cp) < 0)
            return -1;
        n++;
    }
    return n;
}

/* Size of the rendered text in bytes and characters, without writing it. */
static int
otp_measure(const char *tmpl, size_t code_len, int minutes, size_t *bytes, long *chars)
{
    char mins[16];
    long tchars = otp_utf8_chars(tmpl);
    size_t ncode = 0, nmin = 0;
    const char *p;

    if (tchars < 0)
        return -1;
    for (p = tmpl; (p = strstr(p, "{code}")) != NULL; p += 6)
        ncode++;
    for (p = tmpl; (p = strstr(p, "{minutes}")) != NULL; p += 9)
        nmin++;
    size_t mlen = (size_t)snprintf(mins, sizeof(mins), "%d", minutes);
    *bytes = strlen(tmpl) - ncode * 6 - nmin * 9 + ncode * code_len + nmin * mlen;
    *chars = tchars - (long)(ncode * 6 + nmin * 9) + (long)(ncode * code_len + nmin * mlen);
    return (int)ncode;
}

int
otp_template_check(const char *tmpl, int digits, int minutes, char *err, size_t errlen)
{
    size_t bytes;
    long chars;
    int ncode = otp_measure(tmpl, (size_t)digits, minutes, &bytes, &chars);

    if (ncode < 0) {
        otpd_seterr(err, errlen, "not valid UTF-8");
        return -1;
    }
    if (ncode == 0) {
        otpd_seterr(err, errlen, "must contain {code}");
        return -1;
    }
    if (chars > JOB_MESSAGE_CHARS) {
        otpd_seterr(err, errlen, "renders to %ld characters, over the %d limit", chars,
                    JOB_MESSAGE_CHARS);
        return -1;
    }
    return 0;
}

int
otp_render(char *out, size_t outlen, const char *tmpl, const char *code, int minutes, char *err,
           size_t errlen)
{
    char mins[16];
    size_t bytes, w = 0;
    const char *p = tmpl;

    if (otp_template_check(tmpl, (int)strlen(code), minutes, err, errlen) < 0)
        return -1;
    otp_measure(tmpl, strlen(code), minutes, &bytes, &(long){0});
    if (bytes + 1 > outlen) {
        otpd_seterr(err, errlen, "rendered text does not fit");
        return -1;
    }
    snprintf(mins, sizeof(mins), "%d", minutes);
    while (*p) {
        if (strncmp(p, "{code}", 6) == 0) {
            memcpy(out + w, code, strlen(code));
            w += strlen(code);
            p += 6;
        } else if (strncmp(p, "{minutes}", 9) == 0) {
            memcpy(out + w, mins, strlen(mins));
            w += strlen(mins);
            p += 9;
        } else {
            out[w++] = *p++;
        }
    }
    out[w] = '\0';
    return 0;
}

int
otp_render_email(char *out, size_t len, const char *tmpl, const char *code, int minutes)
{
    char mins[16];
    size_t w = 0;

    snprintf(mins, sizeof(mins), "%d", minutes);
    for (const char *p = tmpl; *p;) {
        const char *piece = p;
        size_t n = 1, skip = 1;
        if (strncmp(p, "{code}", 6) == 0) {
            piece = code, n = strlen(code), skip = 6;
        } else if (strncmp(p, "{minutes}", 9) == 0) {
            piece = mins, n = strlen(mins), skip = 9;
        } else if (p[0] == '\\' && p[1] == 'n') {
            piece = "\r\n", n = 2, skip = 2;
        } else if (p[0] == '\n' && (p == tmpl || p[-1] != '\r')) {
            piece = "\r\n", n = 2; /* mail lines end in CRLF */
        }
        if (w + n + 1 > len)
            return -1;
        memcpy(out + w, piece, n);
        w += n;
        p += skip;
    }
    out[w] = '\0';
    return 0;
}

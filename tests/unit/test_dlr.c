/*
 * test_dlr.c: delivery receipts as the providers read them.  Twilio's
 * webhook signature is checked against vectors computed by twilio-python's
 * RequestValidator (the first is the example of Twilio's "validating
 * requests" documentation); then the status callback, the Message fetch
 * used for polling, the carrier hints, and MSG91's three report formats.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <curl/curl.h>

#include "provider.h"

#define TOKEN  "test-auth-token-0123456789abcdef"
#define PUBLIC "https://example.test/otpd/webhooks/twilio"
#define SID    "SM0123456789abcdef0123456789abcdef"

/* --- Twilio: signature ----------------------------------------------------- */

static void
test_twilio_doc_vector(void **state)
{
    const char *names[] = {"CallSid", "Caller", "Digits", "From", "To"};
    const char *values[] = {"CA1234567890ABCDE", "+12349013030", "1234", "+12349013030",
                            "+18005551212"};
    char sig[64];

    (void)state;
    twilio_signature("12345", "https://mycompany.com/myapp.php?foo=1&bar=2", names, values, 5, sig,
                     sizeof(sig));
    assert_string_equal(sig, "0/KCTR6DLpKmkAf8muzZqo1nDgQ=");
}

static void
test_status_callback_vector(void **state)
{
    /* Out of order on purpose: the signature sorts by name. */
    const char *names[] = {"To", "MessageStatus", "ApiVersion", "MessageSid", "AccountSid"};
    const char *values[] = {"+14155552671", "delivered", "2010-04-01", SID,
                            "AC0123456789abcdef0123456789abcdef"};
    char sig[64];

    (void)state;
    twilio_signature(TOKEN, PUBLIC, names, values, 5, sig, sizeof(sig));
    assert_string_equal(sig, "F4/oRZWXxm1RbEkY/4iaI0faWKs=");
    twilio_signature(TOKEN, PUBLIC, names, values, 0, sig, sizeof(sig));
    assert_string_equal(sig, "8e63X+YZvdtwpvQvZ2EN9aYpc3Y=");
    /* Any change to a value or the token changes it. */
    values[1] = "sent";
    twilio_signature(TOKEN, PUBLIC, names, values, 5, sig, sizeof(sig));
    assert_string_not_equal(sig, "F4/oRZWXxm1RbEkY/4iaI0faWKs=");
}

static void
test_carrier_hints(void **state)
{
    (void)state;
    assert_non_null(strstr(twilio_carrier_hint("30003"), "unreachable"));
    assert_non_null(strstr(twilio_carrier_hint("30005"), "unknown"));
    assert_non_null(strstr(twilio_carrier_hint("30006"), "landline"));
    assert_non_null(strstr(twilio_carrier_hint("30007"), "spam"));
    assert_non_null(strstr(twilio_carrier_hint("30008"), "unknown carrier"));
    assert_null(twilio_carrier_hint("21211"));
}

/* --- Twilio: status callbacks ---------------------------------------------- */

/* The status-callback vector's body, as Twilio posts it (form-encoded, "+" as %2B). */
#define VECTOR_BODY                                                                                \
    "To=%2B14155552671&MessageStatus=delivered&ApiVersion=2010-04-01&MessageSid=" SID              \
    "&AccountSid=AC0123456789abcdef0123456789abcdef"

/* A form body of these parameters and its honest signature for url. */
static void
signed_form(const char *url, const char *const *names, const char *const *values, int n, char *body,
            size_t len, char *sig, size_t siglen)
{
    size_t off = 0;

    body[0] = '\0';
    for (int i = 0; i < n; i++) {
        char *v = curl_easy_escape(NULL, values[i], 0);
        assert_non_null(v);
        off += (size_t)snprintf(body + off, len - off, "%s%s=%s", i ? "&" : "", names[i], v);
        curl_free(v);
        assert_true(off < len);
    }
    twilio_signature(TOKEN, url, names, values, n, sig, siglen);
}

static int
callback(const char *url, const char *sig, const char *body, struct receipt *r)
{
    memset(r, 0x5a, sizeof(*r)); /* the parser must clear it */
    return twilio_parse_callback(TOKEN, url, sig, body, strlen(body), r);
}

static void
test_twilio_callback_signed(void **state)
{
    struct receipt r;

    (void)state;
    assert_int_equal(callback(PUBLIC, "F4/oRZWXxm1RbEkY/4iaI0faWKs=", VECTOR_BODY, &r), 200);
    assert_int_equal(r.status, JOB_DELIVERED);
    assert_string_equal(r.ref, SID);
    assert_string_equal(r.provider_status, "delivered");
    assert_string_equal(r.error_code, "");
    assert_string_equal(r.error, "");
    /* Configured with the default port, signed by Twilio without it. */
    assert_int_equal(callback("https://example.test:443/otpd/webhooks/twilio",
                              "F4/oRZWXxm1RbEkY/4iaI0faWKs=", VECTOR_BODY, &r),
                     200);
    assert_int_equal(r.status, JOB_DELIVERED);
}

static void
test_twilio_callback_forged(void **state)
{
    struct receipt r;

    (void)state;
    assert_int_equal(callback(PUBLIC, NULL, VECTOR_BODY, &r), 403);
    assert_int_equal(r.status, RECEIPT_PENDING);
    assert_int_equal(callback(PUBLIC, "F4/oRZWXxm1RbEkY/4iaI0faWKs", VECTOR_BODY, &r), 403);
    assert_int_equal(callback(PUBLIC, "", VECTOR_BODY, &r), 403);
    /* A tampered status, or another URL, breaks the signature. */
    assert_int_equal(callback(PUBLIC, "F4/oRZWXxm1RbEkY/4iaI0faWKs=",
                              "To=%2B14155552671&MessageStatus=failed&ApiVersion=2010-04-01&"
                              "MessageSid=" SID "&AccountSid=AC0123456789abcdef0123456789abcdef",
                              &r),
                     403);
    assert_int_equal(
        callback("https://example.test/other", "F4/oRZWXxm1RbEkY/4iaI0faWKs=", VECTOR_BODY, &r),
        403);
    assert_int_equal(r.status, RECEIPT_PENDING);
}

static void
test_twilio_callback_words(void **state)
{
    const char *names[] = {"MessageSid", "MessageStatus", "ErrorCode"};
    const char *values[] = {SID, "undelivered", "30006"};
    char body[512], sig[64];
    struct receipt r;

    (void)state;
    signed_form(PUBLIC, names, values, 3, body, sizeof(body), sig, sizeof(sig));
    assert_int_equal(callback(PUBLIC, sig, body, &r), 200);
    assert_int_equal(r.status, JOB_UNDELIVERED);
    assert_string_equal(r.error_code, "30006");
    assert_non_null(strstr(r.error, "landline"));

    values[2] = "30499"; /* no hint of ours */
    signed_form(PUBLIC, names, values, 3, body, sizeof(body), sig, sizeof(sig));
    assert_int_equal(callback(PUBLIC, sig, body, &r), 200);
    assert_string_equal(r.error, "carrier error; see Twilio's error docs");

    values[1] = "failed";
    signed_form(PUBLIC, names, values, 2, body, sizeof(body), sig, sizeof(sig));
    assert_int_equal(callback(PUBLIC, sig, body, &r), 200);
    assert_int_equal(r.status, JOB_FAILED);
    assert_string_equal(r.error, "");

    values[1] = "sent";
    signed_form(PUBLIC, names, values, 2, body, sizeof(body), sig, sizeof(sig));
    assert_int_equal(callback(PUBLIC, sig, body, &r), 200);
    assert_int_equal(r.status, JOB_SENT);

    /* Intermediate words record nothing. */
    values[1] = "queued";
    signed_form(PUBLIC, names, values, 2, body, sizeof(body), sig, sizeof(sig));
    assert_int_equal(callback(PUBLIC, sig, body, &r), 200);
    assert_int_equal(r.status, RECEIPT_PENDING);

    /* Signed, but without the status: a bad request, not a forgery. */
    signed_form(PUBLIC, names, values, 1, body, sizeof(body), sig, sizeof(sig));
    assert_int_equal(callback(PUBLIC, sig, body, &r), 400);
    signed_form(PUBLIC, names, values, 0, body, sizeof(body), sig, sizeof(sig));
    assert_int_equal(callback(PUBLIC, sig, body, &r), 400);
}

/* --- Twilio: Message fetch (polling) ----------------------------------------- */

static void
message(long status, const char *body, struct poll_result *res)
{
    memset(res, 0x5a, sizeof(*res));
    twilio_parse_message(status, body, strlen(body), res);
}

static void
test_twilio_message(void **state)
{
    struct poll_result res;

    (void)state;
    message(200, "{\"sid\":\"" SID "\",\"status\":\"delivered\",\"error_code\":null}", &res);
    assert_true(res.ok);
    assert_int_equal(res.receipt.status, JOB_DELIVERED);
    assert_string_equal(res.receipt.provider_status, "delivered");
    assert_string_equal(res.receipt.error, "");

    message(200, "{\"status\":\"undelivered\",\"error_code\":30005,\"error_message\":\"x\"}", &res);
    assert_int_equal(res.receipt.status, JOB_UNDELIVERED);
    assert_string_equal(res.receipt.error_code, "30005");
    assert_non_null(strstr(res.receipt.error, "unknown or inactive"));

    /* Without a hint of ours, Twilio's own text. */
    message(200, "{\"status\":\"failed\",\"error_code\":\"30500\",\"error_message\":\"Nope\"}",
            &res);
    assert_int_equal(res.receipt.status, JOB_FAILED);
    assert_string_equal(res.receipt.error, "Nope");

    message(200, "{\"status\":\"sent\"}", &res);
    assert_int_equal(res.receipt.status, JOB_SENT);
    message(200, "{\"status\":\"accepted\"}", &res);
    assert_true(res.ok);
    assert_int_equal(res.receipt.status, RECEIPT_PENDING);

    message(404, "{\"code\":20404,\"message\":\"not found\"}", &res);
    assert_false(res.ok);
    assert_int_equal(res.receipt.status, RECEIPT_PENDING);
    assert_non_null(strstr(res.receipt.error, "404"));
    message(200, "not json", &res);
    assert_false(res.ok);
}

/* --- MSG91: delivery reports --------------------------------------------------- */

struct sink {
    int n, refuse;
    struct receipt r[4];
};

static int
take(void *arg, const struct receipt *r)
{
    struct sink *s = arg;

    if (s->refuse)
        return -1;
    assert_true(s->n < 4);
    s->r[s->n++] = *r;
    return 0;
}

static int
reports(const char *ct, const char *body, struct sink *s)
{
    memset(s, 0, sizeof(*s));
    return msg91_parse_reports(ct, body, body ? strlen(body) : 0, take, s);
}

static void
test_msg91_formats(void **state)
{
    struct sink s;

    (void)state;
    /* v2: form field data, a JSON array; the outer requestId names every report. */
    assert_int_equal(
        reports("application/x-www-form-urlencoded; charset=utf-8",
                "data=%5B%7B%22senderId%22%3A+%22OTPSMS%22%2C+%22requestId%22%3A+%22rid1%22%2C+"
                "%22report%22%3A+%5B%7B%22number%22%3A+%22919812345678%22%2C+%22status%22%3A+"
                "%221%22%2C+%22desc%22%3A+%22DELIVERED%22%7D%5D%7D%5D",
                &s),
        200);
    assert_int_equal(s.n, 1);
    assert_string_equal(s.r[0].ref, "rid1");
    assert_int_equal(s.r[0].status, JOB_DELIVERED);
    assert_string_equal(s.r[0].provider_status, "1");
    assert_string_equal(s.r[0].error_code, "dlr_1");
    assert_string_equal(s.r[0].error, "");

    /* v3: one JSON object. */
    assert_int_equal(
        reports("application/json",
                "{\"requestId\":\"rid2\",\"status\":\"17\",\"desc\":\"Blocked number\"}", &s),
        200);
    assert_int_equal(s.n, 1);
    assert_int_equal(s.r[0].status, JOB_UNDELIVERED);
    assert_string_equal(s.r[0].error, "the number is blocked (MSG91: Blocked number)");

    /* "new": failureReason, and a numeric status. */
    assert_int_equal(
        reports(NULL, "{\"requestId\":\"rid3\",\"status\":9,\"failureReason\":\"\"}", &s), 200);
    assert_int_equal(s.n, 1);
    assert_string_equal(s.r[0].error_code, "dlr_9");
    assert_non_null(strstr(s.r[0].error, "DND"));
    assert_null(strstr(s.r[0].error, "MSG91:"));
}

static void
test_msg91_words(void **state)
{
    struct sink s;

    (void)state;
    assert_int_equal(reports("application/json",
                             "[{\"request_id\":\"a\",\"status\":\"DELIVRD\"},"
                             "{\"requestId\":\"b\",\"status\":\"rejected\"},"
                             "{\"requestId\":\"c\",\"status\":8},"
                             "{\"status\":1}]",
                             &s),
                     200);
    /* Unknown codes and reports without an id record nothing. */
    assert_int_equal(s.n, 2);
    assert_int_equal(s.r[0].status, JOB_DELIVERED);
    assert_string_equal(s.r[0].provider_status, "DELIVRD");
    assert_int_equal(s.r[1].status, JOB_UNDELIVERED);
    assert_string_equal(s.r[1].error, "the operator did not deliver the message");

    assert_int_equal(reports("application/json", "not json", &s), 400);
    assert_int_equal(reports("application/json", NULL, &s), 400);
    assert_int_equal(reports("application/x-www-form-urlencoded", "other=1", &s), 400);
    assert_int_equal(s.n, 0);

    /* The receipts could not be recorded: 503, so MSG91 retries. */
    const char *one = "{\"requestId\":\"x\",\"status\":1}";
    memset(&s, 0, sizeof(s));
    s.refuse = 1;
    assert_int_equal(msg91_parse_reports(NULL, one, strlen(one), take, &s), 503);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_twilio_doc_vector),
        cmocka_unit_test(test_status_callback_vector),
        cmocka_unit_test(test_carrier_hints),
        cmocka_unit_test(test_twilio_callback_signed),
        cmocka_unit_test(test_twilio_callback_forged),
        cmocka_unit_test(test_twilio_callback_words),
        cmocka_unit_test(test_twilio_message),
        cmocka_unit_test(test_msg91_formats),
        cmocka_unit_test(test_msg91_words),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * test_dlr.c: Twilio's webhook signature, checked against vectors computed
 * by twilio-python's RequestValidator (the first is the example of
 * Twilio's "validating requests" documentation), and the carrier hints.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "dlr.h"

static void
test_twilio_doc_vector(void **state)
{
    const char *names[] = {"CallSid", "Caller", "Digits", "From", "To"};
    const char *values[] = {"CA1234567890ABCDE", "+12349013030", "1234", "+12349013030",
                            "+18005551212"};
    char sig[64];

    (void)state;
    dlr_twilio_signature("12345", "https://mycompany.com/myapp.php?foo=1&bar=2", names, values, 5,
                         sig, sizeof(sig));
    assert_string_equal(sig, "0/KCTR6DLpKmkAf8muzZqo1nDgQ=");
}

static void
test_status_callback_vector(void **state)
{
    /* Out of order on purpose: the signature sorts by name. */
    const char *names[] = {"To", "MessageStatus", "ApiVersion", "MessageSid", "AccountSid"};
    const char *values[] = {"+14155552671", "delivered", "2010-04-01",
                            "SM0123456789abcdef0123456789abcdef",
                            "AC0123456789abcdef0123456789abcdef"};
    const char *url = "https://example.test/otpd/webhooks/twilio";
    char sig[64];

    (void)state;
    dlr_twilio_signature("test-auth-token-0123456789abcdef", url, names, values, 5, sig,
                         sizeof(sig));
    assert_string_equal(sig, "F4/oRZWXxm1RbEkY/4iaI0faWKs=");
    dlr_twilio_signature("test-auth-token-0123456789abcdef", url, names, values, 0, sig,
                         sizeof(sig));
    assert_string_equal(sig, "8e63X+YZvdtwpvQvZ2EN9aYpc3Y=");
    /* Any change to a value or the token changes it. */
    values[1] = "sent";
    dlr_twilio_signature("test-auth-token-0123456789abcdef", url, names, values, 5, sig,
                         sizeof(sig));
    assert_string_not_equal(sig, "F4/oRZWXxm1RbEkY/4iaI0faWKs=");
}

static void
test_carrier_hints(void **state)
{
    (void)state;
    assert_non_null(strstr(dlr_twilio_hint("30003"), "unreachable"));
    assert_non_null(strstr(dlr_twilio_hint("30005"), "unknown"));
    assert_non_null(strstr(dlr_twilio_hint("30006"), "landline"));
    assert_non_null(strstr(dlr_twilio_hint("30007"), "spam"));
    assert_non_null(strstr(dlr_twilio_hint("30008"), "unknown carrier"));
    assert_null(dlr_twilio_hint("21211"));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_twilio_doc_vector),
        cmocka_unit_test(test_status_callback_vector),
        cmocka_unit_test(test_carrier_hints),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

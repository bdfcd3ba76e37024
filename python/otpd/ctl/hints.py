"""Fixes for provider errors, for `send` and `check`.

Twilio's codes are explained in python/otpd/data/twilio_errors.tsv, the
table the daemon compiles in as well, so a hint reads the same in a status
record's `error` and in otpctl.  `send` adds hint_for()'s line to a failed
status; `check` reuses the same texts for credential problems it finds
before anything is sent.  The rest (MSG91, otpd's own curl_* codes) is
otpctl's alone.
"""
import os
from collections import namedtuple

URL_BILLING = "https://console.twilio.com/us1/billing"

TwilioError = namedtuple("TwilioError", "code cls hint")
TWILIO_CLASSES = ("job", "provider", "retry", "carrier")


def load_twilio_errors(path=None):
    """{code: TwilioError} from the data file (code, class, hint, tab-separated)."""
    if path is None:
        path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                            "data", "twilio_errors.tsv")
    table = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line or line.startswith("#"):
                continue
            parts = line.split("\t")
            if (len(parts) != 3 or not parts[0].isdigit() or parts[1] not in TWILIO_CLASSES
                    or not parts[2] or parts[0] in table):
                raise RuntimeError("%s:%d: expected a new CODE<tab>%s<tab>hint"
                                   % (path, lineno, "|".join(TWILIO_CLASSES)))
            table[parts[0]] = TwilioError(*parts)
    return table


TWILIO_ERRORS = load_twilio_errors()

HINT_TWILIO_AUTH = TWILIO_ERRORS["20003"].hint
HINT_TRIAL = TWILIO_ERRORS["21608"].hint
HINT_E164 = ("use E.164 format: +[country code][number], no spaces or special characters, "
             "e.g. +14155552671 or +919876543210 (Twilio issue 2)")


# otpd's own error codes for transport failures (daemon/http.c).
_HINTS_BY_CODE = {
    "curl_60": ("TLS certificate verification failed: set OTPD_CA_FILE to the CA bundle that signs "
                "the provider's certificate (verification cannot be turned off)"),
    "curl_6": "cannot resolve the provider's host name: check DNS and TWILIO_API_BASE/MSG91_API_BASE",
    "curl_7": "cannot connect to the provider: check the network, proxy and TWILIO_API_BASE/MSG91_API_BASE",
    "curl_28": "the provider did not answer in time: check the network or raise OTPD_HTTP_TIMEOUT_MS",
}


def hint_for(error_code, error="", provider=""):
    """A one-line fix for a status record's error, or ''."""
    code = (error_code or "").strip()
    text = (error or "").lower()
    if provider == "msg91" or code in ("201", "202", "207", "301", "418"):
        if code in ("201", "207") or "authenticat" in text or "auth key" in text:
            return ("Invalid Auth Key: verify MSG91_AUTH_KEY in the MSG91 dashboard (API section), "
                    "regenerate if necessary (MSG91 issue 1)")
        if "sender" in text or "template" in text:
            return ("Sender ID or template not approved: wait for approval (24-48 hours in India), "
                    "check MSG91_SENDER_ID and MSG91_TEMPLATE_ID (MSG91 issue 2)")
        if "dnd" in text:
            return ("DND number: use the transactional route, or ask the user to disable DND "
                    "(MSG91 issue 3)")
        if code == "301" or "balance" in text:
            return "insufficient MSG91 balance: recharge the account"
        if code == "418" or "whitelist" in text or "allow-list" in text:
            return "this server's IP is not on the MSG91 auth key's allow-list"
    if provider != "msg91" and code in TWILIO_ERRORS:
        return TWILIO_ERRORS[code].hint
    if code in _HINTS_BY_CODE:
        return _HINTS_BY_CODE[code]
    if "credit" in text or "balance" in text:
        return "insufficient credit: check the balance at " + URL_BILLING + " (Twilio issue 5)"
    if "certificate" in text:
        return _HINTS_BY_CODE["curl_60"]
    if "permission denied" in text:
        return HINT_TRIAL
    return ""

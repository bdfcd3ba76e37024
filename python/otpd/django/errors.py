"""The errors a site can show: one family, each with a message fit for the user.

Every exception the client can raise on the way to Redis is turned into one
of these, by its class (translate()); a job the daemon refused or could not
send is turned into one by its status record (error_for_status()).  A view
catches OTPError alone and shows `message` as a form error:

    OTPError                 anything below; also "the code could not be sent"
      OTPRateLimited         too many codes asked for; retry_after (seconds) or None
      OTPOptedOut            the number replied STOP
      OTPCountryNotAllowed   the destination country is not served
      OTPInvalidInput        not a number or address otpd accepts (also a ValueError)
        OTPNumberRefused     a number the site's number check refuses: invalid for its
                             country, or a refused line type (premium rate, landline...)
      OTPServiceUnavailable  Redis cannot be reached (or the settings are broken)

`message` (also str(e)) never holds the recipient, a code, a limit's name,
a host or a Redis error; `detail` is the technical reason, for logs, and
the client's exception is chained as __cause__.  `kind` names the class for
JSON ("rate_limited", ...), `status_code` is the HTTP status for a page
that shows it, and `about_recipient` says whether it belongs next to the
phone or e-mail field rather than above the form.
"""
import math

import redis
from django.core.exceptions import ImproperlyConfigured
from django.utils.translation import gettext, ngettext

from .. import protocol as P
from ..client import NumberRefused, OptedOut, RateLimited, SendRefused

# Twilio's codes for a number that is wrong or cannot take an SMS (see
# python/otpd/data/twilio_errors.tsv) and for a country not enabled.
_BAD_NUMBER_CODES = frozenset({"21211", "21614"})
_COUNTRY_CODES = frozenset({"country_not_allowed", "21408"})
_OPTED_OUT_CODES = frozenset({"opted_out", "21610"})
# otpd's SMS-pumping defences (docs/fraud.md): the number's prefix is paused or blocked.
_BLOCKED_CODES = frozenset({"suspected_pumping", "blocked_prefix"})


class OTPError(Exception):
    """A code could not be sent (or checked).  The base of the family."""

    kind = "error"
    status_code = 200
    about_recipient = False

    def __init__(self, detail="", message=None):
        self.detail = detail or ""
        self._message = message
        super().__init__(self.detail)

    @property
    def message(self):
        """What the user may read; in the active language."""
        return self._message if self._message is not None else self.default_message()

    def default_message(self):
        return gettext("We could not send you a code. Please try again later.")

    def __str__(self):
        return str(self.message)


class OTPSendFailed(OTPError):
    """The job ended without a code on its way: a provider refused it, it
    expired in the queue, or a receipt said undelivered.  Its record's
    error says why (for operators)."""

    kind = "send_failed"

    def default_message(self):
        return gettext("We could not send you a code. Check what you entered, "
                       "or try again later.")


class OTPRateLimited(OTPError):
    """Too many codes were requested.  retry_after: whole seconds, or None
    when the wait is not known.  reason: the limit's name, for logs."""

    kind = "rate_limited"
    status_code = 429

    def __init__(self, retry_after=None, message=None, reason="", detail=""):
        self.retry_after = retry_after
        self.reason = reason or ""
        super().__init__(detail or ("over the %s limit" % reason if reason else "rate limited"),
                         message)

    def default_message(self):
        s = self.retry_after
        if s is None:
            return gettext("Too many codes were requested. Try again later.")
        if s < 120:
            return ngettext("Too many codes were requested. Try again in %(n)d second.",
                            "Too many codes were requested. Try again in %(n)d seconds.",
                            s) % {"n": s}
        if s < 7200:
            m = math.ceil(s / 60)
            return ngettext("Too many codes were requested. Try again in %(n)d minute.",
                            "Too many codes were requested. Try again in %(n)d minutes.",
                            m) % {"n": m}
        h = math.ceil(s / 3600)
        return ngettext("Too many codes were requested. Try again in %(n)d hour.",
                        "Too many codes were requested. Try again in %(n)d hours.",
                        h) % {"n": h}


class OTPOptedOut(OTPError):
    """The number replied STOP to our SMS; it gets no codes until it texts
    START and support runs `otpctl optout remove`."""

    kind = "opted_out"
    about_recipient = True

    def default_message(self):
        return gettext("This phone number has unsubscribed from our text messages. Text START "
                       "to our number, or choose another way to get your code.")


class OTPCountryNotAllowed(OTPError):
    """The destination's country is not in OTPD_ALLOWED_COUNTRIES (or the
    provider does not serve it)."""

    kind = "country_not_allowed"
    about_recipient = True

    def default_message(self):
        return gettext("We cannot send codes to phone numbers in this country. Use another "
                       "number, or choose another way to get your code.")


class OTPNumberBlocked(OTPError):
    """SMS to the number's prefix are stopped: paused as suspected SMS
    pumping, or blocked by an operator (docs/fraud.md).  The user can still
    get a code another way (e-mail)."""

    kind = "number_blocked"
    about_recipient = True

    def default_message(self):
        return gettext("We cannot send codes to this phone number right now. Choose another "
                       "way to get your code, or try again later.")


class OTPInvalidInput(OTPError, ValueError):
    """Not a phone number or address otpd accepts.  field: "phone", "email"
    or "code" when the user's input is at fault; None when the site passed
    a bad argument (a purpose, an option), which is logged as a bug."""

    kind = "invalid"

    def __init__(self, detail="", message=None, field=None):
        self.field = field
        super().__init__(detail, message)

    @property
    def about_recipient(self):
        return self.field in ("phone", "email")

    def default_message(self):
        if self.field == "email":
            return gettext("Enter a valid e-mail address.")
        if self.field == "phone":
            return gettext("Enter a valid mobile number in international format: + and the "
                           "country code, then the number.")
        if self.field == "code":
            return gettext("Enter the digits of your code.")
        return gettext("We could not send you a code. Please try again later.")


class OTPNumberRefused(OTPInvalidInput):
    """The number check (OTPD_NUMBER_CHECK, otpd.numbers) refused the number
    before anything was queued.  reason: its line type ("premium_rate",
    "fixed_line", ...) or "invalid_number", for logs; the user is told to use
    a mobile number, or a valid one."""

    kind = "number_refused"

    def __init__(self, reason, detail="", message=None):
        self.reason = reason or ""
        super().__init__(detail or "number refused: %s" % self.reason, message, field="phone")

    def default_message(self):
        if self.reason == "invalid_number":
            return gettext("Enter a valid phone number.")
        return gettext("This number can't receive codes by text message. Use a mobile number.")


class OTPServiceUnavailable(OTPError):
    """Redis (directly or through Sentinel) cannot be reached or refused the
    command, or the otpd settings are broken: nothing was sent."""

    kind = "unavailable"
    status_code = 503

    def default_message(self):
        return gettext("We cannot send codes right now. Please try again in a few minutes.")


def seconds(v):
    """Whole seconds, rounded up; None for anything that is not a number."""
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    if v != v or v in (float("inf"), float("-inf")):
        return None
    return max(0, math.ceil(v))


def translate(exc, field=None):
    """The OTPError for an exception the client (or get_client) raised, or
    None for one that is not otpd's to explain (a bug: let it propagate).

    By class, in this order: OTPError as it is; otpd's RateLimited,
    OptedOut, NumberRefused, then any other SendRefused (by its reason); redis-py's
    RedisError (ConnectionError, TimeoutError, Sentinel's
    MasterNotFoundError, AuthenticationError, ResponseError such as NOPERM
    or OOM), ImproperlyConfigured (settings) and OSError (incl. the builtin
    TimeoutError of wait()) as unavailable; ValueError and TypeError as
    invalid input, on `field` when the caller knows the recipient was the
    bad argument.  The caller chains the original: raise translate(e) from e.
    """
    if isinstance(exc, OTPError):
        return exc
    if isinstance(exc, RateLimited):
        return OTPRateLimited(seconds(exc.retry_after), reason=exc.reason, detail=str(exc))
    if isinstance(exc, OptedOut):
        return OTPOptedOut(str(exc))
    if isinstance(exc, NumberRefused):
        return OTPNumberRefused(exc.reason, detail=str(exc))
    if isinstance(exc, SendRefused):
        if exc.reason in _COUNTRY_CODES:
            return OTPCountryNotAllowed(str(exc))
        return OTPSendFailed("%s: %s" % (exc.reason, exc))
    if isinstance(exc, (redis.RedisError, ImproperlyConfigured, OSError)):
        return OTPServiceUnavailable("%s: %s" % (type(exc).__name__, exc))
    if isinstance(exc, (ValueError, TypeError)):
        return OTPInvalidInput(str(exc), field=field)
    return None


def error_for_status(st):
    """The OTPError a job's progress (otp_status()) stands for, or None while
    it is on its way or once it was sent.

    rate_limited -> OTPRateLimited (retry_after from the record); failed with
    error_code opted_out or Twilio's 21610 -> OTPOptedOut; country_not_allowed
    or Twilio's 21408 -> OTPCountryNotAllowed; suspected_pumping or
    blocked_prefix -> OTPNumberBlocked; Twilio's 21211 or 21614 (not a
    valid or not a mobile number) -> OTPInvalidInput on the phone field; any
    other failed, undelivered, expired or rejected -> OTPSendFailed.  detail
    carries the record's error_code and error, never shown to the user.
    """
    status, code = st.get("status"), st.get("error_code") or ""
    detail = ("%s %s: %s" % (status, code, st.get("error") or "")).strip(": ")
    if status == P.RATE_LIMITED:
        return OTPRateLimited(st.get("retry_after"), reason=code, detail=detail)
    if status not in (P.FAILED, P.UNDELIVERED, P.EXPIRED, P.REJECTED):
        return None
    if code in _OPTED_OUT_CODES:
        return OTPOptedOut(detail)
    if code in _COUNTRY_CODES:
        return OTPCountryNotAllowed(detail)
    if code in _BLOCKED_CODES:
        return OTPNumberBlocked(detail)
    if code in _BAD_NUMBER_CODES:
        return OTPInvalidInput(detail, field="phone", message=gettext(
            "We could not send a text message to this number. Check it, and use a mobile "
            "number."))
    return OTPSendFailed(detail)

"""The errors SMSDevice/EmailDevice.generate_challenge() raise instead of the
client's own (otpd.RateLimited, otpd.OptedOut, ValueError, redis errors),
built here in one place.

They come from the exception family otpd.django exports (defined in
otpd.django.errors): OTPError and its subclasses OTPRateLimited, OTPOptedOut,
OTPCountryNotAllowed, OTPInvalidInput, OTPServiceUnavailable and
OTPSendFailed, whose messages are written for the user and never hold the
recipient, a code or a limit's name.  A site catches OTPError alone.  With
an otpd.django that predates the family (only OTPError and OTPRateLimited),
the same cases are raised as those two, with messages of their own here.

django-otp's forms catch any exception from generate_challenge() and show
str(e) to the user ("Error generating challenge: ..."), so str(e) is always
the user's message; `detail` (family only) and __cause__ are for logs.
"""
import math

try:
    from .. import (OTPCountryNotAllowed, OTPError, OTPInvalidInput, OTPOptedOut,
                    OTPRateLimited, OTPSendFailed, OTPServiceUnavailable)
    FAMILY = True
except ImportError:  # an otpd.django without the family: its two classes
    from .. import OTPError, OTPRateLimited
    OTPCountryNotAllowed = OTPInvalidInput = OTPOptedOut = OTPSendFailed = \
        OTPServiceUnavailable = OTPError
    FAMILY = False

__all__ = ["FAMILY", "OTPCountryNotAllowed", "OTPError", "OTPInvalidInput", "OTPOptedOut",
           "OTPRateLimited", "OTPSendFailed", "OTPServiceUnavailable", "country_not_allowed",
           "invalid_destination", "invalid_settings", "not_sent", "opted_out", "rate_limited",
           "unavailable"]


def _seconds(retry_after):
    try:
        v = float(retry_after)
    except (TypeError, ValueError):
        return None
    return None if v != v or v in (float("inf"), float("-inf")) else max(0, math.ceil(v))


def _make(cls, detail, message):
    """cls with `detail` for logs and `message` for the user: the family's
    default message when message is None; the old classes take the message only."""
    return cls(detail, message) if FAMILY else cls(message or detail)


def rate_limited(retry_after=None, reason=""):
    """A send limit (the client's check, or the daemon's) refused the code."""
    secs = _seconds(retry_after)
    if FAMILY:
        return OTPRateLimited(secs, reason=reason or "",
                              detail="over the %s limit" % reason if reason else "")
    if secs is None:
        return OTPRateLimited(None, "Too many codes were requested. Try again later.")
    return OTPRateLimited(secs, "Too many codes were requested. Try again in %d s." % secs)


def opted_out(detail="the number replied STOP"):
    """The number replied STOP to our SMS."""
    return _make(OTPOptedOut, detail, None if FAMILY else
                 "This number has unsubscribed from our SMS (it replied STOP). "
                 "Text START to us, then contact support.")


def country_not_allowed(detail="country_not_allowed"):
    """OTPD_ALLOWED_COUNTRIES does not include the number's country."""
    return _make(OTPCountryNotAllowed, detail, None if FAMILY else
                 "We cannot send codes to phone numbers in this country.")


def invalid_destination(channel, detail=""):
    """The device's stored number or address is not one otpd accepts.  The user
    at the login form cannot correct it, hence a message of our own."""
    what = "e-mail address" if channel == "email" else "phone number"
    message = "The %s of this device is not valid. Contact support to correct it." % what
    if FAMILY:
        return OTPInvalidInput(detail or "invalid %s on the device" % what, message,
                               field="email" if channel == "email" else "phone")
    return OTPError(message)


def invalid_settings(detail=""):
    """The device's purpose or send options are refused by the client (a set-up error)."""
    return _make(OTPInvalidInput, detail or "bad purpose or send option",
                 "This device is not set up correctly. Contact support.")


def unavailable(detail="Redis cannot be reached"):
    """Redis could not be reached (the job may still have been queued), or the
    otpd settings are broken."""
    return _make(OTPServiceUnavailable, detail, None if FAMILY else
                 "The code service is not available right now. "
                 "If no code arrives, try again in a moment.")


def not_sent(detail=""):
    """The daemon took the job and ended it without sending (failed, expired, rejected)."""
    return _make(OTPSendFailed, detail, None if FAMILY else
                 "The code could not be sent. Try again later or contact support.")

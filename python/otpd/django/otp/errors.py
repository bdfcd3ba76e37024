"""The errors SMSDevice/EmailDevice.generate_challenge() raise instead of the
client's own (otpd.RateLimited, otpd.OptedOut, ValueError, redis errors),
built here in one place.

They are otpd.django's exception family (otpd.django.errors): OTPError and
its subclasses OTPRateLimited, OTPOptedOut, OTPCountryNotAllowed,
OTPInvalidInput, OTPServiceUnavailable and OTPSendFailed, whose messages are
written for the user and never hold the recipient, a code or a limit's
name.  A site catches OTPError alone.  What this module adds is the
device's own wording where the family's would be wrong (a recipient or a
set-up the user at the login form cannot correct).

django-otp's forms catch any exception from generate_challenge() and show
str(e) to the user ("Error generating challenge: ..."), so str(e) is always
the user's message; `detail` and __cause__ are for logs.
"""
from ..errors import (OTPCountryNotAllowed, OTPError, OTPInvalidInput, OTPNumberRefused,
                      OTPOptedOut, OTPRateLimited, OTPSendFailed, OTPServiceUnavailable, seconds)

__all__ = ["OTPCountryNotAllowed", "OTPError", "OTPInvalidInput", "OTPNumberRefused",
           "OTPOptedOut", "OTPRateLimited", "OTPSendFailed", "OTPServiceUnavailable",
           "country_not_allowed", "invalid_destination", "invalid_settings", "not_sent",
           "number_refused", "opted_out", "rate_limited", "unavailable"]


def rate_limited(retry_after=None, reason=""):
    """A send limit (the client's check, or the daemon's) refused the code."""
    return OTPRateLimited(seconds(retry_after), reason=reason or "",
                          detail="over the %s limit" % reason if reason else "")


def opted_out(detail="the number replied STOP"):
    """The number replied STOP to our SMS."""
    return OTPOptedOut(detail)


def country_not_allowed(detail="country_not_allowed"):
    """OTPD_ALLOWED_COUNTRIES does not include the number's country."""
    return OTPCountryNotAllowed(detail)


def number_refused(reason, detail=""):
    """The client's number check refused the device's number: invalid for its
    country, or a refused line type (premium rate, landline, ...)."""
    return OTPNumberRefused(reason, detail)


def invalid_destination(channel, detail=""):
    """The device's stored number or address is not one otpd accepts.  The user
    at the login form cannot correct it, hence a message of our own."""
    what = "e-mail address" if channel == "email" else "phone number"
    return OTPInvalidInput(detail or "invalid %s on the device" % what,
                           "The %s of this device is not valid. Contact support to correct it."
                           % what, field="email" if channel == "email" else "phone")


def invalid_settings(detail=""):
    """The device's purpose or send options are refused by the client (a set-up error)."""
    return OTPInvalidInput(detail or "bad purpose or send option",
                           "This device is not set up correctly. Contact support.")


def unavailable(detail="Redis cannot be reached"):
    """Redis could not be reached (the job may still have been queued), or the
    otpd settings are broken."""
    return OTPServiceUnavailable(detail)


def not_sent(detail=""):
    """The daemon took the job and ended it without sending (failed, expired, rejected)."""
    return OTPSendFailed(detail)

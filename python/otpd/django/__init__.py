"""Django glue for otpd: settings, a cached client, view helpers, the errors a
site can show, a reusable flow and two management commands.

Add "otpd.django" to INSTALLED_APPS (for the system check, the templates and
the commands) and either include the flow:

    path("otp/", include("otpd.django.urls"))     # otpd.django.views

or call the helpers from your own views:

    from otpd.django import send_otp, otp_status, verify_otp, OTPError

Every failure is an OTPError (otpd.django.errors): OTPRateLimited,
OTPOptedOut, OTPCountryNotAllowed, OTPNumberBlocked, OTPInvalidInput (and its OTPNumberRefused),
OTPServiceUnavailable, OTPSendFailed, each with a `message` to show the user.
OTPManager has the names of the site's SMS guide (send_otp_sms,
send_otp_email, verify_otp).

Settings: OTPD_REDIS_URL, OTPD_HASH_KEY (64 hex, the daemon's key) and
OTPD_PREFIX (default "otpd:").  Under Redis Sentinel also OTPD_REDIS_SENTINELS
("host:port,host:port" or a list), OTPD_REDIS_MASTER_NAME (default "mymaster")
and OTPD_REDIS_SENTINEL_PASSWORD; OTPD_REDIS_URL then gives only the user,
password and db.  The flow's: see otpd.django.conf.
"""
from .errors import (OTPCountryNotAllowed, OTPError, OTPInvalidInput, OTPNumberBlocked,
                     OTPNumberRefused, OTPOptedOut, OTPRateLimited, OTPSendFailed, OTPServiceUnavailable,
                     error_for_status)
from .helpers import (check_recipient, get_client, otp_status, reset_client, send_otp,
                      verify_otp)
from .manager import OTPManager

__all__ = ["OTPCountryNotAllowed", "OTPError", "OTPInvalidInput", "OTPManager",
           "OTPNumberBlocked", "OTPNumberRefused", "OTPOptedOut", "OTPRateLimited", "OTPSendFailed",
           "OTPServiceUnavailable", "check_recipient", "error_for_status", "get_client",
           "otp_status", "reset_client", "send_otp", "verify_otp"]

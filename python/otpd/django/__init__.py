"""Django glue for otpd: settings, a cached client, small view helpers and a
system check.  Add "otpd.django" to INSTALLED_APPS (for the check) and call
the helpers from your views:

    from otpd.django import send_otp, otp_status, verify_otp, OTPError, OTPRateLimited

Settings: OTPD_REDIS_URL, OTPD_HASH_KEY (64 hex, the daemon's key) and
OTPD_PREFIX (default "otpd:").  Under Redis Sentinel also OTPD_REDIS_SENTINELS
("host:port,host:port" or a list), OTPD_REDIS_MASTER_NAME (default "mymaster")
and OTPD_REDIS_SENTINEL_PASSWORD; OTPD_REDIS_URL then gives only the user,
password and db.
"""
from .helpers import (OTPError, OTPRateLimited, get_client, otp_status,
                      reset_client, send_otp, verify_otp)

__all__ = ["OTPError", "OTPRateLimited", "get_client", "otp_status",
           "reset_client", "send_otp", "verify_otp"]

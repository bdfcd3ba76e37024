"""OTPManager: the names the site's SMS guide uses, over otpd.

The guide's code calls OTPManager.send_otp_sms() and OTPManager.verify_otp()
around a code it made and stored itself.  Here the daemon makes the code, so
nothing is passed in or stored: send returns the job id, verify takes what
the user typed.  Errors are the OTPError family (otpd.django.errors).
"""
from . import conf
from .helpers import otp_status, send_otp, verify_otp


class OTPManager:
    """Thin class-level wrappers over otpd.django.helpers.

    purpose defaults to OTPD_PURPOSE ("login"); give the same purpose to the
    send and the verify.  Extra keyword options (ttl, digits, max_attempts,
    message, fresh, id, locale, app_hash, fallback, fallback_email) go to
    OTPClient.send; without a locale the active language is sent
    (OTPD_LOCALE_FROM_REQUEST, see send_otp).
    """

    @staticmethod
    def send_otp_sms(phone, *, purpose=None, **options):
        """Queue a code by SMS to an E.164 number; returns the job id.

        Keyword-only on purpose: the guide's send_otp_sms(phone, otp) passed
        the code, which the site no longer has; that call fails loudly here."""
        return send_otp(phone, purpose or conf.purpose(), channel="sms", **options)

    @staticmethod
    def send_otp_voice(phone, *, purpose=None, **options):
        """Queue a code read out in a phone call to an E.164 number; returns
        the job id.  verify_otp() checks it as an SMS code."""
        return send_otp(phone, purpose or conf.purpose(), channel="voice", **options)

    @staticmethod
    def send_otp_email(email, *, purpose=None, **options):
        """Queue a code by e-mail; returns the job id."""
        return send_otp(email, purpose or conf.purpose(), channel="email", **options)

    @staticmethod
    def verify_otp(to, code, *, purpose=None, channel=None):
        """Check the code the user typed for `to` (a number, or an address:
        the channel follows from the "@" unless given).  Returns an
        otpd.VerifyResult, true only for a right code, which it uses up;
        .status says mismatch, expired, locked or invalid otherwise."""
        if channel is None:
            channel = "email" if isinstance(to, str) and "@" in to else "sms"
        return verify_otp(to, code, purpose or conf.purpose(), channel)

    @staticmethod
    def status(job_id):
        """The job's progress (otp_status()): status, final, to (masked), ..."""
        return otp_status(job_id)

"""What a view needs: send a code, report its progress, check what the user
typed.  All of it goes through one OTPClient per process.

Every exception on the way is raised as one of otpd.django.errors (OTPError
and its subclasses), with the client's exception chained: a view catches
OTPError and shows its message.
"""
import logging
import math
import threading
import time

from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.utils import translation

from .. import FINAL, OTPClient, country_code
from .. import protocol as P
from ..client import _E164, PHONE_CHANNELS, NumberRefused, normalize_email, normalize_locale
from ..connection import redis_from_settings
from . import conf
from .errors import (OTPCountryNotAllowed, OTPError, OTPInvalidInput, OTPRateLimited,
                     OTPServiceUnavailable, error_for_status, seconds, translate)

log = logging.getLogger("otpd.django")

# Importable from here as before.
__all__ = ["OTPError", "OTPRateLimited", "check_recipient", "get_client", "otp_status",
           "reset_client", "send_otp", "verify_otp", "error_for_status"]


_lock = threading.Lock()
_client = None


def get_client():
    """The process's OTPClient, built from settings on first use."""
    global _client
    c = _client
    if c is None:
        with _lock:
            if _client is None:
                try:
                    r = redis_from_settings(conf.redis_url(), conf.redis_sentinels(),
                                            conf.redis_master_name(),
                                            conf.redis_sentinel_password())
                    _client = OTPClient(redis=r, hash_key=conf.hash_key(), prefix=conf.prefix(),
                                        number_check=conf.number_check())
                except (ValueError, ImportError) as e:
                    raise ImproperlyConfigured(str(e)) from None
            c = _client
    return c


def reset_client():
    """Forget the cached client (done automatically when an OTPD_ setting changes)."""
    global _client
    with _lock:
        c, _client = _client, None
    if c is not None:
        c.redis.connection_pool.disconnect()


def _on_setting_changed(setting, **kwargs):
    if setting.startswith("OTPD_"):
        reset_client()


setting_changed.connect(_on_setting_changed)


def _call(fn, *args, **kwargs):
    """fn(...), its exceptions raised as the OTPError translate() gives.  The
    recipient was checked before (check_recipient), so a ValueError left is
    the site's bad argument (field None), logged as such."""
    try:
        return fn(*args, **kwargs)
    except Exception as e:
        err = translate(e)
        if err is None:
            raise
        if isinstance(err, OTPServiceUnavailable):
            # Broken settings are the site's to fix (with the traceback); an
            # outage is the operator's, and its one line says which.
            if isinstance(e, ImproperlyConfigured):
                log.error("otpd: %s", err.detail, exc_info=e)
            else:
                log.warning("otpd: Redis unavailable: %s", err.detail)
        elif isinstance(err, OTPInvalidInput) and err.field is None:
            log.error("otpd: the site passed a bad argument: %s", err.detail)
        if err is e:
            raise
        raise err from e


def check_recipient(to, channel="sms"):
    """The recipient as otpd keys it (channel "sms", "voice" or "email"), or
    OTPInvalidInput (field "phone" or "email") / OTPCountryNotAllowed
    (OTPD_ALLOWED_COUNTRIES, when the site has it) / OTPNumberRefused
    (OTPD_NUMBER_CHECK: an invalid number or a refused line type).  send_otp runs it first; a flow that decides not to send runs
    it too, so that a stranger's number is refused like anybody's."""
    if channel == "email":
        try:
            return normalize_email(to)
        except ValueError as e:
            raise OTPInvalidInput(str(e), field="email") from e
    if channel not in PHONE_CHANNELS:
        raise OTPInvalidInput("channel must be 'sms', 'voice' or 'email', got %r" % (channel,))
    if not isinstance(to, str) or not _E164.fullmatch(to):
        raise OTPInvalidInput("not an E.164 number: %r" % (to,), field="phone")
    try:
        allowed = conf.allowed_countries()
    except ValueError as e:
        raise OTPServiceUnavailable(str(e)) from e
    if allowed and country_code(to) not in allowed:
        raise OTPCountryNotAllowed("destination country +%s is not in OTPD_ALLOWED_COUNTRIES"
                                   % country_code(to))
    try:
        checker = conf.number_check()
    except (ValueError, ImportError) as e:
        raise OTPServiceUnavailable(str(e)) from e
    if checker is not None:
        try:
            checker.check(to)
        except NumberRefused as e:
            raise translate(e) from e
    return to


def _the_client():
    return _call(get_client)


def active_locale():
    """The active language (django.utils.translation.get_language(): the
    request's under LocaleMiddleware, else LANGUAGE_CODE) as a BCP 47 tag
    for the job ("pt-br" -> "pt-BR"), or None when there is none or it is
    not one otpd takes (then the daemon's default language applies)."""
    lang = translation.get_language()
    if not lang:
        return None
    try:
        return normalize_locale(lang)
    except ValueError:
        log.debug("otpd: the active language %r is not a BCP 47 tag; sent without locale", lang)
        return None


def send_otp(phone, purpose="login", **options):
    """Queue a code for `phone` (a number; with channel="email" an e-mail
    address) and return the job id.

    options go to OTPClient.send (ttl, digits, max_attempts, message, provider,
    id, fresh, channel "sms", "voice" or "email", locale, app_hash, fallback,
    fallback_email).  Without a locale the active language is sent
    (active_locale()), unless OTPD_LOCALE_FROM_REQUEST is False; locale=None
    sends none.  Raises an OTPError: OTPInvalidInput (field "phone" or
    "email" for the recipient, None for a bad option), OTPCountryNotAllowed,
    OTPNumberRefused, OTPRateLimited, OTPOptedOut, OTPServiceUnavailable.
    """
    channel = options.get("channel", "sms")
    to = check_recipient(phone, channel)
    if "locale" not in options and conf.locale_from_request():
        options["locale"] = active_locale()
    return _call(_the_client().send, to, purpose, **options)


def otp_status(job_id):
    """The job's progress as a JSON-ready dict:

    id, status ("unknown" if there is no record), final (stop polling),
    error and error_code (provider's explanation, "" if none), to (masked),
    attempts (send attempts) and retry_after (seconds, for rate_limited;
    None when not known).  Raises OTPServiceUnavailable when Redis cannot
    be reached.  error_for_status() turns a failure into its OTPError.
    """
    st = _call(_the_client().status, job_id)
    status = st.get("status") or "unknown"
    retry_after = None
    if status == P.RATE_LIMITED:
        retry_after = seconds(st.get("retry_after"))
        if retry_after is None and st.get("retry_at_ms"):  # what the daemon writes
            at = seconds(st.get("retry_at_ms"))
            retry_after = None if at is None else max(0, math.ceil(at / 1000 - time.time()))
        if retry_after is None and st.get("retry_after_ms"):
            ms = seconds(st.get("retry_after_ms"))
            retry_after = None if ms is None else math.ceil(ms / 1000)
    try:
        attempts = int(st.get("attempts") or 0)
    except ValueError:
        attempts = 0
    return {
        "id": job_id,
        "status": status,
        "final": status in FINAL or status == "unknown",
        "error": st.get("error", ""),
        "error_code": st.get("error_code", ""),
        "to": st.get("to", ""),
        "attempts": attempts,
        "retry_after": retry_after,
    }


def verify_otp(phone, code, purpose="login", channel="sms"):
    """Check a code the user typed; returns otpd.VerifyResult (status ok,
    mismatch, expired, locked or invalid, and attempts_left).  `phone` is an
    e-mail address with channel="email" (a code sent by "voice" is checked
    as one sent by SMS: the record is the number's).  Raises OTPInvalidInput
    for a bad recipient or purpose (or a code that is not a str),
    OTPServiceUnavailable when Redis cannot be reached."""
    if channel == "email":
        try:
            phone = normalize_email(phone)
        except ValueError as e:
            raise OTPInvalidInput(str(e), field="email") from e
    elif channel in PHONE_CHANNELS and not (isinstance(phone, str) and _E164.fullmatch(phone)):
        raise OTPInvalidInput("not an E.164 number: %r" % (phone,), field="phone")
    return _call(_the_client().verify, phone, code, purpose, channel)

"""What a view needs: send a code, report its progress, check what the user
typed.  All of it goes through one OTPClient per process."""
import math
import threading

from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed

from .. import FINAL, OTPClient
from .. import protocol as P
from ..connection import redis_from_settings
from . import conf


class OTPError(Exception):
    """The request cannot be sent as given; str() says why (the client's
    ValueError message)."""


class OTPRateLimited(OTPError):
    """Too many codes were asked for.  retry_after: seconds, or None if unknown."""

    def __init__(self, retry_after=None, message=None):
        self.retry_after = retry_after
        super().__init__(message or (
            "too many codes requested; try again in %d s" % retry_after
            if retry_after is not None else "too many codes requested; try again later"))


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
                    _client = OTPClient(redis=r, hash_key=conf.hash_key(), prefix=conf.prefix())
                except ValueError as e:
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


def _seconds(v):
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return max(0, math.ceil(v))


def _rate_limit(exc):
    """An OTPRateLimited for otpd's RateLimited error (any class of that name
    defined in the otpd package and carrying retry_after), else None."""
    for cls in type(exc).__mro__:
        if (cls.__name__ == "RateLimited" and cls.__module__.split(".")[0] == "otpd"
                and hasattr(exc, "retry_after")):
            return OTPRateLimited(_seconds(exc.retry_after))
    return None


def _call(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except Exception as e:
        rl = _rate_limit(e)
        if rl is not None:
            raise rl from e
        if isinstance(e, ValueError):
            raise OTPError(str(e)) from e
        raise


def send_otp(phone, purpose="login", **options):
    """Queue a code for `phone` (or, with channel="email", an e-mail address)
    and return the job id.

    options go to OTPClient.send (ttl, digits, max_attempts, message, provider,
    id, fresh, channel).  Raises OTPError for invalid input and OTPRateLimited if refused.
    """
    return _call(get_client().send, phone, purpose, **options)


def otp_status(job_id):
    """The job's progress as a JSON-ready dict:

    id, status ("unknown" if there is no record), final (stop polling),
    error and error_code (provider's explanation, "" if none), to (masked),
    attempts (send attempts) and retry_after (seconds, for rate_limited;
    None when not known).
    """
    st = get_client().status(job_id)
    status = st.get("status") or "unknown"
    retry_after = None
    if status == P.RATE_LIMITED:
        retry_after = _seconds(st.get("retry_after"))
        if retry_after is None and st.get("retry_after_ms"):
            ms = _seconds(st.get("retry_after_ms"))
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
    e-mail address with channel="email"."""
    return _call(get_client().verify, phone, code, purpose, channel)

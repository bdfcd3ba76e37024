"""otpd settings, read from django.conf.settings when needed (never cached
here, so override_settings works), and the system check that guards them."""
import re

from django.conf import settings
from django.core import checks

from ..connection import DEFAULT_MASTER_NAME

DEFAULT_REDIS_URL = "redis://localhost:6379/0"
DEFAULT_PREFIX = "otpd:"

_HEX_KEY = re.compile(r"[0-9a-fA-F]{64}")


def redis_url():
    return getattr(settings, "OTPD_REDIS_URL", None) or DEFAULT_REDIS_URL


def redis_sentinels():
    """OTPD_REDIS_SENTINELS: "host:port,host:port", or a list of "host:port"
    strings or (host, port) pairs; empty for no Sentinel (OTPD_REDIS_URL's
    host is the server)."""
    return getattr(settings, "OTPD_REDIS_SENTINELS", None) or ""


def redis_master_name():
    return getattr(settings, "OTPD_REDIS_MASTER_NAME", None) or DEFAULT_MASTER_NAME


def redis_sentinel_password():
    return getattr(settings, "OTPD_REDIS_SENTINEL_PASSWORD", None) or ""


def hash_key():
    return getattr(settings, "OTPD_HASH_KEY", None)


def prefix():
    return getattr(settings, "OTPD_PREFIX", None) or DEFAULT_PREFIX


def check_settings(app_configs=None, **kwargs):
    """otpd.E001: OTPD_HASH_KEY missing; otpd.E002: not 64 hex characters.

    A wrong key still makes MACs, just ones that never match what the daemon
    stored, so every code would be "wrong".  The key itself is never echoed.
    """
    hint = ("Set OTPD_HASH_KEY to the daemon's key: 64 hex characters "
            "(openssl rand -hex 32), identical on both sides.")
    key = hash_key()
    if not key:
        return [checks.Error("OTPD_HASH_KEY is not set.", hint=hint, id="otpd.E001")]
    if not isinstance(key, str) or not _HEX_KEY.fullmatch(key):
        what = ("%d characters" % len(key)) if isinstance(key, str) else type(key).__name__
        if isinstance(key, str) and key != key.strip():
            what += ", with surrounding whitespace"
        return [checks.Error("OTPD_HASH_KEY must be exactly 64 hex characters (got %s)." % what,
                             hint=hint, id="otpd.E002")]
    return []

"""otpd settings, read from django.conf.settings when needed (never cached
here, so override_settings works), and the system check that guards them.

Connection: OTPD_REDIS_URL, OTPD_REDIS_SENTINELS, OTPD_REDIS_MASTER_NAME,
OTPD_REDIS_SENTINEL_PASSWORD, OTPD_HASH_KEY, OTPD_PREFIX.
The flow (otpd.django.views): OTPD_PURPOSE, OTPD_CHANNELS, OTPD_SEND_OPTIONS,
OTPD_SUCCESS_URL, OTPD_RECIPIENT_CHECK.  Both: OTPD_ALLOWED_COUNTRIES,
OTPD_NUMBER_CHECK, OTPD_REFUSED_LINE_TYPES, OTPD_LOCALE_FROM_REQUEST.
"""
import re

from django.conf import settings
from django.core import checks
from django.utils.module_loading import import_string

from .. import numbers
from ..client import CHANNELS, DEFAULT_CHANNELS, country_code
from ..connection import DEFAULT_MASTER_NAME

DEFAULT_REDIS_URL = "redis://localhost:6379/0"
DEFAULT_PREFIX = "otpd:"
DEFAULT_PURPOSE = "login"
DEFAULT_SUCCESS_URL = "/"

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


def purpose():
    """OTPD_PURPOSE: the purpose of the flow's codes (default "login")."""
    return getattr(settings, "OTPD_PURPOSE", None) or DEFAULT_PURPOSE


def channels():
    """OTPD_CHANNELS: what the flow's form offers, in order, of "sms",
    "voice" (a phone call that reads the code out) and "email"; default
    ("sms", "email")."""
    return tuple(getattr(settings, "OTPD_CHANNELS", None) or DEFAULT_CHANNELS)


def send_options():
    """OTPD_SEND_OPTIONS: keyword arguments for every send of the flow, e.g.
    {"ttl": 300, "max_attempts": 5, "fallback": ["voice"]} (default none:
    the daemon's).  The flow fits "fallback" to each code's channel (see
    otpd.django.views.fit_fallback)."""
    return dict(getattr(settings, "OTPD_SEND_OPTIONS", None) or {})


def locale_from_request():
    """OTPD_LOCALE_FROM_REQUEST: whether send_otp (and so the flow and
    OTPManager) gives the daemon the active language (get_language(): the
    request's, with LocaleMiddleware) as the job's locale when the caller
    gives none (default True)."""
    v = getattr(settings, "OTPD_LOCALE_FROM_REQUEST", None)
    return True if v is None else bool(v)


def success_url():
    """OTPD_SUCCESS_URL: where the flow goes after a right code; a path or a
    URL name (default "/")."""
    return getattr(settings, "OTPD_SUCCESS_URL", None) or DEFAULT_SUCCESS_URL


def recipient_check():
    """OTPD_RECIPIENT_CHECK: a callable (or its dotted path) taking (to,
    channel) and returning whether a code should really be sent; None sends
    to everyone.  When it says no, the flow answers as if it had sent one."""
    v = getattr(settings, "OTPD_RECIPIENT_CHECK", None)
    return import_string(v) if isinstance(v, str) else v


def parse_countries(value):
    """The calling codes of OTPD_ALLOWED_COUNTRIES ("1,44,91", a leading +
    allowed, as the daemon reads it; or a list) as a frozenset; empty means
    all.  ValueError for anything that is not a calling code."""
    if isinstance(value, str):
        items = value.split(",")
    elif isinstance(value, (list, tuple, set, frozenset)):
        items = list(value)
    elif value is None:
        items = []
    else:
        raise ValueError("OTPD_ALLOWED_COUNTRIES must be a string or a list")
    out = set()
    for item in items:
        cc = str(item).strip()
        cc = cc[1:] if cc.startswith("+") else cc
        if not cc:
            continue
        # As daemon/route.c: a code is what country_code() finds at the start of a number.
        if not re.fullmatch(r"[1-9][0-9]{0,2}", cc) or country_code("+" + cc + "0000000") != cc:
            raise ValueError("OTPD_ALLOWED_COUNTRIES: %r is not a country calling code" % item)
        out.add(cc)
    return frozenset(out)


def allowed_countries():
    """OTPD_ALLOWED_COUNTRIES, the daemon's setting, if the site has it too: the
    calling codes SMS may go to (empty: all).  The client then refuses other
    numbers before enqueueing; the daemon refuses them anyway."""
    return parse_countries(getattr(settings, "OTPD_ALLOWED_COUNTRIES", None) or "")


def number_check_enabled():
    """OTPD_NUMBER_CHECK: whether SMS numbers are checked (otpd.numbers) before
    a code is queued; default True when python3-phonenumbers is installed.
    True without it is a configuration error (ImportError)."""
    v = getattr(settings, "OTPD_NUMBER_CHECK", None)
    return numbers.available() if v is None else bool(v)


def refused_line_types():
    """OTPD_REFUSED_LINE_TYPES: the line types refused (a list, or a
    comma-separated string); unset: otpd.numbers.DEFAULT_REFUSED
    (premium_rate, shared_cost, voip, fixed_line); []: invalid numbers only.
    ValueError for an unknown name."""
    return numbers.parse_line_types(getattr(settings, "OTPD_REFUSED_LINE_TYPES", None))


def number_check():
    """The client's number_check from OTPD_NUMBER_CHECK and
    OTPD_REFUSED_LINE_TYPES: a NumberCheck, or None for none.  ValueError
    or ImportError when they are wrong."""
    if not number_check_enabled():
        return None
    return numbers.NumberCheck(refuse=refused_line_types())


def check_settings(app_configs=None, **kwargs):
    """otpd.E001: OTPD_HASH_KEY missing; otpd.E002: not 64 hex characters;
    otpd.E003: OTPD_ALLOWED_COUNTRIES unreadable; otpd.E004: OTPD_CHANNELS
    not a list of "sms", "voice" and "email"; otpd.E005: OTPD_REFUSED_LINE_TYPES
    unreadable, or OTPD_NUMBER_CHECK on without python3-phonenumbers.

    A wrong key still makes MACs, just ones that never match what the daemon
    stored, so every code would be "wrong".  The key itself is never echoed.
    """
    return _check_key() + _check_flow()


def _check_flow():
    errors = []
    try:
        allowed_countries()
    except ValueError as e:
        errors.append(checks.Error(str(e), hint='Calling codes separated by commas, e.g. "1,44,91",'
                                   " the daemon's value.", id="otpd.E003"))
    ch = getattr(settings, "OTPD_CHANNELS", None)
    if ch is not None and (isinstance(ch, str) or not ch or any(c not in CHANNELS for c in ch)):
        errors.append(checks.Error("OTPD_CHANNELS must be a list of \"sms\", \"voice\" and "
                                   "\"email\"",
                                   hint='For example ("sms",), ("sms", "email") or '
                                   '("sms", "voice", "email").',
                                   id="otpd.E004"))
    try:
        number_check()
    except (ValueError, ImportError) as e:
        errors.append(checks.Error(str(e), hint='For example OTPD_REFUSED_LINE_TYPES = '
                                   '["premium_rate", "shared_cost", "voip"], and '
                                   "python3-phonenumbers installed (or OTPD_NUMBER_CHECK = False).",
                                   id="otpd.E005"))
    return errors


def _check_key():
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

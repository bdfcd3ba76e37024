"""What every otpctl command shares: configuration, errors, masking, output and Redis.

Configuration is read the way the daemon reads it (daemon/config.c): the
defaults below, then the .env file (python-dotenv's syntax, parsed by
python-dotenv), then environment variables of the same names.  UsageError
and Failure carry a command's exit status (2 and 1) up to main().  Phone
numbers in free text are masked before they are shown.
"""
import io
import json
import os
import re
import sys
import urllib.parse

import dotenv
import dotenv.parser

from .. import protocol
from ..client import mask_phone
from ..connection import parse_sentinels, redis_from_settings

DEFAULTS = {
    "REDIS_URL": "redis://127.0.0.1:6379/0",
    "OTPD_REDIS_SENTINELS": "",
    "OTPD_REDIS_MASTER_NAME": "mymaster",
    "OTPD_REDIS_SENTINEL_PASSWORD": "",
    "OTPD_PREFIX": "otpd:",
    "OTPD_GROUP": "otpd",
    "OTPD_HASH_KEY": "",
    "OTPD_PROVIDER": "",
    "OTPD_CA_FILE": "",
    "TWILIO_ACCOUNT_SID": "",
    "TWILIO_AUTH_TOKEN": "",
    "TWILIO_PHONE_NUMBER": "",
    "TWILIO_MESSAGING_SERVICE_SID": "",
    "TWILIO_API_BASE": "https://api.twilio.com",
    "MSG91_AUTH_KEY": "",
    "MSG91_API_BASE": "https://control.msg91.com",
    "MSG91_TEMPLATE_ID": "",
    "MSG91_SENDER_ID": "",
}

# A phone number in E.164: + and 7 to 15 digits.
E164 = re.compile(r"\+[1-9][0-9]{6,14}")
# A digit run that may be a phone number: optional +, 7+ digits, with the
# separators people type (spaces, dashes, dots, brackets).
_PHONEISH = re.compile(r"\+?[0-9][0-9 ().-]{5,}[0-9]")


class UsageError(Exception):
    """Bad invocation or unreadable configuration: exit status 2."""


class Failure(Exception):
    """The command ran and failed: exit status 1."""


# "KEY=#..." with the "#" first in an unquoted value.
_HASH_VALUE = re.compile(r"\s*(?:export[ \t]+)?[^=\r\n]*=[ \t]*#")


def parse_dotenv(text, name="config"):
    """Parse .env text (KEY=VALUE, # comments, quotes, `export KEY=...`) into a dict.

    python-dotenv reads it, without ${VAR} expansion (the daemon has none).
    Unknown keys are kept: the web app's own .env can be used as it is.
    Raises UsageError with file and line for a line python-dotenv cannot
    read or one without "=", as the daemon refuses both.
    """
    bare_hash = {}
    for b in dotenv.parser.parse_stream(io.StringIO(text)):
        orig = b.original.string
        # The binding's text starts with the blank lines before it.
        line = b.original.line + orig[:len(orig) - len(orig.lstrip())].count("\n")
        if b.error or (b.key is not None and b.value is None):
            raise UsageError("%s:%d: expected KEY=VALUE" % (name, line))
        if b.key is not None:
            bare_hash[b.key] = bool(_HASH_VALUE.match(orig))
    values = dotenv.dotenv_values(stream=io.StringIO(text), interpolate=False)
    # The one place daemon/config.c reads differently: to python-dotenv
    # "KEY=#x" is "#x", to the daemon a comment.  otpctl must see what the
    # daemon sees.
    for k, bare in bare_hash.items():
        if bare:
            values[k] = ""
    return dict(values)


def load_config(path=None, environ=None):
    """Defaults, then the file (if any), then the environment, as the daemon does.

    Returns (config dict, list of keys that came from the environment)."""
    environ = os.environ if environ is None else environ
    cfg = dict(DEFAULTS)
    if path:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read(1024 * 1024 + 1)
        except OSError as e:
            raise UsageError("%s: %s" % (path, e.strerror or e)) from None
        except UnicodeDecodeError:
            raise UsageError("%s: not UTF-8 text" % path) from None
        if len(text) > 1024 * 1024:
            raise UsageError("%s: larger than 1 MiB" % path)
        for k, v in parse_dotenv(text, path).items():
            if k in DEFAULTS:
                cfg[k] = v
    from_env = [k for k in DEFAULTS if k in environ]
    for k in from_env:
        cfg[k] = environ[k]
    return cfg, from_env


def redact_url(url):
    """REDIS_URL without its password."""
    try:
        u = urllib.parse.urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    if u.password is None:
        return url
    host = u.hostname or ""
    if u.port:
        host += ":%d" % u.port
    user = (u.username or "") + ":***@"
    return urllib.parse.urlunsplit((u.scheme, user + host, u.path, u.query, u.fragment))


def fmt_age(ms):
    """3.2s, 45s, 2m05s, 3h02m, 4d06h; '-' when unknown."""
    if ms is None:
        return "-"
    s = max(ms, 0) / 1000.0
    if s < 10:
        return "%.1fs" % s
    s = int(s)
    if s < 60:
        return "%ds" % s
    if s < 3600:
        return "%dm%02ds" % (s // 60, s % 60)
    if s < 86400:
        return "%dh%02dm" % (s // 3600, s % 3600 // 60)
    return "%dd%02dh" % (s // 86400, s % 86400 // 3600)


def _mask_match(m):
    s = m.group(0)
    if E164.fullmatch(s):
        return mask_phone(s)
    ndig = sum(c.isdigit() for c in s)
    if ndig < 7:
        return s
    out, seen = [], 0
    for c in s:
        if c.isdigit():
            out.append(c if seen < 4 or seen >= ndig - 2 else "*")
            seen += 1
        else:
            out.append(c)
    return "".join(out)


def mask_text(s):
    """Mask anything in free text that looks like a phone number."""
    return _PHONEISH.sub(_mask_match, s)


def truncate(s, n=80):
    return s if len(s) <= n else s[:n - 1] + "\u2026"


def id_ms(stream_id):
    try:
        return int(str(stream_id).split("-", 1)[0])
    except ValueError:
        return None


def as_int(v, default=None):
    try:
        return int(v)
    except (TypeError, ValueError):
        return default


def table(rows, headers, indent="  "):
    rows = [[("" if c is None else str(c)) for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    lines = [indent + "  ".join(h.ljust(widths[i]) for i, h in enumerate(headers)).rstrip()]
    for r in rows:
        lines.append(indent + "  ".join(c.ljust(widths[i]) for i, c in enumerate(r)).rstrip())
    return "\n".join(lines)


def emit_json(data):
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def warn(msg):
    sys.stderr.write("otpctl: %s\n" % msg)


def redis_where(cfg):
    """Where otpctl finds Redis, for messages: REDIS_URL, or the sentinels."""
    if cfg["OTPD_REDIS_SENTINELS"]:
        return "master %r via sentinels %s" % (cfg["OTPD_REDIS_MASTER_NAME"] or "mymaster",
                                               cfg["OTPD_REDIS_SENTINELS"])
    return redact_url(cfg["REDIS_URL"])


def connect(cfg):
    """The Redis client for cfg, directly or through Sentinel (otpd.connection).

    A bad OTPD_REDIS_SENTINELS is a configuration error (exit status 2)."""
    try:
        sentinels = parse_sentinels(cfg["OTPD_REDIS_SENTINELS"])
    except ValueError as e:
        raise UsageError(str(e)) from None
    try:
        r = redis_from_settings(cfg["REDIS_URL"], sentinels, cfg["OTPD_REDIS_MASTER_NAME"],
                                cfg["OTPD_REDIS_SENTINEL_PASSWORD"],
                                socket_connect_timeout=5, socket_timeout=15)
    except ValueError as e:
        raise Failure("REDIS_URL: %s" % e) from None
    return r


def redis_now_ms(r):
    sec, usec = r.time()
    return int(sec) * 1000 + int(usec) // 1000


def instance_pattern(prefix):
    """SCAN pattern for the daemons' heartbeat keys, {prefix}instance:*."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", prefix) + protocol.INSTANCE_PREFIX + "*"

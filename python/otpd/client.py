"""The web app's side of the otpd Redis contract (docs/protocol.md).

This module owns enqueueing jobs, reading their status and verifying codes.
It does not send SMS and never sees a code in clear except the one a user
typed, which it turns into a MAC before anything reaches Redis.  It depends
on redis-py and the standard library only, so a Django site can vendor it.
"""
import hashlib
import hmac
import json
import math
import os
import re
import secrets
import time
from dataclasses import dataclass
from typing import Optional

import redis as _redis

from . import protocol
from .connection import redis_from_settings

# What wait() stops on by default: the final statuses, and `duplicate`,
# which only events carry, so that a follower of {p}events stops on it too.
FINAL = protocol.FINAL | {protocol.DUPLICATE}
PROVIDERS = frozenset({"twilio", "msg91", "console", "smtp", "console_email"})
# Every channel a job may name; "voice" reads the code out in a phone call to
# the number.  The Django flow offers DEFAULT_CHANNELS unless told otherwise.
CHANNELS = ("sms", "email", "voice")
PHONE_CHANNELS = frozenset({"sms", "voice"})   # `to` is an E.164 number
DEFAULT_CHANNELS = ("sms", "email")
FALLBACK_MAX = 2
LOCALE_MAX = 35
DEFAULT_TTL = 300
DEFAULT_DIGITS = 6
MAX_MESSAGE_CHARS = 480

# ASCII classes spelled out: \d and \w would admit other scripts' digits,
# and fullmatch() avoids the trailing-newline hole of "$".
_E164 = re.compile(r"\+[1-9][0-9]{6,14}")
_PURPOSE = re.compile(r"[a-z0-9_]{1,32}")
_JOB_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_CODE = re.compile(r"[0-9]{4,10}")
_HEX_KEY = re.compile(r"[0-9a-fA-F]{64}")
_APP_HASH = re.compile(r"[A-Za-z0-9+/]{11}")
_LANGUAGE = re.compile(r"[A-Za-z]{2,3}")
_SUBTAG = re.compile(r"[A-Za-z0-9]{1,8}")

def _lua(name):
    """A script of python/otpd/lua: the daemon compiles in the very same files."""
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "lua", name + ".lua"),
              encoding="utf-8") as f:
        return f.read()


# KEYS[1] = OTP record, ARGV[1] = candidate MAC.  Returns {status,
# attempts_left, job id}.  A locked record is kept until its TTL so that
# further guesses keep answering "locked" rather than "expired".
VERIFY_LUA = _lua("verify")


# The send limits, the same file the daemon runs inside begin.lua.  The
# client runs it in "check" mode so a page can answer "wait 25 s" at once;
# the daemon runs "take" before sending.
LIMITS_LUA = _lua("limits")

def _calling_codes():
    """The calling codes shorter than three digits, from data/calling_codes.txt:
    the daemon compiles in the very same file."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "calling_codes.txt")
    with open(path, encoding="utf-8") as f:
        codes = frozenset(ln.strip() for ln in f if ln.strip() and not ln.startswith("#"))
    bad = sorted(c for c in codes if not re.fullmatch(r"[1-9][0-9]?", c))
    if bad:
        raise RuntimeError("%s: not a one- or two-digit calling code: %s" % (path, ", ".join(bad)))
    return codes


# ITU calling codes are prefix-free; only 1 and 7 have one digit, the
# file lists those and the two-digit ones, all others have three.
_SHORT_CC = _calling_codes()


def country_code(to):
    """The calling code of an E.164 number: '+919812345678' -> '91'; '' for an address."""
    if "@" in to:
        return ""
    d = to[1:] if to.startswith("+") else to
    for n in (1, 2):
        if d[:n] in _SHORT_CC:
            return d[:n]
    return d[:3]


class SendRefused(Exception):
    """The daemon would not send this code; `reason` says why."""

    def __init__(self, reason, message):
        super().__init__(message)
        self.reason = reason


class RateLimited(SendRefused):
    """Over a send limit.  `retry_after` is in seconds."""

    def __init__(self, reason, retry_after):
        self.retry_after = retry_after
        super().__init__(reason, "over the %s limit: try again in %d s"
                         % (reason, math.ceil(retry_after)))


class OptedOut(SendRefused):
    """The number replied STOP; it gets no codes until removed (otpctl optout remove)."""

    def __init__(self):
        super().__init__("opted_out", "the recipient replied STOP to our SMS")


class NumberRefused(SendRefused):
    """The site's number check (otpd.numbers) refused the number before
    anything was queued.  `reason` is its line type ("premium_rate", "voip",
    ...) or "invalid_number"; the message shows the number masked."""

    def __init__(self, reason, to):
        if reason == "invalid_number":
            why = "not a valid number for its country"
        else:
            why = "a %s number, a line type this site does not send codes to" % reason
        super().__init__(reason, "refused %s: %s" % (mask_phone(to), why))


def parse_hash_key(key):
    """Return the 32-byte key from its 64-hex-digit form.

    A short or mistyped key would still produce MACs, just ones the daemon
    never matches, so it is refused loudly here instead.
    """
    if isinstance(key, str) and _HEX_KEY.fullmatch(key):
        return bytes.fromhex(key)
    raise ValueError("OTPD_HASH_KEY must be exactly 64 hex characters (32 bytes)")


def mac(purpose, to, code, key=None):
    """HMAC-SHA-256 of purpose, number and code, as lower-case hex.

    Binding purpose and number into the MAC means a code sent for one
    purpose or number can never verify for another.  `key` is the hex
    OTPD_HASH_KEY; when omitted it is read from the environment.
    """
    if key is None:
        key = os.environ.get("OTPD_HASH_KEY", "")
    return _mac(parse_hash_key(key), purpose, to, code)


def _mac(key, purpose, to, code):
    msg = "%s\n%s\n%s" % (purpose, to, code)
    return hmac.new(key, msg.encode(), hashlib.sha256).hexdigest()


def mask_to(to):
    """A recipient masked as the daemon masks it: a number as mask_phone(), an
    e-mail address as 'a***e@example.com'."""
    if isinstance(to, str) and "@" in to:
        local, _, domain = to.strip().lower().rpartition("@")
        return ("%s***%s@%s" % (local[0], local[-1], domain)) if len(local) >= 2 \
            else "***@" + domain
    return mask_phone(to)


def mask_phone(to):
    """Mask a number for logs and status records: '+1415*****71'.

    Keeps '+', the first four digits (country and area) and the last two,
    which is enough for support to match a complaint.  Anything that is not
    E.164 is shown as '***' so that malformed input never leaks whole.
    """
    if not isinstance(to, str) or not _E164.fullmatch(to):
        return "***"
    return to[:5] + "*" * (len(to) - 7) + to[-2:]


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of verify(); true only when the code was accepted.

    status is one of 'ok', 'mismatch', 'expired', 'locked', 'invalid'.
    """

    status: str
    attempts_left: int = 0
    job_id: Optional[str] = None

    @property
    def ok(self):
        return self.status == "ok"

    def __bool__(self):
        return self.ok


def _text(v):
    return v.decode() if isinstance(v, bytes) else v


def _now_ms():
    return int(time.time() * 1000)


def _check_int(name, value, lo, hi):
    # bool is an int subclass and would serialise as true/false.
    if type(value) is not int or not lo <= value <= hi:
        raise ValueError("%s must be an integer in %d..%d, got %r" % (name, lo, hi, value))


# The daemon's rules for an e-mail address (daemon/job.c, job_email_valid): a dot-atom
# local part of 1..64, a domain of two or more letter/digit/hyphen labels, 254 in all.
_EMAIL_LOCAL = re.compile(r"[a-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_EMAIL_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


def normalize_email(address, field="to"):
    """The address as otpd keys it: trimmed and lower-cased as a whole; ValueError
    (naming `field`) if it is not one otpd accepts."""
    if not isinstance(address, str):
        raise ValueError("%s must be an e-mail address, got %r" % (field, address))
    a = address.strip().lower()
    local, at, domain = a.rpartition("@")
    labels = domain.split(".")
    if (not at or len(a) > 254 or len(local) > 64 or not _EMAIL_LOCAL.fullmatch(local)
            or len(labels) < 2 or not all(_EMAIL_LABEL.fullmatch(x) for x in labels)):
        raise ValueError("%s must be an e-mail address like alice@example.com, got %r"
                         % (field, address))
    return a


def normalize_locale(tag):
    """A BCP 47 language tag as otpd takes it (daemon/job.c, job_locale_normalize):
    at most 35 characters, a language of 2-3 letters, then subtags of 1-8
    letters or digits joined by "-" ("_" is taken for "-").  Returned in the
    case RFC 5646 recommends: language lower, a 2-letter region upper, a
    4-letter script title case ("PT_br" -> "pt-BR", "zh-hant-tw" ->
    "zh-Hant-TW").  ValueError if it is not one."""
    parts = tag.replace("_", "-").split("-") if isinstance(tag, str) else []
    if (not parts or len(tag) > LOCALE_MAX or not _LANGUAGE.fullmatch(parts[0])
            or not all(_SUBTAG.fullmatch(p) for p in parts[1:])):
        raise ValueError('locale must be a BCP 47 language tag such as "en", "pt-BR" or '
                         '"zh-Hant" (at most %d characters), got %r' % (LOCALE_MAX, tag))
    out = [parts[0].lower()]
    for p in parts[1:]:
        out.append(p.upper() if len(p) == 2 else p[0].upper() + p[1:].lower() if len(p) == 4
                   else p.lower())
    return "-".join(out)


def _check_fallback(fallback, fallback_email, channel):
    """fallback and fallback_email checked with the daemon's rules, as the
    job's fields ({} when neither is given; an empty list is no fallback)."""
    fields = {}
    if fallback is not None:
        if isinstance(fallback, (str, bytes)) or not isinstance(fallback, (list, tuple)):
            raise ValueError('fallback must be a list of channels, e.g. ["voice"], got %r'
                             % (fallback,))
        fallback = list(fallback)
        if (len(fallback) > FALLBACK_MAX or any(c not in CHANNELS for c in fallback)
                or len(set(fallback)) != len(fallback) or channel in fallback):
            raise ValueError("fallback must be at most %d channels, each \"sms\", \"voice\" or "
                             "\"email\", none twice and none the job's own (%s), got %r"
                             % (FALLBACK_MAX, channel, fallback))
        if fallback and channel == "email":
            raise ValueError("fallback: an e-mail job has no fallback (there is no number)")
        if "email" in fallback and fallback_email is None:
            raise ValueError('fallback: "email" needs fallback_email, the address to send to')
        if fallback:
            fields["fallback"] = fallback
    if fallback_email is not None:
        fields["fallback_email"] = normalize_email(fallback_email, "fallback_email")
    return fields


def _check_target(to, purpose, channel="sms"):
    """The recipient as otpd keys it (an e-mail address normalized)."""
    if channel not in CHANNELS:
        raise ValueError("channel must be 'sms', 'voice' or 'email', got %r" % (channel,))
    if not isinstance(purpose, str) or not _PURPOSE.fullmatch(purpose):
        raise ValueError("purpose must match [a-z0-9_]{1,32}, got %r" % (purpose,))
    if channel == "email":
        return normalize_email(to)
    if not isinstance(to, str) or not _E164.fullmatch(to):
        raise ValueError("to must be an E.164 number like +14155552671, got %r" % (to,))
    return to


# --- The steps of the calls that do no I/O ----------------------------------
# OTPClient and otpd.aio.AsyncOTPClient do only the Redis round trips between
# these, so the two cannot differ in what they check, write or answer.

def _job(to, purpose, id, ttl, digits, max_attempts, message, provider, fresh, channel,
         locale=None, app_hash=None, fallback=None, fallback_email=None):
    """send()'s arguments checked with the daemon's rules, as the job's fields
    (all but created_ms, which is set once the limits allow the send)."""
    to = _check_target(to, purpose, channel)
    job = {"v": 1, "to": to, "purpose": purpose}
    if channel != "sms":
        job["channel"] = channel
    if id is None:
        id = "%s-%s" % (purpose, secrets.token_hex(8))
    elif not isinstance(id, str) or not _JOB_ID.fullmatch(id):
        raise ValueError("id must match [A-Za-z0-9_.:-]{1,64}, got %r" % (id,))
    job["id"] = id
    if ttl is not None:
        _check_int("ttl", ttl, 30, 3600)
        job["ttl"] = ttl
    if digits is not None:
        _check_int("digits", digits, 4, 10)
        job["digits"] = digits
    if max_attempts is not None:
        _check_int("max_attempts", max_attempts, 1, 20)
        job["max_attempts"] = max_attempts
    if message is not None:
        if not isinstance(message, str) or "{code}" not in message:
            raise ValueError("message must be a string containing {code}")
        try:
            message.encode()
        except UnicodeEncodeError:  # lone surrogates; the daemon wants UTF-8
            raise ValueError("message is not valid Unicode text") from None
        minutes = math.ceil((ttl or DEFAULT_TTL) / 60)
        text = message.replace("{code}", "0" * (digits or DEFAULT_DIGITS))
        text = text.replace("{minutes}", str(minutes))
        if len(text) > MAX_MESSAGE_CHARS:
            raise ValueError("message is %d characters once rendered; the limit is %d"
                             % (len(text), MAX_MESSAGE_CHARS))
        job["message"] = message
    if not isinstance(fresh, bool):
        raise ValueError("fresh must be True or False")
    if fresh:
        job["fresh"] = True
    if provider is not None:
        if provider not in PROVIDERS:
            raise ValueError("provider must be one of %s, got %r"
                             % (", ".join(sorted(PROVIDERS)), provider))
        job["provider"] = provider
    if locale is not None:
        job["locale"] = normalize_locale(locale)
    if app_hash is not None:
        if not isinstance(app_hash, str) or not _APP_HASH.fullmatch(app_hash):
            raise ValueError("app_hash must be Android's 11-character app hash (letters, digits,"
                             " + and /), got %r" % (app_hash,))
        job["app_hash"] = app_hash
    job.update(_check_fallback(fallback, fallback_email, channel))
    return job


def _limits_request(prefix, to, purpose, job_id, now):
    """The keys and args of the limits script in "check" mode, for this send."""
    cc = country_code(to)
    return {"keys": protocol.limits_keys(prefix, purpose, to, cc),
            "args": ["check", now, job_id, to, cc, purpose]}


def _limits_verdict(res):
    """Raise RateLimited or OptedOut if the limits script's reply refuses the send."""
    if int(res[0]) == 0:
        return
    reason = _text(res[1])
    if reason == "opted_out":
        raise OptedOut()
    raise RateLimited(reason, int(res[2]) / 1000.0)


def _stage_job(pipe, prefix, job, now, status_ttl):
    """Stage the job's XADD and its queued status record on `pipe`, a MULTI
    pipeline of redis-py or of redis.asyncio (staging does no I/O in either)."""
    job = dict(job, created_ms=now)
    # No size check: with the limits of _job() the payload stays far below
    # the daemon's 65536-byte cap.
    payload = json.dumps(job, separators=(",", ":"))

    # The queued record lets wait() tell "not picked up yet" from
    # "unknown id".  HSETNX, not HSET: re-sending an id that already ran
    # must not overwrite its real status with "queued".
    skey = protocol.job_key(prefix, job["id"])
    pipe.xadd(prefix + protocol.JOBS, {"job": payload})
    for field, value in (("status", protocol.QUEUED), ("to", mask_phone(job["to"])),
                         ("purpose", job["purpose"]), ("created_ms", now), ("updated_ms", now)):
        pipe.hsetnx(skey, field, value)
    pipe.expire(skey, status_ttl)


def _status_record(raw):
    """HGETALL's reply as a dict of str."""
    return {_text(k): _text(v) for k, v in raw.items()}


def _wait_over(job_id, st, final, deadline, timeout):
    """True if wait() has its answer in `st`; TimeoutError once past `deadline`."""
    if st.get("status") in final:
        return True
    if time.monotonic() >= deadline:
        raise TimeoutError("job %s still %r after %.1fs" % (job_id, st.get("status"), timeout))
    return False


def _verify_request(key, prefix, to, code, purpose, channel):
    """The keys and args of the verify script for this code, or None when the
    input cannot be a code (verify() answers 'invalid' without Redis)."""
    to = _check_target(to, purpose, channel)
    if not isinstance(code, str):
        raise TypeError("code must be a str (an int would lose leading zeros)")
    code = code.strip()
    if not _CODE.fullmatch(code):
        return None
    return {"keys": [protocol.otp_key(prefix, purpose, to)],
            "args": [_mac(key, purpose, to, code), prefix]}


def _verify_result(res):
    """The verify script's reply as a VerifyResult."""
    status, left, job = res
    return VerifyResult(_text(status), int(left), _text(job) or None)


class _ClientBase:
    """How OTPClient and otpd.aio.AsyncOTPClient are built; each says which
    redis-py client url= and from_env() make.  The calls are theirs."""

    @staticmethod
    def _redis_from_url(url):
        return _redis.Redis.from_url(url, decode_responses=True)

    @staticmethod
    def _redis_from_settings(*args, **kwargs):
        return redis_from_settings(*args, **kwargs)

    def __init__(self, redis=None, url=None, hash_key=None, prefix="otpd:", status_ttl=86400,
                 number_check="auto"):
        """number_check: which SMS numbers send() refuses before Redis (NumberRefused).
        "auto": otpd.numbers.NumberCheck() if phonenumbers is installed, else
        none; None or False: none; True: NumberCheck() (ImportError without
        phonenumbers); or a NumberCheck(refuse=[...]) of your own."""
        from . import numbers  # it imports this module
        self.number_check = numbers.resolve(number_check)
        if redis is None:
            if url is None:
                raise ValueError("%s needs a redis client or a url" % type(self).__name__)
            redis = self._redis_from_url(url)
        self.redis = redis
        self._key = parse_hash_key(hash_key)
        self.prefix = prefix
        self.status_ttl = status_ttl
        self._verify = redis.register_script(VERIFY_LUA)
        self._limits = redis.register_script(LIMITS_LUA)

    def _check_number(self, job):
        """Raise NumberRefused if number_check refuses the job's number (SMS
        or voice; an e-mail job is not a number).  No I/O: runs before Redis
        is touched."""
        if self.number_check is not None and job.get("channel", "sms") in PHONE_CHANNELS:
            self.number_check.check(job["to"])

    @classmethod
    def from_env(cls):
        """Build from REDIS_URL, OTPD_REDIS_SENTINELS, OTPD_REDIS_MASTER_NAME,
        OTPD_REDIS_SENTINEL_PASSWORD, OTPD_HASH_KEY, OTPD_PREFIX and
        OTPD_STATUS_TTL, the same variables the daemon reads, so one
        environment serves both.  With sentinels, see otpd.connection for
        what a failover does to calls.  The site's own OTPD_REFUSED_LINE_TYPES
        ("premium_rate,voip"; "" refuses invalid numbers only; unset: the
        defaults of otpd.numbers when phonenumbers is installed) sets
        number_check."""
        from . import numbers
        return cls(
            number_check=numbers.from_env(os.environ.get("OTPD_REFUSED_LINE_TYPES")),
            redis=cls._redis_from_settings(
                os.environ.get("REDIS_URL", "redis://localhost:6379/0"),
                sentinels=os.environ.get("OTPD_REDIS_SENTINELS", ""),
                master_name=os.environ.get("OTPD_REDIS_MASTER_NAME", ""),
                sentinel_password=os.environ.get("OTPD_REDIS_SENTINEL_PASSWORD", "")),
            hash_key=os.environ.get("OTPD_HASH_KEY"),
            prefix=os.environ.get("OTPD_PREFIX", "otpd:"),
            status_ttl=int(os.environ.get("OTPD_STATUS_TTL", "86400")),
        )


class OTPClient(_ClientBase):
    """Enqueue OTP jobs, read their status and verify codes.

    Give it a redis-py client (bytes or decoded replies both work) or a URL.
    otpd.aio.AsyncOTPClient is the same for redis.asyncio.
    """

    def send(self, to, purpose="login", *, id=None, ttl=None, digits=None,
             max_attempts=None, message=None, provider=None, fresh=False, channel="sms",
             locale=None, app_hash=None, fallback=None, fallback_email=None):
        """Queue a code for `to` and return the job id.

        While a code for this number and purpose is still valid (not expired,
        locked or used), the daemon texts that same code again, keeping its
        expiry and its wrong guesses; the job's status record then says
        ``code_source == "resent"`` (``"new"`` otherwise).  ``fresh=True``
        replaces it with a new code at once (the old one stops working), for
        when the site knows the old code was exposed.

        Input is checked here with the daemon's rules so that mistakes
        surface as a ValueError in the request that made them rather than
        as a dead letter later; the daemon checks again.  Fields left as
        None are omitted so the daemon's configured defaults apply.

        channel: "sms" (default), "voice" (the code read out in a phone
        call; `to` is a number, checked as for SMS) or "email".  locale: a
        BCP 47 tag ("en", "pt-BR", "zh-Hant"; "_" is taken for "-") choosing
        the language of the text, normalised ("pt_br" -> "pt-BR").
        app_hash: Android SMS Retriever's 11-character app hash.  fallback:
        up to two channels to try next, in order, if this one fails or its
        code is not verified in time ("sms", "voice", "email"; none twice,
        not the job's own, none for an e-mail job); "email" needs
        fallback_email, the address (normalised as an e-mail `to`).

        A redis.exceptions.ConnectionError (or TimeoutError) may come after
        the job was queued: the reply to the XADD can be what was lost, as
        when the master dies or fails over under the call.  Do not retry it
        blindly, here or through redis-py's retry_on_timeout/retry_on_error:
        a second XADD queues a second job, and the number gets its code
        twice.  Let the user ask again instead (the resend above, within the
        send limits).
        """
        job = _job(to, purpose, id, ttl, digits, max_attempts, message, provider, fresh, channel,
                   locale, app_hash, fallback, fallback_email)
        self._check_number(job)
        now = _now_ms()
        self._check_limits(job["to"], purpose, job["id"], now)
        pipe = self.redis.pipeline(transaction=True)
        _stage_job(pipe, self.prefix, job, now, self.status_ttl)
        pipe.execute()
        return job["id"]

    def _check_limits(self, to, purpose, job_id, now):
        """Raise RateLimited or OptedOut if the daemon would refuse this send."""
        _limits_verdict(self._limits(**_limits_request(self.prefix, to, purpose, job_id, now)))

    def status(self, job_id):
        """The job's status record as a dict of str, or {} if unknown or expired."""
        return _status_record(self.redis.hgetall(protocol.job_key(self.prefix, job_id)))

    def wait(self, job_id, timeout=10.0, poll=0.05, final=FINAL):
        """Poll until the job's status is in `final` and return the record.

        'sent' counts as final by default because delivery receipts may
        never arrive.  Raises TimeoutError with the last status seen.
        """
        deadline = time.monotonic() + timeout
        while True:
            st = self.status(job_id)
            if _wait_over(job_id, st, final, deadline, timeout):
                return st
            time.sleep(poll)

    def verify(self, to, code, purpose="login", channel="sms"):
        """Check a code the user typed, spending one attempt if it is wrong.

        Input that cannot be a code (not 4..10 ASCII digits after trimming
        whitespace) returns 'invalid' without touching Redis: it cannot
        match, so counting it would only let typos lock users out.  A bad
        `to` or `purpose` is the caller's bug and raises ValueError.
        """
        request = _verify_request(self._key, self.prefix, to, code, purpose, channel)
        if request is None:
            return VerifyResult("invalid")
        return _verify_result(self._verify(**request))

"""`otpctl check`: validate Redis, the hash key and the provider credentials; sends no SMS.

Twilio is asked for its account record (a read-only GET, TLS always
verified); MSG91 has no side-effect-free endpoint, so only the shape of
its settings is checked.
"""
import base64
import json
import os
import re
import socket
import ssl
import urllib.error
import urllib.parse
import urllib.request

import redis

from ..client import parse_hash_key
from .common import (E164, Failure, as_int, connect, emit_json, mask_text, redis_where,
                     truncate)
from .hints import HINT_E164, HINT_TRIAL, HINT_TWILIO_AUTH, URL_BILLING

_TWILIO_SID = re.compile(r"AC[0-9a-fA-F]{32}")
_TWILIO_MG = re.compile(r"MG[0-9a-fA-F]{32}")
# The doc's known-answer key (docs/protocol.md section 2); never for production.
EXAMPLE_KEY = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"


class Checks:
    def __init__(self):
        self.items = []

    def add(self, name, level, message, hint=""):
        self.items.append({"name": name, "level": level, "message": message, "hint": hint})

    @property
    def failed(self):
        return any(c["level"] == "FAIL" for c in self.items)


def _https_get_json(url, headers, cafile, timeout=10.0):
    """GET url; returns (http status, parsed JSON or None, text).  Raises
    urllib.error.URLError / OSError for transport errors."""
    ctx = ssl.create_default_context(cafile=cafile or None)
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=ctx))
    req = urllib.request.Request(url, headers=headers, method="GET")
    try:
        resp = opener.open(req, timeout=timeout)
        status, body = resp.status, resp.read(1 << 20)
        resp.close()
    except urllib.error.HTTPError as e:
        status, body = e.code, e.read(1 << 20)
    text = body.decode("utf-8", "replace")
    try:
        obj = json.loads(text)
    except ValueError:
        obj = None
    return status, obj, text


def _transport_error(exc, base, cafile):
    """(message, hint) for a connection or TLS failure."""
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(reason, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(reason):
        detail = getattr(reason, "verify_message", "") or str(reason)
        where = ("OTPD_CA_FILE=%s" % cafile) if cafile else "the system CA store"
        return ("TLS certificate verification failed for %s: %s" % (base, detail),
                "the server's certificate is not signed by a CA in %s: point OTPD_CA_FILE at the "
                "right CA bundle (verification cannot be turned off)" % where)
    if isinstance(reason, ssl.SSLError):
        return ("TLS error talking to %s: %s" % (base, reason),
                "check TWILIO_API_BASE and any TLS-intercepting proxy")
    if isinstance(reason, (socket.timeout, TimeoutError)):
        return ("no answer from %s within 10 s" % base, "check the network, firewall and proxy settings")
    return ("cannot connect to %s: %s" % (base, getattr(reason, "strerror", None) or reason),
            "check the network, DNS, firewall, proxy and TWILIO_API_BASE")


def check_redis(cfg, ck):
    try:
        r = connect(cfg)
        r.ping()
        ver = r.info("server").get("redis_version", "0")
    except Failure as e:
        ck.add("redis", "FAIL", str(e), "REDIS_URL is redis://[[user]:password@]host:port/db or unix:///path?db=N")
        return
    except redis.AuthenticationError as e:
        ck.add("redis", "FAIL", "%s: %s" % (redis_where(cfg), e),
               "check the password in REDIS_URL")
        return
    except redis.RedisError as e:
        ck.add("redis", "FAIL", "cannot reach %s: %s" % (redis_where(cfg), e),
               "is redis-server running and REDIS_URL right?")
        return
    parts = tuple(as_int(x, 0) for x in (ver.split(".") + ["0", "0"])[:2])
    if parts < (6, 2):
        ck.add("redis", "FAIL", "%s answers but is Redis %s" % (redis_where(cfg), ver),
               "otpd needs Redis 6.2 or later (XAUTOCLAIM)")
    else:
        ck.add("redis", "ok", "%s is reachable (Redis %s)" % (redis_where(cfg), ver))


def check_hash_key(cfg, ck):
    key = cfg["OTPD_HASH_KEY"]
    gen = "generate one with `otpd --gen-key` (or `openssl rand -hex 32`) and use the same value in the daemon and the web app"
    if not key:
        ck.add("hash key", "FAIL", "OTPD_HASH_KEY is not set", gen)
        return
    try:
        parse_hash_key(key)
    except ValueError:
        extra = " (it has surrounding spaces)" if key != key.strip() else ""
        ck.add("hash key", "FAIL", "OTPD_HASH_KEY is %d characters, not 64 hex%s" % (len(key), extra), gen)
        return
    if key.lower() == EXAMPLE_KEY:
        ck.add("hash key", "warn", "OTPD_HASH_KEY is the example key from docs/protocol.md", gen)
    else:
        ck.add("hash key", "ok", "OTPD_HASH_KEY is 64 hex characters")


def check_twilio(cfg, ck):
    sid, token = cfg["TWILIO_ACCOUNT_SID"], cfg["TWILIO_AUTH_TOKEN"]
    phone, mg = cfg["TWILIO_PHONE_NUMBER"], cfg["TWILIO_MESSAGING_SERVICE_SID"]
    base = cfg["TWILIO_API_BASE"].rstrip("/")
    cafile = cfg["OTPD_CA_FILE"]
    if not sid or not token:
        missing = " and ".join(k for k in ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN") if not cfg[k])
        ck.add("twilio credentials", "FAIL", "%s not set" % missing,
               "copy the Account SID and Auth Token from the Account Info panel of https://console.twilio.com/")
        return
    spaced = [k for k in ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN") if cfg[k] != cfg[k].strip()]
    if spaced:
        ck.add("twilio credentials", "FAIL", "%s has leading or trailing spaces" % " and ".join(spaced),
               HINT_TWILIO_AUTH)
    elif not _TWILIO_SID.fullmatch(sid):
        ck.add("twilio credentials", "warn", "TWILIO_ACCOUNT_SID does not look like AC + 32 hex characters",
               "the Account SID starts with AC; an API key (SK...) is not an Account SID")
    # The sender.
    if mg:
        if _TWILIO_MG.fullmatch(mg):
            ck.add("twilio sender", "ok", "TWILIO_MESSAGING_SERVICE_SID %s..." % mg[:6])
        else:
            ck.add("twilio sender", "FAIL", "TWILIO_MESSAGING_SERVICE_SID does not look like MG + 32 hex characters",
                   "copy it from Messaging > Services in the Twilio console")
    if phone:
        if E164.fullmatch(phone):
            ck.add("twilio sender", "ok", "TWILIO_PHONE_NUMBER is E.164")
        else:
            ck.add("twilio sender", "FAIL", "TWILIO_PHONE_NUMBER %r is not a valid phone number (E.164)"
                   % mask_text(phone), HINT_E164)
    elif not mg:
        ck.add("twilio sender", "FAIL", "neither TWILIO_PHONE_NUMBER nor TWILIO_MESSAGING_SERVICE_SID is set",
               "buy an SMS-capable number under Phone Numbers > Manage > Buy a number and set "
               "TWILIO_PHONE_NUMBER=+1234567890 (E.164)")
    # Online, read-only: fetch the account.
    if cafile and not os.access(cafile, os.R_OK):
        ck.add("twilio account", "FAIL", "OTPD_CA_FILE %s cannot be read" % cafile,
               "point OTPD_CA_FILE at a PEM CA bundle, or unset it to use the system store")
        return
    url = "%s/2010-04-01/Accounts/%s.json" % (base, urllib.parse.quote(sid, safe=""))
    auth = base64.b64encode(("%s:%s" % (sid, token)).encode()).decode()
    headers = {"Authorization": "Basic " + auth, "Accept": "application/json",
               "User-Agent": "otpctl"}
    try:
        status, obj, text = _https_get_json(url, headers, cafile)
    except (urllib.error.URLError, OSError, ValueError) as e:
        if isinstance(e, ValueError) and not isinstance(e, ssl.SSLError):
            ck.add("twilio account", "FAIL", "TWILIO_API_BASE %r: %s" % (base, e),
                   "TWILIO_API_BASE is https://api.twilio.com unless you test against a mock")
            return
        msg, hint = _transport_error(e, base, cafile)
        ck.add("twilio account", "FAIL", msg, hint)
        return
    obj = obj if isinstance(obj, dict) else {}
    tw = " (Twilio %s: %s)" % (obj.get("code", "-"), obj.get("message", "")) if obj.get("code") else ""
    if status == 200:
        name, astat, atype = obj.get("friendly_name", "?"), obj.get("status", "?"), obj.get("type", "?")
        ck.add("twilio account", "ok", "%s: %r, status %s, type %s" % (sid[:6] + "...", name, astat, atype))
        if str(atype).lower() == "trial":
            ck.add("twilio account", "warn", "this is a trial account", HINT_TRIAL)
        if astat != "active":
            ck.add("twilio account", "warn", "the account status is %s, not active: Twilio will refuse to send"
                   % astat, "check billing and account status at " + URL_BILLING)
    elif status == 401:
        ck.add("twilio account", "FAIL", "Twilio refused the credentials: HTTP 401%s" % tw, HINT_TWILIO_AUTH)
    elif status == 404:
        ck.add("twilio account", "FAIL", "account %s not found: HTTP 404%s" % (sid[:6] + "...", tw),
               "check TWILIO_ACCOUNT_SID (and TWILIO_API_BASE)")
    else:
        ck.add("twilio account", "FAIL", "unexpected answer from %s: HTTP %d%s%s"
               % (base, status, tw, "" if obj else " " + truncate(text.strip(), 80)),
               "retry later; see https://status.twilio.com" if status >= 500 else "")


def check_msg91(cfg, ck):
    key, tmpl, sender = cfg["MSG91_AUTH_KEY"], cfg["MSG91_TEMPLATE_ID"], cfg["MSG91_SENDER_ID"]
    if not key:
        ck.add("msg91 auth key", "FAIL", "MSG91_AUTH_KEY is not set",
               "copy the Auth Key from the API section of the MSG91 dashboard")
    elif key != key.strip():
        ck.add("msg91 auth key", "FAIL", "MSG91_AUTH_KEY has leading or trailing spaces",
               "Invalid Auth Key: verify the key from the dashboard (MSG91 issue 1)")
    elif not re.fullmatch(r"[A-Za-z0-9_-]{8,128}", key):
        ck.add("msg91 auth key", "warn", "MSG91_AUTH_KEY has an unusual shape (%d characters)" % len(key),
               "Invalid Auth Key: verify the key from the dashboard (MSG91 issue 1)")
    else:
        ck.add("msg91 auth key", "ok", "MSG91_AUTH_KEY is set (%d characters)" % len(key))
    if not tmpl:
        ck.add("msg91 template", "FAIL", "MSG91_TEMPLATE_ID is not set",
               "create an OTP flow/template in MSG91 (DLT-approved in India) and set its id")
    else:
        ck.add("msg91 template", "ok", "MSG91_TEMPLATE_ID is set")
    if not sender:
        ck.add("msg91 sender", "warn", "MSG91_SENDER_ID is not set: the template's default sender is used",
               "create a Sender ID (e.g. SMLCSE) in the MSG91 dashboard and wait for approval")
    elif not re.fullmatch(r"[A-Za-z]{6}", sender):
        ck.add("msg91 sender", "warn", "MSG91_SENDER_ID %r is not 6 letters" % sender,
               "Indian DLT sender IDs are exactly 6 letters, e.g. SMLCSE (MSG91 issue 2)")
    else:
        ck.add("msg91 sender", "ok", "MSG91_SENDER_ID %s is 6 letters" % sender)
    ck.add("msg91 online", "skip", "MSG91 credentials were NOT verified online: MSG91 documents no "
           "endpoint that checks a key without side effects",
           "confirm with a real test: `otpctl send <your number> --provider msg91`")


def cmd_check(cfg, args):
    ck = Checks()
    if args.config_path:
        ck.add("config", "ok", "read %s; from the environment: %s"
               % (args.config_path, ", ".join(args.env_keys) or "nothing"))
    check_redis(cfg, ck)
    check_hash_key(cfg, ck)
    provider = cfg["OTPD_PROVIDER"].strip()
    tw = provider == "twilio" or cfg["TWILIO_ACCOUNT_SID"] or cfg["TWILIO_AUTH_TOKEN"]
    m91 = provider == "msg91" or cfg["MSG91_AUTH_KEY"] or cfg["MSG91_TEMPLATE_ID"]
    if tw:
        check_twilio(cfg, ck)
    else:
        ck.add("twilio", "skip", "not configured (TWILIO_ACCOUNT_SID unset)")
    if m91:
        check_msg91(cfg, ck)
    else:
        ck.add("msg91", "skip", "not configured (MSG91_AUTH_KEY unset)")
    if not tw and not m91:
        ck.add("providers", "warn" if provider != "console" else "ok",
               "no SMS provider configured: otpd can only use the console provider "
               "(codes are printed, nothing is sent)",
               "" if provider == "console" else "set the TWILIO_* or MSG91_* keys")
    if args.json:
        emit_json({"ok": not ck.failed, "checks": ck.items})
    else:
        width = max(len(c["name"]) for c in ck.items)
        for c in ck.items:
            print("%-4s  %s  %s" % (c["level"], c["name"].ljust(width), c["message"]))
            if c["hint"] and c["level"] != "ok":
                print("      %s  hint: %s" % (" " * width, c["hint"]))
        n_fail = sum(c["level"] == "FAIL" for c in ck.items)
        n_warn = sum(c["level"] == "warn" for c in ck.items)
        print("%d check(s) failed, %d warning(s)" % (n_fail, n_warn))
    return 1 if ck.failed else 0

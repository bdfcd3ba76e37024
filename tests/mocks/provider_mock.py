#!/usr/bin/python3
"""Twilio + MSG91 mock over real HTTPS (aiohttp, loopback), for otpd's tests.

Run:
    /usr/bin/python3 tests/mocks/provider_mock.py --port 0 --cert C --key K \
        [--ready-file F] [--host 127.0.0.1]

With --ready-file the actual port is written there as JSON {"port": N, "pid": P}
once the socket listens (written atomically: tmp file + rename).

Provider endpoints (see README.md in this directory for details):
  POST /2010-04-01/Accounts/{AC}/Messages.json          Twilio create message
  GET  /2010-04-01/Accounts/{AC}/Messages/{SM}.json     Twilio fetch message
  GET  /2010-04-01/Accounts/{AC}/Messages.json          Twilio list messages
  POST /2010-04-01/Accounts/{AC}/Calls.json             Twilio create call (Voice)
  GET  /2010-04-01/Accounts/{AC}/Calls/{CA}.json        Twilio fetch call
  GET  /2010-04-01/Accounts/{AC}/Calls.json             Twilio list calls
  GET  /2010-04-01/Accounts/{AC}.json                   Twilio fetch account
  POST /api/v5/flow/  (and /api/v5/flow)                MSG91 Flow send
Control API (no auth) under /_mock/: reset, config, rules, requests, stats,
messages, health, twilio/messages/{SM}, twilio/callback, twilio/calls,
twilio/calls/{CA}, twilio/call_callback, msg91/dlr, callbacks.

Only Debian's python3 + python3-aiohttp (3.8) are needed.
"""
import argparse
import asyncio
import base64
import datetime
import hashlib
import http
import json
import logging
import math
import os
import re
import resource
import secrets
import signal
import socket
import ssl
import struct
import sys
import time
import urllib.parse
import uuid
import xml.etree.ElementTree as ET

import aiohttp
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

log = logging.getLogger("provider_mock")

# --------------------------------------------------------------------------
# Defaults
# --------------------------------------------------------------------------
DEFAULT_TWILIO_ACCOUNT_SID = "AC0123456789abcdef0123456789abcdef"
DEFAULT_TWILIO_AUTH_TOKEN = "test-auth-token-0123456789abcdef"
DEFAULT_MSG91_AUTHKEY = "test-msg91-authkey"

SLOW_DEFAULT_MS = 3000          # `slow` without delay_ms
TIMEOUT_DEFAULT_MS = 60000      # `timeout` without delay_ms

# Twilio behaviours that only make sense for one kind of create:
# Messages-only (SMS opt-out, mobile-only) and Calls-only (the call is
# created with 201, then ends busy / no-answer / failed).
TWILIO_SEND_ONLY = {"not_mobile", "opted_out"}
CALL_OUTCOMES = {"busy": "busy", "no_answer": "no-answer", "call_failed": "failed"}
TWILIO_CALL_ONLY = set(CALL_OUTCOMES)
TWILIO_BEHAVIOURS = {
    "ok", "invalid_number", "not_mobile", "unverified_trial", "opted_out",
    "region_disabled", "geo_permission", "auth", "suspended", "rate_limited",
    "server_error", "unavailable", "slow", "drop", "reset", "drop_mid_response",
    "truncated_json", "not_json", "timeout",
} | TWILIO_CALL_ONLY
MSG91_BEHAVIOURS = {
    "ok", "auth", "auth_401", "invalid_mobile", "template_invalid",
    "insufficient_balance", "ip_not_whitelisted", "rate_limited",
    "server_error", "unavailable", "slow", "drop", "reset",
    "drop_mid_response", "truncated_json", "not_json", "timeout",
}
BEHAVIOURS = {"twilio": TWILIO_BEHAVIOURS, "msg91": MSG91_BEHAVIOURS}
# Behaviours that make sense for read operations (fetch/list/account,
# call_fetch/call_list).
GENERIC_BEHAVIOURS = {
    "ok", "auth", "rate_limited", "server_error", "unavailable", "slow",
    "drop", "reset", "drop_mid_response", "truncated_json", "not_json",
    "timeout",
}
# Behaviours after which a send counts as "processed by the provider" (the
# message is stored and shows up in fetch/list) unless the rule overrides
# it with "store": true/false.
STORED_BY_DEFAULT = {"ok", "slow", "drop_mid_response", "truncated_json"} | TWILIO_CALL_ONLY

# "send" = create a Message, "call" = create a Call; the others are reads.
TWILIO_OPS = {"send", "fetch", "list", "account", "call", "call_fetch", "call_list"}
MSG91_OPS = {"send"}


def op_behaviours(provider, op):
    """The behaviours a request of `op` to `provider` can get."""
    b = BEHAVIOURS[provider]
    if op == "send":
        return b - TWILIO_CALL_ONLY
    if op == "call":
        return b - TWILIO_SEND_ONLY if provider == "twilio" else set()
    return b & GENERIC_BEHAVIOURS

HTML_502 = (b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
            b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
            b"</body>\r\n</html>\r\n")

JSON_CT = "application/json; charset=utf-8"

GSM7_BASIC = set("@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
                 "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà")
GSM7_EXT = set("^{}\\[~]|€\f")


def digits(s):
    return re.sub(r"\D", "", s or "")


def rfc2822(ts):
    return time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(ts))


def num_segments(body):
    if all(c in GSM7_BASIC or c in GSM7_EXT for c in body):
        n = sum(2 if c in GSM7_EXT else 1 for c in body)
        return 1 if n <= 160 else math.ceil(n / 153)
    n = sum(2 if ord(c) > 0xFFFF else 1 for c in body)  # UTF-16 code units
    return 1 if n <= 70 else math.ceil(n / 67)


# --------------------------------------------------------------------------
# State
# --------------------------------------------------------------------------
class State:
    def __init__(self, base_config):
        self.base_config = dict(base_config)
        self.conn_seq = 0           # never reset: conn_ids stay unique
        self.rule_seq = 0
        self.open_connections = 0
        self.in_flight = 0
        self.in_flight_by = {"twilio": 0, "msg91": 0, "unknown": 0}
        self.reset()

    def default_config(self):
        cfg = {
            "twilio_account_sid": DEFAULT_TWILIO_ACCOUNT_SID,
            "twilio_auth_token": DEFAULT_TWILIO_AUTH_TOKEN,
            "twilio_api_keys": {},             # {"SK...": "secret"}
            "twilio_account_status": "active",  # active|suspended|closed
            "twilio_account_type": "Full",      # Full|Trial
            "twilio_message_status": "delivered",  # status of stored msgs on fetch/list
            "twilio_price_per_segment": None,   # e.g. "0.0079": fetch shows price once sent
            "twilio_price_unit": "USD",
            "twilio_call_status": "completed",  # status of stored calls on fetch/list
            "twilio_call_price_per_minute": None,  # e.g. "0.013": completed calls get a price
            "twilio_call_from_numbers": None,   # list of the account's numbers; None = any E.164
            "twilio_call_bad_twiml": "reject",  # reject (400) | fail_call (201, then failed)
            "msg91_authkey": DEFAULT_MSG91_AUTHKEY,
            "default": "ok",                    # str or {"twilio":..,"msg91":..}
            "default_delay_ms": 0,              # added to every provider answer
            "twilio_concurrency_limit": 0,      # >0: sends beyond N in flight get 429/20429
            "close_connections": False,         # true: every provider answer closes its connection
        }
        cfg.update(self.base_config)
        return cfg

    def reset(self, keep_config=False):
        if not keep_config:
            self.config = self.default_config()
        self.rules = []
        self.requests = []
        self.seq = 0
        self.twilio_messages = {}   # sid -> stored message (with private keys)
        self.twilio_calls = {}      # sid -> stored call (with private keys)
        self.msg91_messages = []
        self.callbacks = []         # webhooks the mock sent (twilio/callback, msg91/dlr)
        self.tcp_accepted = 0
        self.provider_conn_ids = set()
        self.n_requests = 0
        # in_flight* are gauges (not reset); the peaks restart from them.
        self.max_concurrent = self.in_flight
        self.max_concurrent_by = dict(self.in_flight_by)


STATE = None


# --------------------------------------------------------------------------
# Connection tracking: our own RequestHandler subclass carries a conn_id and
# a future resolved when the connection is lost.
# --------------------------------------------------------------------------
class MockRequestHandler(RequestHandler):
    # no __slots__ here -> instances get a __dict__ for our attributes
    def connection_lost(self, exc):
        fut = getattr(self, "lost_future", None)
        if fut is not None and not fut.done():
            fut.set_result(None)
            STATE.open_connections -= 1
        super().connection_lost(exc)


class MockServer(web.Server):
    def __call__(self):
        STATE.conn_seq += 1
        STATE.tcp_accepted += 1
        STATE.open_connections += 1
        h = MockRequestHandler(self, loop=self._loop, **self._kwargs)
        h.conn_id = STATE.conn_seq
        h.lost_future = self._loop.create_future()
        return h


def conn_id_of(request):
    return getattr(request.protocol, "conn_id", None)


async def wait_or_lost(request, seconds):
    """Sleep `seconds` unless the client disconnects first.
    Returns True if the client is still connected."""
    fut = getattr(request.protocol, "lost_future", None)
    if seconds > 0:
        if fut is None:
            await asyncio.sleep(seconds)
        else:
            await asyncio.wait({fut}, timeout=seconds)
    return not (fut is not None and fut.done())


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------
def json_response(status, obj, headers=None, content_type=JSON_CT):
    body = json.dumps(obj).encode()
    h = {"Content-Type": content_type}
    if headers:
        h.update(headers)
    return web.Response(status=status, body=body, headers=h)


def twilio_headers():
    return {"Twilio-Request-Id": "RQ" + secrets.token_hex(16),
            "Twilio-Concurrent-Requests": str(STATE.in_flight),
            "Twilio-Request-Duration": "0.%03d" % secrets.randbelow(200)}


def twilio_error_obj(status, code, message):
    return {"code": code, "message": message,
            "more_info": "https://www.twilio.com/docs/errors/%d" % code,
            "status": status}


def twilio_error(status, code, message, extra_headers=None):
    h = twilio_headers()
    if extra_headers:
        h.update(extra_headers)
    return json_response(status, twilio_error_obj(status, code, message), h)


def twilio_401():
    return twilio_error(401, 20003, "Authenticate",
                        {"WWW-Authenticate": 'Basic realm="Twilio API"'})


def twilio_404(path):
    return twilio_error(404, 20404, "The requested resource %s was not found" % path)


def msg91_response(status, obj, extra_headers=None):
    return json_response(status, obj, extra_headers, content_type="application/json")


def retry_after_headers(rule):
    ra = rule.get("retry_after") if rule else None
    if ra is None:
        return {}
    if isinstance(ra, float) and ra.is_integer():
        ra = int(ra)
    return {"Retry-After": str(ra)}


async def close_after_raw(request, raw=b"", rst=False):
    """Write raw bytes (maybe none) directly on the transport, then close it.
    Returns a dummy response; aiohttp will fail to write it and treat the
    request as a premature client disconnection (quietly)."""
    tr = request.transport
    if tr is not None and not tr.is_closing():
        if raw:
            tr.write(raw)
        if rst:
            sock = tr.get_extra_info("socket")
            if sock is not None:
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                    struct.pack("ii", 1, 0))
                except OSError:
                    pass
            tr.abort()
        else:
            tr.close()
    await wait_or_lost(request, 2.0)
    return web.Response(status=204)


# --------------------------------------------------------------------------
# Rules
# --------------------------------------------------------------------------
class RuleError(Exception):
    pass


def make_rule(spec):
    if not isinstance(spec, dict):
        raise RuleError("rule must be a JSON object")
    provider = spec.get("provider", "*")
    if provider not in ("twilio", "msg91", "*"):
        raise RuleError("provider must be twilio, msg91 or *")
    behaviour = spec.get("behaviour", spec.get("behavior"))
    if not behaviour:
        raise RuleError("behaviour is required")
    op = spec.get("op", "send")
    providers = ["twilio", "msg91"] if provider == "*" else [provider]
    valid_for = [p for p in providers if behaviour in BEHAVIOURS[p]]
    if not valid_for:
        raise RuleError("unknown behaviour %r for provider %s; twilio: %s; msg91: %s"
                        % (behaviour, provider, sorted(TWILIO_BEHAVIOURS),
                           sorted(MSG91_BEHAVIOURS)))
    if op not in TWILIO_OPS | {"*"}:
        raise RuleError("op must be one of %s or *" % ", ".join(sorted(TWILIO_OPS)))
    if op != "*" and not any(behaviour in op_behaviours(p, op) for p in valid_for):
        ops = sorted(o for o in TWILIO_OPS
                     if any(behaviour in op_behaviours(p, o) for p in valid_for))
        raise RuleError("behaviour %r does not apply to op=%s (it applies to op=%s)"
                        % (behaviour, op, "/".join(ops)))
    to = spec.get("to", "*")
    if to is None:
        to = "*"
    times = spec.get("times")
    if times is not None and (not isinstance(times, int) or times < 0):
        raise RuleError("times must be a non-negative integer")
    STATE.rule_seq += 1
    return {
        "id": STATE.rule_seq,
        "to": to,
        "to_digits": None if to == "*" else digits(str(to)),
        "provider": provider,
        "op": op,
        "behaviour": behaviour,
        "times": times,
        "remaining": times,
        "delay_ms": spec.get("delay_ms"),
        "retry_after": spec.get("retry_after"),
        "store": spec.get("store"),
        "hits": 0,
    }


def match_rule(provider, op, recipients):
    """First non-exhausted rule (in insertion order) matching; consumes one
    use of it. recipients: list of digit strings (may be empty)."""
    for r in STATE.rules:
        if r["remaining"] is not None and r["remaining"] <= 0:
            continue
        if r["provider"] not in ("*", provider):
            continue
        if r["op"] not in ("*", op):
            continue
        if r["behaviour"] not in op_behaviours(provider, op):
            continue
        if r["to_digits"] is not None and r["to_digits"] not in recipients:
            continue
        if r["remaining"] is not None:
            r["remaining"] -= 1
        r["hits"] += 1
        return r
    return None


def default_behaviour(provider, op):
    d = STATE.config.get("default", "ok")
    if isinstance(d, dict):
        d = d.get(provider, "ok")
    if not d or d not in op_behaviours(provider, op):
        return "ok"
    return d


def resolve(provider, op, recipients):
    rule = match_rule(provider, op, recipients)
    if rule is not None:
        return rule["behaviour"], rule
    return default_behaviour(provider, op), None


def total_delay_s(behaviour, rule):
    d = STATE.config.get("default_delay_ms") or 0
    rd = rule.get("delay_ms") if rule else None
    if behaviour == "slow":
        d += rd if rd is not None else SLOW_DEFAULT_MS
    elif behaviour == "timeout":
        pass    # handled by the timeout behaviour itself
    elif rd:
        d += rd
    return max(0.0, d / 1000.0)


def should_store(behaviour, rule):
    if rule is not None and rule.get("store") is not None:
        return bool(rule["store"])
    return behaviour in STORED_BY_DEFAULT


# --------------------------------------------------------------------------
# Recording
# --------------------------------------------------------------------------
def headers_dict(request):
    d = {}
    for k, v in request.headers.items():
        d[k] = d[k] + ", " + v if k in d else v
    return d


def new_record(request, provider, op, raw):
    STATE.seq += 1
    hd = headers_dict(request)
    rec = {
        "seq": STATE.seq,
        "time": time.monotonic(),
        "wall_time": time.time(),
        "provider": provider,
        "op": op,
        "method": request.method,
        "path": request.path,
        "query": {k: v for k, v in request.query.items()},
        "headers": hd,
        "headers_lc": {k.lower(): v for k, v in hd.items()},
        "raw_body": raw.decode("utf-8", "replace"),
        "form": None,
        "json": None,
        "conn_id": conn_id_of(request),
        "behaviour": None,
        "rule_id": None,
        "status": None,
        "client_disconnected": False,
    }
    STATE.requests.append(rec)
    STATE.n_requests += 1
    if rec["conn_id"] is not None:
        STATE.provider_conn_ids.add(rec["conn_id"])
    return rec


# --------------------------------------------------------------------------
# Generic behaviour execution
# --------------------------------------------------------------------------
async def deliver(request, rec, behaviour, rule, make_ok, make_error, store_cb):
    """Run `behaviour`.

    make_ok()            -> (status, obj, headers) for the success answer
    make_error(name)     -> web.Response for a provider-specific error name
    store_cb()           -> store the message (called when it counts as sent)
    """
    rec["behaviour"] = behaviour
    rec["rule_id"] = rule["id"] if rule else None
    delay = total_delay_s(behaviour, rule)

    if should_store(behaviour, rule):
        store_cb()

    if behaviour == "timeout":
        rec["status"] = None
        rd = rule.get("delay_ms") if rule else None
        t = (rd if rd is not None else TIMEOUT_DEFAULT_MS) / 1000.0
        if not await wait_or_lost(request, t):
            rec["client_disconnected"] = True
        return await close_after_raw(request)

    if behaviour in ("drop", "reset"):
        rec["status"] = None
        if not await wait_or_lost(request, delay):
            rec["client_disconnected"] = True
        return await close_after_raw(request, rst=(behaviour == "reset"))

    if behaviour in ("ok", "slow", "drop_mid_response", "truncated_json") \
            or behaviour in CALL_OUTCOMES:
        status, obj, hdrs = make_ok()
        if behaviour in ("ok", "slow") or behaviour in CALL_OUTCOMES:
            resp = json_response(status, obj, hdrs)
        else:
            body = json.dumps(obj).encode()
            cut = body[: max(1, len(body) * 3 // 5)]
            if behaviour == "truncated_json":
                resp = web.Response(status=status, body=cut,
                                    headers=dict(hdrs, **{"Content-Type": JSON_CT}))
            else:
                rec["status"] = status
                if not await wait_or_lost(request, delay):
                    rec["client_disconnected"] = True
                    return await close_after_raw(request)
                reason = http.HTTPStatus(status).phrase
                head = ["HTTP/1.1 %d %s" % (status, reason),
                        "Date: " + time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime()),
                        "Content-Type: " + JSON_CT,
                        "Content-Length: %d" % len(body),
                        "Connection: keep-alive"]
                head += ["%s: %s" % kv for kv in hdrs.items()]
                raw = ("\r\n".join(head) + "\r\n\r\n").encode() + cut
                return await close_after_raw(request, raw)
    elif behaviour == "not_json":
        resp = web.Response(status=502, body=HTML_502,
                            headers={"Content-Type": "text/html"})
    else:
        resp = make_error(behaviour)

    rec["status"] = resp.status
    if not await wait_or_lost(request, delay):
        rec["client_disconnected"] = True
    return resp


# --------------------------------------------------------------------------
# Twilio
# --------------------------------------------------------------------------
RE_TW_MESSAGES = re.compile(r"^/2010-04-01/Accounts/([^/]+)/Messages\.json$")
RE_TW_MESSAGE = re.compile(r"^/2010-04-01/Accounts/([^/]+)/Messages/([^/]+)\.json$")
RE_TW_CALLS = re.compile(r"^/2010-04-01/Accounts/([^/]+)/Calls\.json$")
RE_TW_CALL = re.compile(r"^/2010-04-01/Accounts/([^/]+)/Calls/([^/]+)\.json$")
RE_TW_ACCOUNT = re.compile(r"^/2010-04-01/Accounts/([^/]+)\.json$")
RE_E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")


def twilio_auth_ok(request):
    """True if the Basic credentials are valid for the configured account."""
    h = request.headers.get("Authorization", "")
    if not h.lower().startswith("basic "):
        return False
    try:
        user, _, pw = base64.b64decode(h[6:].strip(), validate=True).decode().partition(":")
    except Exception:
        return False
    cfg = STATE.config
    if user == cfg["twilio_account_sid"] and secrets.compare_digest(pw, cfg["twilio_auth_token"]):
        return True
    keys = cfg.get("twilio_api_keys") or {}
    return user in keys and secrets.compare_digest(pw, str(keys[user]))


def twilio_call_error(name, to):
    """Calls-specific answers for behaviours whose Messages code differs."""
    if name == "invalid_number":
        return twilio_error(400, 21211, "Invalid 'To' Phone Number: %s" % to)
    if name == "unverified_trial":
        return twilio_error(
            400, 21219,
            "The number %s is unverified. Trial accounts may only make calls to "
            "verified numbers." % to)
    if name in ("region_disabled", "geo_permission"):
        return twilio_error(
            400, 21215,
            "Account not authorized to call %s. Perhaps you need to enable some "
            "international permissions: "
            "https://www.twilio.com/console/voice/calls/geo-permissions/low-risk" % to)
    return None


def twilio_behaviour_error(name, to, op="send"):
    if op == "call":
        resp = twilio_call_error(name, to)
        if resp is not None:
            return resp
    if name == "invalid_number":
        return twilio_error(400, 21211, "The 'To' number %s is not a valid phone number." % to)
    if name == "not_mobile":
        return twilio_error(400, 21614, "'To' number is not a valid mobile number")
    if name == "unverified_trial":
        return twilio_error(
            400, 21608,
            "The number %s is unverified. Trial accounts cannot send messages to "
            "unverified numbers; verify %s at twilio.com/user/account/phone-numbers/verified, "
            "or purchase a Twilio number to send messages to unverified numbers" % (to, to))
    if name == "opted_out":
        return twilio_error(400, 21610, "Attempt to send to unsubscribed recipient")
    if name in ("region_disabled", "geo_permission"):
        return twilio_error(
            400, 21408,
            "Permission to send an SMS has not been enabled for the region indicated "
            "by the 'To' number: %s." % to)
    if name == "auth":
        return twilio_401()
    if name == "suspended":
        return twilio_error(401, 20005, "Account not active")
    if name == "rate_limited":
        raise AssertionError("handled by caller")
    if name == "server_error":
        return twilio_error(500, 20500, "An internal server error has occurred")
    if name == "unavailable":
        return twilio_error(503, 20503, "Service Unavailable")
    raise AssertionError("unhandled twilio behaviour " + name)


def twilio_make_error(to, rule, op="send"):
    def f(name):
        if name == "rate_limited":
            return twilio_error(429, 20429, "Too Many Requests", retry_after_headers(rule))
        return twilio_behaviour_error(name, to, op)
    return f


async def read_twilio_form(request):
    """Read a Twilio create body. Returns (raw, form, pairs): `form` keeps the
    last value of each name, `pairs` every (name, value) in order (for
    parameters Twilio accepts repeated, such as StatusCallbackEvent)."""
    raw = await request.read()
    ctype = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
    pairs = []
    if ctype in ("application/x-www-form-urlencoded", ""):
        pairs = urllib.parse.parse_qsl(raw.decode("utf-8", "replace"),
                                       keep_blank_values=True)
    return raw, dict(pairs), pairs


def twilio_precheck(request, account_sid, create):
    """Checks that run before any rule. Returns (response, why) or None."""
    cfg = STATE.config
    if not twilio_auth_ok(request):
        return twilio_401(), "bad_credentials"
    if account_sid != cfg["twilio_account_sid"]:
        return twilio_404(request.path), "wrong_account_sid"
    if create and cfg.get("twilio_account_status", "active") != "active":
        return twilio_error(401, 20005, "Account not active"), "account_not_active"
    return None


def twilio_concurrency_check():
    """After validation: creates beyond twilio_concurrency_limit get 429."""
    limit = STATE.config.get("twilio_concurrency_limit") or 0
    if limit and STATE.in_flight_by["twilio"] > limit:
        return twilio_error(429, 20429, "Too Many Requests"), "concurrency_limit"
    return None


def twilio_public(msg):
    return {k: v for k, v in msg.items() if not k.startswith("_")}


def twilio_stored_view(msg):
    """Message as seen by fetch/list: later lifecycle state."""
    m = twilio_public(msg)
    st = msg.get("_status") or STATE.config.get("twilio_message_status") or "delivered"
    m["status"] = st
    if st not in ("queued", "accepted", "scheduled"):
        m["date_sent"] = m["date_sent"] or m["date_created"]
    if msg.get("_error_code") is not None:
        m["error_code"] = msg["_error_code"]
        m["error_message"] = msg.get("_error_message")
    if msg.get("_updated"):
        m["date_updated"] = rfc2822(msg["_updated"])
    if m.get("num_segments") == "0":
        m["num_segments"] = msg["_segments"]
    # Twilio fills price in (negative, as a string) once the message left it.
    rate = STATE.config.get("twilio_price_per_segment")
    if rate is not None and st in ("sent", "delivered", "undelivered"):
        m["price"] = "-%.5f" % (float(rate) * int(msg["_segments"]))
        m["price_unit"] = STATE.config.get("twilio_price_unit") or "USD"
    if m.get("from") is None:
        m["from"] = msg.get("_from_resolved")
    return m


def record_failure(rec):
    def fail(resp, why):
        rec["behaviour"] = why
        rec["status"] = resp.status
        return resp
    return fail


async def twilio_create(request, account_sid):
    raw, form, _pairs = await read_twilio_form(request)
    rec = new_record(request, "twilio", "send", raw)
    rec["form"] = form
    fail = record_failure(rec)

    pre = twilio_precheck(request, account_sid, create=True)
    if pre is not None:
        return fail(*pre)

    to = form.get("To", "")
    body = form.get("Body", "")
    frm = form.get("From", "")
    mg = form.get("MessagingServiceSid", "")
    if not to:
        return fail(twilio_error(400, 21604, "A 'To' phone number is required."), "validation")
    if not frm and not mg:
        return fail(twilio_error(400, 21603,
                                 "A 'From' or 'MessagingServiceSid' parameter is required"),
                    "validation")
    if not body and not form.get("MediaUrl") and not form.get("ContentSid"):
        return fail(twilio_error(400, 21602, "Message body is required."), "validation")
    if len(body) > 1600:
        return fail(twilio_error(400, 21617,
                                 "The concatenated message body exceeds the 1600 character limit."),
                    "validation")
    if not RE_E164.match(to):
        return fail(twilio_error(400, 21211,
                                 "The 'To' number %s is not a valid phone number." % to),
                    "validation")

    pre = twilio_concurrency_check()
    if pre is not None:
        return fail(*pre)

    behaviour, rule = resolve("twilio", "send", [digits(to)])

    now = time.time()
    sid = "SM" + secrets.token_hex(16)
    segs = str(num_segments(body))
    uri = "/2010-04-01/Accounts/%s/Messages/%s.json" % (account_sid, sid)
    msg = {
        "account_sid": account_sid,
        "api_version": "2010-04-01",
        "body": body,
        "date_created": rfc2822(now),
        "date_sent": None,
        "date_updated": rfc2822(now),
        "direction": "outbound-api",
        "error_code": None,
        "error_message": None,
        "from": frm or None,
        "messaging_service_sid": mg or None,
        "num_media": "0",
        "num_segments": "0" if (mg and not frm) else segs,
        "price": None,
        "price_unit": "USD",
        "sid": sid,
        "status": "accepted" if mg else "queued",
        "subresource_uris": {
            "media": uri.replace(".json", "/Media.json"),
            "feedback": uri.replace(".json", "/Feedback.json"),
        },
        "to": to,
        "uri": uri,
        "_created": now,
        "_segments": segs,
        "_from_resolved": frm or "+15005550006",
        "_status_callback": form.get("StatusCallback") or None,
    }

    def make_ok():
        return 201, twilio_public(msg), twilio_headers()

    def store():
        STATE.twilio_messages[sid] = msg

    rec["message_sid"] = sid
    return await deliver(request, rec, behaviour, rule, make_ok,
                         twilio_make_error(to, rule), store)


# --------------------------------------------------------------------------
# Twilio Programmable Voice: Calls
# --------------------------------------------------------------------------
CALL_EVENTS = ("initiated", "ringing", "answered", "completed")
CALL_TERMINAL = {"completed", "busy", "failed", "no-answer", "canceled"}
TWIML_MAX = 4000
URL_DEFAULT_DURATION = 10       # seconds a Url call lasts (its TwiML is never fetched)


def twilio_formatted(number):
    """`to_formatted`/`from_formatted`: NANP numbers as (415) 555-0100."""
    if re.fullmatch(r"\+1[2-9][0-9]{9}", number or ""):
        return "(%s) %s-%s" % (number[2:5], number[5:8], number[8:])
    return number


def _int_attr(v, default):
    if v is None or str(v).strip() == "":
        return default
    try:
        return int(str(v).strip())
    except ValueError:
        return v            # keep what was sent, so a test can see it


def parse_twiml(twiml):
    """What a listener would hear, in order. Returns a list of items:
    {"verb": "Say", "text", "language", "voice", "loop", "digits"},
    {"verb": "Pause", "length"}, {"verb": "Play", "url", "loop", "digits"},
    and {"verb": NAME, "attrs"} for any other verb. Items nested in a verb
    (e.g. <Say> inside <Gather>) follow it and carry "parent": NAME.
    Raises ValueError if the TwiML is not well-formed or not a <Response>."""
    try:
        root = ET.fromstring(twiml)
    except ET.ParseError as e:
        raise ValueError("not well-formed XML (%s)" % e)
    if root.tag != "Response":
        raise ValueError("the root element is <%s>, not <Response>" % root.tag)
    items = []

    def walk(el, parent):
        for ch in el:
            if not isinstance(ch.tag, str):
                continue        # comments, processing instructions
            if ch.tag == "Say":
                # itertext() includes SSML children (<say-as>, <prosody>...).
                text = " ".join("".join(ch.itertext()).split())
                item = {"verb": "Say", "text": text, "language": ch.get("language"),
                        "voice": ch.get("voice"), "loop": _int_attr(ch.get("loop"), 1),
                        "digits": digits(text)}
            elif ch.tag == "Pause":
                item = {"verb": "Pause", "length": _int_attr(ch.get("length"), 1)}
            elif ch.tag == "Play":
                item = {"verb": "Play", "url": (ch.text or "").strip() or None,
                        "loop": _int_attr(ch.get("loop"), 1), "digits": ch.get("digits")}
            else:
                item = {"verb": ch.tag, "attrs": dict(ch.attrib)}
                txt = (ch.text or "").strip()
                if txt:
                    item["text"] = txt
            if parent:
                item["parent"] = parent
            items.append(item)
            if ch.tag not in ("Say", "Play"):
                walk(ch, ch.tag)
    walk(root, None)
    return items


def spoken_text(items):
    return " ".join(i["text"] for i in items or [] if i["verb"] == "Say" and i["text"])


def estimate_duration(items):
    """Seconds the TwiML takes to play: 0.5 s a word for <Say>, `length`
    for <Pause>, 5 s for <Play>, each times its `loop` (0 counts as 1)."""
    if items is None:
        return URL_DEFAULT_DURATION
    total = 0.0
    for i in items:
        loop = i.get("loop", 1)
        loop = loop if isinstance(loop, int) and loop > 0 else 1
        if i["verb"] == "Say":
            total += max(1.0, 0.5 * len(i["text"].split())) * loop
        elif i["verb"] == "Pause":
            n = i["length"]
            total += n if isinstance(n, int) and n > 0 else 1
        elif i["verb"] == "Play":
            total += 5.0 * loop
    return max(1, math.ceil(total))


def twilio_call_times(call, st):
    """(start_ts, end_ts, duration_s) of a stored call shown with status st."""
    created = call["_created"]
    if st in ("queued", "initiated"):
        return None, None, None
    if st in ("ringing", "in-progress"):
        return created, None, None
    if st == "canceled":
        return None, call.get("_updated") or created, 0
    # Only an answered call lasts; an explicit duration wins over the estimate.
    if st != "completed":
        dur = 0
    elif call.get("_duration") is not None:
        dur = call["_duration"]
    else:
        dur = call["_est_duration"]
    end = created + dur
    if st == "no-answer":
        end = created + call["_timeout"]
    return created, end, dur


def twilio_call_view(call):
    """Call as seen by fetch/list: later lifecycle state."""
    c = twilio_public(call)
    st = call.get("_status") or STATE.config.get("twilio_call_status") or "completed"
    c["status"] = st
    start, end, dur = twilio_call_times(call, st)
    c["start_time"] = rfc2822(start) if start is not None else None
    c["end_time"] = rfc2822(end) if end is not None else None
    c["duration"] = str(int(dur)) if dur is not None else None
    if call.get("_updated"):
        c["date_updated"] = rfc2822(call["_updated"])
    # Twilio rates answered calls per started minute once they completed.
    rate = STATE.config.get("twilio_call_price_per_minute")
    if rate is not None and st == "completed":
        c["price"] = "-%.5f" % (float(rate) * max(1, math.ceil(int(dur) / 60.0)))
        c["price_unit"] = STATE.config.get("twilio_price_unit") or "USD"
    if st in ("in-progress", "completed"):
        c["answered_by"] = call.get("_answered_by") or (
            "human" if call.get("_machine_detection") else None)
    return c


def twilio_call_mock_view(call):
    """/_mock/twilio/calls: the call as fetch shows it, plus what was sent
    and what a listener would hear."""
    c = twilio_call_view(call)
    c.update({
        "twiml": call["_twiml"],
        "twiml_used": call["_twiml_used"],
        "twiml_error": call["_twiml_error"],
        "url": call["_url"],
        "spoken": call["_spoken"],
        "spoken_text": spoken_text(call["_spoken"]) if call["_spoken"] is not None else None,
        "spoken_digits": "".join(i["digits"] for i in call["_spoken"] or []
                                 if i["verb"] == "Say"),
        "status_callback": call["_status_callback"],
        "status_callback_event": call["_status_callback_event"],
        "status_callback_method": call["_status_callback_method"],
        "timeout": call["_timeout"],
        "machine_detection": call["_machine_detection"],
        "form": call["_form"],
    })
    return c


def set_twilio_call_status(call, status, body):
    """Change what fetch/list report for a stored call."""
    if status:
        call["_status"] = str(status)
    if "duration" in body:
        call["_duration"] = _int_or_none(body["duration"], "duration")
    if "answered_by" in body:
        call["_answered_by"] = body["answered_by"]
    call["_updated"] = time.time()


async def twilio_call_create(request, account_sid):
    raw, form, pairs = await read_twilio_form(request)
    rec = new_record(request, "twilio", "call", raw)
    rec["form"] = form
    twiml = form.get("Twiml", "")
    url = form.get("Url", "")
    rec.update({"twiml": twiml or None, "spoken": None, "spoken_text": None,
                "twiml_error": None})
    fail = record_failure(rec)

    pre = twilio_precheck(request, account_sid, create=True)
    if pre is not None:
        return fail(*pre)

    # Parse the TwiML first so that the record shows what would be spoken
    # even when a check below refuses the call. Twilio runs the inline
    # TwiML only without Url (warning 32019 otherwise).
    twiml_used = bool(twiml) and not url
    spoken, twiml_error = None, None
    if twiml_used and len(twiml) <= TWIML_MAX:
        try:
            spoken = parse_twiml(twiml)
        except ValueError as e:
            twiml_error = "Invalid Twiml: %s" % e
    rec.update({"spoken": spoken, "twiml_error": twiml_error,
                "spoken_text": spoken_text(spoken) if spoken is not None else None})

    cfg = STATE.config
    to = form.get("To", "")
    frm = form.get("From", "")

    def bad(code, message):
        return fail(twilio_error(400, code, message), "validation")

    if not to:
        return bad(21201, "No 'To' number is specified")
    if not frm:
        return bad(21213, "No 'From' number is specified")
    if not twiml and not url and not form.get("ApplicationSid"):
        return bad(21205, "Url parameter is required")
    if url and not re.match(r"^https?://[^/?#\s]+", url):
        return bad(21205, "Url is not a valid URL: %s" % url)
    if len(twiml) > TWIML_MAX:
        return bad(32018, "Twiml size exceeded maximum allowed value of %d characters"
                   % TWIML_MAX)
    if not RE_E164.match(to):
        return bad(21211, "Invalid 'To' Phone Number: %s" % to)
    if not RE_E164.match(frm):
        return bad(21212, "Invalid 'From' Phone Number: %s" % frm)
    owned = cfg.get("twilio_call_from_numbers")
    if owned is not None and frm not in owned:
        return bad(21210, "The source phone number provided, %s, is not yet verified for "
                   "your account. You may only make calls from phone numbers that you've "
                   "verified or purchased from Twilio." % frm)
    for name in ("Method", "FallbackMethod", "StatusCallbackMethod"):
        v = form.get(name, "")
        if v and v.upper() not in ("GET", "POST"):
            return bad(21200, "%s must be GET or POST, not %r" % (name, v))
    events = []
    for k, v in pairs:
        if k == "StatusCallbackEvent":
            events.extend(v.split())
    unknown = [e for e in events if e not in CALL_EVENTS]
    if unknown:
        return bad(21200, "Invalid StatusCallbackEvent %r: use initiated, ringing, answered "
                   "and/or completed, space-separated or repeated" % " ".join(unknown))
    timeout = 60
    if form.get("Timeout", "").strip():
        try:
            timeout = int(form["Timeout"])
        except ValueError:
            return bad(21200, "Timeout must be an integer number of seconds, not %r"
                       % form["Timeout"])
        timeout = max(5, min(600, timeout))

    if twiml_error and cfg.get("twilio_call_bad_twiml", "reject") != "fail_call":
        return bad(21200, twiml_error)

    pre = twilio_concurrency_check()
    if pre is not None:
        return fail(*pre)

    behaviour, rule = resolve("twilio", "call", [digits(to)])

    now = time.time()
    sid = "CA" + secrets.token_hex(16)
    uri = "/2010-04-01/Accounts/%s/Calls/%s.json" % (account_sid, sid)
    sub = uri[:-5]
    call = {
        "account_sid": account_sid,
        "annotation": None,
        "answered_by": None,
        "api_version": "2010-04-01",
        "caller_name": None,
        "date_created": rfc2822(now),
        "date_updated": rfc2822(now),
        "direction": "outbound-api",
        "duration": None,
        "end_time": None,
        "forwarded_from": None,
        "from": frm,
        "from_formatted": twilio_formatted(frm),
        "group_sid": None,
        "parent_call_sid": None,
        "phone_number_sid": "PN" + hashlib.md5(frm.encode()).hexdigest(),
        "price": None,
        "price_unit": "USD",
        "queue_time": "0",
        "sid": sid,
        "start_time": None,
        "status": "queued",
        "subresource_uris": {
            name: "%s/%s.json" % (sub, path) for name, path in (
                ("feedback", "Feedback"), ("notifications", "Notifications"),
                ("recordings", "Recordings"), ("streams", "Streams"),
                ("payments", "Payments"), ("events", "Events"), ("siprec", "Siprec"),
                ("user_defined_messages", "UserDefinedMessages"),
                ("user_defined_message_subscriptions",
                 "UserDefinedMessageSubscriptions"))},
        "to": to,
        "to_formatted": twilio_formatted(to),
        "trunk_sid": None,
        "uri": uri,
        "_created": now,
        "_status": CALL_OUTCOMES.get(behaviour) or ("failed" if twiml_error else None),
        "_updated": None,
        "_duration": None,
        "_answered_by": None,
        "_est_duration": estimate_duration(spoken) if not twiml_error else 0,
        "_timeout": timeout,
        "_twiml": twiml or None,
        "_twiml_used": twiml_used,
        "_twiml_error": twiml_error,
        "_url": url or None,
        "_spoken": spoken,
        "_status_callback": form.get("StatusCallback") or None,
        "_status_callback_event": events,
        "_status_callback_method": (form.get("StatusCallbackMethod") or "POST").upper(),
        "_machine_detection": form.get("MachineDetection") or None,
        "_form": form,
        "_seq": 0,
    }

    def make_ok():
        return 201, twilio_public(call), twilio_headers()

    def store():
        STATE.twilio_calls[sid] = call

    rec["call_sid"] = sid
    return await deliver(request, rec, behaviour, rule, make_ok,
                         twilio_make_error(to, rule, "call"), store)


# --------------------------------------------------------------------------
# Twilio reads: fetch / list of Messages and Calls, fetch account
# --------------------------------------------------------------------------
def _date_filters(query, field):
    """[(op, value)] from `field`, `field>`/`field>=`, `field<`/`field<=`
    (`DateSent>=2024-06-01` on the wire parses as name `DateSent>`)."""
    out = []
    for k, v in query.items():
        if k == field:
            out.append(("==", v))
        elif k in (field + ">", field + ">="):
            out.append((">=", v))
        elif k in (field + "<", field + "<="):
            out.append(("<=", v))
    return out


def _parse_when(v):
    """A datetime filter value as a timestamp; None for a plain
    YYYY-MM-DD date (or anything unparseable: compared as a date string)."""
    v = v.strip()
    if len(v) <= 10:
        return None
    try:
        d = datetime.datetime.fromisoformat(v.replace("Z", "+00:00"))
    except ValueError:
        return None
    if d.tzinfo is None:
        d = d.replace(tzinfo=datetime.timezone.utc)
    return d.timestamp()


def _when_ok(ts, cmp_op, value):
    if ts is None:
        return False
    t = _parse_when(value)
    if t is None:
        lhs, rhs = time.strftime("%Y-%m-%d", time.gmtime(ts)), value.strip()
    else:
        lhs, rhs = int(ts), int(t)
    if cmp_op == "==":
        return lhs == rhs
    return lhs >= rhs if cmp_op == ">=" else lhs <= rhs


def _call_when(call, field):
    start, end, _ = twilio_call_times(call, twilio_call_view(call)["status"])
    return (start if start is not None else call["_created"]) if field == "StartTime" else end


TW_RESOURCES = {
    "messages": {"path": "Messages", "store": lambda: STATE.twilio_messages,
                 "view": twilio_stored_view, "dates": ("DateSent",),
                 "when": lambda m, field: m["_created"]},
    "calls": {"path": "Calls", "store": lambda: STATE.twilio_calls,
              "view": twilio_call_view, "dates": ("StartTime", "EndTime"),
              "when": _call_when},
}


async def twilio_get(request, op, account_sid, sid=None):
    """op: fetch / list (Messages), call_fetch / call_list (Calls), account."""
    raw = await request.read()
    rec = new_record(request, "twilio", op, raw)
    fail = record_failure(rec)

    cfg = STATE.config
    pre = twilio_precheck(request, account_sid, create=False)
    if pre is not None:
        return fail(*pre)

    res = TW_RESOURCES["calls" if op.startswith("call_") else "messages"]
    kind = op[len("call_"):] if op.startswith("call_") else op
    store = res["store"]()
    q = request.query
    if kind == "fetch":
        m = store.get(sid)
        recipients = [digits(m["to"])] if m else []
    elif kind == "list":
        recipients = [digits(q["To"])] if "To" in q else []
    else:
        recipients = []
    behaviour, rule = resolve("twilio", op, recipients)

    def make_ok():
        if kind == "account":
            uri = "/2010-04-01/Accounts/%s.json" % account_sid
            base = uri[:-5]
            return 200, {
                "auth_token": None,
                "date_created": rfc2822(1577836800),
                "date_updated": rfc2822(time.time()),
                "friendly_name": "otpd test account",
                "owner_account_sid": account_sid,
                "sid": account_sid,
                "status": cfg.get("twilio_account_status", "active"),
                "subresource_uris": {
                    "messages": base + "/Messages.json",
                    "calls": base + "/Calls.json",
                    "balance": base + "/Balance.json",
                    "incoming_phone_numbers": base + "/IncomingPhoneNumbers.json",
                },
                "type": cfg.get("twilio_account_type", "Full"),
                "uri": uri,
            }, twilio_headers()
        if kind == "fetch":
            m = store.get(sid)
            if m is None or m["account_sid"] != account_sid:
                return 404, twilio_error_obj(
                    404, 20404, "The requested resource %s was not found" % request.path), \
                    twilio_headers()
            return 200, res["view"](m), twilio_headers()
        # list
        items = [m for m in store.values() if m["account_sid"] == account_sid]
        views = {m["sid"]: res["view"](m) for m in items}
        if "To" in q:
            items = [m for m in items if digits(m["to"]) == digits(q["To"])]
        if "From" in q:
            items = [m for m in items
                     if digits(views[m["sid"]]["from"] or "") == digits(q["From"])]
        if "Status" in q and res is TW_RESOURCES["calls"]:
            items = [m for m in items if views[m["sid"]]["status"] == q["Status"]]
        for field in res["dates"]:
            for cmp_op, value in _date_filters(q, field):
                items = [m for m in items if _when_ok(res["when"](m, field), cmp_op, value)]
        items.sort(key=lambda m: m["_created"], reverse=True)
        try:
            page_size = max(1, min(1000, int(q.get("PageSize", "50"))))
            page = max(0, int(q.get("Page", "0")))
        except ValueError:
            page_size, page = 50, 0
        chunk = [views[m["sid"]] for m in items[page * page_size:(page + 1) * page_size]]
        base = "/2010-04-01/Accounts/%s/%s.json" % (account_sid, res["path"])
        qs = {k: v for k, v in q.items() if k not in ("Page", "PageSize", "PageToken")}

        def page_uri(p):
            return base + "?" + urllib.parse.urlencode(dict(qs, PageSize=page_size, Page=p))
        has_next = (page + 1) * page_size < len(items)
        return 200, {
            "end": page * page_size + max(len(chunk) - 1, 0),
            "first_page_uri": page_uri(0),
            res["path"].lower(): chunk,
            "next_page_uri": page_uri(page + 1) if has_next else None,
            "page": page,
            "page_size": page_size,
            "previous_page_uri": page_uri(page - 1) if page > 0 else None,
            "start": page * page_size,
            "uri": page_uri(page),
        }, twilio_headers()

    return await deliver(request, rec, behaviour, rule, make_ok,
                         twilio_make_error("", rule), lambda: None)


# --------------------------------------------------------------------------
# MSG91
# --------------------------------------------------------------------------
RE_MSG91_FLOW = re.compile(r"^/api/v5/flow/?$")


def msg91_behaviour_error(name, rule):
    if name == "auth":
        return msg91_response(200, {"type": "error", "message": "AuthenticationFailure",
                                    "code": "201"})
    if name == "auth_401":
        return msg91_response(401, {"type": "error", "message": "AuthenticationFailure",
                                    "code": "201"})
    if name == "invalid_mobile":
        return msg91_response(200, {"type": "error",
                                    "message": "Please enter valid mobile number(s)",
                                    "code": "202"})
    if name == "template_invalid":
        return msg91_response(200, {"type": "error", "message": "Invalid Template ID",
                                    "code": "404"})
    if name == "insufficient_balance":
        return msg91_response(200, {"type": "error", "message": "Insufficient balance",
                                    "code": "301"})
    if name == "ip_not_whitelisted":
        return msg91_response(200, {"type": "error", "message": "IP not whitelisted",
                                    "code": "418"})
    if name == "rate_limited":
        return msg91_response(429, {"type": "error", "message": "Too many requests",
                                    "code": "429"}, retry_after_headers(rule))
    if name == "server_error":
        return msg91_response(500, {"type": "error", "message": "Internal Server Error",
                                    "code": "500"})
    if name == "unavailable":
        return msg91_response(503, {"type": "error", "message": "Service Unavailable",
                                    "code": "503"})
    raise AssertionError("unhandled msg91 behaviour " + name)


async def msg91_flow(request):
    raw = await request.read()
    rec = new_record(request, "msg91", "send", raw)
    try:
        data = json.loads(raw.decode("utf-8")) if raw else None
    except (ValueError, UnicodeDecodeError):
        data = None
    rec["json"] = data

    def fail(status, obj, why):
        rec["behaviour"] = why
        rec["status"] = status
        return msg91_response(status, obj)

    key = request.headers.get("authkey") or request.query.get("authkey") or ""
    if not secrets.compare_digest(key, STATE.config["msg91_authkey"]):
        return fail(200, {"type": "error", "message": "AuthenticationFailure", "code": "201"},
                    "bad_credentials")
    if not isinstance(data, dict):
        return fail(400, {"type": "error", "message": "Invalid JSON body"}, "validation")
    template_id = data.get("template_id") or data.get("flow_id")
    if not template_id:
        return fail(200, {"type": "error", "message": "Template ID missing"}, "validation")
    recips = data.get("recipients")
    if not isinstance(recips, list) or not recips:
        return fail(200, {"type": "error", "message": "Recipients missing"}, "validation")
    mobiles = []
    for r in recips:
        m = r.get("mobiles") if isinstance(r, dict) else None
        if not isinstance(m, str) or not m:
            return fail(200, {"type": "error", "message": "Mobile no. not found",
                              "code": "202"}, "validation")
        for one in m.split(","):
            one = one.strip()
            if not re.fullmatch(r"[1-9][0-9]{9,14}", one):
                return fail(200, {"type": "error",
                                  "message": "Please enter valid mobile number(s)",
                                  "code": "202"}, "validation")
            mobiles.append(one)

    behaviour, rule = resolve("msg91", "send", mobiles)
    req_id = secrets.token_hex(12)
    rec["request_id"] = req_id

    def make_ok():
        return 200, {"type": "success", "message": req_id}, {}

    def store():
        STATE.msg91_messages.append({
            "request_id": req_id, "template_id": template_id,
            "sender": data.get("sender"), "recipients": recips,
            "mobiles": mobiles, "time": time.time(),
        })

    def make_error(name):
        return msg91_behaviour_error(name, rule)

    return await deliver(request, rec, behaviour, rule, make_ok, make_error, store)


# --------------------------------------------------------------------------
# Control API
# --------------------------------------------------------------------------
async def read_json(request):
    raw = await request.read()
    if not raw.strip():
        return {}
    return json.loads(raw.decode("utf-8"))


def public_rule(r):
    return {k: v for k, v in r.items() if k != "to_digits"}


async def control(request):
    path = request.path[len("/_mock"):].rstrip("/") or "/"
    m = request.method
    try:
        if path == "/health":
            return json_response(200, {"ok": True, "pid": os.getpid()})
        if path == "/reset" and m == "POST":
            body = await read_json(request)
            STATE.reset(keep_config=bool(body.get("keep_config")))
            return json_response(200, {"ok": True})
        if path == "/config":
            if m == "POST":
                body = await read_json(request)
                if not isinstance(body, dict):
                    return json_response(400, {"error": "config must be a JSON object"})
                unknown = set(body) - set(STATE.default_config())
                if unknown:
                    return json_response(400, {"error": "unknown config keys %s"
                                               % sorted(unknown)})
                STATE.config.update(body)
            return json_response(200, STATE.config)
        if path == "/rules":
            if m == "POST":
                body = await read_json(request)
                specs = body if isinstance(body, list) else [body]
                try:
                    rules = [make_rule(s) for s in specs]
                except RuleError as e:
                    return json_response(400, {"error": str(e)})
                STATE.rules.extend(rules)
                out = [public_rule(r) for r in rules]
                return json_response(200, out if isinstance(body, list) else out[0])
            if m == "DELETE":
                STATE.rules = []
                return json_response(200, {"ok": True})
            return json_response(200, [public_rule(r) for r in STATE.rules])
        if path == "/requests":
            if m == "DELETE":
                STATE.requests = []
                return json_response(200, {"ok": True})
            reqs = STATE.requests
            prov = request.query.get("provider")
            if prov:
                reqs = [r for r in reqs if r["provider"] == prov]
            since = request.query.get("since")
            if since:
                reqs = [r for r in reqs if r["seq"] > int(since)]
            return json_response(200, reqs)
        if path == "/stats":
            return json_response(200, {
                "connections": len(STATE.provider_conn_ids),
                "tcp_accepted": STATE.tcp_accepted,
                "open_connections": STATE.open_connections,
                "requests": STATE.n_requests,
                "in_flight": STATE.in_flight,
                "max_concurrent": STATE.max_concurrent,
                "in_flight_by_provider": STATE.in_flight_by,
                "max_concurrent_by_provider": STATE.max_concurrent_by,
                "twilio_messages": len(STATE.twilio_messages),
                "twilio_calls": len(STATE.twilio_calls),
                "msg91_messages": len(STATE.msg91_messages),
            })
        if path == "/messages":
            return json_response(200, {
                "twilio": [twilio_stored_view(x) for x in STATE.twilio_messages.values()],
                "msg91": STATE.msg91_messages,
            })
        mm = re.fullmatch(r"/twilio/messages/([^/]+)", path)
        if mm and m == "POST":
            msg = STATE.twilio_messages.get(mm.group(1))
            if msg is None:
                return json_response(404, {"error": "no such message"})
            body = await read_json(request)
            set_twilio_status(msg, body.get("status"), body.get("error_code"),
                              body.get("error_message"), "error_code" in body)
            return json_response(200, twilio_stored_view(msg))
        if path == "/twilio/callback" and m == "POST":
            return await twilio_callback(await read_json(request))
        if path == "/twilio/calls" and m == "GET":
            calls = [twilio_call_mock_view(c) for c in STATE.twilio_calls.values()]
            to = request.query.get("to")
            if to:
                calls = [c for c in calls if digits(c["to"]) == digits(to)]
            return json_response(200, calls)
        mm = re.fullmatch(r"/twilio/calls/([^/]+)", path)
        if mm and m in ("GET", "POST"):
            call = STATE.twilio_calls.get(mm.group(1))
            if call is None:
                return json_response(404, {"error": "no such call"})
            if m == "POST":
                body = await read_json(request)
                if not isinstance(body, dict):
                    return json_response(400, {"error": "body must be a JSON object"})
                set_twilio_call_status(call, body.get("status"), body)
            return json_response(200, twilio_call_mock_view(call))
        if path == "/twilio/call_callback" and m == "POST":
            return await twilio_call_callback(await read_json(request))
        if path == "/msg91/dlr" and m == "POST":
            return await msg91_dlr(await read_json(request))
        if path == "/callbacks":
            if m == "DELETE":
                STATE.callbacks = []
                return json_response(200, {"ok": True})
            return json_response(200, STATE.callbacks)
    except (ValueError, TypeError, AttributeError) as e:
        return json_response(400, {"error": "bad request: %s" % e})
    return json_response(404, {"error": "unknown control endpoint %s %s"
                               % (m, request.path)})


# --------------------------------------------------------------------------
# Outgoing webhooks (Twilio status callbacks, MSG91 DLRs), sent on demand
# through the control API to a target URL (normally otpd's webhook endpoint).
# --------------------------------------------------------------------------
TWILIO_ERROR_MESSAGES = {
    30001: "Queue overflow",
    30002: "Account suspended",
    30003: "Unreachable destination handset",
    30004: "Message blocked",
    30005: "Unknown destination handset",
    30006: "Landline or unreachable carrier",
    30007: "Message filtered",
    30008: "Unknown error",
    30034: "Message from an unregistered number",
}

MSG91_DLR_DESC = {1: "DELIVERED", 2: "FAILED", 9: "NDNC", 16: "REJECTED",
                  17: "BLOCKED", 25: "REJECTED"}


def _int_or_none(v, name):
    if v is None or v == "":
        return None
    if isinstance(v, bool):
        raise ValueError("%s must be an integer" % name)
    return int(v)


def set_twilio_status(msg, status, error_code, error_message, touch_error):
    """Change what fetch/list report for a stored message."""
    if status:
        msg["_status"] = str(status)
    if touch_error:
        code = _int_or_none(error_code, "error_code")
        msg["_error_code"] = code
        if code is None:
            msg["_error_message"] = None
        else:
            msg["_error_message"] = error_message or TWILIO_ERROR_MESSAGES.get(
                code, "Error %d" % code)
    msg["_updated"] = time.time()


async def post_webhook(target, body, headers, ca=None, timeout_ms=10000, method="POST"):
    """POST `body` (bytes) to `target` (or GET it, body None); returns
    (status, text, error)."""
    sslarg = None
    if target.startswith("https:"):
        sslarg = ssl.create_default_context(cafile=ca) if ca else ssl.create_default_context()
    try:
        to = aiohttp.ClientTimeout(total=timeout_ms / 1000.0)
        async with aiohttp.ClientSession(timeout=to, auto_decompress=True,
                                         skip_auto_headers=("User-Agent",)) as sess:
            async with sess.request(method, target, data=body, headers=headers,
                                    ssl=sslarg, allow_redirects=False) as r:
                text = await r.text(errors="replace")
                return r.status, text, None
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError) as e:
        return None, None, "%s: %s" % (type(e).__name__, e)


def webhook_reply(kind, target, status, text, err, extra):
    rec = dict({"kind": kind, "target": target, "status": status, "body": text,
                "time": time.monotonic(), "wall_time": time.time()}, **extra)
    if err:
        rec["error"] = err
    STATE.callbacks.append(rec)
    out = {k: v for k, v in rec.items() if k not in ("time", "wall_time", "kind")}
    return json_response(502 if err else 200, out)


def _with_query(url, params):
    if not params:
        return url
    return url + ("&" if "?" in url else "?") + urllib.parse.urlencode(params)


def tamper_error(body):
    if body.get("tamper") not in (None, "", "signature", "param", "none"):
        return json_response(400, {"error": "tamper must be signature, param or none"})
    return None


async def send_signed_twilio(kind, body, url, params, status_keys, tamper_status,
                             on_honest, method="POST", extra_reply=None):
    """Send a Twilio webhook signed exactly as Twilio signs it, to `target`
    (default: the signed `url`). Shared by message and call callbacks.

    params: the honest parameters; extra_params from `body` are added.
    status_keys: the params `tamper: "param"` replaces with tamper_status.
    on_honest(): updates the stored resource (Twilio's truth), or None.
    method: POST (form body) or GET (params in the query string; the
    signature then covers the URL with its query and no body params)."""
    from twilio.request_validator import RequestValidator   # python3-twilio
    tamper = body.get("tamper")
    for k, v in (body.get("extra_params") or {}).items():
        params[str(k)] = str(v)
    token = body.get("token") or STATE.config["twilio_auth_token"]
    target = body.get("target") or url

    def sign(tok, p):
        if method == "GET":
            return RequestValidator(tok).compute_signature(_with_query(url, p), {})
        return RequestValidator(tok).compute_signature(url, p)

    signature = sign(token, params)
    sent = dict(params)
    if tamper == "signature":
        signature = sign("wrong-" + token, params)
    elif tamper == "param":
        for k in status_keys:
            sent[k] = str(tamper_status)
    idem = body.get("idempotency_token") or str(uuid.uuid4())
    headers = {
        "User-Agent": "TwilioProxy/1.1",
        "I-Twilio-Idempotency-Token": idem,
    }
    if method == "GET":
        dest, data = _with_query(target, sent), None
    else:
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        dest, data = target, urllib.parse.urlencode(sent).encode()
    if tamper != "none":
        headers["X-Twilio-Signature"] = signature
    # Twilio's own view of the resource follows the honest status.
    if on_honest is not None:
        on_honest()
    st, text, err = await post_webhook(
        dest, data, headers, ca=body.get("ca"),
        timeout_ms=body.get("timeout_ms") or 10000, method=method)
    return webhook_reply(kind, target, st, text, err, dict({
        "signature": headers.get("X-Twilio-Signature"),
        "params": sent, "signed_params": params,
        "url": _with_query(url, params) if method == "GET" else url,
        "idempotency_token": idem, "tamper": tamper or None}, **(extra_reply or {})))


async def twilio_callback(body):
    if not isinstance(body, dict):
        return json_response(400, {"error": "body must be a JSON object"})
    sid = body.get("sid")
    status = body.get("status")
    if not sid or not status:
        return json_response(400, {"error": "sid and status are required"})
    bad = tamper_error(body)
    if bad is not None:
        return bad
    error_code = _int_or_none(body.get("error_code"), "error_code")
    msg = STATE.twilio_messages.get(sid)
    url = body.get("url") or (msg or {}).get("_status_callback")
    if not url:
        return json_response(400, {"error": "no url given and message %s has no "
                                            "StatusCallback (or is unknown)" % sid})
    cfg = STATE.config
    params = {
        "MessageSid": sid,
        "SmsSid": sid,
        "MessageStatus": str(status),
        "SmsStatus": str(status),
        "AccountSid": body.get("account_sid") or (msg or {}).get("account_sid")
        or cfg["twilio_account_sid"],
        "From": body.get("from") or (msg or {}).get("_from_resolved") or "",
        "To": body.get("to") or (msg or {}).get("to") or "",
        "ApiVersion": "2010-04-01",
    }
    if msg is not None and msg.get("messaging_service_sid"):
        params["MessagingServiceSid"] = msg["messaging_service_sid"]
    if error_code is not None:
        params["ErrorCode"] = str(error_code)
    on_honest = None
    if msg is not None and body.get("update_message", True):
        def on_honest():
            set_twilio_status(msg, status, error_code, body.get("error_message"),
                              error_code is not None)
    return await send_signed_twilio(
        "twilio", body, url, params, ("MessageStatus", "SmsStatus"),
        body.get("tamper_status") or ("failed" if status == "delivered" else "delivered"),
        on_honest)


def call_event_of(status):
    """The StatusCallbackEvent under which Twilio reports `status`."""
    if status in ("queued", "initiated"):
        return "initiated"
    if status == "ringing":
        return "ringing"
    if status == "in-progress":
        return "answered"
    return "completed"


async def twilio_call_callback(body):
    if not isinstance(body, dict):
        return json_response(400, {"error": "body must be a JSON object"})
    sid = body.get("sid")
    status = body.get("status")
    if not sid or not status:
        return json_response(400, {"error": "sid and status are required"})
    bad = tamper_error(body)
    if bad is not None:
        return bad
    status = str(status)
    call = STATE.twilio_calls.get(sid)
    url = body.get("url") or (call or {}).get("_status_callback")
    if not url:
        return json_response(400, {"error": "no url given and call %s has no "
                                            "StatusCallback (or is unknown)" % sid})
    method = str(body.get("method") or (call or {}).get("_status_callback_method")
                 or "POST").upper()
    if method not in ("GET", "POST"):
        return json_response(400, {"error": "method must be GET or POST"})
    if "duration" in body:
        _int_or_none(body["duration"], "duration")      # 400 if not an integer
    cfg = STATE.config
    # Twilio's own view of the call follows the honest status; update it first
    # so that CallDuration/AnsweredBy agree with what fetch then shows.
    if call is not None and body.get("update_call", True):
        set_twilio_call_status(call, status, body)
    seq = body.get("sequence_number")
    if seq is None:
        seq = call["_seq"] if call is not None else 0
    if call is not None:
        call["_seq"] = int(seq) + 1
    to = body.get("to") or (call or {}).get("to") or ""
    frm = body.get("from") or (call or {}).get("from") or ""
    params = {
        "AccountSid": body.get("account_sid") or (call or {}).get("account_sid")
        or cfg["twilio_account_sid"],
        "ApiVersion": "2010-04-01",
        "CallSid": sid,
        "CallStatus": status,
        "CallbackSource": "call-progress-events",
        "Called": to,
        "Caller": frm,
        "Direction": "outbound-api",
        "From": frm,
        "SequenceNumber": str(seq),
        "Timestamp": body.get("timestamp") or rfc2822(time.time()),
        "To": to,
    }
    if status in CALL_TERMINAL:
        if body.get("duration") is not None:
            dur = int(body["duration"])
        elif call is not None:
            dur = twilio_call_times(call, status)[2]
        else:
            dur = 0
        params["CallDuration"] = str(int(dur or 0))
    answered_by = body.get("answered_by")
    if answered_by is None and call is not None and status in ("in-progress", "completed"):
        answered_by = call.get("_answered_by") or (
            "human" if call.get("_machine_detection") else None)
    if answered_by and status in ("in-progress", "completed"):
        params["AnsweredBy"] = str(answered_by)
    event = call_event_of(status)
    subscribed = event in ((call or {}).get("_status_callback_event") or ["completed"])
    return await send_signed_twilio(
        "twilio_call", body, url, params, ("CallStatus",),
        body.get("tamper_status") or ("failed" if status == "completed" else "completed"),
        None, method=method,
        extra_reply={"method": method, "event": event, "subscribed": subscribed})


async def msg91_dlr(body):
    if not isinstance(body, dict):
        return json_response(400, {"error": "body must be a JSON object"})
    fmt = body.get("format", "v2")
    target = body.get("target")
    req_id = body.get("request_id")
    number = body.get("number")
    if fmt not in ("v2", "v3", "new"):
        return json_response(400, {"error": "format must be v2, v3 or new"})
    if not target or not req_id or not number:
        return json_response(400, {"error": "request_id, number and target are required"})
    code = _int_or_none(body.get("status", 1), "status")
    desc = body.get("desc") or MSG91_DLR_DESC.get(code, "UNKNOWN")
    failed = "" if code == 1 else str(body.get("failed_reason") or desc)
    now = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())
    sender = str(body.get("sender_id") or "OTPSMS")
    if fmt == "v2":
        payload = [{
            "senderId": sender, "requestId": str(req_id),
            "report": [{"date": now, "amount": "0.01", "clientid": "", "INMSID": "0",
                        "CRQID": "0", "ctCode": "900", "number": str(number),
                        "credit": "1", "status": str(code), "desc": desc,
                        "failedReason": failed}],
            "userId": "123456", "campaignName": "API"}]
        raw = urllib.parse.urlencode({"data": json.dumps(payload)}).encode()
        ctype = "application/x-www-form-urlencoded"
    elif fmt == "v3":
        payload = {"date": now, "number": str(number), "senderId": sender, "amount": "0.01",
                   "requestId": str(req_id), "INMSID": "0", "CRQID": "0", "credit": "1",
                   "userId": "123456", "campaignName": "API", "status": str(code),
                   "desc": desc}
        raw = json.dumps(payload).encode()
        ctype = "application/json"
    else:
        payload = {"requestId": str(req_id), "requestedAt": now, "status": str(code),
                   "deliveryTime": now, "telNum": str(number), "credit": "1",
                   "senderId": sender, "campaignName": "API", "failureReason": failed}
        raw = json.dumps(payload).encode()
        ctype = "application/json"
    st, text, err = await post_webhook(target, raw, {"Content-Type": ctype},
                                       ca=body.get("ca"),
                                       timeout_ms=body.get("timeout_ms") or 10000)
    return webhook_reply("msg91", target, st, text, err, {
        "format": fmt, "content_type": ctype, "payload": payload,
        "raw_body": raw.decode()})


# --------------------------------------------------------------------------
# Dispatch
# --------------------------------------------------------------------------
async def provider_dispatch(request):
    p = request.path
    meth = request.method
    mm = RE_TW_MESSAGES.match(p)
    if mm:
        if meth == "POST":
            return await twilio_create(request, mm.group(1))
        if meth == "GET":
            return await twilio_get(request, "list", mm.group(1))
    mm = RE_TW_MESSAGE.match(p)
    if mm and meth == "GET":
        return await twilio_get(request, "fetch", mm.group(1), mm.group(2))
    mm = RE_TW_CALLS.match(p)
    if mm:
        if meth == "POST":
            return await twilio_call_create(request, mm.group(1))
        if meth == "GET":
            return await twilio_get(request, "call_list", mm.group(1))
    mm = RE_TW_CALL.match(p)
    if mm and meth == "GET":
        return await twilio_get(request, "call_fetch", mm.group(1), mm.group(2))
    mm = RE_TW_ACCOUNT.match(p)
    if mm and meth == "GET":
        return await twilio_get(request, "account", mm.group(1))
    if RE_MSG91_FLOW.match(p) and meth == "POST":
        return await msg91_flow(request)

    # Unknown route: record it so tests can see what the daemon called.
    raw = await request.read()
    prov = "twilio" if p.startswith("/2010-04-01") else (
        "msg91" if p.startswith("/api/") else "unknown")
    rec = new_record(request, prov, "unknown", raw)
    rec["behaviour"] = "no_route"
    if prov == "twilio":
        if mm or any(r.match(p) for r in (RE_TW_MESSAGES, RE_TW_MESSAGE,
                                          RE_TW_CALLS, RE_TW_CALL)):
            resp = twilio_error(405, 20004, "Method not allowed")
        else:
            resp = twilio_404(p)
    else:
        resp = json_response(404, {"type": "error", "message": "Not Found"})
    rec["status"] = resp.status
    return resp


async def handle(request):
    p = request.path
    if p.startswith("/_mock/") or p == "/_mock":
        return await control(request)
    prov = "twilio" if p.startswith("/2010-04-01/") else (
        "msg91" if p.startswith("/api/") else "unknown")
    st = STATE
    st.in_flight += 1
    st.in_flight_by[prov] += 1
    st.max_concurrent = max(st.max_concurrent, st.in_flight)
    st.max_concurrent_by[prov] = max(st.max_concurrent_by[prov], st.in_flight_by[prov])
    try:
        resp = await provider_dispatch(request)
        if st.config.get("close_connections") and isinstance(resp, web.StreamResponse):
            # "Connection: close" and a close after the answer, as a provider
            # behind a load balancer without keep-alive does: every request
            # then needs a new TCP + TLS connection.
            resp.force_close()
        return resp
    finally:
        st.in_flight -= 1
        st.in_flight_by[prov] -= 1


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------
def raise_nofile():
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        pass


async def amain(args):
    global STATE
    base = {}
    if args.twilio_account_sid:
        base["twilio_account_sid"] = args.twilio_account_sid
    if args.twilio_auth_token:
        base["twilio_auth_token"] = args.twilio_auth_token
    if args.msg91_authkey:
        base["msg91_authkey"] = args.msg91_authkey
    STATE = State(base)

    sslctx = None
    if not args.plain_http:
        sslctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        sslctx.load_cert_chain(args.cert, args.key)
        sslctx.set_alpn_protocols(["http/1.1"])

    loop = asyncio.get_running_loop()
    server = MockServer(handle, keepalive_timeout=args.keepalive_timeout)
    srv = await loop.create_server(server, args.host, args.port, ssl=sslctx,
                                   backlog=args.backlog, reuse_address=True)
    port = srv.sockets[0].getsockname()[1]
    if args.ready_file:
        tmp = args.ready_file + ".tmp.%d" % os.getpid()
        with open(tmp, "w") as f:
            json.dump({"port": port, "pid": os.getpid()}, f)
        os.replace(tmp, args.ready_file)
    print("provider_mock listening on %s://%s:%d" % ("http" if args.plain_http else "https",
                                                    args.host, port), flush=True)

    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    srv.close()
    for conn in list(server.connections):
        if conn.transport is not None:
            conn.transport.abort()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--cert", help="server certificate (PEM)")
    ap.add_argument("--key", help="server private key (PEM)")
    ap.add_argument("--ready-file")
    ap.add_argument("--plain-http", action="store_true",
                    help="serve plain HTTP instead of HTTPS (debugging only)")
    ap.add_argument("--backlog", type=int, default=2048)
    ap.add_argument("--keepalive-timeout", type=float, default=75.0)
    ap.add_argument("--twilio-account-sid")
    ap.add_argument("--twilio-auth-token")
    ap.add_argument("--msg91-authkey")
    ap.add_argument("--log-level", default="WARNING")
    args = ap.parse_args(argv)
    if not args.plain_http and not (args.cert and args.key):
        ap.error("--cert and --key are required (or --plain-http)")
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="provider_mock %(levelname)s %(name)s: %(message)s")
    raise_nofile()
    asyncio.run(amain(args))


if __name__ == "__main__":
    main()

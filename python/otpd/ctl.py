"""otpctl: the operator's tool for otpd.

    otpctl [-c FILE] status                     queue, instances, totals, recent errors
    otpctl [-c FILE] send +14155552671          send a test code and follow it
    otpctl [-c FILE] check                      validate Redis, the hash key and provider credentials
    otpctl [-c FILE] dead list|requeue|purge    manage dead letters

Configuration is read the way the daemon reads it: the .env file named by
-c (or $OTPD_CONFIG), then environment variables of the same names, which
win.  Every command takes --json.  Exit status: 0 success, 1 failure,
2 usage or configuration-file error.

Only Redis (docs/protocol.md) and, for `check`, the providers' read-only
account endpoints are touched.  Phone numbers are masked in all output,
except that `send` echoes the number the operator typed.
"""
import argparse
import base64
import json
import os
import re
import socket
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import redis

from .client import FINAL, OTPClient, mask_phone, parse_hash_key

__all__ = ["main", "parse_dotenv", "load_config", "parse_duration", "mask_text", "hint_for"]

DEFAULTS = {
    "REDIS_URL": "redis://127.0.0.1:6379/0",
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

STALE_MS = 11000                 # heartbeat period is 5 s; key TTL 15 s
ERROR_STATUSES = ("failed", "expired", "rejected", "retrying")
DEAD_PAYLOAD_CAP = 4096          # the daemon cuts dead-letter payloads here (protocol section 6)
HEARTBEAT_FIELDS = ("version", "pid", "host", "consumer", "started_ms", "updated_ms",
                    "inflight", "claimed", "sent", "failed", "expired", "rejected",
                    "retries", "loop_lag_ms", "redis", "providers")

_E164 = re.compile(r"\+[1-9][0-9]{6,14}")
_JOB_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_TWILIO_SID = re.compile(r"AC[0-9a-fA-F]{32}")
_TWILIO_MG = re.compile(r"MG[0-9a-fA-F]{32}")
# A digit run that may be a phone number: optional +, 7+ digits, with the
# separators people type (spaces, dashes, dots, brackets).
_PHONEISH = re.compile(r"\+?[0-9][0-9 ().-]{5,}[0-9]")
_DURATION = re.compile(r"([0-9]+)([smhd]?)")
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
# The doc's known-answer key (docs/protocol.md section 2); never for production.
EXAMPLE_KEY = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"

SMS_GUIDE = "the SMS setup guide's troubleshooting list"
URL_VERIFIED = "https://console.twilio.com/us1/develop/phone-numbers/manage/verified"
URL_SMS_LOGS = "https://console.twilio.com/us1/monitor/logs/sms"
URL_BILLING = "https://console.twilio.com/us1/billing"
HINT_TWILIO_AUTH = ("Wrong Account SID or Auth Token: double-check credentials in .env, "
                    "no extra spaces, verify in Twilio Console (Twilio issue 3)")
HINT_TRIAL = ("trial accounts can only send to verified numbers: verify them in the console "
              "or upgrade (Twilio issue 1; " + URL_VERIFIED + ")")
HINT_E164 = ("use E.164 format: +[country code][number], no spaces or special characters, "
             "e.g. +14155552671 or +919876543210 (Twilio issue 2)")


class UsageError(Exception):
    """Bad invocation or unreadable configuration: exit status 2."""


class Failure(Exception):
    """The command ran and failed: exit status 1."""


# --------------------------------------------------------------- configuration

def _unquote(v, where):
    """One value, as python-dotenv and daemon/config.c read it: 'single' is
    literal, "double" knows \\n \\t \\" \\\\, unquoted ends at ' #' and is trimmed."""
    if v[:1] in ("'", '"'):
        q, out, i = v[0], [], 1
        while i < len(v) and v[i] != q:
            if q == '"' and v[i] == "\\" and i + 1 < len(v):
                i += 1
                out.append({"n": "\n", "t": "\t"}.get(v[i], v[i]))
            else:
                out.append(v[i])
            i += 1
        if i >= len(v):
            raise UsageError("%s: unterminated quote" % where)
        rest = v[i + 1:].lstrip(" \t")
        if rest and not rest.startswith("#"):
            raise UsageError("%s: text after the closing quote" % where)
        return "".join(out)
    for i, ch in enumerate(v):
        if ch == "#" and (i == 0 or v[i - 1] in " \t"):
            v = v[:i]
            break
    return v.rstrip(" \t")


def parse_dotenv(text, name="config"):
    """Parse .env text (KEY=VALUE, # comments, quotes, `export KEY=...`) into a dict.

    Unknown keys are kept: the web app's own .env can be used as it is.
    Raises UsageError with file and line for a malformed line.
    """
    out = {}
    for lineno, line in enumerate(text.split("\n"), 1):
        if line.endswith("\r"):
            line = line[:-1]
        p = line.lstrip(" \t")
        if not p or p.startswith("#"):
            continue
        if p.startswith("export "):
            p = p[7:].lstrip(" \t")
        if "=" not in p:
            raise UsageError("%s:%d: expected KEY=VALUE" % (name, lineno))
        key, val = p.split("=", 1)
        key = key.rstrip(" \t")
        if not key:
            raise UsageError("%s:%d: empty key" % (name, lineno))
        out[key] = _unquote(val.lstrip(" \t"), "%s:%d" % (name, lineno))
    return out


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


# --------------------------------------------------------------- helpers

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


def parse_duration(text):
    """'90', '90s', '15m', '12h', '7d' or combinations like '1d12h' -> seconds."""
    t = text.strip().lower()
    pos, total = 0, 0
    if not t:
        raise ValueError("empty duration")
    for m in _DURATION.finditer(t):
        if m.start() != pos:
            break
        total += int(m.group(1)) * _UNIT[m.group(2)]
        pos = m.end()
    if pos != len(t):
        raise ValueError("%r is not a duration like 30s, 15m, 12h or 7d" % text)
    return total


def _mask_match(m):
    s = m.group(0)
    if _E164.fullmatch(s):
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


def _mask_json(v, key=None):
    if isinstance(v, str):
        return mask_text(v)
    if isinstance(v, int) and not isinstance(v, bool) and key == "to":
        return mask_text(str(v))
    if isinstance(v, dict):
        return {k: _mask_json(x, k) for k, x in v.items()}
    if isinstance(v, list):
        return [_mask_json(x, key) for x in v]
    return v


def mask_payload(raw):
    """A job payload for display: numbers in JSON strings (and a numeric 'to')
    masked; a payload that is not JSON is masked as text."""
    try:
        obj = json.loads(raw)
    except (ValueError, RecursionError):
        return mask_text(raw)
    return json.dumps(_mask_json(obj), separators=(",", ":"), ensure_ascii=False)


def truncate(s, n=80):
    return s if len(s) <= n else s[:n - 1] + "\u2026"


def id_ms(stream_id):
    try:
        return int(str(stream_id).split("-", 1)[0])
    except ValueError:
        return None


def _int(v, default=None):
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


def connect(cfg):
    try:
        r = redis.Redis.from_url(cfg["REDIS_URL"], decode_responses=True,
                                 socket_connect_timeout=5, socket_timeout=15)
    except ValueError as e:
        raise Failure("REDIS_URL: %s" % e) from None
    return r


def redis_now_ms(r):
    sec, usec = r.time()
    return int(sec) * 1000 + int(usec) // 1000


# Hints from the SMS setup guide's troubleshooting list, keyed by the
# error_code the daemon writes.  The daemon's own `error` already carries a
# fix for most codes; these add the console link or the guide's wording.
_HINTS_BY_CODE = {
    "20003": HINT_TWILIO_AUTH,
    "20005": "the Twilio account is suspended or closed: check " + URL_BILLING,
    "21219": HINT_TRIAL,
    "21608": HINT_TRIAL,
    "21211": "the 'To' number is not valid: " + HINT_E164,
    "21614": "the 'To' number cannot receive SMS (landline?): use a mobile number in E.164",
    "21606": "the 'From' number is not a valid phone number: set TWILIO_PHONE_NUMBER; " + HINT_E164,
    "21659": "the 'From' number is not a valid phone number: set TWILIO_PHONE_NUMBER; " + HINT_E164,
    "21212": "the 'From' number is not a valid phone number: set TWILIO_PHONE_NUMBER; " + HINT_E164,
    "21610": "the number opted out (replied STOP): check Twilio logs at " + URL_SMS_LOGS,
    "21408": "SMS to this country is disabled: enable it under Messaging > Settings > Geo permissions",
    "30003": "carrier issue (handset unreachable): try a different carrier/phone number",
    "30005": "carrier issue (unknown or inactive number): try a different carrier/phone number",
    "30006": "carrier issue (landline or unreachable carrier): try a different carrier/phone number",
    "30007": "carrier filtered the message: check Twilio logs at " + URL_SMS_LOGS,
    "curl_60": ("TLS certificate verification failed: set OTPD_CA_FILE to the CA bundle that signs "
                "the provider's certificate (verification cannot be turned off)"),
    "curl_6": "cannot resolve the provider's host name: check DNS and TWILIO_API_BASE/MSG91_API_BASE",
    "curl_7": "cannot connect to the provider: check the network, proxy and TWILIO_API_BASE/MSG91_API_BASE",
    "curl_28": "the provider did not answer in time: check the network or raise OTPD_HTTP_TIMEOUT_MS",
}


def hint_for(error_code, error="", provider=""):
    """A one-line fix for a status record's error, or ''."""
    code = (error_code or "").strip()
    text = (error or "").lower()
    if provider == "msg91" or code in ("201", "202", "207", "301", "418"):
        if code in ("201", "207") or "authenticat" in text or "auth key" in text:
            return ("Invalid Auth Key: verify MSG91_AUTH_KEY in the MSG91 dashboard (API section), "
                    "regenerate if necessary (MSG91 issue 1)")
        if "sender" in text or "template" in text:
            return ("Sender ID or template not approved: wait for approval (24-48 hours in India), "
                    "check MSG91_SENDER_ID and MSG91_TEMPLATE_ID (MSG91 issue 2)")
        if "dnd" in text:
            return ("DND number: use the transactional route, or ask the user to disable DND "
                    "(MSG91 issue 3)")
        if code == "301" or "balance" in text:
            return "insufficient MSG91 balance: recharge the account"
        if code == "418" or "whitelist" in text or "allow-list" in text:
            return "this server's IP is not on the MSG91 auth key's allow-list"
    if code in _HINTS_BY_CODE:
        return _HINTS_BY_CODE[code]
    if "credit" in text or "balance" in text:
        return "insufficient credit: check the balance at " + URL_BILLING + " (Twilio issue 5)"
    if "certificate" in text:
        return _HINTS_BY_CODE["curl_60"]
    if "permission denied" in text:
        return HINT_TRIAL
    return ""


# --------------------------------------------------------------- status

def _scan_pattern(prefix):
    return re.sub(r"([*?\[\]\\])", r"\\\1", prefix) + "instance:*"


def gather_status(r, cfg, n_errors=5, scan_limit=5000):
    p, g = cfg["OTPD_PREFIX"], cfg["OTPD_GROUP"]
    now = redis_now_ms(r)
    st = {"redis": redact_url(cfg["REDIS_URL"]), "prefix": p, "group": g, "now_ms": now}

    st["backlog"] = r.xlen(p + "jobs")
    st["dead"] = r.xlen(p + "dead")

    grp = {"exists": False, "lag": None, "entries_read": None, "last_delivered_id": None,
           "consumers": None}
    try:
        for gi in r.xinfo_groups(p + "jobs"):
            if gi.get("name") == g:
                grp.update(exists=True, lag=gi.get("lag"), entries_read=gi.get("entries-read"),
                           last_delivered_id=gi.get("last-delivered-id"),
                           consumers=gi.get("consumers"))
    except redis.ResponseError:
        pass  # no stream yet
    st["consumer_group"] = grp

    pend = {"count": 0, "oldest_id": None, "oldest_idle_ms": None, "oldest_age_ms": None,
            "oldest_consumer": None, "oldest_deliveries": None, "by_consumer": {}}
    if grp["exists"]:
        s = r.xpending(p + "jobs", g)
        pend["count"] = s.get("pending") or 0
        for c in s.get("consumers") or []:
            pend["by_consumer"][c["name"]] = _int(c["pending"], 0)
        if pend["count"] and s.get("min"):
            pend["oldest_id"] = s["min"]
            born = id_ms(s["min"])
            pend["oldest_age_ms"] = now - born if born is not None else None
            ext = r.xpending_range(p + "jobs", g, min=s["min"], max=s["min"], count=1)
            if ext:
                pend["oldest_idle_ms"] = ext[0].get("time_since_delivered")
                pend["oldest_consumer"] = ext[0].get("consumer")
                pend["oldest_deliveries"] = ext[0].get("times_delivered")
    st["pending"] = pend

    instances = []
    for key in sorted(set(r.scan_iter(match=_scan_pattern(p), count=200))):
        if r.type(key) != "hash":
            continue
        h = r.hgetall(key)
        if not h:
            continue  # expired between SCAN and HGETALL
        inst = {"key": key, "consumer": h.get("consumer") or key[len(p) + len("instance:"):]}
        inst.update(h)
        inst["ttl_ms"] = r.pttl(key)
        upd, started = _int(h.get("updated_ms")), _int(h.get("started_ms"))
        inst["seen_ago_ms"] = now - upd if upd is not None else None
        inst["uptime_ms"] = now - started if started is not None else None
        # Refreshed every 5 s: two missed beats mean the process is probably gone
        # and the key is only waiting out its TTL.
        inst["stale"] = inst["seen_ago_ms"] is not None and inst["seen_ago_ms"] > STALE_MS
        instances.append(inst)
    st["instances"] = instances
    st["alive"] = bool(instances)

    stats = r.hgetall(p + "stats")
    st["stats"] = {k: _int(v, v) for k, v in sorted(stats.items())}

    errors, scanned, hi = [], 0, "+"
    while len(errors) < n_errors and scanned < scan_limit:
        batch = r.xrevrange(p + "events", max=hi, min="-", count=200)
        if not batch:
            break
        for eid, f in batch:
            scanned += 1
            if f.get("status") in ERROR_STATUSES:
                ts = _int(f.get("ts_ms"), id_ms(eid))
                errors.append({"event_id": eid, "id": f.get("id", ""), "status": f.get("status"),
                               "provider": f.get("provider", ""),
                               "error_code": f.get("error_code", ""),
                               "ts_ms": ts, "age_ms": now - ts if ts is not None else None})
                if len(errors) >= n_errors:
                    break
        hi = "(" + batch[-1][0]
    st["recent_errors"] = errors
    st["events_scanned"] = scanned
    st["delivery"] = gather_delivery(r, p, now)
    st["alerts"] = sorted(k[len(p) + len("alert:"):]
                          for k in r.scan_iter(match=p + "alert:*", count=200))
    return st


# Carrier codes seen in delivery receipts, as the daemon explains them.
CARRIER_HINTS = {
    "30003": "unreachable handset (off or no signal)",
    "30004": "blocked by the recipient or carrier",
    "30005": "unknown or inactive number",
    "30006": "landline or unreachable carrier",
    "30007": "filtered by the carrier as spam",
    "30008": "unknown carrier error",
    "dlr_2": "MSG91: failed",
    "dlr_9": "MSG91: NDNC/DND number",
    "dlr_16": "MSG91: rejected by the operator",
    "dlr_17": "MSG91: blocked number",
    "dlr_25": "MSG91: rejected by the operator",
}


def gather_delivery(r, p, now, window_ms=3600000, cap=100000):
    """Delivery over the last hour from the events stream: rates by provider
    (delivered / sent) and the most common reasons for undelivered codes."""
    per, reasons, seen, lo = {}, {}, 0, "%d-0" % max(now - window_ms, 0)
    hi = "+"
    while seen < cap:
        batch = r.xrevrange(p + "events", max=hi, min=lo, count=1000)
        if not batch:
            break
        for _eid, f in batch:
            seen += 1
            status, prov = f.get("status"), f.get("provider") or "-"
            if status not in ("sent", "delivered", "undelivered"):
                continue
            c = per.setdefault(prov, {"sent": 0, "delivered": 0, "undelivered": 0})
            c[status] += 1
            if status == "undelivered":
                code = f.get("error_code") or "-"
                reasons[code] = reasons.get(code, 0) + 1
        hi = "(" + batch[-1][0]
    for c in per.values():
        c["delivery_rate"] = round(c["delivered"] / c["sent"], 3) if c["sent"] else None
    top = sorted(reasons.items(), key=lambda kv: -kv[1])[:5]
    return {"window_s": window_ms // 1000, "by_provider": per,
            "top_undelivered": [{"error_code": k, "count": v, "reason": CARRIER_HINTS.get(k, "")}
                                for k, v in top]}


def _stats_lines(stats):
    if not stats:
        return ["  none yet"]
    groups = {}
    for k, v in stats.items():
        parts = k.split(":")
        if parts[0] == "jobs" and len(parts) == 2:
            groups.setdefault("jobs", []).append((parts[1], v))
        elif parts[0] == "provider" and len(parts) == 3:
            groups.setdefault(parts[1], []).append((parts[2], v))
        else:
            groups.setdefault("other", []).append((k, v))
    order = sorted(groups, key=lambda n: (n != "jobs", n == "other", n))
    width = max(len(n) for n in order)
    return ["  %s  %s" % (n.ljust(width), "  ".join("%s %s" % kv for kv in groups[n]))
            for n in order]


def render_status(st):
    out = []
    out.append("otpd status  (redis %s, prefix %s, group %s)" % (st["redis"], st["prefix"], st["group"]))
    out.append("")
    pend, grp = st["pending"], st["consumer_group"]
    rows = [("backlog", st["backlog"], "XLEN %sjobs" % st["prefix"])]
    if not grp["exists"]:
        rows.append(("pending", 0, "consumer group %r does not exist yet (no daemon has started)"
                     % st["group"]))
        rows.append(("group lag", "-", ""))
    else:
        note = ""
        if pend["count"]:
            note = "oldest %s: idle %s, enqueued %s ago, consumer %s, delivered %s time(s)" % (
                pend["oldest_id"], fmt_age(pend["oldest_idle_ms"]), fmt_age(pend["oldest_age_ms"]),
                pend["oldest_consumer"], pend["oldest_deliveries"])
        rows.append(("pending", pend["count"], note))
        rows.append(("group lag", "-" if grp["lag"] is None else grp["lag"],
                     "entries not yet read by the group"))
    rows.append(("dead letters", st["dead"], "XLEN %sdead; see `otpctl dead list`" % st["prefix"]))
    out.append("queue")
    out.append(table(rows, ("WHAT", "COUNT", "DETAIL")))
    out.append("")
    out.append("instances alive: %d" % len(st["instances"]))
    for inst in st["instances"]:
        out.append("  %s  otpd %s  pid %s  host %s  up %s  last heartbeat %s ago  (expires in %s)" % (
            inst["consumer"], inst.get("version", "?"), inst.get("pid", "?"), inst.get("host", "?"),
            fmt_age(inst.get("uptime_ms")), fmt_age(inst.get("seen_ago_ms")),
            fmt_age(inst["ttl_ms"]) if inst["ttl_ms"] >= 0 else "never"))
        if inst["stale"]:
            out.append("    STALE: no heartbeat for %s; the process has probably died and its "
                       "pending jobs will be reclaimed by another instance" % fmt_age(inst["seen_ago_ms"]))
        out.append("    inflight %s  claimed %s  sent %s  failed %s  expired %s  rejected %s  "
                   "retries %s  loop lag %s ms" % tuple(inst.get(k, "-") for k in (
                       "inflight", "claimed", "sent", "failed", "expired", "rejected", "retries",
                       "loop_lag_ms")))
        out.append("    redis %s  providers %s" % (inst.get("redis", "-"), inst.get("providers", "-")))
        extra = [k for k in inst if k not in HEARTBEAT_FIELDS
                 and k not in ("key", "ttl_ms", "seen_ago_ms", "uptime_ms", "stale")]
        if extra:
            out.append("    " + "  ".join("%s %s" % (k, inst[k]) for k in extra))
    out.append("")
    out.append("totals (%sstats)" % st["prefix"])
    out.extend(_stats_lines(st["stats"]))
    out.append("")
    out.append("last %d errors (%sevents, newest first)" % (len(st["recent_errors"]), st["prefix"]))
    if st["recent_errors"]:
        out.append(table([(e["id"], e["status"], e["provider"] or "-", e["error_code"] or "-",
                           fmt_age(e["age_ms"])) for e in st["recent_errors"]],
                         ("JOB", "STATUS", "PROVIDER", "ERROR_CODE", "AGE")))
    else:
        out.append("  none in the last %d events" % st["events_scanned"])
    d = st.get("delivery") or {}
    out.append("")
    out.append("delivery, last hour (receipts in %sevents)" % st["prefix"])
    if d.get("by_provider"):
        out.append(table([(prov, c["sent"], c["delivered"], c["undelivered"],
                           "-" if c["delivery_rate"] is None else "%.1f%%" % (100 * c["delivery_rate"]))
                          for prov, c in sorted(d["by_provider"].items())],
                         ("PROVIDER", "SENT", "DELIVERED", "UNDELIVERED", "RATE")))
        for t in d.get("top_undelivered") or []:
            out.append("  undelivered %-8s x%-5d %s" % (t["error_code"], t["count"], t["reason"]))
    else:
        out.append("  nothing sent in the last hour")
    if st.get("alerts"):
        out.append("")
        out.append("ALERTS (active)")
        for a in st["alerts"]:
            out.append("  " + a.replace("country_budget:", "country budget exceeded: +"))
    return "\n".join(out)


def cmd_status(cfg, args):
    r = connect(cfg)
    st = gather_status(r, cfg, n_errors=args.errors)
    if args.json:
        emit_json(st)
    else:
        print(render_status(st))
    if not st["alive"]:
        warn("no otpd instance is alive (no %sinstance:* heartbeat in Redis)" % cfg["OTPD_PREFIX"])
        return 1
    return 0


# --------------------------------------------------------------- send

def cmd_send(cfg, args):
    r = connect(cfg)
    try:
        client = OTPClient(redis=r, hash_key=cfg["OTPD_HASH_KEY"], prefix=cfg["OTPD_PREFIX"])
    except ValueError as e:
        raise Failure("%s (generate one with `otpd --gen-key`; it must match the daemon's)" % e) from None
    events = cfg["OTPD_PREFIX"] + "events"
    if not next(iter(r.scan_iter(match=_scan_pattern(cfg["OTPD_PREFIX"]), count=1000)), None):
        warn("no otpd instance is alive (no heartbeat); the job will wait in the backlog")
    last = r.xrevrange(events, count=1)
    cursor = last[0][0] if last else "0-0"
    kw = {}
    if args.provider:
        kw["provider"] = args.provider
    if args.ttl is not None:
        kw["ttl"] = args.ttl
    try:
        job_id = client.send(args.to, args.purpose, **kw)
    except ValueError as e:
        raise UsageError(str(e)) from None
    t0 = time.monotonic()
    changes = []

    def show(status, rec=None, ev=None):
        t = time.monotonic() - t0
        rec = rec or {}
        ev = ev or {}
        ch = {"status": status, "t_s": round(t, 3),
              "provider": rec.get("provider") or ev.get("provider") or "",
              "error_code": rec.get("error_code") or ev.get("error_code") or ""}
        if status in FINAL or status == "retrying":
            for k in ("provider_ref", "error", "attempts"):
                if rec.get(k):
                    ch[k] = rec[k]
        if status in ("failed", "rejected", "expired", "retrying", "undelivered", "rate_limited"):
            h = hint_for(ch["error_code"], ch.get("error", ""), ch["provider"])
            if h:
                ch["hint"] = h
        changes.append(ch)
        if args.json:
            return
        line = "  %7.3fs  %-10s" % (t, status)
        if ch["provider"]:
            line += "  provider %s" % ch["provider"]
        if ch.get("provider_ref"):
            line += "  ref %s" % ch["provider_ref"]
        if ch.get("attempts") and status != "sent":
            line += "  attempt %s" % ch["attempts"]
        if ch["error_code"]:
            line += "  error_code %s" % ch["error_code"]
        print(line.rstrip(), flush=True)
        if ch.get("error"):
            print("            error: %s" % mask_text(ch["error"]), flush=True)
        if ch.get("hint"):
            print("            hint: %s" % ch["hint"], flush=True)

    if not args.json:
        print("job %s: %s code for %s, waiting up to %gs" % (job_id, args.purpose, args.to, args.timeout),
              flush=True)
    shown = "queued"
    show("queued", client.status(job_id))
    deadline = t0 + args.timeout
    rec = {}

    def drain(block_ms):
        nonlocal cursor, shown
        got = r.xread({events: cursor}, count=500, block=block_ms)
        for _stream, entries in got or []:
            for eid, f in entries:
                cursor = eid
                if f.get("id") != job_id:
                    continue
                s = f.get("status", "")
                if s in FINAL or s == shown:
                    continue  # finals are shown from the status record
                shown = s
                show(s, client.status(job_id) if s == "retrying" else None, f)

    while True:
        remaining = deadline - time.monotonic()
        drain(max(1, min(250, int(remaining * 1000))) if remaining > 0 else None)
        rec = client.status(job_id)
        s = rec.get("status", "")
        if s in FINAL:
            drain(None)
            show(s, rec)
            break
        if s and s != shown and s != "queued":
            shown = s
            show(s, rec)
        if time.monotonic() >= deadline:
            break

    final = rec.get("status", "")
    ok = final in ("sent", "delivered")
    if final not in FINAL:
        if final in ("", "queued"):
            msg = ("job %s is still queued after %gs: no daemon picked it up; is otpd running with "
                   "the same REDIS_URL and OTPD_PREFIX? (see `otpctl status`)" % (job_id, args.timeout))
        else:
            msg = "job %s is still %s after %gs" % (job_id, final, args.timeout)
        warn(msg)
    if args.json:
        emit_json({"job_id": job_id, "to": mask_phone(args.to), "purpose": args.purpose,
                   "ok": ok, "status": final or None, "changes": changes,
                   "record": {k: v for k, v in rec.items()}})
    return 0 if ok else 1


# --------------------------------------------------------------- check

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
        ck.add("redis", "FAIL", "%s: %s" % (redact_url(cfg["REDIS_URL"]), e),
               "check the password in REDIS_URL")
        return
    except redis.RedisError as e:
        ck.add("redis", "FAIL", "cannot reach %s: %s" % (redact_url(cfg["REDIS_URL"]), e),
               "is redis-server running and REDIS_URL right?")
        return
    parts = tuple(_int(x, 0) for x in (ver.split(".") + ["0", "0"])[:2])
    if parts < (6, 2):
        ck.add("redis", "FAIL", "%s answers but is Redis %s" % (redact_url(cfg["REDIS_URL"]), ver),
               "otpd needs Redis 6.2 or later (XAUTOCLAIM)")
    else:
        ck.add("redis", "ok", "%s is reachable (Redis %s)" % (redact_url(cfg["REDIS_URL"]), ver))


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
        if _E164.fullmatch(phone):
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


# --------------------------------------------------------------- dead letters

def _dead_entry(eid, f, now):
    raw = f.get("job", "")
    at = _int(f.get("at_ms"), id_ms(eid))
    return {"id": eid, "age_ms": now - at if at is not None else None, "at_ms": at,
            "reason": mask_text(f.get("reason", "")), "stream_id": f.get("stream_id", ""),
            "payload": mask_payload(raw), "payload_bytes": len(raw.encode()),
            "payload_cut": len(raw.encode()) >= DEAD_PAYLOAD_CAP}


def cmd_dead_list(cfg, args):
    r = connect(cfg)
    key = cfg["OTPD_PREFIX"] + "dead"
    now = redis_now_ms(r)
    total = r.xlen(key)
    entries = [_dead_entry(eid, f, now) for eid, f in r.xrevrange(key, count=args.limit)]
    if args.json:
        emit_json({"total": total, "entries": entries})
        return 0
    print("%d dead letter(s) in %s%s" % (total, key,
          ", newest %d shown" % len(entries) if total > len(entries) else ", newest first"))
    if entries:
        print(table([(e["id"], fmt_age(e["age_ms"]), e["reason"],
                      truncate(e["payload"], 80)) for e in entries],
                    ("ID", "AGE", "REASON", "PAYLOAD (numbers masked)")))
    return 0


def _job_id_of(body):
    """The job's id if the payload is a JSON object with a valid one, else None
    (the daemon then names the job after its new stream entry)."""
    try:
        obj = json.loads(body)
    except (ValueError, RecursionError):
        return None
    jid = obj.get("id") if isinstance(obj, dict) else None
    return jid if isinstance(jid, str) and _JOB_ID.fullmatch(jid) else None


def _requeue_one(r, cfg, dead_id, payload=None, retries=20):
    """Move one dead letter back to the job stream.

    XADD to {p}jobs and XDEL from {p}dead run in one MULTI, under WATCH so
    that two operators cannot both requeue the same entry.  If the job has
    an id whose status record says `rejected` (written when it went to the
    dead letters), the same MULTI sets it back to `queued`: the daemon
    acknowledges a job whose id already has a final status without sending
    it, so without the reset a requeue would silently do nothing.  Any other
    existing status for the id is refused for the same reason.
    """
    p = cfg["OTPD_PREFIX"]
    dead, jobs = p + "dead", p + "jobs"
    for _ in range(retries):
        with r.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(dead)
                found = pipe.xrange(dead, min=dead_id, max=dead_id, count=1)
                if not found:
                    raise Failure("no dead letter %s in %s" % (dead_id, dead))
                raw = found[0][1].get("job", "")
                if payload is not None:
                    body = payload
                elif not raw:
                    raise Failure("dead letter %s has no job payload; pass one with --payload" % dead_id)
                elif len(raw.encode()) >= DEAD_PAYLOAD_CAP:
                    raise Failure("dead letter %s holds only the first %d bytes of its job; "
                                  "pass the whole job with --payload" % (dead_id, DEAD_PAYLOAD_CAP))
                else:
                    body = raw
                jid = _job_id_of(body)
                reset = False
                if jid is not None:
                    skey = p + "job:" + jid
                    pipe.watch(skey)
                    status = pipe.hget(skey, "status")
                    if status == "rejected":
                        reset = True
                    elif status:
                        raise Failure(
                            "dead letter %s: job id %s is already %s, so the daemon would not send it "
                            "again; give the job a new id with --payload" % (dead_id, jid, status))
                pipe.multi()
                pipe.xadd(jobs, {"job": body})
                pipe.xdel(dead, dead_id)
                if reset:
                    pipe.hset(skey, mapping={"status": "queued", "updated_ms": int(time.time() * 1000)})
                    pipe.hdel(skey, "error", "error_code", "stream_id")
                new_id = pipe.execute()[0]
                return {"dead_id": dead_id, "job_stream_id": new_id, "job_id": jid,
                        "status_reset": reset}
            except redis.WatchError:
                continue  # the daemon added a dead letter meanwhile; read again
    raise Failure("dead letter %s: %s kept changing; try again" % (dead_id, dead))


_STREAM_ID = re.compile(r"[0-9]+(-[0-9]+)?")


def cmd_dead_requeue(cfg, args):
    if args.all and args.ids:
        raise UsageError("give dead-letter ids or --all, not both")
    if not args.all and not args.ids:
        raise UsageError("give one or more dead-letter ids, or --all")
    payload = None
    if args.payload is not None:
        if args.all or len(args.ids) != 1:
            raise UsageError("--payload replaces the job of exactly one dead letter")
        try:
            obj = json.loads(args.payload)
        except ValueError as e:
            raise UsageError("--payload is not valid JSON: %s" % e) from None
        if not isinstance(obj, dict):
            raise UsageError("--payload must be a JSON object (a job, docs/protocol.md section 1)")
        payload = args.payload
    for i in args.ids:
        if not _STREAM_ID.fullmatch(i):
            raise UsageError("%r is not a stream id like 1712345678901-0" % i)
    r = connect(cfg)
    dead = cfg["OTPD_PREFIX"] + "dead"
    ids = args.ids
    if args.all:
        ids = [eid for eid, _f in r.xrange(dead)]
    done, errors = [], []
    for i in ids:
        try:
            res = _requeue_one(r, cfg, i, payload)
            done.append(res)
            if not args.json:
                print("%s -> %sjobs %s%s" % (
                    i, cfg["OTPD_PREFIX"], res["job_stream_id"],
                    "  (job %s: status rejected -> queued)" % res["job_id"] if res["status_reset"]
                    else "  (job %s)" % res["job_id"] if res["job_id"] else ""))
        except Failure as e:
            errors.append({"dead_id": i, "error": str(e)})
            warn(str(e))
    if args.json:
        emit_json({"requeued": done, "errors": errors})
    elif not ids:
        print("no dead letters")
    else:
        print("%d requeued, %d failed" % (len(done), len(errors)))
    return 1 if errors else 0


def cmd_dead_purge(cfg, args):
    modes = sum(bool(x) for x in (args.all, args.older_than, args.ids))
    if modes != 1:
        raise UsageError("give exactly one of --older-than DURATION, --all, or dead-letter ids")
    r = connect(cfg)
    dead = cfg["OTPD_PREFIX"] + "dead"
    before = r.xlen(dead)
    if args.all:
        removed = r.xtrim(dead, maxlen=0, approximate=False)
        what = "all"
    elif args.older_than:
        try:
            secs = parse_duration(args.older_than)
        except ValueError as e:
            raise UsageError(str(e)) from None
        cutoff = redis_now_ms(r) - secs * 1000
        removed = r.xtrim(dead, minid="%d-0" % max(cutoff, 0), approximate=False)
        what = "older than %s" % args.older_than
    else:
        for i in args.ids:
            if not _STREAM_ID.fullmatch(i):
                raise UsageError("%r is not a stream id like 1712345678901-0" % i)
        removed = r.xdel(dead, *args.ids)
        what = "%d id(s)" % len(args.ids)
    left = r.xlen(dead)
    if args.json:
        emit_json({"removed": removed, "before": before, "left": left})
    else:
        print("purged %d dead letter(s) (%s); %d left" % (removed, what, left))
    return 0


# --------------------------------------------------------------- opt-outs

def cmd_optout(cfg, args):
    """Numbers that replied STOP (Twilio 21610): otpd skips them until removed."""
    r = connect(cfg)
    key = cfg["OTPD_PREFIX"] + "optout"
    if args.optout_command == "list":
        rows = sorted(((k, int(v)) for k, v in r.hgetall(key).items()),
                      key=lambda kv: kv[1])
        if args.json:
            emit_json([{"to": mask_phone(k), "since_ms": v} for k, v in rows])
        elif not rows:
            print("no opted-out numbers")
        else:
            for k, v in rows:
                print("%-16s since %s" % (mask_phone(k),
                                           time.strftime("%Y-%m-%d %H:%M:%S",
                                                         time.gmtime(v / 1000))))
        return 0
    removed = r.hdel(key, *args.numbers)
    if args.json:
        emit_json({"removed": removed})
    else:
        print("removed %d of %d number(s) from the opt-out list" % (removed, len(args.numbers)))
    return 0 if removed == len(args.numbers) else 1


# --------------------------------------------------------------- main

def build_parser():
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-c", "--config", metavar="FILE", default=argparse.SUPPRESS,
                        help=".env file to read (default: $OTPD_CONFIG); environment variables win")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="machine-readable output on stdout")
    ap = argparse.ArgumentParser(
        prog="otpctl", parents=[common],
        description="Operate otpd, the SMS one-time-code daemon, through its Redis contract.",
        epilog="Exit status: 0 success, 1 failure, 2 usage or configuration-file error.")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("status", parents=[common], help="queue, instances, totals and recent errors")
    p.add_argument("--errors", type=int, default=5, metavar="N", help="recent error events to show (5)")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("send", parents=[common], help="send a test code and follow its status")
    p.add_argument("to", help="recipient in E.164, e.g. +14155552671")
    p.add_argument("--purpose", default="login", help="purpose (default login)")
    p.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS",
                   help="how long to wait for a final status (30)")
    p.add_argument("--provider", choices=("twilio", "msg91", "console"), help="pin one provider")
    p.add_argument("--ttl", type=int, metavar="SECONDS", help="code lifetime, 30..3600")
    p.set_defaults(func=cmd_send)

    p = sub.add_parser("check", parents=[common],
                       help="validate Redis, the hash key and provider credentials (sends nothing)")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("dead", parents=[common], help="list, requeue or purge dead letters")
    dsub = p.add_subparsers(dest="dead_command", metavar="ACTION", required=True)
    q = dsub.add_parser("list", parents=[common], help="newest dead letters")
    q.add_argument("--limit", type=int, default=20, metavar="N", help="how many (20)")
    q.set_defaults(func=cmd_dead_list)
    q = dsub.add_parser("requeue", parents=[common], help="put dead letters back on the job stream")
    q.add_argument("ids", nargs="*", metavar="ID", help="dead-letter stream ids")
    q.add_argument("--all", action="store_true", help="every dead letter")
    q.add_argument("--payload", metavar="JSON", help="replacement job for a single ID")
    q.set_defaults(func=cmd_dead_requeue)
    q = dsub.add_parser("purge", parents=[common], help="delete dead letters")
    q.add_argument("ids", nargs="*", metavar="ID", help="dead-letter stream ids")
    q.add_argument("--older-than", metavar="DURATION", help="e.g. 7d, 12h, 30m, 90s")
    q.add_argument("--all", action="store_true", help="every dead letter")
    q.set_defaults(func=cmd_dead_purge)

    p = sub.add_parser("optout", parents=[common], help="numbers that replied STOP")
    osub = p.add_subparsers(dest="optout_command", metavar="ACTION", required=True)
    q = osub.add_parser("list", parents=[common], help="opted-out numbers, masked")
    q.set_defaults(func=cmd_optout)
    q = osub.add_parser("remove", parents=[common],
                        help="let codes go to these numbers again (after they texted START)")
    q.add_argument("numbers", nargs="+", metavar="NUMBER", help="E.164 number")
    q.set_defaults(func=cmd_optout)
    return ap


def main(argv=None):
    ap = build_parser()
    args = ap.parse_args(argv)
    args.json = getattr(args, "json", False)
    path = getattr(args, "config", None) or os.environ.get("OTPD_CONFIG") or None
    cfg = None
    try:
        cfg, args.env_keys = load_config(path)
        args.config_path = path
        return args.func(cfg, args)
    except UsageError as e:
        sys.stderr.write("otpctl: %s\n" % e)
        if args.json:
            emit_json({"ok": False, "error": str(e)})
        return 2
    except Failure as e:
        warn(str(e))
        if args.json:
            emit_json({"ok": False, "error": str(e)})
        return 1
    except redis.RedisError as e:
        msg = "Redis at %s: %s" % (redact_url(cfg["REDIS_URL"]) if cfg else "?", e)
        warn(msg)
        if args.json:
            emit_json({"ok": False, "error": msg})
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

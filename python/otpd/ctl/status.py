"""`otpctl status`: is a daemon alive, is work piling up, what failed recently.

Reads the queue (XLEN, XINFO GROUPS, XPENDING), the daemons' heartbeat
hashes, the totals in {p}stats, recent errors and the last hour's delivery
receipts from {p}events, the SMS-pumping rules and today's spend
({p}fraud:rules, {p}spend:day:*), and active alerts; writes nothing.
"""
import redis

from .. import protocol as P
from .common import (as_int, connect, emit_json, fmt_age, id_ms, instance_pattern, redis_where,
                     redis_now_ms, table, warn)
from .fraud import gather_status_fraud, render_status_fraud
from .hints import TWILIO_ERRORS

STALE_MS = 11000                 # heartbeat period is 5 s; key TTL 15 s
ERROR_STATUSES = (P.FAILED, P.EXPIRED, P.REJECTED, P.RETRYING)
# An alert key after its "alert:", up to the calling code: "country_budget:".
_BUDGET_ALERT = P.ALERT_COUNTRY_BUDGET.format(cc="")[len(P.ALERT):]
HEARTBEAT_FIELDS = ("version", "pid", "host", "consumer", "started_ms", "updated_ms",
                    "inflight", "claimed", "sent", "failed", "expired", "rejected",
                    "retries", "loop_lag_ms", "redis", "providers")
# How `status` shows an alert key; those of the pumping defence are set by
# python/otpd/lua/fraud.lua and spend.lua.
_ALERT_TEXT = ((_BUDGET_ALERT, "country budget exceeded: +"),
               ("pumping:", "suspected SMS pumping, paused: +"),
               ("spend_budget:*", "daily spend budget reached (OTPD_DAILY_SPEND_BUDGET)"),
               ("country_spend_budget:", "country daily spend budget reached: +"))


def alert_text(a):
    for start, text in _ALERT_TEXT:
        if a.startswith(start):
            return text + a[len(start):]
    return a


def gather_status(r, cfg, n_errors=5, scan_limit=5000):
    p, g = cfg["OTPD_PREFIX"], cfg["OTPD_GROUP"]
    now = redis_now_ms(r)
    st = {"redis": redis_where(cfg), "prefix": p, "group": g, "now_ms": now}

    jobs = p + P.JOBS
    st["backlog"] = r.xlen(jobs)
    st["dead"] = r.xlen(p + P.DEAD)

    grp = {"exists": False, "lag": None, "entries_read": None, "last_delivered_id": None,
           "consumers": None}
    try:
        for gi in r.xinfo_groups(jobs):
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
        s = r.xpending(jobs, g)
        pend["count"] = s.get("pending") or 0
        for c in s.get("consumers") or []:
            pend["by_consumer"][c["name"]] = as_int(c["pending"], 0)
        if pend["count"] and s.get("min"):
            pend["oldest_id"] = s["min"]
            born = id_ms(s["min"])
            pend["oldest_age_ms"] = now - born if born is not None else None
            ext = r.xpending_range(jobs, g, min=s["min"], max=s["min"], count=1)
            if ext:
                pend["oldest_idle_ms"] = ext[0].get("time_since_delivered")
                pend["oldest_consumer"] = ext[0].get("consumer")
                pend["oldest_deliveries"] = ext[0].get("times_delivered")
    st["pending"] = pend

    instances = []
    for key in sorted(set(r.scan_iter(match=instance_pattern(p), count=200))):
        if r.type(key) != "hash":
            continue
        h = r.hgetall(key)
        if not h:
            continue  # expired between SCAN and HGETALL
        inst = {"key": key, "consumer": h.get("consumer") or key[len(p) + len(P.INSTANCE_PREFIX):]}
        inst.update(h)
        inst["ttl_ms"] = r.pttl(key)
        upd, started = as_int(h.get("updated_ms")), as_int(h.get("started_ms"))
        inst["seen_ago_ms"] = now - upd if upd is not None else None
        inst["uptime_ms"] = now - started if started is not None else None
        # Refreshed every 5 s: two missed beats mean the process is probably gone
        # and the key is only waiting out its TTL.
        inst["stale"] = inst["seen_ago_ms"] is not None and inst["seen_ago_ms"] > STALE_MS
        instances.append(inst)
    st["instances"] = instances
    st["alive"] = bool(instances)

    stats = r.hgetall(p + P.STATS)
    st["stats"] = {k: as_int(v, v) for k, v in sorted(stats.items())}

    errors, scanned, hi = [], 0, "+"
    while len(errors) < n_errors and scanned < scan_limit:
        batch = r.xrevrange(p + P.EVENTS, max=hi, min="-", count=200)
        if not batch:
            break
        for eid, f in batch:
            scanned += 1
            if f.get("status") in ERROR_STATUSES:
                ts = as_int(f.get("ts_ms"), id_ms(eid))
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
    st["fraud"] = gather_status_fraud(r, p, now)
    st["alerts"] = sorted(k[len(p) + len(P.ALERT):]
                          for k in r.scan_iter(match=p + P.ALERT + "*", count=200))
    return st


# Carrier codes seen in delivery receipts, as the daemon explains them:
# Twilio's from the shared table, MSG91's in short.
CARRIER_HINTS = {
    **{code: e.hint for code, e in TWILIO_ERRORS.items() if e.cls == "carrier"},
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
        batch = r.xrevrange(p + P.EVENTS, max=hi, min=lo, count=1000)
        if not batch:
            break
        for _eid, f in batch:
            seen += 1
            status, prov = f.get("status"), f.get("provider") or "-"
            if status not in (P.SENT, P.DELIVERED, P.UNDELIVERED):
                continue
            c = per.setdefault(prov, {P.SENT: 0, P.DELIVERED: 0, P.UNDELIVERED: 0})
            c[status] += 1
            if status == P.UNDELIVERED:
                code = f.get("error_code") or "-"
                reasons[code] = reasons.get(code, 0) + 1
        hi = "(" + batch[-1][0]
    for c in per.values():
        c["delivery_rate"] = round(c[P.DELIVERED] / c[P.SENT], 3) if c[P.SENT] else None
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
    rows = [("backlog", st["backlog"], "XLEN %s" % (st["prefix"] + P.JOBS))]
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
    rows.append(("dead letters", st["dead"],
                 "XLEN %s; see `otpctl dead list`" % (st["prefix"] + P.DEAD)))
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
    out.append("totals (%s)" % (st["prefix"] + P.STATS))
    out.extend(_stats_lines(st["stats"]))
    out.append("")
    out.append("last %d errors (%s, newest first)"
               % (len(st["recent_errors"]), st["prefix"] + P.EVENTS))
    if st["recent_errors"]:
        out.append(table([(e["id"], e["status"], e["provider"] or "-", e["error_code"] or "-",
                           fmt_age(e["age_ms"])) for e in st["recent_errors"]],
                         ("JOB", "STATUS", "PROVIDER", "ERROR_CODE", "AGE")))
    else:
        out.append("  none in the last %d events" % st["events_scanned"])
    d = st.get("delivery") or {}
    out.append("")
    out.append("delivery, last hour (receipts in %s)" % (st["prefix"] + P.EVENTS))
    if d.get("by_provider"):
        out.append(table([(prov, c[P.SENT], c[P.DELIVERED], c[P.UNDELIVERED],
                           "-" if c["delivery_rate"] is None else "%.1f%%" % (100 * c["delivery_rate"]))
                          for prov, c in sorted(d["by_provider"].items())],
                         ("PROVIDER", "SENT", "DELIVERED", "UNDELIVERED", "RATE")))
        for t in d.get("top_undelivered") or []:
            out.append("  undelivered %-8s x%-5d %s" % (t["error_code"], t["count"], t["reason"]))
    else:
        out.append("  nothing sent in the last hour")
    if st.get("fraud"):
        out.append("")
        out.append(render_status_fraud(st["fraud"]))
    if st.get("alerts"):
        out.append("")
        out.append("ALERTS (active)")
        for a in st["alerts"]:
            out.append("  " + alert_text(a))
    return "\n".join(out)


def cmd_status(cfg, args):
    r = connect(cfg)
    st = gather_status(r, cfg, n_errors=args.errors)
    if args.json:
        emit_json(st)
    else:
        print(render_status(st))
    if not st["alive"]:
        warn("no otpd instance is alive (no %s* heartbeat in Redis)"
             % (cfg["OTPD_PREFIX"] + P.INSTANCE_PREFIX))
        return 1
    return 0

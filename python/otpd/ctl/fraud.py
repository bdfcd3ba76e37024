"""`otpctl fraud list|allow|block|clear`: otpd's SMS-pumping defence, seen and overridden.

The daemon counts the codes of every number prefix and pauses a prefix
whose codes jump while few of them are typed in (python/otpd/lua/fraud.lua,
docs/fraud.md).  Rules live in the hash {p}fraud:rules, field = the
prefix's digits, value = kind|since_ms|until_ms|detail: `paused` (written
by the daemon), `allow` and `block` (written here); until_ms 0 = until
cleared, a past until_ms = lapsed.  The longest allow/block rule on a
number decides; an allow anywhere on it beats any pause.

`list` runs the report the daemon's metrics read, python/otpd/lua/fraud_stats.lua,
so both show the same figures.  Prefixes are shown; whole numbers never are
(a note given with --note is masked before it is stored).
"""
import json
import re
import time

from .. import protocol
from ..client import _lua
from .common import (Failure, UsageError, as_int, connect, emit_json, mask_text, redis_now_ms,
                     table)
from .dead import parse_duration

FRAUD_STATS_LUA = _lua("fraud_stats")

RULES, CODES, OK = protocol.FRAUD_RULES, protocol.FRAUD_CODES, protocol.FRAUD_OK
ALERT_PUMPING, LIMITS, SPEND_DAY = protocol.ALERT_PUMPING, protocol.LIMITS, protocol.SPEND_DAY
# The settings the daemon publishes in {p}limits, and otpd's defaults when
# no daemon has published them (yet).
LIMIT_FIELDS = ("fraud_prefix_digits", "fraud_window_ms", "fraud_settle_ms", "fraud_baseline_ms",
                "price_currency", "spend_budget_micro")
DEFAULT_WINDOW_MS, DEFAULT_SETTLE_MS, DEFAULT_BASELINE_MS = 3600000, 60000, 604800000
KINDS = ("paused", "block", "allow")

# A number prefix as typed: optional +, 1 to 15 digits, no leading 0.
_PREFIX = re.compile(r"\+?([1-9][0-9]{0,14})")
# A rule's value, as fraud.lua reads it: '^(%a+)|(%d*)|(%d*)|(.*)$'.
_RULE = re.compile(r"([A-Za-z]+)\|([0-9]*)\|([0-9]*)\|(.*)", re.S)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def parse_prefix(text):
    """'+447624' or '447624' -> '447624'; UsageError for anything else."""
    m = _PREFIX.fullmatch(text.strip())
    if not m:
        raise UsageError("%r is not a number prefix: + and 1 to 15 digits, not starting with 0 "
                         "(e.g. +447624)" % text)
    return m.group(1)


def parse_rule(prefix, value, now):
    """One {p}fraud:rules field as a dict (the shape fraud_stats.lua returns), or None."""
    m = _RULE.fullmatch(value or "")
    if not m:
        return None
    till = as_int(m.group(3), 0)
    return {"prefix": prefix, "kind": m.group(1), "since_ms": as_int(m.group(2), 0),
            "until_ms": till, "detail": m.group(4), "live": till == 0 or till > now}


def _glob(s):
    """s as a literal in a SCAN MATCH pattern."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", s)


def fmt_utc(ms):
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms / 1000.0))


def fmt_until(ms):
    """For the UNTIL (UTC) column."""
    return "until cleared" if not ms else fmt_utc(ms)


def rule_line(rule):
    """'paused since 2025-01-02 10:00:00, until 2025-01-02 22:00:00 UTC: detail'."""
    return "%s%s since %s, %s: %s" % (
        rule["kind"], "" if rule["live"] else " (lapsed)",
        fmt_utc(rule["since_ms"]) if rule["since_ms"] else "-",
        "until cleared" if not rule["until_ms"] else "until %s UTC" % fmt_utc(rule["until_ms"]),
        rule["detail"])


def fmt_money(micro):
    """Micro-units as the daemon prints them (spend_format): 2 to 6 decimals."""
    micro = int(round(micro or 0))
    whole, frac = divmod(abs(micro), 1000000)
    decimals = ("%06d" % frac).rstrip("0").ljust(2, "0")
    return "%s%d.%s" % ("-" if micro < 0 else "", whole, decimals)


def fmt_rate(num, den):
    return "-" if not den else "%.1f%%" % (100.0 * num / den)


def fmt_cc(cc):
    return "+" + cc if cc and cc.isdigit() else (cc or "-")


def read_settings(r, p):
    """The model's settings from {p}limits (published by the daemon every 10 s)."""
    vals = dict(zip(LIMIT_FIELDS, r.hmget(p + LIMITS, LIMIT_FIELDS)))
    budget = as_int(vals["spend_budget_micro"])
    return {"prefix_digits": as_int(vals["fraud_prefix_digits"]),
            "window_ms": as_int(vals["fraud_window_ms"]) or DEFAULT_WINDOW_MS,
            "settle_ms": as_int(vals["fraud_settle_ms"], DEFAULT_SETTLE_MS),
            "baseline_ms": as_int(vals["fraud_baseline_ms"]) or DEFAULT_BASELINE_MS,
            "currency": vals["price_currency"] or "",
            "budget_micro": budget if budget is not None and budget >= 0 else None}


def utc_day(now):
    return time.strftime("%Y-%m-%d", time.gmtime(now / 1000.0))


def utc_hour(now):
    return time.strftime("%Y-%m-%dT%H", time.gmtime(now / 1000.0))


def effective_rule(live, px):
    """The live rule that decides for every number of prefix px, as the daemon
    resolves it: the longest allow/block at px or shorter; else the longest
    pause.  live: {prefix: rule}."""
    op = paused = None
    for k in range(len(px), 0, -1):
        rule = live.get(px[:k])
        if rule is None:
            continue
        if op is None and rule["kind"] in ("allow", "block"):
            op = rule
        if paused is None and rule["kind"] == "paused":
            paused = rule
    return op or paused


def _as_list(v):
    # cjson encodes an empty Lua table as {}.
    return v if isinstance(v, list) else []


def _ordered(d, keys):
    out = {k: d[k] for k in keys if k in d}
    out.update((k, v) for k, v in d.items() if k not in out)
    return out


def _spend_map(v):
    """{calling code or *: micro-units}, the total first."""
    items = v.items() if isinstance(v, dict) else ()
    return {k: int(round(n)) if isinstance(n, (int, float)) else as_int(n, 0)
            for k, n in sorted(items, key=lambda kv: (kv[0] != "*", kv[0]))}


def gather_fraud(r, cfg, top=20, include_lapsed=False):
    """The report of fraud_stats.lua, with the settings it ran with."""
    p = cfg["OTPD_PREFIX"]
    now = redis_now_ms(r)
    s = read_settings(r, p)
    day, hour = utc_day(now), utc_hour(now)
    script = r.register_script(FRAUD_STATS_LUA)
    rep = json.loads(script(keys=[p + RULES],
                            args=[p, now, s["window_ms"], s["settle_ms"], s["baseline_ms"], top,
                                  day, hour]))
    # cjson's key order is arbitrary: the fields in a fixed order, for people reading --json.
    rep["rules"] = [_ordered(x, ("prefix", "kind", "since_ms", "until_ms", "detail", "live"))
                    for x in _as_list(rep.get("rules"))]
    rep["prefixes"] = [_ordered(x, ("prefix", "codes", "verified", "judged", "baseline"))
                       for x in _as_list(rep.get("prefixes"))]
    rep["conversion"] = [_ordered(x, ("channel", "cc", "codes", "sends", "verified"))
                         for x in _as_list(rep.get("conversion"))]
    rules = sorted(rep["rules"],
                   key=lambda x: (not x["live"], KINDS.index(x["kind"]) if x["kind"] in KINDS
                                  else len(KINDS), x["prefix"]))
    for rule in rules:
        rule["detail"] = mask_text(rule.get("detail") or "")
    live = {x["prefix"]: x for x in rules if x["live"]}
    shown = [x for x in rules if include_lapsed or x["live"]]
    for rule in shown:
        if rule["kind"] == "paused" and rule["live"]:
            eff = effective_rule(live, rule["prefix"])
            if eff is not rule:
                rule["overridden_by"] = {"kind": eff["kind"], "prefix": eff["prefix"]}
    ruled = {x["prefix"] for x in shown}
    prefixes = []
    for row in _as_list(rep.get("prefixes")):
        # Rows the script adds for a rule: only those of the rules shown.
        if not row.get("codes") and row["prefix"] not in ruled:
            continue
        eff = effective_rule(live, row["prefix"])
        row["rule"] = None if eff is None else {"kind": eff["kind"], "prefix": eff["prefix"],
                                                "until_ms": eff["until_ms"]}
        prefixes.append(row)
    return {"prefix": p, "now_ms": now, "day": day, "hour": hour,
            "window_ms": rep.get("window_ms", s["window_ms"]),
            "settle_ms": rep.get("settle_ms", s["settle_ms"]), "baseline_ms": s["baseline_ms"],
            "prefix_digits": s["prefix_digits"], "currency": s["currency"],
            "budget_micro": s["budget_micro"],
            "rules": shown, "lapsed_hidden": len(rules) - len(shown),
            "prefixes": prefixes,
            "conversion": sorted(_as_list(rep.get("conversion")),
                                 key=lambda c: (-c.get("codes", 0), c.get("channel", ""),
                                                c.get("cc", ""))),
            "spend": {"day": _spend_map((rep.get("spend") or {}).get("day")),
                      "hour": _spend_map((rep.get("spend") or {}).get("hour"))}}


def _rule_text(rule, px=None):
    """'paused until 2025-01-02 22:00:00', 'allow +44', for the prefixes table."""
    out = rule["kind"]
    if px is not None and rule["prefix"] != px:
        out += " +" + rule["prefix"]
    if rule.get("until_ms"):
        out += " until " + fmt_utc(rule["until_ms"])
    return out


def render_fraud(rep):
    p, cur = rep["prefix"], rep["currency"]
    mins = rep["window_ms"] // 60000
    out = ["SMS pumping  (prefix %s, window %d min, settle %ds, prefix digits %s)"
           % (p, mins, rep["settle_ms"] // 1000,
              "?" if rep["prefix_digits"] is None else rep["prefix_digits"] or "0 (model off)")]
    out.append("")
    rules = rep["rules"]
    live = sum(1 for x in rules if x["live"])
    head = "rules (%s): %d live" % (p + RULES, live)
    if rep["lapsed_hidden"]:
        head += ", %d lapsed not shown (--all)" % rep["lapsed_hidden"]
    elif live != len(rules):
        head += ", %d lapsed" % (len(rules) - live)
    out.append(head)
    if rules:
        rows = []
        for x in rules:
            detail = x["detail"]
            if x.get("overridden_by"):
                detail += "  [overridden by %s +%s]" % (x["overridden_by"]["kind"],
                                                        x["overridden_by"]["prefix"])
            rows.append((x["kind"] if x["live"] else x["kind"] + " (lapsed)", "+" + x["prefix"],
                         fmt_utc(x["since_ms"]) if x["since_ms"] else "-",
                         fmt_until(x["until_ms"]), detail))
        out.append(table(rows, ("KIND", "PREFIX", "SINCE (UTC)", "UNTIL (UTC)", "DETAIL")))
    else:
        out.append("  none: every prefix may be texted")
    out.append("")
    out.append("busiest prefixes, last %d min (codes older than %ds are judged)"
               % (mins, rep["settle_ms"] // 1000))
    if rep["prefixes"]:
        out.append(table([(("+" + x["prefix"]), x["codes"], x["verified"], x["judged"],
                           fmt_rate(x["verified"], x["judged"]), "%.2f" % (x.get("baseline") or 0),
                           _rule_text(x["rule"], x["prefix"]) if x.get("rule") else "")
                          for x in rep["prefixes"]],
                         ("PREFIX", "CODES", "VERIFIED", "JUDGED", "CONVERSION", "BASELINE",
                          "RULE")))
    else:
        out.append("  no codes in the window")
    out.append("")
    out.append("conversion by channel and country, last %d min" % mins)
    if rep["conversion"]:
        out.append(table([(c.get("channel") or "-", fmt_cc(c.get("cc")), c.get("codes", 0),
                           c.get("sends", 0), c.get("verified", 0),
                           fmt_rate(c.get("verified", 0), c.get("codes", 0)))
                          for c in rep["conversion"]],
                         ("CHANNEL", "COUNTRY", "CODES", "SENDS", "VERIFIED", "RATE")))
    else:
        out.append("  no codes in the window")
    out.append("")
    day, hour = rep["spend"]["day"], rep["spend"]["hour"]
    out.append("spend%s (UTC day %s, hour %s:00)" % (" in " + cur if cur else "", rep["day"],
                                                     rep["hour"][-2:]))
    ccs = sorted((set(day) | set(hour)) - {"*"}, key=lambda c: (-day.get(c, 0), c))
    rows = [(fmt_cc(c), fmt_money(day.get(c, 0)), fmt_money(hour.get(c, 0))) for c in ccs]
    rows.append(("total", fmt_money(day.get("*", 0)), fmt_money(hour.get("*", 0))))
    out.append(table(rows, ("COUNTRY", "TODAY", "THIS HOUR")))
    out.append("  " + budget_text(day.get("*", 0), rep["budget_micro"], cur))
    return "\n".join(out)


def budget_text(spent, budget, cur):
    unit = " " + cur if cur else ""
    if budget is None:
        return "daily budget: none (OTPD_DAILY_SPEND_BUDGET)"
    return "daily budget: %s%s, %s used" % (fmt_money(budget), unit, fmt_rate(spent, budget))


def cmd_fraud_list(cfg, args):
    top = getattr(args, "top", 20)
    if top < 0:
        raise UsageError("--top must be 0 or more")
    r = connect(cfg)
    rep = gather_fraud(r, cfg, top=top, include_lapsed=getattr(args, "all", False))
    if args.json:
        emit_json(rep)
    else:
        print(render_fraud(rep))
    return 0


def _note(text):
    """An operator's note as stored: one line, numbers masked."""
    return mask_text(_CONTROL.sub(" ", text or "").strip())


def _set_rule(cfg, args, kind):
    px = parse_prefix(args.prefix)
    secs = None
    if args.for_ is not None:
        try:
            secs = parse_duration(args.for_)
        except ValueError as e:
            raise UsageError("--for: %s" % e) from None
        if secs <= 0:
            raise UsageError("--for must be longer than 0s")
    note = _note(args.note)
    detail = "by otpctl" + (": " + note if note else "")
    r = connect(cfg)
    p = cfg["OTPD_PREFIX"]
    now = redis_now_ms(r)
    until = now + secs * 1000 if secs else 0
    old = r.hget(p + RULES, px)
    r.hset(p + RULES, px, "%s|%d|%d|%s" % (kind, now, until, detail))
    replaced = parse_rule(px, old, now) if old is not None else None
    if replaced:
        replaced["detail"] = mask_text(replaced["detail"])
    alerts = []
    if kind == "allow":
        # The pause alerts this allow answers: the prefix's own and any longer one's.
        keys = sorted(set(r.scan_iter(match=_glob(p + ALERT_PUMPING.format(px=px)) + "*",
                                      count=500)))
        keys = [k for k in keys if k[len(p + ALERT_PUMPING.format(px="")):].isdigit()]
        if keys:
            r.delete(*keys)
        alerts = [k[len(p):] for k in keys]
    res = {"ok": True, "prefix": "+" + px, "kind": kind, "since_ms": now, "until_ms": until,
           "detail": detail, "replaced": replaced, "alerts_removed": alerts}
    if args.json:
        emit_json(res)
        return 0
    verb = "allowed" if kind == "allow" else "blocked"
    print("numbers starting +%s are %s %s" % (
        px, verb, "until cleared" if not until else "until %s UTC" % fmt_utc(until)))
    print("  " + ("an allow beats any automatic pause on these numbers; a block on a longer "
                  "prefix still wins" if kind == "allow" else
                  "an allow on a longer prefix still wins for its numbers"))
    if replaced:
        print("  replaced: " + rule_line(replaced))
    for a in alerts:
        print("  removed alert %s" % (p + a))
    print("  undo: otpctl fraud clear +%s" % px)
    return 0


def cmd_fraud_allow(cfg, args):
    return _set_rule(cfg, args, "allow")


def cmd_fraud_block(cfg, args):
    return _set_rule(cfg, args, "block")


def cmd_fraud_clear(cfg, args):
    px = parse_prefix(args.prefix)
    r = connect(cfg)
    p = cfg["OTPD_PREFIX"]
    now = redis_now_ms(r)
    codes, ok = p + CODES.format(px=px), p + OK.format(px=px)
    alert = p + ALERT_PUMPING.format(px=px)
    with r.pipeline(transaction=True) as pipe:
        pipe.hget(p + RULES, px)
        pipe.zcount(codes, "-inf", "+inf")  # ZCARD, with a command otpd-admin has
        pipe.zcount(ok, "-inf", "+inf")
        pipe.hdel(p + RULES, px)
        pipe.delete(alert)
        pipe.delete(codes, ok)
        old, n_codes, n_ok, _hdel, n_alert, _n_sets = pipe.execute()
    rule = parse_rule(px, old, now) if old is not None else None
    if rule:
        rule["detail"] = mask_text(rule["detail"])
    res = {"ok": True, "prefix": "+" + px, "rule": rule, "rule_raw_removed": old is not None,
           "alert_removed": bool(n_alert), "codes_removed": n_codes, "verified_removed": n_ok}
    if old is None and not n_alert and not n_codes and not n_ok:
        raise Failure("nothing to clear at +%s: no rule, no pumping alert, no counts "
                      "(rules are cleared at exactly the prefix they were set on; see "
                      "`otpctl fraud list --all`)" % px)
    if args.json:
        emit_json(res)
        return 0
    print("cleared +%s:" % px)
    if rule:
        print("  removed rule " + rule_line(rule))
    elif old is not None:
        print("  removed an unreadable rule")
    if n_alert:
        print("  removed alert %s" % alert)
    if n_codes or n_ok:
        print("  reset the counts: %d code(s), %d verified (the model starts fresh here)"
              % (n_codes, n_ok))
    return 0


def gather_status_fraud(r, p, now):
    """The compact view for `otpctl status`: live pauses and blocks, today's spend."""
    rules = [x for x in (parse_rule(k, v, now) for k, v in r.hgetall(p + RULES).items())
             if x is not None and x["live"]]
    counts = {k: sum(1 for x in rules if x["kind"] == k) for k in KINDS}
    pauses = sorted(({"prefix": x["prefix"], "since_ms": x["since_ms"], "until_ms": x["until_ms"],
                      "detail": mask_text(x["detail"])} for x in rules if x["kind"] == "paused"),
                    key=lambda x: x["prefix"])
    s = read_settings(r, p)
    day = utc_day(now)
    spent = as_int(r.hget(p + SPEND_DAY.format(day=day), "*"), 0)
    return {"rules": counts, "pauses": pauses,
            "blocks": sorted("+" + x["prefix"] for x in rules if x["kind"] == "block"),
            "spend_today": {"day": day, "total_micro": spent, "budget_micro": s["budget_micro"],
                            "currency": s["currency"]}}


def render_status_fraud(f):
    out = ["SMS pumping (see `otpctl fraud list`)"]
    c = f["rules"]
    out.append("  rules: %d paused, %d blocked, %d allowed" % (c["paused"], c["block"], c["allow"]))
    for x in f["pauses"]:
        out.append("  PAUSED +%s %s%s" % (
            x["prefix"], "until cleared" if not x["until_ms"] else "until %s UTC"
            % fmt_utc(x["until_ms"]), ": " + x["detail"] if x["detail"] else ""))
    if f["blocks"]:
        out.append("  blocked: %s" % " ".join(f["blocks"]))
    sp = f["spend_today"]
    unit = " " + sp["currency"] if sp["currency"] else ""
    out.append("  spend today (%s UTC): %s%s; %s" % (
        sp["day"], fmt_money(sp["total_micro"]), unit,
        budget_text(sp["total_micro"], sp["budget_micro"], sp["currency"])))
    return "\n".join(out)

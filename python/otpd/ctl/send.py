"""`otpctl send`: queue a real code through the client and follow it to a final status.

Every status change (from {p}events and the job's status record) is shown
as it happens, with a hint for failures.  The number the operator typed is
echoed in text output; --json masks it.
"""
import time

from .. import protocol as P
from ..client import FINAL, OTPClient, SendRefused, mask_to
from .common import Failure, UsageError, connect, emit_json, instance_pattern, mask_text, warn
from .hints import hint_for


def cmd_send(cfg, args):
    r = connect(cfg)
    try:
        client = OTPClient(redis=r, hash_key=cfg["OTPD_HASH_KEY"], prefix=cfg["OTPD_PREFIX"])
    except ValueError as e:
        raise Failure("%s (generate one with `otpd --gen-key`; it must match the daemon's)" % e) from None
    events = cfg["OTPD_PREFIX"] + P.EVENTS
    if not next(iter(r.scan_iter(match=instance_pattern(cfg["OTPD_PREFIX"]), count=1000)), None):
        warn("no otpd instance is alive (no heartbeat); the job will wait in the backlog")
    last = r.xrevrange(events, count=1)
    cursor = last[0][0] if last else "0-0"
    kw = {}
    if args.provider:
        kw["provider"] = args.provider
    if args.ttl is not None:
        kw["ttl"] = args.ttl
    try:
        if "@" in args.to:
            kw["channel"] = "email"
        job_id = client.send(args.to, args.purpose, **kw)
    except ValueError as e:
        raise UsageError(str(e)) from None
    except SendRefused as e:
        # Opted out or over a limit: the daemon would refuse it too; say so, no traceback.
        raise Failure("not sent: %s" % e) from None
    t0 = time.monotonic()
    changes = []

    def show(status, rec=None, ev=None):
        t = time.monotonic() - t0
        rec = rec or {}
        ev = ev or {}
        ch = {"status": status, "t_s": round(t, 3),
              "provider": rec.get("provider") or ev.get("provider") or "",
              "error_code": rec.get("error_code") or ev.get("error_code") or ""}
        if status in FINAL or status == P.RETRYING:
            for k in ("provider_ref", "error", "attempts"):
                if rec.get(k):
                    ch[k] = rec[k]
        if status in (P.FAILED, P.REJECTED, P.EXPIRED, P.RETRYING, P.UNDELIVERED, P.RATE_LIMITED):
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
        if ch.get("attempts") and status != P.SENT:
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
    shown = P.QUEUED
    show(P.QUEUED, client.status(job_id))
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
                show(s, client.status(job_id) if s == P.RETRYING else None, f)

    while True:
        remaining = deadline - time.monotonic()
        drain(max(1, min(250, int(remaining * 1000))) if remaining > 0 else None)
        rec = client.status(job_id)
        s = rec.get("status", "")
        if s in FINAL:
            drain(None)
            show(s, rec)
            break
        if s and s != shown and s != P.QUEUED:
            shown = s
            show(s, rec)
        if time.monotonic() >= deadline:
            break

    final = rec.get("status", "")
    ok = final in (P.SENT, P.DELIVERED)
    if final not in FINAL:
        if final in ("", P.QUEUED):
            msg = ("job %s is still queued after %gs: no daemon picked it up; is otpd running with "
                   "the same REDIS_URL and OTPD_PREFIX? (see `otpctl status`)" % (job_id, args.timeout))
        else:
            msg = "job %s is still %s after %gs" % (job_id, final, args.timeout)
        warn(msg)
    if args.json:
        emit_json({"job_id": job_id, "to": mask_to(args.to), "purpose": args.purpose,
                   "ok": ok, "status": final or None, "changes": changes,
                   "record": {k: v for k, v in rec.items()}})
    return 0 if ok else 1

"""`otpctl dead list|requeue|purge`: the jobs the daemon could not use, in {p}dead.

Payloads are shown with phone numbers masked.  A requeue moves an entry
back to {p}jobs in one MULTI and resets a `rejected` status record so the
daemon sends the job again (docs/protocol.md section 6).
"""
import json
import re
import time

import redis

from .. import protocol as P
from .common import (Failure, UsageError, as_int, connect, emit_json, fmt_age, id_ms, mask_text,
                     redis_now_ms, table, truncate, warn)

DEAD_PAYLOAD_CAP = 4096          # the daemon cuts dead-letter payloads here (protocol section 6)
_JOB_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_STREAM_ID = re.compile(r"[0-9]+(-[0-9]+)?")
_DURATION = re.compile(r"([0-9]+)([smhd]?)")
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


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


def _dead_entry(eid, f, now):
    raw = f.get("job", "")
    at = as_int(f.get("at_ms"), id_ms(eid))
    return {"id": eid, "age_ms": now - at if at is not None else None, "at_ms": at,
            "reason": mask_text(f.get("reason", "")), "stream_id": f.get("stream_id", ""),
            "payload": mask_payload(raw), "payload_bytes": len(raw.encode()),
            "payload_cut": len(raw.encode()) >= DEAD_PAYLOAD_CAP}


def cmd_dead_list(cfg, args):
    r = connect(cfg)
    key = cfg["OTPD_PREFIX"] + P.DEAD
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
    dead, jobs = p + P.DEAD, p + P.JOBS
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
                    skey = P.job_key(p, jid)
                    pipe.watch(skey)
                    status = pipe.hget(skey, "status")
                    if status == P.REJECTED:
                        reset = True
                    elif status:
                        raise Failure(
                            "dead letter %s: job id %s is already %s, so the daemon would not send it "
                            "again; give the job a new id with --payload" % (dead_id, jid, status))
                pipe.multi()
                pipe.xadd(jobs, {"job": body})
                pipe.xdel(dead, dead_id)
                if reset:
                    pipe.hset(skey, mapping={"status": P.QUEUED,
                                             "updated_ms": int(time.time() * 1000)})
                    pipe.hdel(skey, "error", "error_code", "stream_id")
                new_id = pipe.execute()[0]
                return {"dead_id": dead_id, "job_stream_id": new_id, "job_id": jid,
                        "status_reset": reset}
            except redis.WatchError:
                continue  # the daemon added a dead letter meanwhile; read again
    raise Failure("dead letter %s: %s kept changing; try again" % (dead_id, dead))


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
    dead = cfg["OTPD_PREFIX"] + P.DEAD
    ids = args.ids
    if args.all:
        ids = [eid for eid, _f in r.xrange(dead)]
    done, errors = [], []
    for i in ids:
        try:
            res = _requeue_one(r, cfg, i, payload)
            done.append(res)
            if not args.json:
                print("%s -> %s %s%s" % (
                    i, cfg["OTPD_PREFIX"] + P.JOBS, res["job_stream_id"],
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
    dead = cfg["OTPD_PREFIX"] + P.DEAD
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

"""`otpctl optout list|remove`: the numbers that replied STOP, kept in {p}optout.

The daemon adds a number when Twilio answers 21610 and from then on ends
its jobs `failed` (opted_out); removing it lets codes go to it again.
Numbers are listed masked.
"""
import time

from .. import protocol as P
from ..client import mask_phone
from .common import connect, emit_json


def cmd_optout(cfg, args):
    """Numbers that replied STOP (Twilio 21610): otpd skips them until removed."""
    r = connect(cfg)
    key = cfg["OTPD_PREFIX"] + P.OPTOUT
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

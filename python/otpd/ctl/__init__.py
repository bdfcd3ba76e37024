"""otpctl: the operator's tool for otpd.

    otpctl [-c FILE] status                     queue, instances, totals, recent errors
    otpctl [-c FILE] send +14155552671          send a test code and follow it
    otpctl [-c FILE] send alice@example.com     the same by e-mail
    otpctl [-c FILE] check                      validate Redis, the hash key and provider credentials
    otpctl [-c FILE] dead list|requeue|purge    manage dead letters
    otpctl [-c FILE] optout list|remove         numbers that replied STOP
    otpctl [-c FILE] fraud [list]               SMS pumping: rules, busy prefixes, conversion, spend
    otpctl [-c FILE] fraud allow|block +PREFIX  override the pumping defence for a number prefix
    otpctl [-c FILE] fraud clear +PREFIX        remove a prefix's rule (pause, allow or block)

Configuration is read the way the daemon reads it: the .env file named by
-c (or $OTPD_CONFIG), then environment variables of the same names, which
win.  Every command takes --json.  Exit status: 0 success, 1 failure,
2 usage or configuration-file error.

Only Redis (docs/protocol.md) and, for `check`, the providers' read-only
account endpoints are touched.  Phone numbers are masked in all output,
except that `send` echoes the number the operator typed.

This module holds the argument parser and main().  Each command lives in
its own module (status, send, check, dead, optout, fraud); what they share is in
common.py, and the fixes shown for provider errors are in hints.py.
"""
import argparse
import os
import sys

import redis

from .check import cmd_check
from .common import (Failure, UsageError, emit_json, load_config, mask_text, parse_dotenv,
                     redis_where, warn)
from .dead import cmd_dead_list, cmd_dead_purge, cmd_dead_requeue, mask_payload, parse_duration
from .fraud import cmd_fraud_allow, cmd_fraud_block, cmd_fraud_clear, cmd_fraud_list
from .hints import hint_for
from .optout import cmd_optout
from .send import cmd_send
from .status import cmd_status

__all__ = ["main", "parse_dotenv", "load_config", "parse_duration", "mask_text", "mask_payload",
           "hint_for", "UsageError"]


def build_parser():
    shared = argparse.ArgumentParser(add_help=False)
    shared.add_argument("-c", "--config", metavar="FILE", default=argparse.SUPPRESS,
                        help=".env file to read (default: $OTPD_CONFIG); environment variables win")
    shared.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="machine-readable output on stdout")
    ap = argparse.ArgumentParser(
        prog="otpctl", parents=[shared],
        description="Operate otpd, the SMS one-time-code daemon, through its Redis contract.",
        epilog="Exit status: 0 success, 1 failure, 2 usage or configuration-file error.")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("status", parents=[shared], help="queue, instances, totals and recent errors")
    p.add_argument("--errors", type=int, default=5, metavar="N", help="recent error events to show (5)")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("send", parents=[shared], help="send a test code and follow its status")
    p.add_argument("to", help="recipient: E.164 (+14155552671), or an e-mail address (the e-mail "
                             "channel)")
    p.add_argument("--purpose", default="login", help="purpose (default login)")
    p.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS",
                   help="how long to wait for a final status (30)")
    p.add_argument("--provider", choices=("twilio", "msg91", "console", "smtp", "console_email"),
                   help="pin one provider")
    p.add_argument("--ttl", type=int, metavar="SECONDS", help="code lifetime, 30..3600")
    p.set_defaults(func=cmd_send)

    p = sub.add_parser("check", parents=[shared],
                       help="validate Redis, the hash key and provider credentials (sends nothing)")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("dead", parents=[shared], help="list, requeue or purge dead letters")
    dsub = p.add_subparsers(dest="dead_command", metavar="ACTION", required=True)
    q = dsub.add_parser("list", parents=[shared], help="newest dead letters")
    q.add_argument("--limit", type=int, default=20, metavar="N", help="how many (20)")
    q.set_defaults(func=cmd_dead_list)
    q = dsub.add_parser("requeue", parents=[shared], help="put dead letters back on the job stream")
    q.add_argument("ids", nargs="*", metavar="ID", help="dead-letter stream ids")
    q.add_argument("--all", action="store_true", help="every dead letter")
    q.add_argument("--payload", metavar="JSON", help="replacement job for a single ID")
    q.set_defaults(func=cmd_dead_requeue)
    q = dsub.add_parser("purge", parents=[shared], help="delete dead letters")
    q.add_argument("ids", nargs="*", metavar="ID", help="dead-letter stream ids")
    q.add_argument("--older-than", metavar="DURATION", help="e.g. 7d, 12h, 30m, 90s")
    q.add_argument("--all", action="store_true", help="every dead letter")
    q.set_defaults(func=cmd_dead_purge)

    p = sub.add_parser("optout", parents=[shared], help="numbers that replied STOP")
    osub = p.add_subparsers(dest="optout_command", metavar="ACTION", required=True)
    q = osub.add_parser("list", parents=[shared], help="opted-out numbers, masked")
    q.set_defaults(func=cmd_optout)
    q = osub.add_parser("remove", parents=[shared],
                        help="let codes go to these numbers again (after they texted START)")
    q.add_argument("numbers", nargs="+", metavar="NUMBER", help="E.164 number")
    q.set_defaults(func=cmd_optout)

    # `otpctl fraud` alone is `otpctl fraud list`: its options are accepted on
    # both, with SUPPRESS defaults so the subcommand's parser does not reset them.
    def list_options(q):
        q.add_argument("--all", action="store_true", default=argparse.SUPPRESS,
                       help="also the lapsed rules")
        q.add_argument("--top", type=int, default=argparse.SUPPRESS, metavar="N",
                       help="the N busiest prefixes of the window (20)")

    p = sub.add_parser("fraud", parents=[shared],
                       help="SMS pumping: paused, blocked and allowed prefixes, conversion, spend")
    list_options(p)
    p.set_defaults(func=cmd_fraud_list)
    fsub = p.add_subparsers(dest="fraud_command", metavar="ACTION")
    q = fsub.add_parser("list", parents=[shared],
                        help="the rules, the busiest prefixes, conversion and spend (default)")
    list_options(q)
    q.set_defaults(func=cmd_fraud_list)
    for name, func, what in (("allow", cmd_fraud_allow,
                              "let codes go to a prefix, over any automatic pause"),
                             ("block", cmd_fraud_block, "send no codes to a prefix")):
        q = fsub.add_parser(name, parents=[shared], help=what)
        q.add_argument("prefix", metavar="+PREFIX", help="number prefix, e.g. +447624")
        q.add_argument("--for", dest="for_", metavar="DURATION",
                       help="lapse after e.g. 2h, 1d (default: until cleared)")
        q.add_argument("--note", metavar="TEXT", help="why, kept with the rule")
        q.set_defaults(func=func)
    q = fsub.add_parser("clear", parents=[shared],
                        help="remove a prefix's rule and pumping alert, and reset its counts")
    q.add_argument("prefix", metavar="+PREFIX", help="number prefix, exactly as the rule has it")
    q.set_defaults(func=cmd_fraud_clear)
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
        msg = "Redis at %s: %s" % (redis_where(cfg) if cfg else "?", e)
        warn(msg)
        if args.json:
            emit_json({"ok": False, "error": msg})
        return 1
    except KeyboardInterrupt:
        return 130

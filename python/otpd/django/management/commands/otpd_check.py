"""manage.py otpd_check: are this site's otpd settings right, is Redis
reachable (directly or through the sentinels), is the hash key well-formed
and is a daemon alive?  Sends nothing.

The checks are otpctl's (python/otpd/ctl): `otpctl check`'s Redis and
hash-key checks, and the heartbeats as `otpctl status` finds them
(gather_status), run on the site's Django settings instead of otpd's file.
Reading the heartbeats needs the read rights of conf/redis-users.acl's
otpd-admin user (SCAN, TYPE, HGETALL, PTTL, XINFO, ...), not only otpd-web's.
Exits non-zero (CommandError) when a check fails.
"""
import redis
from django.core.management.base import BaseCommand, CommandError

from .... import protocol as P
from ....connection import parse_sentinels
from ... import conf


def ctl_config():
    """The site's settings in the shape otpctl's checks read."""
    sentinels = parse_sentinels(conf.redis_sentinels())
    return {
        "REDIS_URL": conf.redis_url(),
        "OTPD_REDIS_SENTINELS": ",".join(("[%s]:%d" if ":" in h else "%s:%d") % (h, p)
                                         for h, p in sentinels),
        "OTPD_REDIS_MASTER_NAME": conf.redis_master_name(),
        "OTPD_REDIS_SENTINEL_PASSWORD": conf.redis_sentinel_password(),
        "OTPD_HASH_KEY": conf.hash_key() or "",
        "OTPD_PREFIX": conf.prefix(),
        "OTPD_GROUP": "otpd",
    }


class Command(BaseCommand):
    help = ("Check the otpd settings, Redis (directly or via Sentinel), OTPD_HASH_KEY and that an "
            "otpd daemon is alive (its heartbeat). Sends nothing; exits 1 on any failure.")
    requires_system_checks = []  # a broken setting is reported here, not raised before

    def handle(self, **options):
        try:
            from ....ctl.check import Checks, check_hash_key, check_redis
            from ....ctl.common import Failure, UsageError, connect
            from ....ctl.status import gather_status
        except ImportError as e:  # otpctl's dependency, python3-dotenv
            raise CommandError("otpd_check uses otpctl's checks, which need %s "
                               "(apt install python3-dotenv)" % e.name) from None
        ck = Checks()
        for e in conf.check_settings():
            if e.id not in ("otpd.E001", "otpd.E002"):  # the hash key is checked below
                ck.add("settings", "FAIL", "%s %s" % (e.id, e.msg), e.hint or "")
        try:
            cfg = ctl_config()
        except ValueError as e:
            ck.add("settings", "FAIL", str(e), "OTPD_REDIS_SENTINELS is \"host:port,host:port\"")
            cfg = None
        if not ck.failed:
            ck.add("settings", "ok", "prefix %s, purpose %s" % (conf.prefix(), conf.purpose()))
        if cfg is not None:
            check_hash_key(cfg, ck)
            check_redis(cfg, ck)
            if not any(c["name"] == "redis" and c["level"] == "FAIL" for c in ck.items):
                self.check_daemon(cfg, ck, connect, gather_status, (Failure, UsageError))
        width = max(len(c["name"]) for c in ck.items)
        for c in ck.items:
            self.stdout.write("%-4s  %s  %s" % (c["level"], c["name"].ljust(width), c["message"]))
            if c["hint"] and c["level"] != "ok":
                self.stdout.write("      %s  hint: %s" % (" " * width, c["hint"]))
        failed = [c for c in ck.items if c["level"] == "FAIL"]
        if failed:
            raise CommandError("otpd_check: %d check(s) failed: %s" % (
                len(failed), "; ".join("%s: %s" % (c["name"], c["message"]) for c in failed)))
        self.stdout.write("otpd_check: all checks passed")

    def check_daemon(self, cfg, ck, connect, gather_status, ctl_errors):
        where = cfg["OTPD_PREFIX"] + P.INSTANCE_PREFIX + "*"
        try:
            st = gather_status(connect(cfg), cfg, n_errors=0)
        except redis.exceptions.NoPermissionError as e:
            ck.add("daemon", "FAIL", "this Redis user may not read the heartbeats (%s)" % e,
                   "give the site's user otpd-admin's read rights (conf/redis-users.acl), or run "
                   "`otpctl status` as otpd-admin")
            return
        except (redis.RedisError,) + ctl_errors as e:
            ck.add("daemon", "FAIL", "cannot read the heartbeats: %s" % e, "")
            return
        alive = [i for i in st["instances"] if not i["stale"]]
        if not st["instances"]:
            ck.add("daemon", "FAIL", "no otpd instance is alive (no %s heartbeat in Redis)" % where,
                   "start otpd (systemctl start otpd) with the same REDIS_URL and OTPD_PREFIX "
                   "as this site")
        elif not alive:
            ck.add("daemon", "FAIL", "no heartbeat for %s: the daemon has probably died"
                   % ", ".join(i["consumer"] for i in st["instances"]),
                   "see journalctl -u otpd")
        else:
            ck.add("daemon", "ok", "%d instance(s) alive: %s; backlog %d" % (
                len(alive), ", ".join("%s (otpd %s)" % (i["consumer"], i.get("version", "?"))
                                      for i in alive), st["backlog"]))

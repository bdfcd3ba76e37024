"""Least privilege and TLS for the Redis otpd uses (docs/redis.md).

* ACL users: a redis-server loads conf/redis-users.acl as shipped (the
  CHANGEME passwords replaced, plus a superuser for the test itself).  The
  daemon runs entirely as `otpd`, the web app's client and Django helpers
  as `otpd-web`, otpctl as `otpd-admin`; at the end the server's ACL LOG
  holds no denial.  Denials (reason command, key or channel: a NOPERM
  reply) are told apart from failed AUTHs (reason auth), which the log
  also records.
* TLS: redis-server with --tls-port only, a stunnel4 client made from
  conf/stunnel-redis.conf in front of it for the daemon (hiredis 0.14 has
  no TLS), redis-py's native rediss:// for the web app; with the wrong CA
  or name stunnel refuses and the daemon never becomes ready.

Every test skips, saying why, when a program it needs is missing.
"""
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import redis

from conftest import HASH_KEY, ROOT, RedisServer, free_port, wait_for
from test_providers import NUMBER, code_in, sends, twilio_env

import testca

ACL_FILE = os.path.join(ROOT, "conf", "redis-users.acl")
STUNNEL_CONF = os.path.join(ROOT, "conf", "stunnel-redis.conf")
TUNNEL_UNIT = os.path.join(ROOT, "systemd", "otpd-redis-tunnel.service")
OTPD_UNIT = os.path.join(ROOT, "systemd", "otpd.service")
REDIS_DOC = os.path.join(ROOT, "docs", "redis.md")
OTPCTL = os.path.join(ROOT, "python", "otpctl")

USERS = ("otpd", "otpd-web", "otpd-admin")
ADMIN = "acl-test-admin"  # the test's own superuser: never in the shipped file
# ACL LOG reasons of a refused command (NOPERM); "auth" is a failed AUTH.
DENIALS = ("command", "key", "channel")
TLS_NAME = "redis.test"
# With receipts polled, a sent job may already be delivered when looked at.
SENT = ("sent", "delivered")
# Commands with subcommands, whose ACL rules name the pair (client|id).
CONTAINERS = {"client", "xgroup", "xinfo", "script", "config", "acl", "object", "memory",
              "command", "cluster", "function", "latency", "module", "pubsub", "slowlog"}


# --- what a test needs ---------------------------------------------------------

def skip(reason):
    print("SKIPPED: " + reason, file=sys.stderr)
    pytest.skip(reason)


def need(*programs):
    for p in programs:
        if shutil.which(p) is None:
            skip("%s is not installed (on Debian 12: apt-get install %s)"
                 % (p, {"redis-server": "redis-server", "stunnel4": "stunnel4",
                        "openssl": "openssl", "systemd-analyze": "systemd"}.get(p, p)))


def need_otpd():
    b = os.environ.get("OTPD_BIN") or os.path.join(ROOT, "build", "otpd")
    if not os.path.exists(b):
        skip("the otpd binary %s is not built (./dev test builds it, or set OTPD_BIN)" % b)
    return b


def binary_has(path, needle):
    with open(path, "rb") as f:
        return needle in f.read()


# --- the ACL file and a server that loads it -------------------------------------

def acl_rules(path=ACL_FILE):
    """{user: [(keys, commands), ...]}: the root rules first, then each (selector)."""
    users = {}
    with open(path) as f:
        for line in f:
            if not line.strip():
                continue
            parts = line.split()
            assert parts[0] == "user", "%s: every line is a user (no comments): %r" % (path, line)
            body = " ".join(parts[2:])
            groups = [re.sub(r"\([^)]*\)", " ", body)] + re.findall(r"\(([^)]*)\)", body)
            sels = []
            for g in groups:
                toks = g.split()
                sels.append(({t.lstrip("%RW~") for t in toks if t.startswith(("~", "%"))},
                             {t[1:].lower() for t in toks if t.startswith("+")}))
            users[parts[1]] = sels
    return users


def granted(user):
    return set().union(*(c for _k, c in acl_rules()[user]))


class AclRedis(RedisServer):
    """redis-server with the shipped ACL file; over TLS only when `tls` is given."""

    def __init__(self, tmpdir, tls=None):
        super().__init__(tmpdir)
        self.tls = tls
        self.passwords = {u: secrets.token_hex(16) for u in USERS + (ADMIN,)}
        self.acl_path = os.path.join(tmpdir, "users.acl")

    def write_acl(self):
        with open(ACL_FILE) as f:
            text = f.read()
        for u in USERS:
            placeholder = ">CHANGEME-%s " % u
            assert text.count(placeholder) == 1, "%s: no %r for user %s" % (ACL_FILE, placeholder, u)
            text = text.replace(placeholder, ">%s " % self.passwords[u])
        assert "CHANGEME" not in text
        if not text.endswith("\n"):
            text += "\n"
        text += "user %s on >%s ~* &* +@all\n" % (ADMIN, self.passwords[ADMIN])
        with open(self.acl_path, "w") as f:
            f.write(text)

    def start(self):
        self.write_acl()
        args = [shutil.which("redis-server"), "--bind", "127.0.0.1", "--dir", self.dir,
                "--save", "", "--appendonly", "no", "--daemonize", "no",
                "--logfile", os.path.join(self.dir, "redis.log"), "--aclfile", self.acl_path]
        if self.tls:
            args += ["--port", "0", "--tls-port", str(self.port),
                     "--tls-cert-file", self.tls["cert"], "--tls-key-file", self.tls["key"],
                     "--tls-ca-cert-file", self.tls["ca"], "--tls-auth-clients", "optional"]
        else:
            args += ["--port", str(self.port)]
        with open(os.path.join(self.dir, "redis.stderr"), "wb") as err:
            self.proc = subprocess.Popen(args, stdout=err, stderr=err)
        admin = self.client()

        def up():
            if self.proc.poll() is not None:
                return True
            try:
                return admin.ping()
            except redis.exceptions.ConnectionError:
                return False
        wait_for(up, 10, what="redis-server with the ACL file to answer PING")
        admin.close()
        if self.proc.poll() is not None:
            log = self.log()
            self.proc = None
            if self.tls and re.search(r"TLS|tls", log):
                skip("this redis-server was built without TLS: %s" % log.strip()[-300:])
            raise AssertionError("redis-server refused to start:\n" + log[-3000:])

    def log(self):
        out = ""
        for name in ("redis.stderr", "redis.log"):
            try:
                with open(os.path.join(self.dir, name), errors="replace") as f:
                    out += f.read()
            except OSError:
                pass
        return out

    def client(self, user=ADMIN, password=None, **kw):
        kw.update(host="127.0.0.1", port=self.port, username=user, decode_responses=True,
                  password=self.passwords[user] if password is None else password)
        if self.tls:
            kw.update(ssl=True, ssl_ca_certs=self.tls["ca"], ssl_check_hostname=True)
        return redis.Redis(**kw)

    def url(self, user, port=None):
        """redis:// (plain; with `port`, a tunnel's) or, on a TLS server, rediss://."""
        if self.tls and port is None:
            return ("rediss://%s:%s@127.0.0.1:%d/0?ssl_ca_certs=%s&ssl_cert_reqs=required"
                    "&ssl_check_hostname=true" % (user, self.passwords[user], self.port,
                                                  self.tls["ca"]))
        return "redis://%s:%s@127.0.0.1:%d/0" % (user, self.passwords[user], port or self.port)

    def acl_log(self):
        c = self.client()
        try:
            raw = c.execute_command("ACL", "LOG", "1000")
        finally:
            c.close()
        return [e if isinstance(e, dict) else dict(zip(e[::2], e[1::2])) for e in raw]

    def acl_reset(self):
        c = self.client()
        c.execute_command("ACL", "LOG", "RESET")
        c.close()


def fmt_log(entries):
    return "\n".join("  %s %s %s by %s, %s time(s) (%s)"
                     % (e.get("reason"), e.get("context"), e.get("object"), e.get("username"),
                        e.get("count", 1), e.get("client-info", "")[:120])
                     for e in entries) or "  (empty)"


def denials(entries):
    return [e for e in entries if e.get("reason") in DENIALS]


def times(entries):
    """Refusals counted: Redis folds repeats (same reason, object and user) into one entry."""
    return sum(int(e.get("count", 1)) for e in entries)


def assert_acl_log_clean(srv):
    """No NOPERM of any user; and, in these runs, no failed AUTH either."""
    log = srv.acl_log()
    print("ACL LOG (%d entries):\n%s" % (len(log), fmt_log(log)))
    assert denials(log) == [], "Redis refused commands (ACL LOG):\n" + fmt_log(log)
    assert log == [], "failed AUTHs in the ACL LOG:\n" + fmt_log(log)


@pytest.fixture
def acl_redis(tmp_path):
    need("redis-server")
    d = tmp_path / "acl-redis"
    d.mkdir()
    srv = AclRedis(str(d))
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def twilio(request):
    """conftest's HTTPS provider mock, whose certificates openssl makes."""
    need("openssl")
    return request.getfixturevalue("mock")


class Monitor:
    """MONITOR on the test's own connection: which commands each client sent."""

    LINE = re.compile(r'^\+[0-9.]+ \[\d+ ([^\]]+)\] "((?:[^"\\]|\\.)*)"(?: "((?:[^"\\]|\\.)*)")?')

    def __init__(self, srv):
        self.sock = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        self.f = self.sock.makefile("rb")
        for cmd in (("AUTH", ADMIN, srv.passwords[ADMIN]), ("MONITOR",)):
            self.sock.sendall(("*%d\r\n" % len(cmd) + "".join(
                "$%d\r\n%s\r\n" % (len(a), a) for a in cmd)).encode())
            assert self.f.readline().startswith(b"+OK")
        self.sock.settimeout(None)
        self.lines = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        for line in self.f:
            self.lines.append(line.decode("utf-8", "replace"))

    def stop(self):
        time.sleep(0.2)
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.thread.join(5)
        self.sock.close()

    def commands(self, addrs):
        """Command names ("client|id" for a subcommand) sent from these addresses."""
        found = set()
        for line in list(self.lines):
            m = self.LINE.match(line)
            if m and m.group(1) in addrs:
                name = m.group(2).lower()
                if name in CONTAINERS and m.group(3):
                    name += "|" + m.group(3).lower()
                found.add(name)
        return found


def addrs_of(admin, user):
    return {c["addr"] for c in admin.client_list() if c.get("user") == user}


# --- the rules against the code ----------------------------------------------------

def lua_commands():
    """{script name: commands its redis.call/pcall name}; every call must name its command."""
    d = os.path.join(ROOT, "python", "otpd", "lua")
    out = {}
    for name in sorted(os.listdir(d)):
        if not name.endswith(".lua"):
            continue
        with open(os.path.join(d, name)) as f:
            text = f.read()
        literal = re.findall(r"redis\.p?call\(\s*'([A-Za-z]+)'", text)
        assert len(literal) == len(re.findall(r"redis\.p?call\(", text)), \
            "%s calls a command by a variable: its ACL cannot be checked" % name
        out[name[:-4]] = {c.lower() for c in literal}
    return out


# Sent by daemon/*.c but not ACL-checked or not to the data Redis.
DAEMON_EXEMPT = {
    "auth": "AUTH is never refused by ACL rules",
    "hello": "HELLO is never refused by ACL rules",
    "select": "sent only when REDIS_URL names a database other than 0; docs/redis.md: add +select",
    "sentinel": "goes to the sentinels (daemon/sentinel.c), not the data Redis",
    "subscribe": "goes to the sentinels (daemon/sentinel.c), not the data Redis",
}
# Granted before the C code sent them (the Sentinel support: ROLE at connect, WAIT after
# writes); allowed even where a build does not send them.
DAEMON_AHEAD = {"wait", "role"}
# The web app's own commands (python/otpd/client.py); the scripts' come from the files.
WEB_TOPLEVEL = {"multi", "exec", "xadd", "hsetnx", "expire", "hgetall", "evalsha", "script|load"}
# Commands Redis files under @dangerous that a user may hold, and why.
DANGEROUS_OK = {
    ("otpd", "client|unblock"): "on stop, wakes the daemon's own blocked XREADGROUP",
    ("otpd", "role"): "at connect, refuses a server that is not the master",
    ("otpd-admin", "info"): "otpctl check reads the server's version",
}


def test_acl_rules_cover_what_the_code_sends(acl_redis):
    """Static: every command the daemon's C code and Lua scripts name is granted to `otpd`
    (and nothing else but WAIT and ROLE); the web user holds exactly its client's commands and
    the read-only half of limits.lua; no user holds a dangerous command without a reason."""
    admin = acl_redis.client()
    admin.response_callbacks.pop("COMMAND", None)  # the raw COMMAND INFO reply

    def info(names):
        return dict(zip(names, admin.execute_command("COMMAND", "INFO", *names)))

    # The daemon: string literals of every file that sends through rconn.
    daemon_sent = {}
    for name in sorted(os.listdir(os.path.join(ROOT, "daemon"))):
        if not name.endswith(".c"):
            continue
        with open(os.path.join(ROOT, "daemon", name)) as f:
            text = f.read()
        if "rconn_command(" not in text and "rconn_send(" not in text:
            continue
        # A command opens an argv array ({"CLIENT", "ID"}) or is assigned to its first
        # element (argv[argc++] = "EVALSHA"); other literals (reply texts) are not commands.
        found = re.findall(r'\{\s*"([A-Z][A-Z_]*)"(?:\s*,\s*"([A-Za-z_-]+)")?', text) + \
            [(c, "") for c in re.findall(r'=\s*"([A-Z][A-Z_]*)"\s*;', text)]
        known = info(sorted({c for c, _s in found}))
        for c, sub in found:
            if known.get(c) is None:
                continue
            cmd = c.lower()
            if cmd in CONTAINERS:
                assert sub, "%s: %s without its subcommand next to it" % (name, c)
                cmd += "|" + sub.lower()
            daemon_sent.setdefault(cmd, set()).add(name)
    lua = lua_commands()
    daemon_lua = set().union(*(c for s, c in lua.items() if s != "verify"))
    print("daemon sends: %s" % ", ".join("%s (%s)" % (c, ",".join(sorted(f)))
                                         for c, f in sorted(daemon_sent.items())))
    print("daemon's scripts call: %s" % ", ".join(sorted(daemon_lua)))
    need_d = (set(daemon_sent) - set(DAEMON_EXEMPT)) | daemon_lua
    have_d = granted("otpd")
    assert not need_d - have_d, "the daemon sends commands user otpd may not run: %s" % sorted(
        need_d - have_d)
    assert not have_d - need_d - DAEMON_AHEAD, "user otpd holds commands nothing sends: %s" % sorted(
        have_d - need_d - DAEMON_AHEAD)
    ahead = DAEMON_AHEAD - set(daemon_sent)
    print("granted ahead of the C code: %s" % (sorted(ahead) or "none (the daemon sends WAIT and ROLE)"))

    # The web app: the client's commands, verify.lua, and limits.lua in check mode (reads only).
    flags = info(sorted(lua["limits"]))
    limits_read = {c for c in lua["limits"] if "readonly" in flags[c][2]}
    need_w = WEB_TOPLEVEL | lua["verify"] | limits_read
    assert granted("otpd-web") == need_w, (sorted(granted("otpd-web") - need_w),
                                          sorted(need_w - granted("otpd-web")))

    # Nothing broad, nothing dangerous without its reason.
    dangerous = {c.lower() for c in admin.execute_command("ACL", "CAT", "dangerous")}
    with open(ACL_FILE) as f:
        text = f.read()
    for bad in ("+@all", "allcommands", "allkeys", "~* ", "&*", "allchannels", "nopass"):
        assert bad not in text, bad
    for u in USERS:
        for c in sorted(granted(u) & dangerous):
            assert (u, c) in DANGEROUS_OK, "user %s holds the dangerous %s" % (u, c)
            print("%s holds %s (@dangerous): %s" % (u, c, DANGEROUS_OK[(u, c)]))
    for u in USERS:
        for keys, _cmds in acl_rules()[u]:
            assert keys and all(k.startswith("otpd:") for k in keys), (u, keys)
    admin.close()


# --- the daemon as `otpd` -----------------------------------------------------------

def test_daemon_runs_fully_under_the_otpd_user(tmp_path, acl_redis, otpd_factory, twilio):
    """Sends, a retry, a slow send kept with XCLAIM, STOP, both limits, a country budget, a dead
    letter, a duplicate, a dead consumer's job taken over, receipts by polling, a reload and the
    heartbeat: all as user otpd, with the web app as otpd-web, and Redis refuses nothing."""
    need_otpd()
    from otpd import OptedOut, OTPClient, RateLimited
    srv = acl_redis
    admin = srv.client()
    web = srv.client("otpd-web")
    client = OTPClient(url=srv.url("otpd-web"), hash_key=HASH_KEY)
    mon = Monitor(srv)
    t0 = time.monotonic()

    # A job that a daemon read and then died with (test_reliability's takeover).
    admin.xgroup_create("otpd:jobs", "otpd", id="0", mkstream=True)
    ghost = client.send("+14155550100")
    assert admin.xreadgroup("otpd", "ghost:1", {"otpd:jobs": ">"}, count=1)

    conf = tmp_path / "otpd.env"
    conf.write_text("OTPD_LIMIT_GLOBAL_PER_HOUR=0\n")
    twilio.rule(to="+14155550102", provider="twilio", behaviour="unavailable", times=1)
    twilio.rule(to="+14155550103", provider="twilio", behaviour="slow", delay_ms=1200, times=1)
    twilio.rule(to="+14155550104", provider="twilio", behaviour="opted_out")
    env = twilio_env(twilio, REDIS_URL=srv.url("otpd"), OTPD_CLAIM_IDLE_MS="1000",
                     OTPD_HEARTBEAT_MS="300", OTPD_LIMIT_INTERVAL_S="30",
                     OTPD_COUNTRY_HOURLY_BUDGET="44=1", OTPD_DLR_POLL_FIRST_MS="300",
                     OTPD_DLR_POLL_HORIZON_S="600", OTPD_RETRY_BASE_MS="200",
                     OTPD_RETRY_MAX_MS="300")
    d = otpd_factory(env, args=["-c", str(conf)])
    addrs = wait_for(lambda: len(addrs_of(admin, "otpd")) >= 2 and addrs_of(admin, "otpd"), 5,
                     what="the daemon's reader and writer connections")
    wait_for(lambda: admin.hget("otpd:limits", "interval_ms") == "30000", 5,
             what="the daemon to publish its limits")

    a = client.send("+14155550101")
    assert client.wait(a, timeout=10)["status"] in SENT
    with pytest.raises(RateLimited):  # the web user's limits.lua reads what the daemon wrote
        client.send("+14155550101")
    # The same number past the client's check: the daemon's own limit refuses it.
    web.xadd("otpd:jobs", {"job": json.dumps({"id": "acl-interval", "to": "+14155550101"})})
    retried = client.send("+14155550102")
    slow = client.send("+14155550103")
    stop = client.send("+14155550104")
    uk = client.send("+447400900001")
    web.xadd("otpd:jobs", {"job": json.dumps({"id": "acl-budget", "to": "+447700900002"})})
    web.xadd("otpd:jobs", {"job": "{not json"})
    web.xadd("otpd:jobs", {"job": json.dumps({"id": a, "to": "+14155550101"})})  # a duplicate

    st = client.wait("acl-interval", timeout=10)
    assert (st["status"], st["error_code"]) == ("rate_limited", "interval"), st
    st = client.wait(retried, timeout=10)
    assert st["status"] in SENT and st["attempts"] == "2", st
    assert client.wait(slow, timeout=10)["status"] in SENT
    st = client.wait(stop, timeout=10)
    assert (st["status"], st["error_code"]) == ("failed", "21610"), st
    assert admin.hexists("otpd:optout", "+14155550104")
    with pytest.raises(OptedOut):
        client.send("+14155550104")
    assert client.wait(uk, timeout=10)["status"] in SENT
    st = client.wait("acl-budget", timeout=10)
    assert (st["status"], st["error_code"]) == ("rate_limited", "country_budget"), st
    assert admin.exists("otpd:alert:country_budget:44")
    wait_for(lambda: admin.xlen("otpd:dead") == 1, 10, what="the dead letter")
    wait_for(lambda: admin.hget("otpd:stats", "jobs:duplicate") == "1", 10, what="the duplicate")
    assert client.wait(ghost, timeout=10)["status"] in SENT
    assert "reclaimed 1 job" in d.stderr
    assert client.wait(a, final={"delivered"}, timeout=10)["status"] == "delivered"

    def code_for(to):
        return code_in([q for q in sends(twilio) if q["form"].get("To") == to][-1]["form"]["Body"])
    assert client.verify("+14155550101", code_for("+14155550101")).ok
    assert client.verify("+14155550101", code_for("+14155550101")).status == "expired"
    right = code_for("+14155550102")
    wrong = "000000" if right != "000000" else "111111"
    assert client.verify("+14155550102", wrong).status == "mismatch"
    assert client.verify("+14155550102", right).ok

    # A reload publishes the limits again (MULTI, DEL, HSET, EXEC).
    conf.write_text("OTPD_LIMIT_GLOBAL_PER_HOUR=1000\n")
    d.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "reload: configuration re-read" in d.stderr, 5, what="the reload")
    wait_for(lambda: admin.hget("otpd:limits", "global_per_hour") == "1000", 5,
             what="the reloaded limits in Redis")
    assert client.wait(client.send("+14155550105"), timeout=10)["status"] in SENT
    assert admin.zcard("otpd:rl:global") == 1

    # The heartbeat, beating.
    [inst] = list(admin.scan_iter("otpd:instance:*"))
    beat = admin.hget(inst, "updated_ms")
    wait_for(lambda: admin.hget(inst, "updated_ms") != beat, 3, what="a second heartbeat")
    wait_for(lambda: int(admin.hget(inst, "sent") or 0) >= 6, 3, what="the heartbeat's counters")
    time.sleep(max(0.0, 2.5 - (time.monotonic() - t0)))
    assert admin.pttl(inst) > 0
    addrs |= addrs_of(admin, "otpd")

    assert d.stop() == 0
    mon.stop()
    assert not admin.exists(inst), "a clean stop deletes the heartbeat"
    assert "NOPERM" not in d.stderr and "setup refused" not in d.stderr, d.stderr[-3000:]
    sent = mon.commands(addrs)
    lua = mon.commands({"lua"})
    print("the daemon sent (MONITOR): %s" % ", ".join(sorted(sent)))
    print("scripts called (both users): %s" % ", ".join(sorted(lua)))
    print("WAIT sent: %s; ROLE sent: %s" % ("wait" in sent, "role" in sent))
    assert sent - {"auth", "hello"} <= granted("otpd"), sorted(sent - granted("otpd"))
    # MONITOR leaves out admin-flagged commands such as CLIENT UNBLOCK; the counters have them.
    stats = admin.info("commandstats")
    print("CLIENT UNBLOCK (sent at stop while the reader blocks): %s"
          % stats.get("cmdstat_client|unblock", "not sent"))
    core = {"client|setname", "client|id", "xgroup|create", "script|load", "xreadgroup",
            "evalsha", "xautoclaim", "xclaim", "multi", "del", "hset", "exec", "pexpire", "xlen",
            "xpending"}
    assert not core - sent, "not exercised: %s" % sorted(core - sent)
    assert_acl_log_clean(srv)
    admin.close()
    web.close()


def test_wait_and_role_under_the_otpd_user(tmp_path, acl_redis, otpd_factory, twilio):
    """OTPD_REDIS_WAIT_REPLICAS=1 with a replica: WAIT after each batch and ROLE at connect,
    both as user otpd (only once the binary has them)."""
    b = need_otpd()
    if not binary_has(b, b"OTPD_REDIS_WAIT_REPLICAS"):
        skip("%s does not send WAIT yet (no OTPD_REDIS_WAIT_REPLICAS in this build)" % b)
    from otpd import OTPClient
    srv = acl_redis
    admin = srv.client()
    admin.config_set("repl-diskless-sync-delay", 0)  # the replica syncs at once, not in 5 s
    rdir = tmp_path / "replica"
    rdir.mkdir()
    rport = free_port()
    replica = subprocess.Popen(
        [shutil.which("redis-server"), "--port", str(rport), "--bind", "127.0.0.1",
         "--dir", str(rdir), "--save", "", "--appendonly", "no", "--logfile", str(rdir / "log"),
         "--replicaof", "127.0.0.1", str(srv.port),
         "--masteruser", ADMIN, "--masterauth", srv.passwords[ADMIN]],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: admin.info("replication").get("connected_slaves", 0) >= 1, 10,
                 what="the replica to attach")
        mon = Monitor(srv)
        d = otpd_factory(twilio_env(twilio, REDIS_URL=srv.url("otpd"),
                                    OTPD_REDIS_WAIT_REPLICAS="1",
                                    OTPD_REDIS_WAIT_TIMEOUT_MS="1000"))
        addrs = addrs_of(admin, "otpd")
        client = OTPClient(url=srv.url("otpd-web"), hash_key=HASH_KEY)
        for to in ("+14155550111", "+14155550112"):
            assert client.wait(client.send(to), timeout=10)["status"] == "sent"
        assert d.stop() == 0
        mon.stop()
        sent = mon.commands(addrs)
        print("the daemon sent (MONITOR): %s" % ", ".join(sorted(sent)))
        assert "wait" in sent
        if binary_has(b, b"\0ROLE\0"):
            assert "role" in sent
        else:
            print("this build does not send ROLE yet")
        assert "NOPERM" not in d.stderr
        assert_acl_log_clean(srv)
    finally:
        replica.terminate()
        replica.wait(10)
        admin.close()


# --- the web app as `otpd-web` -------------------------------------------------------

def test_web_user_send_verify_status(acl_redis):
    """OTPClient as otpd-web: enqueue, status, every verify result, every early refusal of the
    limits script, and recovery from an empty script cache; Redis refuses nothing."""
    from otpd import OptedOut, OTPClient, RateLimited, mac
    srv = acl_redis
    admin = srv.client()
    client = OTPClient(url=srv.url("otpd-web"), hash_key=HASH_KEY)
    now = int(time.time() * 1000)
    # The daemon's published limits.
    admin.hset("otpd:limits", mapping={"interval_ms": 30000, "per_hour": 10, "per_day": 20,
                                       "global_per_hour": 100, "country_budget:44": 1,
                                       "country_budget:*": 200})

    job = client.send(NUMBER, purpose="password_reset")
    st = client.status(job)
    assert st["status"] == "queued" and st["to"] == "+1415*****71", st
    assert admin.xlen("otpd:jobs") == 1 and 0 < admin.ttl("otpd:job:" + job) <= 86400
    mail = client.send("Alice@Example.com", channel="email")
    assert client.status(mail)["status"] == "queued"
    assert client.status("no-such-job") == {}

    # The daemon's OTP record for a known code.
    key = "otpd:otp:password_reset:" + NUMBER
    admin.hset(key, mapping={"mac": mac("password_reset", NUMBER, "482913", HASH_KEY),
                             "job": job, "attempts": 0, "max_attempts": 3})
    admin.expire(key, 300)
    r = client.verify(NUMBER, "000000", "password_reset")
    assert (r.status, r.attempts_left) == ("mismatch", 2)
    assert client.verify(NUMBER, "482913", "password_reset").ok
    assert client.verify(NUMBER, "482913", "password_reset").status == "expired"
    assert client.verify(NUMBER, "12", "password_reset").status == "invalid"
    key2 = "otpd:otp:login:+14155550120"
    admin.hset(key2, mapping={"mac": "0" * 64, "job": "j", "attempts": 0, "max_attempts": 1})
    assert client.verify("+14155550120", "123456").status == "locked"
    assert client.verify("+14155550120", "123456").status == "locked"

    # Each refusal of limits.lua in check mode.
    admin.zadd("otpd:rl:num:+14155550121", {"login:earlier": now - 1000})
    with pytest.raises(RateLimited) as e:
        client.send("+14155550121")
    assert e.value.reason == "interval"
    admin.hset("otpd:optout", "+14155550122", now)
    with pytest.raises(OptedOut):
        client.send("+14155550122")
    admin.zadd("otpd:rl:cc:44", {"earlier": now - 1000})
    with pytest.raises(RateLimited) as e:
        client.send("+447400900003")
    assert e.value.reason == "country_budget"
    admin.zadd("otpd:rl:global", {"g%d" % i: now - 1000 for i in range(100)})
    with pytest.raises(RateLimited) as e:
        client.send("+14155550123")
    assert e.value.reason == "global_per_hour"

    # SCRIPT FLUSH (another app, a failover): the client loads the scripts again as otpd-web.
    admin.script_flush()
    assert client.verify(NUMBER, "482913", "password_reset").status == "expired"
    admin.script_flush()
    admin.hdel("otpd:limits", "global_per_hour")
    assert client.send("+14155550124")
    assert_acl_log_clean(srv)
    admin.close()


DJANGO_SCRIPT = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
from django.conf import settings
settings.configure(OTPD_REDIS_URL=sys.argv[2], OTPD_HASH_KEY=sys.argv[3],
                   INSTALLED_APPS=["otpd.django"])
import django
django.setup()
from django.core import checks
from otpd.django import OTPRateLimited, otp_status, send_otp, verify_otp
out = {"checks": [e.id for e in checks.run_checks() if e.id.startswith("otpd.")]}
job = send_otp("+14155550130", "verify_phone")
out["status"] = otp_status(job)
out["verify_none"] = verify_otp("+14155550130", "123456", "verify_phone").status
out["verify_ok"] = verify_otp("+14155550131", "654321", "verify_phone").status
try:
    send_otp("+14155550132", "verify_phone")
except OTPRateLimited as e:
    out["retry_after"] = e.retry_after
print(json.dumps(out))
"""


def test_django_helpers_as_the_web_user(acl_redis):
    """otpd.django's send_otp, otp_status and verify_otp with OTPD_REDIS_URL naming otpd-web
    (in a child process: Django's settings are configured once per process)."""
    try:
        import django  # noqa: F401
    except ImportError:
        skip("python3-django is not installed (apt-get install python3-django)")
    from otpd import mac
    srv = acl_redis
    admin = srv.client()
    now = int(time.time() * 1000)
    admin.hset("otpd:limits", mapping={"interval_ms": 30000})
    admin.zadd("otpd:rl:num:+14155550132", {"verify_phone:earlier": now - 1000})
    admin.hset("otpd:otp:verify_phone:+14155550131",
               mapping={"mac": mac("verify_phone", "+14155550131", "654321", HASH_KEY),
                        "job": "j", "attempts": 0, "max_attempts": 5})
    p = subprocess.run([sys.executable, "-c", DJANGO_SCRIPT, os.path.join(ROOT, "python"),
                        srv.url("otpd-web"), HASH_KEY], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    print(out)
    assert out["checks"] == []
    assert out["status"]["status"] == "queued" and not out["status"]["final"]
    assert out["verify_none"] == "expired" and out["verify_ok"] == "ok"
    assert 0 < out["retry_after"] <= 30
    assert_acl_log_clean(srv)
    admin.close()


def test_web_user_is_refused_the_rest(acl_redis):
    """otpd-web cannot read the queue as a consumer, acknowledge, administer, list keys,
    touch keys outside its families (other apps' or the daemon's), nor do any of that from a
    script it loads; each refusal is a NOPERM in the ACL LOG, and a wrong password is a
    separate "auth" entry."""
    srv = acl_redis
    admin = srv.client()
    web = srv.client("otpd-web")
    admin.xgroup_create("otpd:jobs", "otpd", id="0", mkstream=True)
    refused = [
        ("XREADGROUP", "GROUP", "otpd", "web", "COUNT", "1", "STREAMS", "otpd:jobs", ">"),
        ("XACK", "otpd:jobs", "otpd", "0-1"),
        ("XAUTOCLAIM", "otpd:jobs", "otpd", "web", "0", "0"),
        ("FLUSHALL",), ("FLUSHDB",), ("CONFIG", "GET", "*"), ("CONFIG", "SET", "save", ""),
        ("KEYS", "*"), ("SCAN", "0"), ("SHUTDOWN", "NOSAVE"),
        ("MODULE", "LIST"), ("ACL", "LIST"), ("CLIENT", "KILL", "ID", "1"), ("INFO",),
        ("SCRIPT", "FLUSH"), ("EVAL", "return 1", "0"), ("PUBLISH", "otpd:x", "y"),
        ("SUBSCRIBE", "otpd:x"),
        # outside otpd:* altogether
        ("HGETALL", "session:abc"), ("HSETNX", "session:abc", "f", "v"), ("XADD", "jobs", "*", "a", "b"),
        # otpd's keys that are the daemon's alone
        ("HGETALL", "otpd:stats"), ("DEL", "otpd:jobs"), ("EXPIRE", "otpd:jobs", "1"),
        ("DEL", "otpd:rl:num:+14155552671"), ("HSET", "otpd:optout", "+14155552671", "1"),
        ("HSET", "otpd:limits", "interval_ms", "0"), ("XADD", "otpd:dead", "*", "a", "b"),
        ("XADD", "otpd:events", "*", "a", "b"), ("HGETALL", "otpd:instance:x"),
    ]
    for cmd in refused:
        with pytest.raises(redis.exceptions.NoPermissionError):
            web.execute_command(*cmd)
    # A script it loads runs with its rights, not more.
    sha = web.script_load("return redis.call('DEL', KEYS[1])")
    refused_in_script = "(?i)no permissions|can't access|can't run|NOPERM"
    with pytest.raises(redis.exceptions.ResponseError, match=refused_in_script):
        web.evalsha(sha, 1, "otpd:rl:global")  # EVALSHA may name it; DEL on it is refused
    with pytest.raises(redis.exceptions.ResponseError, match=refused_in_script):
        web.evalsha(sha, 1, "otpd:job:abc")  # a family without EVALSHA
    sha2 = web.script_load("return redis.call('DEL', 'otpd:optout')")
    with pytest.raises(redis.exceptions.ResponseError, match=refused_in_script):
        web.evalsha(sha2, 0)
    # A wrong password: logged as "auth", not as a denial.
    with pytest.raises(redis.exceptions.ResponseError, match="WRONGPASS"):
        srv.client("otpd-web", password="wrong").ping()
    log = srv.acl_log()
    print("ACL LOG:\n" + fmt_log(log))
    assert times(denials(log)) == len(refused) + 3, fmt_log(log)
    assert {e["username"] for e in denials(log)} == {"otpd-web"}
    assert [e["username"] for e in log if e["reason"] == "auth"] == ["otpd-web"]
    assert any(e["context"] == "lua" for e in denials(log))
    admin.close()
    web.close()


def test_daemon_and_admin_users_are_refused_administration(acl_redis):
    """otpd and otpd-admin hold no FLUSHALL, CONFIG, KEYS and the like; otpd-admin cannot
    trim or delete from the job stream (only from the dead letters)."""
    srv = acl_redis
    admin = srv.client()
    common = [("FLUSHALL",), ("FLUSHDB",), ("CONFIG", "GET", "*"), ("KEYS", "*"),
              ("SHUTDOWN", "NOSAVE"), ("MODULE", "LIST"),
              ("ACL", "LIST"), ("CLIENT", "KILL", "ID", "1"), ("CLIENT", "LIST"),
              ("SCRIPT", "FLUSH"), ("EVAL", "return 1", "0"), ("PUBLISH", "otpd:x", "y"),
              ("GET", "session:abc"), ("SET", "session:abc", "x")]
    only = {"otpd": [("SCAN", "0"), ("INFO",), ("HDEL", "otpd:optout", "+14155552671"),
                     ("XTRIM", "otpd:jobs", "MAXLEN", "0"), ("XREAD", "STREAMS", "otpd:events", "0")],
            "otpd-admin": [("XTRIM", "otpd:jobs", "MAXLEN", "0"), ("XDEL", "otpd:jobs", "0-1"),
                           ("XREADGROUP", "GROUP", "otpd", "x", "STREAMS", "otpd:jobs", ">"),
                           ("XACK", "otpd:jobs", "otpd", "0-1"), ("DEL", "otpd:jobs")]}
    n = 0
    for user in ("otpd", "otpd-admin"):
        c = srv.client(user)
        for cmd in common + only[user]:
            with pytest.raises(redis.exceptions.NoPermissionError):
                c.execute_command(*cmd)
            n += 1
        c.close()
    # What they do hold answers.
    d = srv.client("otpd")
    assert d.execute_command("CLIENT", "UNBLOCK", d.execute_command("CLIENT", "ID")) == 0
    assert d.execute_command("ROLE")[0] == "master"
    assert d.execute_command("WAIT", "0", "10") == 0
    a = srv.client("otpd-admin")
    assert a.ping() and a.info()["redis_version"]
    assert a.xtrim("otpd:dead", maxlen=0) == 0
    log = srv.acl_log()
    assert times(denials(log)) == n and times(log) == n, fmt_log(log)
    d.close()
    a.close()
    admin.close()


# --- otpctl as `otpd-admin` -------------------------------------------------------------

def test_otpctl_runs_under_the_admin_user(acl_redis, otpd_factory, twilio):
    """status, send, dead list/requeue/purge, optout list/remove and check, all as otpd-admin
    while the daemon runs as otpd; Redis refuses nothing."""
    need_otpd()
    from otpd import OTPClient
    srv = acl_redis
    admin = srv.client()
    twilio.rule(to="+14155550140", provider="twilio", behaviour="opted_out")
    d = otpd_factory(twilio_env(twilio, REDIS_URL=srv.url("otpd"), OTPD_HEARTBEAT_MS="500"))
    client = OTPClient(url=srv.url("otpd-web"), hash_key=HASH_KEY)
    assert client.wait(client.send("+14155550140"), timeout=10)["status"] == "failed"
    srv.client("otpd-web").xadd("otpd:jobs", {"job": "{not json"})
    wait_for(lambda: admin.xlen("otpd:dead") == 1, 10, what="the dead letter")

    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OTPD_", "TWILIO_", "MSG91_", "REDIS_"))
           and not k.lower().endswith("_proxy")}
    env.update({k: v for k, v in twilio_env(twilio).items()
                if k.startswith("TWILIO_") or k == "OTPD_CA_FILE"})
    env.update(REDIS_URL=srv.url("otpd-admin"), OTPD_HASH_KEY=HASH_KEY)

    def ctl(*args):
        p = subprocess.run([OTPCTL] + list(args), env=env, capture_output=True, text=True,
                           timeout=30)
        assert p.returncode == 0, (args, p.stdout[-2000:], p.stderr[-2000:])
        return p.stdout

    wait_for(lambda: list(admin.scan_iter("otpd:instance:*")), 6, what="the heartbeat")
    st = json.loads(ctl("status", "--json"))
    assert st["alive"] and st["dead"] == 1 and st["consumer_group"]["exists"]
    out = json.loads(ctl("send", "+14155550141", "--json", "--timeout", "10"))
    assert out["ok"] and out["status"] == "sent", out
    [dead] = json.loads(ctl("dead", "list", "--json"))["entries"]
    ctl("dead", "requeue", dead["id"])  # rejected again: back in the dead letters
    wait_for(lambda: admin.xlen("otpd:dead") == 1 and
             admin.xrange("otpd:dead")[0][0] != dead["id"], 10, what="the new dead letter")
    ctl("dead", "purge", "--older-than", "1d")
    ctl("dead", "purge", admin.xrange("otpd:dead")[0][0])
    ctl("dead", "purge", "--all")
    assert admin.xlen("otpd:dead") == 0
    assert "+1415*****40" in ctl("optout", "list")
    ctl("optout", "remove", "+14155550140")
    assert not admin.hexists("otpd:optout", "+14155550140")
    ctl("check")
    assert d.stop() == 0
    assert "NOPERM" not in d.stderr
    assert_acl_log_clean(srv)
    admin.close()


# --- TLS: redis-server --tls-port, stunnel4 for the daemon, rediss:// for the web app --------

def make_tls(dirpath):
    """The run's test CA (tests/mocks/testca.py) and a server certificate for redis.test and
    127.0.0.1 signed by it; the CA's unrelated twin for the negative test."""
    need("openssl")
    ca = testca.make_ca(dirpath)
    d = ca["dir"]

    def ossl(*args):
        p = subprocess.run(["openssl"] + list(args), cwd=d, capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
    ossl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "redis.key")
    ossl("req", "-new", "-key", "redis.key", "-subj", "/O=otpd tests/CN=" + TLS_NAME,
         "-out", "redis.csr")
    with open(os.path.join(d, "redis.ext"), "w") as f:
        f.write("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                "extendedKeyUsage=serverAuth\nsubjectAltName=DNS:%s,IP:127.0.0.1\n" % TLS_NAME)
    ossl("x509", "-req", "-in", "redis.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
         "-set_serial", "0x" + secrets.token_hex(8), "-days", "2", "-sha256",
         "-extfile", "redis.ext", "-out", "redis.pem")
    return {"ca": ca["ca_cert"], "wrong_ca": ca["wrong_ca_cert"],
            "cert": os.path.join(d, "redis.pem"), "key": os.path.join(d, "redis.key")}


def port_listening(port):
    """A TCP socket listens on 127.0.0.1:port (read from /proc, without connecting to it)."""
    with open("/proc/net/tcp") as f:
        return any(line.split()[1] == "0100007F:%04X" % port and line.split()[3] == "0A"
                   for line in list(f)[1:])


class Stunnel:
    """conf/stunnel-redis.conf as shipped, with this run's ports, CA and log file."""

    def __init__(self, tmpdir, connect_port, **options):
        self.dir = tmpdir
        self.port = free_port()
        self.log_path = os.path.join(tmpdir, "stunnel.log")
        self.err_path = os.path.join(tmpdir, "stunnel.stderr")
        opts = {"accept": "127.0.0.1:%d" % self.port, "connect": "127.0.0.1:%d" % connect_port,
                "sni": TLS_NAME, "checkHost": TLS_NAME}
        opts.update(options)
        with open(STUNNEL_CONF) as f:
            text = f.read()
        for key in ("foreground", "client", "verifyChain"):
            assert re.search(r"(?m)^%s = yes$" % key, text), "%s: %s = yes" % (STUNNEL_CONF, key)
        for key, value in opts.items():
            text, n = re.subn(r"(?m)^%s = .*$" % re.escape(key), "%s = %s" % (key, value), text)
            assert n == 1, "%s: no single %s line" % (STUNNEL_CONF, key)
        # A global option: before the first [service].
        text = "output = %s\n" % self.log_path + text
        self.conf = os.path.join(tmpdir, "stunnel-redis.conf")
        with open(self.conf, "w") as f:
            f.write(text)
        self.proc = None

    def start(self):
        need("stunnel4")
        self.err = open(self.err_path, "wb")
        self.proc = subprocess.Popen([shutil.which("stunnel4"), self.conf],
                                     stdout=self.err, stderr=self.err)

        def listening():
            return self.proc.poll() is not None or port_listening(self.port)
        wait_for(listening, 10, what="stunnel4 to listen")
        assert self.proc.poll() is None, "stunnel4 exited:\n" + self.log()
        return self

    def log(self):
        """The log file (`output`), or what stunnel said on stderr before it opened it."""
        for p in (self.log_path, self.err_path):
            try:
                with open(p, errors="replace") as f:
                    text = f.read()
            except OSError:
                continue
            if text:
                return text
        return ""

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        if self.proc:
            self.err.close()
        self.proc = None


@pytest.fixture
def tls_redis(tmp_path):
    need("redis-server", "openssl")
    tls = make_tls(tmp_path / "tls")
    d = tmp_path / "tls-redis"
    d.mkdir()
    srv = AclRedis(str(d), tls=tls)
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def tunnels(tmp_path):
    made = []

    def make(srv, **options):
        d = tmp_path / ("stunnel%d" % len(made))
        d.mkdir()
        t = Stunnel(str(d), srv.port, **dict({"CAfile": srv.tls["ca"]}, **options))
        made.append(t)
        return t.start()
    yield make
    for t in made:
        t.stop()


def test_daemon_through_stunnel_to_redis_over_tls(tls_redis, tunnels, otpd_factory, twilio):
    """The daemon (plain RESP to stunnel on loopback) and the web app and otpctl (rediss://,
    verified) reach a Redis that listens on TLS only; jobs are sent and their codes verify."""
    need_otpd()
    from otpd import OTPClient
    srv = tls_redis
    tun = tunnels(srv)
    d = otpd_factory(twilio_env(twilio, REDIS_URL=srv.url("otpd", port=tun.port),
                                OTPD_HEARTBEAT_MS="500"))
    client = OTPClient(url=srv.url("otpd-web"), hash_key=HASH_KEY)
    assert client.redis.connection_pool.connection_class.__name__ == "SSLConnection"
    numbers = ["+14155550150", "+14155550151", "+14155550152"]
    jobs = [client.send(n) for n in numbers]
    for j in jobs:
        assert client.wait(j, timeout=10)["status"] == "sent"
    for n in numbers:
        body = [q for q in sends(twilio) if q["form"].get("To") == n][-1]["form"]["Body"]
        assert client.verify(n, code_in(body)).ok

    # otpctl takes the same kind of URL.  (The first heartbeat can come a period late when
    # the writer connects after the reader is ready: monitor_ready skips it then.)
    admin = srv.client()
    wait_for(lambda: list(admin.scan_iter("otpd:instance:*")), 6, what="the heartbeat")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTPD_", "REDIS_"))}
    env.update(REDIS_URL=srv.url("otpd-admin"), OTPD_HASH_KEY=HASH_KEY)
    p = subprocess.run([OTPCTL, "status", "--json"], env=env, capture_output=True, text=True,
                       timeout=30)
    assert p.returncode == 0 and json.loads(p.stdout)["alive"], p.stderr

    users = {c["user"] for c in admin.client_list()}
    assert {"otpd", "otpd-web"} <= users, users
    log = tun.log()
    assert "Certificate accepted at depth=0: O=otpd tests, CN=%s" % TLS_NAME in log, log[-2000:]
    assert d.stop() == 0
    assert "NOPERM" not in d.stderr
    assert_acl_log_clean(srv)
    admin.close()


@pytest.mark.parametrize("case", ["wrong_ca", "wrong_name"])
def test_stunnel_refuses_an_unverified_server(case, tls_redis, tunnels, otpd_factory):
    """A tunnel trusting another CA, or expecting another name, refuses the server: the
    daemon never becomes ready and stunnel's log names the failure.  rediss:// with the
    wrong CA fails the same way."""
    need_otpd()
    srv = tls_redis
    if case == "wrong_ca":
        tun = tunnels(srv, CAfile=srv.tls["wrong_ca"])
        why = "certificate verify failed"
    else:
        tun = tunnels(srv, checkHost="other.test")
        why = "Subject checks failed"
    d = otpd_factory({"REDIS_URL": srv.url("otpd", port=tun.port)}, start=False)
    d.start(wait_ready=False)
    wait_for(lambda: "Rejected by CERT" in tun.log(), 10, what="stunnel to refuse the server")
    time.sleep(1.5)
    log = tun.log()
    print("\n".join([l for l in log.splitlines() if "CERT" in l or "verify" in l][:3]))
    print("\n".join([l for l in d.stderr.splitlines() if "redis" in l][:3]))
    assert "queue: ready" not in d.stderr, d.stderr[-2000:]
    d.assert_alive()
    assert why in log and "Certificate accepted at depth=0" not in log, log[-2000:]
    admin = srv.client()
    assert "otpd" not in {c["user"] for c in admin.client_list()}
    if case == "wrong_ca":
        bad = redis.Redis(host="127.0.0.1", port=srv.port, ssl=True,
                          ssl_ca_certs=srv.tls["wrong_ca"], ssl_check_hostname=True,
                          username="otpd-web", password=srv.passwords["otpd-web"])
        with pytest.raises(redis.exceptions.ConnectionError, match="certificate verify failed"):
            bad.ping()
    assert d.stop() == 0
    admin.close()


# --- the shipped unit and drop-in --------------------------------------------------------

def test_tunnel_unit_and_otpd_drop_in_verify(tmp_path):
    """systemd/otpd-redis-tunnel.service and the drop-in docs/redis.md shows for otpd.service
    pass systemd-analyze verify, and the drop-in's Requires= finds the tunnel's unit."""
    need("systemd-analyze", "stunnel4")
    with open(TUNNEL_UNIT) as f:
        unit = f.read()
    assert "ExecStart=/usr/bin/stunnel4 /etc/otpd/stunnel-redis.conf" in unit
    assert re.search(r"(?m)^Restart=always$", unit)
    with open(REDIS_DOC) as f:
        doc = f.read()
    m = re.search(r"```ini\n# /etc/systemd/system/otpd.service.d/redis-tunnel.conf\n(.*?)```",
                  doc, re.S)
    assert m, "docs/redis.md shows the drop-in as an ini block"
    drop_in = m.group(1)
    assert "Requires=otpd-redis-tunnel.service" in drop_in
    assert "After=otpd-redis-tunnel.service" in drop_in
    units = tmp_path / "units"
    (units / "otpd.service.d").mkdir(parents=True)
    with open(OTPD_UNIT) as f:  # otpd is not installed here: a stand-in command
        (units / "otpd.service").write_text(re.sub(r"(?m)^ExecStart=.*$", "ExecStart=/bin/true",
                                                   f.read()))
    shutil.copy(TUNNEL_UNIT, str(units / "otpd-redis-tunnel.service"))
    (units / "otpd.service.d" / "redis-tunnel.conf").write_text(drop_in)
    for name in ("otpd-redis-tunnel.service", "otpd.service"):
        p = subprocess.run(["systemd-analyze", "verify", str(units / name)],
                           capture_output=True, text=True, timeout=60)
        out = (p.stdout + p.stderr).strip()
        print("systemd-analyze verify %s: rc %d %s" % (name, p.returncode, out))
        assert p.returncode == 0 and "Unknown" not in out and "ignoring" not in out, out


def test_docs_show_the_shipped_rules_and_tunnel():
    """docs/redis.md quotes conf/redis-users.acl whole and the settings of
    conf/stunnel-redis.conf, so neither drifts from the shipped file."""
    with open(REDIS_DOC) as f:
        doc = f.read()
    # The Sentinel section comes first; another change writes it.
    assert doc.startswith("# ") and "\n## Sentinel\n" in doc.split("\n## ACL users\n")[0]
    with open(ACL_FILE) as f:
        acl = f.read()
    assert "```\n" + acl + "```" in doc, "docs/redis.md does not show conf/redis-users.acl as shipped"
    with open(STUNNEL_CONF) as f:
        settings = [l.strip() for l in f if l.strip() and not l.lstrip().startswith((";", "#"))]
    m = re.search(r"```ini\n(foreground = yes\n.*?)```", doc, re.S)
    assert m, "docs/redis.md shows the tunnel's configuration"
    shown = [l.strip() for l in m.group(1).splitlines() if l.strip()]
    assert shown == settings, (shown, settings)

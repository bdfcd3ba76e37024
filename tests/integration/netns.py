#!/usr/bin/python3
"""Hosts in network namespaces for the high-availability tests (test_ha_netns.py).

Test side (imported by the test, which runs as root in the initial namespace):

    Topology   one Linux bridge and one namespace per host, each joined to the bridge by a
               veth pair (eth0 inside the namespace, "oh<run>-<host>" outside), addresses
               from 10.213.X.0/24.  popen() starts a process on a host with `ip netns exec`,
               link_down()/link_up() cut a host off at its bridge port, impair() puts delay
               and loss on a host's packets towards given hosts.  destroy() kills every
               process it started and deletes namespaces, veths and the bridge.
    cleanup_stale()  the same for leftovers of a run that crashed (names carry its pid).
    RedisNode, SentinelNode, ProviderMock, WebAgent   the processes on those hosts.

Run as programs (`/usr/bin/python3 netns.py agent|relay ...`):

    agent      on the web host (`ip netns exec`), the web application's side: a JSON-lines
               RPC on stdin/stdout (it exits when stdin closes) that enqueues jobs
               through redis-py's Sentinel client (following failovers like a real site),
               reads statuses, verifies codes with the otpd Python client and talks to the
               provider mock's control API.
    relay      in the initial namespace, a userspace netem: moves frames between the impaired
               host's bridge-side veth (taken out of the bridge) and a new bridge port with
               AF_PACKET sockets, delaying and dropping the host's outgoing frames.  The kernel
               this was written on has no sch_netem (`tc qdisc add ... netem` answers
               "Specified qdisc kind is unknown"), so the relay stands in for it, with real
               packet loss that TCP has to repair.  It exits when the test process dies.

Nothing here imports conftest, so that the namespace side runs on its own.
"""
import argparse
import ctypes
import fcntl
import heapq
import json
import os
import random
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
PY = "/usr/bin/python3"

NS_PREFIX = "otpdha-"          # namespaces: otpdha-<pid>-<host>
IF_PREFIX = "oh"               # root-side links: oh<pid base36>-<code>[suffix]  (<= 15 chars)
_IF_RE = re.compile(r"^%s([0-9a-z]{1,6})-[a-z0-9]{2,4}$" % IF_PREFIX)
_NS_RE = re.compile(r"^%s(\d+)-" % NS_PREFIX)

# host name -> (code used in interface names, last octet)
HOSTS = {
    "redis1": ("r1", 1), "redis2": ("r2", 2),
    "sent1": ("s1", 11), "sent2": ("s2", 12), "sent3": ("s3", 13),
    "otpd1": ("o1", 21), "otpd2": ("o2", 22),
    "web": ("wb", 31), "prov": ("pv", 41),
}


# --------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------
def run(argv, check=True, timeout=20, ns=None, quiet=False):
    if ns is not None:
        argv = ["ip", "netns", "exec", ns] + list(argv)
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       timeout=timeout)
    if check and p.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" % (" ".join(argv), p.returncode,
                                                   (p.stderr or p.stdout).strip()))
    return p


def b36(n):
    s = ""
    while True:
        n, r = divmod(n, 36)
        s = "0123456789abcdefghijklmnopqrstuvwxyz"[r] + s
        if n == 0:
            return s


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def preflight():
    """None if the topology can be built here, else the reason it cannot."""
    if os.geteuid() != 0:
        return "needs root to create network namespaces (euid %d)" % os.geteuid()
    for tool in ("ip", "redis-server", "redis-sentinel", "openssl"):
        if shutil.which(tool) is None and not os.path.exists("/usr/bin/" + tool):
            return "%s is not installed" % tool
    probe = "%s%d-probe" % (NS_PREFIX, os.getpid())
    p = run(["ip", "netns", "add", probe], check=False)
    if p.returncode != 0:
        return "`ip netns add` failed: %s" % p.stderr.strip()
    run(["ip", "netns", "del", probe], check=False)
    return None


def _kill_pids(pids):
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def ns_pids(ns):
    p = run(["ip", "netns", "pids", ns], check=False)
    return [int(x) for x in p.stdout.split()] if p.returncode == 0 else []


def cleanup_stale(log=lambda *a: None):
    """Remove namespaces and links left by an earlier run of this harness that died
    without tearing down (its pid, which the names carry, is gone)."""
    me = os.getpid()
    p = run(["ip", "netns", "list"], check=False)
    for line in p.stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        m = _NS_RE.match(name)
        if not m or int(m.group(1)) == me or pid_alive(int(m.group(1))):
            continue
        pids = ns_pids(name)
        log("stale namespace %s (processes %s): removing" % (name, pids))
        _kill_pids(pids)
        run(["ip", "netns", "del", name], check=False)
    p = run(["ip", "-o", "link", "show"], check=False)
    for line in p.stdout.splitlines():
        m = re.match(r"^\d+:\s+([^:@\s]+)", line)
        if not m:
            continue
        name = m.group(1)
        mm = _IF_RE.match(name)
        if not mm:
            continue
        pid = int(mm.group(1), 36)
        if pid == me or pid_alive(pid):
            continue
        log("stale link %s: removing" % name)
        run(["ip", "link", "del", name], check=False)


# ethtool's legacy ioctls, so that no ethtool binary is needed.
SIOCETHTOOL = 0x8946
ETHTOOL_STXCSUM, ETHTOOL_SSG, ETHTOOL_STSO = 0x17, 0x19, 0x1F
ETHTOOL_SGSO, ETHTOOL_SGRO = 0x24, 0x2C


def offloads_off(ifname):
    """Checksums computed and segments cut in software, so that frames read from an
    AF_PACKET socket are complete and no larger than the MTU (the relay needs that)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for cmd in (ETHTOOL_STXCSUM, ETHTOOL_SSG, ETHTOOL_STSO, ETHTOOL_SGSO, ETHTOOL_SGRO):
            buf = ctypes.create_string_buffer(struct.pack("II", cmd, 0))
            ifr = struct.pack("16sP", ifname.encode(), ctypes.addressof(buf)).ljust(40, b"\0")
            try:
                fcntl.ioctl(s.fileno(), SIOCETHTOOL, ifr)
            except OSError:
                pass  # not every feature can be changed on every kernel
    finally:
        s.close()


def make_leaf(ca, ip, dirpath):
    """A server certificate for `ip`, signed by testca's CA (its own leaf names only
    127.0.0.1 and localhost).  Returns (cert, key)."""
    d = os.path.abspath(str(dirpath))
    os.makedirs(d, exist_ok=True)
    key, csr, cert, ext = (os.path.join(d, n) for n in ("prov.key", "prov.csr", "prov.pem",
                                                         "prov.ext"))
    run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-out", key])
    run(["openssl", "req", "-new", "-key", key, "-out", csr, "-subj", "/O=otpd tests/CN=" + ip])
    with open(ext, "w") as f:
        f.write("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                "extendedKeyUsage=serverAuth\nsubjectAltName=IP:%s\n" % ip)
    run(["openssl", "x509", "-req", "-in", csr, "-CA", ca["ca_cert"], "-CAkey", ca["ca_key"],
         "-set_serial", "0x" + os.urandom(8).hex(), "-days", "30", "-sha256",
         "-extfile", ext, "-out", cert])
    return cert, key


def _wait(pred, timeout, what, interval=0.05):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, what))
        time.sleep(interval)


# --------------------------------------------------------------------------
# the topology
# --------------------------------------------------------------------------
class Host:
    def __init__(self, name, code, ip, ns, root_if):
        self.name, self.code, self.ip, self.ns, self.root_if = name, code, ip, ns, root_if

    def __repr__(self):
        return "<%s %s>" % (self.name, self.ip)


class Topology:
    def __init__(self, tmpdir, hosts=HOSTS, log=print):
        pid = os.getpid()
        self.tag = b36(pid)
        self.x = 20 + pid % 200   # 10.213.X.0/24; namespaced, so clashes between runs are harmless
        self.subnet = "10.213.%d" % self.x
        self.bridge = "%s%s-br" % (IF_PREFIX, self.tag)
        self.dir = str(tmpdir)
        self.log = log
        self.hosts = {}
        for name, (code, octet) in hosts.items():
            self.hosts[name] = Host(name, code, "%s.%d" % (self.subnet, octet),
                                    "%s%d-%s" % (NS_PREFIX, pid, name),
                                    "%s%s-%s" % (IF_PREFIX, self.tag, code))
        self.procs = []          # every Popen we started, for teardown
        self.relays = {}         # host -> (Popen, relay link a, relay link b)
        self.down = set()
        self.created = False

    def __getitem__(self, name):
        return self.hosts[name]

    def ip(self, name):
        return self.hosts[name].ip

    # -- build / tear down ------------------------------------------------
    def create(self):
        cleanup_stale(self.log)
        self.created = True
        run(["ip", "link", "add", self.bridge, "type", "bridge", "stp_state", "0",
             "forward_delay", "0"])
        run(["ip", "link", "set", self.bridge, "up"])
        for h in self.hosts.values():
            run(["ip", "netns", "add", h.ns])
            tmp = h.root_if + "n"
            run(["ip", "link", "add", h.root_if, "type", "veth", "peer", "name", tmp])
            offloads_off(h.root_if)
            offloads_off(tmp)
            run(["ip", "link", "set", tmp, "netns", h.ns])
            run(["ip", "-n", h.ns, "link", "set", tmp, "name", "eth0"])
            run(["ip", "-n", h.ns, "addr", "add", h.ip + "/24", "dev", "eth0"])
            run(["ip", "-n", h.ns, "link", "set", "eth0", "up"])
            run(["ip", "-n", h.ns, "link", "set", "lo", "up"])
            run(["ip", "link", "set", h.root_if, "master", self.bridge])
            run(["ip", "link", "set", h.root_if, "up"])

    def destroy(self):
        """Kill every process, delete namespaces, veths and the bridge; never raises."""
        errors = []
        for p in list(self.procs):
            try:
                if p.poll() is None:
                    p.kill()
                    p.wait(5)
            except Exception as e:  # noqa: BLE001
                errors.append("kill %s: %s" % (p.pid, e))
        for h in self.hosts.values():
            try:
                _kill_pids(ns_pids(h.ns))   # only processes started on our hosts
            except Exception as e:  # noqa: BLE001
                errors.append("%s: %s" % (h.ns, e))
        for h in self.hosts.values():
            run(["ip", "netns", "del", h.ns], check=False)
        for _p, a, b in self.relays.values():
            run(["ip", "link", "del", a], check=False)
        self.relays.clear()
        for h in self.hosts.values():
            if os.path.exists("/sys/class/net/" + h.root_if):
                run(["ip", "link", "del", h.root_if], check=False)
        run(["ip", "link", "del", self.bridge], check=False)
        left = [n for n in os.listdir("/sys/class/net") if n.startswith(IF_PREFIX + self.tag + "-")]
        if left:
            errors.append("links left: %s" % left)
        return errors

    # -- processes --------------------------------------------------------
    def popen(self, host, argv, log_name, env=None, **kw):
        h = self.hosts[host]
        out = open(os.path.join(self.dir, log_name), "ab")
        try:
            p = subprocess.Popen(["ip", "netns", "exec", h.ns] + list(argv), stdout=out,
                                 stderr=subprocess.STDOUT, env=env, **kw)
        finally:
            out.close()
        self.procs.append(p)
        return p

    # -- faults -----------------------------------------------------------
    def link_down(self, host):
        """The host's switch port goes down: it keeps running and keeps its address,
        but no frame leaves or reaches it."""
        run(["ip", "link", "set", self.hosts[host].root_if, "down"])
        self.down.add(host)

    def link_up(self, host):
        run(["ip", "link", "set", self.hosts[host].root_if, "up"])
        self.down.discard(host)

    def impair(self, host, delay_ms, loss, towards):
        """Delay and drop the host's outgoing IPv4 packets addressed to `towards` (host
        names), as `tc qdisc add dev <host's veth> root netem delay Dms loss L%` would,
        limited to those destinations.  The host's bridge port is taken out of the bridge
        and a relay process moves frames between it and a new port."""
        h = self.hosts[host]
        a, b = h.root_if + "a", h.root_if + "b"
        run(["ip", "link", "add", a, "type", "veth", "peer", "name", b])
        offloads_off(a)
        offloads_off(b)
        run(["ip", "link", "set", b, "master", self.bridge])
        run(["ip", "link", "set", a, "up"])
        run(["ip", "link", "set", b, "up"])
        ready = os.path.join(self.dir, "relay-%s.ready" % host)
        if os.path.exists(ready):
            os.unlink(ready)
        out = open(os.path.join(self.dir, "relay-%s.log" % host), "ab")
        try:
            p = subprocess.Popen([PY, os.path.abspath(__file__), "relay", "--host-if", h.root_if,
                                  "--net-if", a, "--delay-ms", str(delay_ms), "--loss",
                                  str(loss), "--ready", ready,
                                  "--to", ",".join(self.hosts[t].ip for t in towards)],
                                 stdout=out, stderr=subprocess.STDOUT)
        finally:
            out.close()
        self.procs.append(p)
        self.relays[host] = (p, a, b)
        _wait(lambda: os.path.exists(ready) or p.poll() is not None, 10, "the relay")
        if p.poll() is not None:
            raise RuntimeError("relay exited %s" % p.returncode)
        # Only now leave the bridge, so that the gap is a few milliseconds.
        run(["ip", "link", "set", h.root_if, "nomaster"])

    def unimpair(self, host):
        if host not in self.relays:
            return None
        p, a, _b = self.relays.pop(host)
        run(["ip", "link", "set", self.hosts[host].root_if, "master", self.bridge])
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)
        run(["ip", "link", "del", a], check=False)
        try:
            with open(os.path.join(self.dir, "relay-%s.log" % host)) as f:
                lines = [l for l in f.read().splitlines() if l.startswith("relay stats")]
            return lines[-1] if lines else None
        except OSError:
            return None

    def heal(self):
        for host in list(self.relays):
            self.unimpair(host)
        for host in list(self.down):
            self.link_up(host)


# --------------------------------------------------------------------------
# processes on the hosts
# --------------------------------------------------------------------------
class _Node:
    """A server process on one of the hosts (self.proc, started by its subclass)."""

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill(self):
        if self.alive():
            self.proc.kill()
            self.proc.wait(5)


class RedisNode(_Node):
    def __init__(self, topo, host):
        self.topo, self.host, self.ip, self.port = topo, host, topo.ip(host), 6379
        self.dir = os.path.join(topo.dir, host)
        os.makedirs(self.dir, exist_ok=True)
        self.proc = None
        self.starts = 0

    @property
    def addr(self):
        return "%s:%d" % (self.ip, self.port)

    def start(self, replicaof=None):
        self.starts += 1
        argv = [shutil.which("redis-server") or "/usr/bin/redis-server",
                "--port", str(self.port), "--bind", self.ip, "--protected-mode", "no",
                "--save", "", "--appendonly", "no", "--dir", self.dir, "--daemonize", "no",
                "--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0",
                "--logfile", os.path.join(self.dir, "redis.log")]
        if replicaof:
            argv += ["--replicaof", replicaof, str(self.port)]
        self.proc = self.topo.popen(self.host, argv, "%s.stdout" % self.host,
                                    stdin=subprocess.DEVNULL)


class SentinelNode(_Node):
    def __init__(self, topo, host, master_name, master_ip, quorum=2, down_after_ms=1000,
                 failover_timeout_ms=3000):
        self.topo, self.host, self.ip, self.port = topo, host, topo.ip(host), 26379
        self.dir = os.path.join(topo.dir, host)
        os.makedirs(self.dir, exist_ok=True)
        self.conf = os.path.join(self.dir, "sentinel.conf")
        with open(self.conf, "w") as f:
            f.write("port %d\nbind %s\nprotected-mode no\ndaemonize no\ndir %s\nlogfile %s\n"
                    "sentinel resolve-hostnames no\n"
                    "sentinel monitor %s %s 6379 %d\n"
                    "sentinel down-after-milliseconds %s %d\n"
                    "sentinel failover-timeout %s %d\n"
                    "sentinel parallel-syncs %s 1\n"
                    % (self.port, self.ip, self.dir, os.path.join(self.dir, "sentinel.log"),
                       master_name, master_ip, quorum, master_name, down_after_ms,
                       master_name, failover_timeout_ms, master_name))
        self.proc = None

    @property
    def addr(self):
        return "%s:%d" % (self.ip, self.port)

    def start(self):
        # The sentinel rewrites its file with what it learnt; a restart starts from that.
        self.proc = self.topo.popen(self.host, [shutil.which("redis-sentinel") or
                                                "/usr/bin/redis-sentinel", self.conf],
                                    "%s.stdout" % self.host, stdin=subprocess.DEVNULL)

    def log(self):
        try:
            with open(os.path.join(self.dir, "sentinel.log"), errors="replace") as f:
                return f.read()
        except OSError:
            return ""


class ProviderMock:
    """tests/mocks/provider_mock.py on the `prov` host, with a certificate for its address."""

    PORT = 8443

    def __init__(self, topo, host, ca):
        self.topo, self.host, self.ip = topo, host, topo.ip(host)
        self.ca = ca
        d = os.path.join(topo.dir, host)
        self.cert, self.key = make_leaf(ca, self.ip, d)
        ready = os.path.join(d, "ready.json")
        self.proc = topo.popen(host, [PY, os.path.join(ROOT, "tests", "mocks", "provider_mock.py"),
                                      "--host", self.ip, "--port", str(self.PORT),
                                      "--cert", self.cert, "--key", self.key,
                                      "--ready-file", ready, "--backlog", "1024"],
                               "prov.log", stdin=subprocess.DEVNULL)
        _wait(lambda: os.path.exists(ready) or self.proc.poll() is not None, 15, "the mock")
        if self.proc.poll() is not None:
            raise RuntimeError("provider mock exited %s" % self.proc.returncode)
        self.base = "https://%s:%d" % (self.ip, self.PORT)


class AgentError(Exception):
    pass


class WebAgent:
    """The `agent` below, running on the web host; call(op, **args) -> result."""

    def __init__(self, topo, host="web"):
        self.topo = topo
        err = open(os.path.join(topo.dir, "web-agent.log"), "ab")
        try:
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", topo[host].ns, PY, "-u", os.path.abspath(__file__),
                 "agent"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err)
        finally:
            err.close()
        topo.procs.append(self.proc)
        self.buf = b""
        self.lock = threading.Lock()

    def call(self, op, _timeout=90, **args):
        with self.lock:
            if self.proc.poll() is not None:
                raise AgentError("web agent exited %s" % self.proc.returncode)
            req = dict(args, op=op)
            self.proc.stdin.write((json.dumps(req) + "\n").encode())
            self.proc.stdin.flush()
            deadline = time.monotonic() + _timeout
            fd = self.proc.stdout.fileno()
            while b"\n" not in self.buf:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AgentError("web agent: no answer to %s in %ss" % (op, _timeout))
                r, _, _ = select.select([fd], [], [], left)
                if r:
                    chunk = os.read(fd, 1 << 20)
                    if not chunk:
                        raise AgentError("web agent closed its output (exit %s)"
                                         % self.proc.poll())
                    self.buf += chunk
            line, self.buf = self.buf.split(b"\n", 1)
        rep = json.loads(line)
        if not rep["ok"]:
            raise AgentError("%s: %s\n%s" % (op, rep["error"], rep.get("tb", "")))
        return rep["result"]

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(5)
            except Exception:  # noqa: BLE001
                self.proc.kill()


# ==========================================================================
# namespace side: the web agent
# ==========================================================================
FINAL = {"sent", "delivered", "undelivered", "failed", "expired", "rejected", "rate_limited"}
CODE_RE = re.compile(r"\b(\d{6})\b")


class _Agent:
    def __init__(self):
        sys.path.insert(0, os.path.join(ROOT, "python"))
        import redis  # noqa: F401  (Debian's python3-redis)
        self.redis = redis
        self.sentinel = None
        self.jobs = {}       # tag -> enqueue thread state
        self.watches = {}    # tag -> watcher state

    # -- set-up -------------------------------------------------------------
    def op_setup(self, sentinels, master_name, hash_key, mock_host, mock_port, ca_file,
                 prefix="otpd:"):
        from redis.sentinel import Sentinel
        self.sentinel_addrs = [tuple(s) for s in sentinels]
        self.master_name = master_name
        self.sentinel = Sentinel(self.sentinel_addrs, socket_timeout=0.5,
                                 socket_connect_timeout=0.5)
        self.master = self._master_client()
        self.hash_key, self.prefix = hash_key, prefix
        self.mock_host, self.mock_port, self.ca_file = mock_host, mock_port, ca_file
        return True

    def _master_client(self, single=False):
        from redis.sentinel import SentinelConnectionPool
        pool = SentinelConnectionPool(self.master_name, self.sentinel, socket_timeout=1.0,
                                      socket_connect_timeout=1.0, decode_responses=True)
        return self.redis.Redis(connection_pool=pool, single_connection_client=single)

    def _retry(self, fn, timeout=10.0):
        """Run fn() against the master, riding out a failover."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return fn()
            except (self.redis.exceptions.ConnectionError, self.redis.exceptions.TimeoutError,
                    self.redis.exceptions.ReadOnlyError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    # -- Redis and Sentinel state -------------------------------------------
    def op_discover(self):
        try:
            return list(self.sentinel.discover_master(self.master_name))
        except Exception as e:  # noqa: BLE001
            return None if "MasterNotFound" in type(e).__name__ else str(e)

    def op_sentinels(self):
        out = []
        for host, port in self.sentinel_addrs:
            c = self.redis.Redis(host=host, port=port, socket_timeout=0.5,
                                 socket_connect_timeout=0.5, decode_responses=True)
            try:
                m = c.execute_command("SENTINEL", "MASTER", self.master_name)
                m = dict(zip(m[::2], m[1::2])) if isinstance(m, list) else m
                reps = []
                for r in c.execute_command("SENTINEL", "REPLICAS", self.master_name):
                    r = dict(zip(r[::2], r[1::2])) if isinstance(r, list) else r
                    reps.append({k: r.get(k) for k in ("ip", "port", "flags",
                                                       "master-link-status",
                                                       "master-host")})
                out.append({"addr": "%s:%d" % (host, port), "ok": True,
                            "master": "%s:%s" % (m.get("ip"), m.get("port")),
                            "flags": m.get("flags"),
                            "others": int(m.get("num-other-sentinels", 0)),
                            "replicas": reps,
                            "epoch": int(m.get("config-epoch", 0))})
            except Exception as e:  # noqa: BLE001
                out.append({"addr": "%s:%d" % (host, port), "ok": False, "error": str(e)})
            finally:
                c.close()
        return out

    def op_role(self, host, port=6379):
        c = self.redis.Redis(host=host, port=port, socket_timeout=1.0, socket_connect_timeout=1.0,
                             decode_responses=True)
        try:
            return c.execute_command("ROLE")
        except Exception as e:  # noqa: BLE001
            return ["error", str(e)]
        finally:
            c.close()

    def op_flush(self):
        def f():
            self.master.flushall()
            return self.master.execute_command("WAIT", 1, 2000)
        return self._retry(f)

    # -- enqueueing (the site) ----------------------------------------------
    def op_enqueue_start(self, tag, prefix, n, number_fmt, rate=0, batch=50, wait_replicas=0,
                         wait_timeout_ms=500, ttl=300, give_up_s=60):
        st = {"acked": [], "errors": 0, "retries": 0, "not_replicated": 0, "failed": [],
              "t0": time.time(), "t1": None, "done": False, "last_error": None}
        self.jobs[tag] = st

        def loop():
            # One connection, so that WAIT counts this client's own writes.
            c = self._master_client(single=True)
            i = 0
            try:
                while i < n:
                    ids = list(range(i, min(n, i + batch)))
                    if rate:
                        due = st["t0"] + i / float(rate)
                        d = due - time.time()
                        if d > 0:
                            time.sleep(d)
                    give_up = time.monotonic() + give_up_s
                    names = ["%s-%d" % (prefix, j) for j in ids]
                    while True:
                        try:
                            for j, name in zip(ids, names):
                                c.xadd(self.prefix + "jobs", {"job": json.dumps(
                                    {"id": name, "to": number_fmt % j, "ttl": ttl,
                                     "created_ms": int(time.time() * 1000)})})
                            if wait_replicas:
                                acks = c.execute_command("WAIT", wait_replicas, wait_timeout_ms)
                                while acks < wait_replicas and time.monotonic() < give_up:
                                    st["not_replicated"] += 1
                                    acks = c.execute_command("WAIT", wait_replicas,
                                                             wait_timeout_ms)
                                if acks < wait_replicas:
                                    raise TimeoutError("WAIT: %d replicas" % acks)
                            st["acked"] += names
                            break
                        except Exception as e:  # noqa: BLE001
                            st["errors"] += 1
                            st["last_error"] = "%s: %s" % (type(e).__name__, e)
                            if time.monotonic() > give_up:
                                st["failed"] += names
                                break
                            st["retries"] += 1
                            time.sleep(0.1)   # the same ids again: a duplicate is harmless
                    i += batch
            finally:
                st["t1"] = time.time()
                st["done"] = True
                c.close()
        t = threading.Thread(target=loop, daemon=True)
        st["thread"] = t
        t.start()
        return st["t0"]

    def op_enqueue_progress(self, tag):
        st = self.jobs[tag]
        return {"acked": len(st["acked"]), "done": st["done"], "errors": st["errors"]}

    def op_enqueue_result(self, tag, timeout=60):
        st = self.jobs[tag]
        st["thread"].join(timeout)
        return {k: v for k, v in st.items() if k != "thread"}

    # -- statuses --------------------------------------------------------------
    def _statuses(self, ids, client=None):
        c = client or self.master
        pipe = c.pipeline(transaction=False)
        for i in ids:
            pipe.hget(self.prefix + "job:" + i, "status")
        return pipe.execute()

    def op_statuses(self, ids):
        return self._retry(lambda: self._statuses(ids))

    def op_progress(self, ids):
        sts = self._retry(lambda: self._statuses(ids))
        by = {}
        for s in sts:
            by[s or "none"] = by.get(s or "none", 0) + 1
        return {"final": sum(1 for s in sts if s in FINAL), "total": len(ids), "by": by}

    def op_latency(self, ids):
        """From the job's created_ms (the site's enqueue) to its sent_ms: p50, p95, max in ms."""
        def f():
            pipe = self.master.pipeline(transaction=False)
            for i in ids:
                pipe.hmget(self.prefix + "job:" + i, "created_ms", "sent_ms")
            return pipe.execute()
        lat = sorted(int(s) - int(c) for c, s in self._retry(f) if c and s)
        if not lat:
            return None
        return {"n": len(lat), "p50": lat[len(lat) // 2], "p95": lat[int(len(lat) * 0.95)],
                "max": lat[-1]}

    def op_drained(self):
        """The group has read every entry and nothing is pending."""
        def f():
            groups = self.master.xinfo_groups(self.prefix + "jobs")
            info = self.master.xinfo_stream(self.prefix + "jobs")
            g = next((g for g in groups if g["name"] == "otpd"), None)
            if g is None:
                return {"drained": False, "why": "no group"}
            last = info.get("last-generated-id")
            return {"drained": g["pending"] == 0 and g.get("last-delivered-id") == last,
                    "pending": g["pending"], "lag": g.get("lag"),
                    "last_delivered": g.get("last-delivered-id"), "last": last,
                    "length": info.get("length")}
        try:
            return self._retry(f, timeout=3)
        except Exception as e:  # noqa: BLE001
            return {"drained": False, "why": str(e)}

    def op_watch_start(self, tag, interval=0.25):
        """Poll the statuses of the jobs `tag` has enqueued so far; remember the first
        final status seen for each (to tell later whether one vanished)."""
        w = {"seen": {}, "stop": False, "polls": 0, "errors": 0}
        self.watches[tag] = w
        c = self._master_client()

        def loop():
            while not w["stop"]:
                ids = [i for i in list(self.jobs[tag]["acked"]) if i not in w["seen"]]
                try:
                    for i, s in zip(ids, self._statuses(ids, c)):
                        if s in FINAL:
                            w["seen"][i] = s
                    w["polls"] += 1
                except Exception:  # noqa: BLE001
                    w["errors"] += 1
                time.sleep(interval)
        t = threading.Thread(target=loop, daemon=True)
        w["thread"] = t
        t.start()
        return True

    def op_watch_stop(self, tag):
        w = self.watches.pop(tag)
        w["stop"] = True
        w["thread"].join(5)
        return {"seen": w["seen"], "polls": w["polls"], "errors": w["errors"]}

    # -- codes -------------------------------------------------------------------
    def op_verify(self, numbers, purpose="login"):
        """numbers: {to: [codes the phone got, oldest first]}.  For each number: which
        codes match the stored MAC (read only), then a real verify() of the one that
        does (or of the last one), which spends the code."""
        from otpd import OTPClient
        from otpd.client import mac
        client = OTPClient(redis=self.master, hash_key=self.hash_key, prefix=self.prefix)
        tos = list(numbers)
        stored = self._retry(lambda: self._hgets(["%sotp:%s:%s" % (self.prefix, purpose, t)
                                                  for t in tos], "mac"))
        out = {}
        for to, m in zip(tos, stored):
            codes = list(dict.fromkeys(numbers[to]))
            ok = [m is not None and m == mac(purpose, to, c, self.hash_key) for c in codes]
            pick = codes[ok.index(True)] if True in ok else codes[-1]
            res = self._retry(lambda: client.verify(to, pick, purpose=purpose))
            out[to] = {"codes": codes, "mac_ok": ok, "verify": res.status}
        return out

    def _hgets(self, keys, field):
        pipe = self.master.pipeline(transaction=False)
        for k in keys:
            pipe.hget(k, field)
        return pipe.execute()

    # -- the provider mock ------------------------------------------------------
    def op_mock(self, path, body=None):
        import http.client
        import ssl
        ctx = ssl.create_default_context(cafile=self.ca_file)
        c = http.client.HTTPSConnection(self.mock_host, self.mock_port, context=ctx, timeout=20)
        try:
            data = json.dumps(body).encode() if body is not None else None
            c.request("POST" if body is not None else "GET", "/_mock/" + path, body=data,
                      headers={"Content-Type": "application/json"})
            r = c.getresponse()
            raw = r.read()
        finally:
            c.close()
        if r.status != 200:
            raise RuntimeError("mock %s: %s %s" % (path, r.status, raw[:200]))
        return json.loads(raw)

    def op_sends(self):
        """Twilio POSTs at the mock: [wall time, To, code in the body, status, disconnected]."""
        reqs = self.op_mock("requests?provider=twilio")
        out = []
        for q in reqs:
            if q["method"] != "POST":
                continue
            f = q.get("form") or {}
            m = CODE_RE.search(f.get("Body") or "")
            out.append([q["wall_time"], f.get("To"), m.group(1) if m else None, q["status"],
                        q["client_disconnected"]])
        return out


def agent_main():
    agent = _Agent()
    out = sys.stdout
    sys.stdout = sys.stderr   # nothing but replies on the pipe
    for line in sys.stdin:
        if not line.strip():
            continue
        req = json.loads(line)
        op = req.pop("op")
        try:
            rep = {"ok": True, "result": getattr(agent, "op_" + op)(**req)}
        except Exception as e:  # noqa: BLE001
            rep = {"ok": False, "error": "%s: %s" % (type(e).__name__, e),
                   "tb": traceback.format_exc()}
        out.write(json.dumps(rep) + "\n")
        out.flush()


# ==========================================================================
# namespace side: the relay (netem in userspace)
# ==========================================================================
ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4


def relay_main(argv):
    ap = argparse.ArgumentParser()
    ap.add_argument("--host-if", required=True, help="the impaired host's port")
    ap.add_argument("--net-if", required=True, help="the new port's end, towards the bridge")
    ap.add_argument("--delay-ms", type=float, default=0)
    ap.add_argument("--loss", type=float, default=0, help="fraction dropped, 0.01 = 1%%")
    ap.add_argument("--to", default="", help="impair only IPv4 packets to these addresses")
    ap.add_argument("--ready")
    ap.add_argument("--seed", type=int, default=None)
    a = ap.parse_args(argv)
    rnd = random.Random(a.seed)
    targets = {socket.inet_aton(ip) for ip in a.to.split(",") if ip}
    socks = {}
    for name in (a.host_if, a.net_if):
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
        s.bind((name, 0))
        s.setblocking(False)
        socks[name] = s
    host_s, net_s = socks[a.host_if], socks[a.net_if]
    stats = {"in": 0, "out": 0, "impaired": 0, "dropped": 0, "send_errors": 0}
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    if a.ready:
        with open(a.ready, "w") as f:
            f.write(str(os.getpid()))
    heap, seq = [], 0
    delay = a.delay_ms / 1000.0

    def send(s, frame):
        try:
            s.send(frame)
        except OSError:
            stats["send_errors"] += 1

    parent = os.getppid()
    while not stop and os.getppid() == parent:   # the test died: so do we
        now = time.monotonic()
        while heap and heap[0][0] <= now:
            _due, _n, frame = heapq.heappop(heap)
            send(net_s, frame)
        timeout = max(0.0, heap[0][0] - now) if heap else 0.5
        try:
            ready, _, _ = select.select([host_s, net_s], [], [], timeout)
        except InterruptedError:
            continue
        for s in ready:
            for _ in range(256):
                try:
                    frame, addr = s.recvfrom(65535)
                except (BlockingIOError, InterruptedError):
                    break
                if addr[2] == PACKET_OUTGOING:
                    continue   # our own writes, seen on the way out
                if s is net_s:
                    stats["in"] += 1
                    send(host_s, frame)
                    continue
                stats["out"] += 1
                if (frame[12:14] == b"\x08\x00" and len(frame) >= 34
                        and (not targets or frame[30:34] in targets)):
                    stats["impaired"] += 1
                    if rnd.random() < a.loss:
                        stats["dropped"] += 1
                        continue
                    seq += 1
                    heapq.heappush(heap, (time.monotonic() + delay, seq, frame))
                else:
                    send(net_s, frame)
    for _due, _n, frame in sorted(heap):
        send(net_s, frame)
    print("relay stats " + json.dumps(stats), flush=True)


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "agent":
        agent_main()
    elif len(sys.argv) >= 2 and sys.argv[1] == "relay":
        relay_main(sys.argv[2:])
    else:
        sys.stderr.write("usage: netns.py agent | relay --host-if IF --net-if IF ...\n")
        sys.exit(2)

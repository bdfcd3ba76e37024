#!/usr/bin/python3
"""otpd benchmark (issue #7): otpd against a Celery + twilio-python baseline.

Run through bench/run.sh, which checks the tools.  The only thing built here is
the reference commit of the before/after comparison (below).  This script
starts everything it measures against, on loopback only, in a fresh work
directory, and stops all of it at the end (also on error or Ctrl-C):

  * redis-server (no persistence) on a free 127.0.0.1 port;
  * nginx as the Twilio mock (bench/nginx.conf.in): an instant HTTP/2 port,
    an instant HTTP/1.1-only port, an HTTP/2 port that answers after
    200 ms (echo_sleep, libnginx-mod-http-echo) and the "realistic provider":
    HTTP/1.1 only, answering after 300 ms;
  * otpd (build/otpd, or $OTPD_BIN) with the twilio provider;
  * a Celery worker running bench/celery_baseline.py.

It prints one table and writes the numbers to bench/results/.
BENCH_SCALE=small makes every run shorter (see SCALES).
BENCH_ONLY=realistic runs only the realistic-provider row (otpd with the
settings an operator must give and nothing else, and the Celery baseline
against the same port) and writes bench/results/latest-<scale>-realistic.json.
BENCH_ONLY=compare runs only the before/after comparison that ends every run:
the current otpd against a build of REF_COMMIT (d7a84a1, or $BENCH_REF) made
from this repository (git archive, cmake) into build-ref/<sha>/ and reused
from there; Redis commands per OTP (MONITOR, commandstats), Redis and otpd CPU
per OTP, callgrind and a perf profile of redis-server; it writes
bench/results/latest-<scale>-compare.json.  Without the commit (a shallow
clone) it says why and skips the comparison.
BENCH_ONLY=wait runs only what OTPD_REDIS_WAIT_REPLICAS=1 costs against 0: the
comparison's runs of the current otpd, each redis-server with one replica, both
settings alternating (BENCH_WAIT_N jobs, BENCH_WAIT_REPS runs each); Redis CPU
of the primary and the replica, otpd CPU, WAITs per OTP, throughput; it writes
bench/results/latest-<scale>-wait.json.
Every wait is bounded; a run that does not finish in time is reported as such.
"""
import json
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
sys.path.insert(0, os.path.join(ROOT, "python"))
sys.path.insert(0, os.path.join(ROOT, "tests", "mocks"))
sys.path.insert(0, BENCH)

import redis  # noqa: E402
import testca  # noqa: E402

PY = "/usr/bin/python3"
OTPD = os.environ.get("OTPD_BIN") or os.path.join(ROOT, "build", "otpd")
# A fresh random key per run: otpd refuses the documentation's published test key.
HASH_KEY = os.environ.get("BENCH_HASH_KEY") or secrets.token_hex(32)
SID = "AC0123456789abcdef0123456789abcdef"
TOKEN = "bench-auth-token-0123456789abcdef"
FROM = "+15005550006"
MSG_SID = "SM" + "0123456789abcdef" * 2
TICK = os.sysconf("SC_CLK_TCK")

SCALES = {
    # throughput backlogs, callgrind jobs, in-flight levels, latency seconds,
    # baseline backlog, baseline latency seconds
    "full": dict(thr=[10000, 100000], cg=2000, inflight=[100, 2000, 5000], lat_s=20,
                 base_n=10000, base_lat_s=20, real_n=6000),
    "small": dict(thr=[2000, 10000], cg=2000, inflight=[100, 2000, 5000], lat_s=5,
                  base_n=2000, base_lat_s=5, real_n=3000),
}
SCALE = os.environ.get("BENCH_SCALE", "full")
if SCALE not in SCALES:
    sys.exit("BENCH_SCALE must be full or small, not %r" % SCALE)
P = SCALES[SCALE]
LAT_RATE = 1000
# The settings otpd runs with in the throughput and latency runs (written to the JSON).
OTPD_TUNING = {"OTPD_MAX_INFLIGHT": "1000", "OTPD_BATCH": "200", "OTPD_HTTP_MAX_CONNS": "100"}
BASELINE_CONFIGS = [("prefork", 2), ("prefork", 4), ("gevent", 64)]
# The realistic provider's answer time (echo_sleep on the "real" port of bench/nginx.conf.in).
REAL_LATENCY_S = 0.300
REAL_TARGET = 0.80  # throughput ÷ (request cap ÷ latency)
BENCH_ONLY = os.environ.get("BENCH_ONLY", "")
if BENCH_ONLY not in ("", "realistic", "compare", "wait"):
    sys.exit("BENCH_ONLY must be empty, realistic, compare or wait, not %r" % BENCH_ONLY)

_procs = []


def log(msg):
    sys.stderr.write("[bench %6.1fs] %s\n" % (time.monotonic() - T_START, msg))
    sys.stderr.flush()


T_START = time.monotonic()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(pred, timeout, interval=0.02, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    raise TimeoutError("timed out after %.0fs waiting for %s" % (timeout, what))


def spawn(args, **kw):
    p = subprocess.Popen(args, **kw)
    _procs.append(p)
    return p


def stop(p, sig=signal.SIGTERM, timeout=20):
    if p is None or p.poll() is not None:
        return p.returncode if p else None
    p.send_signal(sig)
    try:
        return p.wait(timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        return p.wait(10)


def cleanup():
    for p in reversed(_procs):
        if p.poll() is None:
            try:
                p.terminate()
                p.wait(10)
            except Exception:
                p.kill()


# ---------------------------------------------------------------- /proc


def proc_stat(pid):
    """(utime+stime seconds, ppid) of one process, or None if it is gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            s = f.read()
    except OSError:
        return None
    fields = s[s.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / TICK, int(fields[1])


def proc_status(pid, key):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])  # kB
    except OSError:
        pass
    return None


def tree(pid):
    """pid and all its descendants."""
    children = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            st = proc_stat(int(d))
            if st:
                children.setdefault(st[1], []).append(int(d))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def open_sockets(pid):
    """Sockets a process holds now (0 if it is gone)."""
    try:
        fds = os.listdir("/proc/%d/fd" % pid)
        return sum(1 for fd in fds
                   if os.readlink("/proc/%d/fd/%s" % (pid, fd)).startswith("socket:"))
    except OSError:
        return 0


def tree_cpu(pid):
    return sum((proc_stat(p) or (0, 0))[0] for p in tree(pid))


def tree_rss_kb(pid, key="VmHWM"):
    return sum(proc_status(p, key) or 0 for p in tree(pid))


# ---------------------------------------------------------------- services


class Env:
    def __init__(self, work):
        self.work = work
        self.ca = testca.make_ca(os.path.join(work, "ca"))
        self.redis = None
        self.start_redis()

        self.h2_port, self.h1_port, self.slow_port = free_port(), free_port(), free_port()
        self.real_port = free_port()
        ngdir = os.path.join(work, "nginx")
        self.real_log = os.path.join(ngdir, "real-access.log")
        os.makedirs(ngdir)
        body = json.dumps({
            "account_sid": SID, "api_version": "2010-04-01",
            "body": "Your verification code is ******. It expires in 5 minutes.",
            "date_created": "Thu, 24 Aug 2023 05:01:45 +0000", "date_sent": None,
            "date_updated": "Thu, 24 Aug 2023 05:01:45 +0000", "direction": "outbound-api",
            "error_code": None, "error_message": None, "from": FROM,
            "messaging_service_sid": None, "num_media": "0", "num_segments": "1",
            "price": None, "price_unit": "USD", "sid": MSG_SID, "status": "queued",
            "subresource_uris": {"media": "/2010-04-01/Accounts/%s/Messages/%s/Media.json"
                                 % (SID, MSG_SID)},
            "to": "+14155552671",
            "uri": "/2010-04-01/Accounts/%s/Messages/%s.json" % (SID, MSG_SID)},
            separators=(",", ":"))
        listing = json.dumps({
            "messages": [], "end": 0, "first_page_uri": "/2010-04-01/Accounts/%s/Messages.json?PageSize=50&Page=0" % SID,
            "next_page_uri": None, "page": 0, "page_size": 50, "previous_page_uri": None, "start": 0,
            "uri": "/2010-04-01/Accounts/%s/Messages.json?PageSize=50&Page=0" % SID}, separators=(",", ":"))
        with open(os.path.join(BENCH, "nginx.conf.in")) as f:
            conf = f.read()
        for k, v in {"DIR": ngdir, "CERT": self.ca["server_cert"], "KEY": self.ca["server_key"],
                     "H2_PORT": self.h2_port, "H1_PORT": self.h1_port,
                     "SLOW_PORT": self.slow_port, "REAL_PORT": self.real_port, "WORKERS": os.environ.get("BENCH_NGINX_WORKERS", "1"),
                     "BODY": body, "LIST": listing,
                     "ERRLEVEL": os.environ.get("BENCH_NGINX_LOG", "warn")}.items():
            conf = conf.replace("@%s@" % k, str(v))
        conf_path = os.path.join(ngdir, "nginx.conf")
        with open(conf_path, "w") as f:
            f.write(conf)
        self.nginx = spawn(["nginx", "-c", conf_path, "-p", ngdir, "-e", os.path.join(ngdir, "nginx-error.log")],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for port in (self.h2_port, self.h1_port, self.slow_port, self.real_port):
            wait_for(lambda: self._listening(port) or self.nginx.poll() is not None, 10,
                     what="nginx on %d" % port)
            if self.nginx.poll() is not None:
                with open(os.path.join(ngdir, "nginx-error.log")) as f:
                    raise RuntimeError("nginx exited:\n" + f.read()[-2000:])
        self.check_mock()

    def start_redis(self):
        """A fresh redis-server (no persistence) on a free loopback port; stops the
        previous one.  Every run but the comparison's shares one and FLUSHALLs it."""
        if self.redis is not None:
            stop(self.redis)
        self.redis_port = free_port()
        self.redis = spawn(["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1",
                            "--save", "", "--appendonly", "no", "--dir", self.work, "--daemonize", "no",
                            "--logfile", os.path.join(self.work, "redis.log"), "--maxclients", "20000"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.r = redis.Redis(port=self.redis_port, decode_responses=True)

        def up():
            try:
                return self.r.ping()
            except redis.exceptions.ConnectionError:
                return False
        wait_for(up, 10, what="redis-server")
        self.redis_url = "redis://127.0.0.1:%d/0" % self.redis_port

    def start_replica(self):
        """A replica of the current redis-server (--replicaof, no persistence) on a free
        loopback port, once its link is up and the primary counts it online: (process,
        client).  The caller stops it."""
        self.r.config_set("repl-diskless-sync-delay", 0)  # sync at once, not after 5 s
        port = free_port()
        p = spawn(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                   "--appendonly", "no", "--dir", self.work, "--dbfilename", "replica.rdb",
                   "--daemonize", "no", "--logfile", os.path.join(self.work, "redis-replica.log"),
                   "--replicaof", "127.0.0.1", str(self.redis_port)],
                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        c = redis.Redis(port=port, decode_responses=True)

        def up():
            try:
                return (c.info("replication").get("master_link_status") == "up"
                        and (self.r.info("replication").get("slave0") or {}).get("state") == "online")
            except redis.exceptions.ConnectionError:
                return False
        wait_for(up, 20, what="the replica's link to the primary")
        return p, c

    @staticmethod
    def _listening(port):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return True
        except OSError:
            return False

    def base(self, which):
        return "https://127.0.0.1:%d" % {"h2": self.h2_port, "h1": self.h1_port,
                                          "slow": self.slow_port, "real": self.real_port}[which]

    def check_mock(self):
        """One request to each port with curl: status, protocol and delay (3 tries:
        one slow answer on a busy shared machine is not a broken mock)."""
        for attempt in range(3):
            try:
                return self._check_mock()
            except RuntimeError:
                if attempt == 2:
                    raise
                time.sleep(1)

    def _check_mock(self):
        for which, proto, delay in (("h2", "2", 0), ("h1", "1.1", 0), ("slow", "2", 0.2),
                                    ("real", "1.1", REAL_LATENCY_S)):
            out = subprocess.run(
                ["curl", "-sS", "--cacert", self.ca["ca_cert"], "-u", SID + ":" + TOKEN,
                 "-d", "To=%2B14155552671", "-o", "/dev/null",
                 "-w", "%{http_code} %{http_version} %{time_total} %{time_appconnect}",
                 self.base(which) + "/2010-04-01/Accounts/%s/Messages.json" % SID],
                capture_output=True, text=True, timeout=10)
            code, ver, total, tls = out.stdout.split()
            wait = float(total) - float(tls)
            ok = code == "201" and ver == proto and (
                (delay - 0.01 <= wait < delay + 0.2) if delay else (wait < 0.1))
            log("mock %s: HTTP/%s %s, %.1f ms after the handshake%s"
                % (which, ver, code, wait * 1000, "" if ok else "  <-- UNEXPECTED"))
            if not ok:
                raise RuntimeError("the nginx mock does not answer as it should: %s" % out.stdout)

    def redis_cpu(self):
        return proc_stat(self.redis.pid)[0]

    def real_log_offset(self):
        try:
            return os.path.getsize(self.real_log)
        except OSError:
            return 0

    def real_log_requests(self, since, method="POST"):
        """[(start s, end s, connection serial)] of the realistic port's requests logged
        after byte offset since (nginx writes each line when the request ends)."""
        out = []
        try:
            with open(self.real_log) as f:
                f.seek(since)
                for line in f:
                    parts = line.split()
                    if len(parts) == 5 and parts[3] == method:
                        end, dur = float(parts[0]), float(parts[1])
                        out.append((end - dur, end, parts[2]))
        except OSError:
            pass
        return out

    def reset(self):
        self.r.flushall()


# ---------------------------------------------------------------- load


def job_payload(i, prefix, created_ms):
    to = "+1415%07d" % (i % 10000000)
    return json.dumps({"v": 1, "to": to, "purpose": "login", "id": "%s-%d" % (prefix, i),
                       "created_ms": created_ms}, separators=(",", ":"))


def backlog_otpd(env, n, prefix="b"):
    """n jobs XADDed, pipelined, before otpd starts (no queued records)."""
    now = int(time.time() * 1000)
    pipe = env.r.pipeline(transaction=False)
    for i in range(n):
        pipe.xadd("otpd:jobs", {"job": job_payload(i, prefix, now)})
        if i % 2000 == 1999:
            pipe.execute()
    pipe.execute()
    assert env.r.xlen("otpd:jobs") == n


def sent_count(env):
    return int(env.r.hget("otpd:stats", "jobs:sent") or 0)


def otpd_env(env, which="h2", **extra):
    e = {k: v for k, v in os.environ.items() if not k.startswith(("OTPD_", "TWILIO_", "MSG91_", "REDIS_"))}
    e.update({
        "REDIS_URL": env.redis_url, "OTPD_HASH_KEY": HASH_KEY, "OTPD_PROVIDER": "twilio",
        "TWILIO_ACCOUNT_SID": SID, "TWILIO_AUTH_TOKEN": TOKEN, "TWILIO_PHONE_NUMBER": FROM,
        "TWILIO_API_BASE": env.base(which), "OTPD_CA_FILE": env.ca["ca_cert"],
        "OTPD_LOG_LEVEL": "notice", "OTPD_HEARTBEAT_MS": "1000",
    })
    e.update(OTPD_TUNING)
    e.update({k: str(v) for k, v in extra.items()})
    return e


class OtpdRun:
    def __init__(self, env, name, envvars, wrapper=(), binary=None):
        self.env = env
        self.err_path = os.path.join(env.work, "otpd-%s.err" % name)
        self.err = open(self.err_path, "wb")
        self.redis_cpu0 = env.redis_cpu()
        self.t0 = time.monotonic()
        self.proc = spawn(list(wrapper) + [binary or OTPD], env=envvars, stdout=subprocess.DEVNULL, stderr=self.err)

    def stderr(self):
        with open(self.err_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def wait_ready(self, timeout=30):
        wait_for(lambda: "queue: ready" in self.stderr() or self.proc.poll() is not None, timeout,
                 what="otpd to be ready")
        if self.proc.poll() is not None:
            raise RuntimeError("otpd exited %s:\n%s" % (self.proc.returncode, self.stderr()[-3000:]))

    def wait_sent(self, n, timeout, interval=0.02, on_poll=None):
        """Time the n-th job was seen sent; self.t99: when 99% were."""
        deadline = time.monotonic() + timeout
        self.t99 = None
        while time.monotonic() < deadline:
            c = sent_count(self.env)
            if self.t99 is None and c >= 0.99 * n:
                self.t99 = time.monotonic()
            if c >= n:
                return time.monotonic()
            if self.proc.poll() is not None:
                raise RuntimeError("otpd exited %s:\n%s" % (self.proc.returncode, self.stderr()[-3000:]))
            if on_poll:
                on_poll()
            time.sleep(interval)
        raise TimeoutError("otpd sent %d of %d jobs in %.0f s" % (sent_count(self.env), n, timeout))

    def sample(self):
        pid = self.proc.pid
        return {"cpu_s": proc_stat(pid)[0], "vm_hwm_kb": proc_status(pid, "VmHWM"),
                "vm_rss_kb": proc_status(pid, "VmRSS"),
                "redis_cpu_s": self.env.redis_cpu() - self.redis_cpu0}

    def finish(self, timeout=30):
        rc = stop(self.proc, timeout=timeout)
        self.err.close()
        if rc != 0:
            raise RuntimeError("otpd exited %s:\n%s" % (rc, self.stderr()[-3000:]))


def check_all_sent(env, n, prefix):
    """Every job's status record says sent (read in pipelined chunks)."""
    bad = 0
    for start in range(0, n, 5000):
        pipe = env.r.pipeline(transaction=False)
        for i in range(start, min(n, start + 5000)):
            pipe.hget("otpd:job:%s-%d" % (prefix, i), "status")
        bad += sum(1 for s in pipe.execute() if s != "sent")
    return bad


STARTUP_CPU = [0.0]


def otpd_startup_cpu(env):
    """CPU-seconds otpd spends starting (empty queue, until ready, plus 0.5 s idle)."""
    env.reset()
    run = OtpdRun(env, "startup", otpd_env(env, "h2"))
    run.wait_ready()
    time.sleep(0.5)
    cpu = run.sample()["cpu_s"]
    run.finish()
    STARTUP_CPU[0] = cpu
    log("otpd start-up: %.3f CPU-seconds" % cpu)
    return cpu


def bench_throughput(env, n, which="h2"):
    env.reset()
    backlog_otpd(env, n)
    run = OtpdRun(env, "thr-%s-%d" % (which, n), otpd_env(env, which))
    rss = []  # (jobs sent, VmRSS kB), every 100 ms: does memory follow the backlog?
    last = [0.0]

    def poll():
        if time.monotonic() - last[0] >= 0.1:
            last[0] = time.monotonic()
            rss.append((sent_count(env), proc_status(run.proc.pid, "VmRSS")))
    t_done = run.wait_sent(n, timeout=60 + n / 500, on_poll=poll)
    s = run.sample()
    run.finish()
    wall = t_done - run.t0
    bad = check_all_sent(env, n, "b")
    res = {"jobs": n, "proto": which, "wall_s": wall, "otp_per_s": n / wall,
           "otp_per_s_first_99pct": 0.99 * n / (run.t99 - run.t0),
           "cpu_s": s["cpu_s"], "cpu_us_per_otp": s["cpu_s"] / n * 1e6,
           "otp_per_cpu_s": n / s["cpu_s"] if s["cpu_s"] else None,
           "vm_hwm_kb": s["vm_hwm_kb"], "redis_cpu_us_per_otp": s["redis_cpu_s"] / n * 1e6,
           "not_sent": bad, "stats": env.r.hgetall("otpd:stats")}
    res["retries"] = int(res["stats"].get("jobs:retries", 0))
    res["rss_samples"] = rss
    q = [kb for c, kb in rss if kb and c >= n // 4]
    res["vm_rss_kb_at_25pct"] = q[0] if q else None
    res["vm_rss_kb_at_end"] = s["vm_rss_kb"]
    res["startup_cpu_s"] = STARTUP_CPU[0]
    res["cpu_us_per_otp_incl_startup"] = res["cpu_us_per_otp"]
    res["cpu_us_per_otp"] = (s["cpu_s"] - STARTUP_CPU[0]) / n * 1e6
    res["otp_per_cpu_s"] = n / (s["cpu_s"] - STARTUP_CPU[0])
    log("otpd throughput %s n=%d: %.0f OTP/s (first 99%%: %.0f), %.1f us CPU/OTP, VmHWM %d kB, "
        "retries %d, not sent %d" % (which, n, res["otp_per_s"], res["otp_per_s_first_99pct"],
                                     res["cpu_us_per_otp"], res["vm_hwm_kb"], res["retries"], bad))
    return res


def bench_memory(env, inflight):
    env.reset()
    n = max(2000, 4 * inflight)
    backlog_otpd(env, n)
    run = OtpdRun(env, "mem-%d" % inflight, otpd_env(
        env, "slow", OTPD_MAX_INFLIGHT=inflight, OTPD_BATCH=min(inflight, 1000),
        OTPD_HTTP_MAX_CONNS=20, OTPD_TWILIO_MAX_INFLIGHT=200, OTPD_HTTP_TIMEOUT_MS=60000))
    peak = [0]
    last = [0.0]
    socks = [0]

    def poll():
        if time.monotonic() - last[0] >= 0.1:
            last[0] = time.monotonic()
            socks[0] = max(socks[0], open_sockets(run.proc.pid))
            try:
                peak[0] = max(peak[0], int(env.r.xpending("otpd:jobs", "otpd")["pending"]))
            except redis.exceptions.ResponseError:
                pass
    t_done = run.wait_sent(n, timeout=120, on_poll=poll)
    s = run.sample()
    run.finish()
    res = {"inflight_limit": inflight, "jobs": n, "max_pending_seen": peak[0],
           "max_sockets_seen": socks[0],
           "vm_hwm_kb": s["vm_hwm_kb"], "wall_s": t_done - run.t0,
           "otp_per_s": n / (t_done - run.t0), "cpu_us_per_otp": s["cpu_s"] / n * 1e6}
    log("otpd memory inflight=%d: VmHWM %d kB, max pending seen %d, max sockets %d, %.0f OTP/s"
        % (inflight, s["vm_hwm_kb"], peak[0], socks[0], res["otp_per_s"]))
    return res


def paced(rate, secs, fn):
    """Call fn(i) rate times a second for secs seconds; returns the achieved rate."""
    n = int(rate * secs)
    t0 = time.monotonic()
    for i in range(n):
        d = t0 + i / rate - time.monotonic()
        if d > 0:
            time.sleep(d)
        fn(i)
    return n, n / (time.monotonic() - t0)


def latencies(env, n, prefix):
    out, missing = [], 0
    for start in range(0, n, 5000):
        pipe = env.r.pipeline(transaction=False)
        for i in range(start, min(n, start + 5000)):
            pipe.hmget("otpd:job:%s-%d" % (prefix, i), "status", "created_ms", "sent_ms")
        for st, c, s in pipe.execute():
            if st == "sent" and c and s:
                out.append(int(s) - int(c))
            else:
                missing += 1
    return out, missing


def pct(v, q):
    v = sorted(v)
    return v[min(len(v) - 1, int(round(q / 100.0 * (len(v) - 1))))] if v else None


def lat_summary(lat, missing, n, achieved):
    return {"jobs": n, "offered_per_s": achieved, "not_sent": missing,
            "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99), "max_ms": max(lat) if lat else None,
            "mean_ms": statistics.mean(lat) if lat else None}


def bench_latency(env, which):
    from otpd import OTPClient
    env.reset()
    run = OtpdRun(env, "lat-%s" % which, otpd_env(env, which, OTPD_TWILIO_MAX_INFLIGHT=400))
    run.wait_ready()
    client = OTPClient(url=env.redis_url, hash_key=HASH_KEY)
    n, achieved = paced(LAT_RATE, P["lat_s"],
                        # 415-2xx-xxxx: valid numbers, which the client's number check passes
                        lambda i: client.send("+1415%07d" % (2000000 + i), "login",
                                              id="lat-%d" % i))
    run.wait_sent(n, timeout=60)
    s = run.sample()
    run.finish()
    lat, missing = latencies(env, n, "lat")
    res = lat_summary(lat, missing, n, achieved)
    res.update(mock=which, cpu_us_per_otp=s["cpu_s"] / n * 1e6, vm_hwm_kb=s["vm_hwm_kb"],
               retries=int(env.r.hget("otpd:stats", "jobs:retries") or 0))
    log("otpd latency %s at %.0f/s: p50 %s ms, p99 %s ms, max %s ms"
        % (which, achieved, res["p50_ms"], res["p99_ms"], res["max_ms"]))
    return res


# ---------------------------------------------------------------- realistic provider
#
# What an operator gets with nothing tuned: a provider that answers in 300 ms over
# HTTP/1.1 (each open request needs its own connection), and otpd with only the
# settings it cannot do without.  The bound is the request cap over the latency.


def realistic_env(env, provider=None):
    """Only what an operator must set.  The per-number limits stay at their defaults:
    every job goes to a different number."""
    e = {k: v for k, v in os.environ.items() if not k.startswith(("OTPD_", "TWILIO_", "MSG91_", "REDIS_"))}
    e.update({
        "REDIS_URL": env.redis_url, "OTPD_HASH_KEY": HASH_KEY,
        "TWILIO_ACCOUNT_SID": SID, "TWILIO_AUTH_TOKEN": TOKEN, "TWILIO_PHONE_NUMBER": FROM,
        "TWILIO_API_BASE": env.base("real"), "OTPD_CA_FILE": env.ca["ca_cert"],
    })
    if provider:
        e["OTPD_PROVIDER"] = provider
    return e


def check_config(envvars):
    """otpd --check-config with these variables: {KEY: value} plus '#' comment lines."""
    out = subprocess.run([OTPD, "--check-config"], env=envvars, capture_output=True, text=True,
                         timeout=30)
    if out.returncode != 0:
        raise RuntimeError("otpd --check-config failed (%d):\n%s%s"
                           % (out.returncode, out.stdout[-2000:], out.stderr[-2000:]))
    cfg, notes = {}, []
    for line in out.stdout.splitlines():
        if line.startswith("#"):
            notes.append(line.lstrip("# "))
        elif "=" in line:
            k, v = line.split("=", 1)
            cfg[k] = v[1:-1] if len(v) >= 2 and v[0] == v[-1] == '"' else v
    return cfg, notes


def peak_concurrency(reqs):
    """Most requests in progress at once, from (start, end, connection) intervals.
    nginx stamps them with its cached clock, so on one keep-alive connection a request
    can seem to start a millisecond before the previous one ended; HTTP/1.1 has one at
    a time per connection, so each start is moved to at least the previous end."""
    last, ev = {}, []
    for a, b, c in sorted(reqs):
        a = max(a, last.get(c, a))
        last[c] = b
        ev += [(a, 1), (b, -1)]
    ev.sort()
    cur = peak = 0
    for _, d in ev:
        cur += d
        peak = max(peak, cur)
    return peak


def sent_times(env, n, prefix):
    """sent_ms of jobs prefix-0 .. prefix-(n-1), sorted; and how many are not sent."""
    out, missing = [], 0
    for start in range(0, n, 5000):
        pipe = env.r.pipeline(transaction=False)
        for i in range(start, min(n, start + 5000)):
            pipe.hmget("otpd:job:%s-%d" % (prefix, i), "status", "sent_ms")
        for st, sm in pipe.execute():
            if st == "sent" and sm:
                out.append(int(sm))
            else:
                missing += 1
    return sorted(out), missing


def realistic_figures(env, n, prefix, log_from, cap):
    """Throughput from first to last sent, the steady rate (10th to 90th percentile of
    the sent times), the bound cap / latency, and what the mock saw."""
    times, missing = sent_times(env, n, prefix)
    reqs = env.real_log_requests(log_from)
    span = (times[-1] - times[0]) / 1000.0 if len(times) > 1 else 0
    i10, i90 = len(times) // 10, (len(times) * 9) // 10
    steady = None
    if len(times) >= 10 and times[i90] > times[i10]:
        steady = (i90 - i10) / ((times[i90] - times[i10]) / 1000.0)
    bound = cap / REAL_LATENCY_S if cap else None
    thr = (len(times) - 1) / span if span else None
    durs = sorted(b - a for a, b, _ in reqs)
    return {"jobs": n, "not_sent": missing, "first_to_last_s": span, "otp_per_s": thr,
            "otp_per_s_steady_p10_p90": steady,
            "request_cap": cap, "latency_s": REAL_LATENCY_S, "bound_otp_per_s": bound,
            "ratio_to_bound": thr / bound if thr and bound else None,
            "mock_posts": len(reqs), "mock_peak_concurrent": peak_concurrency(reqs),
            "mock_connections": len({c for _, _, c in reqs}),
            "mock_request_s_p50": durs[len(durs) // 2] if durs else None,
            "mock_request_s_max": durs[-1] if durs else None}


def bench_realistic(env, n):
    e = realistic_env(env)
    cfg, notes = check_config(e)
    cap = int(cfg["OTPD_TWILIO_MAX_INFLIGHT"])
    res = {"settings": sorted(k for k in e if k.startswith(("OTPD_", "TWILIO_", "REDIS_"))),
           "check_config": {k: cfg.get(k) for k in ("OTPD_PROVIDER", "OTPD_TWILIO_MAX_INFLIGHT",
                                                    "OTPD_HTTP_MAX_CONNS", "OTPD_MAX_INFLIGHT",
                                                    "OTPD_BATCH", "OTPD_LIMIT_INTERVAL_S",
                                                    "OTPD_LIMIT_PER_HOUR", "OTPD_LIMIT_PER_DAY")},
           "check_config_notes": notes}
    # Does otpd send through Twilio with only its credentials set?  (Before the default
    # provider followed the credentials it was console, which sends nothing.)  One job:
    # the mock must see its POST.
    env.reset()
    backlog_otpd(env, 1, prefix="probe")
    since = env.real_log_offset()
    run = OtpdRun(env, "real-probe", e)
    run.wait_sent(1, timeout=30)
    run.finish()
    time.sleep(0.1)
    res["provider_forced"] = not env.real_log_requests(since)
    if res["provider_forced"]:
        log("realistic: otpd with only Twilio's credentials did not call the mock (default "
            "provider %r); setting OTPD_PROVIDER=twilio" % cfg.get("OTPD_PROVIDER"))
        e = realistic_env(env, "twilio")
        res["settings"].append("OTPD_PROVIDER")
    env.reset()
    backlog_otpd(env, n)
    since = env.real_log_offset()
    run = OtpdRun(env, "real-%d" % n, e)
    socks = [0]
    last = [0.0]

    def poll():
        if time.monotonic() - last[0] >= 0.1:
            last[0] = time.monotonic()
            socks[0] = max(socks[0], open_sockets(run.proc.pid))
    t_done = run.wait_sent(n, timeout=60 + n / 20, on_poll=poll)
    s = run.sample()
    run.finish()
    time.sleep(0.1)
    res.update(realistic_figures(env, n, "b", since, cap))
    res.update(wall_s=t_done - run.t0, otp_per_s_from_start=n / (t_done - run.t0),
               cpu_s=s["cpu_s"], vm_hwm_kb=s["vm_hwm_kb"], max_sockets_seen=socks[0],
               retries=int(env.r.hget("otpd:stats", "jobs:retries") or 0))
    log("realistic otpd n=%d: %.0f OTP/s first to last sent (steady %.0f), bound %d / %.3f s = "
        "%.0f OTP/s, %.0f%% of it; mock: peak %d requests at once over %d connections; "
        "HTTP_MAX_CONNS %s; provider forced: %s"
        % (n, res["otp_per_s"], res["otp_per_s_steady_p10_p90"] or 0, cap, REAL_LATENCY_S,
           res["bound_otp_per_s"], 100 * res["ratio_to_bound"], res["mock_peak_concurrent"],
           res["mock_connections"], cfg.get("OTPD_HTTP_MAX_CONNS"), res["provider_forced"]))
    return res


def callgrind_total(path):
    with open(path) as f:
        for line in f:
            if line.startswith(("totals:", "summary:")):
                return int(line.split()[1])
    return None


def annotate(profile, inclusive, save_as, most, keep):
    """callgrind_annotate's top functions (saved in full to save_as), those lines keep() accepts."""
    text = subprocess.run(["callgrind_annotate", "--inclusive=%s" % ("yes" if inclusive else "no"),
                           "--threshold=100", profile],
                          capture_output=True, text=True, timeout=120).stdout
    with open(save_as, "w") as f:
        f.write(text)
    top = []
    for line in text.splitlines():
        m = re.match(r"\s*([\d,]+)\s+\(\s*([\d.]+)%\)\s+(\S.*)$", line)
        if m and keep(line) and len(top) < most:
            top.append({"ir": int(m.group(1).replace(",", "")), "pct": float(m.group(2)),
                        "fn": m.group(3).strip()})
    return top


def bench_callgrind(env, n, binary=None, tag=""):
    """Instructions per OTP: otpd under callgrind with an n-job backlog, minus a run
    that only starts and stops.  binary/tag: another build (the comparison), whose
    files are named callgrind.otpd<tag>.* ."""
    out = os.path.join(BENCH, "results", "callgrind")
    os.makedirs(out, exist_ok=True)
    totals = {}
    for jobs in (0, n):
        env.reset()
        if jobs:
            backlog_otpd(env, jobs)
        f = os.path.join(out, "callgrind.otpd%s.%d.out" % (tag, jobs))
        run = OtpdRun(env, "cg%s-%d" % (tag, jobs), otpd_env(env, "h2", OTPD_HTTP_TIMEOUT_MS=60000,
                                                            OTPD_SHUTDOWN_TIMEOUT_MS=60000),
                      wrapper=["valgrind", "--tool=callgrind", "--callgrind-out-file=" + f],
                      binary=binary)
        run.wait_ready(timeout=120)
        if jobs:
            run.wait_sent(jobs, timeout=300, interval=0.2)
        else:
            time.sleep(1)
        run.finish(timeout=120)
        totals[jobs] = callgrind_total(f)
    profile = os.path.join(out, "callgrind.otpd%s.%d.out" % (tag, n))
    top = annotate(profile, False, os.path.join(out, "annotate%s.%d.txt" % (tag, n)), 15,
                   lambda line: "PROGRAM TOTALS" not in line)
    top_inc = annotate(profile, True, os.path.join(out, "annotate-inclusive%s.%d.txt" % (tag, n)), 25,
                       lambda line: "/daemon/" in line)
    res = {"jobs": n, "ir_total": totals[n], "ir_startup_only": totals[0],
           "ir_per_otp": (totals[n] - totals[0]) / n, "top15_self": top,
           "top_otpd_inclusive": top_inc}
    log("callgrind%s: %.0f instructions per OTP (%d jobs, startup-only run subtracted)"
        % (tag, res["ir_per_otp"], n))
    return res


# ---------------------------------------------------------------- before/after: a reference commit
#
# The Redis write path of the current otpd against a build of REF_COMMIT made here from
# `git archive` (BENCH_ONLY=compare, and the last part of every other run).  Each build
# runs CMP_REPS + 1 times, alternately, each time on a freshly started redis-server with
# the same settings, against the instant HTTP/2 mock, with the same otpd settings
# (otpd_env: OTPD_PROVIDER=twilio, default send limits, a random hash key) and CMP_N
# jobs to distinct numbers.  One run of each has MONITOR attached (top-level commands);
# the others are the CPU runs (MONITOR itself costs Redis CPU).  Then callgrind.

REF_COMMIT = os.environ.get("BENCH_REF", "d7a84a1")
CMP_N = int(os.environ.get("BENCH_CMP_N", "3000"))  # jobs per run
CMP_CG_N = 500        # jobs in the callgrind runs
CMP_REPS = int(os.environ.get("BENCH_CMP_REPS", "5"))  # CPU runs per build; the table gives their medians
CMP_POLL_S = 0.01     # the bench polls otpd:stats this often during a run
CMP_CALIB_S = 1.0     # how long the bench's polling is measured alone
CMP_TOPLEVEL_MAX = 5.0    # target: top-level commands per OTP, current build
CMP_CPU_RATIO_MAX = 0.6   # target: Redis CPU and otpd CPU, current ÷ reference
BENCH_CLIENT = "otpd-bench"
CMP_PROFILE_N = 3000  # jobs in the perf profile run of redis-server (more samples)
CMP_PROFILE_HZ = 5000
MONITOR_LINE = re.compile(r'^\+(\d+\.\d+) \[\d+ ([^\]]+)\] "((?:[^"\\]|\\.)*)"')


def git(*args, timeout=60):
    return subprocess.run(["git", "-C", ROOT] + list(args), capture_output=True, text=True,
                          timeout=timeout)


def build_ref(commit):
    """Build commit of the repository the bench runs in: git archive | tar into
    build-ref/<full sha>/src, cmake into build-ref/<full sha>/build; a finished build
    there is reused.  Returns (binary, info); binary is None and info["skipped"] says
    why when there is no such commit (a shallow clone, say) or the build fails."""
    info = {"commit": commit}
    for tool in ("git", "cmake", "tar", "make"):
        if not shutil.which(tool):
            info["skipped"] = "%s is not installed" % tool
            return None, info
    if git("rev-parse", "--git-dir").returncode != 0:
        info["skipped"] = "%s is not a git repository" % ROOT
        return None, info
    rv = git("rev-parse", "--verify", "--quiet", commit + "^{commit}")
    if rv.returncode != 0:
        shallow = git("rev-parse", "--is-shallow-repository").stdout.strip() == "true"
        info["skipped"] = "commit %s is not in the repository at %s%s" % (
            commit, ROOT, " (a shallow clone: `git fetch --unshallow` brings the history)"
            if shallow else "")
        return None, info
    sha = rv.stdout.strip()
    base = os.path.join(ROOT, "build-ref", sha)
    src, bld = os.path.join(base, "src"), os.path.join(base, "build")
    binary, stamp = os.path.join(bld, "otpd"), os.path.join(base, "built")
    buildlog = os.path.join(base, "build.log")
    info.update(sha=sha, dir=os.path.relpath(base, ROOT), binary=binary, build_log=buildlog)
    if os.path.exists(stamp) and os.access(binary, os.X_OK):
        info["cached"] = True
        log("reference %s: reusing %s" % (commit, os.path.relpath(binary, ROOT)))
        return binary, info
    log("reference %s: building %s (git archive, cmake RelWithDebInfo, -j2)"
        % (commit, os.path.relpath(bld, ROOT)))
    shutil.rmtree(base, ignore_errors=True)
    os.makedirs(src)
    t0 = time.monotonic()
    with open(buildlog, "wb") as lf:
        lf.write(b"$ git archive %s | tar -x -C %s\n" % (sha.encode(), src.encode()))
        lf.flush()
        arch = subprocess.Popen(["git", "-C", ROOT, "archive", sha], stdout=subprocess.PIPE, stderr=lf)
        tar = subprocess.run(["tar", "-x", "-C", src], stdin=arch.stdout, stderr=lf, timeout=300)
        arch.stdout.close()
        ok = arch.wait(60) == 0 and tar.returncode == 0
        for cmd in (["cmake", "-S", src, "-B", bld, "-DCMAKE_BUILD_TYPE=RelWithDebInfo",
                     "-DOTPD_TESTS=OFF"],
                    ["cmake", "--build", bld, "-j2"]):
            if not ok:
                break
            lf.write(("$ " + " ".join(cmd) + "\n").encode())
            lf.flush()
            try:
                ok = subprocess.run(cmd, stdout=lf, stderr=subprocess.STDOUT, timeout=900).returncode == 0
            except subprocess.TimeoutExpired:
                ok = False
    if not ok or not os.access(binary, os.X_OK):
        with open(buildlog, errors="replace") as f:
            tail = f.read()[-1500:]
        info["skipped"] = "building %s failed (log: %s):\n%s" % (commit, buildlog, tail)
        return None, info
    with open(stamp, "w") as f:
        f.write("%s built %s\n" % (sha, time.strftime("%Y-%m-%dT%H:%M:%S%z")))
    info.update(cached=False, build_s=round(time.monotonic() - t0, 1))
    log("reference %s: built in %.0f s" % (commit, info["build_s"]))
    return binary, info


def otpd_cpu(pid):
    """(CPU-seconds from the threads' /proc/PID/task/*/schedstat, in ns; utime+stime
    from /proc/PID/stat, in clock ticks; number of threads)."""
    ns, n = 0, 0
    try:
        for t in os.listdir("/proc/%d/task" % pid):
            with open("/proc/%d/task/%s/schedstat" % (pid, t)) as f:
                ns += int(f.read().split()[0])
                n += 1
    except OSError:
        pass
    return ns / 1e9, proc_stat(pid)[0], n


def redis_snapshot(c):
    """One INFO cpu commandstats: (used_cpu_user + used_cpu_sys, {command: (calls, usec)})."""
    i = c.execute_command("INFO", "cpu", "commandstats")
    cmds = {k[len("cmdstat_"):]: (int(v["calls"]), int(v["usec"]))
            for k, v in i.items() if k.startswith("cmdstat_")}
    return float(i["used_cpu_user"]) + float(i["used_cpu_sys"]), cmds


class Monitor:
    """A MONITOR connection read by a thread into memory."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), 5)
        self.sock.settimeout(None)
        self.sock.sendall(b"MONITOR\r\n")
        self.chunks = []
        self.size = 0
        self.th = threading.Thread(target=self._read, daemon=True)
        self.th.start()
        wait_for(lambda: self.size >= 5, 5, what="MONITOR to answer")

    def _read(self):
        while True:
            try:
                d = self.sock.recv(1 << 20)
            except OSError:
                return
            if not d:
                return
            self.chunks.append(d)
            self.size += len(d)

    def lines(self):
        return b"".join(self.chunks).decode("utf-8", "replace").split("\r\n")

    def until(self, addr, cmd, timeout=10):
        """[(addr or 'lua', COMMAND)] up to (not including) the first cmd from addr."""
        def find():
            out = []
            for line in self.lines():
                m = MONITOR_LINE.match(line)
                if not m:
                    continue
                a, c = m.group(2), m.group(3).upper()
                if a == addr and c == cmd:
                    return out
                out.append((a, c))
            return None
        wait_for(lambda: find() is not None, timeout, what="MONITOR to show the bench's %s" % cmd)
        try:
            self.sock.close()
        except OSError:
            pass
        return find()


def compare_run(env, label, binary, n, rep, monitor=False, profile=None, replica=False, extra=None):
    """One run of one build: a fresh redis-server, otpd started on an empty stream and
    ready, then stopped (SIGSTOP) while the n jobs are XADDed and the bench's own cost
    is measured; the counters are read, otpd continued (SIGCONT) and the run ends when
    every job is sent and acknowledged (XPENDING empty).  monitor: MONITOR attached;
    profile: a path, perf record samples redis-server into it; replica: a replica of
    that redis-server too, whose CPU is measured the same way; extra: more otpd
    settings (with OTPD_METRICS_ADDR, its otpd_redis_waits counters are read at the end)."""
    env.start_redis()
    rp, rc = env.start_replica() if replica else (None, None)
    name = "cmp-%s-%d%s" % (label, rep, "-monitor" if monitor else "-perf" if profile else "")
    extra = extra or {}
    run = OtpdRun(env, name, otpd_env(env, "h2", **extra), binary=binary)
    run.wait_ready()
    time.sleep(0.3)  # its start-up writes (scripts, group, heartbeat) are done
    pid = run.proc.pid
    b = redis.Redis(port=env.redis_port, decode_responses=True, single_connection_client=True,
                    client_name=BENCH_CLIENT)
    addr = b.client_info()["addr"]
    stats_key = "otpd:stats"
    mon = None
    os.kill(pid, signal.SIGSTOP)
    try:
        backlog_otpd(env, n)
        # The bench's own load on Redis, alone: the same polling for CMP_CALIB_S with
        # otpd stopped (idle cost of redis-server included).
        c0, _ = redis_snapshot(b)
        r0 = redis_snapshot(rc)[0] if rc else 0.0
        t0 = time.monotonic()
        while time.monotonic() - t0 < CMP_CALIB_S:
            b.hget(stats_key, "jobs:sent")
            time.sleep(CMP_POLL_S)
        c1, _ = redis_snapshot(b)
        r1 = redis_snapshot(rc)[0] if rc else 0.0
        bench_rate = (c1 - c0) / (time.monotonic() - t0)
        replica_rate = (r1 - r0) / (time.monotonic() - t0)  # idle timers and the INFOs
        cpu0, cmds0 = redis_snapshot(b)
        rcpu0 = redis_snapshot(rc)[0] if rc else 0.0
        o0 = otpd_cpu(pid)
        if monitor:
            mon = Monitor(env.redis_port)
        if profile:
            perf = subprocess.Popen(["perf", "record", "-q", "-F", str(CMP_PROFILE_HZ), "-e", "cpu-clock",
                                     "--call-graph", "dwarf,16384", "-p", str(env.redis.pid),
                                     "-o", profile], stdout=subprocess.DEVNULL,
                                    stderr=open(profile + ".err", "wb"))
            time.sleep(1.0)  # attached (otpd is stopped: nothing is missed)
        t_start = time.monotonic()
        resume_ms = time.time() * 1000
    finally:
        os.kill(pid, signal.SIGCONT)
    polls = {"hget": 0, "xpending": 0}
    deadline = time.monotonic() + 60
    while True:
        polls["hget"] += 1
        if int(b.hget(stats_key, "jobs:sent") or 0) >= n:
            polls["xpending"] += 1
            if int(b.xpending("otpd:jobs", "otpd")["pending"]) == 0:
                break
        if run.proc.poll() is not None:
            raise RuntimeError("otpd exited %s:\n%s" % (run.proc.returncode, run.stderr()[-3000:]))
        if time.monotonic() > deadline:
            raise TimeoutError("%s: otpd sent %s of %d jobs in 60 s"
                               % (name, b.hget(stats_key, "jobs:sent"), n))
        time.sleep(CMP_POLL_S)
    t_end = time.monotonic()
    o1 = otpd_cpu(pid)
    cpu1, cmds1 = redis_snapshot(b)
    rcpu1 = redis_snapshot(rc)[0] if rc else 0.0
    if profile:
        perf.send_signal(signal.SIGINT)
        perf.wait(120)
    # The bench's own commands between the two snapshots: the first INFO (a command's
    # calls are counted after it runs), its polls, and MONITOR.
    own = {"info": 1, "hget": polls["hget"], "xpending": polls["xpending"],
           "monitor": 1 if monitor else 0}
    cmds = {}
    for k in set(cmds0) | set(cmds1):
        calls = cmds1.get(k, (0, 0))[0] - cmds0.get(k, (0, 0))[0]
        usec = cmds1.get(k, (0, 0))[1] - cmds0.get(k, (0, 0))[1]
        mine = own.get(k, 0)
        if mine:
            if mine > calls:
                raise RuntimeError("%s: commandstats show %d %s calls, the bench made %d"
                                   % (name, calls, k, mine))
            usec = usec * (calls - mine) / calls  # shared with otpd: by calls
            calls -= mine
        if calls:
            cmds[k] = {"calls": calls, "usec": usec}
    window = t_end - t_start
    redis_cpu = (cpu1 - cpu0) - bench_rate * window
    res = {"build": label, "rep": rep, "monitor": monitor, "jobs": n, "window_s": window,
           "redis_cpu_s_raw": cpu1 - cpu0, "bench_redis_cpu_s": bench_rate * window,
           "redis_cpu_us_per_otp": redis_cpu / n * 1e6,
           "otpd_cpu_us_per_otp": (o1[0] - o0[0]) / n * 1e6,
           "otpd_cpu_ticks_us_per_otp": (o1[1] - o0[1]) / n * 1e6, "otpd_threads": o1[2],
           "bench_commands": own, "commands": cmds,
           "commands_per_otp": sum(v["calls"] for v in cmds.values()) / n,
           "commandstats_usec_per_otp": sum(v["usec"] for v in cmds.values()) / n}
    if rc:
        res["replica_cpu_us_per_otp"] = ((rcpu1 - rcpu0) - replica_rate * window) / n * 1e6
    if extra:
        res["settings"] = {k: str(v) for k, v in extra.items()}
    if extra.get("OTPD_METRICS_ADDR"):
        with urllib.request.urlopen("http://%s/metrics" % extra["OTPD_METRICS_ADDR"], timeout=10) as f:
            res["metrics"] = {m.group(1): int(float(m.group(2))) for m in re.finditer(
                r"^(otpd_redis_waits\w*\{[^}]*\}) (\S+)$", f.read().decode(), re.M)}
    if mon:
        seen = mon.until(addr, "INFO")
        # MONITOR shows a transaction as MULTI, then at EXEC time its queued commands
        # and EXEC, all from the client's address; a script's commands as "lua".
        top, multi, lua, conns, in_tx = {}, {}, {}, set(), set()
        for a, c in seen:
            if a == "lua":
                lua[c] = lua.get(c, 0) + 1
            elif a != addr:
                top[c] = top.get(c, 0) + 1
                conns.add(a)
                if c == "MULTI":
                    in_tx.add(a)
                elif c in ("EXEC", "DISCARD"):
                    in_tx.discard(a)
                elif a in in_tx:
                    multi[c] = multi.get(c, 0) + 1
        res.update(toplevel=top, in_multi=multi, in_scripts=lua, otpd_connections=len(conns),
                   bench_commands_seen={c: sum(1 for a, x in seen if a == addr and x == c)
                                        for c in {x for a, x in seen if a == addr}},
                   toplevel_per_otp=sum(top.values()) / n, in_scripts_per_otp=sum(lua.values()) / n)
        names = {c["addr"]: c.get("name", "") for c in b.client_list()}
        res["otpd_connection_names"] = sorted(names.get(a, "?") for a in conns)
        # MONITOR and commandstats must agree on the total.
        res["monitor_total"] = sum(top.values()) + sum(lua.values())
        res["commandstats_total"] = sum(v["calls"] for v in cmds.values())
    times, missing = sent_times(env, n, "b")
    span = (times[-1] - times[0]) / 1000.0 if len(times) > 1 else 0
    i10, i90 = len(times) // 10, (len(times) * 9) // 10
    steady = None
    if len(times) >= 10 and times[i90] > times[i10]:
        steady = (i90 - i10) / ((times[i90] - times[i10]) / 1000.0)
    res.update(not_sent=missing, first_to_last_s=span,
               otp_per_s=(len(times) - 1) / span if span else None,
               otp_per_s_steady_p10_p90=steady,
               first_sent_after_resume_ms=times[0] - resume_ms if times else None,
               sent_ms_percentiles={q: times[min(len(times) - 1, q * len(times) // 100)] - times[0]
                                    for q in (10, 50, 90, 99)} if times else None,
               retries=int(env.r.hget("otpd:stats", "jobs:retries") or 0),
               refused=n - len(times))
    b.close()
    run.finish()
    if rp:
        rc.close()
        stop(rp)
    log("compare %s run %d%s: Redis CPU %.1f µs/OTP (bench's %.1f ms removed)%s, otpd CPU %.1f µs/OTP "
        "(ticks: %.0f), %.1f commands/OTP%s, %s OTP/s, not sent %d"
        % (label, rep, " (MONITOR)" if monitor else " (perf profile, %d jobs)" % n if profile else "",
           res["redis_cpu_us_per_otp"],
           res["bench_redis_cpu_s"] * 1e3,
           ", replica %.1f µs/OTP" % res["replica_cpu_us_per_otp"] if rc else "",
           res["otpd_cpu_us_per_otp"],
           res["otpd_cpu_ticks_us_per_otp"], res["commands_per_otp"],
           (", top-level %.2f/OTP, in scripts %.2f/OTP, %d connections"
            % (res["toplevel_per_otp"], res["in_scripts_per_otp"], res["otpd_connections"]))
           if mon else "", fmt(res["otp_per_s"]), missing))
    if mon and res["monitor_total"] != res["commandstats_total"]:
        log("compare %s: MONITOR saw %d commands, commandstats counted %d"
            % (label, res["monitor_total"], res["commandstats_total"]))
    return res


# redis-server's samples are sorted by the functions on their call stack (Debian's binary
# is stripped but keeps its dynamic symbols, and the stacks unwind with DWARF):
PROFILE_ACTIVITIES = [
    ("scripts", "scripts: EVALSHA, wherever sent (evalGenericCommand)", 0),
    ("script_call", "redis.call: the commands scripts run, with argument and reply conversion "
                    "(scriptCall)", 1),
    ("script_lua", "the scripts' own Lua code (lua_pcall, outside scriptCall)", 1),
    ("script_setup", "script set-up: KEYS/ARGV tables, reply, Lua GC (rest of evalGenericCommand)", 1),
    ("exec", "transactions: EXEC and the commands queued in MULTI, scripts excepted (execCommand)", 0),
    ("direct", "other commands sent directly (call)", 0),
    ("read", "reading and parsing requests (readQueryFromClient, outside call)", 0),
    ("other", "writing replies, timers, waiting (everything else)", 0),
    ("kernel", "across all of the above: in the kernel (system calls: network)", 0),
    ("snprintf", "across all of the above: snprintf (Redis 7.0 formats each Lua number passed to "
                 "redis.call with %.17g)", 0),
    ("broken", "across all of the above: stacks that did not unwind to main", 0),
]


def perf_works():
    """None, or why perf cannot profile here."""
    if not shutil.which("perf"):
        return "perf is not installed (Debian: linux-perf)"
    try:
        out = subprocess.run(["perf", "record", "-q", "-e", "cpu-clock", "-o", "/dev/null", "true"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return "perf does not run: %s" % e
    return None if out.returncode == 0 else "perf record fails: %s" % out.stderr.strip()[-300:]


def perf_profile(data):
    """{activity: % of redis-server's samples} from perf script, and the sample count."""
    out = subprocess.run(["perf", "script", "-i", data, "-F", "ip,sym,dso"], capture_output=True,
                         text=True, timeout=600).stdout
    counts = {k: 0 for k, _, _ in PROFILE_ACTIVITIES}
    total = 0
    for block in out.split("\n\n"):
        frames = [ln.split(None, 1)[1] for ln in block.strip("\n").splitlines() if ln.strip()
                  and len(ln.split(None, 1)) == 2]
        if not frames:
            continue
        total += 1
        names = set(f.rsplit(" (", 1)[0] for f in frames)
        if frames[0].endswith("([kernel.kallsyms])"):
            counts["kernel"] += 1
        if "__vsnprintf_internal" in names:
            counts["snprintf"] += 1
        if "main" not in names:
            counts["broken"] += 1
        if "evalGenericCommand" in names:
            counts["scripts"] += 1
            counts["script_call" if "scriptCall" in names else
                   "script_lua" if "lua_pcall" in names else "script_setup"] += 1
        elif "execCommand" in names:
            counts["exec"] += 1
        elif "call" in names:
            counts["direct"] += 1
        elif "readQueryFromClient" in names:
            counts["read"] += 1
        else:
            counts["other"] += 1
    return {k: 100.0 * v / total if total else 0.0 for k, v in counts.items()}, total


def compare_summary(runs, mon, cg, n):
    """Medians of the CPU runs, the MONITOR run's counts, callgrind; and the breakdown."""
    med = statistics.median
    s = {}
    for k in ("redis_cpu_us_per_otp", "otpd_cpu_us_per_otp", "otpd_cpu_ticks_us_per_otp",
              "otp_per_s", "otp_per_s_steady_p10_p90", "commands_per_otp",
              "commandstats_usec_per_otp"):
        xs = [r[k] for r in runs if r.get(k) is not None]
        s[k] = med(xs) if xs else None
        s[k + "_runs"] = xs
    s["toplevel_per_otp"] = mon["toplevel_per_otp"]
    s["in_scripts_per_otp"] = mon["in_scripts_per_otp"]
    s["otpd_connections"] = mon["otpd_connections"]
    s["ceiling_otp_per_redis_core_s"] = 1e6 / s["redis_cpu_us_per_otp"] if s["redis_cpu_us_per_otp"] else None
    s["ir_per_otp"] = cg["ir_per_otp"] if cg else None
    s["not_sent"] = sum(r["not_sent"] for r in runs + [mon])
    s["retries"] = sum(r["retries"] for r in runs + [mon])
    names = set(mon["toplevel"]) | set(mon["in_scripts"])
    for r in runs:
        names |= set(r["commands"])
    rows = {}
    for c in names:
        key = c.lower()
        calls = [r["commands"].get(key, {}).get("calls", 0) / n for r in runs]
        usec = [r["commands"].get(key, {}).get("usec", 0) / n for r in runs]
        top = mon["toplevel"].get(c.upper(), 0) / n
        tx = mon["in_multi"].get(c.upper(), 0) / n
        lua = mon["in_scripts"].get(c.upper(), 0) / n
        rows[key] = {"toplevel_per_otp": top, "in_multi_per_otp": tx, "in_scripts_per_otp": lua,
                     "calls_per_otp": med(calls), "usec_per_otp": med(usec),
                     # usec of the calls not run by EXEC or a script (their share of the
                     # calls in the MONITOR run): EXEC's and EVALSHA's usec include those
                     "outer_usec_per_otp": med(usec) * (top - tx) / (top + lua) if top + lua else 0.0}
    s["breakdown"] = rows
    s["in_multi_per_otp"] = sum(mon["in_multi"].values()) / n
    s["outer_usec_per_otp"] = sum(v["outer_usec_per_otp"] for v in rows.values())
    return s


def bench_compare(env):
    res = {"ref_commit": REF_COMMIT, "jobs": CMP_N, "reps": CMP_REPS, "callgrind_jobs": CMP_CG_N,
           "poll_s": CMP_POLL_S, "settings": {k: v for k, v in otpd_env(env, "h2").items()
                                              if k.startswith("OTPD_") and k != "OTPD_HASH_KEY"},
           "targets": {"toplevel_per_otp_max": CMP_TOPLEVEL_MAX,
                       "redis_cpu_ratio_max": CMP_CPU_RATIO_MAX,
                       "otpd_cpu_ratio_max": CMP_CPU_RATIO_MAX}}
    binary, info = build_ref(REF_COMMIT)
    res["ref"] = info
    if binary is None:
        log("comparison with %s skipped: %s" % (REF_COMMIT, info["skipped"]))
        res["skipped"] = info["skipped"]
        return res
    ref = os.path.join(env.work, "otpd-ref")
    subprocess.run(["cp", "-p", binary, ref], check=True)
    info["sha256"] = subprocess.run(["sha256sum", ref], capture_output=True, text=True).stdout.split(" ")[0]
    info["version"] = subprocess.run([ref, "--version"], capture_output=True, text=True).stdout.strip()
    builds = (("old", ref), ("new", OTPD))
    runs = {"old": [], "new": []}
    for rep in range(CMP_REPS):  # alternate, so a busy spell on the machine hits both
        for label, b in builds:
            runs[label].append(compare_run(env, label, b, CMP_N, rep))
    mon = {label: compare_run(env, label, b, CMP_N, CMP_REPS, monitor=True) for label, b in builds}
    prof = {}
    why = perf_works() if os.environ.get("BENCH_PERF", "1") != "0" else "BENCH_PERF=0"
    if why:
        log("compare: no perf profile of redis-server: %s" % why)
        res["profile_skipped"] = why
    else:
        for label, b in builds:
            data = os.path.join(env.work, "perf-redis-%s.data" % label)
            r = compare_run(env, label, b, CMP_PROFILE_N, CMP_REPS + 1, profile=data)
            pct, nsamp = perf_profile(data)
            prof[label] = {"jobs": CMP_PROFILE_N, "hz": CMP_PROFILE_HZ, "samples": nsamp,
                           "pct": pct, "run": r}
            log("compare %s: perf profile of redis-server, %d samples: scripts %.1f%%, EXEC %.1f%%, "
                "kernel %.1f%%" % (label, nsamp, pct["scripts"], pct["exec"], pct["kernel"]))
    res["profile"] = prof
    cg = {"old": None, "new": None}
    if os.environ.get("BENCH_CALLGRIND", "1") != "0":
        env.start_redis()
        for label, b in builds:
            cg[label] = bench_callgrind(env, CMP_CG_N, binary=b, tag="-cmp-" + label)
    res["runs"] = runs
    res["monitor_runs"] = mon
    res["callgrind"] = cg
    res["old"] = compare_summary(runs["old"], mon["old"], cg["old"], CMP_N)
    res["new"] = compare_summary(runs["new"], mon["new"], cg["new"], CMP_N)
    return res


def compare_rows(C):
    """The comparison's table: figure, reference, current, current ÷ reference, target."""
    o, w = C["old"], C["new"]

    def ratio(k):
        return ("%.2f×" % (w[k] / o[k])) if o.get(k) and w.get(k) is not None else "-"

    def runs(x, k):
        return " (%s)" % " / ".join(fmt(v) for v in x[k + "_runs"]) if len(x[k + "_runs"]) > 1 else ""

    def met(ok):
        return "met" if ok else "NOT met"
    rr = w["redis_cpu_us_per_otp"] / o["redis_cpu_us_per_otp"]
    orr = w["otpd_cpu_us_per_otp"] / o["otpd_cpu_us_per_otp"]
    cg = C["callgrind_jobs"]
    return [
        ("top-level Redis commands sent by otpd per OTP (MONITOR)", fmt(o["toplevel_per_otp"]),
         fmt(w["toplevel_per_otp"]), ratio("toplevel_per_otp"),
         "≤ %.0f: %s" % (CMP_TOPLEVEL_MAX, met(w["toplevel_per_otp"] <= CMP_TOPLEVEL_MAX))),
        ("commands run inside scripts per OTP (MONITOR)", fmt(o["in_scripts_per_otp"]),
         fmt(w["in_scripts_per_otp"]), ratio("in_scripts_per_otp"), ""),
        ("all Redis commands per OTP (commandstats)", fmt(o["commands_per_otp"]),
         fmt(w["commands_per_otp"]), ratio("commands_per_otp"), ""),
        ("Redis CPU per OTP (µs; runs)", fmt(o["redis_cpu_us_per_otp"]) + runs(o, "redis_cpu_us_per_otp"),
         fmt(w["redis_cpu_us_per_otp"]) + runs(w, "redis_cpu_us_per_otp"), ratio("redis_cpu_us_per_otp"),
         "≤ %.1f× old: %s" % (CMP_CPU_RATIO_MAX, met(rr <= CMP_CPU_RATIO_MAX))),
        ("ceiling per Redis core = 1 / Redis CPU per OTP (OTP/s)",
         fmt(o["ceiling_otp_per_redis_core_s"]), fmt(w["ceiling_otp_per_redis_core_s"]),
         ratio("ceiling_otp_per_redis_core_s"), ""),
        ("otpd CPU per OTP, start-up excluded (µs, schedstat; runs)",
         fmt(o["otpd_cpu_us_per_otp"]) + runs(o, "otpd_cpu_us_per_otp"),
         fmt(w["otpd_cpu_us_per_otp"]) + runs(w, "otpd_cpu_us_per_otp"), ratio("otpd_cpu_us_per_otp"),
         "≤ %.1f× old: %s" % (CMP_CPU_RATIO_MAX, met(orr <= CMP_CPU_RATIO_MAX))),
        ("otpd CPU per OTP from /proc/PID/stat (µs, 10 ms ticks)", fmt(o["otpd_cpu_ticks_us_per_otp"]),
         fmt(w["otpd_cpu_ticks_us_per_otp"]), ratio("otpd_cpu_ticks_us_per_otp"), ""),
        ("instructions per OTP, otpd (callgrind, %d jobs)" % cg, fmt(o["ir_per_otp"]),
         fmt(w["ir_per_otp"]), ratio("ir_per_otp"), ""),
        ("throughput, first to last sent (OTP/s; runs)", fmt(o["otp_per_s"]) + runs(o, "otp_per_s"),
         fmt(w["otp_per_s"]) + runs(w, "otp_per_s"), ratio("otp_per_s"), ""),
        ("steady rate, 10th to 90th percentile of sent times (OTP/s)",
         fmt(o["otp_per_s_steady_p10_p90"]), fmt(w["otp_per_s_steady_p10_p90"]),
         ratio("otp_per_s_steady_p10_p90"), ""),
    ]


def compare_breakdown(C):
    """Per command: top-level and in-script calls per OTP (MONITOR run), all calls and
    usec per OTP (commandstats, median of the CPU runs), for both builds."""
    o, w = C["old"]["breakdown"], C["new"]["breakdown"]
    keys = sorted(set(o) | set(w), key=lambda k: -max(o.get(k, {}).get("usec_per_otp", 0),
                                                       w.get(k, {}).get("usec_per_otp", 0)))
    z = {"toplevel_per_otp": 0, "in_multi_per_otp": 0, "in_scripts_per_otp": 0,
         "calls_per_otp": 0, "usec_per_otp": 0}

    def n2(v):
        return "0" if not v else "%.3f" % v if v < 0.01 else "%.2f" % v

    def cells(x):
        return [n2(x["toplevel_per_otp"]) + (" (%s)" % n2(x["in_multi_per_otp"])
                                             if x["in_multi_per_otp"] else ""),
                n2(x["in_scripts_per_otp"]), "%.1f" % x["usec_per_otp"]]
    rows = [[k.upper()] + cells(o.get(k, z)) + cells(w.get(k, z)) for k in keys]
    rows.append(["all commands"] + cells({**z, **C["old"], "usec_per_otp": C["old"]["commandstats_usec_per_otp"]})
                + cells({**z, **C["new"], "usec_per_otp": C["new"]["commandstats_usec_per_otp"]}))
    rows.append(["outermost commands only (no double count)", "", "", "%.1f" % C["old"]["outer_usec_per_otp"],
                 "", "", "%.1f" % C["new"]["outer_usec_per_otp"]])
    rows.append(["Redis CPU (INFO cpu, for comparison)", "", "", "%.1f" % C["old"]["redis_cpu_us_per_otp"],
                 "", "", "%.1f" % C["new"]["redis_cpu_us_per_otp"]])
    r = C["ref"]["commit"]
    head = ("command", "%s sent (in MULTI)" % r, "%s in scripts" % r, "%s usec" % r,
            "current sent (in MULTI)", "current in scripts", "current usec")
    return render(rows, head)


def compare_report(C):
    if C.get("skipped"):
        return "comparison with %s skipped: %s" % (C["ref_commit"], C["skipped"])
    r = C["ref"]
    head = ("figure", "%s (old)" % r["commit"], "current (new)", "new ÷ old", "target")
    lines = ["before/after: otpd at %s (%s, sha256 %s…%s) against the current build, %d jobs "
             "per run, instant HTTP/2 mock, fresh redis-server per run; medians of %d CPU runs "
             "per build" % (r["commit"], r["sha"][:12], r["sha256"][:8],
                            ", built now" if not r.get("cached") else ", cached build",
                            C["jobs"], C["reps"]),
             "", render(compare_rows(C), head), "",
             "per OTP, by command: calls otpd sent (of which queued in MULTI) and calls run "
             "inside scripts, from the MONITOR run; usec from INFO commandstats, median of the "
             "CPU runs: time inside the command by the wall clock (so it grows when redis-server "
             "is preempted on a busy machine), EXEC's and EVALSHA's including the commands they "
             "run:", "", compare_breakdown(C)]
    o, w = C["old"], C["new"]
    if C.get("profile"):
        po, pw = C["profile"]["old"], C["profile"]["new"]
        rows = []
        for k, a, ind in PROFILE_ACTIVITIES:
            x, y = po["pct"][k], pw["pct"][k]
            rows.append(("  " * ind + a, "%.1f%%" % x, "%.1f" % (x / 100 * o["redis_cpu_us_per_otp"]),
                         "%.1f%%" % y, "%.1f" % (y / 100 * w["redis_cpu_us_per_otp"])))
        lines += ["", "redis-server's CPU by activity: perf record -e cpu-clock -F %d --call-graph dwarf "
                  "on redis-server, one run of %d jobs per build (%s and %s samples); µs/OTP = share × "
                  "the median Redis CPU per OTP above:" % (CMP_PROFILE_HZ, po["jobs"], po["samples"],
                                                            pw["samples"]), "",
                  render(rows, ("activity", "%s share" % r["commit"], "%s µs/OTP" % r["commit"],
                                "current share", "current µs/OTP"))]
    elif C.get("profile_skipped"):
        lines += ["", "(no perf profile of redis-server: %s)" % C["profile_skipped"]]
    lines.append("")
    lines.append("ceiling per Redis core = 1 / Redis CPU per OTP: %s: 1 / %.1f µs = %s OTP/s; "
                 "current: 1 / %.1f µs = %s OTP/s"
                 % (r["commit"], o["redis_cpu_us_per_otp"], fmt(o["ceiling_otp_per_redis_core_s"]),
                    w["redis_cpu_us_per_otp"], fmt(w["ceiling_otp_per_redis_core_s"])))
    lines.append("otpd connections to Redis seen in the MONITOR runs: %d (old), %d (new); jobs not "
                 "sent: %d (old), %d (new); retried sends: %d (old), %d (new)"
                 % (o["otpd_connections"], w["otpd_connections"], o["not_sent"], w["not_sent"],
                    o["retries"], w["retries"]))
    return "\n".join(lines)


# ---------------------------------------------------------------- WAIT for replicas
#
# BENCH_ONLY=wait: what OTPD_REDIS_WAIT_REPLICAS=1 costs against 0.  Each run is a
# compare_run of the current build with a replica attached to its fresh redis-server
# (both no persistence), WAIT_REPS runs per setting, alternating; medians with min–max.

WAIT_N = int(os.environ.get("BENCH_WAIT_N", "3000"))  # jobs per run
WAIT_REPS = int(os.environ.get("BENCH_WAIT_REPS", "5"))  # runs per setting
WAIT_FIGURES = [  # (key, table row, whether WAIT=1 ÷ WAIT=0 means anything)
    ("otp_per_s", "throughput, first to last sent (OTP/s)", True),
    ("otp_per_s_steady_p10_p90", "steady rate, 10th to 90th percentile of sent times (OTP/s)", True),
    ("first_sent_after_resume_ms", "first OTP sent, after SIGCONT (ms)", True),
    ("redis_cpu_us_per_otp", "primary Redis CPU per OTP (µs)", True),
    ("replica_cpu_us_per_otp", "replica Redis CPU per OTP (µs)", True),
    ("otpd_cpu_us_per_otp", "otpd CPU per OTP, start-up excluded (µs, schedstat)", True),
    ("commands_per_otp", "all commands per OTP on the primary (commandstats)", True),
    ("evalsha_per_otp", "EVALSHA per OTP (begin/finish batches + single scripts)", True),
    ("wait_per_otp", "WAIT commands per OTP (commandstats cmdstat_wait ÷ N)", False),
    ("replconf_per_otp", "REPLCONF per OTP on the primary (the replica's ACKs)", False),
    ("waits_begin", "otpd_redis_waits_total{step=begin} per run", False),
    ("waits_finish", "otpd_redis_waits_total{step=finish} per run", False),
    ("waits_short", "otpd_redis_waits_short_total, both steps, per run", False),
]


def bench_wait(env):
    e = otpd_env(env, "h2", OTPD_REDIS_WAIT_REPLICAS=1)
    cfg, _ = check_config(e)
    if "OTPD_REDIS_WAIT_REPLICAS" not in cfg:
        raise RuntimeError("%s has no OTPD_REDIS_WAIT_REPLICAS setting" % OTPD)
    res = {"jobs": WAIT_N, "reps": WAIT_REPS, "poll_s": CMP_POLL_S,
           "settings": {k: v for k, v in e.items() if k.startswith("OTPD_") and k != "OTPD_HASH_KEY"},
           "check_config": {k: cfg.get(k) for k in ("OTPD_REDIS_WAIT_REPLICAS", "OTPD_REDIS_WAIT_TIMEOUT_MS",
                                                    "OTPD_BATCH", "OTPD_MAX_INFLIGHT")}}
    runs = {0: [], 1: []}
    for rep in range(WAIT_REPS):  # alternate, so a busy spell on the machine hits both
        for w in (0, 1):
            r = compare_run(env, "wait%d" % w, OTPD, WAIT_N, rep, replica=True,
                            extra={"OTPD_REDIS_WAIT_REPLICAS": w,
                                   "OTPD_METRICS_ADDR": "127.0.0.1:%d" % free_port()})
            m = r["metrics"]
            r.update({c + "_per_otp": r["commands"].get(c, {}).get("calls", 0) / WAIT_N
                      for c in ("wait", "replconf", "evalsha")})
            r.update(waits_begin=m.get('otpd_redis_waits_total{step="begin"}'),
                     waits_finish=m.get('otpd_redis_waits_total{step="finish"}'),
                     waits_short=sum(v for k, v in m.items() if k.startswith("otpd_redis_waits_short")))
            log("wait=%d run %d: %.3f WAIT/OTP, otpd counted %s + %s WAITs (%s short)"
                % (w, rep, r["wait_per_otp"], fmt(r["waits_begin"]), fmt(r["waits_finish"]),
                   fmt(r["waits_short"])))
            runs[w].append(r)
    res["runs"] = runs
    for w in (0, 1):
        s = {}
        for k, _, _ in WAIT_FIGURES:
            xs = [r[k] for r in runs[w] if r.get(k) is not None]
            s[k] = {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "runs": xs} if xs else None
        s["not_sent"] = sum(r["not_sent"] for r in runs[w])
        s["retries"] = sum(r["retries"] for r in runs[w])
        res["wait%d" % w] = s
    return res


def wait_report(W):
    a, b = W["wait0"], W["wait1"]

    def f(v):  # WAITs per OTP are fractions: three decimals
        return "%.3f" % v if isinstance(v, float) and 0 < abs(v) < 1 else fmt(v)

    def cell(x):
        if x is None:
            return "-"
        return f(x["median"]) + (" (%s–%s)" % (f(x["min"]), f(x["max"])) if x["min"] != x["max"] else "")
    rows = []
    for k, what, ratio in WAIT_FIGURES:
        x, y = a[k], b[k]
        rows.append((what, cell(x), cell(y),
                     "%.2f×" % (y["median"] / x["median"]) if ratio and x and y and x["median"] else "-"))
    head = ("figure", "WAIT=0 (baseline)", "WAIT=1", "WAIT=1 ÷ WAIT=0")
    return "\n".join([
        "WAIT for replicas: OTPD_REDIS_WAIT_REPLICAS=1 against 0 (OTPD_REDIS_WAIT_TIMEOUT_MS=%s), "
        "%d jobs per run, instant HTTP/2 mock, a fresh redis-server and one replica per run; "
        "medians (min–max) of %d runs per setting" % (W["check_config"]["OTPD_REDIS_WAIT_TIMEOUT_MS"],
                                                     W["jobs"], W["reps"]),
        "", render(rows, head), "",
        "jobs not sent: %d (WAIT=0), %d (WAIT=1); retried sends: %d (WAIT=0), %d (WAIT=1)"
        % (a["not_sent"], b["not_sent"], a["retries"], b["retries"])])


# ---------------------------------------------------------------- baseline


def celery_env(env, pool, conc, which="h1"):
    e = dict(os.environ)
    e.update({"BENCH_BROKER": "redis://127.0.0.1:%d/1" % env.redis_port,
              "BENCH_REDIS": env.redis_url, "BENCH_TWILIO": env.base(which),
              "BENCH_CA": env.ca["ca_cert"], "BENCH_POOL": str(max(10, conc)),
              "BENCH_HASH_KEY": HASH_KEY,
              "PYTHONPATH": BENCH, "PYTHONDONTWRITEBYTECODE": "1"})
    return e


def baseline_app(env):
    os.environ.update(celery_env(env, "prefork", 1))
    import celery_baseline
    celery_baseline.app.conf.broker_url = "redis://127.0.0.1:%d/1" % env.redis_port
    return celery_baseline


def start_worker(env, pool, conc, name, which="h1"):
    errp = os.path.join(env.work, "celery-%s.err" % name)
    err = open(errp, "wb")
    t0 = time.monotonic()
    p = spawn([PY, "-m", "celery", "-A", "celery_baseline", "worker", "-P", pool, "-c", str(conc),
               "--loglevel=WARNING", "--without-heartbeat", "--without-gossip", "--without-mingle",
               "-n", "bench-%s@localhost" % name], env=celery_env(env, pool, conc, which), cwd=BENCH,
              stdout=err, stderr=err)
    return p, t0, err, errp


def stop_worker(p, err):
    kids = tree(p.pid)[1:]
    stop(p, timeout=20)
    for q in kids:
        try:
            os.kill(q, signal.SIGKILL)
        except OSError:
            pass
    err.close()


def warm_worker(env, mod, p, errp, k):
    """Send k tasks to a started worker and wait for them (bounded): it is then
    up, every prefork child has run a task, and its clients are connected."""
    base = sent_count(env)
    for i in range(k):
        mod.send_otp.apply_async(("warm-%d" % i, "+1415%07d" % (9000000 + i)))
    try:
        wait_for(lambda: sent_count(env) >= base + k or p.poll() is not None, 60, interval=0.05,
                 what="the celery worker to run its warm-up tasks")
    except TimeoutError:
        with open(errp, errors="replace") as f:
            raise RuntimeError("celery worker did not start:\n" + f.read()[-3000:])
    if p.poll() is not None:
        with open(errp, errors="replace") as f:
            raise RuntimeError("celery worker exited:\n" + f.read()[-3000:])


def baseline_startup_cpu(env, mod, pool, conc):
    """CPU-seconds a worker tree spends starting up and warming (2*conc tasks)."""
    env.reset()
    k = 2 * conc
    p, t0, err, errp = start_worker(env, pool, conc, "startup-%s%d" % (pool, conc))
    warm_worker(env, mod, p, errp, k)
    cpu = tree_cpu(p.pid)
    stop_worker(p, err)
    return cpu, time.monotonic() - t0


def bench_baseline_throughput(env, mod, n, pool, conc):
    startup_cpu, _ = baseline_startup_cpu(env, mod, pool, conc)
    env.reset()
    for i in range(n):
        mod.send_otp.apply_async(("b-%d" % i, "+1415%07d" % i))
    name = "%s%d" % (pool, conc)
    rc0 = env.redis_cpu()
    p, t0, err, errp = start_worker(env, pool, conc, name)
    deadline = time.monotonic() + 60 + n / 50
    t_done = t_first = None
    while time.monotonic() < deadline:
        c = sent_count(env)
        if t_first is None and c > 0:
            t_first = time.monotonic()
        if c >= n:
            t_done = time.monotonic()
            break
        if p.poll() is not None:
            break
        time.sleep(0.05)
    cpu = tree_cpu(p.pid)
    hwm = tree_rss_kb(p.pid)
    rcpu = env.redis_cpu() - rc0
    done = sent_count(env)
    stop_worker(p, err)
    if t_done is None:
        with open(errp, errors="replace") as f:
            tail = f.read()[-2000:]
        log("baseline %s: only %d of %d sent\n%s" % (name, done, n, tail))
        return {"pool": pool, "concurrency": conc, "jobs": n, "sent": done, "finished": False}
    wall = t_done - t0
    res = {"pool": pool, "concurrency": conc, "jobs": n, "finished": True, "wall_s": wall,
           "otp_per_s": n / wall, "otp_per_s_after_first": (n - 1) / (t_done - t_first),
           "cpu_s": cpu, "startup_cpu_s": startup_cpu,
           "cpu_us_per_otp_incl_startup": cpu / n * 1e6,
           "cpu_us_per_otp": (cpu - startup_cpu) / n * 1e6,
           "otp_per_cpu_s": n / (cpu - startup_cpu), "vm_hwm_kb_sum": hwm,
           "redis_cpu_us_per_otp": rcpu / n * 1e6,
           "not_sent": check_all_sent(env, n, "b")}
    log("baseline %s n=%d: %.0f OTP/s (after the first: %.0f), %.0f us CPU/OTP (worker tree, "
        "start-up's %.2f s subtracted; %.0f with it), peak RSS sum %d kB"
        % (name, n, res["otp_per_s"], res["otp_per_s_after_first"], res["cpu_us_per_otp"],
           startup_cpu, res["cpu_us_per_otp_incl_startup"], hwm))
    return res


def bench_baseline_latency(env, mod, pool, conc, which_secs):
    env.reset()
    name = "lat-%s%d" % (pool, conc)
    p, t0, err, errp = start_worker(env, pool, conc, name)
    warm_worker(env, mod, p, errp, 2 * conc)
    env.r.delete("otpd:stats")
    r = env.r

    def send(i):
        now = int(time.time() * 1000)
        job_id = "lat-%d" % i
        pipe = r.pipeline(transaction=True)
        pipe.hsetnx("otpd:job:" + job_id, "status", "queued")
        pipe.hsetnx("otpd:job:" + job_id, "created_ms", now)
        pipe.expire("otpd:job:" + job_id, 86400)
        pipe.execute()
        mod.send_otp.apply_async((job_id, "+1415%07d" % i))
    n, achieved = paced(LAT_RATE, which_secs, send)
    deadline = time.monotonic() + 30 + which_secs * 3
    while time.monotonic() < deadline and sent_count(env) < n and p.poll() is None:
        time.sleep(0.1)
    stop_worker(p, err)
    lat, missing = latencies(env, n, "lat")
    res = lat_summary(lat, missing, n, achieved)
    res.update(pool=pool, concurrency=conc, mock="h1")
    log("baseline latency %s%d at %.0f/s: p50 %s ms, p99 %s ms, max %s ms, not sent %d"
        % (pool, conc, achieved, res["p50_ms"], res["p99_ms"], res["max_ms"], missing))
    return res


def bench_baseline_realistic(env, mod, n):
    """The baseline against the realistic port, cold like otpd: n tasks queued, then
    the worker starts.  Its best pool from BASELINE_CONFIGS is the one with the most
    requests open at once (a worker's bound is concurrency / latency: 213 OTP/s for
    gevent -c 64 at 300 ms, 13 for prefork -c 4), so only that one runs."""
    pool, conc = max(BASELINE_CONFIGS, key=lambda pc: pc[1])
    env.reset()
    for i in range(n):
        mod.send_otp.apply_async(("b-%d" % i, "+1415%07d" % i))
    since = env.real_log_offset()
    name = "real-%s%d" % (pool, conc)
    p, t0, err, errp = start_worker(env, pool, conc, name, which="real")
    deadline = time.monotonic() + 60 + n / 20
    t_done = None
    while time.monotonic() < deadline and p.poll() is None:
        if sent_count(env) >= n:
            t_done = time.monotonic()
            break
        time.sleep(0.05)
    cpu = tree_cpu(p.pid)
    stop_worker(p, err)
    time.sleep(0.1)
    if t_done is None:
        with open(errp, errors="replace") as f:
            tail = f.read()[-2000:]
        log("realistic baseline %s: only %d of %d sent\n%s" % (name, sent_count(env), n, tail))
        return {"pool": pool, "concurrency": conc, "jobs": n, "finished": False}
    res = realistic_figures(env, n, "b", since, conc)
    res.update(pool=pool, concurrency=conc, finished=True, wall_s=t_done - t0,
               otp_per_s_from_start=n / (t_done - t0), cpu_s=cpu)
    log("realistic baseline %s n=%d: %.0f OTP/s first to last sent (steady %.0f), bound %d / "
        "%.3f s = %.0f OTP/s, %.0f%% of it; mock: peak %d requests at once over %d connections"
        % (name, n, res["otp_per_s"], res["otp_per_s_steady_p10_p90"] or 0, conc, REAL_LATENCY_S,
           res["bound_otp_per_s"], 100 * res["ratio_to_bound"], res["mock_peak_concurrent"],
           res["mock_connections"]))
    return res


# ---------------------------------------------------------------- report


def machine():
    def sh(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip()
        except Exception:
            return ""
    model = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    pkgs = {}
    for pkg in ("nginx", "libnginx-mod-http-echo", "redis-server", "valgrind", "python3-celery",
                "python3-twilio", "python3-gevent", "python3-redis", "python3-requests",
                "libcurl4", "libhiredis0.14", "libuv1", "libssl3", "libnghttp2-14"):
        pkgs[pkg] = sh(["dpkg-query", "-W", "-f=${Version}", pkg]) or None
    return {"nproc": os.cpu_count(), "model": model, "mem_gib": round(mem_kb / 1048576, 1),
            "kernel": platform.release(), "debian": sh(["cat", "/etc/debian_version"]),
            "otpd": sh([OTPD, "--version"]), "otpd_bin": OTPD,
            "otpd_sha256": sh(["sha256sum", OTPD]).split(" ")[0],
            "otpd_mtime": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(os.path.getmtime(OTPD))),
            "git_head": sh(["git", "-C", ROOT, "describe", "--always", "--dirty"]), "packages": pkgs,
            "loadavg_at_start": open("/proc/loadavg").read().split()[:3]}


def fmt(v, unit=""):
    if v is None:
        return "-"
    if isinstance(v, float):
        v = ("%.0f" % v) if abs(v) >= 100 else ("%.1f" % v) if abs(v) >= 10 else ("%.2f" % v)
    return "%s%s" % (v, unit)


def realistic_rows(RR):
    """The realistic-provider row's table lines, from R["realistic"]."""
    o, b = RR["otpd"], RR.get("baseline") or {}
    if not b.get("finished"):
        b = {}
    lat_ms = "%.0f ms" % (REAL_LATENCY_S * 1000)
    defaults = "defaults + OTPD_PROVIDER=twilio" if o.get("provider_forced") else "defaults"

    def pct_(x):
        return "%.0f%%" % (100 * x) if x is not None else "-"

    def bound(x, what):
        return "%s (%s ÷ %.1f s)" % (fmt(x["bound_otp_per_s"]), what, REAL_LATENCY_S) if x else "-"
    ok = o.get("ratio_to_bound") is not None and o["ratio_to_bound"] >= REAL_TARGET
    thr_ratio = ("%.1f×" % (o["otp_per_s"] / b["otp_per_s"])) if b and o.get("otp_per_s") else "-"
    return [
        ("realistic provider: HTTP/1.1, %s, %s: throughput, %d backlog (OTP/s)"
         % (lat_ms, defaults, o["jobs"]), fmt(o["otp_per_s"]), fmt(b.get("otp_per_s")), thr_ratio, ""),
        ("realistic provider: bound = request cap ÷ latency (OTP/s)",
         bound(o, "cap %d" % o["request_cap"]),
         bound(b, "%s -c %d" % (b["pool"], b["concurrency"])) if b else "-", "-", ""),
        ("realistic provider: throughput ÷ bound", pct_(o.get("ratio_to_bound")),
         pct_(b.get("ratio_to_bound")), "-", "≥ %.0f%%: %s" % (100 * REAL_TARGET, "met" if ok else "NOT met")),
        ("realistic provider: peak requests at the mock / connections used",
         "%d / %d" % (o["mock_peak_concurrent"], o["mock_connections"]),
         ("%d / %d" % (b["mock_peak_concurrent"], b["mock_connections"])) if b else "-", "-", ""),
    ]


def render(rows, head=("figure", "otpd", "baseline", "ratio", "target")):
    rows = [tuple(r) for r in rows]
    k = len(head)
    w = [max(len(str(r[i])) for r in rows + [head]) for i in range(k)]
    lines = ["| " + " | ".join(str(h).ljust(w[i]) for i, h in enumerate(head)) + " |",
             "|" + "|".join("-" * (w[i] + 2) for i in range(k)) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(str(c).ljust(w[i]) for i, c in enumerate(r)) + " |")
    return "\n".join(lines)


def table(R):
    rows = []
    thr = R["otpd"]["throughput"]
    base = R["baseline"]["best"]
    bl = R["baseline"].get("latency") or {}
    big, small = thr["h2"][-1], thr["h2"][0]

    def ratio(a, b, inv=False):
        if a is None or b is None or not b or not a:
            return "-"
        return "%.1f×" % ((b / a) if inv else (a / b))

    def target(ok):
        return "met" if ok else "NOT met"

    for x in thr["h2"]:
        rows.append(("throughput, %d backlog, HTTP/2 (OTP/s)" % x["jobs"], fmt(x["otp_per_s"]),
                     fmt(base["otp_per_s"]) if x["jobs"] == base["jobs"] else "-",
                     ratio(x["otp_per_s"], base["otp_per_s"]) if x["jobs"] == base["jobs"] else "-",
                     "≥10,000: " + target(x["otp_per_s"] >= 10000)))
    x = thr["h1"][0]
    rows.append(("throughput, %d backlog, HTTP/1.1 (OTP/s)" % x["jobs"], fmt(x["otp_per_s"]),
                 fmt(base["otp_per_s"]) if x["jobs"] == base["jobs"] else "-",
                 ratio(x["otp_per_s"], base["otp_per_s"]) if x["jobs"] == base["jobs"] else "-", ""))
    rows.append(("CPU per OTP, %d backlog, start-up excluded (µs)" % small["jobs"], fmt(small["cpu_us_per_otp"]),
                 fmt(base["cpu_us_per_otp"]), ratio(small["cpu_us_per_otp"], base["cpu_us_per_otp"], inv=True),
                 "≤60 µs: " + target(small["cpu_us_per_otp"] <= 60)))
    rows.append(("OTP per CPU-second", fmt(small["otp_per_cpu_s"]), fmt(base["otp_per_cpu_s"]),
                 ratio(small["otp_per_cpu_s"], base["otp_per_cpu_s"]),
                 "≥20× baseline: " + target(small["otp_per_cpu_s"] >= 20 * base["otp_per_cpu_s"])))
    rows.append(("Redis CPU per OTP (µs)", fmt(small["redis_cpu_us_per_otp"]),
                 fmt(base["redis_cpu_us_per_otp"]),
                 ratio(small["redis_cpu_us_per_otp"], base["redis_cpu_us_per_otp"], inv=True), ""))
    cg = R["otpd"].get("callgrind")
    if cg:
        rows.append(("instructions per OTP (callgrind, %d jobs)" % cg["jobs"], fmt(cg["ir_per_otp"]),
                     "-", "-", ""))
    for m in R["otpd"]["memory"]:
        rows.append(("peak RSS, %d in flight (max seen %d) (MB)" % (m["inflight_limit"], m["max_pending_seen"]),
                     fmt(m["vm_hwm_kb"] / 1024), "-", "-",
                     ("≤32 MB: " + target(m["vm_hwm_kb"] <= 32 * 1024)) if m["inflight_limit"] == 2000 else ""))
    # Flat: the largest backlog's RSS at the end is within 10% + 1 MB of its RSS
    # when a quarter of it was sent, and its peak within that of the smaller run's.
    flat = (big["vm_rss_kb_at_25pct"] is not None
            and big["vm_rss_kb_at_end"] <= big["vm_rss_kb_at_25pct"] * 1.1 + 1024
            and big["vm_hwm_kb"] <= small["vm_hwm_kb"] * 1.1 + 1024)
    rows.append(("peak RSS, %d backlog (MB)" % small["jobs"], fmt(small["vm_hwm_kb"] / 1024),
                 fmt(base["vm_hwm_kb_sum"] / 1024), ratio(small["vm_hwm_kb"], base["vm_hwm_kb_sum"], inv=True), ""))
    rows.append(("peak RSS, %d backlog (MB)" % big["jobs"], fmt(big["vm_hwm_kb"] / 1024), "-", "-",
                 "flat with backlog: " + target(flat)))
    rows.append(("RSS, %d backlog, at 25%% / at the end (MB)" % big["jobs"],
                 "%s / %s" % (fmt((big["vm_rss_kb_at_25pct"] or 0) / 1024), fmt(big["vm_rss_kb_at_end"] / 1024)),
                 "-", "-", ""))
    for L in R["otpd"]["latency"]:
        b = bl if L["mock"] == "h2" else {}
        for q in ("p50", "p99", "max"):
            tg = ""
            if L["mock"] == "h2" and q == "p99":
                tg = "≤20 ms: " + target(L["p99_ms"] is not None and L["p99_ms"] <= 20)
            rows.append(("enqueue→sent %s, %s mock, %d/s (ms)"
                         % (q, "instant" if L["mock"] == "h2" else "200 ms", LAT_RATE),
                         fmt(L[q + "_ms"]), fmt(b.get(q + "_ms")),
                         ratio(L[q + "_ms"], b.get(q + "_ms"), inv=True) if b else "-", tg))
    rows.append(("retried sends in the throughput runs (HTTP/2 stream errors)",
                 " / ".join(str(x["retries"]) for x in thr["h2"] + thr["h1"]), "-", "-", ""))
    if R["otpd"]["latency"]:
        rows.append(("offered rate achieved by the producer (OTP/s)",
                     fmt(R["otpd"]["latency"][0]["offered_per_s"]), fmt(bl.get("offered_per_s")), "-", ""))
    if R.get("realistic"):
        rows.extend(realistic_rows(R["realistic"]))
    return render(rows)


def write_results(R, suffix=""):
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = os.path.join(BENCH, "results", "%s-%s%s.json" % (SCALE, stamp, suffix))
    with open(path, "w") as f:
        json.dump(R, f, indent=1, default=str)
    with open(os.path.join(BENCH, "results", "latest-%s%s.json" % (SCALE, suffix)), "w") as f:
        json.dump(R, f, indent=1, default=str)
    return path


def realistic_only(R, work):
    """BENCH_ONLY=realistic: redis, the mock, the realistic row and its baseline."""
    try:
        env = Env(work)
        R["realistic"] = {"otpd": bench_realistic(env, P["real_n"])}
        mod = baseline_app(env)
        R["realistic"]["baseline"] = bench_baseline_realistic(env, mod, P["real_n"])
    finally:
        cleanup()
    R["elapsed_s"] = time.monotonic() - T_START
    t = render(realistic_rows(R["realistic"]))
    R["table"] = t
    path = write_results(R, "-realistic")
    o, b = R["realistic"]["otpd"], R["realistic"]["baseline"]
    print("\nrealistic provider (HTTP/1.1, %.0f ms): otpd with the settings an operator must give "
          "(%s) vs Celery %s -c %d + twilio-python, BENCH_SCALE=%s, %d cores, %.0f s\n"
          % (REAL_LATENCY_S * 1000, ", ".join(o["settings"]), b["pool"], b["concurrency"], SCALE,
             os.cpu_count(), R["elapsed_s"]))
    print(t)
    print("\notpd: OTPD_TWILIO_MAX_INFLIGHT=%s, OTPD_HTTP_MAX_CONNS=%s (from --check-config); "
          "steady rate (10th to 90th percentile of sent times) %s OTP/s; at most %d sockets open"
          % (o["check_config"]["OTPD_TWILIO_MAX_INFLIGHT"], o["check_config"]["OTPD_HTTP_MAX_CONNS"],
             fmt(o["otp_per_s_steady_p10_p90"]), o["max_sockets_seen"]))
    print("\nraw numbers: %s" % os.path.relpath(path, ROOT))


def table_only(R, work, key, measure, report):
    """BENCH_ONLY=compare|wait: redis and the mock, then R[key] = measure(env), one table."""
    try:
        env = Env(work)
        R[key] = measure(env)
    finally:
        cleanup()
    R["elapsed_s"] = time.monotonic() - T_START
    t = report(R[key])
    R["table"] = t
    path = write_results(R, "-" + key)
    print("\n%s\n\n%d cores, %.0f s" % (t, os.cpu_count(), R["elapsed_s"]))
    print("\nraw numbers: %s" % os.path.relpath(path, ROOT))


def compare_only(R, work):
    """BENCH_ONLY=compare: the before/after comparison."""
    table_only(R, work, "compare", bench_compare, compare_report)


def wait_only(R, work):
    """BENCH_ONLY=wait: the WAIT=0 / WAIT=1 runs, each with a replica."""
    table_only(R, work, "wait", bench_wait, wait_report)


def main():
    global OTPD
    if not os.access(OTPD, os.X_OK):
        sys.exit("no otpd binary at %s (cmake --build build)" % OTPD)
    os.makedirs(os.path.join(BENCH, "results"), exist_ok=True)
    work = tempfile.mkdtemp(prefix="otpd-bench.")
    R = {"scale": SCALE, "params": P, "otpd_tuning": OTPD_TUNING, "machine": machine(),
         "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "work": work,
         "otpd": {}, "baseline": {}}
    otpd_sha = R["machine"]["otpd_sha256"]
    # Run a private copy: a rebuild of build/otpd during the run must not mix binaries.
    subprocess.run(["cp", "-p", OTPD, os.path.join(work, "otpd")], check=True)
    OTPD = os.path.join(work, "otpd")
    if BENCH_ONLY:
        del R["otpd"], R["baseline"]
        if BENCH_ONLY == "realistic":
            del R["otpd_tuning"]
        R["only"] = BENCH_ONLY
        {"realistic": realistic_only, "compare": compare_only, "wait": wait_only}[BENCH_ONLY](R, work)
        if not os.environ.get("BENCH_KEEP"):
            subprocess.run(["rm", "-rf", work])
        return
    try:
        env = Env(work)
        R["otpd"]["startup_cpu_s"] = otpd_startup_cpu(env)
        R["otpd"]["throughput"] = {"h2": [bench_throughput(env, n, "h2") for n in P["thr"]],
                                   "h1": [bench_throughput(env, P["thr"][0], "h1")]}
        R["otpd"]["memory"] = [bench_memory(env, k) for k in P["inflight"]]
        R["otpd"]["latency"] = [bench_latency(env, "h2"), bench_latency(env, "slow")]
        if os.environ.get("BENCH_CALLGRIND", "1") != "0":
            R["otpd"]["callgrind"] = bench_callgrind(env, P["cg"])
        mod = baseline_app(env)
        runs = [bench_baseline_throughput(env, mod, P["base_n"], pool, c) for pool, c in BASELINE_CONFIGS]
        R["baseline"]["runs"] = runs
        ok = [x for x in runs if x.get("finished")]
        best = max(ok, key=lambda x: x["otp_per_cpu_s"] * 0 + x["otp_per_s"])
        R["baseline"]["best"] = best
        R["baseline"]["latency"] = bench_baseline_latency(env, mod, best["pool"], best["concurrency"],
                                                          P["base_lat_s"])
        R["realistic"] = {"otpd": bench_realistic(env, P["real_n"]),
                          "baseline": bench_baseline_realistic(env, mod, P["real_n"])}
        # Last: it starts a fresh redis-server for each of its runs.
        R["compare"] = bench_compare(env)
    finally:
        cleanup()
    R["elapsed_s"] = time.monotonic() - T_START
    if subprocess.run(["sha256sum", OTPD], capture_output=True, text=True).stdout.split(" ")[0] != otpd_sha:
        raise RuntimeError("the copy of otpd changed during the run")
    t = table(R)
    R["table"] = t
    R["compare_table"] = compare_report(R["compare"])
    path = write_results(R)
    b = R["baseline"]["best"]
    print("\notpd vs Celery %s -c %d + twilio-python (best baseline by throughput), BENCH_SCALE=%s, "
          "%d cores, %.0f s\n" % (b["pool"], b["concurrency"], SCALE, os.cpu_count(), R["elapsed_s"]))
    print(t)
    print("\nbaseline runs: " + "; ".join(
        "%s -c %d: %s OTP/s, %s µs CPU/OTP" % (x["pool"], x["concurrency"], fmt(x.get("otp_per_s")),
                                                fmt(x.get("cpu_us_per_otp"))) for x in R["baseline"]["runs"]))
    rb = R["realistic"]["baseline"]
    print("realistic provider rows: the baseline is Celery %s -c %d (the most requests at once of "
          "the configurations above); otpd runs with only %s" % (rb["pool"], rb["concurrency"],
                                                            ", ".join(R["realistic"]["otpd"]["settings"])))
    if R["otpd"].get("callgrind"):
        print("\ncallgrind, otpd, top functions by own instructions (%d jobs):" % R["otpd"]["callgrind"]["jobs"])
        for t15 in R["otpd"]["callgrind"]["top15_self"]:
            print("  %5.1f%%  %s" % (t15["pct"], t15["fn"]))
    print("\n" + R["compare_table"])
    print("\nraw numbers: %s" % os.path.relpath(path, ROOT))
    if not os.environ.get("BENCH_KEEP"):
        subprocess.run(["rm", "-rf", work])


if __name__ == "__main__":
    def _sig(signum, frame):
        cleanup()
        sys.exit(128 + signum)
    signal.signal(signal.SIGTERM, _sig)
    signal.signal(signal.SIGINT, _sig)
    main()

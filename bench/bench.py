#!/usr/bin/python3
"""otpd benchmark (issue #7): otpd against a Celery + twilio-python baseline.

Run through bench/run.sh, which checks the tools and builds nothing.  This
script starts everything it measures against, on loopback only, in a fresh
work directory, and stops all of it at the end (also on error or Ctrl-C):

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
Every wait is bounded; a run that does not finish in time is reported as such.
"""
import json
import os
import platform
import re
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

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
if BENCH_ONLY not in ("", "realistic"):
    sys.exit("BENCH_ONLY must be empty or realistic, not %r" % BENCH_ONLY)

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


def tree_cpu(pid):
    return sum((proc_stat(p) or (0, 0))[0] for p in tree(pid))


def tree_rss_kb(pid, key="VmHWM"):
    return sum(proc_status(p, key) or 0 for p in tree(pid))


# ---------------------------------------------------------------- services


class Env:
    def __init__(self, work):
        self.work = work
        self.ca = testca.make_ca(os.path.join(work, "ca"))
        self.redis_port = free_port()
        self.redis = spawn(["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1",
                            "--save", "", "--appendonly", "no", "--dir", work, "--daemonize", "no",
                            "--logfile", os.path.join(work, "redis.log"), "--maxclients", "20000"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.r = redis.Redis(port=self.redis_port, decode_responses=True)

        def up():
            try:
                return self.r.ping()
            except redis.exceptions.ConnectionError:
                return False
        wait_for(up, 10, what="redis-server")
        self.redis_url = "redis://127.0.0.1:%d/0" % self.redis_port

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
    def __init__(self, env, name, envvars, wrapper=()):
        self.env = env
        self.err_path = os.path.join(env.work, "otpd-%s.err" % name)
        self.err = open(self.err_path, "wb")
        self.redis_cpu0 = env.redis_cpu()
        self.t0 = time.monotonic()
        self.proc = spawn(list(wrapper) + [OTPD], env=envvars, stdout=subprocess.DEVNULL, stderr=self.err)

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
            try:
                fds = os.listdir("/proc/%d/fd" % run.proc.pid)
                socks[0] = max(socks[0], sum(1 for fd in fds if os.readlink(
                    "/proc/%d/fd/%s" % (run.proc.pid, fd)).startswith("socket:")))
            except OSError:
                pass
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
                        lambda i: client.send("+1415%07d" % i, "login", id="lat-%d" % i))
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
            try:
                fds = os.listdir("/proc/%d/fd" % run.proc.pid)
                socks[0] = max(socks[0], sum(1 for fd in fds if os.readlink(
                    "/proc/%d/fd/%s" % (run.proc.pid, fd)).startswith("socket:")))
            except OSError:
                pass
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


def bench_callgrind(env, n):
    out = os.path.join(BENCH, "results", "callgrind")
    os.makedirs(out, exist_ok=True)
    totals = {}
    for jobs in (0, n):
        env.reset()
        if jobs:
            backlog_otpd(env, jobs)
        f = os.path.join(out, "callgrind.otpd.%d.out" % jobs)
        run = OtpdRun(env, "cg-%d" % jobs, otpd_env(env, "h2", OTPD_HTTP_TIMEOUT_MS=60000,
                                                     OTPD_SHUTDOWN_TIMEOUT_MS=60000),
                      wrapper=["valgrind", "--tool=callgrind", "--callgrind-out-file=" + f])
        run.wait_ready(timeout=120)
        if jobs:
            run.wait_sent(jobs, timeout=300, interval=0.2)
        else:
            time.sleep(1)
        run.finish(timeout=120)
        totals[jobs] = callgrind_total(f)
    profile = os.path.join(out, "callgrind.otpd.%d.out" % n)
    top = annotate(profile, False, os.path.join(out, "annotate.%d.txt" % n), 15,
                   lambda line: "PROGRAM TOTALS" not in line)
    top_inc = annotate(profile, True, os.path.join(out, "annotate-inclusive.%d.txt" % n), 25,
                       lambda line: "/daemon/" in line)
    res = {"jobs": n, "ir_total": totals[n], "ir_startup_only": totals[0],
           "ir_per_otp": (totals[n] - totals[0]) / n, "top15_self": top,
           "top_otpd_inclusive": top_inc}
    log("callgrind: %.0f instructions per OTP (%d jobs, startup-only run subtracted)"
        % (res["ir_per_otp"], n))
    return res


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


def render(rows):
    head = ("figure", "otpd", "baseline", "ratio", "target")
    w = [max(len(str(r[i])) for r in rows + [head]) for i in range(5)]
    lines = ["| " + " | ".join(str(h).ljust(w[i]) for i, h in enumerate(head)) + " |",
             "|" + "|".join("-" * (w[i] + 2) for i in range(5)) + "|"]
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
    if BENCH_ONLY == "realistic":
        del R["otpd"], R["baseline"], R["otpd_tuning"]
        R["only"] = BENCH_ONLY
        realistic_only(R, work)
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
    finally:
        cleanup()
    R["elapsed_s"] = time.monotonic() - T_START
    if subprocess.run(["sha256sum", OTPD], capture_output=True, text=True).stdout.split(" ")[0] != otpd_sha:
        raise RuntimeError("the copy of otpd changed during the run")
    t = table(R)
    R["table"] = t
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

"""Fixtures shared by the integration tests.

The tests play the Django site: they talk to a real redis-server through
redis-py and to the real otpd binary as a process.  Nothing is mocked on the
Redis side; the providers are real HTTPS servers in tests/mocks.
"""
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time

import pytest
import redis

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "python"))

# A fixed random key: the daemon refuses the docs' published test vector (DOC_KEY).
HASH_KEY = "fe1ab53ccdf61b29f349ed3b1df9a31956eff94b7ce788c1c5c9a71d9029a8e8"
DOC_KEY = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(pred, timeout=10.0, interval=0.02, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, what))


class RedisServer:
    def __init__(self, tmpdir, appendonly=False):
        self.dir = tmpdir
        self.port = free_port()
        self.appendonly = appendonly
        self.proc = None

    @property
    def url(self):
        return "redis://127.0.0.1:%d/0" % self.port

    def start(self):
        args = [
            shutil.which("redis-server") or "/usr/bin/redis-server",
            "--port", str(self.port), "--bind", "127.0.0.1",
            "--dir", self.dir, "--save", "", "--daemonize", "no",
            "--appendonly", "yes" if self.appendonly else "no",
            "--logfile", os.path.join(self.dir, "redis.log"),
        ]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port)
        def up():
            try:
                return client.ping()
            except redis.exceptions.ConnectionError:
                return False
        wait_for(up, 10, what="redis-server to answer PING")
        client.close()

    def client(self, **kw):
        return redis.Redis(port=self.port, decode_responses=True, **kw)

    def stop(self, sig_kill=False):
        if self.proc and self.proc.poll() is None:
            if sig_kill:
                self.proc.kill()
            else:
                self.proc.terminate()
            self.proc.wait(10)
        self.proc = None


@pytest.fixture
def redis_server(tmp_path):
    d = tmp_path / "redis"
    d.mkdir()
    srv = RedisServer(str(d))
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def r(redis_server):
    c = redis_server.client()
    yield c
    c.close()


def otpd_binary():
    b = os.environ.get("OTPD_BIN") or os.path.join(ROOT, "build", "otpd")
    if not os.path.exists(b):
        pytest.fail("otpd binary %s not built (run ./dev test)" % b)
    return b


class Daemon:
    """The real otpd binary as a child process, logs captured to files."""

    def __init__(self, tmpdir, env, args=()):
        self.tmpdir = tmpdir
        self.env = env
        self.args = list(args)
        self.preexec = None  # e.g. a lower RLIMIT_NOFILE, as systemd's default
        self.wrapper = []    # what runs the binary, e.g. ["ip", "netns", "exec", NAME]
        self.ready_timeout = 10
        self.where = ""      # for messages: " on <host>"
        self.proc = None
        self.out_path = os.path.join(tmpdir, "otpd.%d.out" % id(self))
        self.err_path = os.path.join(tmpdir, "otpd.%d.err" % id(self))

    def start(self, wait_ready=True):
        full_env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("OTPD_", "TWILIO_", "MSG91_", "REDIS_"))}
        full_env.update(self.env)
        self.out = open(self.out_path, "ab")
        self.err = open(self.err_path, "ab")
        self.proc = subprocess.Popen(self.wrapper + [otpd_binary()] + self.args, env=full_env,
                                     stdout=self.out, stderr=self.err, preexec_fn=self.preexec)
        if wait_ready:
            wait_for(lambda: "queue: ready" in self.stderr or self.proc.poll() is not None,
                     self.ready_timeout,
                     what="otpd%s to connect and join its consumer group" % self.where)
            self.assert_alive()
        return self

    @property
    def stdout(self):
        with open(self.out_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    @property
    def stderr(self):
        with open(self.err_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def assert_alive(self):
        if self.proc.poll() is not None:
            raise AssertionError("otpd exited with %s:\n%s" % (self.proc.returncode, self.stderr))

    def codes(self, to=None):
        """Codes the console provider printed, oldest first (the user's phone)."""
        blocks = self.stdout.split("----- otpd console delivery")
        found = []
        for b in blocks[1:]:
            lines = b.splitlines()
            dest = next((l[4:] for l in lines if l.startswith("To: ")), None)
            if to is not None and dest != to:
                continue
            m = re.search(r"\b(\d{4,10})\b", "\n".join(l for l in lines if not l.startswith(("To:", "Ref:"))))
            if m:
                found.append(m.group(1))
        return found

    def stop(self, sig=15, timeout=20):
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        finally:
            self.out.close()
            self.err.close()
        self.proc = None
        return rc

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.out.close()
        self.err.close()
        self.proc = None


@pytest.fixture
def otpd_factory(tmp_path, redis_server):
    """Start daemons against the test Redis; every one is stopped (and must
    exit cleanly, which under ASan also means without leaks) at the end."""
    started = []

    def make(extra_env=None, args=(), start=True, redis=None):
        srv = redis or redis_server
        env = {
            "REDIS_URL": srv.url,
            "OTPD_HASH_KEY": HASH_KEY,
            "OTPD_BLOCK_MS": "1000",
            "OTPD_LOG_LEVEL": "debug",
            "OTPD_SHUTDOWN_TIMEOUT_MS": "5000",
            # Per-number limits are tested on their own (test_limits.py);
            # elsewhere tests send to one number many times.
            "OTPD_LIMIT_INTERVAL_S": "0",
            "OTPD_LIMIT_PER_HOUR": "0",
            "OTPD_LIMIT_PER_DAY": "0",
        }
        env.update(extra_env or {})
        d = Daemon(str(tmp_path), env, args)
        started.append(d)
        if start:
            d.start()
        return d

    yield make
    failures = []
    for d in started:
        if d.proc is not None:
            rc = d.stop()
            if rc != 0:
                failures.append("otpd exited %s:\n%s" % (rc, d.stderr[-4000:]))
    if failures:
        pytest.fail("\n".join(failures))


@pytest.fixture
def otpd(otpd_factory):
    return otpd_factory()


@pytest.fixture
def client(redis_server):
    from otpd import OTPClient
    c = OTPClient(url=redis_server.url, hash_key=HASH_KEY)
    return c


# --- the provider mocks (tests/mocks), shared by every module ------------

sys.path.insert(0, os.path.join(ROOT, "tests", "mocks"))
import testca  # noqa: E402


class Mock:
    def __init__(self, tmpdir):
        self.ca = testca.make_ca(tmpdir)
        ready = os.path.join(str(tmpdir), "ready.json")
        self.proc = subprocess.Popen(
            ["/usr/bin/python3", os.path.join(ROOT, "tests", "mocks", "provider_mock.py"),
             "--port", "0", "--cert", self.ca["server_cert"], "--key", self.ca["server_key"],
             "--ready-file", ready, "--backlog", "1024"], stdout=subprocess.DEVNULL)
        wait_for(lambda: os.path.exists(ready), 10, what="the mock to listen")
        with open(ready) as f:
            self.port = json.load(f)["port"]
        self.base = "https://127.0.0.1:%d" % self.port
        import ssl
        self.ctx = ssl.create_default_context(cafile=self.ca["ca_cert"])

    def ctl(self, path, obj=None):
        import http.client
        c = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.ctx, timeout=10)
        body = json.dumps(obj).encode() if obj is not None else None
        c.request("POST" if obj is not None else "GET", "/_mock/" + path, body=body,
                  headers={"Content-Type": "application/json"})
        r = c.getresponse()
        data = r.read()
        c.close()
        assert r.status == 200, data
        return json.loads(data)

    def rule(self, **kw):
        return self.ctl("rules", kw)

    def requests(self, provider=None):
        reqs = self.ctl("requests" + ("?provider=" + provider if provider else ""))
        return reqs if isinstance(reqs, list) else reqs.get("requests", reqs)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture(scope="session")
def mock_server(tmp_path_factory):
    m = Mock(tmp_path_factory.mktemp("mock"))
    yield m
    m.stop()


@pytest.fixture
def mock(mock_server):
    mock_server.ctl("reset", {})
    return mock_server



"""Fixtures shared by the integration tests.

The tests play the Django site: they talk to a real redis-server through
redis-py and to the real otpd binary as a process.  Nothing is mocked on the
Redis side; the providers are real HTTPS servers in tests/mocks.
"""
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import pytest
import redis

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "python"))

HASH_KEY = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"


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

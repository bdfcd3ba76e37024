"""Operating otpd: systemd unit and notify protocol, heartbeat, counters, install."""
import os
import shutil
import socket
import subprocess
import time

import pytest

from conftest import ROOT, wait_for
from test_providers import NUMBER, twilio_env


def test_unit_file_verifies(tmp_path):
    sa = shutil.which("systemd-analyze")
    if sa is None:
        pytest.skip("systemd-analyze is not installed")
    unit = tmp_path / "otpd.service"
    binary = os.path.join(ROOT, "build", "otpd")
    text = open(os.path.join(ROOT, "systemd", "otpd.service")).read()
    assert "ExecStart=/usr/local/sbin/otpd" in text
    unit.write_text(text.replace("/usr/local/sbin/otpd", binary))
    p = subprocess.run([sa, "verify", "--man=no", str(unit)], capture_output=True, text=True)
    # verify exits 0 even for unknown keys; any message is a finding.
    assert p.returncode == 0 and p.stderr.strip() == "", p.stderr
    for must in ("Type=notify", "WatchdogSec=", "User=otpd", "ProtectSystem=strict",
                 "NoNewPrivileges=yes", "PrivateTmp=yes", "RestrictAddressFamilies=",
                 "CapabilityBoundingSet=", "SystemCallFilter=@system-service",
                 "EnvironmentFile=", "ExecReload=/bin/kill -HUP $MAINPID"):
        assert must in text


def test_notify_protocol(tmp_path, otpd_factory):
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(0.2)
    got = []

    def drain():
        while True:
            try:
                got.append(sock.recv(4096).decode())
            except socket.timeout:
                return

    def seen(prefix):
        drain()
        return any(m.startswith(prefix) or ("\n" + prefix) in m for m in got)

    otpd = otpd_factory({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "400000"})
    wait_for(lambda: seen("READY=1"), 10, what="READY=1")
    ready_at = len(got)
    wait_for(lambda: seen("WATCHDOG=1"), 5, what="WATCHDOG=1")
    wait_for(lambda: seen("STATUS="), 10, what="STATUS=")
    status = [m for m in got if m.startswith("STATUS=")][-1]
    assert "in flight" in status and "redis up" in status
    assert otpd.stop() == 0
    wait_for(lambda: seen("STOPPING=1"), 5, what="STOPPING=1")
    assert ready_at >= 1
    sock.close()


def test_ready_waits_for_redis(tmp_path, otpd_factory, redis_server):
    """READY=1 only once Redis answers and the group exists."""
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(0.2)
    redis_server.stop()
    otpd = otpd_factory({"NOTIFY_SOCKET": path}, start=False)
    otpd.start(wait_ready=False)
    time.sleep(1.0)
    with pytest.raises(socket.timeout):
        sock.recv(4096)
    redis_server.start()
    wait_for(lambda: "queue: ready" in otpd.stderr, 15)
    msgs = []
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not any("READY=1" in m for m in msgs):
        try:
            msgs.append(sock.recv(4096).decode())
        except socket.timeout:
            pass
    assert any("READY=1" in m for m in msgs)
    sock.close()


def test_heartbeat_and_its_disappearance(otpd_factory, client, r):
    otpd = otpd_factory({"OTPD_HEARTBEAT_MS": "300"})
    assert client.wait(client.send(NUMBER))["status"] == "sent"
    key = wait_for(lambda: next(iter(r.scan_iter("otpd:instance:*")), None), 5)
    wait_for(lambda: r.hget(key, "sent") == "1", 5)
    hb = r.hgetall(key)
    assert hb["pid"] == str(otpd.proc.pid)
    assert hb["version"] and hb["redis"] == "up" and hb["providers"] == "console=up,console_email=up,console_voice=up"
    assert int(hb["inflight"]) == 0 and int(hb["loop_lag_ms"]) >= 0
    assert 0 < r.pttl(key) <= 900
    otpd.kill()  # kill -9: no goodbye, the key must expire by itself
    wait_for(lambda: not r.exists(key), 5, what="the heartbeat to expire")


def test_clean_stop_removes_heartbeat(otpd_factory, r):
    otpd = otpd_factory({"OTPD_HEARTBEAT_MS": "300"})
    wait_for(lambda: list(r.scan_iter("otpd:instance:*")), 5)
    assert otpd.stop() == 0
    assert list(r.scan_iter("otpd:instance:*")) == []


def test_counters_match_what_the_provider_saw(otpd_factory, mock, client, r):
    mock.rule(to="+14155550111", provider="twilio", behaviour="unverified_trial")
    mock.rule(to="+14155550112", provider="twilio", behaviour="rate_limited", times=1)
    otpd_factory(twilio_env(mock))
    jobs = [client.send("+141555501%02d" % i) for i in range(10, 20)]
    for j in jobs:
        client.wait(j, timeout=15)
    r.xadd("otpd:jobs", {"job": "not json"})
    wait_for(lambda: r.xlen("otpd:dead") == 1, 5)
    stats = r.hgetall("otpd:stats")
    answered = [q for q in mock.requests("twilio") if q["method"] == "POST"]
    ok = sum(1 for q in answered if q["status"] == 201)
    assert int(stats["jobs:sent"]) == ok == 9
    assert int(stats["provider:twilio:sent"]) == 9
    assert int(stats["jobs:failed"]) == 1
    assert int(stats["jobs:retries"]) == 1
    assert int(stats["jobs:rejected"]) == 1


def test_cmake_install_puts_everything_in_place(tmp_path):
    dest = tmp_path / "root"
    p = subprocess.run(["cmake", "--install", os.path.join(ROOT, "build"), "--prefix", "/usr/local"],
                       env=dict(os.environ, DESTDIR=str(dest)), capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    base = dest / "usr" / "local"
    for rel in ("sbin/otpd", "bin/otpctl", "lib/systemd/system/otpd.service",
                "share/doc/otpd/otpd.conf.example", "share/otpd/python/otpd/client.py"):
        assert (base / rel).exists(), rel
    # The installed otpctl finds its package.
    h = subprocess.run([str(base / "bin" / "otpctl"), "--help"], capture_output=True, text=True)
    assert h.returncode == 0 and "status" in h.stdout


def scrape(port):
    import urllib.request
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = resp.read().decode()
    assert text.endswith("\n")
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return text, samples


def test_oldest_pending_age(otpd_factory, mock, client, r):
    """A job stuck at a slow provider shows as the age of the oldest pending entry."""
    from conftest import free_port
    port = free_port()
    mock.ctl("config", {"default_delay_ms": 4000})
    otpd_factory(twilio_env(mock, OTPD_METRICS_ADDR="127.0.0.1:%d" % port,
                            OTPD_HEARTBEAT_MS="200", OTPD_HTTP_TIMEOUT_MS="10000"))
    job = client.send("+14155550130")
    wait_for(lambda: scrape(port)[1]["otpd_oldest_pending_seconds"] >= 1.5, 10,
             what="the oldest pending job's age to pass 1.5 s")
    client.wait(job, timeout=15)
    wait_for(lambda: scrape(port)[1]["otpd_oldest_pending_seconds"] == 0, 5,
             what="the age to go back to 0 once the job is acknowledged")


def test_metrics_endpoint(otpd_factory, mock, client, r):
    from conftest import free_port
    port = free_port()
    mock.rule(to="+14155550121", provider="twilio", behaviour="invalid_number")
    mock.rule(to="+14155550122", provider="twilio", behaviour="unavailable", times=2)
    otpd = otpd_factory(twilio_env(mock, OTPD_METRICS_ADDR="127.0.0.1:%d" % port,
                                   OTPD_HEARTBEAT_MS="200"))
    jobs = [client.send("+141555501%02d" % i) for i in range(20, 26)]
    for j in jobs:
        client.wait(j, timeout=15)
    r.xadd("otpd:jobs", {"job": "{"})
    wait_for(lambda: r.xlen("otpd:dead") == 1, 5)
    time.sleep(0.5)  # one heartbeat: gauges read from Redis
    text, m = scrape(port)
    for fam in ("otpd_jobs_total", "otpd_retries_total", "otpd_inflight", "otpd_backlog",
                "otpd_dead_letters", "otpd_provider_up", "otpd_loop_lag_seconds",
                "otpd_provider_request_duration_seconds"):
        assert "# TYPE %s " % fam in text
    assert m['otpd_jobs_total{outcome="sent"}'] == 5
    assert m['otpd_jobs_total{outcome="failed"}'] == 1
    assert m['otpd_jobs_total{outcome="rejected"}'] == 1
    assert m["otpd_retries_total"] == 2
    assert m["otpd_inflight"] == 0
    assert m["otpd_dead_letters"] == 1
    assert m['otpd_provider_up{provider="twilio"}'] == 1
    ok = 'otpd_provider_request_duration_seconds_count{provider="twilio",result="ok"}'
    assert m[ok] == 5
    assert m['otpd_provider_request_duration_seconds_count{provider="twilio",result="ambiguous"}'] == 2
    inf = 'otpd_provider_request_duration_seconds_bucket{provider="twilio",result="ok",le="+Inf"}'
    assert m[inf] == 5
    # Enqueue to sent, and each end by provider and destination country.
    assert m['otpd_enqueue_to_sent_seconds_count{provider="twilio"}'] == 5
    assert 0 < m['otpd_enqueue_to_sent_seconds_sum{provider="twilio"}'] < 5 * 15
    assert m['otpd_country_jobs_total{provider="twilio",country="1",status="sent"}'] == 5
    assert m['otpd_country_jobs_total{provider="twilio",country="1",status="failed"}'] == 1
    assert m["otpd_oldest_pending_seconds"] == 0
    # Other paths and methods are refused; the daemon keeps serving.
    import urllib.error
    import urllib.request
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen("http://127.0.0.1:%d/nope" % port, timeout=5)
    assert e.value.code == 404
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"garbage\r\n\r\n")
    assert s.recv(100).startswith(b"HTTP/1.1 400")
    s.close()
    scrape(port)
    otpd.assert_alive()

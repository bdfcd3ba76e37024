"""otpd's HTTP port (/metrics and the providers' webhooks) against a hostile client.

Whoever reaches OTPD_METRICS_ADDR may be an attacker: a connection flood
must not take the descriptors that sending needs, must not lock the
operator out of /metrics, and a client that sends nothing must not keep
its slot.  Chunked webhook bodies must reach the signature check decoded.
"""
import json
import os
import resource
import selectors
import socket
import threading
import time
import urllib.parse
import urllib.request

import pytest
from twilio.request_validator import RequestValidator

from conftest import free_port, wait_for
from test_providers import NUMBER, SID, TOKEN, twilio_env
from test_receipts import PUBLIC, receipts_env


def raise_own_nofile(n):
    """Let this process hold n sockets, or skip where the hard limit forbids it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < n:
        pytest.skip("RLIMIT_NOFILE hard limit %d is below the %d sockets this test holds"
                    % (hard, n))
    if soft != resource.RLIM_INFINITY and soft < n:
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, hard))


def start_with_nofile(otpd_factory, env, soft=1024):
    """Start otpd with systemd's default soft descriptor limit (the hard one as is)."""
    def limit():
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        cap = soft if hard == resource.RLIM_INFINITY else min(soft, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (cap, hard))

    d = otpd_factory(env, start=False)
    d.preexec = limit
    return d.start()


def open_fds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def nofile_limit(pid):
    with open("/proc/%d/limits" % pid) as f:
        line = next(l for l in f if l.startswith("Max open files"))
    return line.split()[3]


def get_metrics(port, timeout=5):
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=timeout) as resp:
        return resp.status, resp.read().decode()


def metric_lines(text, *words):
    return [l for l in text.splitlines()
            if not l.startswith("#") and all(w in l for w in words)]


class Flood:
    """Holds n idle TCP connections to a port; optionally reopens those the
    daemon closes, so that about n connection attempts stay open."""

    def __init__(self, port, n):
        self.addr = ("127.0.0.1", port)
        self.n = n
        self.sel = selectors.DefaultSelector()
        self.attempts = 0
        self.closed_by_peer = 0
        self.reopen = False
        self._stop = threading.Event()
        self._thread = None

    def _open_one(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.connect_ex(self.addr)
        self.sel.register(s, selectors.EVENT_READ)
        self.attempts += 1

    def fill(self):
        while len(self.sel.get_map()) < self.n:
            self._open_one()

    def pump(self, timeout=0.05):
        """Counts (and maybe replaces) the connections the daemon closed."""
        for key, _ in self.sel.select(timeout):
            s = key.fileobj
            try:
                if s.recv(64):
                    continue
            except BlockingIOError:
                continue
            except OSError:
                pass
            self.sel.unregister(s)
            s.close()
            self.closed_by_peer += 1
            if self.reopen:
                self._open_one()

    def pump_quiet(self, quiet, timeout):
        """Pumps until the daemon has closed nothing for `quiet` seconds."""
        deadline = time.monotonic() + timeout
        seen, since = self.closed_by_peer, time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - since < quiet:
            self.pump()
            if self.closed_by_peer != seen:
                seen, since = self.closed_by_peer, time.monotonic()

    def start(self, reopen):
        self.reopen = reopen
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            self.pump()

    def close(self):
        self._stop.set()
        if self._thread:
            self._thread.join(10)
        for key in list(self.sel.get_map().values()):
            key.fileobj.close()
        self.sel.close()


# --- 1. chunked webhook bodies -------------------------------------------------

def post_chunked(port, body, signature, pieces=4):
    """POST a form body with Transfer-Encoding: chunked, each chunk in its own write."""
    size = max(1, -(-len(body) // pieces))
    head = ("POST /webhooks/twilio HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n"
            "Transfer-Encoding: chunked\r\nX-Twilio-Signature: %s\r\n"
            "User-Agent: TwilioProxy/1.1\r\n\r\n" % (port, signature)).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(head)
        for i in range(0, len(body), size):
            chunk = body[i:i + size]
            s.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            time.sleep(0.02)  # separate reads on the daemon's side
        s.sendall(b"0\r\n\r\n")
        answer = b""
        while True:
            data = s.recv(4096)
            if not data:
                break
            answer += data
    return int(answer.split(b" ", 2)[1])


@pytest.mark.parametrize("honest", [True, False])
def test_chunked_twilio_callback(otpd_factory, mock, client, honest):
    port = free_port()
    otpd_factory(receipts_env(mock, port))
    job = client.send(NUMBER)
    sid = client.wait(job, timeout=10)["provider_ref"]
    params = {"MessageSid": sid, "SmsSid": sid, "MessageStatus": "delivered",
              "SmsStatus": "delivered", "AccountSid": SID, "From": "+15005550006",
              "To": NUMBER, "ApiVersion": "2010-04-01"}
    token = TOKEN if honest else "wrong-" + TOKEN
    signature = RequestValidator(token).compute_signature(PUBLIC, params)
    status = post_chunked(port, urllib.parse.urlencode(params).encode(), signature)
    if honest:
        assert status == 200
        assert client.wait(job, final={"delivered"}, timeout=5)["status"] == "delivered"
    else:
        assert status == 403
        time.sleep(0.2)
        assert client.status(job)["status"] == "sent"


# --- 2. a flood on the HTTP port does not stop sending ------------------------------

FLOOD = 10000
JOBS = 200


def test_connection_flood_does_not_stop_sending(otpd_factory, mock, r):
    raise_own_nofile(FLOOD + 1000)
    port = free_port()
    mock.ctl("config", {"close_connections": True})  # every send needs a new TLS connection
    otpd = start_with_nofile(otpd_factory, twilio_env(mock, OTPD_METRICS_ADDR="127.0.0.1:%d" % port))
    pid = otpd.proc.pid
    limit = nofile_limit(pid)
    flood = Flood(port, FLOOD)
    try:
        flood.fill()
        flood.start(reopen=True)
        wait_for(lambda: flood.closed_by_peer > 0, 10, what="the daemon to close idle connections")
        ids = ["flood-%d" % i for i in range(JOBS)]
        t0 = time.time()
        with r.pipeline(transaction=False) as p:
            for i, job_id in enumerate(ids):
                p.xadd("otpd:jobs", {"job": json.dumps({"to": "+1415555%04d" % i, "id": job_id})})
            p.execute()
        max_fds = 0

        def all_sent():
            nonlocal max_fds
            max_fds = max(max_fds, open_fds(pid))
            with r.pipeline(transaction=False) as p:
                for job_id in ids:
                    p.hget("otpd:job:" + job_id, "status")
                return all(s == "sent" for s in p.execute())

        sent = wait_for_quietly(all_sent, 5.0)
        elapsed = time.time() - t0
        with r.pipeline(transaction=False) as p:
            for job_id in ids:
                p.hgetall("otpd:job:" + job_id)
            records = p.execute()
        late = [(i, rec.get("status")) for i, rec in zip(ids, records)
                if rec.get("status") != "sent" or int(rec["sent_ms"]) - t0 * 1000 > 5000]
        try:
            status, text = get_metrics(port, timeout=10)  # while the flood still goes on
        except OSError as e:
            status, text = repr(e), ""
        stats = mock.ctl("stats")
        n_sent = sum(1 for rec in records if rec.get("status") == "sent")
        print("\nflood: %d connections held (%d attempts, %d closed by otpd), otpd's "
              "RLIMIT_NOFILE %s; %d/%d jobs sent after %.2fs; otpd's open fds peaked at %d; "
              "mock saw %d connections for %d requests; /metrics %s"
              % (FLOOD, flood.attempts, flood.closed_by_peer, limit, n_sent, JOBS, elapsed,
                 max_fds, stats["connections"], stats["requests"], status))
        for line in metric_lines(text, "http"):
            print("  " + line)
        assert sent and not late, "not sent within 5 s: %s" % late[:10]
        assert stats["connections"] >= JOBS
        assert status == 200
        assert max_fds < 1024
    finally:
        flood.close()
    otpd.assert_alive()


def wait_for_quietly(pred, timeout, interval=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(interval)
    return pred()


# --- 3. an idle flood does not lock the operator out -------------------------------

CAP = 16
IDLE = 1200  # more than otpd's descriptors would allow without the cap


def test_idle_flood_does_not_starve_metrics(otpd_factory, mock):
    raise_own_nofile(IDLE + 500)
    port = free_port()
    otpd = start_with_nofile(otpd_factory, twilio_env(
        mock, OTPD_METRICS_ADDR="127.0.0.1:%d" % port, OTPD_HTTP_MAX_CLIENTS=str(CAP)))
    pid = otpd.proc.pid
    baseline = open_fds(pid)
    flood = Flood(port, IDLE)
    try:
        flood.fill()
        # Let the first wave settle: the daemon keeps CAP and closes the rest as
        # they come (the kernel's queue holds back some until their SYN is resent).
        flood.pump_quiet(0.3, 3.0)
        held = open_fds(pid)
        status, text = get_metrics(port, timeout=3)
        print("\nidle flood: %d connections, cap %d: otpd closed %d, its fds %d -> %d; "
              "/metrics %d" % (IDLE, CAP, flood.closed_by_peer, baseline, held, status))
        assert status == 200 and "otpd_jobs_total" in text
        assert held <= baseline + CAP + 2
    finally:
        flood.close()
    otpd.assert_alive()


# --- 4. a client that sends nothing, or too slowly, loses its slot -----------------

def closed_after(s, t0, timeout=8.0):
    """Seconds from t0 until the daemon closed s (EOF or reset), or None."""
    s.settimeout(0.05)
    deadline = t0 + timeout
    while time.monotonic() < deadline:
        try:
            if s.recv(4096) == b"":
                return time.monotonic() - t0
        except socket.timeout:
            continue
        except OSError:
            return time.monotonic() - t0
    return None


def test_slow_clients_are_cut_off(otpd_factory, mock):
    port = free_port()
    otpd_factory(twilio_env(mock, OTPD_METRICS_ADDR="127.0.0.1:%d" % port))
    cases = {name: socket.create_connection(("127.0.0.1", port), timeout=5)
             for name in ("silent", "partial_head", "drip", "slow_body")}
    t0 = time.monotonic()
    cases["partial_head"].sendall(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    cases["slow_body"].sendall(b"POST /webhooks/twilio HTTP/1.1\r\nHost: x\r\n"
                               b"Content-Length: 100\r\n\r\nMessageSid=")
    results = {}

    def drip():
        # Slowloris: a header byte every 300 ms keeps the connection busy, not alive.
        for b in b"GET /metrics HTTP/1.1\r\nX-Slow: " + b"a" * 100:
            try:
                cases["drip"].sendall(bytes([b]))
            except OSError:
                return
            time.sleep(0.3)

    threading.Thread(target=drip, daemon=True).start()
    threads = [threading.Thread(target=lambda n=n, s=s: results.__setitem__(n, closed_after(s, t0)))
               for n, s in cases.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    for s in cases.values():
        s.close()
    print("\nclosed after: " + ", ".join("%s %.2fs" % (n, results[n] or -1) for n in cases))
    for name in ("silent", "partial_head", "drip"):
        assert results[name] is not None and 1.5 <= results[name] <= 3.0, (name, results)
    # With its headers in, a request has the rest of its 5 s.
    assert results["slow_body"] is not None and 4.5 <= results["slow_body"] <= 6.0, results
    status, _ = get_metrics(port)
    assert status == 200

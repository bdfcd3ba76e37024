"""Twilio and MSG91 over real HTTPS, end to end through Redis.

The mock (tests/mocks/provider_mock.py) answers with the providers' real
bodies and status codes, chosen per recipient number; a CA made for the
test run signs its certificate and otpd trusts it through OTPD_CA_FILE,
with verification on as always.
"""
import base64
import json
import os
import subprocess
import time

import pytest

from conftest import HASH_KEY, ROOT, wait_for


SID = "AC0123456789abcdef0123456789abcdef"
TOKEN = "test-auth-token-0123456789abcdef"
AUTHKEY = "test-msg91-authkey"
FROM = "+15005550006"
NUMBER = "+14155552671"
IN_NUMBER = "+919812345678"


def _mock_env(mock, provider, **settings):
    """A provider pointed at the mock, trusting the run's CA, with test-speed timings."""
    env = {
        "OTPD_PROVIDER": provider,
        "OTPD_CA_FILE": mock.ca["ca_cert"],
        "OTPD_RETRY_BASE_MS": "100",
        "OTPD_RETRY_MAX_MS": "400",
        "OTPD_PROVIDER_RECHECK_MS": "300",
        "OTPD_CIRCUIT_COOLOFF_MS": "500",
        # Receipt polling is tested in test_receipts.py; elsewhere "sent" stays "sent".
        "OTPD_DLR_POLL_HORIZON_S": "0",
    }
    env.update(settings)
    return env


def twilio_env(mock, **extra):
    settings = dict(TWILIO_ACCOUNT_SID=SID, TWILIO_AUTH_TOKEN=TOKEN, TWILIO_PHONE_NUMBER=FROM,
                    TWILIO_API_BASE=mock.base, OTPD_HTTP_TIMEOUT_MS="3000")
    settings.update(extra)
    return _mock_env(mock, "twilio", **settings)


def msg91_env(mock, **extra):
    settings = dict(MSG91_AUTH_KEY=AUTHKEY, MSG91_TEMPLATE_ID="tmpl-otp-1",
                    MSG91_SENDER_ID="SMLCSE", MSG91_API_BASE=mock.base)
    settings.update(extra)
    return _mock_env(mock, "msg91", **settings)


def sends(mock, provider="twilio"):
    return [q for q in mock.requests(provider) if q["method"] == "POST"]


def form_of(req):
    return req.get("form") or {}


def code_in(body):
    import re
    return re.search(r"\b(\d{6})\b", body).group(1)


def test_twilio_send_fields_and_verify(otpd_factory, mock, client, r):
    otpd = otpd_factory(twilio_env(mock))
    job = client.send(NUMBER, purpose="password_reset")
    st = client.wait(job, timeout=15)
    assert st["status"] == "sent", st
    assert st["provider"] == "twilio"
    assert st["provider_ref"].startswith("SM") and len(st["provider_ref"]) == 34
    [req] = sends(mock)
    assert req["path"] == "/2010-04-01/Accounts/%s/Messages.json" % SID
    auth = req["headers_lc"]["authorization"]
    assert base64.b64decode(auth.split()[1]).decode() == "%s:%s" % (SID, TOKEN)
    f = form_of(req)
    assert f["To"] == NUMBER and f["From"] == FROM
    assert 280 <= int(f["ValidityPeriod"]) <= 300
    assert "StatusCallback" not in f
    # The code the phone got verifies, once.
    code = code_in(f["Body"])
    assert client.verify(NUMBER, code, purpose="password_reset").ok
    log = otpd.stderr
    assert code not in log and TOKEN not in log and NUMBER not in log


def test_twilio_messaging_service_and_callback(otpd_factory, mock, client):
    otpd_factory(twilio_env(mock, TWILIO_MESSAGING_SERVICE_SID="MG" + "1" * 32,
                            TWILIO_STATUS_CALLBACK="https://example.test/otpd/twilio"))
    assert client.wait(client.send(NUMBER))["status"] == "sent"
    f = form_of(sends(mock)[0])
    assert f["MessagingServiceSid"] == "MG" + "1" * 32 and "From" not in f
    assert f["StatusCallback"] == "https://example.test/otpd/twilio"


PERMANENT = [
    ("invalid_number", "21211", "international format"),
    ("not_mobile", "21614", "mobile number"),
    ("unverified_trial", "21608", "verify this number"),
    ("opted_out", "21610", "START"),
    ("region_disabled", "21408", "Geo permissions"),
]


@pytest.mark.parametrize("behaviour,code,hint", PERMANENT, ids=[p[0] for p in PERMANENT])
def test_twilio_permanent_for_the_job(otpd_factory, mock, client, r, behaviour, code, hint):
    mock.rule(to=NUMBER, provider="twilio", behaviour=behaviour)
    otpd_factory(twilio_env(mock))
    job = client.send(NUMBER)
    st = client.wait(job, timeout=15)
    assert st["status"] == "failed"
    assert st["error_code"] == code and hint in st["error"]
    assert len(sends(mock)) == 1  # never retried
    assert not r.exists("otpd:otp:login:" + NUMBER)  # a code that cannot arrive is burned
    # Other numbers are not affected.
    assert client.wait(client.send("+14155550199"))["status"] == "sent"


def test_bad_credentials_mark_the_provider_down_then_recover(otpd_factory, mock, client):
    mock.rule(to="*", provider="twilio", behaviour="auth", times=2)
    otpd = otpd_factory(twilio_env(mock))
    job = client.send(NUMBER)
    wait_for(lambda: client.status(job).get("status") in ("retrying", "sent"), 10)
    st = client.wait(job, timeout=15)
    assert st["status"] == "sent"
    assert int(st["attempts"]) == 3
    log = otpd.stderr
    assert log.count("provider twilio: circuit open") == 1
    assert "TWILIO_AUTH_TOKEN" in log and "working again" in log


def test_failover_to_msg91_when_twilio_credentials_fail(otpd_factory, mock, client):
    mock.rule(to="*", provider="twilio", behaviour="auth")
    env = twilio_env(mock)
    env.update({k: v for k, v in msg91_env(mock).items() if k.startswith("MSG91_")})
    otpd_factory(env)
    st = client.wait(client.send(IN_NUMBER), timeout=15)
    assert st["status"] == "sent" and st["provider"] == "msg91"
    assert len(sends(mock, "twilio")) == 1 and len(sends(mock, "msg91")) == 1


def test_429_honours_retry_after(otpd_factory, mock, client):
    mock.rule(to=NUMBER, provider="twilio", behaviour="rate_limited", retry_after=1, times=1)
    otpd_factory(twilio_env(mock))
    st = client.wait(client.send(NUMBER), timeout=15)
    assert st["status"] == "sent"
    a, b = sends(mock)
    assert b["time"] - a["time"] >= 0.95


def test_ambiguous_500_reconciles_and_does_not_resend(otpd_factory, mock, client):
    # Twilio took the message but answered 500: the list shows it.
    mock.rule(to=NUMBER, provider="twilio", behaviour="server_error", store=True, times=1)
    otpd = otpd_factory(twilio_env(mock))
    st = client.wait(client.send(NUMBER), timeout=15)
    assert st["status"] == "sent"
    ops = [(q["method"], q["path"].rsplit("/", 1)[-1]) for q in mock.requests("twilio")]
    assert ops == [("POST", "Messages.json"), ("GET", "Messages.json")]
    stored = mock.ctl("messages")["twilio"]
    assert len(stored) == 1 and st["provider_ref"] == stored[0]["sid"]
    assert "did reach Twilio" in otpd.stderr


@pytest.mark.parametrize("behaviour", ["server_error", "drop", "not_json", "truncated_json"])
def test_ambiguous_not_taken_is_resent_once(otpd_factory, mock, client, behaviour):
    mock.rule(to=NUMBER, provider="twilio", behaviour=behaviour, store=False, times=1)
    otpd_factory(twilio_env(mock))
    st = client.wait(client.send(NUMBER), timeout=15)
    assert st["status"] == "sent"
    methods = [q["method"] for q in mock.requests("twilio")]
    assert methods == ["POST", "GET", "POST"]
    # The resend carries the same code: a possible duplicate is never a second code.
    a, b = sends(mock)
    assert form_of(a)["Body"] == form_of(b)["Body"]


def test_connect_failure_is_retried(otpd_factory, mock, client, tmp_path):
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there
    otpd_factory(twilio_env(mock, TWILIO_API_BASE="https://127.0.0.1:%d" % port))
    job = client.send(NUMBER)
    wait_for(lambda: int(client.status(job).get("attempts", 0)) >= 3, 10)
    st = client.status(job)
    assert st["status"] == "retrying"
    assert st["error_code"] == "curl_7" and "connect" in st["error"].lower()


def test_retries_stop_at_expiry(otpd_factory, mock, client, r):
    mock.rule(to=NUMBER, provider="twilio", behaviour="unavailable")
    otpd_factory(twilio_env(mock))
    created = int(time.time() * 1000) - 28_500
    r.xadd("otpd:jobs", {"job": json.dumps(
        {"id": "short-1", "to": NUMBER, "ttl": 30, "created_ms": created})})
    st = client.wait("short-1", timeout=15)
    assert st["status"] == "expired"
    assert int(st["attempts"]) >= 2 and "503" in st["error_code"] + st["error"]
    assert not r.exists("otpd:otp:login:" + NUMBER)
    assert time.time() * 1000 - created < 33_000


def test_wrong_ca_fails_with_a_tls_error(otpd_factory, mock, client):
    otpd = otpd_factory(twilio_env(mock, OTPD_CA_FILE=mock.ca["wrong_ca_cert"]))
    job = client.send(NUMBER)
    wait_for(lambda: client.status(job).get("status") == "retrying", 10)
    st = client.status(job)
    assert st["error_code"] == "curl_60" and "certificate" in st["error"].lower()
    assert sends(mock) == []  # nothing was sent over an unverified channel
    assert "provider twilio: circuit open" in otpd.stderr


def test_outage_is_ridden_out(otpd_factory, mock, client):
    mock.rule(to="*", provider="twilio", behaviour="unavailable", times=40)
    otpd_factory(twilio_env(mock))
    jobs = [client.send("+1415558%04d" % i) for i in range(20)]
    for j in jobs:
        assert client.wait(j, timeout=30)["status"] == "sent"


def test_msg91_send_fields_and_verify(otpd_factory, mock, client):
    otpd = otpd_factory(msg91_env(mock))
    job = client.send(IN_NUMBER, purpose="login")
    st = client.wait(job, timeout=15)
    assert st["status"] == "sent" and st["provider"] == "msg91"
    [req] = sends(mock, "msg91")
    assert req["headers_lc"]["authkey"] == AUTHKEY
    body = req["json"]
    assert body["template_id"] == "tmpl-otp-1" and body["sender"] == "SMLCSE"
    [rcpt] = body["recipients"]
    assert rcpt["mobiles"] == IN_NUMBER[1:]
    assert len(st["provider_ref"]) == 24
    assert client.verify(IN_NUMBER, rcpt["otp"]).ok
    assert AUTHKEY not in otpd.stderr and rcpt["otp"] not in otpd.stderr


def test_msg91_200_with_type_error_is_not_success(otpd_factory, mock, client):
    mock.rule(to=IN_NUMBER, provider="msg91", behaviour="invalid_mobile")
    otpd_factory(msg91_env(mock))
    st = client.wait(client.send(IN_NUMBER), timeout=15)
    assert st["status"] == "failed" and st["error_code"] == "202"


def test_msg91_bad_key_marks_provider_down(otpd_factory, mock, client):
    mock.rule(to="*", provider="msg91", behaviour="auth", times=1)
    otpd = otpd_factory(msg91_env(mock))
    st = client.wait(client.send(IN_NUMBER), timeout=15)
    assert st["status"] == "sent" and int(st["attempts"]) == 2
    assert "provider msg91: circuit open" in otpd.stderr and "MSG91_AUTH_KEY" in otpd.stderr


def test_500_slow_requests_run_concurrently(otpd_factory, mock, client, r):
    mock.ctl("config", {"default_delay_ms": 1000})
    # A long request timeout: on a loaded machine a 1 s answer can pass twilio_env's 3 s,
    # and a timed-out request's connection is closed, which the cap below would count.
    otpd = otpd_factory(twilio_env(mock, OTPD_HTTP_MAX_CONNS="250", OTPD_TWILIO_MAX_INFLIGHT="500", OTPD_MAX_INFLIGHT="1000",
                                   OTPD_BATCH="500", OTPD_LOG_LEVEL="notice",
                                   OTPD_HTTP_TIMEOUT_MS="15000"))
    t0 = time.monotonic()
    pipe = r.pipeline(transaction=False)
    for i in range(500):
        pipe.xadd("otpd:jobs", {"job": json.dumps({"id": "c-%d" % i, "to": "+1415559%04d" % i})})
    pipe.execute()

    def done():
        p = r.pipeline(transaction=False)
        for i in range(500):
            p.hget("otpd:job:c-%d" % i, "status")
        return all(s == "sent" for s in p.execute())
    wait_for(done, 60, interval=0.1, what="500 jobs sent")
    elapsed = time.monotonic() - t0
    stats = mock.ctl("stats")
    print("\n500 jobs x 1 s mock delay: %.2f s wall, %d connections, peak %d concurrent"
          % (elapsed, stats["connections"], stats["max_concurrent"]))
    # Serially this is 500 s; with 250 connections it is two waves of ~1 s.
    assert elapsed < 20
    assert stats["max_concurrent"] >= 200
    assert stats["connections"] <= 250  # capped, and reused for the second wave
    otpd.assert_alive()


def test_timeout_after_sending_is_ambiguous_and_reconciled(otpd_factory, mock, client):
    # Twilio took it but never answered within our timeout.
    mock.rule(to=NUMBER, provider="twilio", behaviour="timeout", delay_ms=5000, store=True,
              times=1)
    otpd_factory(twilio_env(mock, OTPD_HTTP_TIMEOUT_MS="800"))
    st = client.wait(client.send(NUMBER), timeout=15)
    assert st["status"] == "sent"
    assert [q["method"] for q in mock.requests("twilio")] == ["POST", "GET"]
    assert len(mock.ctl("messages")["twilio"]) == 1  # one SMS, not two


def test_suspended_account_is_provider_wide(otpd_factory, mock, client):
    mock.rule(to="*", provider="twilio", behaviour="suspended", times=1)
    otpd = otpd_factory(twilio_env(mock))
    st = client.wait(client.send(NUMBER), timeout=15)
    assert st["status"] == "sent" and int(st["attempts"]) == 2
    assert "not active" in otpd.stderr


def test_connection_reset_is_retried(otpd_factory, mock, client):
    mock.rule(to=NUMBER, provider="twilio", behaviour="reset", times=1)
    otpd_factory(twilio_env(mock))
    st = client.wait(client.send(NUMBER), timeout=15)
    assert st["status"] == "sent"
    assert len(mock.ctl("messages")["twilio"]) == 1


def test_slow_provider_does_not_hold_up_another(otpd_factory, mock, client):
    mock.rule(to=NUMBER, provider="twilio", behaviour="slow", delay_ms=4000)
    env = twilio_env(mock, OTPD_HTTP_TIMEOUT_MS="10000")
    env.update({k: v for k, v in msg91_env(mock).items() if k.startswith("MSG91_")})
    otpd_factory(env)
    slow = client.send(NUMBER)
    wait_for(lambda: sends(mock, "twilio"), 5)
    t0 = time.monotonic()
    fast = [client.send("+9198123%05d" % i, provider="msg91") for i in range(10)]
    for j in fast:
        assert client.wait(j, timeout=5)["status"] == "sent"
    assert time.monotonic() - t0 < 3
    assert client.status(slow)["status"] == "sending"
    assert client.wait(slow, timeout=10)["status"] == "sent"


def test_valgrind_clean_with_real_https(tmp_path, redis_server, mock, client):
    """A short run under memcheck (plain build; ASan builds cannot run under valgrind)."""
    import shutil
    import signal
    vg = shutil.which("valgrind")
    binary = os.path.join(ROOT, "build", "otpd")
    if vg is None or not os.path.exists(binary):
        pytest.skip("valgrind or the plain build is missing")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OTPD_", "TWILIO_", "MSG91_", "REDIS_", "ASAN", "UBSAN"))}
    env.update(twilio_env(mock))
    env.update({"REDIS_URL": redis_server.url, "OTPD_HASH_KEY": HASH_KEY,
                "OTPD_BLOCK_MS": "500"})
    log = tmp_path / "vg.log"
    err = open(tmp_path / "otpd.err", "wb")
    p = subprocess.Popen([vg, "--leak-check=full", "--errors-for-leak-kinds=definite",
                          "--error-exitcode=99", "--log-file=%s" % log, binary],
                         env=env, stdout=subprocess.DEVNULL, stderr=err)
    try:
        wait_for(lambda: b"queue: ready" in (tmp_path / "otpd.err").read_bytes(), 60)
        mock.rule(to="+14155550001", provider="twilio", behaviour="server_error", times=1)
        jobs = [client.send("+141555500%02d" % i) for i in range(10)]
        for j in jobs:
            assert client.wait(j, timeout=60)["status"] == "sent"
    finally:
        p.send_signal(signal.SIGTERM)
        rc = p.wait(60)
        err.close()
    text = log.read_text()
    assert rc == 0, text[-3000:]
    assert "ERROR SUMMARY: 0 errors" in text, text[-3000:]
    assert "definitely lost: 0 bytes" in text or "no leaks are possible" in text

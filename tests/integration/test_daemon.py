"""otpd end to end, from the web app's point of view.

Each test enqueues through the Python client or a raw XADD (as redis-py
would), lets the real daemon work against a real redis-server with the
console provider, reads the code the way the user would (from the printed
SMS), and verifies it through the client.
"""
import json
import os
import signal
import subprocess
import time

import pytest

from conftest import HASH_KEY, free_port, wait_for, otpd_binary

NUMBER = "+14155552671"


def dead_letters(r):
    return [fields for _id, fields in r.xrange("otpd:dead")]


def test_send_then_verify_once(otpd, client, r):
    job = client.send(NUMBER, purpose="password_reset")
    st = client.wait(job, timeout=10)
    assert st["status"] == "sent"
    assert st["provider"] == "console"
    assert st["provider_ref"].startswith("CON")
    assert st["to"] == "+1415*****71"
    assert st["attempts"] == "1"
    assert int(st["sent_ms"]) >= int(st["created_ms"])
    assert int(st["expires_ms"]) == int(st["created_ms"]) + 300 * 1000
    # The stream holds only the backlog: the finished entry is acked and gone.
    assert r.xlen("otpd:jobs") == 0
    assert r.xpending("otpd:jobs", "otpd")["pending"] == 0
    # The OTP record has a MAC and a TTL, never the code.
    rec = r.hgetall("otpd:otp:password_reset:" + NUMBER)
    assert rec["job"] == job and len(rec["mac"]) == 64
    assert 0 < r.pttl("otpd:otp:password_reset:" + NUMBER) <= 300 * 1000
    codes = otpd.codes(NUMBER)
    assert len(codes) == 1 and len(codes[0]) == 6
    assert codes[0] not in json.dumps(rec)
    res = client.verify(NUMBER, codes[0], purpose="password_reset")
    assert res.ok and res.job_id == job
    # A code works once.
    assert client.verify(NUMBER, codes[0], purpose="password_reset").status == "expired"
    # The audit trail: sending then sent, for this job.
    events = [f for _i, f in r.xrange("otpd:events") if f["id"] == job]
    assert [e["status"] for e in events] == ["sending", "sent"]


def test_wrong_code_then_locked(otpd, client):
    job = client.send(NUMBER, max_attempts=3)
    assert client.wait(job)["status"] == "sent"
    code = otpd.codes(NUMBER)[-1]
    wrong = "%06d" % ((int(code) + 1) % 10**6)
    r1 = client.verify(NUMBER, wrong)
    r2 = client.verify(NUMBER, wrong)
    assert (r1.status, r1.attempts_left) == ("mismatch", 2)
    assert (r2.status, r2.attempts_left) == ("mismatch", 1)
    assert client.verify(NUMBER, wrong).status == "locked"
    # Locked means locked, even for the right code.
    assert client.verify(NUMBER, code).status == "locked"


def test_options_digits_ttl_message(otpd, client, r):
    job = client.send(NUMBER, purpose="verify_phone", digits=8, ttl=120,
                      message="Code {code}, valid {minutes} min. Never share it.")
    assert client.wait(job)["status"] == "sent"
    out = otpd.stdout
    code = otpd.codes(NUMBER)[-1]
    assert len(code) == 8
    assert "Code %s, valid 2 min. Never share it." % code in out
    assert 0 < r.pttl("otpd:otp:verify_phone:" + NUMBER) <= 120 * 1000
    assert client.verify(NUMBER, code, purpose="verify_phone").ok


def test_code_expires_with_its_record(otpd, client, r):
    job = client.send(NUMBER)
    assert client.wait(job)["status"] == "sent"
    code = otpd.codes(NUMBER)[-1]
    # Time passing, compressed: the record's TTL is what expires a code.
    r.pexpire("otpd:otp:login:" + NUMBER, 50)
    time.sleep(0.15)
    assert client.verify(NUMBER, code).status == "expired"


def test_job_expired_before_claim_is_not_sent(otpd, client, r):
    created = int(time.time() * 1000) - 400 * 1000
    r.xadd("otpd:jobs", {"job": json.dumps(
        {"v": 1, "id": "stale-1", "to": NUMBER, "ttl": 300, "created_ms": created})})
    st = client.wait("stale-1")
    assert st["status"] == "expired"
    assert not r.exists("otpd:otp:login:" + NUMBER)
    assert otpd.codes(NUMBER) == []
    assert r.xlen("otpd:jobs") == 0


def test_resend_sends_the_same_code(otpd, client, r):
    """A resend inside the code's lifetime texts the same code: its expiry and its wrong
    guesses carry over, the first SMS's code verifies, and the record says "resent"."""
    key = "otpd:otp:login:" + NUMBER
    say = lambda *a: print("  " + " ".join(str(x) for x in a))  # noqa: E731
    print()
    j1 = client.send(NUMBER)
    assert client.wait(j1)["status"] == "sent"
    first = otpd.codes(NUMBER)[-1]
    say("send", j1, "-> sent, code_source", client.status(j1)["code_source"],
        "| phone gets", first)
    wrong = "000000" if first != "000000" else "111111"
    res = client.verify(NUMBER, wrong)
    assert res.status == "mismatch"
    say("verify", wrong, "->", res.status, "attempts_left", res.attempts_left)
    ttl_before = r.pttl(key)
    j2 = client.send(NUMBER)
    st2 = client.wait(j2)
    assert st2["status"] == "sent" and st2["code_source"] == "resent"
    assert client.status(j1)["code_source"] == "new"
    assert otpd.codes(NUMBER)[-2:] == [first, first]
    rec = r.hgetall(key)
    say("send", j2, "-> sent, code_source", st2["code_source"], "| phone gets",
        otpd.codes(NUMBER)[-1], "| record: sends", rec["sends"], "attempts", rec["attempts"],
        "job", rec["job"], "ttl", r.pttl(key), "ms (was", ttl_before, ")")
    assert rec["sends"] == "2" and rec["attempts"] == "1" and rec["job"] == j1
    assert r.pttl(key) <= ttl_before  # the expiry is not extended
    assert int(st2["expires_ms"]) == int(client.status(j1)["expires_ms"])
    res = client.verify(NUMBER, first)
    say("verify", first, "(the first SMS) ->", res.status, "attempts_left", res.attempts_left)
    assert res.ok and res.attempts_left == 4
    # Used: the next send makes a new code.
    j3 = client.send(NUMBER)
    assert client.wait(j3)["code_source"] == "new"
    say("send", j3, "-> sent, code_source new (the code was used) | phone gets",
        otpd.codes(NUMBER)[-1])


def test_sixth_send_of_a_code_is_refused_and_fresh_replaces_it(otpd, client, r):
    ids = [client.send(NUMBER) for _ in range(5)]
    for j in ids:
        assert client.wait(j)["status"] == "sent"
    codes = otpd.codes(NUMBER)
    assert len(codes) == 5 and len(set(codes)) == 1
    sixth = client.send(NUMBER)
    st = client.wait(sixth)
    assert st["status"] == "rate_limited" and st["error_code"] == "sends_per_code", st
    assert "already sent 5 times" in st["error"]
    assert int(st["retry_at_ms"]) > time.time() * 1000
    # A fresh code replaces it at once: the old one stops working.
    fresh = client.send(NUMBER, fresh=True)
    assert client.wait(fresh)["code_source"] == "new"
    new = otpd.codes(NUMBER)[-1]
    if new != codes[0]:  # one chance in a million
        assert client.verify(NUMBER, codes[0]).status == "mismatch"
    assert client.verify(NUMBER, new).ok


def test_purposes_are_separate(otpd, client):
    a = client.send(NUMBER, purpose="login")
    b = client.send(NUMBER, purpose="password_reset")
    client.wait(a)
    client.wait(b)
    codes = otpd.codes(NUMBER)
    assert client.verify(NUMBER, codes[0], purpose="login").ok
    assert client.verify(NUMBER, codes[1], purpose="password_reset").ok


BAD = [
    ("not json", b"{nope", "not valid JSON"),
    ("array", b"[1,2]", "not an object"),
    ("string", b'"x"', "not an object"),
    ("missing to", b'{"v":1}', "field to: missing"),
    ("empty to", b'{"to":""}', "field to: missing"),
    ("not e164", b'{"to":"4155552671"}', "field to: not an E.164"),
    ("spaces", b'{"to":"+1 415 555 2671"}', "field to: not an E.164"),
    ("unknown v", b'{"v":2,"to":"+14155552671"}', "field v: unsupported contract version 2"),
    ("ttl low", b'{"to":"+14155552671","ttl":10}', "field ttl: 10 is out of range 30..3600"),
    ("ttl high", b'{"to":"+14155552671","ttl":7200}', "field ttl"),
    ("digits", b'{"to":"+14155552671","digits":12}', "field digits"),
    ("max_attempts", b'{"to":"+14155552671","max_attempts":0}', "field max_attempts"),
    ("no {code}", b'{"to":"+14155552671","message":"hello"}', "field message: must contain {code}"),
    ("too long", json.dumps({"to": NUMBER, "message": "{code}" + "x" * 480}).encode(),
     "over the 480 limit"),
    ("wrong type", b'{"to":"+14155552671","ttl":"300"}', "field ttl: must be an integer"),
    ("to as number", b'{"to":14155552671}', "field to: must be a string"),
    ("bad id", b'{"to":"+14155552671","id":"a b/c"}', "field id"),
    ("oversized", json.dumps({"to": NUMBER, "pad": "x" * 70000}).encode(), "over the 65536"),
    ("bad provider", b'{"to":"+14155552671","provider":"carrier-pigeon"}', "field provider"),
]


@pytest.mark.parametrize("payload,reason", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_goes_to_dead_letters(otpd, client, r, payload, reason):
    sid = r.xadd("otpd:jobs", {"job": payload})
    wait_for(lambda: dead_letters(r), 10, what="a dead letter")
    dl = dead_letters(r)[0]
    assert reason in dl["reason"], dl["reason"]
    assert dl["stream_id"] == sid
    assert dl["job"] == payload[:4096].decode()
    assert r.xlen("otpd:jobs") == 0
    assert r.xpending("otpd:jobs", "otpd")["pending"] == 0
    # And the daemon goes on serving.
    job = client.send(NUMBER)
    assert client.wait(job)["status"] == "sent"
    otpd.assert_alive()


def test_entry_without_job_field(otpd, r, client):
    sid = r.xadd("otpd:jobs", {"payload": "{}"})
    wait_for(lambda: dead_letters(r), 10)
    dl = dead_letters(r)[0]
    assert dl["stream_id"] == sid and 'no "job" field' in dl["reason"]
    assert client.wait(client.send(NUMBER))["status"] == "sent"


def test_rejected_job_with_id_gets_a_status(otpd, client, r):
    r.xadd("otpd:jobs", {"job": json.dumps({"id": "bad-1", "to": "12345"})})
    st = client.wait("bad-1")
    assert st["status"] == "rejected"
    assert "E.164" in st["error"]


def test_many_jobs_batched_under_a_small_inflight_limit(otpd_factory, client, r):
    otpd = otpd_factory({"OTPD_MAX_INFLIGHT": "7", "OTPD_BATCH": "3"})
    numbers = ["+1415555%04d" % i for i in range(60)]
    jobs = [client.send(n) for n in numbers]
    for j in jobs:
        assert client.wait(j, timeout=20)["status"] == "sent"
    assert len(otpd.codes()) == 60
    assert r.xlen("otpd:jobs") == 0


def test_jobs_queued_before_the_daemon_starts(otpd_factory, client, r):
    jobs = [client.send(NUMBER, purpose="p%d" % i) for i in range(5)]
    otpd_factory()
    for j in jobs:
        assert client.wait(j)["status"] == "sent"


def test_sigterm_drains_and_exits_zero(otpd_factory, client, r):
    otpd = otpd_factory()
    jobs = [client.send("+1415556%04d" % i) for i in range(300)]
    time.sleep(0.05)
    t0 = time.monotonic()
    rc = otpd.stop(signal.SIGTERM)
    elapsed = time.monotonic() - t0
    assert rc == 0
    assert elapsed < 6
    assert "shutting down" in otpd.stderr and "stopped:" in otpd.stderr
    # Nothing lost: each job is finished, or its entry is still in the stream.
    pending = {e["message_id"] for e in r.xpending_range("otpd:jobs", "otpd", "-", "+", 1000)}
    remaining = r.xlen("otpd:jobs")
    done = [j for j in jobs if client.status(j).get("status") == "sent"]
    assert len(done) + remaining == 300
    # An acknowledged job always has its final status written first.
    assert len(pending) <= remaining


def test_sigint_also_stops_cleanly(otpd):
    assert otpd.stop(signal.SIGINT) == 0


def test_shutdown_leaves_no_handle_open(otpd_factory, client, r):
    """Every part closes its handles: uv_loop_close() succeeds (main.c says so otherwise)."""
    port = free_port()
    otpd = otpd_factory({"OTPD_METRICS_ADDR": "127.0.0.1:%d" % port})
    job = client.send("+14155550177")
    assert client.wait(job)["status"] == "sent"
    assert otpd.stop(signal.SIGTERM) == 0
    assert "stopped:" in otpd.stderr
    assert "handles still open" not in otpd.stderr


def test_logs_never_hold_codes_secrets_or_numbers(otpd_factory, client, r):
    otpd = otpd_factory({"OTPD_PROVIDER": "console", "TWILIO_AUTH_TOKEN": "tok-SECRET-0123456789",
                         "TWILIO_ACCOUNT_SID": "AC0123456789abcdef0123456789abcdef",
                         "TWILIO_PHONE_NUMBER": "+15005550006",
                         "MSG91_AUTH_KEY": "msg91-SECRET-key"})
    jobs = [client.send("+1415557%04d" % i) for i in range(20)]
    r.xadd("otpd:jobs", {"job": json.dumps({"id": "bad-2", "to": "+14155570001x"})})
    for j in jobs:
        client.wait(j)
    client.wait("bad-2")
    assert otpd.stop() == 0
    log = otpd.stderr
    for code in otpd.codes():
        assert code not in log
    assert HASH_KEY not in log
    assert "SECRET" not in log
    for i in range(20):
        assert "+1415557%04d" % i not in log
        assert "1415557%04d" % i not in log
    assert "+1415*****" in log
    # Every log line carries a syslog priority for journald.
    for line in log.splitlines():
        assert line[:3] in ("<3>", "<4>", "<5>", "<6>", "<7>"), line


def test_survives_redis_restart(tmp_path, otpd_factory, client, redis_server):
    otpd = otpd_factory()
    assert client.wait(client.send(NUMBER))["status"] == "sent"
    redis_server.stop()
    time.sleep(0.5)
    otpd.assert_alive()
    redis_server.start()
    # Nothing was persisted: the group is recreated and jobs flow again.
    job = client.send(NUMBER, purpose="after_restart")
    assert client.wait(job, timeout=20)["status"] == "sent"
    assert "reconnecting" in otpd.stderr


def run_otpd(args, env):
    full = {k: v for k, v in os.environ.items()
            if not k.startswith(("OTPD_", "TWILIO_", "MSG91_", "REDIS_"))}
    full.update(env)
    return subprocess.run([otpd_binary()] + args, env=full, capture_output=True, text=True,
                          timeout=20)


def test_check_config_ok_redacts_secrets(tmp_path):
    conf = tmp_path / "otpd.env"
    conf.write_text("# the site's .env\nDEBUG=1\nSECRET_KEY='django-x'\n"
                    "OTPD_HASH_KEY=%s\nTWILIO_AUTH_TOKEN=\"tok-abc-SECRET\"\n"
                    "TWILIO_ACCOUNT_SID=AC0123456789abcdef0123456789abcdef\n"
                    "TWILIO_PHONE_NUMBER=+15005550006\n"
                    "REDIS_URL=redis://:pw-SECRET@127.0.0.1:6390/2\n" % HASH_KEY)
    p = run_otpd(["-c", str(conf), "--check-config"], {})
    assert p.returncode == 0, p.stderr
    assert "configuration OK" in p.stdout
    assert "SECRET" not in p.stdout and HASH_KEY not in p.stdout
    assert "REDIS_URL=redis://:***@127.0.0.1:6390/2" in p.stdout
    assert "# default provider: twilio" in p.stdout  # the site's credentials decide
    # The environment wins over the file.
    p = run_otpd(["-c", str(conf), "--check-config"], {"OTPD_OTP_TTL": "600"})
    assert "OTPD_OTP_TTL=600" in p.stdout


@pytest.mark.parametrize("env,needle", [
    ({}, "OTPD_HASH_KEY: not set"),
    ({"OTPD_HASH_KEY": "abc"}, "OTPD_HASH_KEY: must be 64 hex"),
    ({"OTPD_HASH_KEY": HASH_KEY, "REDIS_URL": "http://x"}, "REDIS_URL: scheme must be"),
    ({"OTPD_HASH_KEY": HASH_KEY, "TWILIO_PHONE_NUMBER": "555-1234"}, "TWILIO_PHONE_NUMBER"),
    ({"OTPD_HASH_KEY": HASH_KEY, "OTPD_OTP_TTL": "5"}, "OTPD_OTP_TTL: must be an integer from 30"),
    ({"OTPD_HASH_KEY": HASH_KEY, "OTPD_PROVIDER": "twilio"}, "TWILIO_ACCOUNT_SID"),
])
def test_check_config_errors_name_the_key(env, needle):
    p = run_otpd(["--check-config"], env)
    assert p.returncode != 0
    assert needle in p.stderr, p.stderr


def test_daemon_refuses_to_start_without_hash_key():
    p = run_otpd([], {"REDIS_URL": "redis://127.0.0.1:1/0"})
    assert p.returncode != 0 and "OTPD_HASH_KEY" in p.stderr


def test_file_errors_give_line_numbers(tmp_path):
    conf = tmp_path / "bad.env"
    conf.write_text("OTPD_HASH_KEY=%s\n\nOTPD_OTP_TLL=300\n" % HASH_KEY)
    p = run_otpd(["-c", str(conf), "--check-config"], {})
    assert p.returncode != 0
    assert "bad.env:3: unknown key OTPD_OTP_TLL" in p.stderr


def test_gen_key():
    a = run_otpd(["--gen-key"], {}).stdout.strip()
    b = run_otpd(["--gen-key"], {}).stdout.strip()
    assert a.startswith("OTPD_HASH_KEY=") and len(a) == len("OTPD_HASH_KEY=") + 64
    assert a != b


def test_example_config_is_current():
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "..", "..", "conf", "otpd.conf.example")) as f:
        committed = f.read()
    assert run_otpd(["--config-example"], {}).stdout == committed


def test_sealed_code_moved_to_another_number_does_not_open(otpd, client, r):
    """The sealed code is bound to its number and purpose: a record copied to another
    number (or purpose) is not texted there; a new code replaces it."""
    other = "+14155550199"
    assert client.wait(client.send(NUMBER))["status"] == "sent"
    first = otpd.codes(NUMBER)[-1]
    r.copy("otpd:otp:login:" + NUMBER, "otpd:otp:login:" + other)
    r.copy("otpd:otp:login:" + NUMBER, "otpd:otp:password_reset:" + NUMBER)
    for to, purpose in ((other, "login"), (NUMBER, "password_reset")):
        st = client.wait(client.send(to, purpose=purpose))
        assert st["status"] == "sent" and st["code_source"] == "new", st
    assert otpd.stderr.count("the code of record does not open") == 2
    moved = otpd.codes(other)[-1]
    assert client.verify(other, moved).ok
    reset = otpd.codes(NUMBER)[-1]
    if reset != first:  # one chance in a million
        assert client.verify(NUMBER, first, purpose="password_reset").status == "mismatch"
    assert client.verify(NUMBER, reset, purpose="password_reset").ok
    assert client.verify(NUMBER, first).ok  # the original is untouched

"""otpctl, the operator's tool, run as a subprocess like an operator would.

Redis is real (conftest's redis_server), the daemon is the real binary
(otpd_factory) and Twilio is the HTTPS mock from test_providers.py.
"""
import json
import os
import subprocess
import time

import pytest

from conftest import DOC_KEY, HASH_KEY, ROOT, wait_for
from test_providers import FROM, NUMBER, SID, TOKEN, twilio_env

from otpd.ctl import mask_payload, parse_dotenv, parse_duration, UsageError

OTPCTL = os.path.join(ROOT, "python", "otpctl")




def run(*args, env=None, timeout=30):
    """otpctl with a clean environment: only what the test passes."""
    full = {k: v for k, v in os.environ.items()
            if not k.startswith(("OTPD_", "TWILIO_", "MSG91_", "REDIS_"))
            and not k.lower().endswith("_proxy")}  # the mock is on loopback
    full.update(env or {})
    p = subprocess.run([OTPCTL] + list(args), env=full, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr


def base_env(redis_server, **extra):
    env = {"REDIS_URL": redis_server.url, "OTPD_HASH_KEY": HASH_KEY}
    env.update(extra)
    return env


def check_env(redis_server, mock, **extra):
    env = {k: v for k, v in twilio_env(mock).items()
           if k.startswith("TWILIO_") or k == "OTPD_CA_FILE"}
    env.update(base_env(redis_server))
    env.update(extra)
    return env


def statuses(out):
    """The status column of `otpctl send`: lines like '    0.012s  sent  provider ...'."""
    found = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].endswith("s"):
            try:
                float(parts[0][:-1])
            except ValueError:
                continue
            found.append(parts[1])
    return found


def check_lines(out):
    """{(level, name): message} from `otpctl check` text output."""
    rows = {}
    for line in out.splitlines():
        parts = line.split(None, 1)
        if parts and parts[0] in ("ok", "FAIL", "warn", "skip"):
            rows.setdefault(parts[0], []).append(parts[1])
    return rows


# ---------------------------------------------------------------- pure parts

def test_dotenv_syntax_matches_the_daemon():
    text = "\n".join([
        "# comment",
        "",
        "export REDIS_URL=redis://h:1/2",
        "OTPD_PREFIX = app:   # trailing comment",
        "TWILIO_AUTH_TOKEN='lit#eral \\n'",
        'TWILIO_ACCOUNT_SID="AC\\tx\\"y"  # c',
        "MSG91_SENDER_ID=ab#cd",
        "EMPTY=",
        "HASHONLY=#x",
        "WIN=1\r",
    ])
    env = parse_dotenv(text)
    assert env["REDIS_URL"] == "redis://h:1/2"
    assert env["OTPD_PREFIX"] == "app:"
    assert env["TWILIO_AUTH_TOKEN"] == "lit#eral \\n"
    assert env["TWILIO_ACCOUNT_SID"] == 'AC\tx"y'
    assert env["MSG91_SENDER_ID"] == "ab#cd"
    assert env["EMPTY"] == "" and env["HASHONLY"] == "" and env["WIN"] == "1"
    for bad in ("JUSTAKEY", "A='open", 'A="x" y'):
        with pytest.raises(UsageError):
            parse_dotenv(bad, "f")


def test_durations_and_masking():
    assert parse_duration("90") == 90 and parse_duration("15m") == 900
    assert parse_duration("7d") == 7 * 86400 and parse_duration("1d12h") == 36 * 3600
    for bad in ("", "7x", "d", "1.5h", "-1s"):
        with pytest.raises(ValueError):
            parse_duration(bad)
    shown = mask_payload('{"to":"+1 415 555 2671","id":"a","created_ms":1712345678901,"n":"+14155552671"}')
    assert "555 26" not in shown and "+1415*****71" in shown and "1712345678901" in shown
    assert "4155552671" not in mask_payload('{"to":4155552671}')
    assert "4155552671" not in mask_payload("not json 4155552671")


def test_usage_errors_exit_2(redis_server):
    env = base_env(redis_server)
    assert run(env=env)[0] == 2
    assert run("dead", env=env)[0] == 2
    assert run("dead", "purge", env=env)[0] == 2
    assert run("dead", "requeue", "--all", "--payload", "{}", env=env)[0] == 2
    rc, out, err = run("send", "4155552671", env=env)
    assert rc == 2 and "E.164" in err
    rc, out, err = run("-c", "/nonexistent/otpd.env", "status", env=env)
    assert rc == 2 and "/nonexistent/otpd.env" in err


# ---------------------------------------------------------------- status

def test_status_on_an_empty_redis(redis_server):
    env = base_env(redis_server)
    rc, out, err = run("status", env=env)
    assert rc == 1, out + err
    assert "no otpd instance is alive" in err
    assert "Traceback" not in err
    assert "backlog" in out and "none yet" in out
    rc, out, err = run("status", "--json", env=env)
    assert rc == 1
    st = json.loads(out)
    assert st["backlog"] == 0 and st["dead"] == 0 and st["instances"] == []
    assert st["alive"] is False and st["consumer_group"]["exists"] is False
    assert st["stats"] == {} and st["recent_errors"] == []


def test_status_with_a_heartbeat_and_history(redis_server, r):
    now = int(time.time() * 1000)
    # The prefix must reach every key, including the instance SCAN pattern.
    p = "{shop}:"
    hb = {"version": "9.9.9", "pid": "4242", "host": "web1", "consumer": "web1:4242",
          "started_ms": now - 3_600_000, "updated_ms": now - 1000, "inflight": "3",
          "claimed": "120", "sent": "110", "failed": "4", "expired": "1", "rejected": "2",
          "retries": "7", "loop_lag_ms": "2", "redis": "up", "providers": "twilio=up,msg91=down"}
    r.hset(p + "instance:web1:4242", mapping=hb)
    r.pexpire(p + "instance:web1:4242", 15000)
    r.hset(p + "instance:web2:77", mapping=dict(hb, consumer="web2:77", updated_ms=now - 14000))
    r.pexpire(p + "instance:web2:77", 1000)  # crashed: its key is running out
    r.hset("otpd:instance:foreign:1", mapping={"consumer": "foreign-daemon"})  # not our prefix
    r.hset(p + "stats", mapping={"jobs:sent": 110, "jobs:failed": 4, "provider:twilio:sent": 100,
                                 "provider:msg91:sent": 10, "provider:twilio:failed": 4})
    # A backlog: 3 entries, 1 read by a consumer and not acknowledged.
    r.xgroup_create(p + "jobs", "otpd", id="0", mkstream=True)
    for i in range(3):
        r.xadd(p + "jobs", {"job": json.dumps({"to": "+1415555000%d" % i})})
    r.xreadgroup("otpd", "web1:4242", {p + "jobs": ">"}, count=1)
    r.xadd(p + "dead", {"job": "{", "reason": "payload is not valid JSON", "stream_id": "1-1",
                        "at_ms": now})
    for i, (status, code) in enumerate([("sending", ""), ("failed", "21608"), ("sent", ""),
                                         ("retrying", "20503"), ("expired", ""),
                                         ("rejected", ""), ("sent", "")]):
        r.xadd(p + "events", {"id": "job-%d" % i, "status": status, "provider": "twilio",
                              "error_code": code, "ts_ms": now - 1000 * (10 - i)})

    env = base_env(redis_server, OTPD_PREFIX=p)
    rc, out, err = run("status", env=env)
    assert rc == 0, out + err
    assert "web1:4242" in out and "otpd 9.9.9" in out and "twilio=up,msg91=down" in out
    assert "foreign-daemon" not in out
    assert "instances alive: 2" in out and out.count("STALE") == 1
    assert "job-1" in out and "21608" in out and "job-2" not in out  # sent is no error
    rc, out, err = run("status", "--json", env=env)
    assert rc == 0 and err == ""
    st = json.loads(out)
    assert st["backlog"] == 3 and st["dead"] == 1
    assert st["pending"]["count"] == 1 and st["pending"]["oldest_consumer"] == "web1:4242"
    assert st["pending"]["oldest_idle_ms"] >= 0
    assert st["consumer_group"]["lag"] == 2
    inst, crashed = st["instances"]
    assert crashed["consumer"] == "web2:77" and crashed["stale"] and not inst["stale"]
    assert inst["consumer"] == "web1:4242" and inst["failed"] == "4"
    assert 0 < inst["ttl_ms"] <= 15000 and 900 <= inst["seen_ago_ms"] < 5000
    assert st["stats"]["provider:twilio:sent"] == 100
    assert [e["id"] for e in st["recent_errors"]] == ["job-5", "job-4", "job-3", "job-1"]
    assert st["recent_errors"][-1]["error_code"] == "21608"


def test_status_with_a_real_daemon(otpd_factory, client, redis_server, r):
    otpd_factory()
    assert client.wait(client.send(NUMBER))["status"] == "sent"
    env = base_env(redis_server)
    beat = wait_for(lambda: list(r.scan_iter("otpd:instance:*")), 2, what="a heartbeat")
    rc, out, err = run("status", "--json", env=env)
    st = json.loads(out)
    assert rc == 0, err
    [inst] = st["instances"]
    assert inst["key"] == beat[0]
    assert inst["redis"] == "up" and "console" in inst["providers"]
    assert inst["consumer"] and int(inst["pid"]) > 0
    assert st["consumer_group"]["exists"] and st["pending"]["count"] == 0
    rc, out, err = run("status", env=env)
    assert rc == 0 and "instances alive: 1" in out


# ---------------------------------------------------------------- send

def test_send_through_a_console_daemon(otpd_factory, redis_server):
    otpd = otpd_factory()
    env = base_env(redis_server)
    rc, out, err = run("send", NUMBER, "--purpose", "password_reset", "--timeout", "15", env=env)
    assert rc == 0, out + err
    assert NUMBER in out.splitlines()[0]  # the operator's own number may be echoed
    assert statuses(out) == ["queued", "sending", "sent"]
    assert "provider console" in out and "ref CON" in out
    assert len(otpd.codes(NUMBER)) == 1
    rc, out, err = run("send", NUMBER, "--json", env=env)
    assert rc == 0
    res = json.loads(out)
    assert res["ok"] and res["status"] == "sent" and res["to"] == "+1415*****71"
    assert NUMBER not in out


def test_send_by_email(otpd_factory, redis_server):
    otpd = otpd_factory()
    env = base_env(redis_server)
    rc, out, err = run("send", "Ops@Example.com", "--timeout", "15", env=env)
    assert rc == 0, out + err
    assert statuses(out) == ["queued", "sending", "sent"]
    assert "provider console_email" in out
    assert "To: ops@example.com" in otpd.stdout
    rc, out, err = run("send", "ops2@example.com", "--json", env=env)
    res = json.loads(out)
    assert rc == 0 and res["ok"] and res["to"] == "o***2@example.com"


def test_send_to_an_opted_out_number_says_so(redis_server, r):
    r.hset("otpd:optout", "+14155552671", "1")
    rc, out, err = run("send", "+14155552671", env=base_env(redis_server))
    assert rc == 1
    assert "not sent" in out + err and "STOP" in out + err
    assert "Traceback" not in err


def test_send_without_a_daemon_times_out(redis_server):
    rc, out, err = run("send", NUMBER, "--timeout", "0.5", env=base_env(redis_server))
    assert rc == 1
    assert "still queued" in err and "is otpd running" in err
    assert "no otpd instance is alive" in err


def test_send_permanent_failure_prints_the_hint(otpd_factory, mock, redis_server):
    mock.rule(to=NUMBER, provider="twilio", behaviour="unverified_trial")
    otpd_factory(twilio_env(mock))
    rc, out, err = run("send", NUMBER, "--timeout", "15", env=base_env(redis_server))
    assert rc == 1, out + err
    assert "failed" in out and "error_code 21608" in out
    assert "hint: trial account: verify this number in the Twilio console" in out
    assert "Phone Numbers > Verified Caller IDs" in out


def test_send_retry_is_shown_then_sent(otpd_factory, mock, redis_server):
    mock.rule(to=NUMBER, provider="twilio", behaviour="unavailable", times=1)
    otpd_factory(twilio_env(mock))
    rc, out, err = run("send", NUMBER, "--timeout", "15", env=base_env(redis_server))
    assert rc == 0, out + err
    assert statuses(out) == ["queued", "sending", "retrying", "sent"]
    assert "error_code 20503" in out and "ref SM" in out


# ---------------------------------------------------------------- check

def test_check_warns_on_example_key(redis_server, mock):
    rc, out, err = run("check", env=check_env(redis_server, mock, OTPD_HASH_KEY=DOC_KEY))
    assert any("example key" in l for l in check_lines(out)["warn"]), out + err


def test_check_good_credentials(redis_server, mock, tmp_path):
    rc, out, err = run("check", env=check_env(redis_server, mock))
    assert rc == 0, out + err
    lines = check_lines(out)
    assert any("otpd test account" in l and "status active" in l for l in lines["ok"])
    assert any(l.startswith("redis") for l in lines["ok"])
    assert not any("example key" in l for l in lines.get("warn", []))
    req = [q for q in mock.requests("twilio")]
    assert [(q["method"], q["path"]) for q in req] == [("GET", "/2010-04-01/Accounts/%s.json" % SID)]
    assert TOKEN not in out + err
    # The same settings from a .env file (the daemon's syntax), the environment winning.
    envfile = tmp_path / "otpd.env"
    envfile.write_text("# site settings\nexport TWILIO_ACCOUNT_SID=%s\nTWILIO_AUTH_TOKEN='%s'\n"
                       "TWILIO_PHONE_NUMBER=%s  # sender\nTWILIO_API_BASE=%s\nOTPD_CA_FILE=%s\n"
                       "REDIS_URL=redis://127.0.0.1:1/0\nDJANGO_DEBUG=1\n"
                       % (SID, TOKEN, FROM, mock.base, mock.ca["ca_cert"]))
    rc, out, err = run("-c", str(envfile), "check", "--json", env=base_env(redis_server))
    assert rc == 0, out + err
    res = json.loads(out)
    assert res["ok"] and {c["level"] for c in res["checks"]} <= {"ok", "warn", "skip"}


def test_check_trial_and_inactive_accounts_warn(redis_server, mock):
    mock.ctl("config", {"twilio_account_type": "Trial", "twilio_account_status": "suspended"})
    rc, out, err = run("check", env=check_env(redis_server, mock))
    assert rc == 0, out + err
    assert ("trial account: verify this number in the Twilio console (Phone Numbers > Verified "
            "Caller IDs) or upgrade the account") in out
    assert "status is suspended, not active" in out


def test_check_wrong_token(redis_server, mock):
    rc, out, err = run("check", env=check_env(redis_server, mock, TWILIO_AUTH_TOKEN="wrong-token"))
    assert rc == 1
    lines = check_lines(out)
    assert any("401" in l for l in lines["FAIL"])
    assert ("authentication failed: check TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN (no extra "
            "spaces) against the Twilio console") in out
    assert "wrong-token" not in out + err


def test_check_wrong_ca(redis_server, mock):
    env = check_env(redis_server, mock, OTPD_CA_FILE=mock.ca["wrong_ca_cert"])
    rc, out, err = run("check", env=env)
    assert rc == 1
    [fail] = check_lines(out)["FAIL"]
    assert fail.startswith("twilio account") and "certificate" in fail
    assert "OTPD_CA_FILE" in out
    assert mock.requests("twilio") == []  # nothing reached the server over TLS


def test_check_config_mistakes(redis_server, mock):
    env = check_env(redis_server, mock, TWILIO_PHONE_NUMBER="415 555 2671", OTPD_HASH_KEY="abc",
                    REDIS_URL="redis://127.0.0.1:1/0", MSG91_AUTH_KEY="abcdefgh12345",
                    MSG91_TEMPLATE_ID="", MSG91_SENDER_ID="SMLCS",
                    TWILIO_API_BASE=mock.base.rsplit(":", 1)[0] + ":1")
    rc, out, err = run("check", env=env)
    assert rc == 1
    fails = "\n".join(check_lines(out)["FAIL"])
    assert "redis" in fails and "OTPD_HASH_KEY" in fails and "MSG91_TEMPLATE_ID" in fails
    assert "TWILIO_PHONE_NUMBER" in fails and "use E.164 format" in out
    assert "cannot connect" in fails
    assert "not 6 letters" in out and "NOT verified online" in out
    assert "555 2671" not in out


# ---------------------------------------------------------------- dead letters

def test_dead_letters_list_requeue_purge(otpd_factory, redis_server, r, client):
    otpd = otpd_factory()
    env = base_env(redis_server)
    r.xadd("otpd:jobs", {"job": "not json {"})
    r.xadd("otpd:jobs", {"job": json.dumps({"v": 1, "id": "signup-42", "to": "+1 415 555 2671"})})
    r.xadd("otpd:jobs", {"job": json.dumps({"v": 1, "id": "reset-7", "to": NUMBER, "ttl": "300"})})
    wait_for(lambda: r.xlen("otpd:dead") == 3, 10, what="3 dead letters")
    assert client.wait("reset-7")["status"] == "rejected"

    rc, out, err = run("dead", "list", env=env)
    assert rc == 0, out + err
    assert "3 dead letter(s)" in out
    assert "field ttl: must be an integer" in out and "payload is not valid JSON" in out
    assert "555 26" not in out and "4155552671" not in out and "+1415*****71" in out
    rc, out, err = run("dead", "list", "--json", "--limit", "2", env=env)
    listing = json.loads(out)
    assert listing["total"] == 3 and len(listing["entries"]) == 2
    by_reason = {e["reason"].split(":")[0]: e["id"]
                 for e in json.loads(run("dead", "list", "--json", env=env)[1])["entries"]}

    # Fix reset-7's payload and requeue it under the same id: the web app waiting
    # on reset-7 sees it go from rejected to sent.
    fixed = json.dumps({"v": 1, "id": "reset-7", "to": NUMBER, "ttl": 300})
    rc, out, err = run("dead", "requeue", by_reason["field ttl"], "--payload", fixed, env=env)
    assert rc == 0, out + err
    assert "otpd:jobs" in out and "rejected -> queued" in out
    assert client.wait("reset-7", timeout=10)["status"] == "sent"
    assert len(otpd.codes(NUMBER)) == 1
    assert r.xlen("otpd:dead") == 2

    # Requeued as it is, the bad JSON dies again: a new dead letter, same count.
    old = by_reason["payload is not valid JSON"]
    rc, out, err = run("dead", "requeue", old, "--json", env=env)
    assert rc == 0, out + err
    [moved] = json.loads(out)["requeued"]
    wait_for(lambda: any(f["stream_id"] == moved["job_stream_id"] for _i, f in r.xrange("otpd:dead")),
             10, what="the requeued bad job back in the dead letters")
    assert r.xlen("otpd:dead") == 2 and not r.xrange("otpd:dead", old, old)

    # An id that is gone, and a job whose id already has a final status, fail.
    assert run("dead", "requeue", old, env=env)[0] == 1
    r.hset("otpd:job:done-1", mapping={"status": "sent"})
    did = r.xadd("otpd:dead", {"job": json.dumps({"id": "done-1", "to": NUMBER}), "reason": "x"})
    rc, out, err = run("dead", "requeue", did, env=env)
    assert rc == 1 and "already sent" in err and r.xlen("otpd:dead") == 3

    rc, out, err = run("dead", "purge", "--all", env=env)
    assert rc == 0 and "purged 3" in out
    assert r.xlen("otpd:dead") == 0
    rc, out, err = run("dead", "list", env=env)
    assert rc == 0 and "0 dead letter(s)" in out
    otpd.assert_alive()


def test_dead_purge_older_than(redis_server, r):
    now = int(time.time() * 1000)
    day = 86400 * 1000
    for age in (30, 8, 6, 0):
        r.xadd("otpd:dead", {"job": "{}", "reason": "old %d" % age}, id="%d-0" % (now - age * day))
    env = base_env(redis_server)
    rc, out, err = run("dead", "purge", "--older-than", "7d", "--json", env=env)
    assert rc == 0, err
    assert json.loads(out) == {"removed": 2, "before": 4, "left": 2}
    rc, out, err = run("dead", "purge", "--older-than", "1d", env=env)
    assert rc == 0 and "purged 1" in out
    [(left, _f)] = r.xrange("otpd:dead")
    rc, out, err = run("dead", "purge", left, env=env)
    assert rc == 0 and r.xlen("otpd:dead") == 0


def test_requeue_refuses_a_cut_payload(redis_server, r):
    big = json.dumps({"to": NUMBER, "pad": "x" * 5000})[:4096]
    did = r.xadd("otpd:dead", {"job": big, "reason": "over the 65536 limit"})
    env = base_env(redis_server)
    rc, out, err = run("dead", "requeue", did, env=env)
    assert rc == 1 and "--payload" in err
    rc, out, err = run("dead", "requeue", "--all", "--json", env=env)
    assert rc == 1 and json.loads(out)["errors"][0]["dead_id"] == did
    assert r.xlen("otpd:jobs") == 0 and r.xlen("otpd:dead") == 1

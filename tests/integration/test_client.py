"""The Python client against a real redis-server, without the daemon.

Where the daemon's half of the contract is needed (the OTP record), the
tests write it exactly as docs/protocol.md says the daemon does, so these
tests pin the contract from the web app's side.
"""
import json
import time

import pytest
import redis

from conftest import DOC_KEY, HASH_KEY
from otpd import FINAL, NumberRefused, OTPClient, VerifyResult, mac, mask_phone
from otpd.client import CHANNELS, normalize_locale

TO = "+14155552671"
KAT_MAC = "3cb21acf0a566344e21d12c74bb27fed3e9bdd3aa39ea4c3088366982e615819"


@pytest.fixture
def client(r):
    return OTPClient(redis=r, hash_key=HASH_KEY)


def daemon_writes_otp(r, code, *, to=TO, purpose="login", job="job-1",
                      max_attempts=5, ttl_ms=300000, prefix="otpd:"):
    """What the daemon does before sending: replace any older record
    (DEL first, so a stale 'locked' field cannot survive) and set the TTL."""
    key = "%sotp:%s:%s" % (prefix, purpose, to)
    pipe = r.pipeline(transaction=True)
    pipe.delete(key)
    pipe.hset(key, mapping={"mac": mac(purpose, to, code, HASH_KEY), "job": job,
                            "attempts": 0, "max_attempts": max_attempts,
                            "created_ms": int(time.time() * 1000)})
    pipe.pexpire(key, ttl_ms)
    pipe.execute()
    return key


def only_entry(r):
    entries = r.xrange("otpd:jobs")
    assert len(entries) == 1
    return json.loads(entries[0][1]["job"])


# --- the code's MAC -------------------------------------------------------

def test_mac_known_answer():
    assert mac("password_reset", TO, "123456", DOC_KEY) == KAT_MAC


def test_mac_reads_key_from_env(monkeypatch):
    monkeypatch.setenv("OTPD_HASH_KEY", DOC_KEY)
    assert mac("password_reset", TO, "123456") == KAT_MAC


@pytest.mark.parametrize("bad", [None, "", HASH_KEY[:-2], HASH_KEY + "00", "zz" * 32])
def test_bad_hash_key_rejected(r, bad):
    with pytest.raises(ValueError, match="OTPD_HASH_KEY"):
        OTPClient(redis=r, hash_key=bad)


# --- send -----------------------------------------------------------------

def test_send_writes_job_and_queued_status(client, r):
    before = int(time.time() * 1000)
    job_id = client.send(TO, "password_reset", ttl=600, digits=8, max_attempts=3,
                         message="Code {code}, valid {minutes} min", provider="console")
    after = int(time.time() * 1000)

    job = only_entry(r)
    assert job == {"v": 1, "id": job_id, "to": TO, "purpose": "password_reset", "ttl": 600,
                   "digits": 8, "max_attempts": 3, "message": "Code {code}, valid {minutes} min",
                   "provider": "console", "created_ms": job["created_ms"]}
    assert type(job["created_ms"]) is int and before <= job["created_ms"] <= after
    assert job_id.startswith("password_reset-") and len(job_id) == len("password_reset-") + 16

    st = client.status(job_id)
    assert st == {"status": "queued", "to": "+1415*****71", "purpose": "password_reset",
                  "created_ms": str(job["created_ms"]), "updated_ms": str(job["created_ms"])}
    assert 86300 < r.ttl("otpd:job:" + job_id) <= 86400


def test_send_omits_unset_fields_so_daemon_defaults_apply(client, r):
    client.send(TO)
    assert set(only_entry(r)) == {"v", "id", "to", "purpose", "created_ms"}


def test_send_with_caller_id_does_not_clobber_existing_status(client, r):
    r.hset("otpd:job:order-42", mapping={"status": "sent", "attempts": 1})
    assert client.send(TO, id="order-42") == "order-42"
    assert client.status("order-42")["status"] == "sent"
    assert only_entry(r)["id"] == "order-42"


def test_send_uses_prefix_and_status_ttl(r):
    c = OTPClient(redis=r, hash_key=HASH_KEY, prefix="{otpd}:", status_ttl=60)
    job_id = c.send(TO)
    assert r.xlen("{otpd}:jobs") == 1 and not r.exists("otpd:jobs")
    assert 0 < r.ttl("{otpd}:job:" + job_id) <= 60


@pytest.mark.parametrize("kwargs, msg", [
    ({"to": "14155552671"}, "E.164"),
    ({"to": "+04155552671"}, "E.164"),
    ({"to": "+123456"}, "E.164"),
    ({"to": "+1234567890123456"}, "E.164"),
    ({"to": "+14155552671\n"}, "E.164"),
    ({"purpose": "Password-Reset"}, "purpose"),
    ({"purpose": "x" * 33}, "purpose"),
    ({"purpose": ""}, "purpose"),
    ({"ttl": 29}, "ttl"),
    ({"ttl": 3601}, "ttl"),
    ({"ttl": "300"}, "ttl"),
    ({"ttl": True}, "ttl"),
    ({"digits": 3}, "digits"),
    ({"digits": 11}, "digits"),
    ({"max_attempts": 0}, "max_attempts"),
    ({"max_attempts": 21}, "max_attempts"),
    ({"message": "Your code is ready"}, "{code}"),
    ({"message": "{code}" + "x" * 475}, "480"),
    ({"message": "{code} \ud800"}, "Unicode"),
    ({"id": ""}, "id"),
    ({"id": "has space"}, "id"),
    ({"id": "x" * 65}, "id"),
    ({"id": "caf\u00e9"}, "id"),
    ({"provider": "sns"}, "provider"),
])
def test_send_rejects_bad_input_locally(client, r, kwargs, msg):
    args = {"to": TO, **kwargs}
    with pytest.raises(ValueError, match=msg.replace("{", r"\{").replace("}", r"\}")):
        client.send(**args)
    assert r.xlen("otpd:jobs") == 0 and not r.keys("otpd:job:*")


# --- locale, app_hash, voice, fallback (issue 20) ---------------------------

APP_HASH = "FA+9qCX9VSu"   # the form of Android's SMS Retriever hash (base64, 11)
LONGEST_TAG = "en-abcdefgh-abcdefgh-abcdefgh-abcde"   # 35 characters, the most otpd takes


def test_send_language_and_fallback_fields_enqueued_exactly(client, r):
    job_id = client.send(TO, "login", locale="pt_br", app_hash=APP_HASH,
                         fallback=("voice", "email"), fallback_email=" Alice@Example.COM ")
    job = only_entry(r)
    assert job == {"v": 1, "id": job_id, "to": TO, "purpose": "login", "locale": "pt-BR",
                   "app_hash": APP_HASH, "fallback": ["voice", "email"],
                   "fallback_email": "alice@example.com", "created_ms": job["created_ms"]}


def test_send_by_voice(client, r):
    job_id = client.send(TO, channel="voice", locale="en", fallback=["sms"])
    job = only_entry(r)
    assert job == {"v": 1, "id": job_id, "to": TO, "purpose": "login", "channel": "voice",
                   "locale": "en", "fallback": ["sms"], "created_ms": job["created_ms"]}
    assert client.status(job_id)["to"] == "+1415*****71"
    assert CHANNELS == ("sms", "email", "voice")


def test_send_empty_fallback_is_none(client, r):
    client.send(TO, fallback=[])
    assert "fallback" not in only_entry(r)


@pytest.mark.parametrize("tag, want", [
    ("en", "en"), ("EN", "en"), ("ast", "ast"), ("pt-br", "pt-BR"), ("PT_br", "pt-BR"),
    ("zh-hant", "zh-Hant"), ("zh_HANT_tw", "zh-Hant-TW"), ("sr-latn-rs", "sr-Latn-RS"),
    ("es-419", "es-419"), ("de-CH-1996", "de-CH-1996"), ("en-" + "a" * 8, "en-" + "a" * 8),
    ("en-x-ab", "en-x-AB"), (LONGEST_TAG.upper(), "en-" + LONGEST_TAG[3:]),
])
def test_locale_normalised(client, r, tag, want):
    assert normalize_locale(tag) == want
    client.send(TO, locale=tag)
    assert only_entry(r)["locale"] == want


def test_voice_number_is_checked_as_sms(r):
    seen = []

    class Refuse:
        def check(self, to):
            seen.append(to)
            raise NumberRefused("premium_rate", to)
    c = OTPClient(redis=r, hash_key=HASH_KEY, number_check=Refuse())
    for channel in ("sms", "voice"):
        with pytest.raises(NumberRefused):
            c.send(TO, channel=channel)
    c.send("a@example.com", channel="email")
    assert seen == [TO, TO] and r.xlen("otpd:jobs") == 1


def test_verify_a_voice_code(client, r):
    daemon_writes_otp(r, "123456")   # the number's record, whichever channel carried it
    with pytest.raises(ValueError, match="E.164"):
        client.verify("alice@example.com", "123456", channel="voice")
    assert client.verify(TO, "123456", channel="voice").ok


@pytest.mark.parametrize("kwargs, msg", [
    ({"channel": "fax"}, "channel"),
    ({"channel": "voice", "to": "alice@example.com"}, "E.164"),
    ({"locale": ""}, "locale"),
    ({"locale": "e"}, "locale"),
    ({"locale": "english"}, "locale"),
    ({"locale": "e1"}, "locale"),
    ({"locale": "en-"}, "locale"),
    ({"locale": "-en"}, "locale"),
    ({"locale": "en--US"}, "locale"),
    ({"locale": "en-abcdefghi"}, "locale"),
    ({"locale": "en-ü"}, "locale"),
    ({"locale": "en-US\n"}, "locale"),
    ({"locale": LONGEST_TAG + "f"}, "35"),   # 36 characters
    ({"locale": 7}, "locale"),
    ({"app_hash": "FA+9qCX9VS"}, "app_hash"),
    ({"app_hash": APP_HASH + "A"}, "app_hash"),
    ({"app_hash": "FA-9qCX9VSu"}, "app_hash"),
    ({"app_hash": 12345678901}, "app_hash"),
    ({"fallback": "voice"}, "fallback"),
    ({"fallback": ["fax"]}, "fallback"),
    ({"fallback": ["voice", "voice"]}, "fallback"),
    ({"fallback": ["sms"]}, "fallback"),                      # the job's own channel
    ({"fallback": ["voice", "email", "sms"], "fallback_email": "a@example.com"}, "fallback"),
    ({"fallback": ["voice", "email", "sms"], "channel": "voice",
      "fallback_email": "a@example.com"}, "fallback"),
    ({"fallback": ["email"]}, "fallback_email"),
    ({"fallback": ["sms"], "channel": "email", "to": "a@example.com"}, "e-mail job"),
    ({"fallback": ["email"], "fallback_email": "not-an-address"}, "fallback_email"),
    ({"fallback_email": "a@b"}, "fallback_email"),
])
def test_send_rejects_bad_language_and_fallback(client, r, kwargs, msg):
    args = {"to": TO, **kwargs}
    with pytest.raises(ValueError, match=msg):
        client.send(**args)
    assert r.xlen("otpd:jobs") == 0 and not r.keys("otpd:job:*")


def test_send_message_limit_counts_rendered_text(client, r):
    # 474 + 6 digits = 480 exactly; with digits=8 it is 482.
    client.send(TO, message="{code}" + "x" * 474)
    with pytest.raises(ValueError, match="482"):
        client.send(TO, message="{code}" + "x" * 474, digits=8)


# --- status and wait ------------------------------------------------------

def test_status_unknown_is_empty(client):
    assert client.status("nope") == {}


def test_wait_returns_on_final_and_times_out_otherwise(client, r):
    job_id = client.send(TO)
    with pytest.raises(TimeoutError, match="queued"):
        client.wait(job_id, timeout=0.1)
    r.hset("otpd:job:" + job_id, "status", "sent")
    assert client.wait(job_id, timeout=1)["status"] == "sent"
    with pytest.raises(TimeoutError):
        client.wait(job_id, timeout=0.1, final={"delivered", "undelivered"})
    assert "sent" in FINAL and "retrying" not in FINAL


# --- verify ---------------------------------------------------------------

def test_verify_ok_once_then_expired(client, r):
    key = daemon_writes_otp(r, "123456", job="j1")
    res = client.verify(TO, "123456")
    assert res.ok and bool(res) and res.status == "ok" and res.job_id == "j1"
    assert not r.exists(key)
    again = client.verify(TO, "123456")
    assert again == VerifyResult("expired", 0, None) and not again


def test_verify_mismatch_counts_down_then_locks(client, r):
    key = daemon_writes_otp(r, "123456", max_attempts=3)
    assert client.verify(TO, "000000") == VerifyResult("mismatch", 2, "job-1")
    assert client.verify(TO, "000001") == VerifyResult("mismatch", 1, "job-1")
    assert client.verify(TO, "000002") == VerifyResult("locked", 0, "job-1")
    # The right code no longer works, and the record stays so it keeps saying so.
    assert client.verify(TO, "123456").status == "locked"
    assert r.hget(key, "locked") == "1" and r.hget(key, "attempts") == "3"
    assert r.pttl(key) > 0


def test_verify_single_attempt_locks_at_once(client, r):
    daemon_writes_otp(r, "123456", max_attempts=1)
    assert client.verify(TO, "999999") == VerifyResult("locked", 0, "job-1")
    assert client.verify(TO, "123456").status == "locked"


def test_verify_expired_after_ttl(client, r):
    daemon_writes_otp(r, "123456", ttl_ms=50)
    time.sleep(0.15)
    assert client.verify(TO, "123456").status == "expired"


def test_verify_latest_code_wins(client, r):
    daemon_writes_otp(r, "111111", job="first")
    daemon_writes_otp(r, "222222", job="second")
    assert client.verify(TO, "111111") == VerifyResult("mismatch", 4, "second")
    assert client.verify(TO, "222222") == VerifyResult("ok", 4, "second")


def test_verify_new_code_after_lock(client, r):
    daemon_writes_otp(r, "111111", max_attempts=1)
    assert client.verify(TO, "000000").status == "locked"
    daemon_writes_otp(r, "222222", job="resend")
    assert client.verify(TO, "222222") == VerifyResult("ok", 5, "resend")


def test_verify_code_bound_to_purpose_and_number(client, r):
    daemon_writes_otp(r, "123456", purpose="password_reset")
    assert client.verify(TO, "123456").status == "expired"            # purpose login
    assert client.verify("+14155552672", "123456", "password_reset").status == "expired"
    assert client.verify(TO, "123456", "password_reset").ok


@pytest.mark.parametrize("code", ["", "12a456", "123", "12345678901", "12 3456",
                                  "\u0661\u0662\u0663\u0664\u0665\u0666"])
def test_verify_invalid_input_spends_no_attempt(client, r, code):
    key = daemon_writes_otp(r, "123456")
    res = client.verify(TO, code)
    assert res == VerifyResult("invalid", 0, None) and not res
    assert r.hget(key, "attempts") == "0"


def test_verify_trims_whitespace(client, r):
    daemon_writes_otp(r, "123456")
    assert client.verify(TO, " 123456\n").ok


def test_verify_rejects_caller_bugs(client):
    with pytest.raises(ValueError, match="E.164"):
        client.verify("4155552671", "123456")
    with pytest.raises(ValueError, match="purpose"):
        client.verify(TO, "123456", purpose="Login")
    with pytest.raises(TypeError):
        client.verify(TO, 123456)


def test_plain_code_never_reaches_redis(client, r, redis_server):
    daemon_writes_otp(r, "123456")
    mon = redis_server.client()
    with mon.monitor() as m:
        client.verify(TO, "654321")
        commands = []
        for _ in range(4):
            commands.append(m.next_command()["command"])
            if "EVAL" in commands[-1].upper():
                break
    mon.close()
    assert not any("654321" in c for c in commands)
    assert any(mac("login", TO, "654321", HASH_KEY) in c for c in commands)


def test_verify_after_script_flush(client, r):
    # redis-py falls back from EVALSHA to EVAL when the server lost the script.
    daemon_writes_otp(r, "123456")
    r.script_flush()
    assert client.verify(TO, "123456").ok


def test_verify_with_bytes_client(redis_server):
    raw = redis.Redis(port=redis_server.port)
    try:
        c = OTPClient(redis=raw, hash_key=HASH_KEY)
        daemon_writes_otp(raw, "123456", job="b1")
        assert c.verify(TO, "123456") == VerifyResult("ok", 5, "b1")
        job_id = c.send(TO)
        assert c.status(job_id)["status"] == "queued"
    finally:
        raw.close()


# --- helpers and configuration --------------------------------------------

@pytest.mark.parametrize("to, masked", [
    ("+14155552671", "+1415*****71"),
    ("+919876543210", "+9198******10"),
    ("+1234567", "+1234*67"),
    ("+123456789012345", "+1234*********45"),
    ("14155552671", "***"),
    ("", "***"),
    (None, "***"),
])
def test_mask_phone(to, masked):
    assert mask_phone(to) == masked


def test_from_env(monkeypatch, redis_server, r):
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    monkeypatch.setenv("OTPD_HASH_KEY", HASH_KEY)
    monkeypatch.setenv("OTPD_PREFIX", "{app}:")
    c = OTPClient.from_env()
    job_id = c.send(TO)
    assert r.xlen("{app}:jobs") == 1
    assert c.status(job_id)["status"] == "queued"
    daemon_writes_otp(r, "123456", prefix="{app}:")
    assert c.verify(TO, "123456").ok


def test_from_env_requires_hash_key(monkeypatch, redis_server):
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    monkeypatch.delenv("OTPD_HASH_KEY", raising=False)
    with pytest.raises(ValueError, match="OTPD_HASH_KEY"):
        OTPClient.from_env()

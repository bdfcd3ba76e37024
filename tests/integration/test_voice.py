"""A call when the SMS does not come (issue 20): the voice channel through
Twilio's Calls API (against the mock), and fallback from SMS to a call with
the same code: undelivered SMS -> call; verified before the delay -> no
call; expired -> nothing."""
import json
import re
import time

from conftest import HASH_KEY, wait_for
from test_providers import NUMBER, sends, twilio_env

from otpd import OTPClient

FAST = {"OTPD_FALLBACK_DELAY_S": "5", "OTPD_DLR_POLL_HORIZON_S": "600",
        "OTPD_DLR_POLL_FIRST_MS": "300"}


def client_for(redis_server):
    return OTPClient(url=redis_server.url, hash_key=HASH_KEY, number_check=None)


def calls(mock, to=NUMBER):
    return mock.ctl("twilio/calls?to=" + to.replace("+", "%2B"))


def spoken_code(call):
    """The digits a listener hears, once (the call repeats them)."""
    says = [s for s in call["spoken"] if s.get("text")]
    return re.sub(r"\D", "", says[0]["text"])


def sms_code(mock):
    texts = [q for q in sends(mock) if q["path"].endswith("/Messages.json")]
    return re.search(r"\b(\d{6})\b", texts[-1]["form"]["Body"]).group(1)


def events(r, job_id):
    return [f for _, f in r.xrange("otpd:events") if f.get("id") == job_id]


def test_voice_job_calls_and_reads_the_code_out(otpd_factory, mock, redis_server, r):
    mock.ctl("config", {"twilio_call_status": "completed"})
    otpd = otpd_factory(twilio_env(mock, **FAST))
    site = client_for(redis_server)
    job = site.send(NUMBER, channel="voice", locale="es")
    st = site.wait(job, timeout=15)
    assert st["status"] == "sent" and st["provider"] == "twilio_voice", st
    assert st["provider_ref"].startswith("CA") and st["channel"] == "voice"
    [call] = calls(mock)
    # Spanish, digit by digit, three times, with a pause between.
    says = [s for s in call["spoken"] if s.get("text")]
    assert len(says) == 3 and {s["language"] for s in says} == {"es-ES"}
    code = spoken_code(call)
    assert re.search(r"(\d, ){5}\d", says[0]["text"]), says[0]["text"]
    assert call["form"]["From"] == "+15005550006" and call["form"]["Timeout"] == "30"
    assert site.verify(NUMBER, code).ok
    # Polling reports the call completed: delivered.
    st = site.wait(job, final={"delivered"}, timeout=15)
    assert st["provider_status"] == "completed"
    assert code not in otpd.stderr and NUMBER not in otpd.stderr


def test_busy_call_is_undelivered_with_a_reason(otpd_factory, mock, redis_server):
    mock.rule(op="call", provider="twilio", behaviour="busy")
    otpd_factory(twilio_env(mock, **FAST))
    site = client_for(redis_server)
    job = site.send(NUMBER, channel="voice")
    st = site.wait(job, final={"undelivered", "delivered", "failed"}, timeout=15)
    assert (st["status"], st["error_code"]) == ("undelivered", "busy"), st
    assert "busy" in st["error"]


def test_undelivered_sms_is_followed_by_a_call_with_the_same_code(otpd_factory, mock,
                                                                   redis_server, r):
    # The SMS is accepted, then reported undelivered by polling: the call goes at once,
    # without waiting for the delay.
    mock.ctl("config", {"twilio_message_status": "undelivered"})
    otpd_factory(twilio_env(mock, **dict(FAST, OTPD_FALLBACK_DELAY_S="600")))
    site = client_for(redis_server)
    t0 = time.monotonic()
    job = site.send(NUMBER, fallback=["voice"])
    st = site.wait(job, final={"undelivered"}, timeout=15)
    first = sms_code(mock)
    wait_for(lambda: calls(mock), 15, what="the fallback call")
    took = time.monotonic() - t0
    [call] = calls(mock)
    assert spoken_code(call) == first
    st = site.status(job)
    fb = st["fallback_job"]
    assert st["fallback_result"] == "queued" and st["fallback_channel"] == "voice", st
    second = site.wait(fb, timeout=15)
    assert second["channel"] == "voice" and second["fallback_of"] == job
    assert second["code_source"] == "resent"
    # One code, by two channels: it verifies once.
    assert site.verify(NUMBER, first).ok
    print("\n  SMS %s undelivered -> call %s %.1f s after the request, same code: %s"
          % (job, fb, took, spoken_code(call) == first))
    print("  events of the SMS job: %s" % [(e["status"], e.get("channel")) for e in events(r, job)])
    assert [e["status"] for e in events(r, job)][-1] == "fallback"
    assert len(calls(mock)) == 1  # once


def test_verified_before_the_delay_means_no_call(otpd_factory, mock, redis_server):
    mock.ctl("config", {"twilio_message_status": "sent"})
    otpd_factory(twilio_env(mock, **FAST))
    site = client_for(redis_server)
    job = site.send(NUMBER, fallback=["voice"])
    assert site.wait(job, timeout=15)["status"] == "sent"
    assert site.verify(NUMBER, sms_code(mock)).ok
    wait_for(lambda: site.status(job).get("fallback_result"), 15, what="the fallback's turn")
    assert site.status(job)["fallback_result"] == "verified"
    assert calls(mock) == []
    print("\n  SMS %s sent, code verified before the 5 s delay -> fallback_result %s, calls: %d"
          % (job, site.status(job)["fallback_result"], len(calls(mock))))


def test_not_verified_in_time_calls_once(otpd_factory, mock, redis_server, r):
    """OTPD_FALLBACK: every SMS job is followed by a call if its code is not verified in 5 s."""
    mock.ctl("config", {"twilio_message_status": "delivered"})
    otpd_factory(twilio_env(mock, **dict(FAST, OTPD_FALLBACK="voice")))
    site = client_for(redis_server)
    job = site.send(NUMBER)
    sent = site.wait(job, timeout=15)
    wait_for(lambda: calls(mock), 20, what="the call after the delay")
    [call] = calls(mock)
    assert spoken_code(call) == sms_code(mock)
    st = site.status(job)
    assert int(st["fallback_due_ms"]) - int(sent["sent_ms"]) == 5000
    time.sleep(2)
    assert len(calls(mock)) == 1
    fired = [e for e in events(r, job) if e["status"] == "fallback"]
    assert len(fired) == 1 and int(fired[0]["ts_ms"]) >= int(st["fallback_due_ms"])
    print("\n  SMS %s delivered, not verified: call %s queued at +%.1f s (due +5.0 s), says %r"
          % (job, st["fallback_job"], (int(fired[0]["ts_ms"]) - int(sent["sent_ms"])) / 1000.0,
             [s["text"] for s in call["spoken"] if s.get("text")][0]))


def test_expired_code_means_nothing(otpd_factory, mock, redis_server):
    """The code's life (30 s) ends before the delay (60 s): no call."""
    mock.ctl("config", {"twilio_message_status": "sent"})
    otpd_factory(twilio_env(mock, **dict(FAST, OTPD_FALLBACK_DELAY_S="60")))
    site = client_for(redis_server)
    job = site.send(NUMBER, ttl=30, fallback=["voice"])
    st = site.wait(job, timeout=15)
    assert st["status"] == "sent"
    due = int(st["fallback_due_ms"])
    assert due > int(st["expires_ms"])
    # Make it due now, as if the delay had passed, but after the code's deadline
    # (the script sees the deadline passed; the test does not wait 30 s).
    r = site.redis
    r.hset("otpd:fallback:" + job, "expires_ms", str(int(time.time() * 1000) - 1))
    r.zadd("otpd:fallbacks", {job: 0})
    wait_for(lambda: site.status(job).get("fallback_result"), 15, what="the fallback's turn")
    assert site.status(job)["fallback_result"] == "expired"
    assert calls(mock) == []
    print("\n  SMS %s sent with a 30 s code, fallback due after its deadline -> fallback_result %s,"
          " calls: %d" % (job, site.status(job)["fallback_result"], len(calls(mock))))


def test_email_fallback_delivers_the_numbers_code(otpd_factory, mock, redis_server, r):
    mock.ctl("config", {"twilio_message_status": "undelivered"})
    otpd = otpd_factory(twilio_env(mock, **FAST))
    site = client_for(redis_server)
    job = site.send(NUMBER, fallback=["email"], fallback_email="Alice@Example.com")
    site.wait(job, final={"undelivered"}, timeout=15)
    first = sms_code(mock)
    wait_for(lambda: "otpd console e-mail" in otpd.stdout, 15, what="the fallback e-mail")
    mail = otpd.stdout.split("otpd console e-mail")[-1]
    assert "To: alice@example.com" in mail and first in mail
    # The code is still the number's: it verifies against the number.
    assert site.verify(NUMBER, first).ok


def test_fallback_job_validation(redis_server):
    site = client_for(redis_server)
    import pytest
    with pytest.raises(ValueError):
        site.send(NUMBER, fallback=["email"])  # no address
    with pytest.raises(ValueError):
        site.send(NUMBER, fallback=["sms"])  # its own channel
    with pytest.raises(ValueError):
        site.send(NUMBER, channel="voice", locale="not a tag")


def test_console_voice_without_twilio(otpd_factory, redis_server):
    otpd = otpd_factory({})
    site = client_for(redis_server)
    job = site.send(NUMBER, channel="voice")
    assert site.wait(job)["status"] == "sent"
    out = otpd.stdout.split("otpd console call")[-1]
    digits = re.sub(r"\D", "", out.split("Says:")[1].splitlines()[0])
    assert site.verify(NUMBER, digits).ok
    assert json.loads(json.dumps(site.status(job)))["provider"] == "console_voice"

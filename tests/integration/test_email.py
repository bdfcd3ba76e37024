"""The e-mail channel: jobs with "channel": "email", through the same pipeline,
delivered over SMTP (libcurl) to a real SMTP server on loopback (Debian's
python3-aiosmtpd) with STARTTLS, AUTH and a test CA; or printed by the console
e-mail provider when EMAIL_HOST is not set."""
import email
import email.policy
import json
import re

import pytest

from conftest import HASH_KEY, wait_for
from otpd.client import mac


ADDRESS = "alice.smith@example.com"


def xadd(r, job):
    return r.xadd("otpd:jobs", {"job": json.dumps(job)})


def test_console_email_without_email_host(otpd, client, r):
    """No EMAIL_HOST: e-mail jobs are printed (development), and verify like SMS codes."""
    job = client.send("  Alice.Smith@Example.COM ", channel="email", purpose="password_reset")
    st = client.wait(job)
    assert st["status"] == "sent" and st["provider"] == "console_email", st
    assert st["to"] == "a***h@example.com" and st["channel"] == "email"
    evs = [f for _i, f in r.xrange("otpd:events") if f["id"] == job]
    assert [e["status"] for e in evs] == ["sending", "sent"]
    assert {e["channel"] for e in evs} == {"email"}
    out = otpd.stdout
    assert "otpd console e-mail (development only" in out and "To: " + ADDRESS in out
    code = re.search(r"Your verification code is (\d{6})", out).group(1)
    rec = r.hgetall("otpd:otp:password_reset:" + ADDRESS)
    assert rec["mac"] == mac("password_reset", ADDRESS, code, HASH_KEY)
    assert client.verify("ALICE.SMITH@example.com", code, purpose="password_reset",
                         channel="email").ok
    assert ADDRESS not in otpd.stderr and code not in otpd.stderr


@pytest.mark.parametrize("to, why", [
    ("not-an-address", "not an e-mail address"),
    ("a@b", "not an e-mail address"),
    ("a..b@example.com", "not an e-mail address"),
    ("x" * 250 + "@example.com", "not an e-mail address"),
    ("+14155552671", "not an e-mail address"),
])
def test_bad_addresses_are_dead_letters(otpd, r, to, why):
    xadd(r, {"id": "bad-mail", "to": to, "channel": "email"})
    wait_for(lambda: r.xlen("otpd:dead") == 1, 10, what="a dead letter")
    [(_id, dead)] = r.xrange("otpd:dead")
    assert why in dead["reason"]
    assert r.hget("otpd:job:bad-mail", "status") == "rejected"
    otpd.assert_alive()


def test_unknown_channel_rejected(otpd, r):
    xadd(r, {"id": "fax-1", "to": "+14155552671", "channel": "fax"})
    wait_for(lambda: r.hget("otpd:job:fax-1", "status") == "rejected", 10)
    assert "field channel" in r.hget("otpd:job:fax-1", "error")


# --- a real SMTP server on loopback: STARTTLS required, AUTH, the test CA ------

import asyncio  # noqa: E402
import ssl  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

from aiosmtpd.controller import Controller  # noqa: E402
from aiosmtpd.smtp import AuthResult, LoginPassword  # noqa: E402

from conftest import free_port  # noqa: E402

import testca  # noqa: E402

USER, PASSWORD = "otpd@example.com", "smtp-pass-0123456789"


class Mailbox:
    """What the server does per recipient, and what it received."""

    def __init__(self):
        self.messages = []  # (envelope rcpt list, bytes)
        self.rcpt_rules = {}  # address -> list of replies to give in turn ("" = accept)
        self.delay_s = 0.0
        self.auth_fails = 0
        self.lock = threading.Lock()
        self.sessions = 0
        self.peak = 0
        self.open = 0

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        with self.lock:
            rules = self.rcpt_rules.get(address.lower())
            reply = rules.pop(0) if rules else ""
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        with self.lock:
            self.sessions += 1
        session.host_name = hostname
        return responses

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.open += 1
            self.peak = max(self.peak, self.open)
        try:
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            with self.lock:
                self.messages.append((list(envelope.rcpt_tos), envelope.original_content))
        finally:
            with self.lock:
                self.open -= 1
        return "250 Message accepted"

    def parsed(self, i=-1):
        return email.message_from_bytes(self.messages[i][1], policy=email.policy.default)


def authenticator(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and auth_data.login.decode() == USER and \
        auth_data.password.decode() == PASSWORD
    # handled=False: the server answers 535 itself (aiosmtpd's default is to say nothing).
    return AuthResult(success=ok, handled=False)


@pytest.fixture
def smtp(tmp_path):
    ca = testca.make_ca(tmp_path / "smtpca")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(ca["server_cert"], ca["server_key"])
    box = Mailbox()
    port = free_port()
    ctl = Controller(box, hostname="127.0.0.1", port=port, tls_context=ctx,
                     require_starttls=True, authenticator=authenticator, auth_required=True,
                     auth_require_tls=True, server_hostname="mail.example.com")
    ctl.start()
    box.port, box.ca = port, ca
    yield box
    ctl.stop()


def smtp_env(box, **extra):
    env = {"EMAIL_HOST": "127.0.0.1", "EMAIL_PORT": str(box.port), "EMAIL_USE_TLS": "True",
           "EMAIL_HOST_USER": USER, "EMAIL_HOST_PASSWORD": PASSWORD,
           "DEFAULT_FROM_EMAIL": "Example Site <no-reply@example.com>",
           "OTPD_CA_FILE": box.ca["ca_cert"], "OTPD_LOG_LEVEL": "info"}
    env.update(extra)
    return env


def test_smtp_message_as_received(otpd_factory, smtp, client, r):
    """STARTTLS, AUTH, and a message people and filters accept: multipart/alternative,
    UTF-8 subject in RFC 2047, Date, Message-ID on the sender's domain, Auto-Submitted."""
    d = otpd_factory(smtp_env(smtp, OTPD_EMAIL_SUBJECT="Ihr Bestätigungscode: {code}"))
    job = client.send(ADDRESS, channel="email")
    st = client.wait(job, timeout=15)
    assert st["status"] == "sent" and st["provider"] == "smtp", st
    [(rcpts, raw)] = smtp.messages
    assert rcpts == [ADDRESS]
    msg = smtp.parsed()
    assert msg["From"] == "Example Site <no-reply@example.com>"
    assert msg["To"].addresses[0].addr_spec == ADDRESS
    assert msg["Auto-Submitted"] == "auto-generated" and msg["Date"]
    assert re.fullmatch(r"<[0-9a-f]{32}\.otpd@example\.com>", msg["Message-ID"])
    assert st["provider_ref"] == msg["Message-ID"]
    assert b"=?UTF-8?B?" in raw  # the subject is encoded, and decodes back
    code = re.search(r"(\d{6})$", str(msg["Subject"])).group(1)
    assert str(msg["Subject"]) == "Ihr Bestätigungscode: " + code
    alt = next(p for p in msg.walk() if p.get_content_type() == "multipart/alternative")
    text, html = [p for p in alt.iter_parts()]
    assert text.get_content_type() == "text/plain" and html.get_content_type() == "text/html"
    assert text.get_content_charset() == "utf-8"
    assert "Your verification code is %s." % code in text.get_content()
    assert code in html.get_content()
    assert r.hget("otpd:otp:login:" + ADDRESS, "mac") == mac("login", ADDRESS, code, HASH_KEY)
    assert client.verify(ADDRESS, code, channel="email").ok
    for secret in (code, PASSWORD, ADDRESS):
        assert secret not in d.stderr
    head = raw.decode().split("\r\n\r\n")[0]
    print("\nreceived message (code replaced by XXXXXX):\n%s\n\n[text part, %s]\n%s"
          % (head.replace(code, "XXXXXX"), text["Content-Type"],
             text.get_content().replace(code, "XXXXXX")))


def test_smtp_550_fails_and_451_is_retried(otpd_factory, smtp, client):
    otpd_factory(smtp_env(smtp, OTPD_RETRY_BASE_MS="200", OTPD_RETRY_MAX_MS="400"))
    smtp.rcpt_rules["nobody@example.com"] = ["550 5.1.1 No such user"]
    smtp.rcpt_rules["grey@example.com"] = ["451 4.7.1 Greylisted, try again"]
    bad = client.send("nobody@example.com", channel="email")
    grey = client.send("grey@example.com", channel="email")
    st = client.wait(bad, timeout=15)
    assert st["status"] == "failed" and st["error_code"] == "smtp_550", st
    assert "does not exist" in st["error"]
    st = client.wait(grey, timeout=15)
    assert st["status"] == "sent" and int(st["attempts"]) == 2, st


def test_smtp_535_opens_the_circuit(otpd_factory, smtp, client):
    d = otpd_factory(smtp_env(smtp, EMAIL_HOST_PASSWORD="wrong-password-000"))
    job = client.send(ADDRESS, channel="email")
    wait_for(lambda: "EMAIL_HOST_PASSWORD" in d.stderr, 15, what="the login hint")
    wait_for(lambda: client.status(job).get("status") == "retrying", 10)
    st = client.status(job)
    assert st["error_code"] == "smtp_535" and "EMAIL_HOST_USER" in st["error"], st
    assert "provider smtp: circuit open: the mail server refused the login (535)" in d.stderr
    assert smtp.messages == []
    assert "wrong-password-000" not in d.stderr


def test_smtp_wrong_ca_sends_nothing(otpd_factory, smtp, client):
    d = otpd_factory(smtp_env(smtp, OTPD_CA_FILE=smtp.ca["wrong_ca_cert"]))
    client.send(ADDRESS, channel="email")
    wait_for(lambda: "not trusted" in d.stderr, 15, what="the certificate refused")
    assert smtp.messages == []


def test_smtp_200_at_once_over_a_capped_pool(otpd_factory, smtp, client):
    """200 e-mails at once with OTPD_EMAIL_MAX_INFLIGHT=8: all sent, over at most 8
    connections that are reused (two EHLOs each: before and after STARTTLS)."""
    smtp.delay_s = 0.005
    d = otpd_factory(smtp_env(smtp, OTPD_EMAIL_MAX_INFLIGHT="8", OTPD_LOG_LEVEL="notice"))
    jobs = [client.send("user%03d@example.com" % i, channel="email", id="m%03d" % i)
            for i in range(200)]
    t0 = time.monotonic()
    for j in jobs:
        assert client.wait(j, timeout=60)["status"] == "sent"
    took = time.monotonic() - t0
    assert len(smtp.messages) == 200
    print("\n200 e-mails, cap 8: %.2f s, at most %d in the server's DATA phase at once, "
          "%d EHLOs" % (took, smtp.peak, smtp.sessions))
    assert smtp.peak <= 8
    assert smtp.sessions <= 2 * 8  # connections reused across messages
    assert not re.search(r"user\d{3}@example\.com", d.stderr)


def test_smtp_slow_server_times_out_and_is_retried(otpd_factory, smtp, client):
    """A server slower than EMAIL_TIMEOUT: the attempt ends, the job is retried within
    the code's lifetime, and goes out once the server answers in time."""
    smtp.delay_s = 2.5
    d = otpd_factory(smtp_env(smtp, EMAIL_TIMEOUT="1", OTPD_RETRY_BASE_MS="300",
                              OTPD_RETRY_MAX_MS="500"))
    job = client.send(ADDRESS, channel="email")
    wait_for(lambda: "Timeout was reached" in d.stderr, 10, what="the attempt to time out")
    smtp.delay_s = 0
    st = client.wait(job, timeout=20)
    assert st["status"] == "sent" and int(st["attempts"]) >= 2, st
    # The same code in every copy the server took: a retry never makes a new one.
    codes = {re.search(r"code is (\d{6})", m[1].decode().replace("=\r\n", "")).group(1)
             for m in smtp.messages}
    assert len(codes) == 1


def test_channel_in_the_metrics(otpd_factory, client):
    import urllib.request
    port = free_port()
    otpd_factory({"OTPD_METRICS_ADDR": "127.0.0.1:%d" % port})
    assert client.wait(client.send(ADDRESS, channel="email"))["status"] == "sent"
    assert client.wait(client.send("+14155552671"))["status"] == "sent"
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5) as f:
        text = f.read().decode()
    assert 'otpd_channel_jobs_total{channel="email",outcome="sent"} 1' in text
    assert 'otpd_channel_jobs_total{channel="sms",outcome="sent"} 1' in text


def test_check_config_redacts_the_smtp_password_and_requires_tls():
    import os
    import subprocess
    from conftest import otpd_binary
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTPD_", "EMAIL_"))}
    env.update({"OTPD_HASH_KEY": HASH_KEY, "EMAIL_HOST": "smtp.example.com", "EMAIL_PORT": "587",
                "EMAIL_USE_TLS": "True", "EMAIL_HOST_USER": USER,
                "EMAIL_HOST_PASSWORD": PASSWORD})
    out = subprocess.run([otpd_binary(), "--check-config"], env=env, capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "EMAIL_HOST_PASSWORD=(set, redacted)" in out.stdout and PASSWORD not in out.stdout
    assert "EMAIL_USE_TLS=True" in out.stdout
    env["EMAIL_USE_TLS"] = "False"
    out = subprocess.run([otpd_binary(), "--check-config"], env=env, capture_output=True,
                         text=True, timeout=30)
    assert out.returncode != 0 and "otpd sends codes only over TLS" in out.stderr

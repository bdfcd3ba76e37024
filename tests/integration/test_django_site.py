"""The example Django site (examples/django_site) end to end.

Django's test client plays the browser, the real otpd daemon sends through
Twilio's API to the HTTPS mock, and the code is read from the request the
mock recorded, exactly as the phone would receive it.  Django is set up once
for the module (settings module, temporary SQLite file, migrations); each
test gets its own redis-server, daemon and demo user.
"""
import io
import os
import re
import sys
from types import SimpleNamespace

import pytest

from conftest import HASH_KEY, ROOT, wait_for
from test_providers import twilio_env

try:
    import django
except ImportError:  # pragma: no cover
    pytest.fail("python3-django is not installed (apt-get install python3-django)",
                pytrace=False)

SITE = os.path.join(ROOT, "examples", "django_site")
PHONE = "+14155552671"        # the demo user's (createdemo)
STRANGER = "+14155550123"     # no account
OLD_PW = "old-Passw0rd-for-demo"
NEW_PW = "brand-new-Passw0rd-42"
FAST_HASHER = ["django.contrib.auth.hashers.MD5PasswordHasher"]
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:django")
JOB_URL = re.compile(r"^/forgot-password/sent/(password_reset-[0-9a-f]{16})/$")


@pytest.fixture(scope="module")
def django_site(tmp_path_factory):
    for p in (os.path.join(ROOT, "python"), SITE):
        if p not in sys.path:
            sys.path.insert(0, p)
    from django.apps import apps
    from django.core.management import call_command
    from django.test.utils import setup_test_environment, teardown_test_environment

    # The settings module reads these once, at import; put back what was
    # there so the other test modules see an untouched environment.
    env = {"DJANGO_SETTINGS_MODULE": "site_project.settings", "OTPD_HASH_KEY": HASH_KEY,
           "DJANGO_DB": str(tmp_path_factory.mktemp("django") / "db.sqlite3"),
           "REDIS_URL": "redis://127.0.0.1:1/0"}  # each test overrides OTPD_REDIS_URL
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        if not apps.ready:
            django.setup()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    setup_test_environment()  # allows the "testserver" host, records templates
    call_command("migrate", verbosity=0)
    yield
    teardown_test_environment()




@pytest.fixture
def site(django_site, redis_server, r, otpd_factory, mock):
    from django.core.management import call_command
    from django.test import Client, override_settings
    with override_settings(OTPD_REDIS_URL=redis_server.url, PASSWORD_HASHERS=FAST_HASHER):
        otpd = otpd_factory(twilio_env(mock))
        call_command("createdemo", "--password", OLD_PW, stdout=io.StringIO())
        try:
            yield SimpleNamespace(browser=Client(), otpd=otpd, mock=mock, r=r)
        finally:
            call_command("flush", interactive=False, verbosity=0)


def ask_code(browser, phone=PHONE):
    resp = browser.post("/forgot-password/", {"method": "sms", "phone": phone})
    assert resp.status_code == 302, resp.content.decode()
    m = JOB_URL.match(resp["Location"])
    assert m, resp["Location"]
    return m.group(1)


def final_status(browser, job, timeout=15):
    def final():
        resp = browser.get("/forgot-password/status/%s.json" % job)
        assert resp.status_code == 200 and resp["Content-Type"] == "application/json"
        st = resp.json()
        return st if st["final"] else None
    return wait_for(final, timeout, interval=0.05, what="job %s to finish" % job)


def sms_code(mock, to=PHONE):
    """The code in the last SMS the mock accepted for `to`."""
    sent = [q for q in mock.requests("twilio")
            if q["method"] == "POST" and (q.get("form") or {}).get("To") == to]
    assert sent, "no SMS was sent to %s" % to
    return re.search(r"\b(\d{6})\b", sent[-1]["form"]["Body"]).group(1)


def verify(browser, code):
    return browser.post("/forgot-password/verify/", {"code": code})


def text(resp):
    return resp.content.decode()


def test_full_flow_changes_the_password(site):
    from django.contrib.auth import authenticate
    b = site.browser
    form = b.get("/forgot-password/")
    assert form.status_code == 200 and 'name="phone"' in text(form) and 'value="sms"' in text(form)
    job = ask_code(b, "+1 415 555-2671")  # typed with spaces; normalised to E.164
    page = b.get("/forgot-password/sent/%s/" % job)
    assert page.status_code == 200
    assert "+1415*****71" in text(page) and PHONE not in text(page)
    assert "/forgot-password/status/%s.json" % job in text(page)
    assert final_status(b, job)["status"] == "sent"

    # Without a right code there is no way to the new-password page.
    assert b.get("/forgot-password/new-password/")["Location"] == "/forgot-password/"
    resp = verify(b, sms_code(site.mock))
    assert resp.status_code == 302 and resp["Location"] == "/forgot-password/new-password/"
    assert b.get("/forgot-password/new-password/").status_code == 200
    resp = b.post("/forgot-password/new-password/",
                  {"new_password1": NEW_PW, "new_password2": NEW_PW})
    assert resp.status_code == 302 and resp["Location"] == "/forgot-password/done/"
    assert "Password changed" in text(b.get("/forgot-password/done/"))

    # The permission to reset was used up with the change.
    assert b.get("/forgot-password/new-password/")["Location"] == "/forgot-password/"
    assert authenticate(username="demo", password=OLD_PW) is None
    login = b.post("/login/", {"username": "demo", "password": NEW_PW})
    assert login.status_code == 302 and login["Location"] == "/"
    assert "logged in as <strong>demo</strong>" in text(b.get("/"))


def test_email_method_changes_the_password(site):
    """The guide's other method: the code by e-mail (printed by the daemon's console
    e-mail provider, as no EMAIL_HOST is set here), then the same steps."""
    from django.contrib.auth import authenticate
    b = site.browser
    form = text(b.get("/forgot-password/"))
    assert 'name="email"' in form and 'value="email"' in form
    resp = b.post("/forgot-password/", {"method": "email", "email": " Demo@Example.COM "})
    assert resp.status_code == 302, text(resp)
    job = JOB_URL.match(resp["Location"]).group(1)
    page = text(b.get("/forgot-password/sent/%s/" % job))
    assert "d***o@example.com" in page and "demo@example.com" not in page
    assert final_status(b, job)["status"] == "sent"
    assert site.r.hget("otpd:job:" + job, "channel") == "email"
    code = re.search(r"Your verification code is (\d{6})", site.otpd.stdout).group(1)
    assert verify(b, code)["Location"] == "/forgot-password/new-password/"
    b.post("/forgot-password/new-password/", {"new_password1": NEW_PW, "new_password2": NEW_PW})
    assert authenticate(username="demo", password=NEW_PW) is not None


def test_email_method_needs_an_address_and_hides_strangers(site):
    b = site.browser
    resp = b.post("/forgot-password/", {"method": "email", "email": ""})
    assert resp.status_code == 200 and "Enter your e-mail address." in text(resp)
    resp = b.post("/forgot-password/", {"method": "email", "email": "nobody@example.com"})
    assert resp.status_code == 302  # the same answer as for an account
    assert "nobody@example.com" not in site.otpd.stdout  # but nothing was sent


def test_status_json_reflects_sent_and_belongs_to_the_session(site):
    from django.test import Client
    b = site.browser
    job = ask_code(b)
    st = final_status(b, job)
    assert st == {"id": job, "status": "sent", "final": True, "error": "", "error_code": "",
                  "to": "+1415*****71", "attempts": 1, "retry_after": None,
                  "label": "Sent. Check your phone."}
    assert site.r.hget("otpd:job:" + job, "status") == "sent"
    # Another browser cannot watch this job, nor open its page.
    other = Client()
    assert other.get("/forgot-password/status/%s.json" % job).status_code == 404
    assert other.get("/forgot-password/sent/%s/" % job)["Location"] == "/forgot-password/"
    # Once sent, the page renders the final status and does not need to poll.
    page = text(b.get("/forgot-password/sent/%s/" % job))
    assert "Sent. Check your phone." in page and 'data-final="1"' in page


def test_wrong_codes_count_down_then_lock(site):
    b = site.browser
    job = ask_code(b)
    assert final_status(b, job)["status"] == "sent"
    code = sms_code(site.mock)
    wrong = "%06d" % ((int(code) + 1) % 1000000)
    resp = verify(b, "12ab")  # not a code: no attempt used
    assert "Enter the digits from the SMS." in text(resp)
    for left in (4, 3, 2):
        assert "Wrong code, %d attempts left." % left in text(verify(b, wrong))
    assert "Wrong code, 1 attempt left." in text(verify(b, wrong))
    resp = verify(b, wrong)
    assert "Too many wrong codes, request a new one." in text(resp)
    assert 'href="/forgot-password/"' in text(resp)
    # Locked means locked, even for the right code.
    assert "Too many wrong codes, request a new one." in text(verify(b, code))
    assert b.get("/forgot-password/new-password/")["Location"] == "/forgot-password/"

    # A new code unlocks; once its record is gone (TTL) it reads as expired.
    job2 = ask_code(b)
    assert job2 != job and final_status(b, job2)["status"] == "sent"
    site.r.delete("otpd:otp:password_reset:" + PHONE)
    assert "This code has expired, request a new one." in text(verify(b, sms_code(site.mock)))


def test_unknown_phone_gets_the_same_answers_and_nothing_is_sent(site):
    b = site.browser
    bad = b.post("/forgot-password/", {"method": "sms", "phone": "4155550123"})
    assert bad.status_code == 200 and "international format" in text(bad)

    job = ask_code(b, STRANGER)
    page = text(b.get("/forgot-password/sent/%s/" % job))
    assert "If an account uses +1415*****23, we are sending it a code by SMS." in page
    st = final_status(b, job)
    assert st == {"id": job, "status": "sent", "final": True, "error": "", "error_code": "",
                  "to": "+1415*****23", "attempts": 1, "retry_after": None,
                  "label": "Sent. Check your phone."}
    assert "Wrong code, 4 attempts left." in text(verify(b, "123456"))
    for _ in range(3):
        verify(b, "123456")
    assert "Too many wrong codes, request a new one." in text(verify(b, "123456"))

    # Nothing was enqueued: no status record, no code, no event, no SMS.
    assert site.r.keys("otpd:job:*") == [] and site.r.keys("otpd:otp:*") == []
    assert site.r.xlen("otpd:jobs") == 0 and site.r.xlen("otpd:events") == 0
    assert site.mock.requests("twilio") == []


def test_twilio_trial_failure_shows_the_hint(site):
    site.mock.rule(to=PHONE, provider="twilio", behaviour="unverified_trial")
    b = site.browser
    job = ask_code(b)
    st = final_status(b, job)
    assert st["status"] == "failed" and st["error_code"] == "21608"
    assert "verify this number" in st["error"] and st["label"] == "Sending failed."
    page = text(b.get("/forgot-password/sent/%s/" % job))
    assert "Sending failed." in page and "trial account: verify this number" in page
    # The daemon burned the code that could not arrive.
    assert "This code has expired, request a new one." in text(verify(b, "123456"))


def test_rate_limit_feedback(site, monkeypatch):
    """A job the daemon refused over a limit (its record as the daemon writes
    it, retry_at_ms) and the client's RateLimited both reach the user with
    the wait; RateLimited is recognised by its class, not by its name."""
    import time
    from otpd import RateLimited
    from otpd.django import OTPRateLimited, get_client, otp_status, send_otp
    b = site.browser
    job = ask_code(b)
    final_status(b, job)
    site.r.hset("otpd:job:" + job, mapping={
        "status": "rate_limited", "error_code": "interval",
        "retry_at_ms": str(int(time.time() * 1000) + 29500)})
    st = otp_status(job)
    assert st["status"] == "rate_limited" and st["final"] and st["retry_after"] == 30
    page = text(b.get("/forgot-password/sent/%s/" % job))
    assert "Too many codes were requested. Try again in 30 seconds." in page
    assert final_status(b, job)["label"] == \
        "Too many codes were requested. Try again in 30 seconds."

    def refuse(*a, **kw):
        raise RateLimited("interval", 12.2)
    monkeypatch.setattr(get_client(), "send", refuse)
    with pytest.raises(OTPRateLimited) as ei:
        send_otp(PHONE, "password_reset")
    assert ei.value.retry_after == 13 and isinstance(ei.value.__cause__, RateLimited)
    resp = b.post("/forgot-password/", {"method": "sms", "phone": PHONE})
    assert resp.status_code == 429 and "Try again in 13 seconds." in text(resp)
    assert 'id="forgot-password-errors"' in text(resp)

    # An exception that only shares the name is not otpd's: a bug, not a refusal.
    Impostor = type("RateLimited", (Exception,), {"__module__": "otpd.client"})

    def impostor(*a, **kw):
        e = Impostor("slow down")
        e.retry_after = 12.2
        raise e
    monkeypatch.setattr(get_client(), "send", impostor)
    with pytest.raises(Impostor):
        send_otp(PHONE, "password_reset")


def test_helpers_and_system_check(site):
    from django.core import checks
    from django.test import override_settings
    from otpd.django import OTPError, OTPInvalidInput, send_otp, verify_otp
    with pytest.raises(OTPInvalidInput) as ei:
        send_otp("0044 20 7946 0000", "password_reset")
    assert ei.value.field == "phone" and "E.164" in ei.value.detail
    assert "0044" not in str(ei.value) and str(ei.value) == ei.value.message
    with pytest.raises(OTPError) as ei:
        verify_otp(PHONE, "123456", "Password Reset")
    assert isinstance(ei.value, OTPInvalidInput) and ei.value.field is None
    assert "purpose" in ei.value.detail and isinstance(ei.value.__cause__, ValueError)
    assert verify_otp(PHONE, "123456", "password_reset").status == "expired"

    def otpd_errors():
        return [e.id for e in checks.run_checks() if e.id.startswith("otpd.")]
    assert otpd_errors() == []
    with override_settings(OTPD_HASH_KEY=None):
        assert otpd_errors() == ["otpd.E001"]
    with override_settings(OTPD_HASH_KEY=HASH_KEY + "\n"):
        assert otpd_errors() == ["otpd.E002"]
    with override_settings(OTPD_HASH_KEY="zz" * 32):
        assert otpd_errors() == ["otpd.E002"]

"""The example Django site in a real browser: headless Chromium through
chromium-driver and selenium (browser.py), against the site served by
Django's live server thread, the real Redis and the real otpd daemon, which
sends through Twilio's API to the HTTPS mock and takes the mock's signed
status callback on its webhook (OTPD_METRICS_ADDR, TWILIO_STATUS_CALLBACK).

One browser and one live server for the module; each test gets its own
redis-server, daemon and demo user (as test_django_site.py).  Every step is
timed and ends with a screenshot; the module prints the table and the
directory at the end (run with -s to see it): tmp_path_factory's "browser"
directory, or $OTPD_TEST_ARTIFACTS.  Every test skips, with the reason, when
chromium, chromium-driver or selenium is missing or Chromium cannot start.
"""
import io
import os
import re
import time
from types import SimpleNamespace

import pytest

from browser import Browser, BrowserUnavailable, why_not
from conftest import free_port, wait_for
from test_django_site import FAST_HASHER, JOB_URL, PHONE, django_site, sms_code  # noqa: F401
from test_receipts import PUBLIC, callback
from test_providers import twilio_env

OLD_PW = "old-Passw0rd-for-demo"
NEW_PW = "brand-new-Passw0rd-42"
LOCAL_PHONE = "+1 415 555-2671"   # PHONE as a person types it
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


# --- the browser, the server, the per-test site ----------------------------

@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    d = os.environ.get("OTPD_TEST_ARTIFACTS")
    if d:
        d = os.path.abspath(d)
        os.makedirs(d, exist_ok=True)
        return d
    return str(tmp_path_factory.mktemp("browser"))


@pytest.fixture(scope="module")
def browser(artifacts):
    reason = why_not()
    if reason:
        print("\nbrowser tests skipped: " + reason)
        pytest.skip(reason)
    b = Browser(artifacts)
    try:
        b.start()
    except BrowserUnavailable as e:
        b.quit()
        print("\nbrowser tests skipped: %s" % e)
        pytest.skip(str(e))
    try:
        yield b
    finally:
        b.quit()
        table = b.table()
        with open(os.path.join(artifacts, "steps.txt"), "w") as f:
            f.write(table + "\n")
        print("\n\nbrowser steps (Chromium %s):\n%s\nscreenshots: %s\n"
              % (b.version, table, artifacts))
        left = b.leftover_pids()
        assert not left, "chromium processes left behind: %s" % left


@pytest.fixture(scope="module")
def live_server(django_site):
    """The example site on 127.0.0.1:<free port>, in a thread of this process
    (Django's LiveServerThread, as LiveServerTestCase runs it), so that the
    tests' override_settings (the Redis of each test) apply to it too."""
    from django.conf import settings
    from django.test.testcases import LiveServerThread
    from django.test.utils import override_settings
    over = override_settings(ALLOWED_HOSTS=[*settings.ALLOWED_HOSTS, "127.0.0.1"],
                             PASSWORD_HASHERS=FAST_HASHER)
    over.enable()
    thread = LiveServerThread("127.0.0.1", lambda app: app)  # no static files to serve
    thread.daemon = True
    thread.start()
    thread.is_ready.wait(10)
    try:
        if thread.error:
            raise thread.error
        yield "http://127.0.0.1:%d" % thread.port
    finally:
        thread.terminate()
        over.disable()


@pytest.fixture
def daemon_env():
    return {}


@pytest.fixture
def site(request, browser, live_server, redis_server, r, otpd_factory, mock, daemon_env):
    from django.core.management import call_command
    from django.test import override_settings
    hook = free_port()
    env = twilio_env(mock, OTPD_METRICS_ADDR="127.0.0.1:%d" % hook,
                     TWILIO_STATUS_CALLBACK=PUBLIC)
    env.update(daemon_env)
    browser.base_url = live_server
    browser.test = request.node.name[len("test_"):]
    browser.driver.execute_cdp_cmd("Network.clearBrowserCookies", {})
    with override_settings(OTPD_REDIS_URL=redis_server.url):
        otpd = otpd_factory(env)
        call_command("createdemo", "--password", OLD_PW, stdout=io.StringIO())
        try:
            yield SimpleNamespace(b=browser, otpd=otpd, mock=mock, r=r, hook=hook)
        finally:
            browser.driver.get("about:blank")  # the progress page stops polling
            call_command("flush", interactive=False, verbosity=0)


# --- what the tests do on the pages -------------------------------------------

def status_of(b, element_id="sms-status"):
    el = b.find(element_id)
    return el.get_attribute("data-status"), el.get_attribute("data-final"), el.text


def wait_status(b, want, element_id="sms-status", timeout=15):
    """Wait, without reloading, until the page's script shows status `want`."""
    b.wait(lambda d: status_of(b, element_id)[0] == want, timeout,
           "#%s to show %r by itself" % (element_id, want))
    return status_of(b, element_id)


def ask_code(site, phone=LOCAL_PHONE, name="forgot-password"):
    """The forgot-password form with SMS chosen and `phone` typed (submitted by
    the next step, submit())."""
    b = site.b
    with b.step(name):
        b.get("/forgot-password/")
        assert b.find("forgot-password-form").get_attribute("method") == "post"
        assert b.find("id_method_0").get_attribute("value") == "email"
        assert b.find("id_method_1").get_attribute("value") == "sms"
        assert b.present("id_email") and b.present("id_phone")
        assert not b.present("forgot-password-errors")
        b.click("id_method_1")
        b.type("id_phone", phone)
        assert b.find("id_method_1").is_selected()


def submit(b):
    b.click_and_wait("send-code-button")
    b.assert_no_server_error()


def progress_job(b):
    m = JOB_URL.match(b.path())
    assert m, "not on a progress page: %s" % b.driver.current_url
    return m.group(1)


def sent_code(site, name="progress-sent", submit_first=True):
    """(Submit the form, then) on the progress page: wait until it shows
    "sent" by itself; the job id."""
    b = site.b
    with b.step(name):
        if submit_first:
            submit(b)
        job = progress_job(b)
        st, final, label = wait_status(b, "sent")
        assert (final, label) == ("1", "Sent. Check your phone.")
    return job


def enter_code(b, code, button="check-code-button"):
    b.type("id_code", code)
    b.click_and_wait(button)
    b.assert_no_server_error()


def other_code(code):
    return "%06d" % ((int(code) + 1) % 1000000)


def js_errors(b):
    """The SEVERE entries of the browser's log since the last call (reading it
    empties it), but for the 404 of /favicon.ico, which the site has not."""
    return [e for e in b.driver.get_log("browser") if e["level"] == "SEVERE"
            and not (e["source"] == "network" and "/favicon.ico" in e["message"])]


# --- the scenarios --------------------------------------------------------------

def test_forgot_password_by_sms_end_to_end(site):
    b, r, mock = site.b, site.r, site.mock
    # The provider takes 2 s to answer, so the page opens on "sending" and
    # has to follow the job by itself.
    mock.rule(to=PHONE, provider="twilio", behaviour="slow", delay_ms=2000)
    ask_code(site)
    with b.step("progress-sending"):
        submit(b)
        job = progress_job(b)
        assert b.find("sent-to").text == \
            "If an account uses +1415*****71, we are sending it a code by SMS."
        st, final, label = status_of(b)
        assert st in ("queued", "sending") and final == "0", (st, final, label)
        assert not b.find("sms-hint").is_displayed()
    sent_code(site, submit_first=False)

    sid = r.hget("otpd:job:" + job, "provider_ref")
    assert sid and sid.startswith("SM")
    with b.step("progress-delivered"):
        res = callback(mock, site.hook, sid, "delivered")  # signed as Twilio signs it
        assert res["status"] == 200, res
        wait_for(lambda: r.hget("otpd:job:" + job, "status") == "delivered", 5,
                 what="the receipt to reach the job")
        # The page's script keeps asking after "sent": no reload.
        wait_status(b, "delivered", timeout=8)
        assert status_of(b) == ("delivered", "1", "Delivered to your phone.")
        assert "delivered" in b.find("sms-status").get_attribute("class").split()

    code = sms_code(mock)
    with b.step("code-typed"):
        b.type("id_code", code)
    with b.step("new-password"):
        b.click_and_wait("check-code-button")
        assert b.path() == "/forgot-password/new-password/"
        assert b.driver.find_element("tag name", "h1").text == "Choose a new password"
        b.type("id_new_password1", NEW_PW)
        b.type("id_new_password2", NEW_PW)
    with b.step("password-changed"):
        b.click_and_wait(b.driver.find_element("css selector", "form button[type=submit]"))
        assert b.path() == "/forgot-password/done/"
        assert b.driver.find_element("tag name", "h1").text == "Password changed"
    with b.step("login-with-new-password"):
        b.get("/login/")
        b.type("id_username", "demo")
        b.type("id_password", NEW_PW)
    with b.step("logged-in"):
        b.click_and_wait(b.driver.find_element("css selector", "form button[type=submit]"))
        assert b.path() == "/"
        assert "You are logged in as demo." in b.driver.find_element("tag name", "body").text


def test_progress_page_follows_the_receipt_by_itself(site):
    """A receipt that comes after "sent" shows up without a reload (otpd/_poll.html
    keeps asking after "sent", three times slower)."""
    b, r = site.b, site.r
    ask_code(site, name="forgot-password-for-receipt")
    job = sent_code(site, "progress-sent-for-receipt")
    sid = r.hget("otpd:job:" + job, "provider_ref")
    assert callback(site.mock, site.hook, sid, "delivered")["status"] == 200
    wait_for(lambda: r.hget("otpd:job:" + job, "status") == "delivered", 5,
             what="the receipt to reach the job")
    with b.step("progress-delivered-by-itself"):
        wait_status(b, "delivered", timeout=6)


def test_wrong_code_shows_the_error_in_the_form(site):
    b = site.b
    ask_code(site, name="forgot-password-for-wrong-code")
    sent_code(site, "progress-sent-for-wrong-code")
    with b.step("wrong-code-error"):
        enter_code(b, other_code(sms_code(site.mock)))
        assert b.path() == "/forgot-password/verify/"
        assert b.errors("id_code_errors") == ["Wrong code, 4 attempts left."]
        assert not b.present("verify-code-errors") and not b.present("renew-code")
        assert b.find("id_code").get_attribute("aria-invalid") == "true"
        assert status_of(b)[0] == "sent"   # the page still knows its job


def test_too_many_wrong_codes_lock_the_code(site):
    b = site.b
    ask_code(site, name="forgot-password-for-lock")
    sent_code(site, "progress-sent-for-lock")
    code = sms_code(site.mock)
    wrong = other_code(code)
    with b.step("four-wrong-codes"):
        for left in (4, 3, 2, 1):
            enter_code(b, wrong)
            assert b.errors("id_code_errors") == [
                "Wrong code, %d attempt%s left." % (left, "s" if left > 1 else "")]
    with b.step("locked"):
        enter_code(b, wrong)
        assert b.errors("id_code_errors") == ["Too many wrong codes, request a new one."]
        assert b.find("renew-code").get_attribute("href").endswith("/forgot-password/")
    with b.step("locked-even-for-the-right-code"):
        enter_code(b, code)
        assert b.path() == "/forgot-password/verify/"
        assert b.errors("id_code_errors") == ["Too many wrong codes, request a new one."]
    with b.step("renew-code-link"):
        b.click_and_wait("renew-code")
        assert b.path() == "/forgot-password/"
        assert b.present("forgot-password-form")


@pytest.mark.parametrize("daemon_env", [{"OTPD_LIMIT_INTERVAL_S": "30"}])
def test_rate_limited_request_shows_the_wait(site):
    b = site.b
    ask_code(site, name="forgot-password-first-of-two")
    sent_code(site, "progress-sent-first-of-two")
    with b.step("forgot-password-again"):
        b.click_and_wait("request-new-code")
        assert b.path() == "/forgot-password/"
        b.click("id_method_1")
        b.type("id_phone", LOCAL_PHONE)
    with b.step("rate-limited-error"):
        b.click_and_wait("send-code-button")
        b.assert_no_server_error()
        assert b.path() == "/forgot-password/"   # the form again, not a progress page
        [msg] = b.errors("forgot-password-errors")
        m = re.fullmatch(r"Too many codes were requested\. Try again in (\d+) seconds\.", msg)
        assert m, msg
        assert 25 < int(m.group(1)) <= 30
        assert b.find("id_phone").get_attribute("value") == LOCAL_PHONE
    assert site.r.xlen("otpd:jobs") <= 1   # the second was not queued


def test_opted_out_number_shows_the_message(site):
    b, r = site.b, site.r
    r.hset("otpd:optout", PHONE, int(time.time() * 1000))   # protocol.md section 7
    ask_code(site, name="forgot-password-opted-out")
    with b.step("opted-out-error"):
        submit(b)
        assert b.path() == "/forgot-password/"
        [msg] = b.errors("id_phone_errors")
        assert msg.startswith("This phone number has unsubscribed from our text messages."), msg
        assert "+1415" not in msg
        assert not b.present("forgot-password-errors")
        assert b.find("id_phone").get_attribute("aria-invalid") == "true"
    assert r.xlen("otpd:jobs") == 0 and site.mock.requests("twilio") == []


def test_login_with_a_code_flow(site):
    """The reusable flow of otpd.django at /otp/, as the site mounts it.  The
    code field is set up for autofill, and the WebOTP script (otpd/_webotp.html,
    which headless Chromium runs: it has OTPCredential but no SMS) raises no
    JavaScript error, nor does its abort when the form is submitted."""
    b = site.b
    js_errors(b)  # what earlier tests left
    with b.step("otp-send"):
        b.get("/otp/")
        assert b.present("otp-send-form") and b.present("id_email")
        assert b.find("id_channel_0").get_attribute("value") == "sms"
        b.click("id_channel_0")
        b.type("id_phone", LOCAL_PHONE)
    with b.step("otp-progress-sent"):
        b.click_and_wait("otp-send-button")
        assert b.path() == "/otp/progress/" and not b.present("otp-send-errors")
        assert b.find("otp-sent-to").text == "We are sending a code by SMS to +1415*****71."
        st, final, label = wait_status(b, "sent", "otp-status")
        assert (final, label) == ("1", "Sent. Check your phone.")
        assert not b.find("otp-status-errors").is_displayed()
        field = b.find("id_code")
        assert [field.get_attribute(a) for a in ("type", "autocomplete", "inputmode", "pattern")] \
            == ["text", "one-time-code", "numeric", "[0-9]*"]
        assert '"OTPCredential" in window' in b.driver.page_source  # the script is there
        assert js_errors(b) == []
    code = sms_code(site.mock)
    with b.step("otp-wrong-code"):
        enter_code(b, other_code(code), "otp-verify-button")
        assert b.errors("id_code_errors") == ["Wrong code, 4 attempts left."]
        assert not b.present("otp-verify-errors")
    with b.step("otp-logged-in"):
        enter_code(b, code, "otp-verify-button")
        assert b.path() == "/"
        assert "You are logged in as demo." in b.driver.find_element("tag name", "body").text
    assert js_errors(b) == []

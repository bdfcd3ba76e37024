"""otpd.django's reusable flow, its errors and its management commands.

The flow is driven through the example site (examples/django_site), which
mounts it at /otp/ ("log in with a code") and builds its forgot-password
pages on it: Django's test client plays the browser, the real otpd daemon
sends through Twilio's API to the HTTPS mock (e-mail through the console
provider), and codes are read from what the mock received or the daemon
printed.  Django is set up once, as in test_django_site.py (whose module
fixture this file shares); each test gets its own redis-server and daemon.

Every error kind must reach the user as a form error (or the progress
page's error list), never as a 500.
"""
import io
import json
import re
import time
from types import SimpleNamespace

import pytest
import redis

from conftest import HASH_KEY, free_port, wait_for
from test_django_site import FAST_HASHER, PHONE, STRANGER, django_site, sms_code, text  # noqa: F401
from test_providers import twilio_env

EMAIL = "demo@example.com"   # the demo user's (createdemo)
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture
def daemon_env():
    return {}


@pytest.fixture
def flow(django_site, redis_server, r, otpd_factory, mock, daemon_env):
    from django.core.management import call_command
    from django.test import Client, override_settings
    with override_settings(OTPD_REDIS_URL=redis_server.url, PASSWORD_HASHERS=FAST_HASHER):
        otpd = otpd_factory(twilio_env(mock, **daemon_env))
        call_command("createdemo", stdout=io.StringIO())
        try:
            yield SimpleNamespace(browser=Client(), otpd=otpd, mock=mock, r=r,
                                  redis_url=redis_server.url)
        finally:
            call_command("flush", interactive=False, verbosity=0)


def closed_url():
    return "redis://127.0.0.1:%d/0" % free_port()


def progress(browser, url="/otp/progress/", timeout=15):
    """Poll the JSON until final, as the page's script does."""
    def final():
        resp = browser.get(url, {"format": "json"})
        assert resp.status_code == 200, text(resp)
        st = resp.json()
        return st if st["final"] else None
    return wait_for(final, timeout, interval=0.05, what="%s to be final" % url)


def errors(page, list_id):
    """The items of the error list with that id ([] if there is none)."""
    m = re.search(r'<ul class="errorlist" id="%s"[^>]*>(.*?)</ul>' % re.escape(list_id), page,
                  re.S)
    return re.findall(r"<li>(.*?)</li>", m.group(1), re.S) if m else []


def ask(browser, url="/otp/", **data):
    """POST the send form; HTTP_* keywords are request headers."""
    headers = {k: data.pop(k) for k in list(data) if k.startswith("HTTP_")}
    data.setdefault("channel", "sms")
    if data["channel"] == "sms":
        data.setdefault("phone", PHONE)
    return browser.post(url, data, **headers)


# --- the flow end to end ----------------------------------------------------

def test_flow_by_sms_end_to_end(flow):
    from django.contrib.auth import SESSION_KEY
    from otpd.django.signals import otp_sent, otp_verified
    seen = []

    def on(signal):
        def receiver(sender, **kw):
            seen.append((signal, {k: v for k, v in kw.items() if k != "signal"}))
        return receiver
    sent_rx, verified_rx = on("sent"), on("verified")
    otp_sent.connect(sent_rx)
    otp_verified.connect(verified_rx)
    try:
        b = flow.browser
        page = text(b.get("/otp/", {"next": "/?from=otp"}))
        for needle in ('id="otp-send-form"', 'id="id_channel_0"', 'value="sms"', 'id="id_phone"',
                       'type="tel"', 'id="id_email"', 'id="otp-send-button"',
                       'name="next" value="/?from=otp"'):
            assert needle in page, needle
        # An outside `next` is not kept.
        assert 'name="next"' not in text(b.get("/otp/", {"next": "https://evil.example/"}))

        resp = ask(b, phone="+1 (415) 555-2671", next="/?from=otp")
        assert resp.status_code == 302 and resp["Location"] == "/otp/progress/", text(resp)
        assert seen[0][0] == "sent" and seen[0][1]["to"] == PHONE and seen[0][1]["sent"]
        job = seen[0][1]["job_id"]

        page = b.get("/otp/progress/")
        assert page.status_code == 200 and "Accept" in page["Vary"]
        html = text(page)
        assert "+1415*****71" in html and PHONE not in html
        for needle in ('id="otp-status"', 'id="otp-verify-form"', 'id="id_code"',
                       'autocomplete="one-time-code"', 'inputmode="numeric"', 'pattern="[0-9]*"',
                       'id="otp-verify-button"', 'id="otp-restart"', 'id="otp-status-errors"',
                       'data-url="/otp/progress/?format=json"', "<script>", 'type="text"',
                       # otpd/_webotp.html, aimed at the code field
                       '"OTPCredential" in window', 'getElementById("id_code")',
                       "otp: {transport: [\"sms\"]}, signal: ac.signal"):
            assert needle in html, needle
        if 'data-final="0"' in html:  # without JavaScript the page reloads until final
            assert '<noscript><meta http-equiv="refresh" content="2"></noscript>' in html

        # JSON by Accept header or by ?format=json.
        by_accept = b.get("/otp/progress/", HTTP_ACCEPT="application/json")
        assert by_accept["Content-Type"] == "application/json" and "Accept" in by_accept["Vary"]
        assert "no-cache" in by_accept["Cache-Control"]
        st = progress(b)
        assert st == {"id": job, "status": "sent", "final": True, "error": "", "error_code": "",
                      "to": "+1415*****71", "attempts": 1, "retry_after": None,
                      "label": "Sent. Check your phone.", "kind": "", "message": ""}
        html = text(b.get("/otp/progress/"))
        assert 'data-final="1"' in html and "refresh" not in html

        code = sms_code(flow.mock)
        session = json.dumps(dict(b.session.items()))
        assert code not in session and job in session  # the job, never the code

        wrong = "%06d" % ((int(code) + 1) % 1000000)
        resp = b.post("/otp/verify/", {"code": wrong})
        assert resp.status_code == 200
        assert errors(text(resp), "id_code_errors") == ["Wrong code, 4 attempts left."]
        assert 'aria-invalid="true"' in text(resp)
        assert errors(text(b.post("/otp/verify/", {"code": "12ab"})), "id_code_errors") == \
            ["Enter the digits from the SMS."]

        resp = b.post("/otp/verify/", {"code": code[:3] + " " + code[3:]})  # spaces forgiven
        assert resp.status_code == 302 and resp["Location"] == "/?from=otp"
        kind, kw = seen[-1]
        assert kind == "verified" and kw.pop("request").path == "/otp/verify/"
        assert kw == {"to": PHONE, "channel": "sms", "purpose": "login", "job_id": job}
        proof = b.session["otpd_verified:login"]
        assert proof["to"] == PHONE and proof["job_id"] == job
        # The example site's otp_verified receiver logged the owner in.
        assert SESSION_KEY in b.session
        assert "logged in as <strong>demo</strong>" in text(b.get("/"))
        # The request is used up.
        assert b.get("/otp/progress/")["Location"] == "/otp/"
        gone = b.get("/otp/progress/", {"format": "json"})
        assert gone.status_code == 404 and gone.json()["status"] == "unknown"
        assert b.post("/otp/verify/", {"code": code})["Location"] == "/otp/"
    finally:
        otp_sent.disconnect(sent_rx)
        otp_verified.disconnect(verified_rx)


def test_flow_by_email_without_next_goes_to_the_success_url(flow):
    b = flow.browser
    resp = ask(b, channel="email", email=" Demo@Example.COM ")
    assert resp["Location"] == "/otp/progress/", text(resp)
    page = text(b.get("/otp/progress/"))
    assert "We are sending a code by e-mail to d***o@example.com." in page
    assert "OTPCredential" not in page  # no SMS to read a code from
    st = progress(b)
    assert st["status"] == "sent" and st["label"] == "Sent. Check your inbox."
    code = re.search(r"Your verification code is (\d{6})", flow.otpd.stdout).group(1)
    assert errors(text(b.post("/otp/verify/", {"code": "x"})), "id_code_errors") == \
        ["Enter the digits from the e-mail."]
    assert b.post("/otp/verify/", {"code": code})["Location"] == "/"  # OTPD_SUCCESS_URL "home"


def test_flow_decoy_for_a_recipient_without_account(flow):
    """OTPD_RECIPIENT_CHECK turns the stranger down: the same pages and
    answers, and nothing is queued or sent."""
    b = flow.browser
    assert ask(b, phone=STRANGER)["Location"] == "/otp/progress/"
    st = progress(b)
    assert st["status"] == "sent" and st["to"] == "+1415*****23" and st["id"].startswith("login-")
    assert errors(text(b.post("/otp/verify/", {"code": "123456"})), "id_code_errors") == \
        ["Wrong code, 4 attempts left."]
    assert flow.r.xlen("otpd:jobs") == 0 and flow.r.keys("otpd:job:*") == []
    assert flow.mock.requests("twilio") == []


def test_flow_with_one_channel(flow):
    from django.test import override_settings
    b = flow.browser
    with override_settings(OTPD_CHANNELS=("sms",), OTPD_PURPOSE="verify_phone"):
        page = text(b.get("/otp/"))
        assert '<input type="hidden" name="channel" value="sms"' in page
        assert 'id="id_email"' not in page and 'id="id_phone"' in page
        assert ask(b)["Location"] == "/otp/progress/"
        assert progress(b)["status"] == "sent"
        assert flow.r.hget("otpd:job:" + b.session["otpd_pending:verify_phone"]["job"],
                           "purpose") == "verify_phone"
        assert b.post("/otp/verify/", {"code": sms_code(flow.mock)})["Location"] == "/"
        assert b.session["otpd_verified:verify_phone"]["to"] == PHONE
    assert "otpd_verified:login" not in b.session  # another purpose: nobody was logged in


# --- the language, the voice channel, fallback (issue 20) ----------------------

def queued_jobs(r):
    """The jobs in the stream, oldest first (the daemon is stopped: they stay)."""
    return [json.loads(f["job"]) for _id, f in r.xrange("otpd:jobs")]


def test_flow_sends_the_page_language_as_locale(flow):
    """LocaleMiddleware (the example site's) makes the request's language the
    active one, and the flow's send carries it as the job's locale."""
    from django.test import override_settings
    from django.utils import translation
    from otpd.django import OTPManager
    b, r = flow.browser, flow.r
    # The daemon takes the field: the code is sent as usual.
    assert ask(b, HTTP_ACCEPT_LANGUAGE="es").status_code == 302
    assert progress(b)["status"] == "sent"

    flow.otpd.stop()  # from here on the jobs stay in the stream, to be read
    assert ask(b, HTTP_ACCEPT_LANGUAGE="pt-BR,pt;q=0.9,en;q=0.5").status_code == 302
    assert ask(b, channel="email", email=EMAIL, HTTP_ACCEPT_LANGUAGE="zh-hant").status_code == 302
    assert ask(b).status_code == 302  # no Accept-Language: LANGUAGE_CODE's language, "en"
    with override_settings(OTPD_LOCALE_FROM_REQUEST=False):
        assert ask(b, HTTP_ACCEPT_LANGUAGE="es").status_code == 302
    with override_settings(OTPD_SEND_OPTIONS={"locale": "fr-ca"}):  # the site's choice wins
        assert ask(b, HTTP_ACCEPT_LANGUAGE="es").status_code == 302
    with translation.override("de"):  # outside a request: the active language
        OTPManager.send_otp_sms(PHONE)
    jobs = queued_jobs(r)
    assert [(j.get("channel", "sms"), j.get("locale")) for j in jobs] == [
        ("sms", "pt-BR"), ("email", "zh-Hant"), ("sms", "en"), ("sms", None), ("sms", "fr-CA"),
        ("sms", "de")]


def test_flow_offers_a_call_and_fits_the_fallback(flow):
    from django.test import override_settings
    from otpd.django import OTPManager
    b, r = flow.browser, flow.r
    flow.otpd.stop()  # the daemon's voice sending is not what this tests: jobs stay queued
    page = text(b.get("/otp/"))
    assert "Call me with the code" not in page  # the default: SMS and e-mail
    with override_settings(OTPD_CHANNELS=("sms", "voice", "email"),
                           OTPD_SEND_OPTIONS={"fallback": ["voice", "email"]}):
        page = text(b.get("/otp/"))
        assert re.search(r'<input type="radio" name="channel" value="voice"[^>]*id="id_channel_1"',
                         page), page
        assert '<label for="id_channel_1">Call me with the code</label>' in page
        assert ask(b, channel="voice", phone="+1 415 555 2671")["Location"] == "/otp/progress/"
        html = text(b.get("/otp/progress/"))
        assert "We are calling +1415*****71 to read out a code." in html
        assert "OTPCredential" in html  # an SMS may follow the call
        assert errors(text(b.post("/otp/verify/", {"code": "x"})), "id_code_errors") == \
            ["Enter the digits you heard in the call."]
        assert errors(text(ask(b, channel="voice", phone="")), "id_phone_errors") == \
            ["Enter your phone number."]
        assert ask(b).status_code == 302                                   # SMS
        assert ask(b, channel="email", email=EMAIL).status_code == 302     # e-mail
    OTPManager.send_otp_voice(PHONE, locale=None, fallback=["sms"])
    # "email" needs an address the flow does not have; a code has no fallback to its
    # own channel, and an e-mail code none at all.
    assert [(j.get("channel", "sms"), j.get("fallback"), j.get("locale")) for j in
            queued_jobs(r)] == [("voice", None, "en"), ("sms", ["voice"], "en"),
                                ("email", None, "en"), ("voice", ["sms"], None)]
    assert all(j["to"] == (EMAIL if j.get("channel") == "email" else PHONE)
               for j in queued_jobs(r))


def test_page_scripts_carry_the_csp_nonce(django_site):
    """Under a Content-Security-Policy the inline scripts carry its nonce:
    csp_nonce in the context, or django-csp's request.csp_nonce."""
    from django.template.loader import render_to_string
    from django.test import RequestFactory
    request = RequestFactory().get("/otp/progress/")
    for name in ("otpd/_webotp.html", "otpd/_poll.html"):
        assert "<script>" in render_to_string(name, {"code_id": "id_code"})
        assert '<script nonce="n0nce">' in render_to_string(name, {"csp_nonce": "n0nce"})
        request.csp_nonce = "r3q"
        assert '<script nonce="r3q">' in render_to_string(name, {}, request=request)
    assert 'getElementById("id_x\\u0022")' in render_to_string("otpd/_webotp.html",
                                                                 {"code_id": 'id_x"'})


# --- each error kind, as a form error ----------------------------------------

@pytest.mark.parametrize("daemon_env", [{"OTPD_LIMIT_INTERVAL_S": "30"}])
def test_rate_limited_is_a_form_error(flow):
    b = flow.browser
    assert ask(b).status_code == 302
    assert progress(b)["status"] == "sent"
    resp = ask(b)  # the daemon's published limit, checked by the client before queueing
    assert resp.status_code == 429
    [msg] = errors(text(resp), "otp-send-errors")
    wait = int(re.fullmatch(r"Too many codes were requested\. Try again in (\d+) seconds\.",
                            msg).group(1))
    assert 25 < wait <= 30
    assert flow.r.xlen("otpd:jobs") <= 1  # nothing more was queued

    # The example's own page, the same way (another purpose: its first code passes).
    assert ask(b, "/forgot-password/", method="sms").status_code == 302
    resp = ask(b, "/forgot-password/", method="sms")
    assert resp.status_code == 429
    assert errors(text(resp), "forgot-password-errors")[0].startswith(
        "Too many codes were requested. Try again in ")


def test_opted_out_is_a_form_error_not_a_500(flow):
    """The reported bug: a number that replied STOP got HTTP 500."""
    b = flow.browser
    flow.r.hset("otpd:optout", PHONE, int(time.time() * 1000))  # protocol.md section 7
    for url, data in (("/forgot-password/", {"method": "sms"}), ("/otp/", {})):
        resp = ask(b, url, **data)
        assert resp.status_code == 200, (url, text(resp))
        [msg] = errors(text(resp), "id_phone_errors")
        assert msg.startswith("This phone number has unsubscribed from our text messages.")
        assert "+1415" not in msg
    assert flow.r.xlen("otpd:jobs") == 0


def test_stop_reply_from_twilio_shows_on_the_progress_page(flow):
    """Twilio's 21610 during the send: the job fails, the page says why, and
    the number is refused on the form from then on."""
    flow.mock.rule(to=PHONE, provider="twilio", behaviour="opted_out")
    b = flow.browser
    assert ask(b).status_code == 302
    st = progress(b)
    assert st["status"] == "failed" and st["kind"] == "opted_out"
    assert st["error"] == "" and st["error_code"] == ""  # the provider's text stays with otpctl
    assert st["message"].startswith("This phone number has unsubscribed")
    html = text(b.get("/otp/progress/"))
    assert errors(html, "otp-status-errors") == [st["message"]]
    assert flow.r.hexists("otpd:optout", PHONE)
    assert errors(text(ask(b)), "id_phone_errors") == [st["message"]]


@pytest.mark.parametrize("daemon_env", [{"OTPD_ALLOWED_COUNTRIES": "44"}])
def test_country_not_allowed(flow):
    from django.test import override_settings
    b = flow.browser
    # Only the daemon knows: the job fails, and the page says so.
    assert ask(b).status_code == 302
    st = progress(b)
    assert st["status"] == "failed" and st["kind"] == "country_not_allowed"
    assert st["message"].startswith("We cannot send codes to phone numbers in this country.")
    assert errors(text(b.get("/otp/progress/")), "otp-status-errors") == [st["message"]]
    # The example's page also shows the daemon's explanation.
    assert ask(b, "/forgot-password/", method="sms").status_code == 302
    job = b.session["pwreset"]["job"]
    st = progress(b, "/forgot-password/status/%s.json" % job)
    assert st["error_code"] == "country_not_allowed" and st["label"].startswith(
        "We cannot send codes to phone numbers in this country.")

    # With the daemon's OTPD_ALLOWED_COUNTRIES in the site's settings too, the
    # form refuses the number at once and nothing is queued.
    queued = flow.r.xlen("otpd:jobs")
    with override_settings(OTPD_ALLOWED_COUNTRIES="44"):
        for url, data in (("/otp/", {}), ("/forgot-password/", {"method": "sms"})):
            resp = ask(b, url, **data)
            assert resp.status_code == 200
            assert errors(text(resp), "id_phone_errors")[0].startswith(
                "We cannot send codes to phone numbers in this country.")
        # A stranger's number is refused the same way (no decoy for it).
        resp = ask(b, phone=STRANGER)
        assert resp.status_code == 200 and errors(text(resp), "id_phone_errors")
    assert flow.r.xlen("otpd:jobs") == queued


def test_invalid_input(flow):
    from otpd.django import OTPInvalidInput, send_otp, verify_otp
    b = flow.browser
    resp = ask(b, phone="4155550123")
    assert resp.status_code == 200
    assert errors(text(resp), "id_phone_errors") == [
        "Enter the number in international format, e.g. +14155552671."]
    assert 'aria-describedby="id_phone_errors"' in text(resp)
    resp = ask(b, channel="email", email="not-an-address")
    assert errors(text(resp), "id_email_errors") == ["Enter a valid e-mail address."]
    assert errors(text(ask(b, phone="")), "id_phone_errors") == ["Enter your phone number."]
    assert errors(text(ask(b, channel="fax")), "id_channel_errors")
    assert errors(text(ask(b, "/forgot-password/", method="email", email="")),
                  "id_email_errors") == ["Enter your e-mail address."]

    with pytest.raises(OTPInvalidInput) as ei:
        send_otp("+1", "login")
    assert ei.value.field == "phone" and ei.value.about_recipient
    assert ei.value.message == ("Enter a valid mobile number in international format: + and the "
                                "country code, then the number.")
    with pytest.raises(OTPInvalidInput) as ei:
        send_otp(PHONE, "login", ttl=5)  # the site's bad option: not the user's fault
    assert ei.value.field is None and "ttl" in ei.value.detail
    assert isinstance(ei.value.__cause__, ValueError) and "ttl" not in ei.value.message
    with pytest.raises(OTPInvalidInput):
        verify_otp(PHONE, 123456, "login")  # an int would lose leading zeros
    assert isinstance(ei.value, ValueError)  # still a ValueError, as before

    # A number Twilio calls invalid (21211) is told on the progress page.
    flow.mock.rule(to=PHONE, provider="twilio", behaviour="invalid_number")
    assert ask(b).status_code == 302
    st = progress(b)
    assert st["kind"] == "invalid" and "Check it" in st["message"]


def test_redis_unreachable(flow):
    from django.test import override_settings
    b = flow.browser
    with override_settings(OTPD_REDIS_URL=closed_url()):
        for url, data in (("/otp/", {}), ("/forgot-password/", {"method": "sms"})):
            resp = ask(b, url, **data)
            assert resp.status_code == 503, (url, text(resp))
            page = text(resp)
            assert errors(page, "otp-send-errors" if url == "/otp/" else
                          "forgot-password-errors") == [
                "We cannot send codes right now. Please try again in a few minutes."]
            assert "127.0.0.1" not in page and "Connection" not in page

    # Redis goes away while the code is on its way.
    assert ask(b).status_code == 302
    progress(b)
    with override_settings(OTPD_REDIS_URL=closed_url()):
        resp = b.get("/otp/progress/", {"format": "json"})
        assert resp.status_code == 503
        st = resp.json()
        assert st["status"] == "unavailable" and not st["final"] and st["kind"] == "unavailable"
        page = b.get("/otp/progress/")
        assert page.status_code == 503 and st["message"] in text(page)
        resp = b.post("/otp/verify/", {"code": "123456"})
        assert resp.status_code == 503
        assert errors(text(resp), "otp-verify-errors") == [st["message"]]
    # The same request goes on once Redis is back.
    assert b.post("/otp/verify/", {"code": sms_code(flow.mock)})["Location"] == "/"


def test_redis_unreachable_through_sentinels(flow):
    from django.test import override_settings
    from redis.sentinel import MasterNotFoundError
    from otpd.django import OTPServiceUnavailable, send_otp
    with override_settings(OTPD_REDIS_SENTINELS="127.0.0.1:%d" % free_port()):
        with pytest.raises(OTPServiceUnavailable) as ei:
            send_otp(PHONE, "login")
        assert isinstance(ei.value.__cause__, MasterNotFoundError)
        assert "sentinel" in ei.value.detail and "sentinel" not in ei.value.message
        resp = ask(flow.browser)
        assert resp.status_code == 503 and errors(text(resp), "otp-send-errors")


def test_every_client_exception_maps_by_class():
    """translate(): the client's exceptions by class; anything else is a bug
    and is left alone."""
    from django.core.exceptions import ImproperlyConfigured
    from redis.sentinel import MasterNotFoundError
    from otpd import OptedOut, RateLimited, SendRefused
    from otpd.django import errors as E
    cases = [
        (RateLimited("per_hour", 12.2), E.OTPRateLimited),
        (OptedOut(), E.OTPOptedOut),
        (SendRefused("country_not_allowed", "not here"), E.OTPCountryNotAllowed),
        (SendRefused("something_new", "no"), E.OTPSendFailed),
        (redis.exceptions.ConnectionError("refused"), E.OTPServiceUnavailable),
        (redis.exceptions.TimeoutError("slow"), E.OTPServiceUnavailable),
        (redis.exceptions.AuthenticationError("WRONGPASS"), E.OTPServiceUnavailable),
        (MasterNotFoundError("no master"), E.OTPServiceUnavailable),
        (redis.exceptions.NoPermissionError("NOPERM"), E.OTPServiceUnavailable),
        (ImproperlyConfigured("bad key"), E.OTPServiceUnavailable),
        (TimeoutError("job still queued"), E.OTPServiceUnavailable),
        (ValueError("to must be ..."), E.OTPInvalidInput),
        (TypeError("code must be a str"), E.OTPInvalidInput),
    ]
    for exc, cls in cases:
        err = E.translate(exc)
        assert type(err) is cls, (exc, err)
        assert isinstance(err, E.OTPError) and err.message and str(err) == err.message
        assert str(exc) in err.detail or exc.args[0] in err.detail
        assert not re.search(r"\+\d|NOPERM|WRONGPASS|sentinel|per_hour", err.message)
    assert E.translate(RateLimited("interval", 12.2)).retry_after == 13
    assert E.translate(KeyError("x")) is None
    Impostor = type("RateLimited", (Exception,), {"__module__": "otpd.client",
                                                  "retry_after": 5})
    assert E.translate(Impostor()) is None

    # The names of before keep working.
    from otpd.django import OTPError, OTPRateLimited
    from otpd.django.helpers import OTPError as OldError, OTPRateLimited as OldRL
    assert (OldError, OldRL) == (OTPError, OTPRateLimited)
    assert OTPRateLimited(12).retry_after == 12 and "12 seconds" in str(OTPRateLimited(12))
    assert str(OTPRateLimited(None, "wait a bit")) == "wait a bit"
    assert "3 minutes" in OTPRateLimited(150).message and "3 hours" in OTPRateLimited(9000).message

    # And a job's record.
    st = {"status": "failed", "error_code": "21610", "error": "the recipient replied STOP"}
    assert isinstance(E.error_for_status(st), E.OTPOptedOut)
    for code, cls in (("opted_out", E.OTPOptedOut), ("country_not_allowed", E.OTPCountryNotAllowed),
                      ("21408", E.OTPCountryNotAllowed), ("21614", E.OTPInvalidInput),
                      ("suspected_pumping", E.OTPNumberBlocked),
                      ("blocked_prefix", E.OTPNumberBlocked), ("21608", E.OTPSendFailed)):
        assert type(E.error_for_status({"status": "failed", "error_code": code})) is cls
    # A money budget is a limit like the others: try again when it resets.
    spent = E.error_for_status({"status": "rate_limited", "error_code": "spend_budget",
                                "retry_after": 3600})
    assert type(spent) is E.OTPRateLimited and spent.retry_after == 3600
    assert "another way" in E.OTPNumberBlocked().message
    assert E.error_for_status({"status": "rate_limited", "retry_after": 7}).retry_after == 7
    assert E.error_for_status({"status": "undelivered", "error_code": "30003"}).kind == \
        "send_failed"
    assert E.error_for_status({"status": "sent"}) is None


# --- OTPManager -----------------------------------------------------------------

def test_otp_manager(flow):
    from otpd.django import OTPManager, OTPOptedOut
    job = OTPManager.send_otp_sms(PHONE, purpose="password_reset", ttl=120)
    wait_for(lambda: OTPManager.status(job)["final"], 10, what="the SMS")
    assert OTPManager.status(job)["status"] == "sent"
    code = sms_code(flow.mock)
    assert not OTPManager.verify_otp(PHONE, code, purpose="login")  # another purpose
    assert OTPManager.verify_otp(PHONE, code, purpose="password_reset")
    res = OTPManager.verify_otp(PHONE, code, purpose="password_reset")
    assert not res and res.status == "expired"  # used up

    job = OTPManager.send_otp_email("Demo@Example.com")
    wait_for(lambda: OTPManager.status(job)["status"] == "sent", 10, what="the e-mail")
    code = re.search(r"Your verification code is (\d{6})", flow.otpd.stdout).group(1)
    assert OTPManager.verify_otp(EMAIL, code)  # channel from the "@", OTPD_PURPOSE

    with pytest.raises(TypeError):
        OTPManager.send_otp_sms(PHONE, "123456")  # the guide passed its own code
    flow.r.hset("otpd:optout", PHONE, 1)
    with pytest.raises(OTPOptedOut):
        OTPManager.send_otp_sms(PHONE)


# --- management commands ----------------------------------------------------------

def run_command(*args):
    from django.core.management import call_command
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_otpd_check(flow):
    from django.core.management import CommandError
    from django.test import override_settings
    out = run_command("otpd_check")
    assert "otpd_check: all checks passed" in out
    assert re.search(r"^ok\s+redis\s+redis://127\.0\.0\.1:\d+/0 is reachable", out, re.M), out
    assert re.search(r"^ok\s+daemon\s+1 instance\(s\) alive", out, re.M), out
    assert re.search(r"^ok\s+hash key\s+OTPD_HASH_KEY is 64 hex", out, re.M), out

    failures = [
        (dict(OTPD_HASH_KEY=HASH_KEY[:-1]), r"hash key: OTPD_HASH_KEY is 63 characters"),
        (dict(OTPD_REDIS_URL=closed_url()), r"redis: cannot reach redis://127\.0\.0\.1"),
        (dict(OTPD_REDIS_SENTINELS="127.0.0.1:%d" % free_port()),
         r"redis: cannot reach master 'mymaster' via sentinels 127\.0\.0\.1:\d+"),
        (dict(OTPD_ALLOWED_COUNTRIES="1,9"), r"settings: otpd\.E003"),
        (dict(OTPD_PREFIX="elsewhere:"), r"daemon: no otpd instance is alive"),
    ]
    for overrides, message in failures:
        with override_settings(**overrides), pytest.raises(CommandError, match=message):
            run_command("otpd_check")
    flow.otpd.stop()
    with pytest.raises(CommandError, match="no otpd instance is alive"):
        run_command("otpd_check")


def test_otpd_send(flow):
    from django.core.management import CommandError
    out = run_command("otpd_send", PHONE, "--purpose", "password_reset")
    lines = out.splitlines()
    assert re.match(r"job password_reset-[0-9a-f]{16}: password_reset code by sms to "
                    r"\+1415\*\*\*\*\*71", lines[0]), out
    assert re.search(r"\bsent\s+provider twilio\s+provider_ref SM", out) and lines[-1] == "sent"
    assert PHONE not in out
    assert run_command("otpd_send", EMAIL, "--email").splitlines()[-1] == "sent"

    flow.mock.rule(to=PHONE, provider="twilio", behaviour="unverified_trial")
    with pytest.raises(CommandError, match=r"ended failed \(21608\): trial account"):
        run_command("otpd_send", PHONE)
    with pytest.raises(CommandError, match=r"not sent \(invalid\)"):
        run_command("otpd_send", "+1")
    flow.r.hset("otpd:optout", PHONE, 1)
    with pytest.raises(CommandError, match=r"not sent \(opted_out\)"):
        run_command("otpd_send", PHONE)
    flow.otpd.stop()
    with pytest.raises(CommandError, match=r"still queued after 0\.5s; no daemon picked it up"):
        run_command("otpd_send", "+14155550100", "--timeout", "0.5")


@pytest.mark.parametrize("daemon_env", [{"OTPD_ALLOWED_COUNTRIES": "44"}])
def test_otpd_send_country_not_allowed(flow):
    from django.core.management import CommandError
    with pytest.raises(CommandError, match=r"ended failed \(country_not_allowed\): destination "
                                           r"country \+1 is not in OTPD_ALLOWED_COUNTRIES"):
        run_command("otpd_send", PHONE)


def test_system_check_of_the_flow_settings(flow):
    from django.core import checks
    from django.test import override_settings

    def otpd_errors():
        return [e.id for e in checks.run_checks() if e.id.startswith("otpd.")]
    assert otpd_errors() == []
    with override_settings(OTPD_ALLOWED_COUNTRIES="1,44,+91"):
        assert otpd_errors() == []
    with override_settings(OTPD_ALLOWED_COUNTRIES="1,912"):
        assert otpd_errors() == ["otpd.E003"]
    with override_settings(OTPD_CHANNELS=("sms", "fax")):
        assert otpd_errors() == ["otpd.E004"]
    with override_settings(OTPD_CHANNELS=("voice", "sms", "email")):
        assert otpd_errors() == []

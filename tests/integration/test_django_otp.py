"""otpd.django.otp, the django-otp plugin, end to end.

A real redis-server and the real otpd daemon (its console providers print
what the phone or mailbox would receive); on the Django side django-otp's own
login view (django_otp.views.LoginView with OTPAuthenticationForm, and
OTPTokenForm for a user already logged in by password), OTPMiddleware, the
admin and django_otp.admin.OTPAdminSite, driven by Django's test Client.

Django can be set up only once per process, and test_django_site.py sets it
up with the example site's settings, so each test runs its Django part in a
child process: this file run as a script, `python3 test_django_otp.py
SCENARIO JSON`, which configures Django in memory (SQLite :memory:, the
migrations applied), runs the scenario function of that name and prints
"RESULT {json}".  The pytest side owns Redis and the daemon and checks what
the scenario reports against them.
"""
import json
import os
import re
import subprocess
import sys
from types import SimpleNamespace

from conftest import HASH_KEY, ROOT, free_port, wait_for

PHONE = "+14155552671"
UK_PHONE = "+442079460958"     # a London landline: the number check refuses it (fixed_line)
UK_MOBILE = "+447400900958"    # mobile numbers for what is sent: otpd.numbers checks them
STOPPED_PHONE = "+447400900123"
ADDRESS = "alice.smith@example.com"
PASSWORD = "correct-Horse-battery-9"

TOKEN_REQUIRED = "Please enter your OTP token."
INVALID_TOKEN = "Invalid token. Please make sure you have entered it correctly."
LOCKED = "Too many wrong codes. Request a new code."
CHALLENGE_ERROR = "Error generating challenge: "


# --- the pytest side --------------------------------------------------------

def run_django(scenario, redis_server, otpd=None, **params):
    """Run SCENARIO in a child process with its own Django; return its result."""
    args = dict(params, redis_url=redis_server.url,
                otpd_out=otpd.out_path if otpd is not None else None)
    p = subprocess.run(["/usr/bin/python3", os.path.abspath(__file__), scenario, json.dumps(args)],
                       env=dict(os.environ, PYTHONPATH=os.path.join(ROOT, "python")),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=120)
    assert p.returncode == 0, "scenario %s failed:\n%s\n%s" % (scenario, p.stdout, p.stderr)
    results = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
    assert results, p.stdout + p.stderr
    return json.loads(results[-1][len("RESULT "):])


def test_sms_device_logs_in_through_django_otp_login_view(redis_server, otpd_factory):
    otpd = otpd_factory()
    res = run_django("sms_login", redis_server, otpd)
    # The child read the codes as the phone shows them; conftest's reader agrees.
    assert otpd.codes(PHONE) == res["codes"] and len(res["codes"]) == 2
    assert res["codes"][0] == res["codes"][1]  # the second challenge re-sent the valid code
    assert PHONE not in otpd.stderr


def test_wrong_codes_lock_the_code_until_a_new_one(redis_server, r, otpd_factory):
    otpd = otpd_factory()
    res = run_django("sms_lockout", redis_server, otpd)
    assert otpd.codes(PHONE) == res["codes"] and len(res["codes"]) == 2
    assert r.exists("otpd:otp:login:" + PHONE) == 0  # the second code was used up


def test_email_device_logs_in_the_same_way(redis_server, otpd_factory):
    otpd = otpd_factory()
    res = run_django("email_login", redis_server, otpd)
    printed = re.findall(r"Your verification code is (\d{6})", otpd.stdout)
    assert printed == res["codes"] and len(printed) == 2
    assert "otpd console e-mail" in otpd.stdout and "To: " + ADDRESS in otpd.stdout
    assert otpd.codes(PHONE) == []  # the user's SMS device was not used


def test_admin_lists_devices_and_otp_admin_site_needs_a_verified_user(redis_server,
                                                                       otpd_factory):
    otpd = otpd_factory()
    res = run_django("admin", redis_server, otpd)
    assert otpd.codes(res["root_phone"]) == [res["code"]]


def test_models_clean_with_the_clients_rules_and_migrations_are_current(redis_server):
    # No daemon: nothing here reaches it.
    run_django("models", redis_server)


def test_challenge_refusals_become_django_errors(redis_server, r, otpd_factory):
    """A country the daemon does not serve, a send limit, an opted-out number
    and Redis out of reach: each is an error the login form shows, not a 500."""
    otpd = otpd_factory({"OTPD_ALLOWED_COUNTRIES": "44", "OTPD_LIMIT_INTERVAL_S": "30"})
    r.hset("otpd:optout", STOPPED_PHONE, "1")
    res = run_django("refusals", redis_server, otpd, closed_port=free_port())
    assert otpd.codes(UK_MOBILE) == [res["uk_code"]]
    assert otpd.codes(PHONE) == [] and otpd.codes(STOPPED_PHONE) == []
    assert r.hget("otpd:job:" + res["us_job"], "error_code") == "country_not_allowed"


def test_resend_cap_reported_by_the_daemon(redis_server, otpd_factory):
    """OTPD_MAX_SENDS_PER_CODE is the daemon's alone: the challenge waits for its verdict."""
    otpd = otpd_factory({"OTPD_MAX_SENDS_PER_CODE": "2"})
    run_django("resend_cap", redis_server, otpd)
    assert len(otpd.codes(PHONE)) == 2


# --- the child side: Django configured in this process ----------------------

LOGIN_TEMPLATE = """<!doctype html><title>Log in</title>
{% if form.non_field_errors %}<ul class="errorlist">
  {% for e in form.non_field_errors %}<li>{{ e }}</li>{% endfor %}
</ul>{% endif %}
<form method="post">{% csrf_token %}
{% if form.username %}{{ form.username }} {{ form.password }}{% endif %}
{% if form.get_user %}
  {{ form.otp_device }} <input type="submit" name="otp_challenge" value="Get challenge">
{% endif %}
{{ form.otp_token }} <input type="submit" value="Log in">
</form>"""


def _settings(a):
    return dict(
        DEBUG=False,
        SECRET_KEY="django-otp-plugin-tests-only",
        ALLOWED_HOSTS=["testserver"],
        INSTALLED_APPS=[
            "django.contrib.admin", "django.contrib.auth", "django.contrib.contenttypes",
            "django.contrib.sessions", "django.contrib.messages",
            "django_otp", "otpd.django", "otpd.django.otp",
        ],
        MIDDLEWARE=[
            "django.contrib.sessions.middleware.SessionMiddleware",
            "django.middleware.common.CommonMiddleware",
            "django.middleware.csrf.CsrfViewMiddleware",
            "django.contrib.auth.middleware.AuthenticationMiddleware",
            "django_otp.middleware.OTPMiddleware",
            "django.contrib.messages.middleware.MessageMiddleware",
        ],
        ROOT_URLCONF="__main__",
        TEMPLATES=[{
            "BACKEND": "django.template.backends.django.DjangoTemplates",
            "DIRS": [],
            "OPTIONS": {
                "loaders": [
                    ("django.template.loaders.locmem.Loader",
                     {"registration/login.html": LOGIN_TEMPLATE}),
                    "django.template.loaders.app_directories.Loader",
                ],
                "context_processors": [
                    "django.template.context_processors.request",
                    "django.contrib.auth.context_processors.auth",
                    "django.contrib.messages.context_processors.messages",
                ],
            },
        }],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        # Not the app's AutoField: the migration must not depend on the project's choice.
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"],
        USE_TZ=True,
        LOGIN_URL="/login/",
        LOGIN_REDIRECT_URL="/whoami/",
        OTPD_REDIS_URL=a.redis_url,
        OTPD_HASH_KEY=HASH_KEY,
    )


def _urls():
    from django.contrib import admin
    from django.http import JsonResponse
    from django.urls import path
    from django_otp.admin import OTPAdminSite
    from django_otp.views import LoginView

    from otpd.django.otp.admin import EmailDeviceAdmin, SMSDeviceAdmin
    from otpd.django.otp.models import EmailDevice, SMSDevice

    otp_admin = OTPAdminSite(OTPAdminSite.name)
    otp_admin.register(SMSDevice, SMSDeviceAdmin)
    otp_admin.register(EmailDevice, EmailDeviceAdmin)

    def whoami(request):
        u = request.user
        return JsonResponse({"user": u.get_username() if u.is_authenticated else None,
                             "verified": u.is_verified(),
                             "device": u.otp_device.persistent_id if u.otp_device else None})

    return [path("login/", LoginView.as_view()), path("whoami/", whoami),
            path("admin/", admin.site.urls), path("otpadmin/", otp_admin.urls)]


_BLOCK = re.compile(r"^----- otpd console (?:delivery|e-mail) .*$", re.M)


def console_codes(path, to):
    """The codes the console providers printed for `to`, oldest first: SMS
    blocks as conftest's Daemon.codes() reads them, and e-mail blocks too."""
    with open(path, "rb") as f:
        out = f.read().decode("utf-8", "replace")
    found = []
    for block in _BLOCK.split(out)[1:]:
        lines = block.splitlines()
        if next((ln[4:] for ln in lines if ln.startswith("To: ")), None) != to:
            continue
        m = re.search(r"\b(\d{4,10})\b", "\n".join(
            ln for ln in lines if not ln.startswith(("To:", "Ref:", "From:"))))
        if m:
            found.append(m.group(1))
    return found


def wait_code(a, to, n):
    """The n-th code (1-based) sent to `to`, once the daemon has printed it."""
    codes = wait_for(lambda: (lambda c: c if len(c) >= n else None)(console_codes(a.otpd_out, to)),
                     10, what="code #%d for %s" % (n, to))
    return codes[n - 1]


def wrong(code):
    return "%0*d" % (len(code), (int(code) + 1) % 10 ** len(code))


def errors(resp):
    """The form's non-field errors, as the login page lists them."""
    assert resp.status_code == 200, (resp.status_code, resp.get("Location"))
    return list(resp.context["form"].non_field_errors())


def whoami(browser):
    return browser.get("/whoami/").json()


def make_user(username, **kw):
    from django.contrib.auth import get_user_model
    return get_user_model().objects.create_user(username, password=PASSWORD, **kw)


def login(browser, username="alice", **data):
    return browser.post("/login/", dict(data, username=username, password=PASSWORD))


def scenario_sms_login(a):
    from django.test import Client

    from otpd.django.otp.models import SMSDevice
    user = make_user("alice")
    dev = SMSDevice(user=user, name="Alice's phone", number="+1 (415) 555-2671")
    dev.full_clean()
    dev.save()
    assert dev.number == PHONE and dev.purpose == "login" and dev.is_interactive()
    pid = dev.persistent_id
    assert pid == "otpd_otp.smsdevice/%d" % dev.pk

    b = Client()
    page = b.get("/login/")
    assert page.status_code == 200 and 'name="otp_token"' in page.content.decode()
    # The password alone: django-otp asks for a token and now offers the devices.
    resp = login(b)
    assert errors(resp) == [TOKEN_REQUIRED]
    assert 'value="%s"' % pid in resp.content.decode()
    assert whoami(b) == {"user": None, "verified": False, "device": None}

    # The challenge button: otpd makes and sends the code; the page shows it masked.
    resp = login(b, otp_device=pid, otp_challenge="1")
    assert errors(resp) == ["OTP Challenge: Sent by SMS to +1415*****71"]
    assert PHONE not in resp.content.decode()
    code = wait_code(a, PHONE, 1)
    # Pressed again while the code is valid: the same code is texted again.
    resp = login(b, otp_device=pid, otp_challenge="1")
    assert errors(resp) == ["OTP Challenge: Sent again by SMS to +1415*****71"]
    assert wait_code(a, PHONE, 2) == code

    resp = login(b, otp_device=pid, otp_token=wrong(code))
    assert errors(resp) == [INVALID_TOKEN]
    assert whoami(b)["user"] is None
    resp = login(b, otp_device=pid, otp_token=" %s " % code)  # forms strip; so does otpd
    assert resp.status_code == 302 and resp["Location"] == "/whoami/", resp.content
    assert whoami(b) == {"user": "alice", "verified": True, "device": pid}

    # A code works once: another browser cannot replay it, with or without a device chosen.
    other = Client()
    assert errors(login(other, otp_device=pid, otp_token=code)) == [INVALID_TOKEN]
    assert errors(login(other, otp_token=code)) == [INVALID_TOKEN]
    assert whoami(other)["user"] is None
    # The database never held it: a device has no token column to hold one.
    assert not {"token", "valid_until"} & {f.name for f in SMSDevice._meta.get_fields()}
    return {"codes": console_codes(a.otpd_out, PHONE)}


def scenario_sms_lockout(a):
    from django.test import Client

    from otpd import protocol
    from otpd.django import get_client
    from otpd.django.otp.models import SMSDevice
    user = make_user("alice")
    dev = SMSDevice.objects.create(user=user, name="Phone", number=PHONE)
    pid = dev.persistent_id
    b = Client()
    assert errors(login(b, otp_device=pid, otp_challenge="1")) == [
        "OTP Challenge: Sent by SMS to +1415*****71"]
    code = wait_code(a, PHONE, 1)

    # Input that cannot be a code spends no attempt.
    assert errors(login(b, otp_device=pid, otp_token="12ab")) == [INVALID_TOKEN]
    redis = get_client().redis
    key = protocol.otp_key("otpd:", "login", PHONE)
    assert redis.hget(key, "attempts") == "0"
    # Five wrong codes (OTPD_VERIFY_ATTEMPTS' default) lock the code...
    for n in range(1, 6):
        assert errors(login(b, otp_device=pid, otp_token=wrong(code))) == [INVALID_TOKEN]
        assert redis.hget(key, "attempts") == str(n)
    assert redis.hget(key, "locked") == "1"
    # ...and then the right one fails too; the form says why.
    assert errors(login(b, otp_device=pid, otp_token=code)) == [LOCKED]
    assert whoami(b)["user"] is None
    # The device API agrees, and it is otpd's script that refuses, not just the form.
    fresh = SMSDevice.objects.get(pk=dev.pk)
    allowed, extra = fresh.verify_is_allowed()
    assert not allowed and extra["error_message"] == LOCKED
    assert fresh.verify_token(code) is False and fresh.last_verify.status == "locked"

    # A new challenge replaces the locked code; the new one logs in.
    assert errors(login(b, otp_device=pid, otp_challenge="1")) == [
        "OTP Challenge: Sent by SMS to +1415*****71"]
    code2 = wait_code(a, PHONE, 2)
    assert redis.hget(key, "attempts") == "0" and not redis.hexists(key, "locked")
    resp = login(b, otp_device=pid, otp_token=wrong(code2))
    assert errors(resp) == [INVALID_TOKEN]
    resp = login(b, otp_device=pid, otp_token=code2)
    assert resp.status_code == 302, resp.content
    assert whoami(b) == {"user": "alice", "verified": True, "device": pid}
    return {"codes": [code, code2]}


def scenario_email_login(a):
    from django.test import Client

    from otpd.django.otp.models import EmailDevice, SMSDevice
    user = make_user("alice")
    SMSDevice.objects.create(user=user, name="Phone", number=PHONE)
    dev = EmailDevice(user=user, name="Work mail", email=" Alice.Smith@Example.COM ")
    dev.full_clean()
    dev.save()
    assert dev.email == ADDRESS
    pid = dev.persistent_id

    b = Client()
    resp = login(b)
    assert errors(resp) == [TOKEN_REQUIRED]
    assert 'value="%s"' % pid in resp.content.decode()  # both devices are offered
    resp = login(b, otp_device=pid, otp_challenge="1")
    assert errors(resp) == ["OTP Challenge: Sent by e-mail to a***h@example.com"]
    assert ADDRESS not in resp.content.decode()
    code = wait_code(a, ADDRESS, 1)
    assert errors(login(b, otp_device=pid, otp_token=wrong(code))) == [INVALID_TOKEN]
    resp = login(b, otp_device=pid, otp_token=code)
    assert resp.status_code == 302, resp.content
    assert whoami(b) == {"user": "alice", "verified": True, "device": pid}

    # Logged in by password only (no OTP): the same view serves django-otp's
    # OTPTokenForm, which asks for the device and token alone.
    b2 = Client()
    b2.force_login(user)
    assert whoami(b2) == {"user": "alice", "verified": False, "device": None}
    resp = b2.post("/login/", {"otp_device": pid, "otp_challenge": "1"})
    assert type(resp.context["form"]).__name__ == "OTPTokenForm"
    assert errors(resp) == ["OTP Challenge: Sent by e-mail to a***h@example.com"]
    code2 = wait_code(a, ADDRESS, 2)
    resp = b2.post("/login/", {"otp_device": pid, "otp_token": code2})
    assert resp.status_code == 302, resp.content
    assert whoami(b2) == {"user": "alice", "verified": True, "device": pid}
    return {"codes": [code, code2]}


def scenario_admin(a):
    from django.contrib.auth import get_user_model
    from django.test import Client, override_settings

    from otpd.django.otp.models import EmailDevice, SMSDevice
    root_phone = "+14155550100"
    root = get_user_model().objects.create_superuser("root", "root@example.com", PASSWORD)
    alice = make_user("alice")
    sms = SMSDevice.objects.create(user=alice, name="Alice's phone", number=PHONE)
    EmailDevice.objects.create(user=alice, name="Alice's mail", email=ADDRESS)

    b = Client()
    b.force_login(root)
    page = b.get("/admin/otpd_otp/smsdevice/")
    assert page.status_code == 200
    text = page.content.decode()
    assert "Alice&#x27;s phone" in text and PHONE in text and "1 SMS device" in text
    page = b.get("/admin/otpd_otp/emaildevice/")
    assert page.status_code == 200 and ADDRESS in page.content.decode()
    assert b.get("/admin/otpd_otp/smsdevice/?q=alice").status_code == 200
    assert b.get("/admin/otpd_otp/smsdevice/%d/change/" % sms.pk).status_code == 200
    assert b.get("/admin/otpd_otp/emaildevice/add/").status_code == 200
    with override_settings(OTP_ADMIN_HIDE_SENSITIVE_DATA=True):
        text = b.get("/admin/otpd_otp/smsdevice/").content.decode()
        assert "+1415*****71" in text and PHONE not in text

    # The admin's form runs the model's full_clean(): a typed number is stored as E.164.
    add = {"user": alice.pk, "name": "Office", "confirmed": "on", "purpose": "login"}
    resp = b.post("/admin/otpd_otp/smsdevice/add/", dict(add, number="+44 20 7946-0958"))
    assert resp.status_code == 302, resp.content
    assert SMSDevice.objects.get(name="Office").number == UK_PHONE
    resp = b.post("/admin/otpd_otp/smsdevice/add/", dict(add, name="Bad", number="020 7946 0958"))
    assert resp.status_code == 200 and "international format" in resp.content.decode()
    assert not SMSDevice.objects.filter(name="Bad").exists()

    # OTPAdminSite lets the superuser in only once an otpd device has verified them.
    assert b.get("/otpadmin/otpd_otp/smsdevice/")["Location"].startswith("/otpadmin/login/")
    dev = SMSDevice.objects.create(user=root, name="Root's phone", number=root_phone)
    c = Client()
    creds = {"username": "root", "password": PASSWORD, "otp_device": dev.persistent_id}
    resp = c.post("/otpadmin/login/", dict(creds, otp_challenge="1"))
    assert errors(resp) == ["OTP Challenge: Sent by SMS to +1415*****00"]
    code = wait_code(a, root_phone, 1)
    nxt = "/otpadmin/otpd_otp/smsdevice/"
    resp = c.post("/otpadmin/login/?next=" + nxt, dict(creds, otp_token=code, next=nxt))
    assert resp.status_code == 302 and resp["Location"] == nxt, resp.content
    page = c.get(nxt)
    assert page.status_code == 200 and "Root&#x27;s phone" in page.content.decode()
    assert c.get("/otpadmin/otpd_otp/emaildevice/").status_code == 200
    return {"code": code, "root_phone": root_phone}


def scenario_models(a):
    import io

    from django.core.exceptions import ValidationError
    from django.core.management import call_command

    from otpd.django.otp import errors as E
    from otpd.django.otp.models import EmailDevice, SMSDevice
    call_command("check", fail_level="WARNING")
    # Exits 1 if the models and the committed migration differ (under BigAutoField too).
    call_command("makemigrations", "otpd_otp", "--check", "--dry-run", stdout=io.StringIO())

    user = make_user("alice")

    def invalid(dev):
        try:
            dev.full_clean()
        except ValidationError as e:
            return sorted(e.message_dict)
        return []

    for typed in ("+1 415 555 2671", "+1 (415) 555-2671", "+1.415.555.2671", " +14155552671\n"):
        dev = SMSDevice(user=user, name="p", number=typed)
        assert invalid(dev) == [] and dev.number == PHONE, typed
        assert dev.masked_destination == "+1415*****71"
    for bad in ("4155552671", "+0 415 555 2671", "+1 415 555 2671 x3", "+1234", "+1" + "5" * 15,
                "+١٤١٥٥٥٥٢٦٧١"):
        assert invalid(SMSDevice(user=user, name="p", number=bad)) == ["number"], bad
    assert invalid(SMSDevice(user=user, name="p", number="")) == ["number"]
    assert invalid(SMSDevice(user=user, name="p", number=PHONE, purpose="Log in")) == ["purpose"]
    assert invalid(SMSDevice(user=user, name="p", number=PHONE, purpose="a" * 33)) == ["purpose"]

    dev = EmailDevice(user=user, name="m", email="  Alice.Smith@EXAMPLE.com")
    assert invalid(dev) == [] and dev.email == ADDRESS
    assert dev.masked_destination == "a***h@example.com"
    for bad in ("not-an-address", "a..b@example.com", "alice@localhost", PHONE):
        assert invalid(EmailDevice(user=user, name="m", email=bad)) == ["email"], bad

    # Saved without full_clean() and not something otpd accepts: refused before any
    # Redis call (OTPD_REDIS_URL points at a server that is there but unused).
    broken = SMSDevice.objects.create(user=user, name="old", number="00 44 20 7946 0958")
    allowed, extra = broken.verify_is_allowed()
    assert not allowed and "phone number of this device is not valid" in extra["error_message"], \
        extra
    assert broken.verify_token("123456") is False and broken.last_verify is None
    try:
        broken.generate_challenge()
        raise AssertionError("generate_challenge() accepted an invalid number")
    except E.OTPInvalidInput as e:
        assert str(e) == str(E.invalid_destination("sms")) == extra["error_message"]
        assert "7946" not in str(e)
    # Saved without full_clean() but valid once trimmed: used as otpd keys it.
    spaced = EmailDevice.objects.create(user=user, name="m2", email=" Alice.Smith@Example.com")
    assert spaced.otpd_destination() == ADDRESS
    assert spaced.verify_is_allowed() == (True, None)


def scenario_refusals(a):
    from django.test import Client, override_settings

    from otpd.django.otp import errors as E
    from otpd.django.otp.models import SMSDevice
    user = make_user("alice")
    us = SMSDevice.objects.create(user=user, name="US", number=PHONE)
    uk = SMSDevice.objects.create(user=user, name="UK", number=UK_MOBILE)
    stopped = SMSDevice.objects.create(user=user, name="Stopped", number=STOPPED_PHONE)
    landline = SMSDevice.objects.create(user=user, name="Office", number=UK_PHONE)

    # OTPD_ALLOWED_COUNTRIES=44: only the daemon knows; the challenge waits for it.
    b = Client()
    resp = login(b, otp_device=us.persistent_id, otp_challenge="1")
    assert errors(resp) == [CHALLENGE_ERROR + str(E.country_not_allowed())]
    us_job = SMSDevice.objects.get(pk=us.pk)
    try:
        us_job.generate_challenge()
        raise AssertionError("no error for a country otpd does not serve")
    except E.OTPCountryNotAllowed as e:
        assert not isinstance(e, E.OTPRateLimited)
    # An allowed country is sent; a second code within OTPD_LIMIT_INTERVAL_S is refused
    # before anything is queued, with the wait in seconds.
    assert uk.generate_challenge() == "Sent by SMS to +4474******58"
    uk_code = wait_code(a, UK_MOBILE, 1)
    try:
        uk.generate_challenge()
        raise AssertionError("the interval limit did not apply")
    except E.OTPRateLimited as e:
        assert 0 < e.retry_after <= 30, e.retry_after
        assert str(e) == str(E.rate_limited(e.retry_after))
        assert str(e).startswith("Too many codes were requested. Try again in "), str(e)
    [msg] = errors(login(b, otp_device=uk.persistent_id, otp_challenge="1"))
    assert msg.startswith(CHALLENGE_ERROR + "Too many codes were requested. Try again in "), msg
    # A number that replied STOP.
    [msg] = errors(login(b, otp_device=stopped.persistent_id, otp_challenge="1"))
    assert msg == CHALLENGE_ERROR + str(E.opted_out()), msg
    assert STOPPED_PHONE not in msg and "opted_out" not in msg
    # A landline: the client's number check refuses it before anything is queued.
    [msg] = errors(login(b, otp_device=landline.persistent_id, otp_challenge="1"))
    assert msg == CHALLENGE_ERROR + "This number can't receive codes by text message. " \
        "Use a mobile number.", msg
    try:
        landline.generate_challenge()
        raise AssertionError("a landline was not refused")
    except E.OTPNumberRefused as e:
        assert e.reason == "fixed_line" and UK_PHONE not in e.detail
    # The right code still logs in after all that.
    resp = login(b, otp_device=uk.persistent_id, otp_token=uk_code)
    assert resp.status_code == 302 and whoami(b)["verified"] is True

    # Redis out of reach: an error on the page, "not allowed" with a reason, never True.
    with override_settings(OTPD_REDIS_URL="redis://127.0.0.1:%d/0" % a.closed_port):
        try:
            uk.generate_challenge()
            raise AssertionError("no error without Redis")
        except E.OTPServiceUnavailable as e:
            assert str(e) == str(E.unavailable()) and "127.0.0.1" not in str(e)
        allowed, extra = uk.verify_is_allowed()
        assert not allowed and "not available" in extra["error_message"], extra
        assert uk.verify_token(uk_code) is False and uk.last_verify is None
        [msg] = errors(login(Client(), otp_device=uk.persistent_id, otp_challenge="1"))
        assert msg == CHALLENGE_ERROR + str(E.unavailable()), msg
    return {"uk_code": uk_code, "us_job": us_job.last_job_id}


def scenario_resend_cap(a):
    from otpd.django.otp.errors import OTPRateLimited
    from otpd.django.otp.models import SMSDevice
    dev = SMSDevice.objects.create(user=make_user("alice"), name="Phone", number=PHONE)
    assert dev.generate_challenge() == "Sent by SMS to +1415*****71"
    assert dev.generate_challenge() == "Sent again by SMS to +1415*****71"
    assert wait_code(a, PHONE, 2)
    try:
        dev.generate_challenge()  # OTPD_MAX_SENDS_PER_CODE=2: the daemon says no
        raise AssertionError("the resend cap did not apply")
    except OTPRateLimited as e:
        assert 200 < e.retry_after <= 300, e.retry_after  # until the code expires


def _child(scenario, args):
    import django
    from django.conf import settings
    a = SimpleNamespace(**args)
    settings.configure(**_settings(a))
    django.setup()
    from django.core.management import call_command
    from django.test.utils import setup_test_environment
    setup_test_environment()  # the test client records response.context
    call_command("migrate", verbosity=0)
    global urlpatterns
    urlpatterns = _urls()
    result = globals()["scenario_" + scenario](a)
    print("RESULT " + json.dumps(result or {}))


if __name__ == "__main__":
    _child(sys.argv[1], json.loads(sys.argv[2]))

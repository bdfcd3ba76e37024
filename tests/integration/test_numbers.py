"""The number check (otpd.numbers): numbers are checked before money is spent.

The client refuses, before anything reaches Redis, a number that is not
valid for its country or whose line type the site does not want; the Django
flow shows the refusal as a form error.  A real redis-server (conftest's
fixtures) shows that a refused number leaves no trace there; no daemon is
needed, as nothing is ever queued for one.

The numbers below were looked up once by hand with Debian 12's
python3-phonenumbers 8.12.57:

    import phonenumbers as pn
    n = pn.parse("+449098790000", None)
    pn.is_valid_number(n), pn.number_type(n), pn.region_code_for_number(n)

and test_the_reference_numbers pins what it answered, so that a newer
phonenumbers that reclassifies one says so here first:

    +44 909 879 0000   GB premium_rate   (09 ranges)
    +44 845 123 4567   GB premium_rate   (084x/087x "service" numbers are premium_rate
    +44 870 876 5432   GB premium_rate    in libphonenumber, not shared_cost)
    +34 901 123 456    ES shared_cost    (901/902, "coste compartido")
    +33 8 84 01 23 45  FR shared_cost
    +44 56 1234 5678   GB voip           (056)
    +44 20 7946 0123   GB fixed_line     (London, Ofcom's drama range 020 7946 0xxx)
    +44 7400 900123    GB mobile
    +1 415 555 2671    US fixed_line_or_mobile (every +1 number: the two are not told apart)
    +91 98123 45678    IN mobile
    +1 800 555 1212    US toll_free
    +44 20 7946        invalid: too short
    +1 555 555 0100    invalid: area code 555 does not exist
    +44 7700 900123    invalid: Ofcom's drama mobile range 07700 900xxx is not a valid
                       number in libphonenumber's tables
"""
import asyncio
import html
import os
import re

import pytest

from conftest import HASH_KEY, free_port

phonenumbers = pytest.importorskip(
    "phonenumbers", reason="python3-phonenumbers is not installed (apt-get install "
    "python3-phonenumbers)")

from otpd import NumberRefused, OTPClient, SendRefused, mask_phone  # noqa: E402
from otpd import numbers  # noqa: E402
from otpd.aio import AsyncOTPClient  # noqa: E402
from otpd.numbers import DEFAULT_REFUSED, LINE_TYPES, NumberCheck  # noqa: E402
# The example site's module-level Django set-up, shared with its tests.
from test_django_site import django_site  # noqa: E402,F401

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

UK_PREMIUM = "+449098790000"
UK_PREMIUM_0845 = "+448451234567"
UK_PREMIUM_0870 = "+448708765432"
ES_SHARED_COST = "+34901123456"
FR_SHARED_COST = "+33884012345"
UK_VOIP = "+445612345678"
UK_LANDLINE = "+442079460123"
UK_MOBILE = "+447400900123"
US_NUMBER = "+14155552671"
IN_MOBILE = "+919812345678"
US_TOLL_FREE = "+18005551212"
TOO_SHORT = "+442079460"
NO_SUCH_AREA = "+15555550100"
UK_DRAMA_MOBILE = "+447700900123"

REFERENCE = [
    (UK_PREMIUM, "GB", "premium_rate"),
    (UK_PREMIUM_0845, "GB", "premium_rate"),
    (UK_PREMIUM_0870, "GB", "premium_rate"),
    (ES_SHARED_COST, "ES", "shared_cost"),
    (FR_SHARED_COST, "FR", "shared_cost"),
    (UK_VOIP, "GB", "voip"),
    (UK_LANDLINE, "GB", "fixed_line"),
    (UK_MOBILE, "GB", "mobile"),
    (US_NUMBER, "US", "fixed_line_or_mobile"),
    (IN_MOBILE, "IN", "mobile"),
    (US_TOLL_FREE, "US", "toll_free"),
    (TOO_SHORT, None, "invalid_number"),
    (NO_SUCH_AREA, None, "invalid_number"),
    (UK_DRAMA_MOBILE, None, "invalid_number"),
]

REFUSED_BY_DEFAULT = [
    (UK_PREMIUM, "premium_rate"),
    (UK_PREMIUM_0845, "premium_rate"),
    (UK_PREMIUM_0870, "premium_rate"),
    (ES_SHARED_COST, "shared_cost"),
    (FR_SHARED_COST, "shared_cost"),
    (UK_VOIP, "voip"),
    (UK_LANDLINE, "fixed_line"),
    (TOO_SHORT, "invalid_number"),
    (NO_SUCH_AREA, "invalid_number"),
    (UK_DRAMA_MOBILE, "invalid_number"),
]
PASSED_BY_DEFAULT = [UK_MOBILE, US_NUMBER, IN_MOBILE, US_TOLL_FREE]

CANT_TEXT = "This number can't receive codes by text message. Use a mobile number."
INVALID = "Enter a valid phone number."


def nothing_in_redis(r):
    """No job, no status record, no limit counter: Redis was not touched."""
    assert r.xlen("otpd:jobs") == 0
    assert r.keys("otpd:job:*") == []
    assert r.keys("*") == []


def closed_url():
    return "redis://127.0.0.1:%d/0" % free_port()


# --- the policy ---------------------------------------------------------------

@pytest.mark.parametrize("to,region,kind", REFERENCE)
def test_the_reference_numbers(to, region, kind):
    n = phonenumbers.parse(to, None)
    if kind == "invalid_number":
        assert not phonenumbers.is_valid_number(n)
    else:
        assert phonenumbers.is_valid_number(n)
        assert phonenumbers.region_code_for_number(n) == region
    assert NumberCheck(refuse=[]).line_type(to) == kind


def test_line_type_names_are_phonenumbers_own():
    names = {k.lower() for k in vars(phonenumbers.PhoneNumberType) if k.isupper()}
    assert set(LINE_TYPES) == names
    assert DEFAULT_REFUSED == {"premium_rate", "shared_cost", "voip", "fixed_line"}


@pytest.mark.parametrize("to,reason", REFUSED_BY_DEFAULT)
def test_default_policy_refuses(to, reason):
    with pytest.raises(NumberRefused) as ei:
        NumberCheck().check(to)
    e = ei.value
    assert e.reason == reason and isinstance(e, SendRefused)
    # Masked as the client masks numbers everywhere; never in full.
    assert to not in str(e) and str(e).startswith("refused %s: " % mask_phone(to))
    assert re.fullmatch(r"\+\d{4}\*+\d\d", mask_phone(to))


@pytest.mark.parametrize("to", PASSED_BY_DEFAULT)
def test_default_policy_passes(to):
    assert NumberCheck().check(to) in ("mobile", "fixed_line_or_mobile", "toll_free")


def test_configured_policy():
    # refuse=[]: any valid line type, but invalid numbers are still refused.
    none = NumberCheck(refuse=[])
    assert none.refused == frozenset()
    assert none.check(UK_LANDLINE) == "fixed_line" and none.check(UK_PREMIUM) == "premium_rate"
    for bad in (TOO_SHORT, NO_SUCH_AREA, "+", "", "not a number", None):
        with pytest.raises(NumberRefused) as ei:
            none.check(bad)
        assert ei.value.reason == "invalid_number"
    # A comma-separated string, any case, spaces allowed.
    c = NumberCheck(refuse=" VOIP, premium_rate ,")
    assert c.refused == {"voip", "premium_rate"}
    assert c.check(UK_LANDLINE) == "fixed_line"
    with pytest.raises(NumberRefused):
        c.check(UK_VOIP)
    # fixed_line_or_mobile can be refused too (then all of +1 is).
    with pytest.raises(NumberRefused) as ei:
        NumberCheck(refuse=["fixed_line_or_mobile"]).check(US_NUMBER)
    assert ei.value.reason == "fixed_line_or_mobile"


@pytest.mark.parametrize("bad", [["premium"], "voip,landline", ["VOIP", 3], 42])
def test_unknown_type_names_raise(bad):
    with pytest.raises(ValueError) as ei:
        NumberCheck(refuse=bad)
    msg = str(ei.value)
    for name in LINE_TYPES:
        assert name in msg  # the valid names are listed


# --- the client ---------------------------------------------------------------

@pytest.mark.parametrize("to,reason", REFUSED_BY_DEFAULT)
def test_send_refuses_before_redis(r, to, reason):
    client = OTPClient(redis=r, hash_key=HASH_KEY)  # number_check="auto"
    assert isinstance(client.number_check, NumberCheck)
    with pytest.raises(NumberRefused) as ei:
        client.send(to, "login")
    assert ei.value.reason == reason
    nothing_in_redis(r)


def test_the_check_comes_before_any_redis_command():
    """A client whose Redis is unreachable still answers NumberRefused, not a
    ConnectionError: no command was even tried."""
    client = OTPClient(url=closed_url(), hash_key=HASH_KEY)
    with pytest.raises(NumberRefused):
        client.send(UK_PREMIUM)

    async def main():
        c = AsyncOTPClient(url=closed_url(), hash_key=HASH_KEY)
        try:
            with pytest.raises(NumberRefused):
                await c.send(UK_VOIP)
        finally:
            await c.close()
    asyncio.run(main())


@pytest.mark.parametrize("to", PASSED_BY_DEFAULT)
def test_send_enqueues_numbers_that_pass(r, to):
    client = OTPClient(redis=r, hash_key=HASH_KEY)
    job = client.send(to, "login")
    assert r.xlen("otpd:jobs") == 1
    assert client.status(job)["status"] == "queued"


def test_refuse_nothing_lets_a_landline_through_but_not_an_invalid_number(r):
    client = OTPClient(redis=r, hash_key=HASH_KEY, number_check=NumberCheck(refuse=[]))
    job = client.send(UK_LANDLINE)
    assert client.status(job)["status"] == "queued" and r.xlen("otpd:jobs") == 1
    with pytest.raises(NumberRefused) as ei:
        client.send(NO_SUCH_AREA)
    assert ei.value.reason == "invalid_number"
    assert r.xlen("otpd:jobs") == 1


@pytest.mark.parametrize("off", [None, False])
def test_number_check_off_enqueues_anything_e164(r, off):
    client = OTPClient(redis=r, hash_key=HASH_KEY, number_check=off)
    assert client.number_check is None
    for to in (NO_SUCH_AREA, UK_PREMIUM, UK_DRAMA_MOBILE):
        client.send(to)
    assert r.xlen("otpd:jobs") == 3
    with pytest.raises(ValueError):  # the E.164 rule itself still holds
        client.send("+44 20 7946 0123")


def test_email_channel_is_not_checked(r):
    client = OTPClient(redis=r, hash_key=HASH_KEY, number_check=NumberCheck(refuse=LINE_TYPES))
    job = client.send("Alice@Example.com", "login", channel="email")
    assert client.status(job)["status"] == "queued" and r.xlen("otpd:jobs") == 1
    with pytest.raises(NumberRefused):  # while every SMS number is refused
        client.send(UK_MOBILE)


def test_number_check_argument(r, monkeypatch):
    assert isinstance(OTPClient(redis=r, hash_key=HASH_KEY, number_check=True).number_check,
                      NumberCheck)
    mine = NumberCheck(refuse=["voip"])
    assert OTPClient(redis=r, hash_key=HASH_KEY, number_check=mine).number_check is mine
    for bad in ("yes", "premium_rate", 1, ["voip"]):
        with pytest.raises(TypeError):
            OTPClient(redis=r, hash_key=HASH_KEY, number_check=bad)

    # Without phonenumbers: "auto" skips the check, True says what to install.
    monkeypatch.setattr(numbers, "phonenumbers", None)
    assert OTPClient(redis=r, hash_key=HASH_KEY).number_check is None
    for make in (lambda: OTPClient(redis=r, hash_key=HASH_KEY, number_check=True),
                 lambda: NumberCheck()):
        with pytest.raises(ImportError) as ei:
            make()
        assert "python3-phonenumbers" in str(ei.value)
    with pytest.raises(ValueError):  # a bad name is told before the missing module
        NumberCheck(refuse=["premium"])
    client = OTPClient(redis=r, hash_key=HASH_KEY)
    client.send(UK_PREMIUM)  # unchecked: the daemon's rules only
    assert r.xlen("otpd:jobs") == 1


def test_from_env(redis_server, r, monkeypatch):
    for k in list(os.environ):
        if k.startswith("OTPD_") or k == "REDIS_URL":
            monkeypatch.delenv(k)
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    monkeypatch.setenv("OTPD_HASH_KEY", HASH_KEY)

    # Unset: the defaults.
    c = OTPClient.from_env()
    assert c.number_check.refused == DEFAULT_REFUSED
    # Empty: no line type refused, invalid numbers still are.
    monkeypatch.setenv("OTPD_REFUSED_LINE_TYPES", "")
    c = OTPClient.from_env()
    assert c.number_check.refused == frozenset()
    c.send(UK_LANDLINE)
    with pytest.raises(NumberRefused):
        c.send(TOO_SHORT)
    assert r.xlen("otpd:jobs") == 1
    # A list.
    monkeypatch.setenv("OTPD_REFUSED_LINE_TYPES", "premium_rate, Shared_Cost")
    c = OTPClient.from_env()
    assert c.number_check.refused == {"premium_rate", "shared_cost"}
    c.send(UK_VOIP)
    with pytest.raises(NumberRefused) as ei:
        c.send(ES_SHARED_COST)
    assert ei.value.reason == "shared_cost" and r.xlen("otpd:jobs") == 2
    # The asyncio client reads it the same way.
    assert AsyncOTPClient.from_env().number_check.refused == {"premium_rate", "shared_cost"}
    # A typo is an error, not a silent "refuse nothing".
    monkeypatch.setenv("OTPD_REFUSED_LINE_TYPES", "premium_rate,voipp")
    with pytest.raises(ValueError) as ei:
        OTPClient.from_env()
    assert "voipp" in str(ei.value) and "shared_cost" in str(ei.value)
    # Set explicitly, it needs phonenumbers.
    monkeypatch.setenv("OTPD_REFUSED_LINE_TYPES", "voip")
    monkeypatch.setattr(numbers, "phonenumbers", None)
    with pytest.raises(ImportError):
        OTPClient.from_env()


def test_asyncio_client(redis_server, r):
    async def main():
        c = AsyncOTPClient(url=redis_server.url, hash_key=HASH_KEY)
        try:
            for to, reason in REFUSED_BY_DEFAULT:
                with pytest.raises(NumberRefused) as ei:
                    await c.send(to)
                assert ei.value.reason == reason
            nothing_in_redis(r)
            await c.send("bob@example.com", channel="email")
            job = await c.send(IN_MOBILE)
            assert (await c.status(job))["status"] == "queued"
        finally:
            await c.close()
        off = AsyncOTPClient(url=redis_server.url, hash_key=HASH_KEY, number_check=None)
        try:
            await off.send(NO_SUCH_AREA)
        finally:
            await off.close()
    asyncio.run(main())
    assert r.xlen("otpd:jobs") == 3


# --- Django -------------------------------------------------------------------

def test_django_errors_translate_number_refused(django_site):
    from otpd.django import errors as E
    for reason, message in (("premium_rate", CANT_TEXT), ("fixed_line", CANT_TEXT),
                            ("invalid_number", INVALID)):
        err = E.translate(NumberRefused(reason, UK_PREMIUM))
        assert type(err) is E.OTPNumberRefused and isinstance(err, E.OTPInvalidInput)
        assert err.kind == "number_refused" and err.reason == reason
        assert err.field == "phone" and err.about_recipient and err.status_code == 200
        assert str(err) == err.message == message
        assert not re.search(r"\+\d", err.message) and reason not in err.message
        assert UK_PREMIUM not in err.detail and "+4490" in err.detail  # masked, for logs


@pytest.fixture
def site(django_site, redis_server, r):
    """The example site (test_django_site's module set-up) on this test's
    Redis; no daemon: nothing is to be sent."""
    from django.test import Client, override_settings
    with override_settings(OTPD_REDIS_URL=redis_server.url):
        yield Client()


def phone_errors(resp):
    m = re.search(r'<ul class="errorlist" id="id_phone_errors"[^>]*>(.*?)</ul>',
                  resp.content.decode(), re.S)
    return [html.unescape(x) for x in re.findall(r"<li>(.*?)</li>", m.group(1), re.S)] if m \
        else []


PAGES = (("/otp/", {"channel": "sms"}), ("/forgot-password/", {"channel": "sms", "method": "sms"}))


def test_django_form_shows_the_refusal(site, r):
    """On the flow's form and the example's forgot-password page: a form error
    next to the phone field, not a 500, and nothing queued.  The example
    site plays a decoy for numbers without an account (OTPD_RECIPIENT_CHECK);
    the number check comes first, so those are refused the same way and the
    answer tells nothing about who has an account."""
    for url, data in PAGES:
        for to, message in ((UK_PREMIUM, CANT_TEXT), (UK_LANDLINE, CANT_TEXT),
                            (UK_VOIP, CANT_TEXT), (NO_SUCH_AREA, INVALID)):
            resp = site.post(url, dict(data, phone=to))
            assert resp.status_code == 200, (url, to, resp.status_code)
            assert phone_errors(resp) == [message], (url, to)
            assert 'aria-invalid="true"' in resp.content.decode()
    nothing_in_redis(r)


def test_django_settings(site, r):
    from django.core import checks
    from django.test import override_settings
    from otpd.django import OTPNumberRefused, conf, send_otp

    assert isinstance(conf.number_check(), NumberCheck)
    assert conf.number_check().refused == DEFAULT_REFUSED
    with pytest.raises(OTPNumberRefused) as ei:
        send_otp(UK_LANDLINE, "login")
    assert ei.value.reason == "fixed_line" and isinstance(ei.value.__cause__, NumberRefused)

    # A list: only those; the landline (no account: a decoy) gets through.
    with override_settings(OTPD_REFUSED_LINE_TYPES=["premium_rate"]):
        assert conf.number_check().refused == {"premium_rate"}
        assert site.post("/otp/", {"channel": "sms", "phone": UK_LANDLINE}).status_code == 302
        assert phone_errors(site.post("/otp/", {"channel": "sms", "phone": UK_PREMIUM})) == \
            [CANT_TEXT]
        job = send_otp(UK_LANDLINE, "login")  # sent, with the client built from the settings
        assert r.hget("otpd:job:" + job, "status") == "queued"
    with override_settings(OTPD_REFUSED_LINE_TYPES=[]):
        assert phone_errors(site.post("/otp/", {"channel": "sms", "phone": NO_SUCH_AREA})) == \
            [INVALID]
    # Off: any E.164 number is the daemon's to judge.
    with override_settings(OTPD_NUMBER_CHECK=False):
        assert conf.number_check() is None
        job = send_otp(UK_PREMIUM, "login")
        assert r.hget("otpd:job:" + job, "status") == "queued"
    assert r.xlen("otpd:jobs") == 2

    # The system check.
    from otpd.django.conf import check_settings
    assert [e.id for e in check_settings()] == []
    with override_settings(OTPD_REFUSED_LINE_TYPES=["premium_rate", "landline"]):
        [err] = [e for e in check_settings() if e.id == "otpd.E005"]
        assert "landline" in err.msg and "fixed_line" in err.msg
        assert isinstance(err, checks.Error)
    with override_settings(OTPD_NUMBER_CHECK=True):
        assert check_settings() == []
        saved, numbers.phonenumbers = numbers.phonenumbers, None
        try:
            assert [e.id for e in check_settings()] == ["otpd.E005"]
        finally:
            numbers.phonenumbers = saved

"""Codes people can read and use (issue 20): the SMS in the job's language
with its fallback chain, and the origin-bound line that browsers autofill
from, checked by the specification's own parsing steps."""
import re

import pytest

from conftest import HASH_KEY
from test_providers import NUMBER, sends, twilio_env

from otpd import OTPClient


def parse_origin_bound(message):
    """https://wicg.github.io/sms-one-time-codes/#parsing, step by step:
    (top-level host, code, embedded host or None), or None for failure."""
    line = message.replace("\r\n", "\n").replace("\r", "\n").split("\n")[-1]
    pos = 0

    def marked(marker):
        nonlocal pos
        if pos >= len(line) or line[pos] != marker:
            return None
        pos += 1
        if pos >= len(line):
            return None
        start = pos
        while pos < len(line) and line[pos] not in " \t\n\f\r":
            pos += 1
        return line[start:pos] or None

    if pos >= len(line):
        return None
    host = marked("@")
    if host is None or pos >= len(line) or line[pos] != " ":
        return None
    pos += 1
    if pos >= len(line):
        return None
    code = marked("#")
    if code is None:
        return None
    embedded = None
    if pos < len(line) and line[pos] == " ":
        pos += 1
        embedded = marked("@")
    return host, code, embedded


def test_the_parser_follows_the_spec_examples():
    assert parse_origin_bound("747723 is your code.\n\n@example.com #747723") == \
        ("example.com", "747723", None)
    assert parse_origin_bound("@example.com #747723 @ecommerce.example") == \
        ("example.com", "747723", "ecommerce.example")
    assert parse_origin_bound("@example.com #747723 @ecommerce.example $future")[2] == \
        "ecommerce.example"
    assert parse_origin_bound("something @example.com #747723") is None
    assert parse_origin_bound("#747723 @ecommerce.example @example.com") is None
    assert parse_origin_bound("@example.com code #747723") is None


@pytest.fixture
def site(redis_server):
    return OTPClient(url=redis_server.url, hash_key=HASH_KEY, number_check=None)


def body(mock):
    return [q for q in sends(mock) if q["path"].endswith("/Messages.json")][-1]["form"]["Body"]


@pytest.mark.parametrize("locale,words", [
    ("es", "Tu código de verificación es"),
    ("es-MX", "Tu código de verificación es"),        # falls back to es
    ("pt-BR", "Seu código de verificação é"),
    ("zh-TW", "您的驗證碼是"),                          # Traditional, by region
    ("hi", "आपका सत्यापन कोड"),
    ("sv", "Your verification code is"),              # none shipped: the default
])
def test_sms_in_the_jobs_language(otpd_factory, mock, site, locale, words):
    otpd_factory(twilio_env(mock))
    st = site.wait(site.send(NUMBER, locale=locale))
    assert st["status"] == "sent", st
    text = body(mock)
    assert words in text, text
    code = re.search(r"\d{6}", text).group(0)
    assert site.verify(NUMBER, code).ok


def test_webotp_line_and_app_hash(otpd_factory, mock, site):
    otpd_factory(twilio_env(mock, OTPD_WEBOTP_DOMAIN="www.example.com",
                            OTPD_ANDROID_APP_HASH="FA+9qCX9VSu"))
    st = site.wait(site.send(NUMBER, locale="fr"))
    assert st["status"] == "sent", st
    text = body(mock)
    host, code, embedded = parse_origin_bound(text)
    assert (host, embedded) == ("www.example.com", None)
    assert text.startswith("Votre code de vérification est " + code)
    assert text.endswith(" FA+9qCX9VSu")          # SMS Retriever: the message ends with the hash
    assert "\n\n@www.example.com #" in text
    assert site.verify(NUMBER, code).ok
    # A job's own hash wins; segments count the line (GSM-7 French stays one segment).
    st = site.wait(site.send("+14155550123", app_hash="abcdefghij+"))
    assert body(mock).endswith(" abcdefghij+") and st["segments"] == "1"

"""django-otp devices whose codes otpd makes, sends and checks.

Why ``Device`` and not ``SideChannelDevice``
--------------------------------------------
django-otp's ``SideChannelDevice`` is a ``Device`` plus exactly three things:
a ``token`` column holding the code in clear, a ``valid_until`` column, and a
``verify_token()`` that compares the typed token with that column.  otpd does
all three itself and better: the daemon makes the code, Redis keeps only its
keyed MAC (protocol section 2) with the code's lifetime as the key's TTL, and
the web app's verify is an atomic Lua script (section 3).  Subclassing
``SideChannelDevice`` would therefore add two columns that must stay empty
forever and an inherited ``generate_token()`` that, if anyone called it,
would write a usable code in clear into the database; and we would override
its ``verify_token()`` anyway.  So the devices subclass ``Device`` directly.
They are still django-otp *interactive* devices: ``Device.is_interactive()``
is true for any device that overrides ``generate_challenge()``, which is what
the ``otp_challenge`` button of ``OTPAuthenticationForm`` calls.

Why no ``ThrottlingMixin``
--------------------------
otpd already caps wrong guesses per code (``max_attempts``, default 5, the
daemon's ``OTPD_VERIFY_ATTEMPTS``), atomically in Redis, shared by every web
process, and resets the count only with a new code.  django-otp's
``ThrottlingMixin`` would add a second, per-device, exponential back-off kept
in the database, which double-counts the same guesses, survives the new code
that otpd's lock tells the user to request, and needs two extra columns and a
``save()`` per guess.  ``verify_is_allowed()`` instead reads otpd's own record
(one ``HMGET``, which the web app's Redis ACL user may run) so that a locked
code is reported as such ("request a new code") before the form spends a
call on it.  It is advisory: the Lua script enforces the cap whatever the
result.  Sending is limited by otpd too (per number, per country, global;
section 7); ``generate_challenge()`` reports those refusals as errors.
"""
import logging
import re
import time

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.core.validators import RegexValidator
from django.db import models
from django_otp.models import Device
from redis.exceptions import RedisError

from ... import NumberRefused, OptedOut, RateLimited, mask_to
from ... import protocol as P
from ...client import _check_target
from .. import get_client
from . import errors

log = logging.getLogger(__name__)

# How long generate_challenge() waits, at most, for the daemon to take the job
# (status no longer "queued"); 0 does not wait.  See OtpdDevice.generate_challenge.
DEFAULT_CHALLENGE_WAIT = 2.0

# What people type in a number and otpd does not want: spaces, dots, dashes, brackets.
_PUNCT = re.compile(r"[\s().-]")

LOCKED_MESSAGE = "Too many wrong codes. Request a new code."
UNAVAILABLE_MESSAGE = "The code service is not available right now. Try again in a moment."


def normalize_destination(value, channel):
    """The recipient as otpd keys it, by the client's own rules (the very check
    OTPClient.send and .verify run): an E.164 number with the punctuation people
    type removed, or an e-mail address trimmed and lower-cased.  ValueError if
    otpd would refuse it."""
    if channel == "sms" and isinstance(value, str):
        value = _PUNCT.sub("", value)
    # "login" is a fixed, valid purpose: only the recipient is checked here.
    return _check_target(value, "login", channel)


def challenge_wait():
    """settings.OTPD_CHALLENGE_WAIT in seconds (default 2.0), never negative."""
    v = getattr(settings, "OTPD_CHALLENGE_WAIT", DEFAULT_CHALLENGE_WAIT)
    try:
        return max(0.0, float(v))
    except (TypeError, ValueError):
        return DEFAULT_CHALLENGE_WAIT


def _client():
    """otpd.django's client; broken otpd settings are the unavailable error
    (logged: the system check otpd.E001/E002 names them)."""
    try:
        return get_client()
    except ImproperlyConfigured as e:
        log.error("otpd devices: the otpd settings are broken: %s", e)
        raise errors.unavailable("ImproperlyConfigured: %s" % e) from e


def _text(v):
    return v.decode() if isinstance(v, bytes) else v


def _int(v, default):
    try:
        return int(_text(v))
    except (TypeError, ValueError):
        return default


class OtpdDevice(Device):
    """The common part of SMSDevice and EmailDevice (abstract).

    Subclasses set ``channel`` ("sms" or "email"), ``channel_label`` (for the
    messages) and ``destination_field`` (the model field with the recipient).

    .. attribute:: purpose

        otpd's purpose for this device's codes.  A code verifies only for the
        purpose and recipient it was sent for, so two devices with the same
        recipient and purpose share one code of record.

    .. attribute:: last_job_id, last_verify

        Not stored: the job id of the last ``generate_challenge()`` and the
        ``otpd.VerifyResult`` of the last ``verify_token()`` on this instance
        (``None`` if it did not reach otpd), for views that want to say more
        than django-otp's forms do (e.g. ``last_verify.attempts_left``).
    """

    channel = None
    channel_label = None
    destination_field = None
    invalid_destination_message = None

    purpose = models.CharField(
        max_length=32, default="login",
        validators=[RegexValidator(r"\A[a-z0-9_]{1,32}\Z",
                                   "Use 1 to 32 lower-case letters, digits or _.")],
        help_text="otpd purpose of the codes ([a-z0-9_], at most 32); a code works only "
                  "for the purpose it was sent for.")

    last_job_id = None
    last_verify = None

    class Meta:
        abstract = True

    # --- the recipient ---------------------------------------------------

    @property
    def destination(self):
        """The recipient as stored (normalised when the model was validated)."""
        return getattr(self, self.destination_field)

    def otpd_destination(self):
        """The recipient as otpd keys it; raises the invalid-destination OTPError."""
        try:
            return normalize_destination(self.destination, self.channel)
        except ValueError:
            raise errors.invalid_destination(self.channel) from None

    @property
    def masked_destination(self):
        """'+1415*****71' or 'a***e@example.com', as otpd's status records show it."""
        try:
            return mask_to(normalize_destination(self.destination, self.channel))
        except ValueError:
            return "***"

    def clean_fields(self, exclude=None):
        """Normalise the recipient with the client's rules before the field checks,
        so that a saved device is one otpd can send to; a recipient otpd would
        refuse gets this model's message alone (not also the field's own)."""
        errors = {}
        field = self.destination_field
        value = self.destination
        if field not in (exclude or ()) and value not in (None, ""):
            try:
                setattr(self, field, normalize_destination(value, self.channel))
            except ValueError:
                errors[field] = [ValidationError(self.invalid_destination_message,
                                                 code="invalid")]
                exclude = list(exclude or ()) + [field]
        try:
            super().clean_fields(exclude)
        except ValidationError as e:
            errors = e.update_error_dict(errors)
        if errors:
            raise ValidationError(errors)

    # --- django-otp's device API ------------------------------------------

    def send_options(self):
        """Extra keyword arguments for OTPClient.send(): ttl, digits, max_attempts,
        message, provider.  None here, so the daemon's configured defaults apply;
        override in a subclass or proxy model to change them."""
        return {}

    def generate_challenge(self):
        """Ask otpd to send a code to this device; return the message for the user
        ("Sent by SMS to +1415*****71").

        While the last code for this recipient and purpose is still valid, otpd
        sends that same code again (the message then says so), keeping its expiry
        and wrong guesses; a locked, used or expired code is replaced by a new one.

        Raises otpd.django's OTPError family (see errors.py) instead of the
        client's exceptions: OTPRateLimited (a send limit; retry_after),
        OTPOptedOut (the number replied STOP), OTPCountryNotAllowed (a country
        the daemon does not serve), OTPNumberRefused (an invalid number or a
        line type OTPD_REFUSED_LINE_TYPES refuses), OTPInvalidInput (the
        device's recipient, purpose or send options), OTPServiceUnavailable
        (Redis out of reach, or broken otpd settings), OTPSendFailed (the
        daemon ended the job without sending).  django-otp's form shows str(e)
        to the user.

        Most refusals are known before anything is queued (the client runs the
        daemon's limits script in check mode).  The country list, a limit lost
        in a race and the cap on resends of one code only the daemon applies, so
        this then waits up to settings.OTPD_CHALLENGE_WAIT seconds (default 2;
        0: no wait) for the daemon to take the job, which it does within
        milliseconds when it is running.  A job still queued after that is
        reported as sent: the daemon sends it when it catches up.
        """
        to = self.otpd_destination()
        client = _client()
        try:
            job = client.send(to, self.purpose, channel=self.channel, **self.send_options())
        except RateLimited as e:
            raise errors.rate_limited(e.retry_after, e.reason) from e
        except OptedOut as e:
            raise errors.opted_out(str(e)) from e
        except NumberRefused as e:  # the client's number check (OTPD_NUMBER_CHECK)
            raise errors.number_refused(e.reason, str(e)) from e
        except ValueError as e:
            log.error("otpd %s device %s: send refused: %s", self.channel, self.pk, e)
            raise errors.invalid_settings(str(e)) from e
        except RedisError as e:
            # The job may have been queued before the reply was lost; sending
            # again is left to the user (and to otpd's limits).
            log.warning("otpd %s device %s: Redis error while sending: %r", self.channel,
                        self.pk, e)
            raise errors.unavailable("%s: %s" % (type(e).__name__, e)) from e
        self.last_job_id = job
        st = self._taken(client, job)
        status, code = st.get("status"), st.get("error_code", "")
        detail = "job %s %s %s" % (job, status, code)
        if status == P.RATE_LIMITED:
            retry_at = _int(st.get("retry_at_ms"), None)
            raise errors.rate_limited(None if retry_at is None
                                      else (retry_at - time.time() * 1000) / 1000.0, code)
        if status == P.FAILED:
            if code == "country_not_allowed":
                raise errors.country_not_allowed(detail)
            if code == "opted_out":
                raise errors.opted_out(detail)
            if code != "superseded":  # superseded: a newer request's code is on its way
                raise errors.not_sent(detail)
        elif status in (P.EXPIRED, P.REJECTED, P.UNDELIVERED):
            raise errors.not_sent(detail)
        again = "again " if st.get("code_source") == "resent" else ""
        return "Sent %sby %s to %s" % (again, self.channel_label, mask_to(to))

    def _taken(self, client, job):
        """The job's status record once the daemon has taken it (or the wait ran out)."""
        deadline = time.monotonic() + challenge_wait()
        pause = 0.01
        while True:
            try:
                st = client.status(job)
            except RedisError:
                return {}  # the job is queued; its status is only a courtesy
            if st.get("status", P.QUEUED) != P.QUEUED or time.monotonic() >= deadline:
                return st
            time.sleep(pause)
            pause = min(2 * pause, 0.1)

    def verify_is_allowed(self):
        """(False, {"error_message": ...}) while otpd's code of record for this
        device is locked (too many wrong guesses), the recipient is invalid, or
        Redis cannot be reached; (True, None) otherwise.

        A read-only look at otpd's record, so that the form can say "request a
        new code" rather than "invalid token".  otpd's verify script enforces the
        cap on its own, atomically, so verify_token() does not repeat this check.
        """
        try:
            to = self.otpd_destination()
        except errors.OTPError as e:
            return False, {"error_message": str(e)}
        try:
            client = _client()
        except errors.OTPError:
            return False, {"error_message": UNAVAILABLE_MESSAGE}
        try:
            locked, attempts, cap = client.redis.hmget(
                P.otp_key(client.prefix, self.purpose, to), "locked", "attempts", "max_attempts")
        except RedisError as e:
            log.warning("otpd %s device %s: Redis error while checking: %r", self.channel,
                        self.pk, e)
            return False, {"error_message": UNAVAILABLE_MESSAGE}
        # The same rule as verify.lua (protocol section 3); a missing record is not locked.
        if _text(locked) == "1" or _int(attempts, 0) >= _int(cap, 5):
            return False, {"error_message": LOCKED_MESSAGE, "otpd_status": "locked"}
        return True, None

    def verify_token(self, token):
        """Check `token` with otpd's atomic verify: True only if it is this device's
        current code, which is then used up.  A wrong code spends one of the code's
        attempts (input that is not 4 to 10 digits spends none); once they are
        spent, even the right code is refused until a new one is sent.  Errors
        (an invalid recipient, Redis out of reach) count as False."""
        self.last_verify = None
        if not isinstance(token, str):
            return False
        try:
            to = self.otpd_destination()
            res = _client().verify(to, token, self.purpose, self.channel)
        except errors.OTPError:
            return False
        except (ValueError, RedisError) as e:
            log.warning("otpd %s device %s: verify failed: %r", self.channel, self.pk, e)
            return False
        self.last_verify = res
        return res.ok


class SMSDevice(OtpdDevice):
    """A phone that receives its codes by SMS through otpd.

    .. attribute:: number

        The phone number in E.164 (+14155552671).  full_clean(), which model
        forms and the admin run, removes spaces, dots, dashes and brackets and
        refuses anything else otpd would.
    """

    channel = "sms"
    channel_label = "SMS"
    destination_field = "number"
    invalid_destination_message = ("Enter the number in international format, with + and "
                                   "the country code, e.g. +14155552671.")

    # Room for the spaces and dashes people type; full_clean() stores E.164 (at most 16).
    number = models.CharField(max_length=32,
                              help_text="The phone number in E.164 format, e.g. +14155552671.")

    class Meta:
        verbose_name = "SMS device"


class EmailDevice(OtpdDevice):
    """An e-mail address that receives its codes through otpd's e-mail channel.

    .. attribute:: email

        The address; full_clean() trims and lower-cases it as otpd keys it,
        and refuses addresses otpd would not send to.
    """

    channel = "email"
    channel_label = "e-mail"
    destination_field = "email"
    invalid_destination_message = "Enter an e-mail address like alice@example.com."

    email = models.EmailField(max_length=254, help_text="The address the codes are sent to.")

    class Meta:
        verbose_name = "e-mail device"

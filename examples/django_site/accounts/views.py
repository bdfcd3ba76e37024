"""Forgot password by e-mail or SMS, the guide's two methods: address or phone
number -> code -> new password.

The session carries the flow: "pwreset" while a code is pending (to, channel,
job, user), "pwreset_ok" once the code was right.  A number with no account gets
the same pages and answers, but nothing is sent: its progress and its wrong
codes are simulated here, so the site does not tell who has an account.
"""
import re
import secrets
import time

from django.contrib.auth import get_user_model
from django.contrib.auth.forms import SetPasswordForm
from django.http import JsonResponse
from django.shortcuts import redirect, render
from django.template.defaultfilters import pluralize
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from otpd import mask_to
from otpd.django import OTPError, OTPRateLimited, otp_status, send_otp, verify_otp

from .forms import CodeForm, ForgotPasswordForm
from .models import Profile

PURPOSE = "password_reset"
CODE_TTL = 300          # seconds a code is valid (sent with each job)
MAX_ATTEMPTS = 5        # wrong codes before it locks (sent with each job)
RESET_WINDOW = 600      # seconds to choose a new password after a right code
FAKE_SEND_S = 1.0       # how long a simulated send "takes"

STATUS_TEXT = {
    "queued": "Waiting to be sent…",
    "sending": "Sending…",
    "retrying": "Sending (the SMS provider is slow, retrying)…",
    "sent": "Sent. Check your phone.",
    "delivered": "Delivered to your phone.",
    "undelivered": "Your carrier could not deliver the SMS.",
    "failed": "Sending failed.",
    "expired": "The code expired before it could be sent.",
    "rejected": "The request was rejected.",
    "duplicate": "Sent. Check your phone.",
    "unknown": "This request is unknown or too old.",
}


def _label(st):
    if st["status"] == "rate_limited":
        if st.get("retry_after") is not None:
            return "Too many codes requested. Try again in %d seconds." % st["retry_after"]
        return "Too many codes requested. Try again later."
    return STATUS_TEXT.get(st["status"], st["status"])


def _state(request, job_id=None):
    st = request.session.get("pwreset")
    if st is None or (job_id is not None and st["job"] != job_id):
        return None
    return st


def _status(state):
    if state["user"] is not None:
        st = otp_status(state["job"])
    else:
        done = time.time() - state["at"] >= FAKE_SEND_S
        st = {"id": state["job"], "status": "sent" if done else "sending", "final": done,
              "error": "", "error_code": "", "to": mask_to(state["to"]),
              "attempts": 1, "retry_after": None}
    st["label"] = _label(st)
    return st


def _fake_verify(request, state, code):
    """What verify would answer for a number that got no code."""
    if not re.fullmatch(r"[0-9]{4,10}", code.strip()):
        return "invalid", 0
    if time.time() > state["at"] + CODE_TTL:
        return "expired", 0
    if state["wrong"] >= MAX_ATTEMPTS:
        return "locked", 0
    state["wrong"] += 1
    request.session.modified = True
    if state["wrong"] >= MAX_ATTEMPTS:
        return "locked", 0
    return "mismatch", MAX_ATTEMPTS - state["wrong"]


def home(request):
    return render(request, "accounts/home.html")


def forgot_password(request):
    form = ForgotPasswordForm(request.POST or None)
    status = 200
    if request.method == "POST" and form.is_valid():
        channel = form.cleaned_data["method"]
        if channel == "email":
            to = form.cleaned_data["email"].strip().lower()
            user = (get_user_model().objects.filter(email__iexact=to, is_active=True)
                    .order_by("pk").first())
        else:
            to = form.cleaned_data["phone"]
            profile = (Profile.objects.select_related("user")
                       .filter(phone=to, user__is_active=True).first())
            user = profile.user if profile is not None else None
        try:
            if user is not None:
                job = send_otp(to, PURPOSE, ttl=CODE_TTL, max_attempts=MAX_ATTEMPTS,
                               channel=channel)
            else:
                job = "%s-%s" % (PURPOSE, secrets.token_hex(8))  # looks like a real one
        except OTPRateLimited as e:
            status = 429
            form.add_error(None, "Too many codes were requested for this %s. " % (
                "address" if channel == "email" else "number") + (
                "Try again in %d seconds." % e.retry_after if e.retry_after is not None
                else "Try again later."))
        except OTPError as e:
            form.add_error("email" if channel == "email" else "phone", str(e))
        else:
            request.session.pop("pwreset_ok", None)
            request.session["pwreset"] = {
                "to": to, "channel": channel, "job": job, "at": time.time(), "wrong": 0,
                "user": user.pk if user is not None else None,
            }
            return redirect("code_sent", job_id=job)
    return render(request, "accounts/forgot_password.html", {"form": form}, status=status)


def _render_sent(request, state, error=None, renew=False):
    return render(request, "accounts/code_sent.html", {
        "job_id": state["job"], "to": mask_to(state["to"]),
        "st": _status(state), "form": CodeForm(), "error": error, "renew": renew,
    })


@require_GET
@never_cache
def code_sent(request, job_id):
    state = _state(request, job_id)
    if state is None:
        return redirect("forgot_password")
    return _render_sent(request, state)


@require_GET
@never_cache
def code_status(request, job_id):
    state = _state(request, job_id)
    if state is None:  # only the session that asked may watch
        return JsonResponse({"id": job_id, "status": "unknown", "final": True,
                             "label": STATUS_TEXT["unknown"]}, status=404)
    return JsonResponse(_status(state))


@require_POST
@never_cache
def verify_code(request):
    state = _state(request)
    if state is None:
        return redirect("forgot_password")
    code = request.POST.get("code", "")
    if state["user"] is not None:
        res = verify_otp(state["to"], code, PURPOSE, state.get("channel", "sms"))
        result, left = res.status, res.attempts_left
    else:
        result, left = _fake_verify(request, state, code)
    if result == "ok":
        del request.session["pwreset"]
        request.session.cycle_key()
        request.session["pwreset_ok"] = {"user": state["user"], "at": time.time()}
        return redirect("new_password")
    error = {
        "mismatch": "Wrong code, %d attempt%s left." % (left, pluralize(left)),
        "locked": "Too many wrong codes, request a new one.",
        "expired": "This code has expired, request a new one.",
    }.get(result, "Enter the digits from the SMS.")
    return _render_sent(request, state, error, renew=result in ("locked", "expired"))


@never_cache
def new_password(request):
    ok = request.session.get("pwreset_ok")
    user = None
    if ok and time.time() - ok["at"] <= RESET_WINDOW:
        user = get_user_model().objects.filter(pk=ok["user"], is_active=True).first()
    if user is None:
        request.session.pop("pwreset_ok", None)
        return redirect("forgot_password")
    form = SetPasswordForm(user, request.POST or None)
    if request.method == "POST" and form.is_valid():
        form.save()
        del request.session["pwreset_ok"]
        return redirect("reset_done")
    return render(request, "accounts/new_password.html", {"form": form})


def done(request):
    return render(request, "accounts/done.html")

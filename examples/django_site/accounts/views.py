"""Forgot password by e-mail or SMS, the guide's two methods: address or phone
number -> code -> new password, built on otpd.django's flow
(otpd.django.views) with this site's URLs and templates.

A recipient with no account gets the same pages and answers, but nothing is
sent: should_send() says no, and the flow plays a decoy (its progress and its
wrong codes are simulated), so the site does not tell who has an account.
After a right code the flow leaves a proof in the session (verified()),
which opens the new-password page for RESET_WINDOW seconds and one change.

The same site also mounts the flow as it comes, at /otp/ ("log in with a
code"): settings.OTPD_* configure it, and on_login_code() below, connected to
otp_verified, logs the user in.

The pending request stays in the session under "pwreset" (to, channel, job,
at, wrong, and user: the account's pk, None for a decoy), which
async_views.py reads through _state(), _status() and _label().
"""
from django.contrib.auth import get_user_model, login
from django.contrib.auth.forms import SetPasswordForm
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache

from otpd.django import views as otp_views
from otpd.django.errors import OTPSendFailed, error_for_status

from .forms import ForgotPasswordForm
from .models import Profile

PURPOSE = "password_reset"
CODE_TTL = 300          # seconds a code is valid (sent with each job)
MAX_ATTEMPTS = 5        # wrong codes before it locks (sent with each job)
RESET_WINDOW = 600      # seconds to choose a new password after a right code
LOGIN_PURPOSE = "login"  # settings.OTPD_PURPOSE, the /otp/ flow's
FAKE_SEND_S = otp_views.DECOY_SEND_S  # how long a decoy "takes"
# The status JSON's keys (the flow's kind and message are told by the label here).
JSON_FIELDS = ("id", "status", "final", "error", "error_code", "to", "attempts", "retry_after",
               "label")


def find_user(to, channel):
    """The active user a phone number or an e-mail address belongs to, or None."""
    if channel == "email":
        return (get_user_model().objects.filter(email__iexact=to, is_active=True)
                .order_by("pk").first())
    profile = (Profile.objects.select_related("user")
               .filter(phone=to, user__is_active=True).first())
    return profile.user if profile is not None else None


def has_account(to, channel):
    """settings.OTPD_RECIPIENT_CHECK: codes go only to known users."""
    return find_user(to, channel) is not None


def on_login_code(sender, request, to, channel, purpose, **kwargs):
    """otp_verified receiver: a right code of the /otp/ flow logs its owner in."""
    if purpose != LOGIN_PURPOSE:
        return
    user = find_user(to, channel)
    if user is not None:
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")


def _label(st, channel="sms"):
    """The status line: the OTPError's message when a refusal explains it
    (over a limit, opted out, country, bad number), else the status's label."""
    err = error_for_status(st)
    if err is not None and not isinstance(err, OTPSendFailed):
        return err.message
    return otp_views.status_label(st, channel)


STATUS_TEXT = {s: _label({"status": s}) for s in (
    "queued", "sending", "retrying", "sent", "delivered", "undelivered", "failed", "expired",
    "rejected", "duplicate", "unknown")}


class ResetFlow:
    """What the three forgot-password views share: purpose, options, URLs."""

    purpose = PURPOSE
    channels = ("email", "sms")
    send_options = {"ttl": CODE_TTL, "max_attempts": MAX_ATTEMPTS}
    success_url = "new_password"
    show_provider_error = True  # the page shows the provider's hint (a Twilio trial, ...)
    template_name = "accounts/code_sent.html"
    json_fields = JSON_FIELDS

    def pending_key(self):
        return "pwreset"

    def get_label(self, st, channel):
        return _label(st, channel)

    def get_start_url(self):
        return reverse("forgot_password")

    def get_progress_url(self, pending):
        return reverse("code_sent", args=[pending["job"]])

    def get_status_url(self, pending):
        return reverse("code_status", args=[pending["job"]])

    def get_verify_url(self, pending):
        return reverse("verify_code")


class ForgotPasswordView(ResetFlow, otp_views.SendCodeView):
    form_class = ForgotPasswordForm
    template_name = "accounts/forgot_password.html"

    def should_send(self, to, channel):
        self.user = find_user(to, channel)
        return self.user is not None

    def make_pending(self, to, channel, job, decoy):
        return dict(super().make_pending(to, channel, job, decoy),
                    user=None if decoy else self.user.pk)


class CodeSentView(ResetFlow, otp_views.ProgressView):
    pass


class VerifyCodeView(ResetFlow, otp_views.VerifyCodeView):
    pass


# The names urls.py routes to.
forgot_password = ForgotPasswordView.as_view()
code_sent = CodeSentView.as_view()
code_status = CodeSentView.as_view(response_format="json")  # only the session that asked
verify_code = VerifyCodeView.as_view()


def _state(request, job_id=None):
    """The pending request of this session (for job_id, if given), or None."""
    st = request.session.get("pwreset")
    if not isinstance(st, dict) or (job_id is not None and st.get("job") != job_id):
        return None
    return st


def _status(state):
    """The status JSON for a pending request, as code_status answers it."""
    view = CodeSentView()
    st, _ = view.get_status(state)
    return view.json_status(st)


def home(request):
    return render(request, "accounts/home.html")


@never_cache
def new_password(request):
    proof = otp_views.verified(request, PURPOSE, max_age=RESET_WINDOW)
    user = find_user(proof["to"], proof["channel"]) if proof else None
    if user is None:
        otp_views.verified(request, PURPOSE, consume=True)
        return redirect("forgot_password")
    form = SetPasswordForm(user, request.POST or None)
    if request.method == "POST" and form.is_valid():
        form.save()
        otp_views.verified(request, PURPOSE, consume=True)  # one change per code
        return redirect("reset_done")
    return render(request, "accounts/new_password.html", {"form": form})


def done(request):
    return render(request, "accounts/done.html")

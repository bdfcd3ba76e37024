"""The flow "send me a code -> progress -> enter the code", as class-based views.

    path("otp/", include("otpd.django.urls"))     # /otp/, /otp/progress/, /otp/verify/

SendCodeView shows OTPTargetForm (phone or e-mail), queues the code and
redirects to ProgressView, which shows the status (HTML, polled as JSON by a
small inline script and reloaded without JS) and the code form, posted to
VerifyCodeView.  A right code stores a proof in the session (verified()),
sends the otp_verified signal and redirects to the success URL: the `next`
the send page was given, else the view's success_url, else OTPD_SUCCESS_URL.

The session holds the pending request under "otpd_pending:<purpose>": the
recipient, channel, purpose and job id, never the code (the site never has
it).  Every OTPError is shown on the form it belongs to, never as a 500.

A site that must not tell who has an account sets OTPD_RECIPIENT_CHECK (or
overrides should_send): for a recipient it turns down nothing is sent, and
the pages, the JSON and the wrong-code answers look the same as for a real
code (a decoy).  The views are made to be subclassed: purpose, send_options,
channels, success_url, the templates, the URL getters and the hooks
should_send, send_code and code_verified.

OTPD_CHANNELS may offer "voice" too ("Call me with the code": the daemon
calls the number and reads the code out).  Each send carries the active
language as the job's locale (send_otp, OTPD_LOCALE_FROM_REQUEST), so with
LocaleMiddleware the SMS, e-mail or call is in the language of the page.

Autofill: the code field is autocomplete="one-time-code" and the progress
page runs otpd/_webotp.html, which on browsers with the WebOTP API (Chrome
on Android) reads the code from the SMS, fills it in and submits the form.
That works only when the SMS ends with the origin-bound line
"@www.example.com #123456" for the page's host: the daemon writes it when
OTPD_WEBOTP_DOMAIN is set to that host.
"""
import re
import secrets
import time

from django.http import JsonResponse
from django.shortcuts import redirect, resolve_url
from django.urls import reverse
from django.utils.cache import add_never_cache_headers, patch_vary_headers
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext, ngettext
from django.views.generic import FormView, View
from django.views.generic.base import TemplateResponseMixin

from ..client import mask_to
from . import conf
from .errors import OTPError, error_for_status
from .forms import OTPCodeForm, OTPTargetForm
from .helpers import check_recipient, otp_status, send_otp, verify_otp
from .signals import otp_sent, otp_verified

PENDING_KEY = "otpd_pending:%s"
VERIFIED_KEY = "otpd_verified:%s"
DECOY_SEND_S = 1.0     # how long a decoy "takes" to be sent
DEFAULT_TTL = 300      # the daemon's defaults, for a decoy without send_options
DEFAULT_ATTEMPTS = 5


def verified(request, purpose=None, max_age=600, consume=False):
    """The proof that this session typed a right code for `purpose` (default
    OTPD_PURPOSE) within max_age seconds: {"to", "channel", "purpose",
    "job_id", "at"}, or None.  consume=True removes it (a one-time permission)."""
    key = VERIFIED_KEY % (purpose or conf.purpose())
    proof = request.session.get(key)
    if consume:
        request.session.pop(key, None)
    if not isinstance(proof, dict) or (max_age is not None and time.time() - proof["at"] > max_age):
        return None
    return proof


def status_label(st, channel="sms"):
    """A short sentence for a status (otp_status(), plus the flow's message:
    rate_limited and unavailable are told by it)."""
    s = st["status"]
    if st.get("message") and s in ("rate_limited", "unavailable"):
        return st["message"]
    email = channel == "email"
    if channel == "voice":
        voice = {
            "sent": gettext("We are calling you. Answer your phone."),
            "duplicate": gettext("We are calling you. Answer your phone."),
            "delivered": gettext("The call was answered."),
            "undelivered": gettext("The call could not be completed."),
        }
        if s in voice:
            return voice[s]
    labels = {
        "queued": gettext("Waiting to be sent…"),
        "sending": gettext("Sending…"),
        "retrying": gettext("Sending (the provider is slow, retrying)…"),
        "sent": gettext("Sent. Check your inbox.") if email else gettext("Sent. Check your phone."),
        "duplicate": gettext("Sent. Check your inbox.") if email
        else gettext("Sent. Check your phone."),
        "delivered": gettext("Delivered.") if email else gettext("Delivered to your phone."),
        "undelivered": gettext("The e-mail could not be delivered.") if email
        else gettext("Your carrier could not deliver the SMS."),
        "failed": gettext("Sending failed."),
        "expired": gettext("The code expired before it could be sent."),
        "rejected": gettext("The request was rejected."),
        "rate_limited": gettext("Too many codes were requested."),
        "unknown": gettext("This request is unknown or too old."),
    }
    return labels.get(s, s)


def fit_fallback(options, channel):
    """The send options for a code by `channel`, with their "fallback" (say
    OTPD_SEND_OPTIONS' ["voice", "email"]) cut to what that code can take:
    none for an e-mail code, never the code's own channel, and "email" only
    with a fallback_email.  The other options are left as they are."""
    fallback = options.get("fallback")
    if not isinstance(fallback, (list, tuple)):
        return options  # none, or not a list: the client says what is wrong with it
    keep = [] if channel == "email" else [
        c for c in fallback if c != channel and (c != "email" or options.get("fallback_email"))]
    options = dict(options)
    if keep:
        options["fallback"] = keep
    else:
        options.pop("fallback")
    return options


class OTPFlowMixin(TemplateResponseMixin):
    """What the three views share: settings, the session, URLs, the status."""

    purpose = None              # None: OTPD_PURPOSE
    channels = None             # None: OTPD_CHANNELS
    send_options = None         # None: OTPD_SEND_OPTIONS
    success_url = None          # None: OTPD_SUCCESS_URL
    start_url = progress_url = verify_url = None   # None: this namespace's send/progress/verify
    show_provider_error = False  # True: JSON and page carry the record's error and error_code
    template_name = "otpd/progress.html"
    poll_ms = 1000              # how often the page's script asks for the status
    refresh_s = 2               # without JavaScript, the page reloads this often until final
    code_form_class = OTPCodeForm
    json_fields = None          # the JSON's keys (None: all of get_status's)
    webotp = True               # the progress page fills the code by WebOTP (_webotp.html)

    # --- settings ---------------------------------------------------------

    def get_purpose(self):
        return self.purpose or conf.purpose()

    def get_channels(self):
        return tuple(self.channels or conf.channels())

    def get_send_options(self):
        return dict(conf.send_options() if self.send_options is None else self.send_options)

    # --- the session -------------------------------------------------------

    def pending_key(self):
        return PENDING_KEY % self.get_purpose()

    def get_pending(self):
        """The pending request of this session for this purpose (and for the
        URL's job_id, if it has one), or None."""
        p = self.request.session.get(self.pending_key())
        if not isinstance(p, dict) or p.get("purpose") != self.get_purpose():
            return None
        job_id = self.kwargs.get("job_id")
        if job_id is not None and p.get("job") != job_id:
            return None
        return p

    def save_pending(self, pending):
        self.request.session[self.pending_key()] = pending

    # --- URLs ----------------------------------------------------------------

    def url(self, name, **kwargs):
        """`name` in the namespace this view was reached through."""
        ns = getattr(self.request.resolver_match, "namespace", "")
        return reverse("%s:%s" % (ns, name) if ns else name, kwargs=kwargs or None)

    def get_start_url(self):
        return resolve_url(self.start_url) if self.start_url else self.url("send")

    def get_progress_url(self, pending):
        return resolve_url(self.progress_url) if self.progress_url else self.url("progress")

    def get_status_url(self, pending):
        """What the progress page's script polls."""
        return self.get_progress_url(pending) + "?format=json"

    def get_verify_url(self, pending):
        return resolve_url(self.verify_url) if self.verify_url else self.url("verify")

    def get_success_url(self, pending):
        return pending.get("next") or resolve_url(self.success_url or conf.success_url())

    # --- the status ----------------------------------------------------------

    def get_status(self, pending):
        """(status dict, HTTP status): otp_status() plus label, kind and message
        (the OTPError of a failure, "" otherwise).  error and error_code are
        blank unless show_provider_error."""
        try:
            st = self.decoy_status(pending) if pending.get("decoy") else otp_status(pending["job"])
        except OTPError as e:
            st = {"id": pending["job"], "status": "unavailable", "final": False, "error": "",
                  "error_code": "", "to": mask_to(pending["to"]), "attempts": 0,
                  "retry_after": None, "kind": e.kind, "message": e.message}
            st["label"] = self.get_label(st, pending["channel"])
            return st, e.status_code
        err = error_for_status(st)
        st["kind"] = err.kind if err else ""
        st["message"] = err.message if err else ""
        st["label"] = self.get_label(st, pending["channel"])
        if not self.show_provider_error:
            st["error"] = st["error_code"] = ""
        return st, 200

    def get_label(self, st, channel):
        """The sentence the page shows for the status (status_label())."""
        return status_label(st, channel)

    def json_status(self, st):
        """What the JSON carries of a status: json_fields of it, or all."""
        return st if self.json_fields is None else {k: st.get(k) for k in self.json_fields}

    def decoy_status(self, pending):
        done = time.time() - pending["at"] >= DECOY_SEND_S
        return {"id": pending["job"], "status": "sent" if done else "sending", "final": done,
                "error": "", "error_code": "", "to": mask_to(pending["to"]), "attempts": 1,
                "retry_after": None}

    def render_progress(self, pending, form=None, status=200, **extra):
        st, code = self.get_status(pending)
        ctx = {
            "view": self, "st": st, "job_id": pending["job"], "to": mask_to(pending["to"]),
            "channel": pending["channel"], "purpose": pending["purpose"],
            "form": form or self.code_form_class(channel=pending["channel"]),
            "status_url": self.get_status_url(pending),
            "verify_url": self.get_verify_url(pending), "start_url": self.get_start_url(),
            "poll_ms": self.poll_ms, "refresh_s": self.refresh_s,
            "show_provider_error": self.show_provider_error,
            "webotp": self.webotp and pending["channel"] != "email",
        }
        ctx.update(extra)
        resp = self.render_to_response(ctx, status=status if status != 200 else code)
        add_never_cache_headers(resp)
        return resp


class SendCodeView(OTPFlowMixin, FormView):
    """GET: the form.  POST: queue a code and redirect to the progress page,
    or show the OTPError on the form (429 rate limited, 503 unavailable)."""

    form_class = OTPTargetForm
    template_name = "otpd/send.html"

    def get_form_kwargs(self):
        kw = super().get_form_kwargs()
        kw["channels"] = self.get_channels()
        return kw

    def get_next(self):
        """A safe `next` (GET or POST) to go to after a right code, or ""."""
        nxt = self.request.POST.get("next") or self.request.GET.get("next") or ""
        ok = url_has_allowed_host_and_scheme(nxt, allowed_hosts={self.request.get_host()},
                                             require_https=self.request.is_secure())
        return nxt if ok else ""

    def get_context_data(self, **kwargs):
        kwargs.setdefault("next", self.get_next())
        return super().get_context_data(**kwargs)

    def should_send(self, to, channel):
        """Whether `to` really gets a code; default OTPD_RECIPIENT_CHECK, else yes."""
        check = conf.recipient_check()
        return True if check is None else bool(check(to, channel))

    def send_code(self, to, channel):
        """Queue the code, with the send options fitted to the channel
        (fit_fallback); returns the job id.  Raises OTPError."""
        options = fit_fallback(self.get_send_options(), channel)
        return send_otp(to, self.get_purpose(), channel=channel, **options)

    def make_pending(self, to, channel, job, decoy):
        """What the session keeps while the code is pending (never the code);
        a subclass may add its own keys."""
        pending = {"to": to, "channel": channel, "purpose": self.get_purpose(), "job": job,
                   "at": time.time(), "next": self.get_next()}
        if decoy:
            opts = self.get_send_options()
            pending.update(decoy=True, wrong=0, ttl=opts.get("ttl") or DEFAULT_TTL,
                           max_attempts=opts.get("max_attempts") or DEFAULT_ATTEMPTS)
        return pending

    def form_valid(self, form):
        channel = form.cleaned_data["channel"]
        decoy = False
        try:
            to = check_recipient(form.cleaned_data["to"], channel)
            if self.should_send(to, channel):
                job = self.send_code(to, channel)
            else:
                decoy = True
                job = "%s-%s" % (self.get_purpose(), secrets.token_hex(8))  # as the client's
        except OTPError as e:
            form.add_otp_error(e, channel)
            return self.render_to_response(self.get_context_data(form=form), status=e.status_code)
        pending = self.make_pending(to, channel, job, decoy)
        self.save_pending(pending)
        self.request.session.pop(VERIFIED_KEY % self.get_purpose(), None)
        otp_sent.send(sender=type(self), request=self.request, to=to, channel=channel,
                      purpose=pending["purpose"], job_id=job, sent=not decoy)
        return redirect(self.get_progress_url(pending))


class ProgressView(OTPFlowMixin, View):
    """The status of the pending code, with the code form.

    HTML by default; JSON for ?format=json, for an Accept header that asks
    for application/json and not text/html, or always with
    as_view(response_format="json").  The JSON: otp_status()'s fields (id,
    status, final, error, error_code, to, attempts, retry_after) plus label,
    kind and message; 404 with status "unknown" when this session has no
    such request, 503 with status "unavailable" when Redis cannot be reached.
    """

    response_format = None

    def wants_json(self):
        if self.response_format:
            return self.response_format == "json"
        fmt = self.request.GET.get("format")
        if fmt:
            return fmt == "json"
        accept = self.request.headers.get("Accept", "")
        return "application/json" in accept and "text/html" not in accept

    def get(self, request, *args, **kwargs):
        pending = self.get_pending()
        as_json = self.wants_json()
        if pending is None:
            if not as_json:
                return redirect(self.get_start_url())
            st = {"id": kwargs.get("job_id", ""), "status": "unknown", "final": True,
                  "kind": "", "message": ""}
            st["label"] = self.get_label(st, "sms")
            resp = JsonResponse({k: v for k, v in st.items()
                                 if self.json_fields is None or k in self.json_fields}, status=404)
        elif as_json:
            st, code = self.get_status(pending)
            resp = JsonResponse(self.json_status(st), status=code)
        else:
            resp = self.render_progress(pending)
        add_never_cache_headers(resp)
        patch_vary_headers(resp, ("Accept",))
        return resp


class VerifyCodeView(OTPFlowMixin, View):
    """POST of the code.  Right: code_verified() (proof in the session,
    otp_verified, redirect).  Otherwise the progress page again, with the
    answer on the code field ("Wrong code, 4 attempts left.")."""

    http_method_names = ["get", "post", "head", "options"]

    def verify_message(self, result, left, channel):
        if result == "mismatch":
            return ngettext("Wrong code, %(n)d attempt left.", "Wrong code, %(n)d attempts left.",
                            left) % {"n": left}
        if result == "locked":
            return gettext("Too many wrong codes, request a new one.")
        if result == "expired":
            return gettext("This code has expired, request a new one.")
        return self.code_form_class(channel=channel).invalid_message()

    def get(self, request, *args, **kwargs):
        pending = self.get_pending()
        return redirect(self.get_progress_url(pending) if pending else self.get_start_url())

    def post(self, request, *args, **kwargs):
        pending = self.get_pending()
        if pending is None:
            return redirect(self.get_start_url())
        form = self.code_form_class(request.POST, channel=pending["channel"])
        if not form.is_valid():
            return self.render_progress(pending, form)
        try:
            if pending.get("decoy"):
                result, left = self.decoy_verify(pending, form.cleaned_data["code"])
            else:
                res = verify_otp(pending["to"], form.cleaned_data["code"], pending["purpose"],
                                 pending["channel"])
                result, left = res.status, res.attempts_left
        except OTPError as e:
            form.add_otp_error(e)
            return self.render_progress(pending, form, status=e.status_code)
        if result == "ok":
            return self.code_verified(pending)
        form.add_error("code", self.verify_message(result, left, pending["channel"]))
        return self.render_progress(pending, form, renew=result in ("locked", "expired"))

    def decoy_verify(self, pending, code):
        """What verify would answer for a recipient that got no code: wrong,
        counting down, then locked; expired after the code's lifetime."""
        if not re.fullmatch(r"[0-9]{4,10}", code):
            return "invalid", 0
        if time.time() > pending["at"] + pending["ttl"]:
            return "expired", 0
        if pending["wrong"] >= pending["max_attempts"]:
            return "locked", 0
        pending["wrong"] += 1
        self.save_pending(pending)
        left = pending["max_attempts"] - pending["wrong"]
        return ("locked", 0) if left <= 0 else ("mismatch", left)

    def code_verified(self, pending):
        """The hook: forget the pending request, cycle the session key, store
        the proof (verified()), send otp_verified, redirect to the success URL."""
        session = self.request.session
        session.pop(self.pending_key(), None)
        session.cycle_key()
        proof = {"to": pending["to"], "channel": pending["channel"],
                 "purpose": pending["purpose"], "job_id": pending["job"]}
        session[VERIFIED_KEY % pending["purpose"]] = dict(proof, at=time.time())
        otp_verified.send(sender=type(self), request=self.request, **proof)
        return redirect(self.get_success_url(pending))

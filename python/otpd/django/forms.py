"""Forms of the flow: where to send the code (a phone number or an e-mail
address), and the code itself.

Both put an OTPError on the right field (add_otp_error) and mark a field with
errors for assistive technology (aria-invalid, aria-describedby pointing at
"<input id>_errors", the id the templates give that field's error list).
"""
import re

from django import forms
from django.utils.translation import gettext, gettext_lazy as _

from ..client import _E164, CHANNELS, PHONE_CHANNELS, normalize_email
from . import conf

# What people type around a number: spaces, dots, dashes, brackets.
_SEPARATORS = re.compile(r"[\s().-]")
_CODE = re.compile(r"[0-9]{4,10}")


class _AriaErrors:
    """aria-invalid and aria-describedby on the widgets of fields with errors
    (Django 3.2 does not add them)."""

    def add_error(self, field, error):
        super().add_error(field, error)
        for name in self.errors:
            if name in self.fields:
                bf = self[name]
                self.fields[name].widget.attrs.update({
                    "aria-invalid": "true", "aria-describedby": "%s_errors" % bf.auto_id})


class OTPTargetForm(_AriaErrors, forms.Form):
    """A phone number or an e-mail address, and which channel to use.

    channels: what to offer, in order, of "sms", "voice" (a call that reads
    the code out; the same phone field) and "email" (default OTPD_CHANNELS:
    SMS and e-mail); with one, the choice is a hidden input.  The choice's
    field is named channel_field ("channel"); labels in channel_labels.
    cleaned_data gets "to" (E.164, or the address lower-cased) and
    "channel".
    """

    channel_field = "channel"
    channel_labels = {"sms": _("Text message (SMS)"), "voice": _("Call me with the code"),
                      "email": _("E-mail")}
    initial_channel = None  # None: the first of channels

    phone = forms.CharField(
        required=False, max_length=32, label=_("Mobile number"),
        help_text=_("International format: + then the country code and the number."),
        widget=forms.TextInput(attrs={"type": "tel", "autocomplete": "tel", "inputmode": "tel",
                                      "placeholder": "+14155552671"}))
    email = forms.CharField(
        required=False, max_length=254, label=_("E-mail address"),
        widget=forms.EmailInput(attrs={"autocomplete": "email"}))

    def __init__(self, *args, channels=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.channels = tuple(channels or conf.channels())
        if not self.channels or any(c not in CHANNELS for c in self.channels):
            raise ValueError("channels must be a list of 'sms', 'voice' and 'email', got %r"
                             % (self.channels,))
        if not PHONE_CHANNELS.intersection(self.channels):
            del self.fields["phone"]
        if "email" not in self.channels:
            del self.fields["email"]
        initial = self.initial_channel if self.initial_channel in self.channels \
            else self.channels[0]
        if len(self.channels) == 1:
            field = forms.ChoiceField(choices=[(initial, initial)], initial=initial,
                                      widget=forms.HiddenInput)
        else:
            field = forms.ChoiceField(
                label=_("Send the code by"), initial=initial, widget=forms.RadioSelect,
                choices=[(c, self.channel_labels.get(c, c)) for c in self.channels])
        self.fields = {self.channel_field: field,
                       **{k: v for k, v in self.fields.items() if k != self.channel_field}}

    def target_field(self, channel):
        """The field that holds the recipient for `channel`."""
        return "email" if channel == "email" else "phone"

    def clean_phone(self):
        phone = _SEPARATORS.sub("", self.cleaned_data.get("phone") or "")
        if phone.startswith("00"):
            phone = "+" + phone[2:]
        if phone and not _E164.fullmatch(phone):
            raise forms.ValidationError(
                gettext("Enter the number in international format, e.g. +14155552671."),
                code="invalid")
        return phone

    def clean_email(self):
        email = (self.cleaned_data.get("email") or "").strip()
        if email:
            try:
                email = normalize_email(email)
            except ValueError:
                raise forms.ValidationError(gettext("Enter a valid e-mail address."),
                                            code="invalid") from None
        return email

    def clean(self):
        data = super().clean()
        channel = data.get(self.channel_field)
        if channel:
            name = self.target_field(channel)
            if not data.get(name) and name not in self.errors:
                self.add_error(name, gettext("Enter your e-mail address.") if channel == "email"
                               else gettext("Enter your phone number."))
            data["channel"] = channel
            data["to"] = data.get(name) or ""
        return data

    def add_otp_error(self, error, channel=None):
        """Show an OTPError: next to the phone or e-mail field when it is
        about the recipient, above the form otherwise."""
        channel = channel or self.cleaned_data.get("channel")
        field = self.target_field(channel) if getattr(error, "about_recipient", False) else None
        self.add_error(field if field in self.fields else None, error.message)


class OTPCodeForm(_AriaErrors, forms.Form):
    """The code the user received.  Spaces and dashes inside are forgiven;
    anything else that is not 4 to 10 digits is refused here, without
    spending an attempt.

    The input is type="text" (a number input would drop leading zeros) with
    autocomplete="one-time-code" (iOS and Android offer the code from the SMS
    above the keyboard), inputmode="numeric" (a digit keyboard) and a digits
    pattern; otpd/_webotp.html fills it by the WebOTP API where there is one."""

    code = forms.CharField(
        max_length=16, label=_("Code"),
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "inputmode": "numeric",
                                      "pattern": "[0-9]*", "autocapitalize": "off",
                                      "spellcheck": "false"}))

    def __init__(self, *args, channel="sms", **kwargs):
        super().__init__(*args, **kwargs)
        self.channel = channel

    def invalid_message(self):
        if self.channel == "email":
            return gettext("Enter the digits from the e-mail.")
        if self.channel == "voice":
            return gettext("Enter the digits you heard in the call.")
        return gettext("Enter the digits from the SMS.")

    def clean_code(self):
        code = re.sub(r"[\s-]", "", self.cleaned_data.get("code") or "")
        if not _CODE.fullmatch(code):
            raise forms.ValidationError(self.invalid_message(), code="invalid")
        return code

    def add_otp_error(self, error, channel=None):
        self.add_error("code" if getattr(error, "field", None) == "code" else None,
                       error.message)

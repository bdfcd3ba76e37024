import re

from django import forms

from .models import e164


class ForgotPasswordForm(forms.Form):
    """The guide's choice: a code by e-mail or by SMS."""
    method = forms.ChoiceField(choices=[("email", "E-mail"), ("sms", "SMS to my phone")],
                               initial="sms", widget=forms.RadioSelect)
    email = forms.EmailField(required=False, max_length=254, label="E-mail address",
                             widget=forms.EmailInput(attrs={"autocomplete": "email"}))
    phone = forms.CharField(required=False, max_length=32, label="Phone number",
                            widget=forms.TextInput(attrs={
                                "placeholder": "+14155552671", "autocomplete": "tel",
                                "inputmode": "tel"}))

    def clean_phone(self):
        # Forgive the spaces, dots, dashes and brackets people type.
        phone = re.sub(r"[\s().-]", "", self.cleaned_data["phone"])
        if phone:
            e164(phone)
        return phone

    def clean(self):
        data = super().clean()
        method = data.get("method")
        if method == "sms" and not data.get("phone") and "phone" not in self.errors:
            self.add_error("phone", "Enter your phone number.")
        if method == "email" and not data.get("email") and "email" not in self.errors:
            self.add_error("email", "Enter your e-mail address.")
        return data


class CodeForm(forms.Form):
    code = forms.CharField(max_length=16, label="Code from the SMS or e-mail",
                           widget=forms.TextInput(attrs={
                               "autocomplete": "one-time-code", "inputmode": "numeric",
                               "pattern": "[0-9]*"}))

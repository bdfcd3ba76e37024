import re

from django import forms

from .models import e164


class ForgotPasswordForm(forms.Form):
    method = forms.ChoiceField(choices=[("sms", "SMS to my phone")], initial="sms",
                               widget=forms.RadioSelect)
    phone = forms.CharField(max_length=32, label="Phone number",
                            widget=forms.TextInput(attrs={
                                "placeholder": "+14155552671", "autocomplete": "tel",
                                "inputmode": "tel"}))

    def clean_phone(self):
        # Forgive the spaces, dots, dashes and brackets people type.
        phone = re.sub(r"[\s().-]", "", self.cleaned_data["phone"])
        e164(phone)
        return phone


class CodeForm(forms.Form):
    code = forms.CharField(max_length=16, label="Code from the SMS",
                           widget=forms.TextInput(attrs={
                               "autocomplete": "one-time-code", "inputmode": "numeric",
                               "pattern": "[0-9]*"}))

"""The forgot-password forms: otpd.django's, with the guide's wording."""
from otpd.django.forms import OTPCodeForm, OTPTargetForm


class ForgotPasswordForm(OTPTargetForm):
    """The guide's choice: a code by e-mail or by SMS.  The choice is posted
    as "method" (the guide's word), the recipient as "email" or "phone"."""

    channel_field = "method"
    channel_labels = {"email": "E-mail", "sms": "SMS to my phone"}
    initial_channel = "sms"

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("channels", ("email", "sms"))
        super().__init__(*args, **kwargs)
        self.fields["phone"].label = "Phone number"


CodeForm = OTPCodeForm

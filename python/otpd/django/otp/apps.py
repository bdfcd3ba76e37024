from django.apps import AppConfig


class OtpdOtpConfig(AppConfig):
    name = "otpd.django.otp"
    label = "otpd_otp"  # the default label, "otp", is too generic to be unique
    verbose_name = "otpd devices (django-otp)"
    # Pinned, as django-otp's own plugins do, so that the committed migration
    # fits whatever DEFAULT_AUTO_FIELD the project uses.
    default_auto_field = "django.db.models.AutoField"

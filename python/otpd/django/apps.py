from django.apps import AppConfig
from django.core import checks


class OtpdConfig(AppConfig):
    name = "otpd.django"
    label = "otpd"  # the default label, "django", would be confusing
    verbose_name = "otpd SMS codes"

    def ready(self):
        from .conf import check_settings
        checks.register(check_settings)

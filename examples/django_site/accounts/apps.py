from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from otpd.django.signals import otp_verified

        from .views import on_login_code
        otp_verified.connect(on_login_code, dispatch_uid="accounts.on_login_code")

"""Admin for the otpd devices, in the manner of django-otp's own plugins.

Registered with django.contrib.admin's default site.  A site that uses
django_otp.admin.OTPAdminSite registers them on its own instance:

    from django_otp.admin import OTPAdminSite
    from otpd.django.otp.admin import EmailDeviceAdmin, SMSDeviceAdmin
    from otpd.django.otp.models import EmailDevice, SMSDevice

    otp_admin_site = OTPAdminSite(OTPAdminSite.name)
    otp_admin_site.register(SMSDevice, SMSDeviceAdmin)
    otp_admin_site.register(EmailDevice, EmailDeviceAdmin)

Nothing secret is stored on these devices (otpd keeps the codes, as MACs, in
Redis), but the number or address is personal data: with django-otp's
OTP_ADMIN_HIDE_SENSITIVE_DATA = True the change list shows it masked.
"""
from django.contrib import admin
from django.contrib.admin.sites import AlreadyRegistered
from django.contrib.auth import get_user_model
from django_otp.conf import settings as otp_settings

from .models import EmailDevice, SMSDevice


class OtpdDeviceAdmin(admin.ModelAdmin):
    """The common admin of SMSDevice and EmailDevice."""

    list_display = ["user", "name", "recipient", "purpose", "confirmed"]
    list_filter = ["confirmed", "purpose"]
    raw_id_fields = ["user"]
    destination_field = None

    def get_fieldsets(self, request, obj=None):
        return [
            ("Identity", {"fields": ["user", "name", "confirmed"]}),
            ("Configuration", {"fields": [self.destination_field, "purpose"]}),
        ]

    def get_search_fields(self, request):
        return ["name", self.destination_field, "user__" + get_user_model().USERNAME_FIELD]

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("user")

    @admin.display(description="Recipient")
    def recipient(self, device):
        if otp_settings.OTP_ADMIN_HIDE_SENSITIVE_DATA:
            return device.masked_destination
        return device.destination


class SMSDeviceAdmin(OtpdDeviceAdmin):
    """:class:`~django.contrib.admin.ModelAdmin` for SMSDevice."""

    destination_field = "number"


class EmailDeviceAdmin(OtpdDeviceAdmin):
    """:class:`~django.contrib.admin.ModelAdmin` for EmailDevice."""

    destination_field = "email"


for _model, _admin in ((SMSDevice, SMSDeviceAdmin), (EmailDevice, EmailDeviceAdmin)):
    try:
        admin.site.register(_model, _admin)
    except AlreadyRegistered:  # a double import, as django-otp's plugins guard against
        pass

"""The flow's URLs; a site includes them once:

    path("otp/", include("otpd.django.urls"))

and gets, in the "otpd" namespace: send (otp/), progress (otp/progress/,
also JSON) and verify (otp/verify/, POST).
"""
from django.urls import path

from . import views

app_name = "otpd"

urlpatterns = [
    path("", views.SendCodeView.as_view(), name="send"),
    path("progress/", views.ProgressView.as_view(), name="progress"),
    path("verify/", views.VerifyCodeView.as_view(), name="verify"),
]

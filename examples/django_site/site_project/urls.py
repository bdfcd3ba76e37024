from django.urls import include, path

urlpatterns = [
    path("", include("accounts.urls")),
    path("otp/", include("otpd.django.urls")),  # the reusable flow: log in with a code
]

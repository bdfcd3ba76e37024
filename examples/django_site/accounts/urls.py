from django.contrib.auth import views as auth_views
from django.urls import path, re_path

from . import async_views
from . import views

JOB = r"(?P<job_id>[A-Za-z0-9_.:-]{1,64})"

urlpatterns = [
    path("", views.home, name="home"),
    path("login/", auth_views.LoginView.as_view(template_name="accounts/login.html"),
         name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("forgot-password/", views.forgot_password, name="forgot_password"),
    re_path(r"^forgot-password/sent/%s/$" % JOB, views.code_sent, name="code_sent"),
    re_path(r"^forgot-password/status/%s\.json$" % JOB, views.code_status, name="code_status"),
    path("forgot-password/verify/", views.verify_code, name="verify_code"),
    path("forgot-password/new-password/", views.new_password, name="new_password"),
    path("forgot-password/done/", views.done, name="reset_done"),
    re_path(r"^async/status/%s\.json$" % JOB, async_views.status_json, name="async_status"),
]

"""Settings for the otpd example site.  Everything that differs between
machines comes from the environment:

  REDIS_URL        the Redis otpd uses (default redis://localhost:6379/0;
                   unix:///path/redis.sock works too)
  OTPD_HASH_KEY    the daemon's key, 64 hex characters (required)
  OTPD_PREFIX      key prefix, default "otpd:"
  OTPD_ALLOWED_COUNTRIES  the daemon's calling codes, e.g. "1,44" (default
                   all): numbers elsewhere are refused on the form at once
  DJANGO_DB        SQLite file (default db.sqlite3 next to manage.py)
  DJANGO_DEBUG     "0" to turn debug off (then set DJANGO_ALLOWED_HOSTS)
  DJANGO_SECRET_KEY
"""
import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY") or "django-insecure-otpd-example-only"
ALLOWED_HOSTS = [h for h in os.environ.get("DJANGO_ALLOWED_HOSTS", "").split(",") if h]

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "otpd.django",
    "accounts",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    # The request's language (Accept-Language) is active in the views, and
    # otpd.django sends it with each code as the job's locale, so the SMS,
    # e-mail or call is in the language of the page (OTPD_LOCALE_FROM_REQUEST).
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "site_project.urls"
WSGI_APPLICATION = "site_project.wsgi.application"

TEMPLATES = [{
    "BACKEND": "django.template.backends.django.DjangoTemplates",
    "DIRS": [],
    "APP_DIRS": True,
    "OPTIONS": {"context_processors": [
        "django.template.context_processors.request",
        "django.contrib.auth.context_processors.auth",
    ]},
}]

DATABASES = {"default": {
    "ENGINE": "django.db.backends.sqlite3",
    "NAME": os.environ.get("DJANGO_DB") or str(BASE_DIR / "db.sqlite3"),
}}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "home"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# otpd: the same values the daemon gets (see python/otpd/django/).
OTPD_REDIS_URL = os.environ.get("REDIS_URL", "redis://localhost:6379/0")
OTPD_HASH_KEY = os.environ.get("OTPD_HASH_KEY")
OTPD_PREFIX = os.environ.get("OTPD_PREFIX", "otpd:")
OTPD_ALLOWED_COUNTRIES = os.environ.get("OTPD_ALLOWED_COUNTRIES", "")

# The reusable flow at /otp/ (otpd.django.urls): log in with a code.  Codes go
# only to known users (the others get a decoy), and accounts.views.on_login_code
# (connected to otp_verified) logs the user in before the redirect home.
OTPD_PURPOSE = "login"
OTPD_SEND_OPTIONS = {"ttl": 300, "max_attempts": 5}
OTPD_SUCCESS_URL = "home"
OTPD_RECIPIENT_CHECK = "accounts.views.has_account"

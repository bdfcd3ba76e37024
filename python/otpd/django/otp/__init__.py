"""django-otp devices that send their codes through otpd.

    INSTALLED_APPS += ["django_otp", "otpd.django", "otpd.django.otp"]
    MIDDLEWARE: "django_otp.middleware.OTPMiddleware" after AuthenticationMiddleware

Two devices, SMSDevice (a number) and EmailDevice (an address).  Pressing
django-otp's challenge button queues a job for the otpd daemon, which makes
the code, keeps only its keyed hash in Redis and sends it; the token the user
types is checked by otpd's atomic verify script, which also caps the wrong
guesses.  No code is ever stored in, or compared by, the Django database.
See models.py for the details and python/README.md ("django-otp devices").
"""

"""Signals of the flow (otpd.django.views), for the site to act on.

otp_sent: a code was asked for and queued (or, for a recipient the site's
    OTPD_RECIPIENT_CHECK turned down, pretended).  Arguments: request, to,
    channel, purpose, job_id, sent (False when pretended).
otp_verified: the user typed the right code.  Arguments: request, to,
    channel, purpose, job_id.  The receiver decides what it means (log the
    user in, allow a password reset); the view then redirects to its
    success URL.  The session holds the proof too (views.verified()).

Neither carries the code: the site never has it.
"""
from django.dispatch import Signal

otp_sent = Signal()
otp_verified = Signal()

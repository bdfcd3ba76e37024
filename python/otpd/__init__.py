"""Python client for otpd, the SMS one-time-code daemon.

The web app enqueues jobs and verifies codes through Redis; see
docs/protocol.md for the contract this package implements.
"""
from .client import FINAL, OTPClient, VerifyResult, mac, mask_phone

__all__ = ["FINAL", "OTPClient", "VerifyResult", "mac", "mask_phone"]

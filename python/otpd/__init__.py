"""Python client for otpd, the SMS one-time-code daemon.

The web app enqueues jobs and verifies codes through Redis; see
docs/protocol.md for the contract this package implements.  Its key names
and status words are in otpd.protocol.
"""
# The daemon's version, project(otpd VERSION ...) in CMakeLists.txt; pyproject.toml reads it.
__version__ = "0.1.0"

from .client import (FINAL, NumberRefused, OptedOut, OTPClient, RateLimited, SendRefused,
                     VerifyResult, country_code, mac, mask_phone, mask_to)

__all__ = ["FINAL", "NumberRefused", "OTPClient", "OptedOut", "RateLimited", "SendRefused",
           "VerifyResult", "country_code", "mac", "mask_phone", "mask_to"]

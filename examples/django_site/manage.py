#!/usr/bin/env python3
"""Django's command-line utility for the otpd example site."""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
# Use the otpd client from this checkout (python/) unless one is installed.
REPO_PYTHON = os.path.join(os.path.dirname(os.path.dirname(HERE)), "python")
if os.path.isdir(os.path.join(REPO_PYTHON, "otpd")) and REPO_PYTHON not in sys.path:
    sys.path.insert(0, REPO_PYTHON)


def main():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "site_project.settings")
    from django.core.management import execute_from_command_line
    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()

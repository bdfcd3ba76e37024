"""`python3 -m otpd.ctl`: the same as the otpctl script."""
import sys

from . import main

sys.exit(main())

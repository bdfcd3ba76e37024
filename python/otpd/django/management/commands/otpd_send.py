"""manage.py otpd_send NUMBER: send a real code through otpd and follow it to
a final status: the SMS guide's "test via Django shell" step.  Exits 0 when
the code was sent (or delivered), 1 otherwise: refused, failed, or still not
final after --timeout seconds.
"""
import time

import redis
from django.core.management.base import BaseCommand, CommandError

from ....client import mask_to
from ... import conf
from ...errors import OTPError
from ...helpers import get_client, otp_status, send_otp

OK = ("sent", "delivered")


class Command(BaseCommand):
    help = ("Send a test code to NUMBER (E.164, or an e-mail address) through otpd and follow it "
            "to a final status; exits 1 unless it was sent or delivered.")

    def add_arguments(self, parser):
        parser.add_argument("to", metavar="NUMBER",
                            help="E.164 number (+14155552671), or with --email an address")
        parser.add_argument("--purpose", help="the code's purpose (default OTPD_PURPOSE)")
        parser.add_argument("--email", action="store_true",
                            help="NUMBER is an e-mail address (also assumed when it has an @)")
        parser.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS",
                            help="how long to wait for a final status (30)")

    def handle(self, to, purpose=None, email=False, timeout=30.0, **options):
        channel = "email" if email or "@" in to else "sms"
        purpose = purpose or conf.purpose()
        try:
            job = send_otp(to, purpose, channel=channel)
        except OTPError as e:
            raise CommandError("not sent (%s): %s" % (e.kind, e.detail or e.message)) from e
        self.stdout.write("job %s: %s code by %s to %s, waiting up to %gs"
                          % (job, purpose, channel, mask_to(to), timeout))
        t0 = time.monotonic()
        last, st = None, {}
        while True:
            try:
                st = otp_status(job)
                rec = get_client().status(job) if st["status"] != last else {}
            except (OTPError, redis.RedisError) as e:
                raise CommandError("cannot follow job %s: %s"
                                   % (job, getattr(e, "detail", "") or e)) from e
            if st["status"] != last:
                last = st["status"]
                line = "  %7.3fs  %-12s" % (time.monotonic() - t0, last)
                for k in ("provider", "provider_ref", "error_code"):
                    if rec.get(k):
                        line += "  %s %s" % (k, rec[k])
                self.stdout.write(line.rstrip())
                if rec.get("error"):
                    self.stdout.write("            error: %s" % rec["error"])
            if st["final"]:
                break
            if time.monotonic() - t0 >= timeout:
                hint = (" no daemon picked it up: is otpd running with the same Redis and prefix?"
                        " (manage.py otpd_check)" if last == "queued" else "")
                raise CommandError("job %s is still %s after %gs;%s" % (job, last, timeout, hint))
            time.sleep(0.1)
        if st["status"] not in OK:
            raise CommandError("job %s ended %s%s%s" % (
                job, st["status"], " (%s)" % st["error_code"] if st["error_code"] else "",
                ": %s" % st["error"] if st["error"] else ""))
        self.stdout.write(st["status"])

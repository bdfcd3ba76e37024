from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from accounts.models import Profile


class Command(BaseCommand):
    help = "Create (or reset) a demo user whose phone is +14155552671 (e-mail demo@example.com)."

    def add_arguments(self, parser):
        parser.add_argument("--username", default="demo")
        parser.add_argument("--password", default="demo-password-1")
        parser.add_argument("--phone", default="+14155552671")
        parser.add_argument("--email", default="demo@example.com")

    @transaction.atomic
    def handle(self, username, password, phone, email, **options):
        try:
            Profile(phone=phone).clean_fields(exclude=["user"])
        except ValidationError as e:
            raise CommandError("--phone: %s" % " ".join(e.messages))
        user, _ = get_user_model().objects.get_or_create(username=username)
        user.set_password(password)
        user.is_active = True
        user.email = email
        user.save()
        Profile.objects.filter(phone=phone).exclude(user=user).delete()
        Profile.objects.update_or_create(user=user, defaults={"phone": phone})
        self.stdout.write("demo user %r, password %r, phone %s, e-mail %s"
                          % (username, password, phone, email))

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models

e164 = RegexValidator(r"^\+[1-9][0-9]{6,14}\Z",
                      "Enter the number in international format, e.g. +14155552671.")


class Profile(models.Model):
    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                                related_name="profile")
    phone = models.CharField(max_length=16, unique=True, validators=[e164],
                             help_text="Mobile number in E.164 form, e.g. +14155552671")

    def __str__(self):
        return "%s (%s)" % (self.user, self.phone)

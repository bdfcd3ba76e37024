"""Which numbers get a code: a policy checked before anything is queued.

SMS pumping ("toll fraud") makes a site text numbers whose operators pay the
fraudster a share of the termination fee: premium-rate and shared-cost
ranges, VoIP ranges rented in bulk, and numbers that do not exist at all.
NumberCheck looks a number up in libphonenumber's tables (Debian's
python3-phonenumbers) and refuses, with NumberRefused, one that is not a
valid number for its country or whose line type the site does not want.
Nothing reaches Redis for a refused number, so it costs neither a send nor
a slot of the send limits.

    from otpd.numbers import NumberCheck
    NumberCheck().check("+449098790000")      # NumberRefused, reason "premium_rate"
    NumberCheck(refuse=[]).check(...)         # only invalid numbers are refused

Line types are the names of phonenumbers.PhoneNumberType in lower case
(LINE_TYPES).  Refused by default (DEFAULT_REFUSED), and why:

* premium_rate: the caller pays a surcharge that goes to the range holder,
  the very thing SMS pumping is after; no person receives codes there.
* shared_cost: the same business model at a lower rate (ES 901/902, FR 08 8x,
  ...); service lines, not handsets.
* voip: ranges rented by the thousand and easy to route to a pumping
  operation; many do not take SMS at all.  Sites whose users really use
  VoIP numbers (Google Voice, Skype In...) may drop it from the list.
* fixed_line: landlines, which cannot read a text; where a landline does
  take SMS it is read out by a text-to-speech service at the site's cost.

Not refused by default: mobile; fixed_line_or_mobile, what the tables say
where the two cannot be told apart by the number, which is every US and
Canadian number (+1), so North America passes unless the whole type is
refused; toll_free, personal_number, pager, uan, voicemail and unknown,
which are rare and not where pumping is seen.  Add them if you wish.

The tables are those of the installed python3-phonenumbers and age with it:
a range opened after its release is "invalid_number" until it is updated.
Only the number's digits are looked at; whether a number is in service, or
ported to another type, is unknown here.
"""
from .client import NumberRefused

try:
    import phonenumbers
except ImportError:  # the check is optional: see available()
    phonenumbers = None

__all__ = ["DEFAULT_REFUSED", "INVALID_NUMBER", "LINE_TYPES", "NumberCheck", "NumberRefused",
           "available", "parse_line_types"]

# phonenumbers.PhoneNumberType's names, lower-cased, in its order.
LINE_TYPES = ("fixed_line", "mobile", "fixed_line_or_mobile", "toll_free", "premium_rate",
              "shared_cost", "voip", "personal_number", "pager", "uan", "voicemail", "unknown")
DEFAULT_REFUSED = frozenset({"premium_rate", "shared_cost", "voip", "fixed_line"})
# The reason of a number that is not valid for its country (or cannot be parsed).
INVALID_NUMBER = "invalid_number"

DEBIAN_PACKAGE = "python3-phonenumbers"


def available():
    """Whether phonenumbers can be imported (NumberCheck needs it)."""
    return phonenumbers is not None


def _require():
    if phonenumbers is None:
        raise ImportError("the number check needs the phonenumbers module: install Debian's "
                          "%s (apt-get install %s), or pip's otpd[phonenumbers]"
                          % (DEBIAN_PACKAGE, DEBIAN_PACKAGE))


def parse_line_types(value):
    """The line types of a setting as a frozenset: a comma-separated string
    ("premium_rate, voip"; "" is none), or a list of names; None is
    DEFAULT_REFUSED.  Names are case-insensitive; ValueError, listing the
    valid ones, for any other."""
    if value is None:
        return DEFAULT_REFUSED
    if isinstance(value, str):
        items = value.split(",")
    elif isinstance(value, (list, tuple, set, frozenset)):
        items = list(value)
    else:
        raise ValueError("refused line types must be a comma-separated string or a list of "
                         "%s; got %r" % (", ".join(LINE_TYPES), value))
    out = set()
    for item in items:
        if not isinstance(item, str):
            raise ValueError("line type %r is not a name; valid: %s"
                             % (item, ", ".join(LINE_TYPES)))
        name = item.strip().lower()
        if not name:
            continue
        if name not in LINE_TYPES:
            raise ValueError("unknown line type %r; valid: %s" % (item, ", ".join(LINE_TYPES)))
        out.add(name)
    return frozenset(out)


class NumberCheck:
    """Refuse numbers that are invalid for their country or of a refused line
    type.  `refuse`: line type names (a list, or a comma-separated string);
    default DEFAULT_REFUSED; [] refuses invalid numbers only.

    ValueError for an unknown name, ImportError without phonenumbers.
    """

    def __init__(self, refuse=DEFAULT_REFUSED):
        self.refused = parse_line_types(refuse)
        _require()
        self._types = {getattr(phonenumbers.PhoneNumberType, name.upper()): name
                       for name in LINE_TYPES}
        missing = [name for name in LINE_TYPES
                   if not hasattr(phonenumbers.PhoneNumberType, name.upper())]
        if missing:  # an older phonenumbers without one of them
            raise ImportError("phonenumbers %s lacks the line types %s"
                              % (getattr(phonenumbers, "__version__", "?"), ", ".join(missing)))

    def __repr__(self):
        return "NumberCheck(refuse=%r)" % sorted(self.refused)

    def line_type(self, to):
        """The number's line type name, or INVALID_NUMBER when it is not a
        valid number for its country (or not a number at all)."""
        try:
            n = phonenumbers.parse(to, None)
        except (phonenumbers.NumberParseException, TypeError):
            return INVALID_NUMBER
        if not phonenumbers.is_valid_number(n):
            return INVALID_NUMBER
        return self._types.get(phonenumbers.number_type(n), "unknown")

    def check(self, to):
        """Return the line type of `to` (E.164, "+..."), or raise NumberRefused
        whose reason is INVALID_NUMBER or the refused line type."""
        kind = self.line_type(to)
        if kind == INVALID_NUMBER or kind in self.refused:
            raise NumberRefused(kind, to)
        return kind


def resolve(number_check):
    """What a client's number_check argument stands for: a checker (with a
    check(to) method) or None for no check.

    "auto": NumberCheck() when phonenumbers is installed, else None;
    None or False: None; True: NumberCheck() (ImportError without
    phonenumbers); a NumberCheck, or any object with a check(to) method, as
    it is.
    """
    if isinstance(number_check, str) and number_check == "auto":
        return NumberCheck() if available() else None
    if number_check is None or number_check is False:
        return None
    if number_check is True:
        return NumberCheck()
    if callable(getattr(number_check, "check", None)):
        return number_check
    raise TypeError("number_check must be \"auto\", None, True, False or a NumberCheck, got %r"
                    % (number_check,))


def from_env(value):
    """The number_check of OTPD_REFUSED_LINE_TYPES's value: "auto" when the
    variable is unset (None); else a NumberCheck refusing those types ("" for
    none but invalid numbers), which needs phonenumbers."""
    if value is None:
        return "auto"
    return NumberCheck(refuse=parse_line_types(value))

"""Phone numbers as users dial them: what is dialable, and how to show one to humans.

MSC2845 asks bridges not to canonicalise what was dialled: a local number stays a local number. So
validation here only decides whether a string can be dialled at all; formatting is for display names.
"""

from __future__ import annotations

import functools
import re

import phonenumbers

#: Visual separators people type (RFC 3966 §3 "visual-separator") — dropped, never interpreted.
VISUAL_SEPARATORS = re.compile(r"[\s\-.()\u00a0]")
DIALABLE = re.compile(r"^\+?[0-9*#]+$")


class NotDialable(ValueError):
    """The string is not a phone number the bridge can dial."""


def dial_string(raw: str, max_length: int = 32) -> str:
    """The number as dialled, minus visual separators; raises :class:`NotDialable`.

    Digits, ``*`` and ``#`` (service codes), with an optional leading ``+``.
    """
    if not isinstance(raw, str):
        raise NotDialable("a phone number must be a string")
    number = VISUAL_SEPARATORS.sub("", raw)
    if not number:
        raise NotDialable("the phone number is empty")
    if not DIALABLE.match(number):
        raise NotDialable(f"{raw!r} is not a dialable number (digits, *, # and a leading + only)")
    if not any(c.isdigit() for c in number):
        raise NotDialable("a phone number needs at least one digit")
    if len(number) - number.startswith("+") > max_length:
        raise NotDialable(f"{raw!r} is longer than {max_length} digits")
    return number


def display_name(number: str, default_region: str) -> str:
    """``+442079460000`` → ``+44 20 7946 0000``; a national number in its national format.

    Anything phonenumbers cannot parse as a valid number (short codes, ``*#06#``) is shown as dialled.
    """
    try:
        parsed = phonenumbers.parse(number, default_region)
    except phonenumbers.NumberParseException:
        return number
    if not phonenumbers.is_possible_number(parsed) or "*" in number or "#" in number:
        return number
    if number.startswith("+"):
        return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.NATIONAL)


@functools.lru_cache(maxsize=65536)
def to_e164(number: str, default_region: str) -> str | None:
    """E.164 form for routing and storage, or None when the number has none (short codes).

    Cached: parsing costs ~100 µs and every outbound text asks. "Possible" (right length for the country)
    rather than "valid" (in an allocated range): operators
    route numbers from ranges newer than the library's metadata, and test ranges such as 07700 900xxx.
    """
    try:
        parsed = phonenumbers.parse(number, default_region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(parsed) or "*" in number or "#" in number:
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)

from __future__ import annotations

import pytest

from telebridge.numbers import NotDialable, dial_string, display_name, to_e164


@pytest.mark.parametrize(
    ("dialled", "expected"),
    [
        ("01818118181", "01818118181"),
        ("+44 20 7946 0000", "+442079460000"),
        ("*100#", "*100#"),
        ("112", "112"),
    ],
)
def test_dial_string_keeps_what_was_dialled(dialled: str, expected: str) -> None:
    assert dial_string(dialled) == expected


@pytest.mark.parametrize("bad", ["", "   ", "+", "12a4", "call me", "1+2", "0" * 33, "++44"])
def test_not_dialable(bad: str) -> None:
    with pytest.raises(NotDialable):
        dial_string(bad)


def test_display_names_are_formatted_for_humans() -> None:
    assert display_name("+442079460000", "GB") == "+44 20 7946 0000"
    assert display_name("02079460000", "GB") == "020 7946 0000"
    assert display_name("*100#", "GB") == "*100#"
    assert display_name("12", "GB") == "12"


def test_e164_for_routing() -> None:
    assert to_e164("02079460000", "GB") == "+442079460000"
    assert to_e164("(202) 555-0123", "US") is None or to_e164("(202) 555-0123", "US") == "+12025550123"
    assert to_e164("*100#", "GB") is None

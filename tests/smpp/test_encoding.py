"""GSM 03.38 tables, packing and data_coding choice/decoding."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smpp import encoding, gsm7
from smpp.encoding import Alphabet, DefaultAlphabet

GSM_CHARS = "".join(c for c in gsm7.BASIC_TABLE if c != "\x1b") + "".join(gsm7.EXTENSION_TABLE.values())


def test_basic_table_maps_code_points_of_ts_23_038() -> None:
    assert gsm7.encode("@") == b"\x00"
    assert gsm7.encode("A") == b"\x41"
    assert gsm7.encode("à") == b"\x7f"
    assert gsm7.encode("Δ") == b"\x10"
    assert gsm7.encode("\n") == b"\x0a"


def test_extension_characters_are_escape_plus_code_and_cost_two_septets() -> None:
    assert gsm7.encode("€[]{}") == b"\x1b\x65\x1b\x3c\x1b\x3e\x1b\x28\x1b\x29"
    assert gsm7.septet_length("€[]{}") == 10
    assert gsm7.septet_length("abc") == 3


def test_non_gsm_character_is_a_named_error() -> None:
    with pytest.raises(gsm7.NotGsm7Error) as e:
        gsm7.encode("ab😀")
    assert e.value.index == 2
    with pytest.raises(gsm7.NotGsm7Error):
        gsm7.septet_length("ç")  # lower-case c-cedilla is not in the default alphabet


def test_decode_tolerates_unknown_escape_and_trailing_escape_and_high_bit() -> None:
    assert gsm7.decode(b"\x1b\x41") == "A"  # unknown extension code -> basic character
    assert gsm7.decode(b"ab\x1b") == "ab"
    assert gsm7.decode(b"\xc1") == "A"
    assert gsm7.decode(b"\x1b\x1b") == " "


@given(st.text(alphabet=GSM_CHARS))
def test_gsm7_unpacked_roundtrip(text: str) -> None:
    assert gsm7.decode(gsm7.encode(text)) == text


def test_packing_matches_known_vector() -> None:
    # "hellohello" packed: a classic TS 23.038 example.
    assert gsm7.pack(gsm7.encode("hellohello")).hex() == "e8329bfd4697d9ec37"


def test_seven_spare_bits_are_filled_with_cr_and_dropped_on_unpack() -> None:
    septets = gsm7.encode("1234567")  # 49 bits -> 7 octets, 7 spare bits
    packed = gsm7.pack(septets)
    assert len(packed) == 7
    assert gsm7.unpack(packed) == septets


@given(st.text(alphabet=GSM_CHARS, max_size=200), st.integers(0, 6))
def test_gsm7_packed_roundtrip_with_fill_bits(text: str, fill: int) -> None:
    septets = gsm7.encode(text)
    if text.endswith("\r"):
        # A real trailing CR in the padding position is indistinguishable (§6.1.2.1.1).
        return
    assert gsm7.unpack(gsm7.pack(septets, fill), fill) == septets


def test_cheapest_alphabet() -> None:
    assert encoding.choose_alphabet("Hello €") is Alphabet.GSM7
    assert encoding.choose_alphabet("Grüße ç") is Alphabet.UCS2
    assert encoding.choose_alphabet("Grüße ç", allow_latin1=True) is Alphabet.LATIN1
    assert encoding.choose_alphabet("😀", allow_latin1=True) is Alphabet.UCS2


def test_ucs2_units_count_surrogate_pairs_as_two() -> None:
    assert encoding.units("a😀", Alphabet.UCS2) == 3
    enc = encoding.encode("😀", Alphabet.UCS2)
    assert enc.data_coding == 8
    assert enc.data == "😀".encode("utf-16-be")


def test_lone_surrogate_is_replaced_not_crashing() -> None:
    assert encoding.sanitize("a\ud800b") == "a\ufffdb"


@pytest.mark.parametrize(
    ("data", "dc", "default", "expected"),
    [
        (b"\x1b\x65", 0, DefaultAlphabet.GSM7, "€"),
        (bytes.fromhex("e8329bfd4697d9ec37"), 0, DefaultAlphabet.GSM7_PACKED, "hellohello"),
        (b"caf\xe9", 0, DefaultAlphabet.LATIN1, "café"),
        (b"abc", 1, DefaultAlphabet.GSM7, "abc"),
        (b"caf\xe9", 3, DefaultAlphabet.GSM7, "café"),
        ("😀é".encode("utf-16-be"), 8, DefaultAlphabet.GSM7, "😀é"),
        (b"\x00a\x00", 8, DefaultAlphabet.GSM7, "a"),  # odd length: last octet dropped
        ("hé".encode(), 4, DefaultAlphabet.GSM7, "hé"),
        (b"\x41", 0xF0, DefaultAlphabet.GSM7, "A"),
        ("ж".encode("utf-16-be"), 0x18, DefaultAlphabet.GSM7, "ж"),
        ("ж".encode("iso8859-5"), 6, DefaultAlphabet.GSM7, "ж"),
    ],
)
def test_decode_per_data_coding(data: bytes, dc: int, default: DefaultAlphabet, expected: str) -> None:
    assert encoding.decode(data, dc, default=default) == expected


@given(st.binary(max_size=300), st.integers(0, 255))
def test_decode_never_raises(data: bytes, dc: int) -> None:
    for default in DefaultAlphabet:
        assert isinstance(encoding.decode(data, dc, default=default), str)

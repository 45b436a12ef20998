"""G.711 tables against the reference algorithm."""

import sys
import warnings

import numpy as np
import pytest

from media import g711


def test_known_code_points() -> None:
    assert list(g711.ulaw_decode(bytes([0xFF, 0x7F, 0x00, 0x80]))) == [0, 0, -32124, 32124]
    assert list(g711.alaw_decode(bytes([0xD5, 0x55, 0x2A, 0xAA]))) == [8, -8, -32256, 32256]


@pytest.mark.parametrize(
    ("encode", "decode"), [(g711.ulaw_encode, g711.ulaw_decode), (g711.alaw_encode, g711.alaw_decode)]
)
def test_every_code_survives_decode_then_encode(encode, decode) -> None:  # type: ignore[no-untyped-def]
    codes = bytes(range(256))
    again = encode(decode(codes))
    # µ-law has two codes for zero (0x7F and 0xFF); everything else is exact.
    assert sum(a != b for a, b in zip(again, codes, strict=True)) <= 1


def test_decode_calls_are_counted() -> None:
    before = g711.DECODE_CALLS.value
    g711.ulaw_decode(b"\xff" * 160)
    g711.alaw_decode(b"\xd5" * 160)
    assert g711.DECODE_CALLS.value == before + 2


@pytest.mark.skipif(sys.version_info >= (3, 13), reason="audioop (the reference) was removed in Python 3.13")
def test_tables_match_audioop_for_every_sample() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import audioop
    samples = np.arange(-32768, 32768, dtype=np.int16)
    assert g711.ulaw_encode(samples) == audioop.lin2ulaw(samples.tobytes(), 2)
    assert g711.alaw_encode(samples) == audioop.lin2alaw(samples.tobytes(), 2)
    codes = bytes(range(256))
    assert g711.ulaw_decode(codes).tobytes() == audioop.ulaw2lin(codes, 2)
    assert g711.alaw_decode(codes).tobytes() == audioop.alaw2lin(codes, 2)

"""GSM 03.38 (3GPP TS 23.038 §6.2.1) default alphabet and its extension table.

Texts are turned into *septets* (values 0..127). A character of the extension table
(`€`, `[`, `]`, `{`, `}`, `\\`, `^`, `~`, `|`, form feed) costs two septets: the escape
0x1B followed by its code (§6.2.1.1). Segmentation must therefore count septets, not
characters, and must never put the escape and its code in different segments.

Over SMPP, data_coding 0 is most often carried *unpacked* (one septet per octet, the
SMSC packs for the air interface); some SMSCs want the 7-bit *packed* form of
TS 23.038 §6.1.2.1.1. Both are here; which one a route uses is configuration.
"""

from __future__ import annotations

ESCAPE = 0x1B

# TS 23.038 §6.2.1, the 128 code points of the default alphabet in order.
# 0x1B is the escape to the extension table; it decodes to nothing by itself.
BASIC_TABLE = (
    "@£$¥èéùìòÇ\nØø\rÅå"
    "Δ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ"
    " !\"#¤%&'()*+,-./"
    "0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNO"
    "PQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmno"
    "pqrstuvwxyzäöñüà"
)
assert len(BASIC_TABLE) == 128

# TS 23.038 §6.2.1.1, the extension table (reached through 0x1B).
EXTENSION_TABLE: dict[int, str] = {
    0x0A: "\f",
    0x14: "^",
    0x28: "{",
    0x29: "}",
    0x2F: "\\",
    0x3C: "[",
    0x3D: "~",
    0x3E: "]",
    0x40: "|",
    0x65: "€",
}

# char -> septets (1 or 2 values); built once, used on every encode.
_ENCODE: dict[str, bytes] = {}
for _code, _char in enumerate(BASIC_TABLE):
    if _code != ESCAPE:
        _ENCODE[_char] = bytes((_code,))
for _code, _char in EXTENSION_TABLE.items():
    _ENCODE[_char] = bytes((ESCAPE, _code))

# Septet cost of each encodable character, for counting without encoding.
SEPTET_COST: dict[str, int] = {c: len(s) for c, s in _ENCODE.items()}

# str.translate table: every encodable code point maps to its unpacked septet string.
_TRANSLATE = {ord(c): s.decode("latin-1") for c, s in _ENCODE.items()}


class NotGsm7Error(ValueError):
    """The text holds a character that the GSM 7-bit default alphabet cannot carry."""

    def __init__(self, char: str, index: int) -> None:
        super().__init__(f"character {char!r} (U+{ord(char):04X}) at {index} is not in GSM 03.38")
        self.char = char
        self.index = index


# str.translate tables that run the per-character work in C (measured: ~10x a generator).
_DELETE_GSM = {ord(c): None for c in _ENCODE}
_DOUBLE_EXTENSION = {ord(c): c + c for c in EXTENSION_TABLE.values()}


def is_gsm7(text: str) -> bool:
    """True when every character of *text* is in the default alphabet or its extension table."""
    return not text.translate(_DELETE_GSM)


def septet_length(text: str) -> int:
    """Septets *text* needs, extension characters counting two (TS 23.038 §6.2.1.1)."""
    rest = text.translate(_DELETE_GSM)
    if rest:
        c = rest[0]
        raise NotGsm7Error(c, text.index(c))
    return len(text.translate(_DOUBLE_EXTENSION))


def encode(text: str) -> bytes:
    """Text → unpacked septets (one per octet), the usual data_coding 0 form over SMPP."""
    out = text.translate(_TRANSLATE)
    try:
        return out.encode("latin-1")
    except UnicodeEncodeError as e:
        # translate() leaves unknown characters as they are; find the first one.
        for i, c in enumerate(text):
            if c not in _ENCODE:
                raise NotGsm7Error(c, i) from e
        raise  # pragma: no cover - translate output is latin-1 iff every char is known


def decode(septets: bytes) -> str:
    """Unpacked septets → text.

    Robust against what phones and SMSCs really send: octets with the high bit set are
    read modulo 128; an escape followed by a code the extension table lacks shows the
    basic-table character (TS 23.038 §6.2.1.1 note 1); a trailing lone escape is dropped.
    """
    table = BASIC_TABLE
    ext = EXTENSION_TABLE
    out: list[str] = []
    i = 0
    n = len(septets)
    while i < n:
        s = septets[i] & 0x7F
        i += 1
        if s == ESCAPE:
            if i >= n:
                break
            s2 = septets[i] & 0x7F
            i += 1
            if s2 == ESCAPE:
                out.append(" ")  # §6.2.1.1: escape-escape is reserved, shown as a space
            else:
                out.append(ext.get(s2) or table[s2])
        else:
            out.append(table[s])
    return "".join(out)


def pack(septets: bytes, fill_bits: int = 0) -> bytes:
    """Pack septets 7 bits each, LSB first (TS 23.038 §6.1.2.1.1).

    *fill_bits* (0..6) are zero bits put first so that septets after a user data header
    start on a septet boundary (TS 23.040 §9.2.3.24). When the last octet would leave 7
    unused bits a receiver could read them as '@'; §6.1.2.1.1 says to put CR there,
    which `unpack` then drops.
    """
    if not septets:
        return b""
    total_bits = fill_bits + 7 * len(septets)
    if total_bits % 8 == 1 and total_bits > 1:
        septets = septets + b"\r"
    acc = 0
    nbits = fill_bits
    out = bytearray()
    for s in septets:
        acc |= (s & 0x7F) << nbits
        nbits += 7
        while nbits >= 8:
            out.append(acc & 0xFF)
            acc >>= 8
            nbits -= 8
    if nbits:
        out.append(acc & 0xFF)
    return bytes(out)


def unpack(data: bytes, fill_bits: int = 0, count: int | None = None) -> bytes:
    """Inverse of `pack`. Without *count*, every whole septet is read and a trailing CR
    that filled exactly seven spare bits is dropped as padding (§6.1.2.1.1)."""
    total_bits = len(data) * 8 - fill_bits
    n = max(0, total_bits // 7 if count is None else count)
    value = int.from_bytes(data, "little") >> fill_bits
    out = bytearray(n)
    for i in range(n):
        out[i] = (value >> (7 * i)) & 0x7F
    if count is None and n and total_bits % 7 == 0 and len(data) * 8 - fill_bits - 7 * n == 0:
        # All bits used: the last septet is either real or the CR pad of §6.1.2.1.1.
        if out[-1] == 0x0D and (fill_bits + 7 * (n - 1)) % 8 == 1:
            del out[-1]
    return bytes(out)

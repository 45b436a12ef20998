"""data_coding (SMPP 3.4 §5.2.19) and choosing the cheapest alphabet for a text.

Outbound we use GSM 7-bit (data_coding 0) when every character fits, else UCS-2
(data_coding 8, which in practice every SMSC treats as UTF-16BE, so characters outside
the BMP travel as surrogate pairs). Latin-1 (data_coding 3) is cheaper than UCS-2 for
texts like "Ünïcödé ½" but many handsets render it badly, so it is used only when a
route allows it. Inbound, every data_coding a carrier may send is decoded to text.
"""

from __future__ import annotations

import codecs
import enum
from dataclasses import dataclass

from smpp import gsm7


class DataCoding(enum.IntEnum):
    """SMPP 3.4 §5.2.19 values we send or commonly receive."""

    SMSC_DEFAULT = 0x00  # GSM 03.38 for every SMSC we know of (configurable per route)
    IA5 = 0x01  # ASCII
    OCTET_UNSPEC_2 = 0x02
    LATIN1 = 0x03
    OCTET_UNSPEC = 0x04
    JIS = 0x05
    CYRILLIC = 0x06
    HEBREW = 0x07
    UCS2 = 0x08
    PICTOGRAM = 0x09
    ISO2022_JP = 0x0A
    EXTENDED_KANJI = 0x0D
    KSC5601 = 0x0E


class DefaultAlphabet(enum.Enum):
    """What a given SMSC means by data_coding 0 on the wire."""

    GSM7 = "gsm7"  # unpacked septets, one per octet (most SMSCs)
    GSM7_PACKED = "gsm7-packed"  # TS 23.038 §6.1.2.1.1 packing
    LATIN1 = "latin1"
    ASCII = "ascii"


class Alphabet(enum.Enum):
    """The alphabet a text is encoded in; decides the units segmentation counts."""

    GSM7 = "gsm7"  # units are septets
    LATIN1 = "latin1"  # units are octets
    UCS2 = "ucs2"  # units are UTF-16 code units (2 octets)


@dataclass(frozen=True, slots=True)
class Encoded:
    """A text in a chosen alphabet: the SMPP data_coding and the octets to send."""

    alphabet: Alphabet
    data_coding: int
    data: bytes


def sanitize(text: str) -> str:
    """Replace lone surrogates (valid in JSON and Python strings, not in UTF-16) with U+FFFD."""
    try:
        text.encode("utf-16-be")
    except UnicodeEncodeError:
        return text.encode("utf-16-be", "surrogatepass").decode("utf-16-be", "replace")
    return text


def choose_alphabet(text: str, *, allow_latin1: bool = False) -> Alphabet:
    """The cheapest alphabet that carries *text* losslessly (GSM 7 < Latin-1 < UCS-2)."""
    if gsm7.is_gsm7(text):
        return Alphabet.GSM7
    if allow_latin1:
        try:
            text.encode("latin-1")
        except UnicodeEncodeError:
            pass
        else:
            return Alphabet.LATIN1
    return Alphabet.UCS2


def units(text: str, alphabet: Alphabet) -> int:
    """Length of *text* in the units its alphabet's segment limits are counted in."""
    if alphabet is Alphabet.GSM7:
        return gsm7.septet_length(text)
    if alphabet is Alphabet.LATIN1:
        return len(text)
    return len(text.encode("utf-16-be", "surrogatepass")) // 2


def encode(text: str, alphabet: Alphabet) -> Encoded:
    """Encode *text*; GSM 7 comes out unpacked (see `gsm7.pack` for the packed form)."""
    if alphabet is Alphabet.GSM7:
        return Encoded(alphabet, DataCoding.SMSC_DEFAULT, gsm7.encode(text))
    if alphabet is Alphabet.LATIN1:
        return Encoded(alphabet, DataCoding.LATIN1, text.encode("latin-1"))
    return Encoded(alphabet, DataCoding.UCS2, text.encode("utf-16-be", "surrogatepass"))


_CODECS: dict[int, str] = {
    DataCoding.IA5: "ascii",
    DataCoding.LATIN1: "latin-1",
    DataCoding.JIS: "shift_jis",
    DataCoding.CYRILLIC: "iso8859-5",
    DataCoding.HEBREW: "iso8859-8",
    DataCoding.ISO2022_JP: "iso2022_jp",
    DataCoding.EXTENDED_KANJI: "euc_jp",
    DataCoding.KSC5601: "euc_kr",
}
for _name in set(_CODECS.values()):
    codecs.lookup(_name)


def decode(
    data: bytes,
    data_coding: int,
    *,
    default: DefaultAlphabet = DefaultAlphabet.GSM7,
    fill_bits: int = 0,
) -> str:
    """Decode a short_message body (without its UDH) to text, never raising.

    *fill_bits* matters only for packed GSM after a UDH (TS 23.040 §9.2.3.24).
    Binary (8-bit) payloads are read as UTF-8 with replacement: some applications
    send UTF-8 that way, and anything else would not be displayable anyway.
    """
    dc = data_coding
    if dc == 0:
        if default is DefaultAlphabet.GSM7:
            return gsm7.decode(data)
        if default is DefaultAlphabet.GSM7_PACKED:
            return gsm7.decode(gsm7.unpack(data, fill_bits))
        if default is DefaultAlphabet.LATIN1:
            return data.decode("latin-1")
        return data.decode("ascii", "replace")
    if dc == DataCoding.UCS2:
        return _decode_ucs2(data)
    name = _CODECS.get(dc)
    if name is not None:
        return data.decode(name, "replace")
    if dc in (DataCoding.OCTET_UNSPEC, DataCoding.OCTET_UNSPEC_2):
        return data.decode("utf-8", "replace")
    # TS 23.038 §4 coding groups beyond the SMPP-defined values.
    group = dc & 0xF0
    if group == 0xF0:  # data coding/message class: bit 2 = 8-bit data
        return data.decode("utf-8", "replace") if dc & 0x04 else gsm7.decode(data)
    if group in (0xC0, 0xD0):  # message waiting, GSM 7
        return gsm7.decode(data)
    if group == 0xE0:  # message waiting, UCS-2
        return _decode_ucs2(data)
    if dc & 0xC0 == 0x00 or dc & 0xC0 == 0x40:  # general data coding (incl. auto-deletion)
        alphabet = (dc >> 2) & 0x03
        if alphabet == 2:
            return _decode_ucs2(data)
        if alphabet == 1:
            return data.decode("utf-8", "replace")
        return gsm7.decode(data)
    return data.decode("latin-1")


def _decode_ucs2(data: bytes) -> str:
    if len(data) % 2:
        data = data[:-1]
    return data.decode("utf-16-be", "replace")

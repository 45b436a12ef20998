"""SDP session descriptions: parse and serialise (RFC 4566, as updated by RFC 8866).

The model keeps every line it does not interpret: attributes are an ordered list of ``(name, value)`` pairs
so that unknown attributes (ICE, DTLS, extmap, ssrc, msid, …) survive a parse/serialise round trip
byte-for-byte apart from line endings, which are always written as CRLF (RFC 4566 §5). Parsing is lenient
about bare LF line endings and trailing blank lines (real stacks send both) and strict about structure:
a line that is not ``<type>=<value>`` or a mandatory field that cannot be read raises :class:`SdpParseError`,
the one exception this module lets out, so callers at the edge catch exactly that.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

__all__ = [
    "Connection",
    "MediaDescription",
    "Origin",
    "RtpMap",
    "SdpParseError",
    "SessionDescription",
]

DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
MAX_SDP_BYTES = 64 * 1024


class SdpParseError(ValueError):
    """The text is not a session description we can read (RFC 4566 §5 grammar)."""


@dataclass
class Origin:
    """``o=`` (RFC 4566 §5.2): identifies the session and its version."""

    username: str = "-"
    session_id: str = "0"
    session_version: int = 0
    nettype: str = "IN"
    addrtype: str = "IP4"
    address: str = "127.0.0.1"

    @classmethod
    def parse(cls, value: str) -> Origin:
        parts = value.split()
        if len(parts) != 6:
            raise SdpParseError(f"o= needs 6 fields: {value!r}")
        try:
            version = int(parts[2])
        except ValueError as exc:
            raise SdpParseError(f"o= session version is not a number: {parts[2]!r}") from exc
        return cls(parts[0], parts[1], version, parts[3], parts[4], parts[5])

    def __str__(self) -> str:
        return (
            f"{self.username} {self.session_id} {self.session_version} "
            f"{self.nettype} {self.addrtype} {self.address}"
        )


@dataclass
class Connection:
    """``c=`` (RFC 4566 §5.7): where media goes. A TTL/count suffix on multicast is kept in ``address``."""

    address: str
    nettype: str = "IN"
    addrtype: str = "IP4"

    @classmethod
    def parse(cls, value: str) -> Connection:
        parts = value.split()
        if len(parts) != 3:
            raise SdpParseError(f"c= needs 3 fields: {value!r}")
        return cls(address=parts[2], nettype=parts[0], addrtype=parts[1])

    @property
    def host(self) -> str:
        """The address without a multicast ``/ttl/count`` suffix."""
        return self.address.split("/", 1)[0]

    def __str__(self) -> str:
        return f"{self.nettype} {self.addrtype} {self.address}"


@dataclass(frozen=True)
class RtpMap:
    """``a=rtpmap:<pt> <encoding>/<clock rate>[/<channels>]`` (RFC 4566 §6)."""

    payload_type: int
    encoding: str
    clock_rate: int
    channels: int | None = None

    @classmethod
    def parse(cls, value: str) -> RtpMap:
        try:
            pt_text, rest = value.split(None, 1)
            parts = rest.strip().split("/")
            channels = int(parts[2]) if len(parts) > 2 and parts[2] else None
            return cls(int(pt_text), parts[0], int(parts[1]), channels)
        except (ValueError, IndexError) as exc:
            raise SdpParseError(f"bad rtpmap: {value!r}") from exc

    def __str__(self) -> str:
        suffix = f"/{self.channels}" if self.channels is not None else ""
        return f"{self.payload_type} {self.encoding}/{self.clock_rate}{suffix}"


def _split_attribute(value: str) -> tuple[str, str | None]:
    name, sep, rest = value.partition(":")
    return (name, rest if sep else None)


@dataclass
class _Attributes:
    """Ordered ``a=`` lines; shared helpers for session and media level."""

    attributes: list[tuple[str, str | None]] = field(default_factory=list)

    def get(self, name: str) -> str | None:
        """The value of the first attribute called ``name`` (``""`` for a flag), or None."""
        for key, value in self.attributes:
            if key == name:
                return "" if value is None else value
        return None

    def get_all(self, name: str) -> list[str]:
        return ["" if v is None else v for k, v in self.attributes if k == name]

    def has(self, name: str) -> bool:
        return any(k == name for k, _ in self.attributes)

    def add(self, name: str, value: str | None = None) -> None:
        self.attributes.append((name, value))

    def remove(self, name: str) -> None:
        self.attributes = [(k, v) for k, v in self.attributes if k != name]

    def set(self, name: str, value: str | None = None) -> None:
        """Replace every ``name`` attribute with one, kept at the first one's position."""
        for i, (key, _) in enumerate(self.attributes):
            if key == name:
                self.attributes[i] = (name, value)
                self.attributes = [(k, v) for j, (k, v) in enumerate(self.attributes) if j <= i or k != name]
                return
        self.attributes.append((name, value))

    @property
    def direction(self) -> str | None:
        """The direction attribute (RFC 3264 §5.1 / RFC 4566 §6) at this level, if any."""
        for key, _ in self.attributes:
            if key in DIRECTIONS:
                return key
        return None

    @direction.setter
    def direction(self, value: str | None) -> None:
        if value is not None and value not in DIRECTIONS:
            raise ValueError(f"not a direction: {value}")
        kept = [(k, v) for k, v in self.attributes if k not in DIRECTIONS]
        if value is not None:
            kept.append((value, None))
        self.attributes = kept


@dataclass
class MediaDescription(_Attributes):
    """One ``m=`` section with its ``i= c= b= k= a=`` lines (RFC 4566 §5.14)."""

    media: str = "audio"
    port: int = 0
    port_count: int | None = None
    proto: str = "RTP/AVP"
    formats: list[str] = field(default_factory=list)
    information: str | None = None
    connections: list[Connection] = field(default_factory=list)
    bandwidths: list[str] = field(default_factory=list)
    key: str | None = None

    @property
    def connection(self) -> Connection | None:
        return self.connections[0] if self.connections else None

    @property
    def is_rtp(self) -> bool:
        return "RTP" in self.proto

    def rtpmaps(self) -> dict[int, RtpMap]:
        """Payload type → rtpmap for every format listed, with RFC 3551 static defaults filled in."""
        explicit: dict[int, RtpMap] = {}
        for value in self.get_all("rtpmap"):
            try:
                rtpmap = RtpMap.parse(value)
            except SdpParseError:
                continue
            explicit[rtpmap.payload_type] = rtpmap
        result: dict[int, RtpMap] = {}
        for fmt in self.formats:
            try:
                pt = int(fmt)
            except ValueError:
                continue
            if pt in explicit:
                result[pt] = explicit[pt]
            elif pt in STATIC_PAYLOAD_TYPES:
                result[pt] = STATIC_PAYLOAD_TYPES[pt]
        return result

    def fmtp(self, payload_type: int) -> str | None:
        prefix = f"{payload_type} "
        for value in self.get_all("fmtp"):
            if value.startswith(prefix):
                return value[len(prefix) :].strip()
        return None

    @property
    def ptime(self) -> int | None:
        value = self.get("ptime")
        try:
            return int(float(value)) if value else None
        except ValueError:
            return None

    @property
    def rtcp_mux(self) -> bool:
        return self.has("rtcp-mux")

    def lines(self) -> Iterator[str]:
        port = f"{self.port}/{self.port_count}" if self.port_count is not None else str(self.port)
        yield f"m={self.media} {port} {self.proto}" + "".join(f" {f}" for f in self.formats)
        if self.information is not None:
            yield f"i={self.information}"
        for conn in self.connections:
            yield f"c={conn}"
        for bw in self.bandwidths:
            yield f"b={bw}"
        if self.key is not None:
            yield f"k={self.key}"
        for name, value in self.attributes:
            yield f"a={name}" if value is None else f"a={name}:{value}"


def _parse_m_line(value: str) -> MediaDescription:
    parts = value.split()
    if len(parts) < 3:
        raise SdpParseError(f"m= needs at least 3 fields: {value!r}")
    port_text, _, count_text = parts[1].partition("/")
    try:
        port = int(port_text)
        count = int(count_text) if count_text else None
    except ValueError as exc:
        raise SdpParseError(f"m= port is not a number: {parts[1]!r}") from exc
    if not 0 <= port <= 65535:
        raise SdpParseError(f"m= port out of range: {port}")
    return MediaDescription(media=parts[0], port=port, port_count=count, proto=parts[2], formats=parts[3:])


#: RFC 3551 §6 static audio payload types that may appear without an rtpmap.
STATIC_PAYLOAD_TYPES: dict[int, RtpMap] = {
    0: RtpMap(0, "PCMU", 8000),
    3: RtpMap(3, "GSM", 8000),
    4: RtpMap(4, "G723", 8000),
    8: RtpMap(8, "PCMA", 8000),
    9: RtpMap(9, "G722", 8000),
    13: RtpMap(13, "CN", 8000),
    18: RtpMap(18, "G729", 8000),
}


@dataclass
class SessionDescription(_Attributes):
    """A whole session description (RFC 4566 §5). ``str()`` gives the wire form with CRLF line endings."""

    version: int = 0
    origin: Origin = field(default_factory=Origin)
    session_name: str = "-"
    information: str | None = None
    uri: str | None = None
    emails: list[str] = field(default_factory=list)
    phones: list[str] = field(default_factory=list)
    connection: Connection | None = None
    bandwidths: list[str] = field(default_factory=list)
    #: ``t=`` lines each followed by its ``r=`` lines, kept as text (we never schedule sessions).
    times: list[str] = field(default_factory=lambda: ["t=0 0"])
    zones: str | None = None
    key: str | None = None
    media: list[MediaDescription] = field(default_factory=list)

    @classmethod
    def parse(cls, text: str | bytes) -> SessionDescription:
        """Parse SDP text; raises :class:`SdpParseError` (and nothing else) on bad input."""
        if isinstance(text, bytes | bytearray | memoryview):
            if len(text) > MAX_SDP_BYTES:
                raise SdpParseError("session description too large")
            try:
                text = bytes(text).decode("utf-8")
            except UnicodeDecodeError as exc:
                raise SdpParseError("session description is not UTF-8") from exc
        if len(text) > MAX_SDP_BYTES:
            raise SdpParseError("session description too large")
        session = cls(times=[])
        current: MediaDescription | None = None
        seen_version = seen_origin = seen_name = False
        for number, raw in enumerate(text.replace("\r\n", "\n").split("\n"), start=1):
            line = raw.rstrip("\r")
            if not line.strip():
                continue
            if len(line) < 2 or line[1] != "=":
                raise SdpParseError(f"line {number} is not <type>=<value>: {line[:40]!r}")
            kind, value = line[0], line[2:]
            if kind == "m":
                current = _parse_m_line(value)
                session.media.append(current)
                continue
            if current is not None:
                if kind == "a":
                    current.attributes.append(_split_attribute(value))
                elif kind == "c":
                    current.connections.append(Connection.parse(value))
                elif kind == "b":
                    current.bandwidths.append(value)
                elif kind == "i":
                    current.information = value
                elif kind == "k":
                    current.key = value
                else:
                    raise SdpParseError(f"line {number}: {kind}= is not allowed in a media section")
                continue
            if kind == "v":
                if value.strip() != "0":
                    raise SdpParseError(f"unsupported SDP version {value!r}")
                seen_version = True
            elif kind == "o":
                session.origin = Origin.parse(value)
                seen_origin = True
            elif kind == "s":
                session.session_name = value
                seen_name = True
            elif kind == "i":
                session.information = value
            elif kind == "u":
                session.uri = value
            elif kind == "e":
                session.emails.append(value)
            elif kind == "p":
                session.phones.append(value)
            elif kind == "c":
                session.connection = Connection.parse(value)
            elif kind == "b":
                session.bandwidths.append(value)
            elif kind == "t":
                session.times.append(line)
            elif kind == "r":
                if not session.times:
                    raise SdpParseError("r= before t=")
                session.times[-1] += "\r\n" + line
            elif kind == "z":
                session.zones = value
            elif kind == "k":
                session.key = value
            elif kind == "a":
                session.attributes.append(_split_attribute(value))
            else:
                raise SdpParseError(f"line {number}: unknown type {kind}=")
        if not (seen_version and seen_origin):
            raise SdpParseError("missing v= or o= line")
        if not seen_name:
            session.session_name = "-"
        if not session.times:
            session.times = ["t=0 0"]
        return session

    def connection_for(self, media: MediaDescription) -> Connection | None:
        """The effective ``c=`` for a media section: its own, else the session's (RFC 4566 §5.7)."""
        return media.connection or self.connection

    def direction_for(self, media: MediaDescription) -> str:
        """Effective direction: media level, else session level, else sendrecv (RFC 3264 §5.1)."""
        return media.direction or self.direction or "sendrecv"

    def lines(self) -> Iterator[str]:
        yield f"v={self.version}"
        yield f"o={self.origin}"
        yield f"s={self.session_name}"
        if self.information is not None:
            yield f"i={self.information}"
        if self.uri is not None:
            yield f"u={self.uri}"
        for email in self.emails:
            yield f"e={email}"
        for phone in self.phones:
            yield f"p={phone}"
        if self.connection is not None:
            yield f"c={self.connection}"
        for bw in self.bandwidths:
            yield f"b={bw}"
        yield from self.times
        if self.zones is not None:
            yield f"z={self.zones}"
        if self.key is not None:
            yield f"k={self.key}"
        for name, value in self.attributes:
            yield f"a={name}" if value is None else f"a={name}:{value}"
        for media in self.media:
            yield from media.lines()

    def __str__(self) -> str:
        return "".join(line + "\r\n" for line in self.lines())

    def __bytes__(self) -> bytes:
        return str(self).encode("utf-8")

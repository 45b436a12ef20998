"""SMPP 3.4 PDUs (SMPP v3.4 Issue 1.2, §3 and §4): encoding, decoding and stream framing.

Written by hand rather than taken from a library: an ESME needs ~15 PDU types, every
field is a fixed-order integer, C-Octet string or octet string (§3.1), and owning the
codec lets the session decide *when* a response goes out (deliver_sm_resp only after
the application stored the message), which no asyncio SMPP library we tried allows.

Decoding never trusts the wire: anything malformed raises `PduError` carrying the
command_status (§5.1.3) and sequence number to answer with, so the session can send a
generic_nack or an error response instead of crashing.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field

HEADER = struct.Struct(">IIII")
HEADER_LEN = 16
MAX_PDU_LEN = 70_000  # message_payload may hold 64 KiB; anything longer is a broken stream


class CommandId(enum.IntEnum):
    """§5.1.2.1."""

    GENERIC_NACK = 0x80000000
    BIND_RECEIVER = 0x00000001
    BIND_RECEIVER_RESP = 0x80000001
    BIND_TRANSMITTER = 0x00000002
    BIND_TRANSMITTER_RESP = 0x80000002
    QUERY_SM = 0x00000003
    QUERY_SM_RESP = 0x80000003
    SUBMIT_SM = 0x00000004
    SUBMIT_SM_RESP = 0x80000004
    DELIVER_SM = 0x00000005
    DELIVER_SM_RESP = 0x80000005
    UNBIND = 0x00000006
    UNBIND_RESP = 0x80000006
    REPLACE_SM = 0x00000007
    REPLACE_SM_RESP = 0x80000007
    CANCEL_SM = 0x00000008
    CANCEL_SM_RESP = 0x80000008
    BIND_TRANSCEIVER = 0x00000009
    BIND_TRANSCEIVER_RESP = 0x80000009
    OUTBIND = 0x0000000B
    ENQUIRE_LINK = 0x00000015
    ENQUIRE_LINK_RESP = 0x80000015
    SUBMIT_MULTI = 0x00000021
    SUBMIT_MULTI_RESP = 0x80000021
    ALERT_NOTIFICATION = 0x00000102
    DATA_SM = 0x00000103
    DATA_SM_RESP = 0x80000103


class Status(enum.IntEnum):
    """command_status values, §5.1.3."""

    ESME_ROK = 0x00
    ESME_RINVMSGLEN = 0x01
    ESME_RINVCMDLEN = 0x02
    ESME_RINVCMDID = 0x03
    ESME_RINVBNDSTS = 0x04
    ESME_RALYBND = 0x05
    ESME_RINVPRTFLG = 0x06
    ESME_RINVREGDLVFLG = 0x07
    ESME_RSYSERR = 0x08
    ESME_RINVSRCADR = 0x0A
    ESME_RINVDSTADR = 0x0B
    ESME_RINVMSGID = 0x0C
    ESME_RBINDFAIL = 0x0D
    ESME_RINVPASWD = 0x0E
    ESME_RINVSYSID = 0x0F
    ESME_RCANCELFAIL = 0x11
    ESME_RREPLACEFAIL = 0x13
    ESME_RMSGQFUL = 0x14
    ESME_RINVSERTYP = 0x15
    ESME_RINVNUMDESTS = 0x33
    ESME_RINVDLNAME = 0x34
    ESME_RINVDESTFLAG = 0x40
    ESME_RINVSUBREP = 0x42
    ESME_RINVESMCLASS = 0x43
    ESME_RCNTSUBDL = 0x44
    ESME_RSUBMITFAIL = 0x45
    ESME_RINVSRCTON = 0x48
    ESME_RINVSRCNPI = 0x49
    ESME_RINVDSTTON = 0x50
    ESME_RINVDSTNPI = 0x51
    ESME_RINVSYSTYP = 0x53
    ESME_RINVREPFLAG = 0x54
    ESME_RINVNUMMSGS = 0x55
    ESME_RTHROTTLED = 0x58
    ESME_RINVSCHED = 0x61
    ESME_RINVEXPIRY = 0x62
    ESME_RINVDFTMSGID = 0x63
    ESME_RX_T_APPN = 0x64
    ESME_RX_P_APPN = 0x65
    ESME_RX_R_APPN = 0x66
    ESME_RQUERYFAIL = 0x67
    ESME_RINVOPTPARSTREAM = 0xC0
    ESME_ROPTPARNOTALLWD = 0xC1
    ESME_RINVPARLEN = 0xC2
    ESME_RMISSINGOPTPARAM = 0xC3
    ESME_RINVOPTPARAMVAL = 0xC4
    ESME_RDELIVERYFAILURE = 0xFE
    ESME_RUNKNOWNERR = 0xFF


def status_name(status: int) -> str:
    """'ESME_RTHROTTLED' for 0x58; vendor-specific codes as hex."""
    try:
        return Status(status).name
    except ValueError:
        return f"0x{status:08x}"


class Tag(enum.IntEnum):
    """Optional parameter tags, §5.3.2."""

    DEST_ADDR_SUBUNIT = 0x0005
    SOURCE_ADDR_SUBUNIT = 0x000D
    PAYLOAD_TYPE = 0x0019
    ADDITIONAL_STATUS_INFO_TEXT = 0x001D
    RECEIPTED_MESSAGE_ID = 0x001E
    USER_MESSAGE_REFERENCE = 0x0204
    SOURCE_PORT = 0x020A
    DESTINATION_PORT = 0x020B
    SAR_MSG_REF_NUM = 0x020C
    LANGUAGE_INDICATOR = 0x020D
    SAR_TOTAL_SEGMENTS = 0x020E
    SAR_SEGMENT_SEQNUM = 0x020F
    SC_INTERFACE_VERSION = 0x0210
    NETWORK_ERROR_CODE = 0x0423
    MESSAGE_PAYLOAD = 0x0424
    DELIVERY_FAILURE_REASON = 0x0425
    MORE_MESSAGES_TO_SEND = 0x0426
    MESSAGE_STATE = 0x0427


# esm_class bits, §5.2.12
ESM_UDHI = 0x40
ESM_TYPE_MASK = 0x3C
ESM_TYPE_DELIVERY_RECEIPT = 0x04
ESM_TYPE_INTERMEDIATE_NOTIFICATION = 0x20

Tlvs = dict[int, bytes]


class PduError(Exception):
    """A PDU that cannot be decoded. *status* is what to answer with (generic_nack or resp)."""

    def __init__(self, message: str, status: int, command_id: int = 0, sequence_number: int = 0) -> None:
        super().__init__(message)
        self.status = status
        self.command_id = command_id
        self.sequence_number = sequence_number


class FramingError(Exception):
    """The byte stream cannot be split into PDUs any more (§3.2: command_length invalid)."""


@dataclass(slots=True)
class Pdu:
    """Header fields shared by every PDU (§3.2)."""

    command_id: int
    sequence_number: int = 0
    command_status: int = 0

    @property
    def is_response(self) -> bool:
        return bool(self.command_id & 0x80000000)


@dataclass(slots=True)
class Bind(Pdu):
    """bind_transmitter / bind_receiver / bind_transceiver, §4.1."""

    system_id: str = ""
    password: str = ""
    system_type: str = ""
    interface_version: int = 0x34
    addr_ton: int = 0
    addr_npi: int = 0
    address_range: str = ""


@dataclass(slots=True)
class BindResp(Pdu):
    """§4.1.2 / §4.1.4 / §4.1.6."""

    system_id: str = ""
    tlvs: Tlvs = field(default_factory=dict)


@dataclass(slots=True)
class Outbind(Pdu):
    """§4.1.7.1."""

    system_id: str = ""
    password: str = ""


@dataclass(slots=True)
class ShortMessage(Pdu):
    """submit_sm (§4.4.1) and deliver_sm (§4.6.1) share this body."""

    service_type: str = ""
    source_addr_ton: int = 0
    source_addr_npi: int = 0
    source_addr: str = ""
    dest_addr_ton: int = 0
    dest_addr_npi: int = 0
    destination_addr: str = ""
    esm_class: int = 0
    protocol_id: int = 0
    priority_flag: int = 0
    schedule_delivery_time: str = ""
    validity_period: str = ""
    registered_delivery: int = 0
    replace_if_present_flag: int = 0
    data_coding: int = 0
    sm_default_msg_id: int = 0
    short_message: bytes = b""
    tlvs: Tlvs = field(default_factory=dict)


@dataclass(slots=True)
class DataSm(Pdu):
    """data_sm, §4.7.1 (some SMSCs deliver MO this way)."""

    service_type: str = ""
    source_addr_ton: int = 0
    source_addr_npi: int = 0
    source_addr: str = ""
    dest_addr_ton: int = 0
    dest_addr_npi: int = 0
    destination_addr: str = ""
    esm_class: int = 0
    registered_delivery: int = 0
    data_coding: int = 0
    tlvs: Tlvs = field(default_factory=dict)


@dataclass(slots=True)
class MessageIdResp(Pdu):
    """submit_sm_resp / deliver_sm_resp / data_sm_resp: message_id (+ TLVs for data_sm_resp)."""

    message_id: str = ""
    tlvs: Tlvs = field(default_factory=dict)


@dataclass(slots=True)
class AlertNotification(Pdu):
    """§4.12.1; no response is sent."""

    source_addr_ton: int = 0
    source_addr_npi: int = 0
    source_addr: str = ""
    esme_addr_ton: int = 0
    esme_addr_npi: int = 0
    esme_addr: str = ""
    tlvs: Tlvs = field(default_factory=dict)


C = CommandId
BIND_IDS = frozenset((C.BIND_RECEIVER, C.BIND_TRANSMITTER, C.BIND_TRANSCEIVER))
BIND_RESP_IDS = frozenset((C.BIND_RECEIVER_RESP, C.BIND_TRANSMITTER_RESP, C.BIND_TRANSCEIVER_RESP))
EMPTY_BODY_IDS = frozenset((C.GENERIC_NACK, C.UNBIND, C.UNBIND_RESP, C.ENQUIRE_LINK, C.ENQUIRE_LINK_RESP))
MESSAGE_ID_RESP_IDS = frozenset((C.SUBMIT_SM_RESP, C.DELIVER_SM_RESP, C.DATA_SM_RESP))


# ---------------------------------------------------------------- encoding


def _cstr(value: str, max_len: int) -> bytes:
    """C-Octet String (§3.1): ASCII, NUL-terminated, at most *max_len* octets with the NUL."""
    raw = value.encode("latin-1", "replace")
    if len(raw) >= max_len:
        raise ValueError(f"{value!r} longer than {max_len - 1} octets")
    return raw + b"\0"


def _tlvs(tlvs: Tlvs) -> bytes:
    return b"".join(struct.pack(">HH", tag, len(v)) + v for tag, v in tlvs.items())


def encode(pdu: Pdu) -> bytes:
    """Serialize *pdu*; raises ValueError for values the specification forbids."""
    cid = pdu.command_id
    if isinstance(pdu, ShortMessage):
        sm = pdu.short_message
        if len(sm) > 254:
            raise ValueError("short_message longer than 254 octets; use message_payload")
        body = b"".join(
            (
                _cstr(pdu.service_type, 6),
                bytes((pdu.source_addr_ton, pdu.source_addr_npi)),
                _cstr(pdu.source_addr, 21),
                bytes((pdu.dest_addr_ton, pdu.dest_addr_npi)),
                _cstr(pdu.destination_addr, 21),
                bytes((pdu.esm_class, pdu.protocol_id, pdu.priority_flag)),
                _cstr(pdu.schedule_delivery_time, 17),
                _cstr(pdu.validity_period, 17),
                bytes(
                    (
                        pdu.registered_delivery,
                        pdu.replace_if_present_flag,
                        pdu.data_coding,
                        pdu.sm_default_msg_id,
                        len(sm),
                    )
                ),
                sm,
                _tlvs(pdu.tlvs),
            )
        )
    elif isinstance(pdu, MessageIdResp):
        if pdu.command_status and cid == C.SUBMIT_SM_RESP and not pdu.message_id:
            body = b""  # §4.4.2: body not returned when command_status is non-zero
        else:
            body = _cstr(pdu.message_id, 65) + _tlvs(pdu.tlvs)
    elif isinstance(pdu, Bind):
        body = b"".join(
            (
                _cstr(pdu.system_id, 16),
                _cstr(pdu.password, 9),
                _cstr(pdu.system_type, 13),
                bytes((pdu.interface_version, pdu.addr_ton, pdu.addr_npi)),
                _cstr(pdu.address_range, 41),
            )
        )
    elif isinstance(pdu, BindResp):
        body = _cstr(pdu.system_id, 16) + _tlvs(pdu.tlvs) if not pdu.command_status else b""
    elif isinstance(pdu, DataSm):
        body = b"".join(
            (
                _cstr(pdu.service_type, 6),
                bytes((pdu.source_addr_ton, pdu.source_addr_npi)),
                _cstr(pdu.source_addr, 65),
                bytes((pdu.dest_addr_ton, pdu.dest_addr_npi)),
                _cstr(pdu.destination_addr, 65),
                bytes((pdu.esm_class, pdu.registered_delivery, pdu.data_coding)),
                _tlvs(pdu.tlvs),
            )
        )
    elif isinstance(pdu, Outbind):
        body = _cstr(pdu.system_id, 16) + _cstr(pdu.password, 9)
    elif isinstance(pdu, AlertNotification):
        body = b"".join(
            (
                bytes((pdu.source_addr_ton, pdu.source_addr_npi)),
                _cstr(pdu.source_addr, 65),
                bytes((pdu.esme_addr_ton, pdu.esme_addr_npi)),
                _cstr(pdu.esme_addr, 65),
                _tlvs(pdu.tlvs),
            )
        )
    else:
        body = b""
    return HEADER.pack(HEADER_LEN + len(body), cid, pdu.command_status, pdu.sequence_number) + body


# ---------------------------------------------------------------- decoding


class _Reader:
    """Cursor over a PDU body; every read checks bounds and raises PduError."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def int8(self) -> int:
        if self.pos >= len(self.data):
            raise PduError("PDU body truncated", Status.ESME_RINVCMDLEN)
        v = self.data[self.pos]
        self.pos += 1
        return v

    def cstr(self, max_len: int, status: int = Status.ESME_RINVPARLEN) -> str:
        end = self.data.find(b"\0", self.pos, self.pos + max_len)
        if end < 0:
            if self.pos >= len(self.data):
                raise PduError("PDU body truncated", Status.ESME_RINVCMDLEN)
            raise PduError(f"C-Octet string longer than {max_len - 1} octets", status)
        v = self.data[self.pos : end].decode("latin-1")
        self.pos = end + 1
        return v

    def octets(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise PduError("octet string runs past end of PDU", Status.ESME_RINVMSGLEN)
        v = self.data[self.pos : self.pos + n]
        self.pos += n
        return v

    def tlvs(self) -> Tlvs:
        out: Tlvs = {}
        d = self.data
        while self.pos < len(d):
            if self.pos + 4 > len(d):
                raise PduError("truncated TLV header", Status.ESME_RINVOPTPARSTREAM)
            tag, length = struct.unpack_from(">HH", d, self.pos)
            self.pos += 4
            if self.pos + length > len(d):
                raise PduError(f"TLV 0x{tag:04x} runs past end of PDU", Status.ESME_RINVOPTPARSTREAM)
            out[tag] = d[self.pos : self.pos + length]
            self.pos += length
        return out

    def end_or_tlvs(self) -> Tlvs:
        return self.tlvs() if self.pos < len(self.data) else {}


def decode(data: bytes) -> Pdu:
    """Decode one whole PDU (header included). Raises PduError for anything malformed."""
    if len(data) < HEADER_LEN:
        raise PduError("PDU shorter than its header", Status.ESME_RINVCMDLEN)
    length, cid, status, seq = HEADER.unpack_from(data)
    if length != len(data):
        raise PduError("command_length does not match", Status.ESME_RINVCMDLEN, cid, seq)
    r = _Reader(data[HEADER_LEN:])
    try:
        return _decode_body(r, cid, status, seq)
    except PduError as e:
        e.command_id = cid
        e.sequence_number = seq
        raise


def _decode_body(r: _Reader, cid: int, status: int, seq: int) -> Pdu:
    if cid in (C.SUBMIT_SM, C.DELIVER_SM):
        pdu = ShortMessage(cid, seq, status)
        pdu.service_type = r.cstr(6)
        pdu.source_addr_ton = r.int8()
        pdu.source_addr_npi = r.int8()
        pdu.source_addr = r.cstr(21, Status.ESME_RINVSRCADR)
        pdu.dest_addr_ton = r.int8()
        pdu.dest_addr_npi = r.int8()
        pdu.destination_addr = r.cstr(21, Status.ESME_RINVDSTADR)
        pdu.esm_class = r.int8()
        pdu.protocol_id = r.int8()
        pdu.priority_flag = r.int8()
        pdu.schedule_delivery_time = r.cstr(17, Status.ESME_RINVSCHED)
        pdu.validity_period = r.cstr(17, Status.ESME_RINVEXPIRY)
        pdu.registered_delivery = r.int8()
        pdu.replace_if_present_flag = r.int8()
        pdu.data_coding = r.int8()
        pdu.sm_default_msg_id = r.int8()
        pdu.short_message = r.octets(r.int8())
        pdu.tlvs = r.tlvs()
        return pdu
    if cid in MESSAGE_ID_RESP_IDS:
        resp = MessageIdResp(cid, seq, status)
        if r.data:
            resp.message_id = r.cstr(65)
            resp.tlvs = r.end_or_tlvs()
        return resp
    if cid in EMPTY_BODY_IDS:
        return Pdu(cid, seq, status)
    if cid in BIND_RESP_IDS:
        bresp = BindResp(cid, seq, status)
        if r.data:
            bresp.system_id = r.cstr(16)
            bresp.tlvs = r.end_or_tlvs()
        return bresp
    if cid in BIND_IDS:
        bind = Bind(cid, seq, status)
        bind.system_id = r.cstr(16, Status.ESME_RINVSYSID)
        bind.password = r.cstr(9, Status.ESME_RINVPASWD)
        bind.system_type = r.cstr(13, Status.ESME_RINVSYSTYP)
        bind.interface_version = r.int8()
        bind.addr_ton = r.int8()
        bind.addr_npi = r.int8()
        bind.address_range = r.cstr(41)
        return bind
    if cid == C.DATA_SM:
        dsm = DataSm(cid, seq, status)
        dsm.service_type = r.cstr(6)
        dsm.source_addr_ton = r.int8()
        dsm.source_addr_npi = r.int8()
        dsm.source_addr = r.cstr(65, Status.ESME_RINVSRCADR)
        dsm.dest_addr_ton = r.int8()
        dsm.dest_addr_npi = r.int8()
        dsm.destination_addr = r.cstr(65, Status.ESME_RINVDSTADR)
        dsm.esm_class = r.int8()
        dsm.registered_delivery = r.int8()
        dsm.data_coding = r.int8()
        dsm.tlvs = r.tlvs()
        return dsm
    if cid == C.OUTBIND:
        ob = Outbind(cid, seq, status)
        ob.system_id = r.cstr(16)
        ob.password = r.cstr(9)
        return ob
    if cid == C.ALERT_NOTIFICATION:
        an = AlertNotification(cid, seq, status)
        an.source_addr_ton = r.int8()
        an.source_addr_npi = r.int8()
        an.source_addr = r.cstr(65)
        an.esme_addr_ton = r.int8()
        an.esme_addr_npi = r.int8()
        an.esme_addr = r.cstr(65)
        an.tlvs = r.end_or_tlvs()
        return an
    if cid & 0x80000000 and cid & 0x7FFFFFFF in (C.QUERY_SM, C.REPLACE_SM, C.CANCEL_SM, C.SUBMIT_MULTI):
        return Pdu(cid, seq, status)  # responses to requests we never send; the session ignores them
    raise PduError(f"unknown command_id 0x{cid:08x}", Status.ESME_RINVCMDID)


class PduReader:
    """Splits a TCP byte stream into whole PDUs (§3.2 command_length framing)."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        """Append *data*; return every complete PDU. Raises FramingError on an impossible length."""
        buf = self._buf
        buf += data
        out: list[bytes] = []
        pos = 0
        n = len(buf)
        while n - pos >= 4:
            length = int.from_bytes(buf[pos : pos + 4], "big")
            if length < HEADER_LEN or length > MAX_PDU_LEN:
                raise FramingError(f"command_length {length} out of range")
            if n - pos < length:
                break
            out.append(bytes(buf[pos : pos + length]))
            pos += length
        if pos:
            del buf[:pos]
        return out


def tlv_int(tlvs: Tlvs, tag: int) -> int | None:
    """Integer TLV value (1, 2 or 4 octets, §5.3.2), None if absent or empty."""
    v = tlvs.get(tag)
    if not v:
        return None
    return int.from_bytes(v, "big")


def tlv_str(tlvs: Tlvs, tag: int) -> str | None:
    """C-Octet string TLV value without its NUL, None if absent."""
    v = tlvs.get(tag)
    if v is None:
        return None
    return v.split(b"\0", 1)[0].decode("latin-1")

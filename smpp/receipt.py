"""Delivery receipts (SMPP 3.4 §5.2.12 esm_class, Appendix B, §5.3.2.12/§5.3.2.35).

An SMSC reports the fate of a message we submitted with registered_delivery as a
deliver_sm whose esm_class says "SMSC delivery receipt". The facts are in two places
that carriers fill unevenly: the `receipted_message_id` / `message_state` /
`network_error_code` TLVs (SMPP 3.4 proper) and the Appendix B text
`id:… sub:… dlvrd:… submit date:… done date:… stat:… err:… text:…`, which is only
"an example" in the specification and so comes with variations: upper-case keys,
`submit_date`, missing fields, dates with seconds, long state names, hex vs decimal
ids. TLVs win when both are present.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from datetime import datetime

from smpp.pdu import ESM_TYPE_DELIVERY_RECEIPT, ESM_TYPE_MASK, DataSm, ShortMessage, Tag, tlv_int, tlv_str


class Outcome(enum.Enum):
    """What the bridge shows for a receipt."""

    DELIVERED = "delivered"
    FAILED = "failed"
    EXPIRED = "expired"
    REJECTED = "rejected"
    UNKNOWN = "unknown"
    PENDING = "pending"  # intermediate notification (ENROUTE); not final

    @property
    def final(self) -> bool:
        return self is not Outcome.PENDING


class MessageState(enum.IntEnum):
    """message_state TLV values, §5.2.28."""

    ENROUTE = 1
    DELIVERED = 2
    EXPIRED = 3
    DELETED = 4
    UNDELIVERABLE = 5
    ACCEPTED = 6
    UNKNOWN = 7
    REJECTED = 8


_STATE_OUTCOME: dict[int, tuple[Outcome, str]] = {
    MessageState.ENROUTE: (Outcome.PENDING, "on its way"),
    MessageState.DELIVERED: (Outcome.DELIVERED, "delivered to the phone"),
    MessageState.EXPIRED: (Outcome.EXPIRED, "the phone could not be reached before the message expired"),
    MessageState.DELETED: (Outcome.FAILED, "deleted by the carrier before delivery"),
    MessageState.UNDELIVERABLE: (Outcome.FAILED, "the carrier could not deliver it"),
    MessageState.ACCEPTED: (Outcome.UNKNOWN, "accepted by the carrier on the subscriber's behalf"),
    MessageState.UNKNOWN: (Outcome.UNKNOWN, "the carrier does not know what became of it"),
    MessageState.REJECTED: (Outcome.REJECTED, "rejected by the carrier"),
}

# Appendix B `stat:` values and the longer spellings some SMSCs use instead.
_STAT_STATE: dict[str, MessageState] = {
    "ENROUTE": MessageState.ENROUTE,
    "DELIVRD": MessageState.DELIVERED,
    "DELIVERED": MessageState.DELIVERED,
    "DELIVER": MessageState.DELIVERED,
    "EXPIRED": MessageState.EXPIRED,
    "DELETED": MessageState.DELETED,
    "UNDELIV": MessageState.UNDELIVERABLE,
    "UNDELIVERABLE": MessageState.UNDELIVERABLE,
    "FAILED": MessageState.UNDELIVERABLE,
    "ACCEPTD": MessageState.ACCEPTED,
    "ACCEPTED": MessageState.ACCEPTED,
    "UNKNOWN": MessageState.UNKNOWN,
    "REJECTD": MessageState.REJECTED,
    "REJECTED": MessageState.REJECTED,
}

_KEY = re.compile(r"(?i)(?<![\w])(id|sub|dlvrd|submit[ _]date|done[ _]date|stat|err|text)\s*:")


@dataclass(frozen=True, slots=True)
class Receipt:
    """A parsed delivery receipt."""

    message_id: str
    outcome: Outcome
    reason: str
    state: int | None = None  # MessageState, or None if the SMSC sent an unknown stat
    stat: str = ""  # the stat text as received
    error: str = ""  # err field or network_error_code, as received
    submitted: int | None = None
    delivered: int | None = None
    submit_date: datetime | None = None
    done_date: datetime | None = None
    text: str = ""


class NotAReceiptError(ValueError):
    """The deliver_sm carries no message id we could match; it is not a receipt."""


def is_receipt(pdu: ShortMessage | DataSm) -> bool:
    """esm_class says receipt, or the receipted_message_id TLV is there (§5.2.12)."""
    kind = pdu.esm_class & ESM_TYPE_MASK
    return (
        kind == ESM_TYPE_DELIVERY_RECEIPT
        or kind == 0x08  # SME delivery acknowledgement
        or kind == 0x20  # intermediate delivery notification
        or Tag.RECEIPTED_MESSAGE_ID in pdu.tlvs
    )


def parse_text(text: str) -> dict[str, str]:
    """Appendix B fields of a receipt text, keys normalised ('submit date', 'done date', …)."""
    fields: dict[str, str] = {}
    matches = list(_KEY.finditer(text))
    for i, m in enumerate(matches):
        key = m.group(1).lower().replace("_", " ")
        if key in fields:
            continue
        end = len(text) if key == "text" or i + 1 == len(matches) else matches[i + 1].start()
        fields[key] = text[m.end() : end].strip()
        if key == "text":
            break
    return fields


def _date(value: str | None) -> datetime | None:
    if not value:
        return None
    digits = value.strip()
    fmt = {10: "%y%m%d%H%M", 12: "%y%m%d%H%M%S", 14: "%Y%m%d%H%M%S"}.get(len(digits))
    if fmt is None or not digits.isdigit():
        return None
    try:
        return datetime.strptime(digits, fmt)
    except ValueError:
        return None


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None


def parse(pdu: ShortMessage | DataSm, text: str) -> Receipt:
    """Receipt from a deliver_sm/data_sm and its decoded text. Raises NotAReceiptError."""
    fields = parse_text(text)
    message_id = tlv_str(pdu.tlvs, Tag.RECEIPTED_MESSAGE_ID) or fields.get("id", "")
    if not message_id:
        raise NotAReceiptError("no receipted_message_id TLV and no id: field")
    stat = fields.get("stat", "").strip().upper()
    state_tlv = tlv_int(pdu.tlvs, Tag.MESSAGE_STATE)
    state: int | None
    if state_tlv is not None and state_tlv in _STATE_OUTCOME:
        state = state_tlv
    else:
        state = _STAT_STATE.get(stat.split()[0] if stat else "")
    if state is None:
        outcome, reason = Outcome.UNKNOWN, f"unrecognised status {stat!r}" if stat else "no status"
    else:
        outcome, reason = _STATE_OUTCOME[state]
    error = fields.get("err", "")
    nec = pdu.tlvs.get(Tag.NETWORK_ERROR_CODE)
    if nec and len(nec) == 3:
        kind = {1: "ANSI-136", 2: "IS-95", 3: "GSM"}.get(nec[0], f"type {nec[0]}")
        error = f"{kind} {int.from_bytes(nec[1:], 'big')}"
    if outcome is not Outcome.DELIVERED and error and error.strip("0"):
        reason = f"{reason} (error {error})"
    return Receipt(
        message_id=message_id,
        outcome=outcome,
        reason=reason,
        state=state,
        stat=stat,
        error=error,
        submitted=_int(fields.get("sub")),
        delivered=_int(fields.get("dlvrd")),
        submit_date=_date(fields.get("submit date")),
        done_date=_date(fields.get("done date")),
        text=fields.get("text", ""),
    )


def id_variants(message_id: str) -> tuple[str, ...]:
    """Forms of a submit_sm_resp message_id a receipt may quote instead.

    Some SMSCs answer submit_sm with a hexadecimal id and put its decimal value in the
    receipt (or the reverse), some pad with zeros. Store the message under each variant
    (or compare with them) to match receipts reliably.
    """
    out = [message_id]
    s = message_id.strip()
    stripped = s.lstrip("0") or "0"
    if stripped not in out:
        out.append(stripped)
    if re.fullmatch(r"[0-9a-fA-F]+", s):
        dec = str(int(s, 16))
        if dec not in out:
            out.append(dec)
    if s.isdigit():
        hx = format(int(s), "x")
        for v in (hx, hx.upper()):
            if v not in out:
                out.append(v)
    return tuple(out)

"""Named exceptions raised by the SIP core.

Anything that comes off the wire and is wrong raises :class:`SipParseError`; the transport edge catches it,
answers ``400 Bad Request`` (RFC 3261 §8.2.2 / §21.4.1) when the request got far enough to form a response,
and otherwise drops the datagram and logs once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sip.message import Request


class SipError(Exception):
    """Base class of every exception the `sip` package raises on purpose."""


class SipParseError(SipError):
    """A message, header or URI does not follow the RFC 3261 §25 grammar.

    ``reason`` is a short human-readable phrase fit for a 400 reason phrase or a log line. ``status`` is
    the response code the edge should use (400, or 505 for an unsupported SIP version, §8.2.2.3/§21.5.7).
    ``partial`` is the request when its start line and the headers needed to build a response
    (Via, From, To, Call-ID, CSeq; §8.2.6.2) could be read, so the edge can answer rather than drop.
    """

    def __init__(self, reason: str, status: int = 400, partial: Request | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.partial = partial


class TransactionError(SipError):
    """A transaction was asked to do something its RFC 3261 §17 state machine does not allow."""


class DialogError(SipError):
    """A dialog (§12) operation is not valid in the dialog's current state."""


class CallFailed(SipError):
    """An outgoing call ended before it was answered; ``status``/``reason`` say why (486, 487, 408 …)."""

    def __init__(self, status: int | None, reason: str) -> None:
        super().__init__(f"{status} {reason}" if status is not None else reason)
        self.status = status
        self.reason = reason

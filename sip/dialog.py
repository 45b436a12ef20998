"""Dialogs (RFC 3261 §12): identity, route set, remote target and the two CSeq spaces.

A :class:`Dialog` is plain state plus the rules that read and write it; it sends nothing itself. The
owner creates one from the INVITE and its first tagged response (§12.1.1 as UAS, §12.1.2 as UAC), asks it
for in-dialog requests (§12.2.1.1), and checks incoming in-dialog requests against it (§12.2.2).
"""

from __future__ import annotations

import enum
import random
from typing import Any

from sip.errors import DialogError
from sip.headers import NameAddr
from sip.message import Request, Response
from sip.uri import SipUri


class DialogState(enum.Enum):
    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


class Dialog:
    """One dialog. ``local_seq``/``remote_seq`` are the CSeq numbers of §12.2.1.1 and §12.2.2."""

    __slots__ = (
        "call_id",
        "is_uac",
        "local_seq",
        "local_tag",
        "local_uri",
        "remote_seq",
        "remote_tag",
        "remote_target",
        "remote_uri",
        "route_set",
        "secure",
        "state",
    )

    def __init__(
        self,
        call_id: str,
        local_tag: str,
        remote_tag: str,
        local_uri: str,
        remote_uri: str,
        remote_target: str,
        route_set: list[str],
        local_seq: int | None,
        remote_seq: int | None,
        is_uac: bool,
        secure: bool = False,
        state: DialogState = DialogState.EARLY,
    ) -> None:
        self.call_id = call_id
        self.local_tag = local_tag
        self.remote_tag = remote_tag
        #: the From/To header values (without tags) used in every in-dialog request
        self.local_uri = local_uri
        self.remote_uri = remote_uri
        self.remote_target = remote_target
        self.route_set = route_set
        self.local_seq = local_seq
        self.remote_seq = remote_seq
        self.is_uac = is_uac
        self.secure = secure
        self.state = state

    def snapshot(self) -> dict[str, Any]:
        """What a restarted process needs to send a request in this dialog (§12.2.1.1): kept by the
        application (the bridge stores it with the call) so a crash does not leave the peer's call up."""
        return {name: getattr(self, name) for name in self.__slots__ if name != "state"}

    @classmethod
    def restore(cls, snapshot: dict[str, Any]) -> Dialog:
        """A confirmed dialog from :meth:`snapshot`; raises ``DialogError`` if it is not one."""
        try:
            fields = {name: snapshot[name] for name in cls.__slots__ if name != "state"}
        except (KeyError, TypeError) as exc:
            raise DialogError(f"not a dialog snapshot: {exc!r}") from None
        fields["route_set"] = [str(r) for r in fields["route_set"]]
        return cls(**fields, state=DialogState.CONFIRMED)

    @property
    def id(self) -> tuple[str, str, str]:
        """§12: Call-ID, local tag, remote tag."""
        return (self.call_id, self.local_tag, self.remote_tag)

    @classmethod
    def from_uac(cls, invite: Request, response: Response) -> Dialog:
        """§12.1.2: route set = Record-Route of the response reversed; remote target = its Contact;
        local CSeq = the INVITE's; remote CSeq empty."""
        remote_tag = response.to.tag
        if remote_tag is None:
            raise DialogError("response without To tag cannot create a dialog")
        local_tag = invite.from_.tag
        if local_tag is None:
            raise DialogError("request without From tag")
        contacts = response.contact
        target = str(contacts[0].uri) if contacts else invite.uri
        routes = list(reversed(response.headers.get_all("Record-Route")))
        secure = invite.uri.lower().startswith("sips:")
        state = DialogState.CONFIRMED if 200 <= response.status < 300 else DialogState.EARLY
        return cls(
            invite.call_id,
            local_tag,
            remote_tag,
            _without_tag(invite.from_),
            _without_tag(invite.to),
            target,
            routes,
            invite.cseq.number,
            None,
            True,
            secure,
            state,
        )

    @classmethod
    def from_uas(cls, invite: Request, local_tag: str, confirmed: bool = False) -> Dialog:
        """§12.1.1: route set = Record-Route of the request in order; remote target = its Contact;
        remote CSeq = the request's; local CSeq empty."""
        remote_tag = invite.from_.tag or ""
        contacts = invite.contact
        target = str(contacts[0].uri) if contacts else ""
        routes = invite.headers.get_all("Record-Route")
        secure = invite.uri.lower().startswith("sips:")
        return cls(
            invite.call_id,
            local_tag,
            remote_tag,
            _without_tag(invite.to),
            _without_tag(invite.from_),
            target,
            routes,
            None,
            invite.cseq.number,
            False,
            secure,
            DialogState.CONFIRMED if confirmed else DialogState.EARLY,
        )

    def confirm(self, response: Response) -> None:
        """A 2xx turns an early dialog confirmed; route set is recomputed from it (§12.1.2, §13.2.2.4)."""
        if self.is_uac:
            self.route_set = list(reversed(response.headers.get_all("Record-Route")))
            self.refresh_target(response)
        self.state = DialogState.CONFIRMED

    def refresh_target(self, message: Request | Response) -> None:
        """Target refresh (§12.2.1.2, §12.2.2): a Contact in a re-INVITE/UPDATE or its 2xx replaces the
        remote target."""
        contacts = message.contact
        if contacts:
            self.remote_target = str(contacts[0].uri)

    def next_local_seq(self) -> int:
        """§12.2.1.1: increment by one; a UAS dialog without a local CSeq starts at a random value."""
        if self.local_seq is None:
            self.local_seq = random.randint(1, 2**16)
        else:
            self.local_seq += 1
        return self.local_seq

    def create_request(
        self,
        method: str,
        via: str,
        contact: str | None,
        body: bytes = b"",
        content_type: str | None = None,
        extra: list[tuple[str, str]] | None = None,
        cseq: int | None = None,
    ) -> Request:
        """§12.2.1.1: To/From with tags, Call-ID, CSeq, and Request-URI/Route from remote target and
        route set (loose routing; strict-routing first hop per §12.2.1.1 paragraph 5)."""
        if self.state is DialogState.TERMINATED and method != "ACK":
            # A 2xx arriving after our BYE must still be ACKed (§13.2.2.4), so ACK is allowed.
            raise DialogError("dialog is terminated")
        if cseq is None:
            cseq = self.next_local_seq()
        routes = self.route_set
        request_uri = self.remote_target
        route_values = list(routes)
        if routes:
            first = NameAddr.parse(routes[0]).uri
            if isinstance(first, SipUri) and not first.lr:
                request_uri = str(first)
                route_values = [*routes[1:], f"<{self.remote_target}>"]
        items: list[tuple[str, str]] = [
            ("Via", via),
            ("Max-Forwards", "70"),
            ("From", f"{self.local_uri};tag={self.local_tag}"),
            ("To", f"{self.remote_uri};tag={self.remote_tag}" if self.remote_tag else self.remote_uri),
            ("Call-ID", self.call_id),
            ("CSeq", f"{cseq} {method}"),
        ]
        items.extend(("Route", r) for r in route_values)
        if contact is not None and method in ("INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY", "REFER"):
            items.append(("Contact", contact))
        if extra:
            items.extend(extra)
        if content_type is not None and body:
            items.append(("Content-Type", content_type))
        return Request(method, request_uri, items, body)

    def check_request(self, request: Request) -> int | None:
        """§12.2.2: a request with a CSeq lower than the remote CSeq is out of order → 500. Returns the
        status to reject with, or None after updating the remote CSeq. ACK and CANCEL carry the number of
        the request they refer to and are not checked."""
        if request.method in ("ACK", "CANCEL"):
            return None
        number = request.cseq.number
        if self.remote_seq is not None and number < self.remote_seq:
            return 500
        self.remote_seq = number
        return None


def _without_tag(addr: NameAddr) -> str:
    params = {k: v for k, v in addr.params.items() if k != "tag"}
    return str(NameAddr(addr.uri, addr.display, params))


def glare_retry_delay(owns_call_id: bool, rng: random.Random | None = None) -> float:
    """§14.1: after a 491, the Call-ID owner waits 2.1-4 s, the other side 0-2 s, in 10 ms units."""
    r = rng or random
    if owns_call_id:
        return r.randint(210, 400) / 100
    return r.randint(0, 200) / 100

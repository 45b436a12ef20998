"""Voice calls: Matrix legacy VoIP (``m.call.*``, spec "Voice over IP") ⇄ a SIP trunk (RFC 3261).

One :class:`BridgedCall` per call joins three things: the Matrix side (events sent by the phone party's
virtual user), the SIP dialog (``sip.ua.Call``) and the media relay (``media.service.MediaService``).

Outbound (Element's dial pad): ``m.call.invite`` in a DM portal → media leg from the offer → INVITE to
the trunk → 18x → 200 OK → ``m.call.answer`` (with ``capabilities: {"m.call.dtmf": true}`` so Element
shows its in-call dial pad). **Early media:** a 183 with SDP (ringback, "number not in service"
announcements) answers the Matrix call at once, so the user hears what the network plays; if the trunk
then fails the call, the Matrix side gets a hangup with the mapped reason and a notice saying why.

Inbound: INVITE to a number a Matrix user owns → DM portal with the caller's virtual user → our
``m.call.invite`` → 180 → the first ``m.call.answer`` wins (``m.call.select_answer`` to it; other devices
see it and stop ringing) → 200 OK.

Every path ends in :meth:`CallBridge._end`, which releases the SIP dialog, the media leg and its ports,
sends the Matrix hangup if Matrix did not end the call, and writes the call record.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from mautrix.appservice import IntentAPI
from mautrix.errors import MatrixError
from mautrix.types import EventType, RoomID

from media.call import MediaConfig
from media.service import CallSetup, MediaError, MediaEvent, MediaService
from sdp.message import SdpParseError, SessionDescription
from sip.auth import AllowList, Credentials
from sip.errors import DialogError, SipError
from sip.ua import Call as SipCall
from sip.ua import UserAgent
from sip.useragent import (
    CallAnswered,
    CallEnded,
    CallProgress,
    DtmfReceived,
    OfferAnswered,
    OfferReceived,
    UserAgentConfig,
)

from . import metrics
from .call_events import (
    CALL_ANSWER,
    CALL_CANDIDATES,
    CALL_HANGUP,
    CALL_INVITE,
    CALL_NEGOTIATE,
    CALL_REJECT,
    CALL_SELECT_ANSWER,
)
from .config import Config
from .credit import Credit
from .db import CallRecords, Portal
from .limits import SlidingWindow
from .numbers import to_e164
from .portal import VirtualUsers, open_dm
from .puppet import NotAVirtualUser

log = logging.getLogger("telebridge.calls")

CAPABILITIES = {"m.call.transferee": False, "m.call.dtmf": True}
VERSION = "1"

Notice = Callable[[IntentAPI, str, str | None, str], Awaitable[None]]


def matrix_reason_for_sip(status: int | None) -> tuple[str, str | None]:
    """A SIP final status → (``m.call.hangup`` reason, notice text or None).

    Busy and decline are what the callee chose; timeouts are the network's; the rest are failures the
    user should read about, since Element shows only "call ended".
    """
    if status is None:
        return "user_hangup", None
    if status in (486, 600, 603):
        return "user_busy", None
    if status in (408, 480, 487):
        return "invite_timeout", None
    if status in (404, 484, 604):
        return (
            "unknown_error",
            f"The number could not be reached: it does not exist or is incomplete ({status}).",
        )
    if status == 403:
        return "unknown_error", "The phone network refused the call (403 Forbidden)."
    if status in (401, 407):
        return "unknown_error", f"The phone trunk did not accept the bridge's credentials ({status})."
    if status == 488:
        return "user_media_failed", "The phone network could not agree on audio with this call (488)."
    if status >= 500:
        return "unknown_error", f"The phone network failed to connect the call ({status})."
    return "unknown_error", f"The call failed ({status})."


STATIC_PAYLOAD_TYPES = {0: "PCMU", 8: "PCMA", 9: "G722", 18: "G729"}


def trunk_codec(sdp_text: str) -> str | None:
    """The codec the trunk leg uses: the first format of the first audio section (RFC 3264 §6.1)."""
    try:
        session = SessionDescription.parse(sdp_text)
    except SdpParseError:
        return None
    for media in session.media:
        if media.media != "audio" or not media.formats or not media.formats[0].isdigit():
            continue
        pt = int(media.formats[0])
        rtpmap = media.rtpmaps().get(pt)
        return rtpmap.encoding if rtpmap is not None else STATIC_PAYLOAD_TYPES.get(pt)
    return None


def offer_direction(sdp_text: str) -> str:
    """The direction of the first audio section (RFC 3264 §5.1; sendrecv when absent or unreadable)."""
    try:
        session = SessionDescription.parse(sdp_text)
    except SdpParseError:
        return "sendrecv"
    audio = next((m for m in session.media if m.media == "audio"), None)
    if audio is None:
        return "sendrecv"
    if audio.port == 0:
        return "inactive"
    return audio.direction or session.direction or "sendrecv"


def sip_status_for_matrix(reason: str | None, rejected: bool) -> int:
    """Matrix ending an unanswered inbound call → the SIP final response for the caller."""
    if rejected:
        return 603  # Decline
    if reason == "user_busy":
        return 486
    if reason in ("invite_timeout", "ice_failed", "ice_timeout"):
        return 480
    return 487 if reason == "user_hangup" else 480


@dataclass
class BridgedCall:
    call_id: str  # the Matrix call_id
    direction: str  # "outbound" (Matrix → phone) or "inbound"
    room_id: str
    matrix_user: str
    puppet: str
    number: str
    party_id: str = field(default_factory=lambda: f"telebridge-{uuid.uuid4().hex[:12]}")
    remote_party_id: str | None = None
    media_id: str | None = None
    setup: CallSetup | None = None
    sip: SipCall | None = None
    codec: str | None = None
    answer_sending: float = 0.0
    trunk_direction: str = "sendrecv"  # what the trunk last offered
    target: str = ""  # the E.164 (or dialled) number the trunk was asked for
    max_seconds: int | None = None  # the caller's credit limit for this call
    answered_monotonic: float | None = None  # when the call was answered (None: not yet)
    matrix_direction: str = "sendrecv"  # what we last asked of the trunk for the Matrix side
    matrix_answered: bool = False
    ended: bool = False
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    #: Call-record writes, off the setup path, in order (the INSERT before its UPDATEs); awaited before the
    #: record is closed.
    writes: list[asyncio.Future[None]] = field(default_factory=list)

    @property
    def answered(self) -> bool:
        return self.answered_monotonic is not None

    def record(self, write: Awaitable[None]) -> None:
        previous = self.writes[-1] if self.writes else None

        async def in_turn() -> None:
            if previous is not None:
                await asyncio.wait([previous])  # in order, whether or not it succeeded
            await write

        self.writes.append(asyncio.ensure_future(in_turn()))


def media_workers(setting: int | str) -> int:
    """``calls.media_workers`` (``auto`` or a number, as config validation leaves it): ``auto`` is one per
    CPU core this process may run on (the relay is CPU-bound and each worker has its own GIL)."""
    if setting == "auto":
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # not Linux
            return max(1, os.cpu_count() or 1)
    assert isinstance(setting, int)
    return setting


class CallBridge:
    def __init__(
        self,
        config: Config,
        *,
        virtual_users: VirtualUsers,
        notice: Notice,
        credit: Credit | None = None,
        who_is: Callable[[str], Awaitable[str | None]] | None = None,
    ) -> None:
        self.credit = credit
        self.who_is = who_is
        self.interrupted: list[dict[str, Any]] = []
        self.attempts = SlidingWindow(config["limits.call_attempts_per_minute"])
        self.config = config
        self.virtual_users = virtual_users
        self.namespace = virtual_users.namespace
        self.notice = notice
        self.region: str = config["bridge.default_region"]
        owned: dict[str, str] = config["sms.owned_numbers"]  # numbers Matrix users own ring them
        self.owned = {to_e164(n, self.region) or n: owner for n, owner in owned.items()}
        self.number_of = {owner: number for number, owner in self.owned.items()}
        self.trunk: str = config["calls.trunk"]
        self.caller_id: str = config["calls.caller_id"]
        self.ring_timeout: int = config["calls.ring_timeout"]
        self.max_calls: int = config["calls.max_calls"]
        self.max_per_user: int = config["calls.max_calls_per_user"]
        self.calls: dict[str, BridgedCall] = {}
        self.by_media: dict[str, BridgedCall] = {}
        public = config["calls.rtp_public_address"] or None
        low, high = config["calls.rtp_port_min"], config["calls.rtp_port_max"]
        self.media = MediaService(
            MediaConfig(
                trunk_bind_address=config["calls.rtp_bind_address"],
                trunk_public_address=public,
                trunk_strict_source=config["calls.rtp_strict_source"],
                rtp_port_min=low,
                rtp_port_max=high,
                webrtc_bind_addresses=tuple(config["calls.webrtc_addresses"]),
                ice_servers=list(config["calls.ice_servers"]),
                ice_relay_only=config["calls.ice_relay_only"],
                webrtc_port_min=config["calls.webrtc_port_min"],
                webrtc_port_max=config["calls.webrtc_port_max"],
                spare_calls=config["calls.media_spare_calls"],
            ),
            workers=media_workers(config["calls.media_workers"]),
            realtime_priority=config["calls.media_realtime_priority"],
        )
        credentials = []
        if config["calls.trunk_username"]:
            credentials.append(Credentials(config["calls.trunk_username"], config["calls.trunk_password"]))
        public_sip = config["calls.sip_public_address"]
        self.ua = UserAgent(
            UserAgentConfig(
                local_host=public_sip.rpartition(":")[0]
                if ":" in public_sip
                else public_sip or config["calls.sip_bind_address"],
                local_port=config["calls.sip_port"],
                credentials=credentials,
                allow_list=AllowList(config["calls.trunk_allowed_peers"]),
            ),
            on_incoming=self._on_incoming,
        )
        self.sip_address: tuple[str, int] | None = None

    # -- life cycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        #: Calls the last run did not end (a crash): their Matrix side is told once the homeserver is up.
        self.interrupted = await CallRecords.close_unfinished()
        if self.interrupted:
            log.warning(
                "%d call(s) were cut by the bridge stopping without ending them", len(self.interrupted)
            )
        await self.media.start()
        metrics.watch_media(self.media)
        self.media.subscribe(self._on_media_event)
        self.sip_address = await self.ua.start()
        log.info("SIP user agent listening on %s:%d; trunk %s", *self.sip_address, self.trunk)
        for record in self.interrupted:
            if record.get("sip_dialog"):
                try:
                    self.ua.end_stale_dialog(
                        json.loads(record["sip_dialog"]), 'Q.850;cause=41;text="Temporary failure"'
                    )
                except (ValueError, SipError) as exc:
                    log.warning("Call %s: no BYE for its trunk dialog: %s", record["call_id"], exc)
                else:
                    log.info("Call %s: BYE sent for the trunk dialog a crash left up", record["call_id"])

    async def end_interrupted(self) -> None:
        """Hang up, on the Matrix side, the calls a crash cut, so no client keeps one ringing or "connected"
        (the trunk's side ends by its session timer or RTP timeout: the dialog died with the process)."""
        calls, self.interrupted = self.interrupted, []
        for record in calls:
            portal = await Portal.get(record["room_id"])
            parties = await portal.parties() if portal is not None else []
            if not parties:
                continue
            intent = self.virtual_users.intent_for(parties[0])
            try:
                await self._send(
                    intent,
                    record["room_id"],
                    CALL_HANGUP,
                    {"call_id": record["call_id"], "reason": "unknown_error"},
                )
                await self.notice(
                    intent, record["room_id"], None, "The call was cut off: the bridge restarted."
                )
            except MatrixError as exc:
                log.warning("Call %s: could not hang up after the restart: %s", record["call_id"], exc)

    async def stop(self) -> None:
        for call in list(self.calls.values()):
            await self._end(call, "user_hangup", sip_status=None, by_matrix=False, notice=None)
        await self.ua.close()
        metrics.watch_media(None)
        await self.media.stop()

    # -- Matrix events ------------------------------------------------------------------------------

    async def on_matrix_event(self, event: Any) -> None:
        """Any ``m.call.*`` event in any room; those from our own virtual users are echoes."""
        if self.namespace.is_in_namespace(event.sender):
            return
        content = event.content.serialize() if hasattr(event.content, "serialize") else dict(event.content)
        call_id = content.get("call_id")
        if not isinstance(call_id, str) or not call_id:
            metrics.ERRORS.labels("call_event_malformed").inc()
            return
        if event.type == CALL_INVITE:
            await self._on_invite(event, content, call_id)
            return
        call = self.calls.get(call_id)
        if call is None or call.room_id != event.room_id:
            return
        if event.type == CALL_CANDIDATES:
            await self._on_candidates(call, content)
        elif event.type == CALL_ANSWER and call.direction == "inbound":
            await self._on_matrix_answer(call, event, content)
        elif event.type in (CALL_HANGUP, CALL_REJECT):
            reason = content.get("reason") if event.type == CALL_HANGUP else "user_busy"
            if call.direction == "inbound" and not call.answered:
                if call.sip is not None:
                    call.sip.reject(sip_status_for_matrix(reason, event.type == CALL_REJECT))
            await self._end(call, str(reason or "user_hangup"), sip_status=None, by_matrix=True, notice=None)
        elif event.type == CALL_SELECT_ANSWER and call.direction == "outbound":
            if content.get("selected_party_id") not in (None, call.party_id):
                await self._end(call, "answered_elsewhere", sip_status=None, by_matrix=True, notice=None)
        elif event.type == CALL_NEGOTIATE:
            await self._on_negotiate(call, content)

    async def _on_invite(self, event: Any, content: dict[str, Any], call_id: str) -> None:
        received = time.perf_counter()  # the bridge's share of the setup counts from here (call_bench)
        portal = await Portal.get(event.room_id)
        if portal is None:
            return
        parties = await portal.parties()
        if not parties:
            return
        puppet = parties[0]
        existing = self.calls.get(call_id)
        if (
            existing is not None
            and existing.room_id == event.room_id
            and existing.matrix_user == event.sender
        ):
            log.info("Call %s: repeated m.call.invite ignored", call_id)
            return
        offer = content.get("offer")
        sdp = offer.get("sdp") if isinstance(offer, dict) else None
        intent = self.virtual_users.intent_for(puppet)
        refuse = None
        if existing is not None:
            # Call IDs are chosen by clients; one already live elsewhere must not take over that call.
            refuse = ("unknown_error", "That call ID is already in use; please call again.")
        elif not isinstance(sdp, str) or not sdp.strip():
            refuse = ("unknown_error", "The call invite had no offer the bridge could read.")
        elif portal.kind != "dm" or len(parties) != 1:
            refuse = ("unknown_error", "Calls to phones work only in a direct chat with one phone number.")
        elif portal.encrypted:
            refuse = ("unknown_error", "This room is encrypted; the bridge cannot take calls here.")
        elif len(self.calls) >= self.max_calls:
            refuse = ("user_busy", "The bridge is carrying as many calls as it may; try again shortly.")
        elif sum(1 for c in self.calls.values() if c.matrix_user == event.sender) >= self.max_per_user:
            refuse = ("user_busy", "You already have as many calls as this bridge allows per user.")
        elif not self.attempts.allow(event.sender, time.monotonic()):
            metrics.CREDIT_REFUSALS.labels("call", "rate_limit").inc()
            refuse = ("user_busy", f"You may start {self.attempts.limit} calls a minute; try again shortly.")
        if refuse is not None:
            await self._send(intent, event.room_id, CALL_HANGUP, {"call_id": call_id, "reason": refuse[0]})
            await self.notice(intent, event.room_id, None, refuse[1])
            metrics.CALLS.labels("outbound", "refused").inc()
            return
        number = self.namespace.party(puppet).number
        target = to_e164(number, self.region) or number
        max_seconds: int | None = None
        if self.credit is not None:
            authorised = await self.credit.authorise_call(event.sender, target, call_id)
            if isinstance(authorised, str):
                await self._send(
                    intent, event.room_id, CALL_HANGUP, {"call_id": call_id, "reason": "user_busy"}
                )
                await self.notice(intent, event.room_id, None, f"Call not placed: {authorised}")
                metrics.CALLS.labels("outbound", "refused").inc()
                return
            max_seconds = authorised.max_seconds
        call = BridgedCall(call_id, "outbound", event.room_id, event.sender, puppet, number)
        call.target, call.max_seconds = target, max_seconds
        call.remote_party_id = content.get("party_id")
        self.calls[call_id] = call
        call.record(CallRecords.start(call_id, "outbound", event.sender, event.room_id, number))
        metrics.CALLS.labels("outbound", "started").inc()
        media_started = time.perf_counter()
        try:
            setup = await self.media.create_outbound(str(sdp))
        except MediaError as e:
            log.warning("Call %s: media refused the offer: %s", call_id, e)
            await self._end(
                call,
                "user_media_failed",
                None,
                by_matrix=False,
                notice=f"The call's audio could not be set up ({e}).",
            )
            return
        media_took = time.perf_counter() - media_started
        call.setup, call.media_id = setup, setup.call_id
        self.by_media[setup.call_id] = call
        call.codec = trunk_codec(setup.trunk_sdp)
        caller = self.number_of.get(event.sender) or self.caller_id or "anonymous"
        host = self.sip_address[0] if self.sip_address else "localhost"
        call.sip = await self.ua.call(f"sip:{target}@{self.trunk}", f"sip:{caller}@{host}", setup.trunk_sdp)
        took = time.perf_counter() - received
        metrics.CALL_SETUP.labels("invite").observe(took)
        log.info(
            "Call %s: m.call.invite → INVITE in %.1f ms (media leg %.1f ms)",
            call_id,
            took * 1000,
            media_took * 1000,
        )
        call.record(CallRecords.set_sip_call_id(call_id, call.sip.call_id))
        lifetime = content.get("lifetime")
        ring = (
            min(float(lifetime) / 1000, self.ring_timeout)
            if isinstance(lifetime, int | float) and lifetime > 0
            else self.ring_timeout
        )
        call.tasks.append(asyncio.create_task(self._pump_sip(call)))
        call.tasks.append(asyncio.create_task(self._ring_limit(call, ring)))
        log.info("Call %s: %s → %s via %s", call_id, event.sender, target, self.trunk)

    async def _on_candidates(self, call: BridgedCall, content: dict[str, Any]) -> None:
        if call.media_id is None:
            return
        candidates = content.get("candidates")
        if not isinstance(candidates, list):
            return
        for cand in candidates:
            text = cand.get("candidate") if isinstance(cand, dict) else None
            if not isinstance(text, str):
                continue
            try:
                await self.media.add_webrtc_candidate(call.media_id, text or None)
            except MediaError as e:
                log.debug("Call %s: candidate not taken: %s", call.call_id, e)

    async def _on_matrix_answer(self, call: BridgedCall, event: Any, content: dict[str, Any]) -> None:
        """First answer wins (spec: "m.call.select_answer"); later answers see the selection and stop."""
        if call.matrix_answered or call.media_id is None or call.setup is None or call.sip is None:
            return
        answer = content.get("answer")
        sdp = answer.get("sdp") if isinstance(answer, dict) else None
        if not isinstance(sdp, str):
            return
        call.matrix_answered = True
        call.remote_party_id = content.get("party_id")
        intent = self.virtual_users.intent_for(call.puppet)
        try:
            await self.media.set_webrtc_answer(call.media_id, sdp)
        except MediaError as e:
            call.sip.reject(488)
            await self._end(
                call,
                "user_media_failed",
                None,
                by_matrix=False,
                notice=f"The answer's audio could not be used ({e}).",
            )
            return
        await self._send(
            intent,
            call.room_id,
            CALL_SELECT_ANSWER,
            {"call_id": call.call_id, "selected_party_id": call.remote_party_id},
            call.party_id,
        )
        call.sip.answer(call.setup.trunk_sdp)
        call.answered_monotonic = time.monotonic()
        call.record(CallRecords.answered(call.call_id, call.sip.dialog_snapshot()))
        metrics.CALLS.labels("inbound", "answered").inc()

    # -- SIP side -----------------------------------------------------------------------------------

    async def _pump_sip(self, call: BridgedCall) -> None:
        assert call.sip is not None
        try:
            async for ev in call.sip:
                if isinstance(ev, CallProgress):
                    if call.direction == "outbound" and ev.body and ev.status == 183:
                        await self._answer_matrix(call, ev.body.decode(errors="replace"))
                elif isinstance(ev, CallAnswered):
                    if call.direction == "outbound":
                        answered_at = time.perf_counter()
                        call.answered_monotonic = time.monotonic()
                        # Recorded before the Matrix side is told: from here on the trunk's dialog is
                        # up, and a crash during the answer must still leave it to be hung up.
                        call.record(CallRecords.answered(call.call_id, call.sip.dialog_snapshot()))
                        if call.max_seconds is not None:
                            call.tasks.append(asyncio.create_task(self._credit_limit(call, call.max_seconds)))
                        await self._answer_matrix(call, ev.body.decode(errors="replace"))
                        done = time.perf_counter()
                        metrics.CALLS.labels("outbound", "answered").inc()
                        ours = max(0.0, (call.answer_sending or done) - answered_at)
                        metrics.CALL_SETUP.labels("answer").observe(ours)
                        log.info(
                            "Call %s: 200 OK → m.call.answer in %.1f ms (+ %.1f ms for the homeserver to accept it)",
                            call.call_id,
                            ours * 1000,
                            (done - (call.answer_sending or done)) * 1000,
                        )
                elif isinstance(ev, DtmfReceived):
                    if call.media_id is not None:
                        await self.media.send_dtmf(
                            call.media_id, ev.digit, leg="webrtc", duration_ms=ev.duration_ms
                        )
                elif isinstance(ev, OfferAnswered):
                    if ev.status < 300 and ev.body and call.media_id is not None:
                        await self.media.set_trunk_answer(call.media_id, ev.body.decode(errors="replace"))
                elif isinstance(ev, OfferReceived):
                    await self._on_trunk_offer(call, ev.body.decode(errors="replace"))
                elif isinstance(ev, CallEnded):
                    reason, notice = matrix_reason_for_sip(ev.status if not call.answered else None)
                    if call.answered or (ev.remote and ev.status is None):
                        reason, notice = "user_hangup", None
                    await self._end(
                        call, reason, sip_status=ev.status, by_matrix=False, notice=notice, sip_done=True
                    )
                    return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("Call %s: SIP side failed", call.call_id)
            await self._end(
                call, "unknown_error", None, by_matrix=False, notice="The call failed inside the bridge."
            )

    async def _on_trunk_offer(self, call: BridgedCall, offer_text: str) -> None:
        """A re-INVITE/UPDATE from the trunk (RFC 3264 §8: hold, resume, address or codec change): the media
        relay answers it; what it cannot follow is refused with 488, which keeps the session as it was
        (RFC 3261 §14.2). Hold and resume are shown to the Matrix side as notices."""
        assert call.sip is not None
        if call.media_id is None:
            call.sip.reject_offer(488)
            return
        try:
            answer = await self.media.update_trunk_offer(call.media_id, offer_text)
        except MediaError as e:
            log.info("Call %s: trunk re-offer refused: %s", call.call_id, e)
            call.sip.reject_offer(488)
            return
        call.sip.accept_offer(answer)
        direction = offer_direction(offer_text)
        if direction != call.trunk_direction:
            call.trunk_direction = direction
            held = direction in ("sendonly", "inactive")
            await self._notice(
                call, "The other party put the call on hold." if held else "The other party resumed the call."
            )

    async def _on_negotiate(self, call: BridgedCall, content: dict[str, Any]) -> None:
        """``m.call.negotiate`` from Matrix (spec: "Call renegotiation", e.g. Element's hold): the WebRTC
        leg answers it, and a change of direction is passed on to the trunk as a re-INVITE."""
        description = content.get("description")
        sdp = description.get("sdp") if isinstance(description, dict) else None
        if (
            not isinstance(description, dict)
            or not isinstance(sdp, str)
            or call.media_id is None
            or call.sip is None
        ):
            return
        if description.get("type") != "offer":
            return  # an answer to a negotiation we never start
        try:
            answer = await self.media.update_webrtc_offer(call.media_id, sdp)
        except MediaError as e:
            await self._notice(call, f"The call's change could not be made ({e}); it continues as it was.")
            return
        intent = self.virtual_users.intent_for(call.puppet)
        await self._send(
            intent,
            call.room_id,
            CALL_NEGOTIATE,
            {"call_id": call.call_id, "lifetime": 10000, "description": {"type": "answer", "sdp": answer}},
            call.party_id,
        )
        held = offer_direction(sdp) in ("sendonly", "inactive")
        want = "sendonly" if held else "sendrecv"
        if want != call.matrix_direction and call.answered:
            call.matrix_direction = want
            call.sip.reinvite(await self.media.trunk_reoffer(call.media_id, want))

    async def _answer_matrix(self, call: BridgedCall, trunk_sdp: str) -> None:
        """Apply the trunk's SDP to the relay and, the first time, answer the Matrix call."""
        if call.media_id is None or call.setup is None:
            return
        call.codec = trunk_codec(trunk_sdp) or call.codec
        try:
            if call.matrix_answered:
                await self.media.set_trunk_answer(call.media_id, trunk_sdp)
                return
            # The first answer is checked here and applied by the media worker meanwhile, so the Matrix
            # answer does not wait a turn of the worker's loop behind other calls' packets.
            applied = self.media.set_trunk_answer_soon(call.media_id, call.setup.trunk_sdp, trunk_sdp)
        except MediaError as e:
            await self._trunk_sdp_unusable(call, e)
            return
        call.tasks.append(asyncio.ensure_future(self._await_trunk_answer(call, applied)))
        call.matrix_answered = True
        intent = self.virtual_users.intent_for(call.puppet)
        call.answer_sending = time.perf_counter()
        await self._send(
            intent,
            call.room_id,
            CALL_ANSWER,
            {
                "call_id": call.call_id,
                "answer": {"type": "answer", "sdp": call.setup.webrtc_sdp},
                "capabilities": CAPABILITIES,
            },
            call.party_id,
        )

    async def _await_trunk_answer(self, call: BridgedCall, applied: asyncio.Future[None]) -> None:
        try:
            await applied
        except MediaError as e:
            await self._trunk_sdp_unusable(call, e)

    async def _trunk_sdp_unusable(self, call: BridgedCall, error: MediaError) -> None:
        log.warning("Call %s: trunk SDP not usable: %s", call.call_id, error)
        if call.answered and call.sip is not None:
            call.sip.hangup()
        await self._end(
            call,
            "user_media_failed",
            None,
            by_matrix=False,
            notice=f"The phone side's audio could not be used ({error}).",
        )

    async def _credit_limit(self, call: BridgedCall, seconds: int) -> None:
        """Warn before the caller's credit runs out, and end the call when it does."""
        warn = self.credit.warn_before_end if self.credit is not None else 0
        if 0 < warn < seconds:
            await asyncio.sleep(seconds - warn)
            await self._notice(call, f"Your credit runs out in {warn} seconds; the call will end then.")
            warned = asyncio.get_running_loop().time()
            if (
                self.credit is not None
                and self.credit.warn_tone
                and call.media_id is not None
                and not call.ended
            ):
                try:
                    await self.media.play_tone(call.media_id, leg="webrtc")
                except Exception as exc:  # a tone is a courtesy: never let it end the call
                    log.warning("Call %s: warning tone not played: %s", call.call_id, exc)
            await asyncio.sleep(max(0.0, warn - (asyncio.get_running_loop().time() - warned)))
        else:
            await asyncio.sleep(seconds)
        if not call.ended:
            log.info("Call %s: credit limit of %d s reached", call.call_id, seconds)
            try:
                await self._end(
                    call, "user_hangup", None, by_matrix=False, notice="The call ended: your credit ran out."
                )
            except Exception:
                log.exception("Call %s: ending at the credit limit failed", call.call_id)

    async def _ring_limit(self, call: BridgedCall, seconds: float) -> None:
        await asyncio.sleep(seconds)
        if not call.answered and not call.ended:
            if call.sip is not None:
                if call.direction == "inbound":
                    call.sip.reject(480)
                else:
                    call.sip.hangup()
            await self._end(
                call,
                "invite_timeout",
                None,
                by_matrix=False,
                notice=None,
                sip_done=call.direction == "inbound",
            )

    async def _on_incoming(self, sip_call: SipCall) -> None:
        dialled = _user_part(sip_call.request_uri) or _user_part(str(sip_call.to.uri))
        ours = to_e164(dialled, self.region) if dialled else None
        owner = self.owned.get(ours or dialled or "")
        if owner is None:
            log.info("Incoming call to %s: no Matrix user owns that number", dialled)
            sip_call.reject(404, "Not Found")
            metrics.CALLS.labels("inbound", "unknown_number").inc()
            return
        identities = sip_call.p_asserted_identity
        caller_raw = _user_part(str(identities[0].uri)) if identities else _user_part(str(sip_call.from_.uri))
        caller = (to_e164(caller_raw, self.region) or caller_raw) if caller_raw else ""
        if (
            len(self.calls) >= self.max_calls
            or sum(1 for c in self.calls.values() if c.matrix_user == owner) >= self.max_per_user
        ):
            sip_call.reject(486)
            metrics.CALLS.labels("inbound", "busy").inc()
            return
        try:
            puppet = self.namespace.user_id(caller) if caller else None
        except ValueError:
            puppet = None
        if puppet is None:
            sip_call.reject(433, "Anonymity Disallowed")
            return
        try:
            intent = await self.virtual_users.ensure(puppet)
            room_id = await self._dm_for(owner, puppet, intent)
            setup = await self.media.create_inbound(sip_call.remote_sdp.decode(errors="replace"))
        except (MatrixError, MediaError, NotAVirtualUser) as e:
            log.warning("Incoming call from %s to %s failed to set up: %s", caller, owner, e)
            sip_call.reject(500 if not isinstance(e, MediaError) else 488)
            return
        call = BridgedCall(f"tb-{uuid.uuid4().hex}", "inbound", room_id, owner, puppet, caller)
        call.sip, call.setup, call.media_id = sip_call, setup, setup.call_id
        call.codec = trunk_codec(setup.trunk_sdp)
        self.calls[call.call_id] = call
        self.by_media[setup.call_id] = call
        call.record(CallRecords.start(call.call_id, "inbound", owner, room_id, caller))
        call.record(CallRecords.set_sip_call_id(call.call_id, sip_call.call_id))
        metrics.CALLS.labels("inbound", "started").inc()
        await self._send(
            intent,
            room_id,
            CALL_INVITE,
            {
                "call_id": call.call_id,
                "lifetime": self.ring_timeout * 1000,
                "offer": {"type": "offer", "sdp": setup.webrtc_sdp},
                "capabilities": CAPABILITIES,
            },
            call.party_id,
        )
        sip_call.ring()
        call.tasks.append(asyncio.create_task(self._pump_sip(call)))
        call.tasks.append(asyncio.create_task(self._ring_limit(call, self.ring_timeout)))
        log.info("Call %s: %s → %s (%s)", call.call_id, caller, owner, room_id)

    async def _dm_for(self, owner: str, puppet: str, intent: IntentAPI) -> str:
        room_id, new = await open_dm(intent, owner, puppet)
        if not new:
            return room_id
        caller = self.namespace.party(puppet).number
        real = await self.who_is(caller) if self.who_is is not None else None
        if real is not None:
            await self.notice(
                intent, room_id, None, f"{caller} belongs to {real} on Matrix; you can also reach them there."
            )
        return str(room_id)

    # -- media events -------------------------------------------------------------------------------

    def _on_media_event(self, event: MediaEvent) -> None:
        call = self.by_media.get(event.call_id)
        if call is None:
            return
        if event.kind == "digit":
            digit, leg = str(event.data.get("digit")), event.data.get("leg")
            log.info("Call %s: DTMF %s from the %s leg", call.call_id, digit, leg)
            if leg == "webrtc" and not event.data.get("relayed", True) and call.sip is not None:
                # The trunk's answer had no telephone-event (RFC 4733 §7.1.1 makes it optional): send the
                # digit as SIP INFO instead, which such trunks commonly take (application/dtmf-relay).
                try:
                    call.sip.send_dtmf(digit)
                except DialogError as exc:
                    log.warning("Call %s: DTMF %s not sent as SIP INFO: %s", call.call_id, digit, exc)
                else:
                    log.info("Call %s: DTMF %s sent to the trunk as SIP INFO", call.call_id, digit)
        elif event.kind == "closed" and not call.ended:
            reason = str(event.data.get("reason", "media closed"))
            # _end hangs the SIP side up itself, after marking the call ended: hanging up here first
            # would let the SIP side's CallEnded end the call as an ordinary user_hangup.
            task = asyncio.ensure_future(
                self._end(
                    call, "ice_failed", None, by_matrix=False, notice=f"The call's audio stopped ({reason})."
                )
            )
            call.tasks.append(task)

    # -- ending -------------------------------------------------------------------------------------

    async def _end(
        self,
        call: BridgedCall,
        reason: str,
        sip_status: int | None,
        *,
        by_matrix: bool,
        notice: str | None,
        sip_done: bool = False,
    ) -> None:
        """Release everything the call holds, once, whichever side ended it."""
        if call.ended:
            return
        call.ended = True
        self.calls.pop(call.call_id, None)
        current = asyncio.current_task()
        for task in call.tasks:
            if task is not current:
                task.cancel()
        if call.sip is not None and not sip_done:
            call.sip.hangup()
        stats: dict[str, Any] | None = None
        if call.media_id is not None:
            self.by_media.pop(call.media_id, None)
            try:
                stats = await self.media.stats(call.media_id)
            except MediaError:
                stats = None
            try:
                await self.media.close(call.media_id, reason)
            except MediaError:
                pass
        intent = self.virtual_users.intent_for(call.puppet)
        if not by_matrix:
            try:
                await self._send(
                    intent,
                    call.room_id,
                    CALL_HANGUP,
                    {"call_id": call.call_id, "reason": reason},
                    call.party_id,
                )
                if notice:
                    await self.notice(intent, call.room_id, None, notice)
            except MatrixError as e:
                log.warning("Call %s: could not tell Matrix it ended: %s", call.call_id, e)
        outcome = "answered" if call.answered else ("failed" if notice else "unanswered")
        if self.credit is not None and call.direction == "outbound":
            talked = (
                time.monotonic() - call.answered_monotonic if call.answered_monotonic is not None else 0.0
            )
            if call.max_seconds is not None:
                talked = min(talked, call.max_seconds)  # the hang-up timer may fire a moment late
            cost = await self.credit.settle_call(call.call_id, call.target, talked)
            log.info("Call %s: %.1f s charged %d", call.call_id, talked, cost)
        elif self.credit is not None and call.answered_monotonic is not None:
            talked = time.monotonic() - call.answered_monotonic
            await self.credit.charge_inbound_call(
                call.matrix_user, talked, f"in-call:{call.call_id}", call.number
            )
        await asyncio.gather(*call.writes, return_exceptions=True)
        await CallRecords.ended(call.call_id, outcome, reason, sip_status, call.codec, stats)
        metrics.CALLS.labels(call.direction, outcome).inc()
        log.info("Call %s ended: %s (%s, SIP %s)", call.call_id, outcome, reason, sip_status)

    async def _notice(self, call: BridgedCall, text: str) -> None:
        await self.notice(self.virtual_users.intent_for(call.puppet), call.room_id, None, text)

    async def _send(
        self,
        intent: IntentAPI,
        room_id: str,
        event_type: EventType,
        content: dict[str, Any],
        party_id: str = "telebridge",
    ) -> None:
        """A VoIP event from a virtual user; ``party_id`` is the call's own (the one its invite or answer
        used: clients ignore later events from another party), or ours for calls we refuse."""
        content = {"version": VERSION, "party_id": party_id, **content}
        await intent.send_message_event(RoomID(room_id), event_type, content)  # type: ignore[arg-type]


def _user_part(uri: str | None) -> str:
    """``sip:+4420…@host;user=phone`` → ``+4420…``."""
    if not uri:
        return ""
    rest = uri.split(":", 1)[1] if ":" in uri else uri
    user = rest.split("@", 1)[0] if "@" in rest else ""
    return user.split(";", 1)[0]

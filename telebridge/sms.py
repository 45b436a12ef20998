"""Text messaging between portals and phones, over ``smpp.gateway.Gateway``.

Matrix → phone: a message in a portal becomes one SMS per phone party, stored in the durable outbox
(``db.SmsOutbox``) in the same commit as the homeserver's transaction record, before that transaction is
acknowledged, and queued on the gateway once stored; the gateway drains the outbox.
Phone → Matrix: the gateway hands us reassembled texts and receipts; we store them (``db.SmsInbox``,
``db.SmsReceipts``) before the SMSC gets its response, then post them to the right room from the store,
so a crash between the two loses nothing — the store is drained again on start.

Origination follows the seed: a shared short code (send only) or a pool of virtual mobile numbers, each
{Matrix side, phone} pair holding a pool number no other pair with the same phone holds.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import Any

from mautrix.appservice import IntentAPI
from mautrix.errors import MatrixError
from mautrix.types import EventID, MessageEvent, RoomID

from smpp.client import SmscConfig
from smpp.gateway import Gateway, InboundMessage, InboundReceipt
from smpp.outbox import OutboundMessage
from smpp.routing import NoRouteError, Route, Target
from smpp.segment import Concatenation, SegmentPolicy, TooManySegmentsError
from smpp.session import BindMode, SessionConfig

from . import metrics
from .config import Config
from .credit import Credit
from .db import OptOuts, Portal, SmsInbox, SmsOutbox, SmsReceipts, TransactionLog, VmnAllocations
from .db.group_commit import UNIQUE_VIOLATIONS
from .db.sms import OutboxOrigin, PoolExhausted, StoredReceipt, StoredText
from .formatting import NotRelayable, sms_text
from .limits import SlidingWindow
from .numbers import to_e164
from .portal import VirtualUsers, open_dm
from .puppet import VirtualUserNamespace

log = logging.getLogger("telebridge.sms")

FAILED_OUTCOMES = frozenset({"failed", "expired", "rejected"})

Notice = Callable[[IntentAPI, str, str | None, str], Any]


def gateway_config(config: Config) -> tuple[list[SmscConfig], list[Route]]:
    """Our config's ``sms.smscs`` and ``sms.routes`` as the smpp package's types."""
    smscs = []
    for s in config["sms.smscs"]:
        tps = s.get("tps", 0)
        session = SessionConfig(
            system_id=str(s["system_id"]),
            password=str(s["password"]),
            system_type=str(s.get("system_type", "")),
            mode=BindMode.TRANSCEIVER,
            window=int(s.get("window", 10)),
            tps=float(tps) if tps else None,
        )
        smscs.append(
            SmscConfig(
                name=str(s["name"]),
                host=str(s["host"]),
                port=int(s["port"]),
                session=session,
                pair=s.get("bind", "transceiver") == "pair",
                tls=ssl.create_default_context() if s.get("tls") else None,
            )
        )
    routes = []
    for r in config["sms.routes"]:
        targets = tuple(
            Target(smsc=str(t["name"]), weight=int(t.get("weight", 1)), priority=int(t.get("priority", 0)))
            if isinstance(t, Mapping)
            else Target(smsc=str(t))
            for t in r["smscs"]
        )
        policy = SegmentPolicy(
            concatenation=Concatenation(r.get("concatenation", "udh8")),
            max_segments=int(r.get("max_segments", 10)),
        )
        routes.append(Route(prefix=str(r.get("prefix", "")), targets=targets, segment_policy=policy))
    return smscs, routes


class SmsBridge:
    """The bridge's SMS service: implements the gateway's ``InboundSink``."""

    def __init__(
        self,
        config: Config,
        *,
        namespace: VirtualUserNamespace,
        virtual_users: VirtualUsers,
        notice: Notice,
        display_name: Callable[[str, str], Any],
        who_is: Callable[[str], Awaitable[str | None]] | None = None,
        credit: Credit | None = None,
    ) -> None:
        self.who_is = who_is
        self.credit = credit
        self.rate_limit = SlidingWindow(config["limits.sms_per_minute"])
        self.namespace = namespace
        self.virtual_users = virtual_users
        self.notice = notice
        self.display_name = display_name
        self.region: str = config["bridge.default_region"]
        self.origination: str = config["sms.origination"]
        self.short_code: str = config["sms.short_code"]
        self.pool: list[str] = list(config["sms.vmn_pool"])
        self.owned: dict[str, str] = dict(config["sms.owned_numbers"])
        self.owned_by_user = {owner: number for number, owner in self.owned.items()}
        self.receipts_wanted: bool = config["sms.delivery_receipts"]
        self.group_prefix: str = config["sms.group_prefix"]
        self.help_reply: str = config["sms.help_reply"]
        #: The first of each list is the one replies name ("Reply START to resume").
        self.stop_word, self.start_word = (
            str(config[f"sms.keywords.{kind}"][0]).strip().upper() for kind in ("stop", "start")
        )
        self.stop_words, self.start_words, self.help_words = (
            frozenset(w.strip().upper() for w in config[f"sms.keywords.{kind}"])
            for kind in ("stop", "start", "help")
        )
        self.opt_words = self.stop_words | self.start_words
        self.outbox = SmsOutbox()
        self.outbox.credit = credit
        smscs, routes = gateway_config(config)
        self.gateway = Gateway(
            smscs, routes, self.outbox, self, reassembly_timeout=config["sms.reassembly_timeout"]
        )
        self._wake = asyncio.Event()
        self._drainer: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.gateway.start()
        self._drainer = asyncio.create_task(self._drain_forever())

    async def stop(self) -> None:
        if self._drainer is not None:
            self._drainer.cancel()
            try:
                await self._drainer
            except asyncio.CancelledError:
                pass
        await self.gateway.stop()

    # -- Matrix → phone -----------------------------------------------------------------------------

    async def relay(self, portal: Portal, parties: list[str], event: MessageEvent) -> None:
        """One SMS per phone party in the portal; each refusal explained by that party's virtual user."""
        content = event.content.serialize()
        needs_name = portal.kind == "group" or content.get("msgtype") == "m.emote"
        sender_name = await self.display_name(event.room_id, event.sender) if needs_name else None
        result = sms_text(content, sender_name)
        if isinstance(result, NotRelayable):
            intent = self.virtual_users.intent_for(parties[0])
            await self.notice(intent, event.room_id, event.event_id, f"Not sent: {result.reason}")
            metrics.SMS.labels("out", "not_relayable").inc()
            return
        text = result.text
        if portal.kind == "group" and self.group_prefix:
            text = self.group_prefix.format(name=sender_name) + text
        side = event.sender if portal.kind == "dm" else portal.room_id
        now = time.monotonic()
        if not self.rate_limit.allow(event.sender, now, count=len(parties)):
            wait = self.rate_limit.retry_after(event.sender, now)
            intent = self.virtual_users.intent_for(parties[0])
            await self.notice(
                intent,
                event.room_id,
                event.event_id,
                f"Not sent: you may send {self.rate_limit.limit} texts a minute; try again in {wait:.0f} s.",
            )
            metrics.CREDIT_REFUSALS.labels("sms", "rate_limit").inc()
            return
        for party in parties:
            await self._relay_to(party, side, portal, event, text)

    async def _relay_to(self, party: str, side: str, portal: Portal, event: MessageEvent, text: str) -> None:

        async def say(text: str) -> None:
            """A notice from the party's virtual user (its intent is built only when needed)."""
            await self.notice(self.virtual_users.intent_for(party), event.room_id, event.event_id, text)

        number = self.namespace.party(party).number
        message_id = f"{event.event_id}|{party}"
        phone = to_e164(number, self.region)
        if phone is None:
            await say(f"Not sent: {number} is not a number SMS can reach.")
            metrics.SMS.labels("out", "invalid_number").inc()
            return
        if await OptOuts.has(phone):
            await say(
                f"Not sent: {number} has opted out of texts (they sent {self.stop_word}).",
            )
            metrics.SMS.labels("out", "opted_out").inc()
            return
        try:
            source = await self._source_for(side, phone, portal.kind, event.room_id, party)
        except PoolExhausted as e:
            await say(
                f"Not sent: no number is free to text {number} from this chat ({e}). Ask the operator to grow the pool.",
            )
            metrics.SMS.labels("out", "pool_exhausted").inc()
            return
        if self.origination == "vmn_pool" or source in self.owned:
            await VmnAllocations.remember_room(source, phone, event.room_id, party)
        message = OutboundMessage(
            id=message_id,
            source=source,
            destination=phone,
            text=text,
            registered_delivery=self.receipts_wanted,
        )
        payer = event.sender if not self.namespace.is_in_namespace(event.sender) else portal.creator
        try:
            segments = self.gateway.check(message)  # before any credit is held for it
        except TooManySegmentsError as e:
            await say(f"Not sent: too long for SMS — {e}.")
            metrics.SMS.labels("out", "too_long").inc()
            return
        except NoRouteError:
            await say(f"Not sent: there is no SMS route to {number}.")
            metrics.SMS.labels("out", "no_route").inc()
            return
        pending = TransactionLog.pending()
        if self.credit is not None:
            refusal = await self.credit.authorise_sms(payer, phone, segments, f"sms:{message_id}", pending)
            if refusal is not None:
                await say(f"Not sent: {refusal}")
                return
        origin = OutboxOrigin(event.room_id, event.event_id, party)
        if pending is not None:  # stored with the appservice transaction's record, then queued
            pending.add(self.outbox.enqueue_statements(message, origin), partial(self._queued, message))
            return
        self.outbox.attach_origin(message_id, origin)
        try:
            await self.gateway.send(message)
        except UNIQUE_VIOLATIONS:
            return  # a transaction retried after a crash: this message is already in the outbox
        self._count_queued(message)

    def _queued(self, message: OutboundMessage) -> None:
        """``message`` is stored (with its appservice transaction): hand it to the gateway."""
        self.gateway.queue_stored(message)
        self._count_queued(message)

    @staticmethod
    def _count_queued(message: OutboundMessage) -> None:
        metrics.SMS.labels("out", "queued").inc()
        metrics.SMS_SEGMENTS.labels("out").inc(message.segments)

    async def _source_for(self, side: str, phone: str, kind: str, room_id: str, party: str) -> str:
        """The number this side texts ``phone`` from; a new pair is stored with the room it is for."""
        if self.origination == "short_code":
            return self.short_code
        existing = await VmnAllocations.for_side(side, phone)
        if existing is not None:
            return existing
        own = self.owned_by_user.get(side) if kind == "dm" else None
        if own is not None and await VmnAllocations.assign(own, phone, side, room_id, party):
            return own
        return await VmnAllocations.allocate(side, phone, self.pool, room_id, party, TransactionLog.pending())

    # -- InboundSink (durable on return) -------------------------------------------------------------

    async def store_message(self, message: InboundMessage) -> None:
        await SmsInbox.store(
            message.smsc, message.source, message.destination, message.text, message.parts, message.missing
        )
        metrics.SMS.labels("in", "stored").inc()
        self._wake.set()

    async def store_receipt(self, receipt: InboundReceipt) -> None:
        r = receipt.receipt
        await SmsReceipts.store(receipt.smsc, r.message_id, r.outcome.value, r.reason)
        self._wake.set()

    # -- phone → Matrix, from the store --------------------------------------------------------------

    async def _drain_forever(self) -> None:
        delay = 1.0
        while True:
            self._wake.clear()
            try:
                await self.drain()
                delay = 1.0
            except Exception:
                log.exception("Posting stored SMS to Matrix failed; retrying in %.0f s", delay)
                metrics.ERRORS.labels("sms_drain").inc()
                delay = min(delay * 2, 60.0)
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=delay if delay > 1.0 else 30.0)
            except TimeoutError:
                pass

    async def drain(self) -> None:
        """Post every stored text and handle every stored receipt, oldest first."""
        while texts := await SmsInbox.unposted():
            for text in texts:
                await self._post(text)
        while receipts := await SmsReceipts.unhandled():
            for receipt in receipts:
                await self._show_receipt(receipt)

    def _phone(self, address: str) -> str:
        """SMSCs send international numbers as bare digits (TON 1); ours are E.164 with '+'."""
        if address.isdigit() and not address.startswith("0"):
            candidate = to_e164("+" + address, self.region)
            if candidate is not None:
                return candidate
        return to_e164(address, self.region) or address

    async def _post(self, stored: StoredText) -> None:
        phone = self._phone(stored.source)
        ours = self._phone(stored.destination)
        keyword = stored.text.strip().upper()
        if keyword in self.stop_words:
            await OptOuts.add(phone)
            await self._auto_reply(
                ours, phone, f"You will receive no more messages. Reply {self.start_word} to resume."
            )
        elif keyword in self.start_words and await OptOuts.has(phone):
            await OptOuts.remove(phone)
            await self._auto_reply(
                ours, phone, f"You will receive messages again. Reply {self.stop_word} to stop."
            )
        elif keyword in self.help_words:
            await self._auto_reply(ours, phone, self.help_reply)
        target = await self._room_for(ours, phone)
        if target is None:
            log.info("Text from %s to %s has no conversation to go to; dropped", phone, ours)
            metrics.SMS.labels("in", "no_conversation").inc()
            await SmsInbox.mark(stored.seq, "dropped")
            return
        room_id, puppet = target
        intent = await self.virtual_users.ensure(puppet)
        body = stored.text
        if stored.missing:
            body += f"\n\n(parts {', '.join(map(str, stored.missing))} of {stored.parts} never arrived)"
        if keyword in self.stop_words:
            event_id = await intent.send_notice(
                RoomID(room_id),
                f"{phone} texted {keyword}: nothing more will be sent to them until they text {self.start_word}.",
            )
        elif keyword in self.start_words:
            event_id = await intent.send_notice(
                RoomID(room_id), f"{phone} texted {keyword}: messages to them are sent again."
            )
        else:
            event_id = await intent.send_text(RoomID(room_id), body)
        await SmsInbox.mark(stored.seq, "posted", room_id, event_id)
        metrics.SMS.labels("in", "posted").inc()
        portal = await Portal.get(room_id)
        if self.credit is not None and portal is not None:
            await self.credit.charge_inbound_sms(portal.creator, stored.parts, f"in-sms:{stored.seq}", phone)
        if portal is not None and portal.kind == "group" and keyword not in self.opt_words:
            await self._relay_to_other_phones(portal, puppet, body, event_id)

    async def _relay_to_other_phones(self, portal: Portal, author: str, body: str, event_id: str) -> None:
        """In a group room every phone hears every message, including other phones' (seed: group chat)."""
        name = self.namespace.party(author).number
        text = (self.group_prefix.format(name=name) if self.group_prefix else "") + body
        for party in await portal.parties():
            if party == author:
                continue
            fake = _RelayedEvent(portal.room_id, event_id, author)
            await self._relay_to(party, portal.room_id, portal, fake, text)  # type: ignore[arg-type]

    async def _room_for(self, ours: str, phone: str) -> tuple[str, str] | None:
        """The room a text from ``phone`` to our number ``ours`` belongs in, and the virtual user to post as."""
        if self.origination == "short_code" and ours == self.short_code:
            return None  # send-only short code: replies have no portal (seed)
        conversation = await VmnAllocations.conversation(ours, phone)
        puppet = self.namespace.user_id(phone)
        if conversation is not None:
            side, room_id, last_puppet = conversation
            if room_id is not None and await Portal.get(room_id) is not None:
                return room_id, last_puppet or puppet
            if side.startswith("!"):
                return None  # the group room is no longer a portal
            return await self._new_dm(side, puppet, ours, phone), puppet
        owner = self.owned.get(ours)
        if owner is None:
            return None
        if not await VmnAllocations.assign(ours, phone, owner):
            return None
        return await self._new_dm(owner, puppet, ours, phone), puppet

    async def _new_dm(self, owner: str, puppet: str, ours: str, phone: str) -> str:
        """A new DM from the phone's virtual user to the Matrix side, who is invited."""
        intent = await self.virtual_users.ensure(puppet)
        room_id, new = await open_dm(intent, owner, puppet)
        await VmnAllocations.remember_room(ours, phone, room_id, puppet)
        if not new:
            return room_id
        log.info("New DM %s for a text from %s to %s (owner %s)", room_id, phone, ours, owner)
        real = await self.who_is(phone) if self.who_is is not None else None
        if real is not None:
            await self.notice(
                intent,
                room_id,
                None,
                f"{phone} belongs to {real} on Matrix; you can also message them there.",
            )
        return room_id

    async def _auto_reply(self, ours: str, phone: str, text: str) -> None:
        message = OutboundMessage(id=f"auto-{uuid.uuid4()}", source=ours, destination=phone, text=text)
        try:
            await self.gateway.send(message)
        except (TooManySegmentsError, NoRouteError) as e:
            log.warning("Could not send keyword reply to %s: %s", phone, e)

    async def _show_receipt(self, receipt: StoredReceipt) -> None:
        sent = await self.outbox.find_by_part(receipt.smsc, receipt.smsc_message_id)
        await SmsReceipts.mark_handled(receipt.seq)
        if sent is None or sent.origin is None:
            return
        metrics.SMS.labels("receipt", receipt.outcome).inc()
        origin = sent.origin
        already_failed = sent.receipt in FAILED_OUTCOMES
        await self.outbox.set_receipt(sent.id, receipt.outcome)
        intent = self.virtual_users.intent_for(origin.puppet_mxid)
        try:
            if receipt.outcome == "delivered":
                await intent.mark_read(RoomID(origin.room_id), EventID(origin.event_id))
            elif receipt.outcome in FAILED_OUTCOMES and not already_failed:
                await self.notice(
                    intent,
                    origin.room_id,
                    origin.event_id,
                    f"Not delivered to {sent.destination}: {receipt.reason}",
                )
        except MatrixError as e:
            log.warning("Could not show a receipt in %s: %s", origin.room_id, e)


class _RelayedEvent:
    """The parts of a Matrix event ``_relay_to`` reads, for texts relayed between phones in a group."""

    def __init__(self, room_id: str, event_id: str, sender: str) -> None:
        self.room_id = room_id
        self.event_id = event_id
        self.sender = sender

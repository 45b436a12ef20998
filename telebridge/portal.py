"""Portals: Matrix rooms bridged to phone parties, and what happens in them.

A 1:1 DM between a Matrix user and one virtual user keeps that conversation's history; in a group room
every virtual user relays the room to its phone (the seed's "group chat" model). Inviting a virtual user
makes a room a portal; kicking it (or it leaving) stops that relay, and a room with no party left is no
longer a portal. The bridge bot stays out of DMs: Element offers 1:1 calls only in rooms of two.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from mautrix.appservice import IntentAPI
from mautrix.errors import MatrixError
from mautrix.types import (
    EventType,
    Membership,
    MessageEvent,
    RoomCreatePreset,
    RoomID,
    StateEvent,
    UserID,
)

from . import metrics
from .call_events import CALL_REJECT
from .db import Portal, Puppet
from .numbers import display_name
from .puppet import NotAVirtualUser, VirtualUserNamespace
from .user import Permissions

log = logging.getLogger("telebridge.portal")

IntentFor = Callable[[str], IntentAPI]


class TextRelay(Protocol):
    """Carries portal messages to the phones (the SMS service)."""

    async def relay(self, portal: Portal, parties: list[str], event: MessageEvent) -> None: ...


@dataclass
class VirtualUsers:
    """Creates virtual users on the homeserver on first need and keeps their profile."""

    namespace: VirtualUserNamespace
    intent_for: IntentFor
    default_region: str
    avatar_url: str = ""
    #: Users known registered: only this process writes the puppet table, so once seen, no more reads.
    _registered: set[str] = field(default_factory=set)

    async def ensure(self, user_id: str) -> IntentAPI:
        """Register ``user_id`` (raises :class:`NotAVirtualUser` if it is not a valid one) and set its profile."""
        party = self.namespace.party(user_id)
        intent = self.intent_for(user_id)
        if user_id in self._registered:
            return intent
        row = await Puppet.get_or_create(user_id, party.number, party.host)
        if not row.registered:
            await intent.ensure_registered()
            name = display_name(party.number, self.default_region)
            await intent.set_displayname(name)
            if self.avatar_url:
                await intent.set_avatar_url(self.avatar_url)  # type: ignore[arg-type]
            await row.mark_registered(name)
            log.info("Created virtual user %s for %s", user_id, party.number)
        self._registered.add(user_id)
        return intent


async def learn_power_levels(intent: IntentAPI, room_id: str) -> None:
    """Cache the room's power levels and creator now. mautrix checks them before a virtual user's first
    event in a room and fetches them then if it must: two homeserver round trips on the path of the
    first text or the ``m.call.answer`` a caller is waiting for."""
    try:
        await intent.get_power_levels(RoomID(room_id), ignore_cache=True, ensure_joined=False)
        await intent.get_state_event(RoomID(room_id), EventType.ROOM_CREATE, format="event")
    except MatrixError as exc:
        log.info("Power levels of %s not cached: %s", room_id, exc)


async def open_dm(intent: IntentAPI, owner: str, puppet: str) -> tuple[str, bool]:
    """The DM between ``owner`` and the virtual user ``puppet`` (``intent``), made by the virtual user
    with ``owner`` invited when there is none yet (traffic from a phone: a text, a call). Returns the
    room and whether it is new; a new one's power levels are learnt at once (:func:`learn_power_levels`)."""
    portal = await Portal.find_dm(owner, puppet)
    if portal is not None:
        return portal.room_id, False
    room_id = await intent.create_room(
        invitees=[UserID(owner)], is_direct=True, preset=RoomCreatePreset.TRUSTED_PRIVATE
    )
    portal = await Portal.create(room_id, "dm", owner)
    await portal.add_party(puppet)
    metrics.PORTALS.inc()
    await learn_power_levels(intent, room_id)
    return str(room_id), True


class PortalHandler:
    """Membership and messages in rooms that involve virtual users."""

    def __init__(
        self,
        *,
        namespace: VirtualUserNamespace,
        virtual_users: VirtualUsers,
        permissions: Permissions,
        bot_mxid: str,
        undeliverable_notice: str,
    ) -> None:
        self.namespace = namespace
        self.virtual_users = virtual_users
        self.permissions = permissions
        self.bot_mxid = bot_mxid
        self.undeliverable_notice = undeliverable_notice
        self._refused_noticed: set[tuple[str, str]] = set()
        #: The SMS service when ``sms.enabled``; without it messages get a notice saying why.
        self.sms: TextRelay | None = None

    def is_ours(self, user_id: str) -> bool:
        return user_id == self.bot_mxid or self.namespace.is_in_namespace(user_id)

    # -- membership ---------------------------------------------------------------------------------

    async def on_member(self, event: StateEvent) -> None:
        target = event.state_key
        membership = getattr(event.content, "membership", None)
        if target == self.bot_mxid and membership == Membership.INVITE:
            await self._on_bot_invited(event)
        elif self.namespace.is_in_namespace(target):
            if membership == Membership.INVITE:
                await self._on_invited(event)
            elif membership in (Membership.LEAVE, Membership.BAN):
                await self._on_party_removed(event)
        elif membership in (Membership.LEAVE, Membership.BAN) and not self.is_ours(target):
            await self._on_matrix_user_left(event)

    async def _on_invited(self, event: StateEvent) -> None:
        room_id, inviter, target = event.room_id, event.sender, event.state_key
        try:
            intent = await self.virtual_users.ensure(target)
        except NotAVirtualUser as e:
            log.info("Ignoring invite of %s to %s: %s", target, room_id, e)
            return
        if not self.permissions.may_use(inviter):
            log.info("Refusing invite from %s to %s: not permitted", inviter, room_id)
            await intent.leave_room(room_id, reason="You are not allowed to use this phone bridge.")
            return
        await intent.join_room_by_id(room_id)
        is_direct = bool(getattr(event.content, "is_direct", False))
        portal = await Portal.get(room_id)
        if portal is None:
            portal = await Portal.create(room_id, "dm" if is_direct else "group", inviter)
            metrics.PORTALS.inc()
        await portal.add_party(target)
        if portal.kind == "dm" and len(await portal.parties()) > 1:
            await portal.set_kind("group")
        encrypted, _ = await asyncio.gather(
            self._room_is_encrypted(intent, room_id), learn_power_levels(intent, room_id)
        )
        if encrypted:
            await portal.set_encrypted(True)
            await self.notice(intent, room_id, None, self._encrypted_text())
        log.info("%s joined %s (%s portal) on invite from %s", target, room_id, portal.kind, inviter)

    async def _on_bot_invited(self, event: StateEvent) -> None:
        """The bot joins rooms permitted users invite it to: they become management rooms (commands)."""
        bot = self.virtual_users.intent_for(self.bot_mxid)
        if not self.permissions.may_use(event.sender):
            await bot.leave_room(event.room_id, reason="You are not allowed to use this phone bridge.")
            return
        await bot.join_room_by_id(event.room_id)
        await bot.send_notice(event.room_id, "Hello! Send 'help' for the commands of this phone bridge.")

    async def _on_party_removed(self, event: StateEvent) -> None:
        portal = await Portal.get(event.room_id)
        if portal is None:
            return
        left = await portal.remove_party(event.state_key)
        how = "left" if event.sender == event.state_key else f"was removed by {event.sender}"
        log.info("%s %s %s; relaying to it stopped", event.state_key, how, event.room_id)
        if not left:
            await portal.delete()
            metrics.PORTALS.dec()

    async def _on_matrix_user_left(self, event: StateEvent) -> None:
        """The Matrix side of a DM left: the conversation is over, so the virtual user leaves too."""
        portal = await Portal.get(event.room_id)
        if portal is None or portal.kind != "dm" or event.state_key != portal.creator:
            return
        for party in await portal.parties():
            try:
                await self.virtual_users.intent_for(party).leave_room(event.room_id)
            except MatrixError as e:
                log.warning("%s could not leave %s: %s", party, event.room_id, e)
        await portal.delete()
        metrics.PORTALS.dec()

    async def on_encryption(self, event: StateEvent) -> None:
        portal = await Portal.get(event.room_id)
        if portal is None or portal.encrypted:
            return
        await portal.set_encrypted(True)
        parties = await portal.parties()
        if parties:
            intent = self.virtual_users.intent_for(parties[0])
            await self.notice(intent, event.room_id, None, self._encrypted_text())

    # -- messages -----------------------------------------------------------------------------------

    async def _portal_of(self, event: Any) -> tuple[Portal, list[str]] | None:
        """The portal an event from a Matrix user happened in, with its phone parties (None: not ours)."""
        if self.is_ours(event.sender):
            return None
        portal = await Portal.get(event.room_id)
        if portal is None:
            return None
        parties = await portal.parties()
        return (portal, parties) if parties else None

    async def on_message(self, event: MessageEvent) -> None:
        found = await self._portal_of(event)
        if found is None:
            return
        portal, parties = found
        if not self.permissions.may_use(event.sender):
            await self._refuse_once(portal, parties[0], event.sender, event.event_id)
            return
        if self.sms is not None:
            await self.sms.relay(portal, parties, event)
            return
        for party_id in parties:
            party = self.namespace.party(party_id)
            intent = self.virtual_users.intent_for(party_id)
            text = self.undeliverable_notice.format(number=party.number)
            await self.notice(intent, event.room_id, event.event_id, text)
        metrics.EVENTS.labels("m.room.message", "undeliverable").inc()

    async def on_call_invite(self, event: Any) -> None:
        """Calls are not set up on this bridge: reject at once so the caller's client never rings forever."""
        found = await self._portal_of(event)
        if found is None:
            return
        _, parties = found
        content = event.content.serialize() if hasattr(event.content, "serialize") else dict(event.content)
        call_id = content.get("call_id")
        if not isinstance(call_id, str):
            return
        intent = self.virtual_users.intent_for(parties[0])
        await intent.send_message_event(
            event.room_id,
            CALL_REJECT,
            {"call_id": call_id, "party_id": "telebridge", "version": "1"},  # type: ignore[arg-type]
        )
        await self.notice(
            intent, event.room_id, None, "Calls to phone numbers are not set up on this bridge yet."
        )

    # -- helpers ------------------------------------------------------------------------------------

    async def _refuse_once(self, portal: Portal, party_id: str, sender: str, event_id: str) -> None:
        key = (portal.room_id, sender)
        if key in self._refused_noticed:
            return
        self._refused_noticed.add(key)
        intent = self.virtual_users.intent_for(party_id)
        await self.notice(
            intent,
            portal.room_id,
            event_id,
            f"{sender} is not allowed to use this phone bridge; nothing was relayed.",
        )

    @staticmethod
    def _encrypted_text() -> str:
        return (
            "This room is encrypted, so the phone bridge cannot read it and nothing here reaches the phone. "
            "Start an unencrypted chat with this number instead."
        )

    @staticmethod
    async def _room_is_encrypted(intent: IntentAPI, room_id: str) -> bool:
        try:
            await intent.get_state_event(RoomID(room_id), EventType.ROOM_ENCRYPTION)
        except MatrixError:
            return False
        return True

    @staticmethod
    async def notice(intent: IntentAPI, room_id: str, reply_to: str | None, text: str) -> None:
        """An ``m.notice`` from a virtual user, as a reply when it is about one message."""
        content: dict[str, Any] = {"msgtype": "m.notice", "body": text}
        if reply_to:
            content["m.relates_to"] = {"m.in_reply_to": {"event_id": reply_to}}
        await intent.send_message_event(room_id, EventType.ROOM_MESSAGE, content)  # type: ignore[arg-type]

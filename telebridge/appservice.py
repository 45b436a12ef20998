"""The homeserver-facing HTTP edge (Matrix Application Service API), on mautrix's ``AppService``.

mautrix gives us the aiohttp app, the client session and intents. We register our own routes because
the bridge needs more than mautrix serves: the third-party lookups of MSC2845, transactions that are
deduplicated across restarts and answered with an error (so the homeserver retries) when they could not
be stored, and token checks that are constant-time and answer 403 ``M_FORBIDDEN`` for a wrong token
(AS API "Authorization", Matrix 1.4+).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import attr
from aiohttp import web
from mautrix.appservice import AppService
from mautrix.appservice.state_store import ASStateStore
from mautrix.types import (
    Event,
    EventID,
    EventType,
    MessageEvent,
    MessageType,
    MessageUnsigned,
    RoomID,
    SerializerError,
    TextMessageEventContent,
    UserID,
)

from . import metrics
from .db import TransactionLog
from .thirdparty import PHONE_FIELD, PSTN_PROTOCOLS, Lookup

log = logging.getLogger("telebridge.appservice")

#: Path prefixes that are AS API endpoints (current and legacy unprefixed forms); all need the hs_token.
_AS_PREFIXES = ("/_matrix/app/", "/transactions/", "/users/", "/rooms/", "/thirdparty/")


class EventSink(Protocol):
    """What handles Matrix events once the edge has authenticated and parsed them."""

    async def handle_event(self, event: Event) -> None: ...

    async def prefetch_rooms(self, room_ids: list[str]) -> None:
        """Called with a transaction's rooms before its events: what they need can be read in one go."""
        ...

    async def query_user(self, user_id: str) -> bool: ...

    async def lookup_user(self, user_id: str) -> None: ...

    async def real_user_for(self, dialled: str) -> str | None: ...


def json_error(status: int, errcode: str, message: str) -> web.Response:
    """A Matrix-style error body (``errcode``, ``error``), for every HTTP endpoint the bridge serves."""
    return web.json_response({"errcode": errcode, "error": message}, status=status)


#: ``content`` keys a plain text message may carry besides msgtype and body without leaving the fast path:
#: none that mautrix's text content class reads (formatting, relations, …); unknown ones (``m.mentions``)
#: are kept aside as mautrix keeps them.
_TEXT_CONTENT_FIELDS = frozenset(f.metadata.get("json", f.name) for f in attr.fields(TextMessageEventContent))
_MESSAGE_FIELDS = frozenset(f.metadata.get("json", f.name) for f in attr.fields(MessageEvent))
_PLAIN_MSGTYPES = {t.value: t for t in (MessageType.TEXT, MessageType.NOTICE, MessageType.EMOTE)}


def plain_text_message(raw: dict[str, Any]) -> MessageEvent | None:
    """The event mautrix's ``Event.deserialize`` would make of ``raw``, built directly when ``raw`` is a
    plain text ``m.room.message`` (the bulk of what a busy bridge receives), else None.

    mautrix's generic deserialiser walks its attrs metadata for every field of every event (~26 µs each
    here; this takes ~2 µs). Anything outside the plain shape (formatting, replies, edits, media, state,
    an unsigned key it does not know) returns None and takes the generic path; the test suite checks that
    both paths give equal events."""
    if raw.get("type") != "m.room.message" or "state_key" in raw:
        return None
    content = raw.get("content")
    if type(content) is not dict:
        return None
    msgtype = _PLAIN_MSGTYPES.get(content.get("msgtype"))
    body = content.get("body")
    room_id, event_id, sender = raw.get("room_id"), raw.get("event_id"), raw.get("sender")
    timestamp = raw.get("origin_server_ts")
    if (
        msgtype is None
        or type(body) is not str
        or type(room_id) is not str
        or type(event_id) is not str
        or type(sender) is not str
        or type(timestamp) is not int
    ):
        return None
    unsigned = MessageUnsigned()
    raw_unsigned = raw.get("unsigned")
    if raw_unsigned is not None:
        if type(raw_unsigned) is not dict or not raw_unsigned.keys() <= {"age", "transaction_id"}:
            return None
        age, transaction_id = raw_unsigned.get("age"), raw_unsigned.get("transaction_id")
        if (age is not None and type(age) is not int) or (
            transaction_id is not None and type(transaction_id) is not str
        ):
            return None
        unsigned = MessageUnsigned(**raw_unsigned)
    text = TextMessageEventContent(msgtype=msgtype, body=body)
    if len(content) > 2:
        extra = {k: v for k, v in content.items() if k != "msgtype" and k != "body"}
        if not extra.keys().isdisjoint(_TEXT_CONTENT_FIELDS):
            return None
        text.unrecognized_ = extra
    event = MessageEvent(
        type=EventType.ROOM_MESSAGE,
        room_id=RoomID(room_id),
        event_id=EventID(event_id),
        sender=UserID(sender),
        timestamp=timestamp,
        content=text,
        unsigned=unsigned,
    )
    if len(raw) > 7 or not raw.keys() <= _MESSAGE_FIELDS:
        extra = {k: v for k, v in raw.items() if k not in _MESSAGE_FIELDS}
        if extra:
            event.unrecognized_ = extra
    return event


def _event_type_class(raw: dict[str, Any], event: Event) -> None:
    """mautrix leaves the class (state/message) to the caller; state events are those with a state_key."""
    if "state_key" in raw:
        event.type = event.type.with_class(EventType.Class.STATE)
    else:
        event.type = event.type.with_class(EventType.Class.MESSAGE)


class BridgeAppService(AppService):
    """mautrix ``AppService`` with telebridge's routes and authentication."""

    def __init__(
        self,
        *,
        lookup: Lookup,
        sink: EventSink,
        allow_query_token: bool = True,
        state_store: ASStateStore,
        **kwargs: Any,
    ) -> None:
        self.lookup = lookup
        self.sink = sink
        self.allow_query_token = allow_query_token
        self._txn_lock = asyncio.Lock()
        super().__init__(
            state_store=state_store, aiohttp_params={"middlewares": [self._make_auth_middleware()]}, **kwargs
        )

    # -- authentication -----------------------------------------------------------------------------

    def _make_auth_middleware(self) -> Callable[..., Awaitable[web.StreamResponse]]:
        @web.middleware
        async def authenticate(
            request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
        ) -> web.StreamResponse:
            if request.path.startswith(_AS_PREFIXES):
                token = self._request_token(request)
                if token is None:
                    metrics.AUTH_FAILURES.labels("missing").inc()
                    return json_error(401, "M_UNAUTHORIZED", "missing homeserver token")
                if not hmac.compare_digest(token.encode(), self.hs_token.encode()):
                    metrics.AUTH_FAILURES.labels("wrong").inc()
                    log.warning(
                        "Rejected %s %s from %s: wrong hs_token", request.method, request.path, request.remote
                    )
                    return json_error(403, "M_FORBIDDEN", "wrong homeserver token")
            try:
                return await handler(request)
            except web.HTTPNotFound:
                return json_error(404, "M_UNRECOGNIZED", "unrecognised endpoint")
            except web.HTTPMethodNotAllowed:
                return json_error(405, "M_UNRECOGNIZED", "method not allowed here")

        return authenticate

    def _request_token(self, request: web.Request) -> str | None:
        header = request.headers.get("Authorization")
        if header is not None:
            scheme, _, token = header.partition(" ")
            return token.strip() if scheme.lower() == "bearer" else ""
        if self.allow_query_token and "access_token" in request.query:
            return request.query["access_token"]
        return None

    # -- routes -------------------------------------------------------------------------------------

    def register_routes(self, app: web.Application) -> None:
        for prefix in ("/_matrix/app/v1", ""):
            app.router.add_put(prefix + "/transactions/{txn_id}", self._on_transaction)
            app.router.add_get(prefix + "/users/{user_id}", self._on_user_query)
            app.router.add_get(prefix + "/rooms/{alias}", self._on_alias_query)
            app.router.add_get(prefix + "/thirdparty/protocol/{protocol}", self._on_protocol)
            app.router.add_get(prefix + "/thirdparty/user/{protocol}", self._on_thirdparty_user)
            app.router.add_get(prefix + "/thirdparty/user", self._on_thirdparty_reverse)
            app.router.add_get(prefix + "/thirdparty/location/{protocol}", self._on_location)
            app.router.add_get(prefix + "/thirdparty/location", self._on_location)
        app.router.add_post("/_matrix/app/v1/ping", self._on_ping)

    async def _on_transaction(self, request: web.Request) -> web.Response:
        """AS API "Pushing events". Processed once per txn_id, even across restarts; events in order.

        Only after every event has been handled is the txn recorded and 200 returned; the durable writes
        the events leave (SMS outbox rows) are committed with the record, in one commit
        (``TransactionLog.process``). If that fails the homeserver gets a 500 and retries the same
        transaction.
        """
        txn_id = request.match_info["txn_id"]
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            metrics.TRANSACTIONS.labels("bad_json").inc()
            return json_error(400, "M_NOT_JSON", "body is not JSON")
        if not isinstance(body, dict) or not isinstance(body.get("events", []), list):
            metrics.TRANSACTIONS.labels("bad_json").inc()
            return json_error(400, "M_BAD_JSON", "events must be a list")
        async with self._txn_lock:
            if await TransactionLog.seen(txn_id):
                metrics.TRANSACTIONS.labels("duplicate").inc()
                log.debug("Transaction %s already processed", txn_id)
                return web.json_response({})
            events = body.get("events", [])
            await TransactionLog.process(txn_id, lambda: self._dispatch_all(events))
        metrics.TRANSACTIONS.labels("ok").inc()
        return web.json_response({})

    async def _dispatch_all(self, events: list[Any]) -> None:
        """Rooms are independent: their events run concurrently (so durable writes from many rooms share a
        commit), while each room's events keep their order."""
        by_room: dict[str, list[Any]] = {}
        for raw in events:
            room = raw.get("room_id") if isinstance(raw, dict) else None
            by_room.setdefault(room if isinstance(room, str) else "", []).append(raw)
        try:
            await self.sink.prefetch_rooms([room for room in by_room if room])
        except Exception:  # each event's handler reads what it needs itself
            log.exception("Reading the rooms of a transaction ahead failed")

        async def in_order(room_events: list[Any]) -> None:
            for raw in room_events:
                await self._dispatch(raw)

        if len(by_room) == 1:
            await in_order(events)
        else:
            await asyncio.gather(*(in_order(room_events) for room_events in by_room.values()))

    async def _dispatch(self, raw: Any) -> None:
        """One event: malformed ones are logged and skipped, handler failures never stop the txn."""
        if not isinstance(raw, dict):
            metrics.ERRORS.labels("event_not_object").inc()
            log.warning("Skipping an event that is not a JSON object")
            return
        try:
            event: Any = plain_text_message(raw)  # mautrix's Event union is not a MessageEvent to mypy
            if event is None:
                self._fix_prev_content(raw)  # type: ignore[arg-type]
                event = Event.deserialize(raw)
                _event_type_class(raw, event)
        except (SerializerError, KeyError, TypeError, ValueError, AttributeError) as e:
            metrics.ERRORS.labels("event_malformed").inc()
            log.warning("Skipping malformed event %s of type %s: %s", raw.get("event_id"), raw.get("type"), e)
            return
        try:
            await self.state_store.update_state(event)
            await self.sink.handle_event(event)
        except Exception:
            metrics.EVENTS.labels(str(raw.get("type")), "error").inc()
            log.exception("Failed to handle event %s in %s", raw.get("event_id"), raw.get("room_id"))

    async def _on_user_query(self, request: web.Request) -> web.Response:
        user_id = request.match_info["user_id"]
        try:
            exists = await self.sink.query_user(user_id)
        except Exception:
            metrics.USER_QUERIES.labels("500").inc()
            log.exception("User query for %s failed", user_id)
            return json_error(500, "M_UNKNOWN", "could not create the user")
        metrics.USER_QUERIES.labels("200" if exists else "404").inc()
        if not exists:
            return json_error(404, "M_NOT_FOUND", "no such phone party")
        return web.json_response({})

    async def _on_alias_query(self, request: web.Request) -> web.Response:
        return json_error(404, "M_NOT_FOUND", "the bridge has no room aliases")

    async def _on_protocol(self, request: web.Request) -> web.Response:
        status, body = self.lookup.protocol(request.match_info["protocol"])
        metrics.LOOKUPS.labels("protocol", str(status)).inc()
        return web.json_response(body, status=status)

    async def _on_thirdparty_user(self, request: web.Request) -> web.Response:
        fields = {name: request.query.getall(name) for name in request.query if name != "access_token"}
        protocol = request.match_info["protocol"]
        status, body = self.lookup.user(protocol, fields)
        metrics.LOOKUPS.labels("user", str(status)).inc()
        if status == 200 and body and protocol in PSTN_PROTOCOLS:
            # The seed: reach the real Matrix user where an identity server maps the number to one.
            real = await self.sink.real_user_for(fields[PHONE_FIELD][0])
            if real is not None:
                body[0]["userid"] = real
                return web.json_response(body, status=status)
        if status == 200 and body:
            # MSC2845 virtual users are created lazily on lookup, so the DM invite that follows finds them.
            try:
                await self.sink.lookup_user(body[0]["userid"])
            except Exception:
                metrics.ERRORS.labels("lookup_register").inc()
                log.exception("Could not create %s after a lookup", body[0]["userid"])
        return web.json_response(body, status=status)

    async def _on_thirdparty_reverse(self, request: web.Request) -> web.Response:
        user_ids = request.query.getall("userid", [])
        if len(user_ids) > 1:
            return json_error(400, "M_INVALID_PARAM", "userid must be given once")
        status, body = self.lookup.reverse(user_ids[0] if user_ids else None)
        metrics.LOOKUPS.labels("reverse", str(status)).inc()
        return web.json_response(body, status=status)

    async def _on_location(self, request: web.Request) -> web.Response:
        return json_error(404, "M_NOT_FOUND", "the phone network has no locations")

    async def _on_ping(self, request: web.Request) -> web.Response:
        """AS API ``POST /ping`` (Matrix 1.7): the homeserver checking it can reach us."""
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return json_error(400, "M_NOT_JSON", "body is not JSON")
        txn = body.get("transaction_id") if isinstance(body, dict) else None
        log.info("Ping from the homeserver (transaction %s)", txn)
        return web.json_response({})

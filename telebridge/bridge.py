"""The composition root: database, appservice, portals and metrics, started and stopped together."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from aiohttp import web
from mautrix.api import Method, Path
from mautrix.appservice.state_store.asyncpg import PgASStateStore
from mautrix.errors import MatrixConnectionError, MatrixRequestError
from mautrix.types import Event, EventType, MessageEvent, RoomID, StateEvent, UserID
from mautrix.util.async_db import Database

from . import db as dbmod
from . import metrics
from .appservice import BridgeAppService
from .call_events import CALL_EVENT_TYPES, CALL_INVITE
from .commands import Commands
from .config import Config
from .credit import Credit
from .identity import IdentityLookup
from .log import REDACTOR
from .numbers import to_e164
from .portal import PortalHandler, VirtualUsers
from .puppet import NotAVirtualUser, VirtualUserNamespace
from .thirdparty import Lookup
from .user import Permissions

if TYPE_CHECKING:
    from .calls import CallBridge
    from .sms import SmsBridge

log = logging.getLogger("telebridge")

#: Homeserver retries give up long before this; older transaction IDs can be forgotten.
TXN_RETENTION_MS = 7 * 24 * 3600 * 1000


class Bridge:
    """One running bridge. Build it inside the running event loop (mautrix captures the loop)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        REDACTOR.add(config["appservice.as_token"])
        REDACTOR.add(config["appservice.hs_token"])
        REDACTOR.add(config["credit.provisioning_secret"])
        for smsc in config["sms.smscs"]:
            REDACTOR.add(str(smsc.get("password", "")))
        self.db: Database = dbmod.create_database(
            config["appservice.database"],
            min_size=config["appservice.database_opts.min_size"],
            max_size=config["appservice.database_opts.max_size"],
        )
        dbmod.init(self.db)
        self.state_store = PgASStateStore(self.db)
        self.namespace = VirtualUserNamespace(
            prefix=config["bridge.user_prefix"],
            domain=config["homeserver.domain"],
            gateway_host=config["bridge.sip_gateway_host"],
            max_number_length=config["bridge.max_number_length"],
        )
        self.permissions = Permissions(config["bridge.permissions"])
        self.az = BridgeAppService(
            server=config["homeserver.address"],
            domain=config["homeserver.domain"],
            as_token=config["appservice.as_token"],
            hs_token=config["appservice.hs_token"],
            bot_localpart=config["appservice.bot_username"],
            id=config["appservice.id"],
            verify_ssl=config["homeserver.verify_ssl"],
            log=logging.getLogger("telebridge.as"),
            lookup=Lookup(self.namespace, icon=config["bridge.protocol_icon"]),
            sink=self,
            state_store=self.state_store,
            default_http_retry_count=3,
        )
        self.virtual_users = VirtualUsers(
            namespace=self.namespace,
            intent_for=lambda user_id: self.az.intent.user(user_id),  # type: ignore[arg-type]
            default_region=config["bridge.default_region"],
            avatar_url=config["bridge.virtual_user_avatar"],
        )
        self.portals = PortalHandler(
            namespace=self.namespace,
            virtual_users=self.virtual_users,
            permissions=self.permissions,
            bot_mxid=self.az.bot_mxid,
            undeliverable_notice=config["bridge.undeliverable_notice"],
        )
        self.credit: Credit | None = Credit(config) if config["credit.enabled"] else None
        if self.credit is not None:
            self.credit.add_routes(self.az.app)
        self.sms: SmsBridge | None = None
        if config["sms.enabled"]:
            from .sms import SmsBridge  # the SMPP stack loads only when SMS is on

            self.sms = SmsBridge(
                config,
                namespace=self.namespace,
                virtual_users=self.virtual_users,
                notice=PortalHandler.notice,
                display_name=self.display_name,
                who_is=self.who_is,
                credit=self.credit,
            )
            self.portals.sms = self.sms
        self.calls: CallBridge | None = None
        if config["calls.enabled"]:
            from .calls import CallBridge  # the SIP and media stacks load only when calls are on

            self.calls = CallBridge(
                config,
                virtual_users=self.virtual_users,
                notice=PortalHandler.notice,
                credit=self.credit,
                who_is=self.who_is,
            )
        self.identity: IdentityLookup | None = None
        if config["identity.servers"]:
            self.identity = IdentityLookup(
                list(config["identity.servers"]),
                self._openid_token,
                accept_terms=config["identity.accept_terms"],
                cache_ttl=config["identity.cache_ttl"],
                timeout=float(config["identity.timeout"]),
            )
        self.commands = Commands(lambda: self.az.intent, self.permissions, self.credit)
        self._metrics_runner: web.AppRunner | None = None
        self._calls_started = False
        self._sms_started = False
        self._db_started = False
        self._az_started = False
        self._background: set[asyncio.Task[None]] = set()

    # -- life cycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start everything; on any failure, stop what was started (no half-open bridge, no stuck threads)."""
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        await self.db.start()
        self._db_started = True
        await self.state_store.upgrade_table.upgrade(self.db)
        await dbmod.TransactionLog.prune(TXN_RETENTION_MS)
        if self.credit is not None:
            await self.credit.recover()  # nothing runs yet: every open hold is a leftover
        metrics.PORTALS.set(await self.db.fetchval("SELECT COUNT(*) FROM portal") or 0)
        self._az_started = True
        await self.az.start(host=self.config["appservice.hostname"], port=self.config["appservice.port"])
        if self.config["metrics.enabled"]:
            self._metrics_runner = await metrics.start_metrics_server(
                self.config["metrics.hostname"], self.config["metrics.port"]
            )
        log.info(
            "Listening for the homeserver on %s:%s",
            self.config["appservice.hostname"],
            self.config["appservice.port"],
        )
        if self.sms is not None:
            self._sms_started = True
            await self.sms.start()
        if self.calls is not None:
            self._calls_started = True
            await self.calls.start()
        task = asyncio.create_task(self._check_homeserver())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def stop(self) -> None:
        for task in list(self._background):
            task.cancel()
        if self._calls_started and self.calls is not None:
            self._calls_started = False
            await self.calls.stop()
        if self._sms_started and self.sms is not None:
            self._sms_started = False
            await self.sms.stop()
        if self._az_started:
            self._az_started = False
            if getattr(self.az, "runner", None) is None:
                self.az.runner = None
            await self.az.stop()
        if self._metrics_runner is not None:
            await self._metrics_runner.cleanup()
            self._metrics_runner = None
        if self.identity is not None:
            await self.identity.close()
        if self._db_started:
            self._db_started = False
            await dbmod.TransactionLog.writes.close()
            await self.db.stop()

    async def _check_homeserver(self, attempts: int = 30) -> None:
        """Ping the homeserver at start-up (AS API ping, Matrix 1.7) and say clearly what is wrong.

        This loop does its own retrying, so mautrix's (three retries per request, each logged as a warning,
        half a minute before our one clear line) is off until the check passes."""
        api = self.az.intent.api
        retries, api.default_retry_count = api.default_retry_count, 0
        try:
            await self._check_homeserver_attempts(attempts)
        finally:
            api.default_retry_count = retries

    async def _check_homeserver_attempts(self, attempts: int) -> None:
        delay = 1.0
        for _ in range(attempts):
            try:
                await self.az.intent.ensure_registered()
                await self.az.intent.set_displayname(self.config["appservice.bot_displayname"])
                if self.config["appservice.bot_avatar"]:
                    await self.az.intent.set_avatar_url(self.config["appservice.bot_avatar"])
                took = await self.az.ping_self()
                log.info("The homeserver reaches the bridge (ping took %d ms)", took)
                await self._homeserver_ready()
                return
            except MatrixConnectionError as e:
                log.error("Cannot reach the homeserver at %s: %s", self.config["homeserver.address"], e)
            except MatrixRequestError as e:
                if e.errcode == "M_UNKNOWN_TOKEN":
                    log.error(
                        "The homeserver does not know this bridge's as_token: add the registration file to "
                        "app_service_config_files in homeserver.yaml and restart the homeserver"
                    )
                elif e.errcode in (
                    "M_CONNECTION_FAILED",
                    "M_CONNECTION_TIMEOUT",
                    "M_BAD_STATUS",
                    "M_URL_NOT_SET",
                ):
                    log.error(
                        "The homeserver cannot reach the bridge at %s (%s: %s); check appservice.address",
                        self.config["appservice.address"],
                        e.errcode,
                        e.message,
                    )
                elif e.errcode == "M_UNRECOGNIZED":
                    log.warning("The homeserver does not support appservice pings; assuming it reaches us")
                    await self._homeserver_ready()
                    return
                else:
                    log.error("Homeserver check failed: %s %s", e.errcode, e.message)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)

    async def _homeserver_ready(self) -> None:
        self.az.ready = True
        if self.calls is not None:
            await self.calls.end_interrupted()

    # -- EventSink ----------------------------------------------------------------------------------

    async def handle_event(self, event: Event) -> None:
        if event.type == EventType.ROOM_MEMBER and isinstance(event, StateEvent):
            await self.portals.on_member(event)
        elif event.type == EventType.ROOM_ENCRYPTION and isinstance(event, StateEvent):
            await self.portals.on_encryption(event)
        elif event.type == EventType.ROOM_MESSAGE and isinstance(event, MessageEvent):
            if await self._is_management_room(event):
                await self.commands.handle(event)
            else:
                await self.portals.on_message(event)
        elif self.calls is not None and event.type in CALL_EVENT_TYPES:
            await self.calls.on_matrix_event(event)
        elif event.type == CALL_INVITE:
            await self.portals.on_call_invite(event)
        else:
            return
        metrics.EVENTS.labels(str(event.type), "ok").inc()

    async def prefetch_rooms(self, room_ids: list[str]) -> None:
        """The portals of a transaction's rooms in one read: after a start, a transaction of texts to 50
        conversations otherwise reads 50 times (and on PostgreSQL opens pool connections to do it)."""
        await dbmod.Portal.get_many(room_ids)

    async def query_user(self, user_id: str) -> bool:
        """AS API user query: create valid virtual users lazily, 404 for anything else in our namespace."""
        try:
            await self.virtual_users.ensure(user_id)
        except NotAVirtualUser as e:
            log.info("User query for %s: %s", user_id, e)
            return False
        return True

    async def _is_management_room(self, event: MessageEvent) -> bool:
        """A room the bot is in that bridges no phone: commands are read there."""
        if self.portals.is_ours(event.sender) or await dbmod.Portal.get(event.room_id) is not None:
            return False
        return bool(await self.state_store.is_joined(RoomID(event.room_id), UserID(self.az.bot_mxid)))

    async def display_name(self, room_id: str, user_id: str) -> str:
        """The member's display name in the room (from the state store), or the localpart."""
        member = await self.state_store.get_member(RoomID(room_id), UserID(user_id))
        if member is not None and member.displayname:
            return str(member.displayname)
        return user_id.split(":", 1)[0].lstrip("@")

    async def real_user_for(self, dialled: str) -> str | None:
        """A real Matrix user bound to the number in an identity server, when configured to prefer them."""
        if self.identity is None or not self.config["identity.prefer_real_users"]:
            return None
        number = to_e164(dialled, self.config["bridge.default_region"])
        return await self.identity.lookup(number) if number else None

    async def who_is(self, number: str) -> str | None:
        """For notices: the real Matrix user an E.164 number belongs to, if an identity server knows."""
        return await self.identity.lookup(number) if self.identity is not None else None

    async def _openid_token(self) -> dict[str, Any]:
        """Client-Server API "OpenID": a token identity servers can check with the homeserver."""
        api = self.az.intent.api
        path = Path.v3.user[self.az.bot_mxid].openid.request_token
        response: dict[str, Any] = await api.request(Method.POST, path, {})
        return response

    async def lookup_user(self, user_id: str) -> None:
        await self.virtual_users.ensure(user_id)

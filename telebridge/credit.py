"""Credit per Matrix ID (the seed: "track credit per matrix ID … and stop gatewaying … once credit is
exhausted"): rating, authorisation before anything leaves, settlement from what actually happened.

Texts: the cost (segments times the rate) is reserved before the submit; the reservation becomes the charge when
the SMSC accepts the message and is released when it is refused for good. Calls: the first billing
increment (plus the connection fee) must be affordable before the INVITE leaves; the call's longest
affordable duration is computed from the balance, the caller is warned ``credit.warn_before_end``
seconds before it, and the call is hung up when it is reached; the charge follows the call record.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from . import metrics
from .appservice import json_error
from .config import Config
from .db import Ledger
from .db.group_commit import Statement
from .db.txn import PendingWrites
from .rating import NoRate, Rate, RateTable, denied

log = logging.getLogger("telebridge.credit")


@dataclass(frozen=True)
class CallAuthorisation:
    max_seconds: int


class Credit:
    def __init__(self, config: Config) -> None:
        self.currency: str = config["credit.currency"]
        self.rates = RateTable.from_config(config["credit.rates"])
        self.deny: list[str] = list(config["credit.deny_prefixes"])
        self.allow: list[str] = list(config["credit.allow_prefixes"])
        self.default_mode: str = config["credit.default_mode"]
        self.modes: Mapping[str, str] = dict(config["credit.modes"])
        self.postpaid_limit: int = config["credit.postpaid_limit"]
        self.warn_before_end: int = config["credit.warn_before_end"]
        self.warn_tone: bool = config["credit.warn_tone"]
        self.secret: str = config["credit.provisioning_secret"]
        self.spend_per_day: int = config["limits.spend_per_day"]
        inbound = config["credit.inbound"]
        increments = inbound.get("increments", [60, 60])
        self.inbound = Rate(
            "inbound",
            int(inbound.get("sms", 0)),
            int(inbound.get("call_minute", 0)),
            0,
            increments[0],
            increments[1],
        )

    # -- policy -------------------------------------------------------------------------------------

    def mode_for(self, user_id: str) -> str:
        if user_id in self.modes:
            return self.modes[user_id]
        return self.modes.get(user_id.partition(":")[2], self.default_mode)

    def floor_for(self, user_id: str) -> int | None:
        """How far below zero the balance may go: 0 prepaid, the limit postpaid, None unlimited."""
        mode = self.mode_for(user_id)
        return None if mode == "unlimited" else self.postpaid_limit if mode == "postpaid" else 0

    async def over_daily_limit(self, user_id: str, cost: int) -> bool:
        if self.spend_per_day <= 0 or self.mode_for(user_id) == "unlimited":
            return False
        since = int(time.time() * 1000) - 24 * 3600 * 1000
        return await Ledger.spent_since(user_id, since) + cost > self.spend_per_day

    def money(self, amount: int) -> str:
        return f"{self.currency} {amount / 100:.2f}"

    def _refuse(self, kind: str, why: str) -> str:
        metrics.CREDIT_REFUSALS.labels(kind, why).inc()
        return why

    # -- texts --------------------------------------------------------------------------------------

    async def authorise_sms(
        self, user_id: str, e164: str, segments: int, key: str, pending: PendingWrites | None = None
    ) -> str | None:
        """Reserve the text's cost; the refusal to show the sender, or None when it may go. With ``pending``
        the hold is stored with that appservice transaction (``Ledger.reserve``)."""
        if denied(e164, self.deny, self.allow):
            self._refuse("sms", "denied")
            return f"texts to {e164} are blocked on this bridge."
        try:
            rate = self.rates.rate_for(e164)
        except NoRate:
            self._refuse("sms", "no_rate")
            return f"this bridge has no rate for {e164}, so it cannot text it."
        cost = rate.sms_cost(segments)
        if await self.over_daily_limit(user_id, cost):
            self._refuse("sms", "daily_limit")
            return f"it would take you over the daily spending limit of {self.money(self.spend_per_day)}."
        if await Ledger.try_reserve(user_id, cost, key, self.floor_for(user_id), e164, pending):
            return None
        account = await Ledger.account(user_id)
        self._refuse("sms", "no_credit")
        return (
            f"your credit ({self.money(account.available)}) does not cover this text ({self.money(cost)}, "
            f"{segments} part{'s' if segments != 1 else ''}). Ask the bridge operator to top up your account."
        )

    async def settle_sms(self, key: str, sent: bool, also: Sequence[Statement] = ()) -> None:
        """Charge the text's hold (sent) or release it, in one commit with ``also`` (its outbox status)."""
        await Ledger.settle(key, None if sent else 0, "text sent" if sent else "text not sent", also)

    # -- calls --------------------------------------------------------------------------------------

    async def authorise_call(self, user_id: str, e164: str, call_id: str) -> CallAuthorisation | str:
        if denied(e164, self.deny, self.allow):
            self._refuse("call", "denied")
            return f"calls to {e164} are blocked on this bridge."
        try:
            rate = self.rates.rate_for(e164)
        except NoRate:
            self._refuse("call", "no_rate")
            return f"this bridge has no rate for {e164}, so it cannot call it."
        first = rate.call_cost(rate.first_increment)
        if await self.over_daily_limit(user_id, first):
            self._refuse("call", "daily_limit")
            return f"it would take you over the daily spending limit of {self.money(self.spend_per_day)}."
        floor = self.floor_for(user_id)
        if not await Ledger.try_reserve(user_id, first, f"call:{call_id}", floor, reference=e164):
            account = await Ledger.account(user_id)
            self._refuse("call", "no_credit")
            return (
                f"your credit ({self.money(account.available)}) does not cover the first "
                f"{rate.first_increment} s of this call ({self.money(first)}). Ask the bridge operator to top up."
            )
        if floor is None:
            return CallAuthorisation(max_seconds=24 * 3600)
        account = await Ledger.account(user_id)
        budget = account.available + first + floor  # what this call may spend, its own hold included
        return CallAuthorisation(max_seconds=rate.affordable_seconds(budget))

    async def settle_call(self, call_id: str, e164: str, seconds: float) -> int:
        try:
            cost = self.rates.rate_for(e164).call_cost(seconds)
        except NoRate:
            cost = 0
        await Ledger.settle(f"call:{call_id}", cost, f"call to {e164}, {seconds:.0f} s")
        return cost

    # -- after a crash --------------------------------------------------------------------------------

    async def recover(self) -> None:
        """Settle holds a crash left open: a text whose fate is stored is charged or released (texts still
        queued are settled by the outbox as they go); a call (none runs yet at start-up) is charged for
        the time its record shows, or its authorised first increment when the crash lost the end."""
        db = Ledger.db
        for key, _user, _held in await Ledger.open_holds("sms:"):
            state = await db.fetchval("SELECT state FROM sms_outbox WHERE id=$1", key[len("sms:") :])
            if state is None or state == "failed":
                await Ledger.settle(key, 0, "text not sent (settled after a restart)")
            elif state == "submitted":
                await Ledger.settle(key, None, "text sent (settled after a restart)")
        for key, _user, held in await Ledger.open_holds("call:"):
            call_id = key[len("call:") :]
            row = await db.fetchrow(
                "SELECT number, answered_at, ended_at FROM call_record WHERE call_id=$1", call_id
            )
            if row is None or row["answered_at"] is None:
                await Ledger.settle(key, 0, "call not answered (settled after a restart)")
            elif row["ended_at"] is not None:
                seconds = (row["ended_at"] - row["answered_at"]) / 1000
                await self.settle_call(call_id, row["number"], seconds)
            else:
                await Ledger.settle(key, held, "call cut by a restart: first increment charged")
            log.info("Settled the credit hold of call %s after a restart", call_id)

    # -- incoming traffic -----------------------------------------------------------------------------

    async def charge_inbound_sms(self, user_id: str, parts: int, key: str, phone: str) -> None:
        await Ledger.charge(user_id, self.inbound.sms_cost(parts), key, phone, "text received")

    async def charge_inbound_call(self, user_id: str, seconds: float, key: str, phone: str) -> None:
        await Ledger.charge(
            user_id, self.inbound.call_cost(seconds), key, phone, f"call received, {seconds:.0f} s"
        )

    # -- provisioning API ---------------------------------------------------------------------------

    def add_routes(self, app: web.Application) -> None:
        """``/_telebridge/provision/v1``: balances and top-ups for a payment system (shared-secret auth)."""
        if not self.secret:
            return
        app.router.add_get("/_telebridge/provision/v1/balance/{user_id}", self._api_balance)
        app.router.add_post("/_telebridge/provision/v1/topup", self._api_topup)

    def _authorised(self, request: web.Request) -> bool:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        return hmac.compare_digest(token.encode(), self.secret.encode())

    async def _api_balance(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return json_error(403, "M_FORBIDDEN", "wrong provisioning secret")
        account = await Ledger.account(request.match_info["user_id"])
        history = await Ledger.history(account.user_id, 20)
        return web.json_response(
            {
                "user_id": account.user_id,
                "currency": self.currency,
                "balance": account.balance,
                "reserved": account.reserved,
                "mode": self.mode_for(account.user_id),
                "history": [
                    {"kind": e.kind, "amount": e.amount, "reference": e.reference, "at": e.created_at}
                    for e in history
                ],
            }
        )

    async def _api_topup(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return json_error(403, "M_FORBIDDEN", "wrong provisioning secret")
        try:
            body: Any = await request.json()
        except ValueError:
            return json_error(400, "M_NOT_JSON", "body is not JSON")
        user_id, amount, key = (
            (body.get(k) for k in ("user_id", "amount", "idempotency_key"))
            if isinstance(body, dict)
            else (None,) * 3
        )
        if not isinstance(user_id, str) or not user_id.startswith("@") or ":" not in user_id:
            return json_error(400, "M_INVALID_PARAM", "user_id must be a Matrix user ID")
        if isinstance(amount, bool) or not isinstance(amount, int):
            return json_error(400, "M_INVALID_PARAM", "amount must be an integer (minor units)")
        if not isinstance(key, str) or not key:
            return json_error(400, "M_INVALID_PARAM", "idempotency_key is required")
        account = await Ledger.top_up(user_id, amount, f"topup:{key}", body.get("description"))
        log.info("Credit for %s changed by %d under key %s", user_id, amount, key)
        return web.json_response(
            {"user_id": user_id, "balance": account.balance, "reserved": account.reserved}
        )

"""Bot commands in a management room (any room the bridge bot was invited to that is not a portal).

    balance                       your credit
    history                       your last ledger entries
    credit add @user:server 500   (admins) top up, in minor units
    credit remove @user:server 5  (admins) take credit away
    help                          this list

Each admin change carries an idempotency key made from the Matrix event ID, so a retried transaction
does not apply it twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

from mautrix.appservice import IntentAPI
from mautrix.types import MessageEvent, RoomID

from .credit import Credit
from .db import Ledger
from .user import Permissions

log = logging.getLogger("telebridge.commands")

HELP = (
    "Commands: balance · history · help. Admins also: credit add @user:server AMOUNT · "
    "credit remove @user:server AMOUNT (amounts in minor units, e.g. cents)."
)


class Commands:
    def __init__(self, bot: Callable[[], IntentAPI], permissions: Permissions, credit: Credit | None) -> None:
        self.bot = bot
        self.permissions = permissions
        self.credit = credit

    async def handle(self, event: MessageEvent) -> None:
        body = getattr(event.content, "body", None)
        if not isinstance(body, str) or not body.strip():
            return
        words = body.strip().split()
        reply = await self.answer(event, [w.lower() for w in words[:2]] + words[2:])
        await self.bot().send_notice(RoomID(event.room_id), reply)

    async def answer(self, event: MessageEvent, words: list[str]) -> str:
        sender = event.sender
        if not self.permissions.may_use(sender):
            return "You are not allowed to use this bridge."
        command = words[0]
        if command == "help":
            return HELP
        if self.credit is None:
            return "Credit is not enabled on this bridge: texts and calls are not charged."
        if command == "balance":
            account = await Ledger.account(sender)
            held = (
                f" ({self.credit.money(account.reserved)} held for texts and calls in progress)"
                if account.reserved
                else ""
            )
            return f"Your balance is {self.credit.money(account.balance)}{held}; mode: {self.credit.mode_for(sender)}."
        if command == "history":
            entries = await Ledger.history(sender, 10)
            if not entries:
                return "No credit history yet."
            lines = [
                f"{datetime.fromtimestamp(e.created_at / 1000, UTC):%Y-%m-%d %H:%M} {e.kind} "
                f"{self.credit.money(e.amount)} {e.reference or ''}".rstrip()
                for e in entries
            ]
            return "\n".join(lines)
        if command == "credit" and len(words) == 4 and words[1] in ("add", "remove"):
            if not self.permissions.is_admin(sender):
                return "Only bridge admins may change credit."
            target, amount_text = words[2], words[3]
            if not target.startswith("@") or ":" not in target or not amount_text.isdigit():
                return "Usage: credit add|remove @user:server AMOUNT (a whole number of minor units)."
            amount = int(amount_text) * (1 if words[1] == "add" else -1)
            account = await Ledger.top_up(target, amount, f"admin:{event.event_id}", f"by {sender}")
            log.info("%s changed the credit of %s by %d", sender, target, amount)
            return f"{target} now has {self.credit.money(account.balance)}."
        return f"Unknown command. {HELP}"

"""Shared test doubles for the smpp tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from smpp.client import SmscConfig
from smpp.gateway import InboundMessage, InboundReceipt
from smpp.session import SessionConfig


class RecordingSink:
    """An InboundSink that records what it stores; `gate` can hold stores back, `fail` can refuse them."""

    def __init__(self) -> None:
        self.messages: list[InboundMessage] = []
        self.receipts: list[InboundReceipt] = []
        self.gate: asyncio.Event | None = None
        self.store_calls = 0
        self.fail_next = 0
        self.changed = asyncio.Event()

    async def store_message(self, message: InboundMessage) -> None:
        self.store_calls += 1
        self.changed.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_next:
            self.fail_next -= 1
            raise RuntimeError("database unavailable")
        self.messages.append(message)
        self.changed.set()

    async def store_receipt(self, receipt: InboundReceipt) -> None:
        self.receipts.append(receipt)
        self.changed.set()

    async def wait(self, pred: Callable[[], bool], within: float = 10.0) -> None:
        async def _loop() -> None:
            while not pred():
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(_loop(), within)


def smsc_config(
    name: str, port: int, password: str = "secret", *, pair: bool = False, **session: object
) -> SmscConfig:
    opts: dict[str, object] = {"window": 64, "enquire_link_interval": 30.0, "submit_timeout": 5.0}
    opts.update(session)
    return SmscConfig(
        name=name,
        host="127.0.0.1",
        port=port,
        session=SessionConfig(system_id="esme", password=password, system_type="SMS", **opts),  # type: ignore[arg-type]
        pair=pair,
        reconnect_initial=0.05,
        reconnect_max=0.2,
        connect_timeout=2.0,
    )

"""Spare calls: a worker's calls bound ahead of need, held by the bridge process as descriptions.

Binding a call's legs (:meth:`media.call.MediaCall.prepare`: gathering ICE candidates, opening the trunk's
RTP/RTCP ports) takes about eight turns of a media worker's event loop, and a worker relaying hundreds of
calls first works through every packet that arrived since its last turn, on cores it shares with
everything else: under load the bridge's ``m.call.invite`` → INVITE waited 30-300 ms for a millisecond of
work. So each worker binds a few calls ahead of need and the bridge process keeps their
:class:`~media.call.PreparedCall` descriptions here; an outbound setup takes one and makes both SDPs in
the bridge process (:func:`media.call.outbound_sdp`), sends the INVITE at once and lets the worker adopt
the call meanwhile. A replacement is prepared in the background.

Each spare holds one WebRTC port and two RTP ports in its worker. A spare older than ``max_age`` is
released and prepared anew: host candidates do not age, but a server-reflexive one is only as good as its
NAT mapping, which RFC 4787 REQ-5 keeps for at least two minutes of silence (TURN allocations aioice
refreshes itself).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Awaitable, Callable

from media.call import PreparedCall

__all__ = ["SpareCalls"]

log = logging.getLogger(__name__)
#: After preparing a spare failed (e.g. the port range is exhausted), wait this long before trying again.
RETRY_AFTER = 5.0


class SpareCalls:
    """Up to ``size`` prepared calls of one worker, oldest first: :meth:`take` one or get None.

    ``prepare`` asks the worker for a new one; ``release`` tells it to close one no setup took."""

    def __init__(
        self,
        size: int,
        prepare: Callable[[], Awaitable[PreparedCall]],
        release: Callable[[str], None],
        *,
        max_age: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.size = size
        self.max_age = max_age
        self._clock = clock
        self._prepare = prepare
        self._release = release
        self._ready: collections.deque[tuple[float, PreparedCall]] = collections.deque()
        self._preparing: set[asyncio.Task[None]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._retry_at = 0.0
        self._stopped = False
        #: Set when a spare is ready, a preparation failed or the stock stopped (wakes :meth:`next`).
        self._changed: asyncio.Future[None] | None = None

    def __len__(self) -> int:
        return len(self._ready)

    def start(self) -> None:
        """Prepare the first spares (needs the running loop)."""
        self._refill()

    def take(self) -> PreparedCall | None:
        """A prepared call that is the caller's from now on, or None when none is ready."""
        self._expire(self._clock())
        call = self._ready.popleft()[1] if self._ready else None
        self._refill()
        return call

    async def next(self) -> PreparedCall | None:
        """:meth:`take`, or when none is ready but some are being prepared, the first of them to be
        ready (it started before a setup binding its own would); None when none is on its way."""
        while True:
            call = self.take()
            if call is not None or not self._preparing or self._stopped:
                return call
            if self._changed is None:
                self._changed = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._changed)

    def _wake(self) -> None:
        if self._changed is not None and not self._changed.done():
            self._changed.set_result(None)
        self._changed = None

    def _expire(self, now: float) -> None:
        while self._ready and now - self._ready[0][0] > self.max_age:
            self._release(self._ready.popleft()[1].call_id)

    def _refill(self) -> None:
        if self._stopped or self._clock() < self._retry_at:
            return
        for _ in range(self.size - len(self._ready) - len(self._preparing)):
            task = asyncio.ensure_future(self._prepare_one())
            self._preparing.add(task)
            task.add_done_callback(self._preparing.discard)

    async def _prepare_one(self) -> None:
        try:
            call = await self._prepare()
        except Exception as exc:  # the same failure reaches the next call's own setup, and is reported there
            if not self._stopped:
                log.warning("spare media call not prepared (retrying in %.0f s): %s", RETRY_AFTER, exc)
                self._retry_at = self._clock() + RETRY_AFTER
                asyncio.get_running_loop().call_later(RETRY_AFTER, self._refill)
            self._wake()
            return
        if self._stopped:
            self._release(call.call_id)
            return
        self._ready.append((self._clock(), call))
        self._wake()
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.max_age / 2, self._renew)

    def _renew(self) -> None:
        """Replace the spares past ``max_age``; runs every ``max_age / 2`` while there are any."""
        self._timer = None
        self._expire(self._clock())
        self._refill()
        if self._ready and not self._stopped:
            self._timer = asyncio.get_running_loop().call_later(self.max_age / 2, self._renew)

    def stop(self) -> list[str]:
        """Prepare no more; returns the ids of the spares still held (the caller releases them, unless
        their worker is gone)."""
        self._stopped = True
        if self._timer is not None:
            self._timer.cancel()
        for task in self._preparing:
            task.cancel()
        held = [call.call_id for _, call in self._ready]
        self._ready.clear()
        self._wake()
        return held

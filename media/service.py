"""The bridge-facing media API: :class:`MediaService`, which runs calls in worker processes.

The bridge (``telebridge``) uses only this module. Calls are identified by an opaque ``call_id`` string;
SDP goes in and out as text. A worker process that dies takes only its own calls with it: each gets a
``closed`` event with reason ``"media worker crashed"``, and a fresh worker replaces the dead one.

Typical use, Matrix user calling a phone number::

    media = MediaService(MediaConfig(...))
    await media.start()
    setup = await media.create_outbound(invite_sdp)        # m.call.invite's offer
    # send setup.webrtc_sdp in m.call.answer, setup.trunk_sdp in the SIP INVITE
    await media.set_trunk_answer(setup.call_id, sdp_of_200_ok)

and a phone calling a Matrix user::

    setup = await media.create_inbound(sdp_of_invite)
    # send setup.webrtc_sdp in m.call.invite; setup.trunk_sdp is the SDP for the 200 OK
    await media.set_webrtc_answer(setup.call_id, answer_sdp)

Events (``async for event in media.events()`` or ``media.subscribe(callback)``): :class:`MediaEvent` with
``kind`` ``"digit"`` (``data = {"leg": "trunk"|"webrtc", "digit": "5", "relayed": bool}``: ``relayed`` is
false when the other leg has no telephone-event to carry it) and ``"closed"``
(``data = {"reason": ...}``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import multiprocessing
import os
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from media import fastpath
from media.call import MediaConfig, PreparedCall, outbound_sdp
from media.spares import SpareCalls
from media.worker import WorkerServer, config_to_dict, worker_main
from sdp import SessionDescription, process_answer

__all__ = ["CallSetup", "MediaError", "MediaEvent", "MediaService"]

log = logging.getLogger(__name__)
#: A worker that dies more than this many times within the window stays down (a crash loop would
#: otherwise burn a core and flood the log); calls go to the other workers.
MAX_RESTARTS = 5
RESTART_WINDOW = 60.0


class MediaError(RuntimeError):
    """A media operation failed (bad SDP, no common codec, unknown call, worker gone)."""


@dataclass(frozen=True)
class CallSetup:
    call_id: str
    #: SDP for the Matrix side: our answer (outbound) or our offer (inbound).
    webrtc_sdp: str
    #: SDP for the SIP side: our offer (outbound) or our answer (inbound).
    trunk_sdp: str


@dataclass(frozen=True)
class MediaEvent:
    call_id: str
    kind: str
    data: dict[str, Any]


class _Worker:
    """The parent's end of one worker process."""

    def __init__(self, index: int, service: MediaService) -> None:
        self.index = index
        self.service = service
        self.process: BaseProcess | None = None
        self.conn: Connection | None = None
        self.pending: dict[int, asyncio.Future[Any]] = {}
        self.calls: set[str] = set()
        self.alive = False
        self.deaths: list[float] = []
        self.spares = SpareCalls(0, self._prepare, self.release)

    def start(self) -> None:
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe()
        cpu = None
        if self.service.pin_cpus and hasattr(os, "sched_getaffinity"):
            cpus = sorted(os.sched_getaffinity(0))
            cpu = cpus[self.index % len(cpus)]
        self.process = context.Process(
            target=worker_main,
            args=(child, config_to_dict(self.service.config), cpu, self.service.realtime_priority),
            name=f"telebridge-media-{self.index}",
            daemon=True,
        )
        self.process.start()
        child.close()
        self.conn = parent
        self.alive = True
        asyncio.get_running_loop().add_reader(parent.fileno(), self._readable)
        self.spares = SpareCalls(self.service.config.spare_calls, self._prepare, self.release)
        self.spares.start()

    async def _prepare(self) -> PreparedCall:
        described = await self.request("prepare")
        return PreparedCall(**described)

    def release(self, call_id: str) -> None:
        """Close the prepared call ``call_id`` in the worker (a spare no setup took). A worker that is gone
        took it with it."""
        with contextlib.suppress(MediaError):
            self.submit("release", prepared=call_id).add_done_callback(_outcome_ignored)

    def _readable(self) -> None:
        assert self.conn is not None
        try:
            while self.conn.poll():
                self._dispatch(self.conn.recv())
        except (EOFError, OSError):
            self._died()

    def _dispatch(self, message: dict[str, Any]) -> None:
        if "event" in message:
            if message["event"] == "closed":
                self.calls.discard(message["call_id"])
            self.service._worker_event(message)
            return
        future = self.pending.pop(message["id"], None)
        if future is not None and not future.done():
            if message["ok"]:
                future.set_result(message["result"])
            else:
                future.set_exception(MediaError(message["error"]))

    def _died(self) -> None:
        if not self.alive:
            return
        self.alive = False
        self.service.worker_deaths += 1
        self.spares.stop()  # their ports went with the process
        assert self.conn is not None
        loop = asyncio.get_running_loop()
        loop.remove_reader(self.conn.fileno())
        self.conn.close()
        code = self.process.exitcode if self.process is not None else None
        log.error(
            "media worker %d died (exit code %s); ending its %d calls", self.index, code, len(self.calls)
        )
        for future in self.pending.values():
            if not future.done():
                future.set_exception(MediaError("media worker crashed"))
        self.pending.clear()
        for call_id in sorted(self.calls):
            self.service._owner.pop(call_id, None)
            self.service._publish(MediaEvent(call_id, "closed", {"reason": "media worker crashed"}))
        self.calls.clear()
        now = time.monotonic()
        self.deaths = [t for t in self.deaths if now - t < RESTART_WINDOW] + [now]
        if not self.service.running:
            return
        if len(self.deaths) > MAX_RESTARTS:
            log.error(
                "media worker %d died %d times in %.0f s; not restarting it",
                self.index,
                len(self.deaths),
                RESTART_WINDOW,
            )
            return
        self.start()

    def submit(self, op: str, **args: Any) -> asyncio.Future[Any]:
        """Send a request now; the future gets its result (requests are carried out in the order sent)."""
        if not self.alive or self.conn is None:
            raise MediaError("media worker is not running")
        request_id = next(self.service._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.pending[request_id] = future
        try:
            self.conn.send({"id": request_id, "op": op, **args})
        except OSError as exc:
            self.pending.pop(request_id, None)
            raise MediaError(f"media worker unreachable: {exc}") from exc
        return future

    async def request(self, op: str, **args: Any) -> Any:
        return await self.submit(op, **args)

    async def stop(self) -> None:
        self.spares.stop()  # the worker closes them as it shuts down
        if self.conn is not None and self.alive:
            self.alive = False
            with contextlib.suppress(OSError):
                self.conn.send({"op": "shutdown"})
            asyncio.get_running_loop().remove_reader(self.conn.fileno())
        if self.process is not None:
            for _ in range(50):
                if not self.process.is_alive():
                    break
                await asyncio.sleep(0.05)
            if self.process.is_alive():
                self.process.terminate()
            self.process.join(timeout=1)
        if self.conn is not None:
            self.conn.close()


def _outcome_ignored(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()  # read, so that asyncio does not log it as never retrieved


class MediaService:
    """All calls' media. ``workers=0`` runs calls in the caller's event loop (tests, small installs);
    otherwise that many worker processes (default: one per CPU), optionally pinned one per core and
    optionally under real-time scheduling."""

    def __init__(
        self,
        config: MediaConfig | None = None,
        workers: int | None = None,
        pin_cpus: bool = False,
        realtime_priority: int = 0,
    ) -> None:
        self.config = config or MediaConfig()
        self.worker_count = (os.cpu_count() or 1) if workers is None else workers
        self.pin_cpus = pin_cpus
        #: SCHED_FIFO priority for worker processes (0: normal scheduling); see media.worker.worker_main.
        self.realtime_priority = realtime_priority
        self.running = False
        self._workers: list[_Worker] = []
        self._owner: dict[str, _Worker | None] = {}
        self._ids = itertools.count(1)
        self._subscribers: list[Callable[[MediaEvent], None]] = []
        self._queues: list[asyncio.Queue[MediaEvent]] = []
        self._local: WorkerServer | None = None
        #: Worker processes that died since start (crashed or killed), whether or not they were replaced.
        self.worker_deaths = 0

    @property
    def workers_running(self) -> int:
        """Worker processes up now (the bridge process itself counts as one with ``workers=0``). Fewer
        than ``worker_count`` means one died too often to be restarted (``MAX_RESTARTS``)."""
        if self._local is not None:
            return 1 if self.running else 0
        return sum(1 for worker in self._workers if worker.alive)

    async def start(self) -> None:
        self.running = True
        log.info(
            "media: %s; %s",
            f"{self.worker_count} worker process(es)" if self.worker_count else "in the bridge process",
            fastpath.describe(),
        )
        if self.worker_count == 0:
            self._local = WorkerServer(self.config, self._worker_event)
            return
        for index in range(self.worker_count):
            worker = _Worker(index, self)
            worker.start()
            self._workers.append(worker)

    async def stop(self) -> None:
        self.running = False
        if self._local is not None:
            await self._local.close_all("media service stopped")
        for worker in self._workers:
            await worker.stop()
        self._workers.clear()

    # Events ----------------------------------------------------------------------------------------
    def subscribe(self, callback: Callable[[MediaEvent], None]) -> None:
        self._subscribers.append(callback)

    async def events(self) -> AsyncIterator[MediaEvent]:
        queue: asyncio.Queue[MediaEvent] = asyncio.Queue()
        self._queues.append(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._queues.remove(queue)

    def _publish(self, event: MediaEvent) -> None:
        for callback in self._subscribers:
            try:
                callback(event)
            except Exception:
                log.exception("media event subscriber failed")
        for queue in self._queues:
            queue.put_nowait(event)

    def _worker_event(self, message: dict[str, Any]) -> None:
        """An event from a worker, in its process or this one: published, and a closed call forgotten."""
        event = MediaEvent(message["call_id"], message["event"], message["data"])
        if event.kind == "closed":
            self._owner.pop(event.call_id, None)
        self._publish(event)

    # Requests --------------------------------------------------------------------------------------
    async def _create(self, op: str, sdp: str) -> CallSetup:
        if not self.running:
            raise MediaError("media service is not started")
        if self._local is not None:
            try:
                result = await self._local.handle(op, {"sdp": sdp})
            except Exception as exc:
                raise MediaError(f"{type(exc).__name__}: {exc}") from exc
            self._owner[result["call_id"]] = None
            return CallSetup(**result)
        worker = self._least_loaded()
        if worker is None:
            raise MediaError("no media worker is running")
        prepared = worker.spares.take() if op == "inbound" else None
        if prepared is None:
            result = await worker.request(op, sdp=sdp)
        else:  # the worker makes both SDPs on it in the turn it reads the request
            result = await worker.request(op, sdp=sdp, prepared=prepared.call_id)
        worker.calls.add(result["call_id"])
        self._owner[result["call_id"]] = worker
        return CallSetup(**result)

    def _least_loaded(self) -> _Worker | None:
        return min((w for w in self._workers if w.alive), key=lambda w: len(w.calls), default=None)

    async def _call_op(self, call_id: str, op: str, **args: Any) -> Any:
        if call_id not in self._owner:
            raise MediaError(f"no such call {call_id!r}")
        worker = self._owner[call_id]
        if worker is None:
            assert self._local is not None
            try:
                return await self._local.handle(op, {"call_id": call_id, **args})
            except Exception as exc:
                raise MediaError(f"{type(exc).__name__}: {exc}") from exc
        return await worker.request(op, call_id=call_id, **args)

    async def create_outbound(self, webrtc_offer: str) -> CallSetup:
        """Matrix → phone: answer the browser's offer and make the trunk offer.

        With a spare call of the chosen worker ready (:mod:`media.spares`) both SDPs are made here, in the
        caller's process, and returned at once: the worker adopts the call while the trunk rings. Should
        it fail to, the call gets a ``closed`` event, as when a worker dies. With none ready the setup
        waits for the first one being prepared, or binds its own when none is."""
        worker = self._least_loaded()
        if worker is None:  # in-process, or no worker running: as without spares
            return await self._create("outbound", webrtc_offer)
        prepared = worker.spares.take()
        if prepared is None and worker.spares.size:
            log.info("no spare call ready in media worker %d: waiting for one", worker.index)
            prepared = await worker.spares.next()
        if prepared is None or not worker.alive:
            return await self._create("outbound", webrtc_offer)
        session_ids = (str(secrets.randbits(62)), str(secrets.randbits(62)))
        try:
            sdp = outbound_sdp(self.config, prepared, webrtc_offer, session_ids)
        except Exception as exc:
            worker.release(prepared.call_id)
            raise MediaError(f"{type(exc).__name__}: {exc}") from exc
        setup = CallSetup(prepared.call_id, str(sdp.webrtc_answer), str(sdp.trunk_offer))
        # Sent now, so that it comes before anything else the bridge asks about this call.
        adopted = worker.submit(
            "outbound",
            prepared=prepared.call_id,
            sdp=webrtc_offer,
            session_ids=session_ids,
            expect=(setup.webrtc_sdp, setup.trunk_sdp),
        )
        worker.calls.add(setup.call_id)
        self._owner[setup.call_id] = worker
        adopted.add_done_callback(lambda future: self._adopted(worker, setup.call_id, future))
        return setup

    def _adopted(self, worker: _Worker, call_id: str, future: asyncio.Future[Any]) -> None:
        error = None if future.cancelled() else future.exception()
        if error is None or self._owner.get(call_id) is not worker:
            return  # adopted; or the call is already over (closed, or its worker died)
        log.warning("media call %s: the worker did not take it: %s", call_id, error)
        worker.calls.discard(call_id)
        self._owner.pop(call_id, None)
        self._publish(MediaEvent(call_id, "closed", {"reason": f"media setup failed: {error}"}))

    async def create_inbound(self, trunk_offer: str) -> CallSetup:
        """Phone → Matrix: answer the trunk's offer and make the WebRTC offer (on a spare call when one is
        ready: one round trip to the worker, none of its loop turns spent binding sockets)."""
        return await self._create("inbound", trunk_offer)

    async def set_trunk_answer(self, call_id: str, sdp: str) -> None:
        """The SDP answer from the trunk (200 OK or reliable 183) to our trunk offer or re-offer."""
        await self._call_op(call_id, "set_trunk_answer", sdp=sdp)

    def set_trunk_answer_soon(self, call_id: str, offer: str, sdp: str) -> asyncio.Future[None]:
        """:meth:`set_trunk_answer` without waiting for the worker, for the trunk's answer ``sdp`` to our
        ``offer`` (the setup's ``trunk_sdp``): the answer is checked here (RFC 3264 §5, raising
        :class:`MediaError` as the worker would) and the returned future reports the worker's own outcome.
        The Matrix side can be answered at once; the worker applies the answer in its next turn, long
        before ICE and DTLS, which it also runs, let audio through."""
        try:
            process_answer(SessionDescription.parse(offer), SessionDescription.parse(sdp))
        except Exception as exc:
            raise MediaError(f"{type(exc).__name__}: {exc}") from exc
        worker = self._owner.get(call_id)
        if worker is None:  # in-process, or no such call: as set_trunk_answer does it
            return asyncio.ensure_future(self.set_trunk_answer(call_id, sdp))
        return worker.submit("set_trunk_answer", call_id=call_id, sdp=sdp)

    async def update_trunk_offer(self, call_id: str, sdp: str) -> str:
        """A new offer from the trunk in a re-INVITE/UPDATE (hold, resume, address or codec change);
        returns the SDP answer for the 200 OK."""
        answer: str = await self._call_op(call_id, "update_trunk_offer", sdp=sdp)
        return answer

    async def trunk_reoffer(self, call_id: str, direction: str = "sendrecv") -> str:
        """A new trunk offer for our own re-INVITE (``"sendonly"`` holds the trunk, ``"sendrecv"``
        resumes); its answer goes to :meth:`set_trunk_answer`."""
        offer: str = await self._call_op(call_id, "trunk_reoffer", direction=direction)
        return offer

    async def update_webrtc_offer(self, call_id: str, sdp: str) -> str:
        """A new offer from the browser (``m.call.negotiate``, e.g. hold/resume) on the same ICE session;
        returns the answer. ICE restarts raise :class:`MediaError`."""
        answer: str = await self._call_op(call_id, "update_webrtc_offer", sdp=sdp)
        return answer

    async def set_webrtc_answer(self, call_id: str, sdp: str) -> None:
        """The browser's answer (m.call.answer) to our WebRTC offer."""
        await self._call_op(call_id, "set_webrtc_answer", sdp=sdp)

    async def add_webrtc_candidate(self, call_id: str, candidate: str | None) -> None:
        """A trickled ICE candidate from m.call.candidates (``candidate:…``); None or "" ends them."""
        await self._call_op(call_id, "add_webrtc_candidate", candidate=candidate or None)

    async def play_tone(self, call_id: str, leg: str = "webrtc") -> None:
        """Play the credit-warning tone (:data:`media.tones.WARNING`) towards ``leg``; returns when done."""
        await self._call_op(call_id, "play_tone", leg=leg)

    async def send_dtmf(self, call_id: str, digits: str, leg: str = "trunk", duration_ms: int = 160) -> None:
        """Send digits (0-9 * # A-D) as RFC 4733 events towards ``leg``; returns when they were sent."""
        await self._call_op(call_id, "send_dtmf", digits=digits, leg=leg, duration_ms=duration_ms)

    async def stats(self, call_id: str) -> dict[str, Any]:
        """Counters per leg and RTCP statistics (loss, jitter, RTT) of a call."""
        result: dict[str, Any] = await self._call_op(call_id, "stats")
        return result

    async def close(self, call_id: str, reason: str = "hangup") -> None:
        """End a call's media; a ``closed`` event follows. Unknown or already closed calls are ignored."""
        if call_id in self._owner:
            with contextlib.suppress(MediaError):
                await self._call_op(call_id, "close", reason=reason)

    @property
    def call_count(self) -> int:
        return len(self._owner)

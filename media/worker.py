"""A media worker process: many calls on one core, driven over a small control channel.

Python runs one thread of bytecode per process, so media scales by processes: one worker per core, each
with its own event loop (uvloop when installed) owning many :class:`media.call.MediaCall` objects. The bridge
talks to a worker through a :func:`multiprocessing.Pipe`: requests ``{"id", "op", ...}`` are answered with
``{"id", "ok", "result"|"error"}``, and the worker pushes events ``{"event", "call_id", "data"}`` (digits,
calls ending). Messages are small dicts of strings and numbers — SDP goes as text, media never crosses.

Operations (see :class:`media.service.MediaService` for the meaning of each): ``outbound``, ``inbound``,
``set_trunk_answer``, ``update_trunk_offer``, ``trunk_reoffer``, ``set_webrtc_answer``,
``update_webrtc_offer``, ``add_webrtc_candidate``, ``send_dtmf``, ``play_tone``, ``stats``, ``close``,
``count``, ``crash`` (tests only: ends the process abruptly, as a segfault in a codec would); and
``prepare`` (bind a call's legs ahead of need and describe them) and ``release`` (close a prepared call no
setup took). All but ``prepare``, ``send_dtmf``, ``play_tone``, ``close`` and setups without a prepared
call are answered in the event-loop turn that reads them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from dataclasses import asdict
from multiprocessing.connection import Connection
from typing import Any

from media.call import MediaCall, MediaConfig

__all__ = ["LATER", "WorkerServer", "worker_main"]

log = logging.getLogger(__name__)
#: What :meth:`WorkerServer.answer_now` returns for a request that needs an await.
LATER: Any = object()
#: Operations on an existing call that need no await.
_IMMEDIATE = frozenset(
    {
        "set_trunk_answer",
        "update_trunk_offer",
        "trunk_reoffer",
        "update_webrtc_offer",
        "set_webrtc_answer",
        "add_webrtc_candidate",
        "stats",
    }
)


class WorkerServer:
    """Executes control requests against the calls of this process (also used in-process).

    Requests that need no await are answered by :meth:`answer_now` in the same event-loop turn the request
    is read in; in a worker relaying many calls every turn first works through the packets that arrived
    meanwhile, so each turn a request waits costs milliseconds. Call setup is one of them when it takes a
    call prepared ahead of need (``prepare``, see :mod:`media.spares`)."""

    def __init__(self, config: MediaConfig, emit: Any) -> None:
        self.config = config
        self.emit = emit
        self.calls: dict[str, MediaCall] = {}
        #: Calls bound ahead of need (``prepare``), until a setup takes one or the bridge releases it.
        self.prepared: dict[str, MediaCall] = {}
        self._closing: set[asyncio.Future[None]] = set()

    def _events_for(self, call: MediaCall) -> Any:
        def on_event(kind: str, data: dict[str, Any]) -> None:
            if kind == "closed":
                self.calls.pop(call.call_id, None)
            self.emit({"event": kind, "call_id": call.call_id, "data": data})

        return on_event

    def _register(self, call: MediaCall) -> dict[str, str]:
        call.on_event = self._events_for(call)
        self.calls[call.call_id] = call
        assert call.webrtc_local_sdp is not None and call.trunk_local_sdp is not None
        return {
            "call_id": call.call_id,
            "webrtc_sdp": str(call.webrtc_local_sdp),
            "trunk_sdp": str(call.trunk_local_sdp),
        }

    def _set_up_prepared(self, op: str, args: dict[str, Any]) -> dict[str, str]:
        """``outbound``/``inbound`` on the prepared call ``args["prepared"]``. An outbound setup brings the
        session ids and SDP the bridge already made from the call's :class:`PreparedCall` (see
        :meth:`media.service.MediaService.create_outbound`): ours must come out the same."""
        call = self.prepared.pop(args["prepared"], None)
        if call is None:
            raise KeyError(f"no prepared call {args['prepared']!r}")
        try:
            if op == "outbound":
                call.answer_webrtc_offer(args["sdp"], args.get("session_ids"))
                made = (str(call.webrtc_local_sdp), str(call.trunk_local_sdp))
                if "expect" in args and tuple(args["expect"]) != made:
                    raise RuntimeError("the prepared call's SDP differs from the bridge's")
            else:
                call.answer_trunk_offer(args["sdp"])
        except BaseException:
            self._close_soon(call, "setup failed")
            raise
        return self._register(call)

    def _close_soon(self, call: MediaCall, reason: str) -> None:
        closing = asyncio.ensure_future(call.close(reason))
        self._closing.add(closing)
        closing.add_done_callback(self._closing.discard)

    def answer_now(self, op: str, args: dict[str, Any]) -> Any:
        """The result of ``op`` if it needs no await, else :data:`LATER` (then use :meth:`handle`)."""
        if op in ("outbound", "inbound") and "prepared" in args:
            return self._set_up_prepared(op, args)
        if op == "release":
            call = self.prepared.pop(args["prepared"], None)
            if call is not None:
                self._close_soon(call, "not needed")
            return None
        if op == "count":
            return len(self.calls)
        if op == "crash":
            os._exit(3)
        if op not in _IMMEDIATE:
            return LATER
        call = self._call(args)
        if op == "set_trunk_answer":
            call.set_trunk_remote_sdp(args["sdp"])
        elif op == "update_trunk_offer":
            return call.update_trunk_offer(args["sdp"])
        elif op == "trunk_reoffer":
            return call.trunk_reoffer(args.get("direction", "sendrecv"))
        elif op == "update_webrtc_offer":
            return call.update_webrtc_offer(args["sdp"])
        elif op == "set_webrtc_answer":
            call.set_webrtc_answer(args["sdp"])
        elif op == "add_webrtc_candidate":
            call.add_webrtc_candidate(args.get("candidate"))
        elif op == "stats":
            return call.stats()
        return None

    def _call(self, args: dict[str, Any]) -> MediaCall:
        call = self.calls.get(args.get("call_id", ""))
        if call is None:
            raise KeyError(f"no such call {args.get('call_id')!r}")
        return call

    async def handle(self, op: str, args: dict[str, Any]) -> Any:
        result = self.answer_now(op, args)
        if result is not LATER:
            return result
        if op == "outbound":
            return self._register(await MediaCall.outbound(self.config, args["sdp"]))
        if op == "inbound":
            return self._register(await MediaCall.inbound(self.config, args["sdp"]))
        if op == "prepare":
            call = await MediaCall.prepare(self.config)
            self.prepared[call.call_id] = call
            return asdict(call.describe())
        if op == "send_dtmf":
            call = self._call(args)
            await call.send_dtmf(args["digits"], args.get("leg", "trunk"), args.get("duration_ms", 160))
        elif op == "play_tone":
            await self._call(args).play_tone(args.get("leg", "webrtc"))
        elif op == "close":
            await self._call(args).close(args.get("reason", "closed by bridge"))
        else:
            raise ValueError(f"unknown operation {op!r}")
        return None

    async def close_all(self, reason: str) -> None:
        for call in [*self.prepared.values(), *self.calls.values()]:
            await call.close(reason)
        self.prepared.clear()
        await asyncio.gather(*self._closing, return_exceptions=True)


async def _serve(conn: Connection, config: MediaConfig) -> None:
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    server = WorkerServer(config, conn.send)
    tasks: set[asyncio.Task[None]] = set()

    def reply(message: dict[str, Any], result: Any = None, error: Exception | None = None) -> None:
        if error is None:
            answer = {"id": message["id"], "ok": True, "result": result}
        else:
            answer = {"id": message["id"], "ok": False, "error": f"{type(error).__name__}: {error}"}
        with contextlib.suppress(OSError):
            conn.send(answer)

    async def run(message: dict[str, Any]) -> None:
        try:
            result = await server.handle(message["op"], message)
        except Exception as exc:  # every failure goes back to the caller as a value
            reply(message, error=exc)
        else:
            reply(message, result)

    def serve(message: dict[str, Any]) -> None:
        try:
            result = server.answer_now(message["op"], message)
        except Exception as exc:
            reply(message, error=exc)
            return
        if result is not LATER:
            reply(message, result)
            return
        task = asyncio.ensure_future(run(message))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def readable() -> None:
        # Every request already in the pipe, in this turn: each one left for a later turn would wait
        # behind another turn's worth of packets.
        try:
            while conn.poll():
                message = conn.recv()
                if message.get("op") == "shutdown":
                    if not done.done():
                        done.set_result(None)
                    return
                serve(message)
        except (EOFError, OSError):
            if not done.done():
                done.set_result(None)

    loop.add_reader(conn.fileno(), readable)
    await done
    loop.remove_reader(conn.fileno())
    await server.close_all("media worker shutting down")


def worker_main(
    conn: Connection, config: dict[str, Any], cpu: int | None = None, realtime_priority: int = 0
) -> None:
    """Process entry point: pin to ``cpu`` if given, take real-time priority if asked, run the control
    loop on uvloop if available.

    ``realtime_priority`` (1-99) puts the worker under SCHED_FIFO, as media servers run their relays: a
    packet then waits for no other process on a busy host (``benchmarks/media_bench.py --realtime``
    shows the difference). The kernel's RT throttling still leaves 5 % of each second to the rest, and a
    worker mostly sleeps in epoll anyway.
    """
    logging.basicConfig(level=logging.WARNING)
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, {cpu})
    if realtime_priority > 0:
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(realtime_priority))
        except (OSError, AttributeError) as exc:
            log.warning(
                "media worker: real-time priority %d refused (%s); running at normal priority",
                realtime_priority,
                exc,
            )
    media_config = MediaConfig(**config)
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        runner = asyncio.run
    runner(_serve(conn, media_config))


def config_to_dict(config: MediaConfig) -> dict[str, Any]:
    return asdict(config)

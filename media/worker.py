"""A media worker process: many calls on one core, driven over a small control channel.

Python runs one thread of bytecode per process, so media scales by processes: one worker per core, each
with its own event loop (uvloop when installed) owning many :class:`media.call.MediaCall` objects. The bridge
talks to a worker through a :func:`multiprocessing.Pipe`: requests ``{"id", "op", ...}`` are answered with
``{"id", "ok", "result"|"error"}``, and the worker pushes events ``{"event", "call_id", "data"}`` (digits,
calls ending). Messages are small dicts of strings and numbers — SDP goes as text, media never crosses.

Operations (see :class:`media.service.MediaService` for the meaning of each): ``outbound``, ``inbound``,
``set_trunk_answer``, ``update_trunk_offer``, ``trunk_reoffer``, ``set_webrtc_answer``, ``update_webrtc_offer``, ``add_webrtc_candidate``, ``send_dtmf``, ``stats``,
``close``, ``count``, ``crash`` (tests only: ends the process abruptly, as a segfault in a codec would).
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

__all__ = ["WorkerServer", "worker_main"]

log = logging.getLogger(__name__)


class WorkerServer:
    """Executes control requests against the calls of this process (also used in-process)."""

    def __init__(self, config: MediaConfig, emit: Any) -> None:
        self.config = config
        self.emit = emit
        self.calls: dict[str, MediaCall] = {}

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

    async def handle(self, op: str, args: dict[str, Any]) -> Any:
        if op == "outbound":
            return self._register(await MediaCall.outbound(self.config, args["sdp"]))
        if op == "inbound":
            return self._register(await MediaCall.inbound(self.config, args["sdp"]))
        if op == "count":
            return len(self.calls)
        if op == "crash":
            os._exit(3)
        call = self.calls.get(args.get("call_id", ""))
        if call is None:
            raise KeyError(f"no such call {args.get('call_id')!r}")
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
        elif op == "send_dtmf":
            await call.send_dtmf(args["digits"], args.get("leg", "trunk"), args.get("duration_ms", 160))
        elif op == "play_tone":
            await call.play_tone(args.get("leg", "webrtc"))
        elif op == "stats":
            return call.stats()
        elif op == "close":
            await call.close(args.get("reason", "closed by bridge"))
        else:
            raise ValueError(f"unknown operation {op!r}")
        return None

    async def close_all(self, reason: str) -> None:
        for call in list(self.calls.values()):
            await call.close(reason)


async def _serve(conn: Connection, config: MediaConfig) -> None:
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    server = WorkerServer(config, conn.send)
    tasks: set[asyncio.Task[None]] = set()

    async def run(message: dict[str, Any]) -> None:
        try:
            result = await server.handle(message["op"], message)
            reply = {"id": message["id"], "ok": True, "result": result}
        except Exception as exc:  # every failure goes back to the caller as a value
            reply = {"id": message["id"], "ok": False, "error": f"{type(exc).__name__}: {exc}"}
        with contextlib.suppress(OSError):
            conn.send(reply)

    def readable() -> None:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            if not done.done():
                done.set_result(None)
            return
        if message.get("op") == "shutdown":
            if not done.done():
                done.set_result(None)
            return
        task = asyncio.ensure_future(run(message))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

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

"""The relay in C: which implementation runs, and one pump per event loop.

A passthrough call costs about 19 µs per packet on the Python path (``benchmarks/README.md``), most of it
not our code but the event loop's per-datagram machinery: a readiness callback, a ``bytes`` and an
address tuple built per packet, the address parsed again on ``sendto``. At 500 calls (50 000 packets a
second) that is a whole core, and queues build. ``media/_fastpath.c`` moves the per-packet work of a
passthrough call into one C loop: the legs' sockets sit in an epoll set (a :class:`Pump`) that asyncio
watches as one descriptor; :meth:`Pump.run` drains every ready socket and relays each packet with the same
state objects the Python relay uses (:class:`Rewriter`, :class:`Reception`, :class:`Sending`), so a call can
move between the C path and the Python path (DTMF, hold, a tone, a codec change) without losing its stream
numbering or statistics. Everything the C path does not relay goes up to the Python legs unchanged.

Transcoded calls take the same path: :func:`transcoder` gives the C transcoder (``media/_transcode.c``,
the algorithm of :class:`media.transcoder.Transcoder` over the same libopus), and the pump runs a
transcoded direction's audio packets through it between the checks and the header rewrite. At 100
transcoded calls that cut the relay's CPU per packet from about 90 µs (Python) to 54 µs; half of what is
left is libopus itself.

When the extension is not built (no C compiler where the package was installed) or
``TELEBRIDGE_MEDIA_FASTPATH=0`` is set, the pure-Python classes take its place and calls relay in Python,
as before: slower, never different.
"""

from __future__ import annotations

import asyncio
import ctypes
import importlib
import logging
import os
import weakref
from typing import Any

from media.rewriter import StreamRewriter
from media.rtcp import ReceptionStats, SendingStats

__all__ = [
    "NativeTranscoder",
    "Reception",
    "Rewriter",
    "Sending",
    "available",
    "describe",
    "pump",
    "transcoder",
]

log = logging.getLogger(__name__)

_native: Any = None
if os.environ.get("TELEBRIDGE_MEDIA_FASTPATH", "1") != "0":
    try:
        _native = importlib.import_module("media._fastpath")
    except ImportError as exc:  # pragma: no cover - the extension is built wherever tests run
        log.warning("media._fastpath not built (%s): relaying in Python", exc)

#: Implementations of the relay's per-direction state: C when built (the pump needs them), else Python.
Rewriter: Any = _native.Rewriter if _native is not None else StreamRewriter
Reception: Any = _native.Reception if _native is not None else ReceptionStats
Sending: Any = _native.Sending if _native is not None else SendingStats

#: The C transcoder's type when built (the pump transcodes only with it), else None.
NativeTranscoder: Any = _native.Transcoder if _native is not None else None

_pumps: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()


def available() -> bool:
    return _native is not None


def pump() -> Any | None:
    """This event loop's pump (created and watched on first use), or None without the extension."""
    if _native is None:
        return None
    loop = asyncio.get_running_loop()
    existing = _pumps.get(loop)
    if existing is not None:
        return existing
    created = _native.Pump()
    loop.add_reader(created.fileno(), created.run)
    _pumps[loop] = created
    return created


def transcoder(source: str, target: str, *, bitrate: int, complexity: int) -> Any | None:
    """A C transcoder (``media/_transcode.c``) for one direction, or None when the extension is not built
    or libopus could not be loaded with ctypes (PyAV's fallback has no C interface). The C one takes its
    libopus states from :mod:`media.opus` objects, so both implementations run the same libopus."""
    from media import opus

    lib = opus.libopus
    if _native is None or lib is None:
        return None
    if not _libopus_given:
        _give_libopus(lib)
    src, dst = source.lower(), target.lower()
    decoder = opus.OpusDecoder(8000) if src == "opus" else None
    encoder = opus.OpusEncoder(bitrate, complexity, 8000) if dst == "opus" else None
    return _native.Transcoder(src, dst, decoder, encoder)


_libopus_given = False


def _give_libopus(lib: Any) -> None:
    global _libopus_given
    _native.use_libopus(
        **{
            name: ctypes.cast(getattr(lib, f"opus_{name}"), ctypes.c_void_p).value
            for name in (
                "decode",
                "encode",
                "repacketizer_create",
                "repacketizer_init",
                "repacketizer_cat",
                "repacketizer_out",
                "repacketizer_destroy",
            )
        }
    )
    _libopus_given = True


def decode_calls() -> int:
    """Decodes the C transcoders did (``media.g711.DECODE_CALLS`` adds them to the Python ones)."""
    return int(_native.decode_calls()) if _native is not None else 0


def describe() -> str:
    """What relays and transcodes media in this process, for the start-up log."""
    from media import opus

    relay = "the C pump" if _native is not None else "the Python relay (media._fastpath not in use)"
    if opus.libopus is None:
        return f"{relay}; Opus through PyAV (libopus not found for ctypes)"
    release = ".".join(map(str, opus.version(opus.libopus)))
    transcoder = "C" if _native is not None else "Python"
    return f"{relay}; {transcoder} transcoder on libopus {release}"

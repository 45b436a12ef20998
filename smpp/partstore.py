"""Durable storage of inbound message parts, for SMSCs that send one deliver_sm at a time.

Without it the gateway holds every part's deliver_sm_resp until the whole message is
stored, which is safe but stalls an SMSC whose deliver_sm window is 1: it waits for the
response to part 1 before sending part 2, so the message only comes out, incomplete, at
the reassembly timeout. With a `PartStore` each part is acknowledged as soon as it is
saved, the reassembler is rebuilt from it after a restart, and the parts are dropped
once the whole message is stored.
"""

from __future__ import annotations

from typing import Protocol

from smpp.reassembly import Part, PartKey, part_key


class PartStore(Protocol):
    """Implemented by the bridge on its database; every method durable on return."""

    async def save_part(self, smsc: str, part: Part) -> None:
        """Idempotent per (source, destination, reference, total, seqnum)."""
        ...

    async def load_parts(self) -> list[tuple[str, Part]]: ...

    async def drop_parts(self, key: PartKey) -> None: ...


class MemoryPartStore:
    """In-memory `PartStore` for tests; share one instance across gateways to simulate a restart."""

    def __init__(self) -> None:
        self.parts: dict[tuple[PartKey, int], tuple[str, Part]] = {}

    async def save_part(self, smsc: str, part: Part) -> None:
        self.parts[(part_key(part), part.seqnum)] = (smsc, part)

    async def load_parts(self) -> list[tuple[str, Part]]:
        return list(self.parts.values())

    async def drop_parts(self, key: PartKey) -> None:
        for k in [k for k in self.parts if k[0] == key]:
            del self.parts[k]

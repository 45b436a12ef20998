"""A tiny asyncio SMSC for fault injection, built on our PDU codec (the npm SMSC covers
interoperability; this one does what an SMSC does when things go wrong, on command)."""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass

from smpp import pdu as P
from smpp.pdu import CommandId as C
from smpp.pdu import Status


@dataclass
class Received:
    conn: int
    pdu: P.ShortMessage
    answered: bool


class FakeSmsc:
    def __init__(self, password: str = "secret") -> None:
        self.password = password
        self.port = 0
        self.received: list[Received] = []
        self.binds = 0
        self.response_delay = 0.0
        self.events: list[str] = []  # "unbind", "submit_resp sent" in the order they happened
        self.silent = False
        self.connections = 0
        self.ssl: ssl.SSLContext | None = None
        self.received_responses: list[P.Pdu] = []
        self.close_after: int | None = None  # close every connection when this many submits were received
        self.swallow = 0  # receive this many submits without answering them
        self.reject: list[int] = []  # statuses for the next submits
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._conn_no = 0
        self._next_id = 0
        self.changed = asyncio.Event()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port, ssl=self.ssl)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        """Go down hard: stop listening and drop every connection."""
        if self._server is not None:
            self._server.close()
        for w in list(self._writers):
            w.transport.abort()
        if self._server is not None:
            await self._server.wait_closed()
        self._server = None

    def drop_connections(self) -> None:
        for w in list(self._writers):
            w.transport.abort()

    def _late_write(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        if not writer.is_closing():
            writer.write(data)
            self.events.append("submit_resp sent")

    def accepted(self) -> list[P.ShortMessage]:
        return [r.pdu for r in self.received if r.answered]

    async def wait(self, pred, within: float = 10.0) -> None:  # type: ignore[no-untyped-def]
        async def _loop() -> None:
            while not pred():
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(_loop(), within)

    async def send_raw(self, data: bytes) -> None:
        for w in list(self._writers):
            w.write(data)
            await w.drain()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._conn_no += 1
        self.connections += 1
        conn = self._conn_no
        self._writers.add(writer)
        frames = P.PduReader()
        try:
            while data := await reader.read(65536):
                for raw in frames.feed(data):
                    try:
                        pdu = P.decode(raw)
                    except P.PduError as e:
                        writer.write(P.encode(P.Pdu(C.GENERIC_NACK, e.sequence_number, e.status)))
                        continue
                    if not self._handle(conn, pdu, writer):
                        writer.transport.abort()
                        return
                self.changed.set()
        except (ConnectionError, OSError):
            pass
        finally:
            self._writers.discard(writer)
            self.changed.set()

    def _handle(self, conn: int, pdu: P.Pdu, writer: asyncio.StreamWriter) -> bool:
        cid = pdu.command_id
        seq = pdu.sequence_number
        if self.silent:
            return True  # a half-open link: TCP up, nobody answering
        if isinstance(pdu, P.Bind):
            ok = pdu.password == self.password
            self.binds += ok
            status = Status.ESME_ROK if ok else Status.ESME_RINVPASWD
            writer.write(P.encode(P.BindResp(cid | 0x80000000, seq, status, system_id="fake")))
        elif cid == C.SUBMIT_SM:
            assert isinstance(pdu, P.ShortMessage)
            if self.close_after is not None and len(self.received) + 1 >= self.close_after:
                self.close_after = None
                self.received.append(Received(conn, pdu, False))
                self.drop_connections()
                return False
            if self.swallow:
                self.swallow -= 1
                self.received.append(Received(conn, pdu, False))
                return True
            if self.reject:
                writer.write(P.encode(P.MessageIdResp(C.SUBMIT_SM_RESP, seq, self.reject.pop(0))))
                return True
            self._next_id += 1
            self.received.append(Received(conn, pdu, True))
            resp = P.encode(P.MessageIdResp(C.SUBMIT_SM_RESP, seq, message_id=f"f{self._next_id}"))
            if self.response_delay:
                asyncio.get_running_loop().call_later(self.response_delay, self._late_write, writer, resp)
            else:
                writer.write(resp)
        elif cid == C.ENQUIRE_LINK:
            writer.write(P.encode(P.Pdu(C.ENQUIRE_LINK_RESP, seq)))
        elif cid == C.UNBIND:
            self.events.append("unbind")
            writer.write(P.encode(P.Pdu(C.UNBIND_RESP, seq)))
        elif cid == C.DELIVER_SM_RESP or cid == C.GENERIC_NACK:
            self.received_responses.append(pdu)
        return True

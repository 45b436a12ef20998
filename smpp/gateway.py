"""The SMS service the bridge talks to: outbox draining, routing, inbound reassembly.

`Gateway` owns one `SmppClient` per SMSC account, a `Router`, and a `Reassembler`.

Outbound: `send()` checks the text against the route (segment limit, route exists),
writes it to the bridge's durable `Outbox`, and queues it on its conversation (the
(source, destination) pair). Each conversation has one worker that sends its messages
strictly one after another, so order per conversation survives throttling, failover
and reconnects, while different conversations fill the binds' windows in parallel.
A part is resubmitted until some SMSC accepts it or refuses it for good; a part whose
previous attempt may have reached an SMSC is counted in `stats.possible_duplicates`.

Inbound: parts are reassembled across all binds. The SMPP acknowledgement of every
part is held until the whole message (or, after the reassembly timeout, what arrived of
it) has been stored by the `InboundSink`; receipts are stored the same way. If storing
fails the SMSC gets ESME_RX_T_APPN and redelivers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Protocol

from smpp import encoding, receipt
from smpp import pdu as P
from smpp.client import ConnectionLostError, NotBoundError, SmppClient, SmscConfig, SubmitError
from smpp.outbox import OutboundMessage, Outbox, OutboxState
from smpp.partstore import PartStore
from smpp.pdu import CommandId as C
from smpp.pdu import Status
from smpp.reassembly import (
    Duplicate,
    InboundText,
    Part,
    PartKey,
    Pending,
    Reassembler,
    part_from_pdu,
    part_key,
)
from smpp.receipt import Receipt
from smpp.routing import NoRouteError, Route, Router
from smpp.segment import Concatenation, Segment, TooManySegmentsError, count_segments, split
from smpp.udh import UdhError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """A mobile-originated text, reassembled and decoded."""

    smsc: str
    source: str
    destination: str
    text: str
    parts: int
    missing: tuple[int, ...] = ()  # part numbers that never arrived (text is incomplete)


@dataclass(frozen=True, slots=True)
class InboundReceipt:
    smsc: str
    source: str  # the phone the original message went to
    destination: str  # our number that sent it
    receipt: Receipt


class InboundSink(Protocol):
    """What the bridge does with inbound traffic. Both methods must be durable on return."""

    async def store_message(self, message: InboundMessage) -> None: ...

    async def store_receipt(self, receipt: InboundReceipt) -> None: ...


class _Stopping(Exception):
    """Internal: the gateway is shutting down; leave the message in the outbox as it is."""


@dataclass(slots=True)
class GatewayStats:
    parts_submitted: int = 0
    messages_submitted: int = 0
    messages_failed: int = 0
    possible_duplicates: int = 0
    retries: int = 0
    inbound_messages: int = 0
    inbound_receipts: int = 0
    inbound_duplicates: int = 0


class Gateway:
    def __init__(
        self,
        smscs: Sequence[SmscConfig],
        routes: Sequence[Route],
        outbox: Outbox,
        sink: InboundSink,
        *,
        reassembly_timeout: float = 30.0,
        retry_delay: float = 1.0,
        retry_delay_max: float = 30.0,
        max_temporary_failures: int = 8,
        parts: PartStore | None = None,
    ) -> None:
        self.outbox = outbox
        self.sink = sink
        self.parts = parts
        self.stats = GatewayStats()
        self._bind_changed = asyncio.Event()
        self.clients: dict[str, SmppClient] = {
            c.name: SmppClient(c, self._on_deliver, on_bind_change=self._bind_changed.set) for c in smscs
        }
        self.router = Router(routes, lambda name: name in self.clients and self.clients[name].is_bound)
        self.reassembler = Reassembler(timeout=reassembly_timeout)
        self.retry_delay = retry_delay
        self.retry_delay_max = retry_delay_max
        self.max_temporary_failures = max_temporary_failures
        self._queues: dict[tuple[str, str], deque[OutboundMessage]] = {}
        self._workers: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._references: dict[str, int] = {}
        self._waiters: dict[PartKey, asyncio.Future[int]] = {}
        self._part_smsc: dict[PartKey, str] = {}  # which SMSC a pending message's parts came from
        self._reassembly_wakeup = asyncio.Event()
        self._background: list[asyncio.Task[None]] = []
        self._idle = asyncio.Event()
        self._idle.set()
        self._stopping = False

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start the binds and resume every message the outbox still holds."""
        for c in self.clients.values():
            await c.start()
        if self.parts is not None:
            now = asyncio.get_running_loop().time()
            for smsc, p in await self.parts.load_parts():
                res = self.reassembler.add(p, now)
                if isinstance(res, InboundText):  # crashed between the last part and the message
                    await self._store_durable_parts(smsc, res, None)
                elif isinstance(res, Pending):
                    self._part_smsc[res.key] = smsc
        self._background.append(asyncio.create_task(self._expire_parts()))
        for m in await self.outbox.load_pending():
            self._schedule(m)

    async def stop(self, grace: float = 5.0) -> None:
        """Stop sending, unbind every SMSC. Messages not yet submitted stay in the outbox.

        Parts already handed to a bind get up to *grace* seconds for their response, so
        that a clean shutdown does not turn accepted parts into resends after restart.
        """
        self._stopping = True
        self._bind_changed.set()
        workers = list(self._workers.values())
        if workers:
            await asyncio.wait(workers, timeout=grace)
        for t in list(self._workers.values()) + self._background:
            t.cancel()
        for t in workers + self._background:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._workers.clear()
        self._background.clear()
        await asyncio.gather(*(c.stop() for c in self.clients.values()))

    async def wait_bound(self, within: float | None = None) -> bool:
        """True once every client has a transmitting bind up."""
        results = await asyncio.gather(*(c.wait_bound(within) for c in self.clients.values()))
        return all(results)

    async def wait_idle(self) -> None:
        """Until every queued message is submitted or failed."""
        await self._idle.wait()

    # ------------------------------------------------------------ outbound

    def count_segments(self, destination: str, text: str) -> int:
        """SMS segments *text* costs towards *destination* (for billing and limits)."""
        return count_segments(text, self.router.route_for(destination).segment_policy)

    async def send(self, message: OutboundMessage) -> int:
        """Store *message* in the outbox and queue it. Returns its segment count.

        Raises TooManySegmentsError or NoRouteError before anything is stored or sent.
        """
        n = self.check(message)
        await self.outbox.enqueue(message)
        self._schedule(message)
        return n

    def check(self, message: OutboundMessage) -> int:
        """What `send` checks before storing: the segment count (also set on *message*, to be stored
        with it), or TooManySegmentsError / NoRouteError."""
        policy = self.router.route_for(message.destination).segment_policy
        n = count_segments(message.text, policy)
        if n > policy.max_segments:
            raise TooManySegmentsError(n, policy.max_segments)
        message.segments = n  # a single PDU never writes its count again
        return n

    def queue_stored(self, message: OutboundMessage) -> None:
        """Queue a `check`ed message that the caller stored in the outbox itself (in a database
        transaction with other writes of its own); `send` is `check`, store, `queue_stored`."""
        self._schedule(message)

    def _schedule(self, message: OutboundMessage) -> None:
        key = message.conversation
        q = self._queues.get(key)
        if q is None:
            q = self._queues[key] = deque()
        q.append(message)
        self._idle.clear()
        if key not in self._workers:
            self._workers[key] = asyncio.create_task(self._conversation(key))

    async def _conversation(self, key: tuple[str, str]) -> None:
        q = self._queues[key]
        try:
            failures = 0
            while q and not self._stopping:
                try:
                    await self._send_message(q[0])
                except _Stopping:
                    break
                except Exception:
                    # The outbox (the bridge's database) failed: keep the message at the
                    # head of its conversation and try again; log the first failure in full.
                    failures += 1
                    if failures == 1:
                        log.exception("sending %s failed; retrying", q[0].id)
                    await asyncio.sleep(min(self.retry_delay * failures, self.retry_delay_max))
                    continue
                failures = 0
                q.popleft()
        finally:
            if not q:
                del self._queues[key]
            del self._workers[key]
            if not self._workers:
                self._idle.set()

    def _next_reference(self, destination: str, concat: Concatenation) -> int:
        ref = self._references.get(destination)
        ref = random.randrange(0x10000) if ref is None else ref + 1
        self._references[destination] = ref
        return ref & (0xFF if concat is Concatenation.UDH8 else 0xFFFF)

    async def _send_message(self, m: OutboundMessage) -> None:
        try:
            route = self.router.route_for(m.destination)
        except NoRouteError:  # resumed from the outbox after the routes changed
            await self._fail(m, f"no SMS route to {m.destination}", None)
            return
        policy = route.segment_policy
        fresh = m.reference is None or m.state is OutboxState.PENDING
        if fresh:
            m.reference = self._next_reference(m.destination, policy.concatenation)
        assert m.reference is not None
        try:
            segments = split(m.text, m.reference, policy)
        except ValueError as e:  # TooManySegmentsError after a config change
            await self._fail(m, str(e), None)
            return
        if fresh:
            if policy.concatenation is Concatenation.PAYLOAD:
                m.segments = count_segments(m.text, policy)  # one PDU, billed as several SMS
            else:
                m.segments = len(segments)
            if len(segments) > 1:
                # The reference must be stored before the first part leaves, so that a resume resends
                # the missing parts under it and the handset still joins them. A single PDU carries no
                # reference: it goes from PENDING to SUBMITTED, one commit fewer before its submit.
                await self._durably(partial(self.outbox.mark_submitting, m.id, m.reference, m.segments))
            m.state = OutboxState.SUBMITTING
        for seg in segments:
            if seg.index in m.parts:
                continue
            if self._stopping:
                raise _Stopping
            if not await self._submit_part(m, seg):
                return
        await self._durably(partial(self.outbox.mark_submitted, m.id))
        m.state = OutboxState.SUBMITTED
        self.stats.messages_submitted += 1

    def _pdu(self, m: OutboundMessage, seg: Segment) -> P.ShortMessage:
        source = m.source
        if source.startswith("+"):
            src_ton, src_npi, source = 1, 1, source[1:]
        elif source.isdigit() and len(source) <= 8:
            src_ton, src_npi = 3, 0  # network specific: short code
        elif source.isdigit():
            src_ton, src_npi = 1, 1
        else:
            src_ton, src_npi = 5, 0  # alphanumeric sender id
        dest = m.destination[1:] if m.destination.startswith("+") else m.destination
        return P.ShortMessage(
            C.SUBMIT_SM,
            source_addr_ton=src_ton,
            source_addr_npi=src_npi,
            source_addr=source,
            dest_addr_ton=1,
            dest_addr_npi=1,
            destination_addr=dest,
            esm_class=seg.esm_class,
            registered_delivery=1 if m.registered_delivery else 0,
            data_coding=seg.data_coding,
            short_message=seg.short_message,
            tlvs=dict(seg.tlvs),
        )

    async def _submit_part(self, m: OutboundMessage, seg: Segment) -> bool:
        """Submit one segment until accepted (True) or refused for good (False, marked failed)."""
        delay = self.retry_delay
        temporary_failures = 0
        while True:
            name = self.router.select(m.destination, prefer=m.smsc)
            if name is None:
                if self._stopping:
                    raise _Stopping
                await self._wait_bind_change(delay)
                continue
            client = self.clients[name]
            try:
                res = await client.submit(self._pdu(m, seg))
            except NotBoundError:
                if self._stopping:
                    raise _Stopping from None
                continue
            except ConnectionLostError as e:
                self.stats.retries += 1
                if e.possible_duplicate:
                    self.stats.possible_duplicates += 1
                if self._stopping:
                    raise _Stopping from None
                continue
            except SubmitError as e:
                if e.temporary and temporary_failures < self.max_temporary_failures:
                    temporary_failures += 1
                    self.stats.retries += 1
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self.retry_delay_max)
                    continue
                await self._fail(
                    m, f"SMSC {name} refused part {seg.index}: {P.status_name(e.status)}", e.status
                )
                return False
            if res.possible_duplicate:
                self.stats.possible_duplicates += 1
            m.parts[seg.index] = res.message_id
            if m.smsc is None:
                m.smsc = name
            mid = res.message_id
            await self._durably(partial(self.outbox.mark_part_submitted, m.id, seg.index, name, mid))
            self.stats.parts_submitted += 1
            return True

    async def _fail(self, m: OutboundMessage, reason: str, status: int | None) -> None:
        log.warning("message %s to %s failed: %s", m.id, m.destination, reason)
        m.state = OutboxState.FAILED
        self.stats.messages_failed += 1
        await self._durably(partial(self.outbox.mark_failed, m.id, reason, status))

    async def _durably(self, write: Callable[[], Awaitable[None]]) -> None:
        """Retry an outbox write until it succeeds: the SMSC already acted on what it records,
        so giving up would make the database disagree with the network."""
        failures = 0
        while True:
            try:
                await write()
                return
            except Exception:
                failures += 1
                if failures == 1:
                    log.exception("outbox write failed; retrying")
                if self._stopping:
                    raise _Stopping from None
                await asyncio.sleep(min(self.retry_delay * failures, self.retry_delay_max))

    async def _wait_bind_change(self, delay: float) -> None:
        self._bind_changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._bind_changed.wait(), delay)

    # ------------------------------------------------------------ inbound

    async def _on_deliver(self, client: SmppClient, pdu: P.ShortMessage | P.DataSm) -> int:
        """Called by a client per deliver_sm/data_sm; returns the status to answer with
        only after the message (or receipt) it belongs to is stored."""
        default = client.config.default_alphabet
        alias = client.config.data_coding_aliases.get(pdu.data_coding)
        if alias is not None:
            pdu.data_coding = alias
        if receipt.is_receipt(pdu):
            body = pdu.short_message if isinstance(pdu, P.ShortMessage) else b""
            body = body or pdu.tlvs.get(P.Tag.MESSAGE_PAYLOAD, b"")
            text = encoding.decode(body, pdu.data_coding, default=default)
            try:
                r = receipt.parse(pdu, text)
            except receipt.NotAReceiptError:
                log.warning("%s: receipt without a message id: %r", client.name, text)
                return Status.ESME_ROK  # nothing to match it to; do not make the SMSC retry forever
            await self.sink.store_receipt(
                InboundReceipt(client.name, pdu.source_addr, pdu.destination_addr, r)
            )
            self.stats.inbound_receipts += 1
            return Status.ESME_ROK
        try:
            part = part_from_pdu(pdu, default)
        except UdhError as e:
            log.warning("%s: bad user data header from %s: %s", client.name, pdu.source_addr, e)
            return Status.ESME_RINVESMCLASS
        loop = asyncio.get_running_loop()
        if self.parts is not None and part.reference is not None and part.total > 1:
            return await self._on_part_durable(client.name, part)
        res = self.reassembler.add(part, loop.time())
        if isinstance(res, InboundText):
            return await self._store(client.name, res)
        if isinstance(res, Duplicate):
            self.stats.inbound_duplicates += 1
            if res.completed:
                return Status.ESME_ROK
        fut = self._waiters.get(res.key)
        if fut is None:
            fut = self._waiters[res.key] = loop.create_future()
            self._part_smsc[res.key] = client.name
        if isinstance(res, Pending):
            self._reassembly_wakeup.set()
        return await asyncio.shield(fut)

    async def _on_part_durable(self, smsc: str, part: Part) -> int:
        """With a PartStore: save the part, acknowledge it, store the message when complete."""
        assert self.parts is not None
        key = part_key(part)
        if self.reassembler.is_completed(key):
            self.stats.inbound_duplicates += 1
            return Status.ESME_ROK
        await self.parts.save_part(smsc, part)  # raising → ESME_RX_T_APPN, the SMSC redelivers
        res = self.reassembler.add(part, asyncio.get_running_loop().time())
        if isinstance(res, InboundText):
            return await self._store_durable_parts(smsc, res, part.seqnum)
        if isinstance(res, Duplicate):
            self.stats.inbound_duplicates += 1
        else:
            self._part_smsc.setdefault(key, smsc)
            self._reassembly_wakeup.set()
        return Status.ESME_ROK

    async def _store_durable_parts(self, smsc: str, t: InboundText, last_seqnum: int | None) -> int:
        """Store a message whose parts are in the PartStore, then drop them. If storing fails,
        rebuild the reassembly buffer without the last part, so its redelivery retries."""
        assert self.parts is not None and t.key is not None
        status = await self._store(smsc, t)
        if status == Status.ESME_ROK:
            try:
                await self.parts.drop_parts(t.key)
            except Exception:
                log.exception("dropping stored parts of %s failed", t.key)
            return status
        now = asyncio.get_running_loop().time()
        for _smsc, p in await self.parts.load_parts():
            if part_key(p) == t.key and p.seqnum != last_seqnum:
                self.reassembler.add(p, now)
        return status

    async def _store(self, smsc: str, t: InboundText) -> int:
        msg = InboundMessage(smsc, t.source, t.destination, t.text, t.parts, t.missing)
        try:
            await self.sink.store_message(msg)
        except Exception:
            log.exception("storing inbound message from %s failed", t.source)
            status = Status.ESME_RX_T_APPN
            if t.key is not None:
                self.reassembler.forget(t.key)  # a redelivery must reassemble and store again
        else:
            status = Status.ESME_ROK
            self.stats.inbound_messages += 1
        if t.key is not None:
            self._part_smsc.pop(t.key, None)
            fut = self._waiters.pop(t.key, None)
            if fut is not None and not fut.done():
                fut.set_result(status)
        return status

    async def _expire_parts(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            when = self.reassembler.get_timer()
            self._reassembly_wakeup.clear()
            timeout = None if when is None else max(0.0, when - loop.time())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._reassembly_wakeup.wait(), timeout)
            for t in self.reassembler.expire(loop.time()):
                log.warning("inbound message from %s incomplete, parts %s missing", t.source, t.missing)
                smsc = self._part_smsc.get(t.key, "") if t.key else ""
                if self.parts is not None and t.key is not None:
                    await self._store_durable_parts(smsc, t, None)
                else:
                    await self._store(smsc, t)

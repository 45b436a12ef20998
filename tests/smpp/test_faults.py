"""Fault injection against a fake SMSC we control: nothing lost, order per conversation kept."""

from __future__ import annotations

import asyncio
import struct
from collections import defaultdict
from collections.abc import AsyncIterator

import pytest

from smpp import pdu as P
from smpp.gateway import Gateway
from smpp.outbox import MemoryOutbox, OutboundMessage, OutboxState
from smpp.pdu import CommandId as C
from smpp.pdu import Status
from smpp.routing import Route, Target
from smpp.segment import split
from tests.smpp.fake_smsc import FakeSmsc
from tests.smpp.helpers import RecordingSink, smsc_config


@pytest.fixture
async def fake() -> AsyncIterator[FakeSmsc]:
    f = FakeSmsc()
    await f.start()
    yield f
    await f.stop()


def conversation_texts(pdus: list[P.ShortMessage]) -> dict[str, list[str]]:
    """Texts per destination as the SMSC received them, consecutive repeats (resends) collapsed."""
    out: dict[str, list[str]] = defaultdict(list)
    for p in pdus:
        text = p.short_message.decode("latin-1")
        seq = out[p.destination_addr]
        if not seq or seq[-1] != text:
            seq.append(text)
    return out


def messages(conversations: int, per_conversation: int) -> list[OutboundMessage]:
    return [
        OutboundMessage(f"{c}-{i}", "+4930123", f"+49151000{c:04d}", f"c{c} m{i:03d}")
        for i in range(per_conversation)
        for c in range(conversations)
    ]


def assert_all_delivered_in_order(
    outbox: MemoryOutbox, fake_pdus: list[P.ShortMessage], sent: list[OutboundMessage]
) -> None:
    assert all(m.state is OutboxState.SUBMITTED for m in outbox.messages.values())
    got = conversation_texts(fake_pdus)
    want: dict[str, list[str]] = defaultdict(list)
    for m in sent:
        want[m.destination[1:]].append(m.text)
    assert got == want


async def test_smsc_closing_mid_window_loses_nothing_and_keeps_order(fake: FakeSmsc) -> None:
    outbox = MemoryOutbox()
    gw = Gateway(
        [smsc_config("a", fake.port, window=16)], [Route("", (Target("a"),))], outbox, RecordingSink()
    )
    await gw.start()
    try:
        assert await gw.wait_bound(10)
        fake.close_after = 25
        sent = messages(8, 10)
        for m in sent:
            await gw.send(m)
        await asyncio.wait_for(gw.wait_idle(), 30)
    finally:
        await gw.stop()
    assert fake.binds >= 2  # it reconnected
    # What the SMSC *received* (answered or not) is what a phone could get: all, in order.
    assert_all_delivered_in_order(outbox, [r.pdu for r in fake.received], sent)
    resent = len(fake.received) - len(sent)
    assert resent >= 1
    assert gw.stats.possible_duplicates >= 1
    assert sum(1 for r in fake.received if not r.answered) <= gw.stats.possible_duplicates


async def test_lost_response_is_resubmitted_and_counted_as_possible_duplicate(fake: FakeSmsc) -> None:
    outbox = MemoryOutbox()
    cfg = smsc_config("a", fake.port, submit_timeout=0.3)
    gw = Gateway([cfg], [Route("", (Target("a"),))], outbox, RecordingSink())
    await gw.start()
    try:
        assert await gw.wait_bound(10)
        fake.swallow = 1
        await gw.send(OutboundMessage("x", "+4930123", "+4915100001", "hello"))
        await asyncio.wait_for(gw.wait_idle(), 10)
    finally:
        await gw.stop()
    assert [r.answered for r in fake.received] == [False, True]
    assert gw.stats.possible_duplicates == 1
    assert outbox.messages["x"].state is OutboxState.SUBMITTED


async def test_throttled_and_queue_full_back_off_and_succeed(fake: FakeSmsc) -> None:
    outbox = MemoryOutbox()
    cfg = smsc_config("a", fake.port, throttle_backoff=0.02, throttle_backoff_max=0.1)
    gw = Gateway([cfg], [Route("", (Target("a"),))], outbox, RecordingSink())
    await gw.start()
    try:
        assert await gw.wait_bound(10)
        fake.reject = [Status.ESME_RTHROTTLED, Status.ESME_RMSGQFUL, Status.ESME_RTHROTTLED]
        sent = messages(2, 5)
        for m in sent:
            await gw.send(m)
        await asyncio.wait_for(gw.wait_idle(), 10)
    finally:
        await gw.stop()
    assert_all_delivered_in_order(outbox, fake.accepted(), sent)
    assert gw.stats.possible_duplicates == 0


async def test_permanent_refusal_marks_failed_and_conversation_continues(fake: FakeSmsc) -> None:
    outbox = MemoryOutbox()
    gw = Gateway([smsc_config("a", fake.port)], [Route("", (Target("a"),))], outbox, RecordingSink())
    await gw.start()
    try:
        assert await gw.wait_bound(10)
        fake.reject = [Status.ESME_RINVDSTADR]
        await gw.send(OutboundMessage("bad", "+4930123", "+4915100001", "one"))
        await gw.send(OutboundMessage("good", "+4930123", "+4915100001", "two"))
        await asyncio.wait_for(gw.wait_idle(), 10)
    finally:
        await gw.stop()
    assert outbox.messages["bad"].state is OutboxState.FAILED
    assert "ESME_RINVDSTADR" in (outbox.messages["bad"].error or "")
    assert outbox.messages["good"].state is OutboxState.SUBMITTED


async def test_primary_down_fails_over_to_backup_and_back() -> None:
    primary, backup = FakeSmsc(), FakeSmsc()
    await primary.start()
    await backup.start()
    outbox = MemoryOutbox()
    route = Route("49", (Target("primary", priority=0), Target("backup", priority=1)))
    gw = Gateway(
        [smsc_config("primary", primary.port), smsc_config("backup", backup.port)],
        [route],
        outbox,
        RecordingSink(),
        retry_delay=0.05,
    )
    await gw.start()
    try:
        assert await gw.wait_bound(10)
        first = messages(3, 3)
        for m in first:
            await gw.send(m)
        await asyncio.wait_for(gw.wait_idle(), 10)
        assert len(primary.accepted()) == 9 and backup.accepted() == []
        port = primary.port
        await primary.stop()
        second = [
            OutboundMessage(f"b{i}", "+4930123", "+4915100000001", f"during outage {i}") for i in range(5)
        ]
        for m in second:
            await gw.send(m)
        await asyncio.wait_for(gw.wait_idle(), 10)
        assert [p.short_message for p in backup.accepted()] == [m.text.encode() for m in second]
        primary.port = port
        await primary.start()
        assert await gw.clients["primary"].wait_bound(10)
        await gw.send(OutboundMessage("back", "+4930123", "+4915100000001", "primary again"))
        await asyncio.wait_for(gw.wait_idle(), 10)
        assert primary.accepted()[-1].short_message == b"primary again"
    finally:
        await gw.stop()
        await primary.stop()
        await backup.stop()
    assert all(m.state is OutboxState.SUBMITTED for m in outbox.messages.values())


async def test_restart_with_queued_messages_resumes_from_the_outbox() -> None:
    fake = FakeSmsc()
    await fake.start()
    port = fake.port
    await fake.stop()  # the SMSC is down while the first process runs
    outbox = MemoryOutbox()
    gw = Gateway([smsc_config("a", port)], [Route("", (Target("a"),))], outbox, RecordingSink())
    await gw.start()
    sent = messages(3, 4)
    for m in sent:
        await gw.send(m)
    # A multipart message whose first part was accepted before a crash.
    long_text = "z" * 300
    ref = 0x77
    part_one = split(long_text, ref)[0]
    half = OutboundMessage(
        "half",
        "+4930123",
        "+4915199999",
        long_text,
        state=OutboxState.SUBMITTING,
        reference=ref,
        segments=2,
        parts={1: "old-1"},
        smsc="a",
    )
    await outbox.enqueue(half)
    await gw.stop()  # "killed" with everything queued
    on_disk = outbox.copy()
    assert len(await on_disk.load_pending()) == 13

    fake.port = port
    await fake.start()
    gw2 = Gateway([smsc_config("a", port)], [Route("", (Target("a"),))], on_disk, RecordingSink())
    await gw2.start()
    try:
        await asyncio.wait_for(gw2.wait_idle(), 15)
    finally:
        await gw2.stop()
        await fake.stop()
    texts = [p for p in fake.accepted() if p.destination_addr != "4915199999"]
    assert_all_delivered_in_order(on_disk, texts, sent)
    (resumed,) = [p for p in fake.accepted() if p.destination_addr == "4915199999"]
    assert resumed.short_message[:6] == bytes((5, 0, 3, ref, 2, 2))  # only part 2, same reference
    assert part_one.short_message[:6] == bytes((5, 0, 3, ref, 2, 1))
    assert on_disk.messages["half"].parts[1] == "old-1"


async def test_only_a_multipart_message_stores_its_reference_before_its_first_submit(fake: FakeSmsc) -> None:
    outbox = MemoryOutbox()
    gw = Gateway([smsc_config("a", fake.port)], [Route("", (Target("a"),))], outbox, RecordingSink())
    await gw.start()
    try:
        assert await gw.wait_bound(10)
        await gw.send(OutboundMessage("short", "+4930123", "+4915100001", "one part"))
        await gw.send(OutboundMessage("long", "+4930123", "+4915100002", "y" * 300))
        await asyncio.wait_for(gw.wait_idle(), 10)
    finally:
        await gw.stop()

    def writes(message_id: str) -> list[str]:
        return [what for mid, what in outbox.history if mid == message_id]

    assert writes("short") == ["enqueued", "part 1", "submitted"]
    assert writes("long") == ["enqueued", "submitting", "part 1", "part 2", "submitted"]
    assert (outbox.messages["short"].segments, outbox.messages["long"].segments) == (1, 2)


async def test_malformed_pdu_from_smsc_is_nacked_and_bind_survives(fake: FakeSmsc) -> None:
    sink = RecordingSink()
    gw = Gateway([smsc_config("a", fake.port)], [Route("", (Target("a"),))], MemoryOutbox(), sink)
    await gw.start()
    try:
        assert await gw.wait_bound(10)
        await fake.send_raw(struct.pack(">IIII", 16, 0x0000_0099, 0, 5))
        body = b"\0\0\0" + b"1" * 40  # unterminated source_addr
        await fake.send_raw(struct.pack(">IIII", 16 + len(body), C.DELIVER_SM, 0, 6) + body)
        ok = P.ShortMessage(
            C.DELIVER_SM, 7, source_addr="4915", destination_addr="4930", short_message=b"fine"
        )
        await fake.send_raw(P.encode(ok))
        await sink.wait(lambda: len(sink.messages) == 1)
        await fake.wait(lambda: len(fake.received_responses) == 3)
    finally:
        await gw.stop()
    by_seq = {p.sequence_number: p for p in fake.received_responses}
    assert by_seq[5].command_id == C.GENERIC_NACK and by_seq[5].command_status == Status.ESME_RINVCMDID
    assert by_seq[6].command_id == C.DELIVER_SM_RESP and by_seq[6].command_status == Status.ESME_RINVSRCADR
    assert by_seq[7].command_status == Status.ESME_ROK
    assert fake.binds == 1


async def test_incomplete_inbound_message_is_stored_after_timeout_then_acked(fake: FakeSmsc) -> None:
    sink = RecordingSink()
    gw = Gateway(
        [smsc_config("a", fake.port)],
        [Route("", (Target("a"),))],
        MemoryOutbox(),
        sink,
        reassembly_timeout=0.3,
    )
    await gw.start()
    try:
        assert await gw.wait_bound(10)
        seg = split("q" * 200, 9)[0]
        pdu = P.ShortMessage(
            C.DELIVER_SM,
            11,
            source_addr="4915",
            destination_addr="4930",
            esm_class=0x40,
            short_message=seg.short_message,
        )
        await fake.send_raw(P.encode(pdu))
        await sink.wait(lambda: len(sink.messages) == 1)
        await fake.wait(lambda: len(fake.received_responses) == 1)
    finally:
        await gw.stop()
    (msg,) = sink.messages
    assert msg.text == "q" * 153 and msg.missing == (2,)
    assert fake.received_responses[0].command_status == Status.ESME_ROK


def test_client_runs_on_uvloop() -> None:
    uvloop = pytest.importorskip("uvloop", reason="uvloop is optional (not on Windows)")

    async def scenario() -> tuple[list[P.ShortMessage], MemoryOutbox]:
        fake = FakeSmsc()
        await fake.start()
        outbox = MemoryOutbox()
        gw = Gateway([smsc_config("a", fake.port)], [Route("", (Target("a"),))], outbox, RecordingSink())
        await gw.start()
        try:
            assert await gw.wait_bound(10)
            await gw.send(OutboundMessage("u", "+4930123", "+4915100001", "on uvloop"))
            await asyncio.wait_for(gw.wait_idle(), 10)
        finally:
            await gw.stop()
            await fake.stop()
        return fake.accepted(), outbox

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        accepted, outbox = runner.run(scenario())
    assert [p.short_message for p in accepted] == [b"on uvloop"]
    assert outbox.messages["u"].state is OutboxState.SUBMITTED


class FlakyOutbox(MemoryOutbox):
    """The bridge's database failing for a moment, right after an SMSC accepted a part."""

    def __init__(self) -> None:
        super().__init__()
        self.failures = 2

    async def mark_part_submitted(self, message_id: str, index: int, smsc: str, smsc_message_id: str) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("database restarting")
        await super().mark_part_submitted(message_id, index, smsc, smsc_message_id)


async def test_outbox_write_failure_is_retried_without_resending(fake: FakeSmsc) -> None:
    outbox = FlakyOutbox()
    gw = Gateway(
        [smsc_config("a", fake.port)], [Route("", (Target("a"),))], outbox, RecordingSink(), retry_delay=0.01
    )
    await gw.start()
    try:
        assert await gw.wait_bound(10)
        await gw.send(OutboundMessage("f", "+4930123", "+4915100001", "stored late"))
        await gw.send(OutboundMessage("g", "+4930123", "+4915100001", "next"))
        await asyncio.wait_for(gw.wait_idle(), 10)
    finally:
        await gw.stop()
    assert [p.short_message for p in fake.accepted()] == [b"stored late", b"next"]
    assert outbox.messages["f"].parts == {1: "f1"}
    assert outbox.messages["f"].state is OutboxState.SUBMITTED


async def test_half_open_link_is_detected_by_enquire_link_and_rebound(fake: FakeSmsc) -> None:
    cfg = smsc_config("a", fake.port, enquire_link_interval=0.1, response_timeout=0.2)
    gw = Gateway([cfg], [Route("", (Target("a"),))], MemoryOutbox(), RecordingSink())
    await gw.start()
    try:
        assert await gw.wait_bound(10)
        fake.silent = True
        await fake.wait(lambda: fake.connections >= 2)  # gave up on the silent link, reconnected
        fake.silent = False
        await fake.wait(lambda: fake.connections >= 3 or fake.binds >= 2)
        assert await gw.wait_bound(10)
        await gw.send(OutboundMessage("h", "+4930123", "+4915100001", "after outage"))
        await asyncio.wait_for(gw.wait_idle(), 10)
    finally:
        await gw.stop()
    assert fake.accepted()[-1].short_message == b"after outage"
    assert gw.clients["a"].stats.connection_losses >= 1


async def test_stop_waits_for_outstanding_responses_before_unbinding(fake: FakeSmsc) -> None:
    outbox = MemoryOutbox()
    gw = Gateway([smsc_config("a", fake.port)], [Route("", (Target("a"),))], outbox, RecordingSink())
    await gw.start()
    assert await gw.wait_bound(10)
    fake.response_delay = 0.2
    await gw.send(OutboundMessage("s", "+4930123", "+4915100001", "in flight at shutdown"))
    await fake.wait(lambda: len(fake.received) == 1)
    await gw.stop(grace=10)
    assert fake.events == ["submit_resp sent", "unbind"]
    assert outbox.messages["s"].state is OutboxState.SUBMITTED
    assert gw.stats.possible_duplicates == 0

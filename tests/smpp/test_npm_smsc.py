"""Against an SMSC we did not write: the npm `smpp` package's server (tests/peers/smsc.js)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from smpp.client import SmppClient
from smpp.gateway import Gateway
from smpp.outbox import MemoryOutbox, OutboundMessage, OutboxState
from smpp.partstore import MemoryPartStore
from smpp.receipt import Outcome
from smpp.routing import Route, Target
from smpp.segment import Concatenation, Segment, SegmentPolicy, split
from tests.smpp.conftest import NpmSmsc
from tests.smpp.helpers import RecordingSink, smsc_config


@pytest.fixture
async def gateway(npm_smsc: NpmSmsc) -> AsyncIterator[tuple[Gateway, MemoryOutbox, RecordingSink]]:
    outbox = MemoryOutbox()
    sink = RecordingSink()
    gw = Gateway(
        [smsc_config("npm", npm_smsc.port)],
        [Route("", (Target("npm"),))],
        outbox,
        sink,
        retry_delay=0.05,
    )
    await gw.start()
    assert await gw.wait_bound(10)
    yield gw, outbox, sink
    await gw.stop()


async def test_bind_transceiver_with_credentials(npm_smsc: NpmSmsc, gateway: tuple) -> None:
    (bind,) = npm_smsc.events("bind")
    assert bind == {
        "event": "bind",
        "command": "bind_transceiver",
        "system_id": "esme",
        "system_type": "SMS",
        "ok": True,
    }


async def test_wrong_password_is_refused_and_retried_with_backoff(npm_smsc: NpmSmsc) -> None:
    async def never(_c: SmppClient, _p: object) -> int:
        raise AssertionError

    client = SmppClient(smsc_config("npm", npm_smsc.port, password="wrong"), never)
    await client.start()
    try:
        await npm_smsc.wait_count("bind", 2)
        assert not client.is_bound
        assert all(not b["ok"] for b in npm_smsc.events("bind"))
    finally:
        await client.stop()
    assert client.stats.bind_failures >= 1


async def test_gsm7_with_euro_and_brackets(npm_smsc: NpmSmsc, gateway: tuple) -> None:
    gw, outbox, _ = gateway
    text = "Price: 5€ [ok] {yes} ~^|\\"
    assert await gw.send(OutboundMessage("m1", "+4930123", "+4915112345678", text)) == 1
    (sub,) = await npm_smsc.wait_count("submit", 1)
    assert sub["data_coding"] == 0
    assert sub["message"] == text  # the npm library's own GSM 03.38 decoder agrees
    assert sub["destination_addr"] == "4915112345678"
    assert sub["registered_delivery"] == 1
    await gw.wait_idle()
    assert outbox.messages["m1"].state is OutboxState.SUBMITTED
    assert outbox.messages["m1"].parts == {1: sub["message_id"]}


async def test_emoji_text_goes_as_three_ucs2_parts_with_consistent_udh(
    npm_smsc: NpmSmsc, gateway: tuple
) -> None:
    gw, outbox, _ = gateway
    text = "😀" * 99  # 396 octets of UTF-16
    assert await gw.send(OutboundMessage("e", "+4930123", "+4915112345678", text)) == 3
    subs = await npm_smsc.wait_count("submit", 3)
    assert all(s["data_coding"] == 8 and s["esm_class"] & 0x40 for s in subs)
    udhs = [s["udh"][0] for s in subs]
    refs = {u[4:6] for u in udhs}
    assert len(refs) == 1  # one reference for all parts
    assert sorted(u[6:] for u in udhs) == ["0301", "0302", "0303"]
    by_seq = sorted(subs, key=lambda s: s["udh"][0][-2:])
    assert "".join(s["message"] for s in by_seq) == text
    await gw.wait_idle()
    assert len(outbox.messages["e"].parts) == 3


async def test_sar_route_sends_sar_tlvs(npm_smsc: NpmSmsc) -> None:
    outbox, sink = MemoryOutbox(), RecordingSink()
    policy = SegmentPolicy(concatenation=Concatenation.SAR)
    gw = Gateway([smsc_config("npm", npm_smsc.port)], [Route("", (Target("npm"),), policy)], outbox, sink)
    await gw.start()
    try:
        assert await gw.wait_bound(10)
        await gw.send(OutboundMessage("s", "+4930123", "+4915112345678", "x" * 200))
        subs = await npm_smsc.wait_count("submit", 2)
        assert {(s["sar_total_segments"], s["sar_segment_seqnum"]) for s in subs} == {(2, 1), (2, 2)}
        assert len({s["sar_msg_ref_num"] for s in subs}) == 1
        assert "".join(s["message"] for s in sorted(subs, key=lambda s: s["sar_segment_seqnum"])) == "x" * 200
    finally:
        await gw.stop()


async def test_mo_parts_out_of_order_are_acked_only_after_store(npm_smsc: NpmSmsc, gateway: tuple) -> None:
    _, _, sink = gateway
    sink.gate = asyncio.Event()
    text = "Grüße 😀 " * 20
    segs = split(text, 0x42)
    assert len(segs) == 3
    for i in (2, 0, 1):
        s = segs[i]
        await npm_smsc.command(
            cmd="deliver",
            id=i,
            source_addr="4915112345678",
            destination_addr="4930123",
            data_coding=s.data_coding,
            esm_class=s.esm_class,
            short_message_hex=s.short_message.hex(),
        )
    await sink.wait(lambda: sink.store_calls == 1)
    assert npm_smsc.events("deliver_resp") == []  # stored? not yet: no part acknowledged
    sink.gate.set()
    resps = await npm_smsc.wait_count("deliver_resp", 3)
    assert all(r["command_status"] == 0 for r in resps)
    (msg,) = sink.messages
    assert (msg.text, msg.source, msg.destination, msg.parts, msg.missing) == (
        text,
        "4915112345678",
        "4930123",
        3,
        (),
    )


async def test_mo_store_failure_is_answered_with_temporary_error(npm_smsc: NpmSmsc, gateway: tuple) -> None:
    _, _, sink = gateway
    sink.fail_next = 1
    await npm_smsc.command(
        cmd="deliver", id="a", source_addr="4915", destination_addr="4930", short_message_hex=b"hi".hex()
    )
    (resp,) = await npm_smsc.wait_count("deliver_resp", 1)
    assert resp["command_status"] == 0x64  # ESME_RX_T_APPN: the SMSC will redeliver
    await npm_smsc.command(
        cmd="deliver", id="b", source_addr="4915", destination_addr="4930", short_message_hex=b"hi".hex()
    )
    resps = await npm_smsc.wait_count("deliver_resp", 2)
    assert resps[1]["command_status"] == 0
    assert [m.text for m in sink.messages] == ["hi"]


async def test_delivery_receipts_delivered_and_failed(npm_smsc: NpmSmsc, gateway: tuple) -> None:
    gw, outbox, sink = gateway
    await gw.send(OutboundMessage("d1", "+4930123", "+4915112345678", "one"))
    await gw.send(OutboundMessage("d2", "+4930123", "+4915112345679", "two"))
    await gw.wait_idle()
    mid1 = outbox.messages["d1"].parts[1]
    mid2 = outbox.messages["d2"].parts[1]
    await npm_smsc.command(
        cmd="dlr",
        id=1,
        message_id=mid1,
        stat="DELIVRD",
        source_addr="4915112345678",
        destination_addr="4930123",
    )
    await npm_smsc.command(
        cmd="dlr",
        id=2,
        message_id=mid2,
        stat="UNDELIV",
        err="034",
        message_state=5,
        source_addr="4915112345679",
        destination_addr="4930123",
    )
    await sink.wait(lambda: len(sink.receipts) == 2)
    got = {r.receipt.message_id: r.receipt for r in sink.receipts}
    assert got[mid1].outcome is Outcome.DELIVERED
    assert got[mid2].outcome is Outcome.FAILED and "034" in got[mid2].reason
    assert all(r["command_status"] == 0 for r in await npm_smsc.wait_count("deliver_resp", 2))


async def test_throttled_answers_are_retried_until_accepted(npm_smsc: NpmSmsc) -> None:
    outbox, sink = MemoryOutbox(), RecordingSink()
    cfg = smsc_config("npm", npm_smsc.port, throttle_backoff=0.05, throttle_backoff_max=0.2)
    gw = Gateway([cfg], [Route("", (Target("npm"),))], outbox, sink)
    await gw.start()
    try:
        assert await gw.wait_bound(10)
        await npm_smsc.command(cmd="reject_submits", status=0x58, count=3)
        await npm_smsc.wait_count("ok", 1)
        for i in range(3):
            await gw.send(OutboundMessage(f"t{i}", "+4930123", "+4915112345678", f"msg {i}"))
        await asyncio.wait_for(gw.wait_idle(), 10)
        subs = npm_smsc.events("submit")
        assert [s["message"] for s in subs] == ["msg 0", "msg 1", "msg 2"]  # order kept
        assert len(npm_smsc.events("submit_rejected")) == 3
        assert gw.clients["npm"]._tx is not None and gw.clients["npm"]._tx.session.stats.throttled == 3
    finally:
        await gw.stop()


async def test_stop_unbinds(npm_smsc: NpmSmsc) -> None:
    gw = Gateway(
        [smsc_config("npm", npm_smsc.port)], [Route("", (Target("npm"),))], MemoryOutbox(), RecordingSink()
    )
    await gw.start()
    assert await gw.wait_bound(10)
    await gw.stop()
    await npm_smsc.wait_count("unbind", 1)


async def test_transmitter_receiver_pair(npm_smsc: NpmSmsc) -> None:
    sink = RecordingSink()
    gw = Gateway(
        [smsc_config("npm", npm_smsc.port, pair=True)], [Route("", (Target("npm"),))], MemoryOutbox(), sink
    )
    await gw.start()
    try:
        assert await gw.wait_bound(10)
        await npm_smsc.wait_count("bind", 2)
        assert {b["command"] for b in npm_smsc.events("bind")} == {"bind_transmitter", "bind_receiver"}
        await gw.send(OutboundMessage("p", "+4930123", "+4915112345678", "via tx"))
        await npm_smsc.wait_count("submit", 1)
        await npm_smsc.command(
            cmd="deliver",
            id="x",
            source_addr="4915",
            destination_addr="4930",
            short_message_hex=b"via rx".hex(),
        )
        await sink.wait(lambda: len(sink.messages) == 1)
        assert sink.messages[0].text == "via rx"
    finally:
        await gw.stop()


async def test_enquire_link_keeps_an_idle_bind_alive(npm_smsc: NpmSmsc) -> None:
    gw = Gateway(
        [smsc_config("npm", npm_smsc.port, enquire_link_interval=0.05)],
        [Route("", (Target("npm"),))],
        MemoryOutbox(),
        RecordingSink(),
    )
    await gw.start()
    try:
        assert await gw.wait_bound(10)
        await npm_smsc.wait_count("enquire_link", 3)
        assert gw.clients["npm"].is_bound
        assert len(npm_smsc.events("bind")) == 1
    finally:
        await gw.stop()


async def _deliver_part(npm_smsc: NpmSmsc, seg: Segment, ident: str) -> None:
    await npm_smsc.command(
        cmd="deliver",
        id=ident,
        source_addr="4915112345678",
        destination_addr="4930123",
        data_coding=seg.data_coding,
        esm_class=seg.esm_class,
        short_message_hex=seg.short_message.hex(),
    )


async def _wait_resp(npm_smsc: NpmSmsc, ident: str) -> int:
    await npm_smsc.wait_for(
        lambda recs: any(r.get("id") == ident for r in recs if r["event"] == "deliver_resp")
    )
    (r,) = [r for r in npm_smsc.events("deliver_resp") if r.get("id") == ident]
    return int(r["command_status"])


async def test_part_store_lets_a_window_one_smsc_send_parts_one_by_one(npm_smsc: NpmSmsc) -> None:
    sink, parts = RecordingSink(), MemoryPartStore()
    gw = Gateway(
        [smsc_config("npm", npm_smsc.port)], [Route("", (Target("npm"),))], MemoryOutbox(), sink, parts=parts
    )
    await gw.start()
    try:
        assert await gw.wait_bound(10)
        text = "Grüße 😀 " * 20
        segs = split(text, 0x99)
        for i, seg in enumerate(segs):
            # Like an SMSC with a deliver_sm window of 1: the next part only after the response.
            await _deliver_part(npm_smsc, seg, f"p{i}")
            assert await _wait_resp(npm_smsc, f"p{i}") == 0
        await sink.wait(lambda: len(sink.messages) == 1)
    finally:
        await gw.stop()
    assert sink.messages[0].text == text and sink.messages[0].missing == ()
    assert parts.parts == {}  # dropped once the message was stored


async def test_acknowledged_parts_survive_a_restart(npm_smsc: NpmSmsc) -> None:
    parts = MemoryPartStore()
    segs = split("x" * 400, 0x11)
    assert len(segs) == 3
    sink1 = RecordingSink()
    gw1 = Gateway(
        [smsc_config("npm", npm_smsc.port)], [Route("", (Target("npm"),))], MemoryOutbox(), sink1, parts=parts
    )
    await gw1.start()
    assert await gw1.wait_bound(10)
    await _deliver_part(npm_smsc, segs[0], "a")
    await _deliver_part(npm_smsc, segs[2], "c")
    assert await _wait_resp(npm_smsc, "a") == 0
    assert await _wait_resp(npm_smsc, "c") == 0
    await gw1.stop()
    assert sink1.messages == [] and len(parts.parts) == 2

    sink2 = RecordingSink()
    gw2 = Gateway(
        [smsc_config("npm", npm_smsc.port)], [Route("", (Target("npm"),))], MemoryOutbox(), sink2, parts=parts
    )
    await gw2.start()
    try:
        assert await gw2.wait_bound(10)
        await _deliver_part(npm_smsc, segs[1], "b")
        assert await _wait_resp(npm_smsc, "b") == 0
        await sink2.wait(lambda: len(sink2.messages) == 1)
    finally:
        await gw2.stop()
    assert sink2.messages[0].text == "x" * 400


async def test_part_store_message_store_failure_makes_last_part_redelivered(npm_smsc: NpmSmsc) -> None:
    sink, parts = RecordingSink(), MemoryPartStore()
    gw = Gateway(
        [smsc_config("npm", npm_smsc.port)], [Route("", (Target("npm"),))], MemoryOutbox(), sink, parts=parts
    )
    await gw.start()
    try:
        assert await gw.wait_bound(10)
        segs = split("y" * 200, 0x12)
        await _deliver_part(npm_smsc, segs[0], "1")
        assert await _wait_resp(npm_smsc, "1") == 0
        sink.fail_next = 1
        await _deliver_part(npm_smsc, segs[1], "2")
        assert await _wait_resp(npm_smsc, "2") == 0x64  # ESME_RX_T_APPN
        await _deliver_part(npm_smsc, segs[1], "2-again")  # the SMSC's redelivery
        assert await _wait_resp(npm_smsc, "2-again") == 0
    finally:
        await gw.stop()
    assert [m.text for m in sink.messages] == ["y" * 200]
    assert parts.parts == {}


@pytest.mark.parametrize("text", ["Hi € [x] {y} ~ \\ ^ |", "Ünïcödé 😀 ж"])
async def test_mo_encoded_by_the_npm_library_decodes(npm_smsc: NpmSmsc, text: str) -> None:
    # node-smpp sends GSM 03.38 septets labelled data_coding 1 (IA5); the alias reads them as 0.
    sink = RecordingSink()
    cfg = replace(smsc_config("npm", npm_smsc.port), data_coding_aliases={1: 0})
    gw = Gateway([cfg], [Route("", (Target("npm"),))], MemoryOutbox(), sink)
    await gw.start()
    try:
        assert await gw.wait_bound(10)
        await npm_smsc.command(cmd="deliver", id="t", source_addr="4915", destination_addr="4930", text=text)
        assert await _wait_resp(npm_smsc, "t") == 0
    finally:
        await gw.stop()
    assert [m.text for m in sink.messages] == [text]

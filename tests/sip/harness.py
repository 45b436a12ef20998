"""A fake network and clock joining sans-I/O user agent cores, for deterministic call-flow tests."""

from __future__ import annotations

from collections.abc import Callable

from sip.message import parse_message
from sip.useragent import Event, Target, UserAgentConfig, UserAgentCore


class FakeNet:
    """Delivers every output of every core to the core listening at the target address, in order.

    ``drop`` decides per (data, source, destination) whether a packet is lost; ``sent`` records all
    traffic as (source port, destination port, first line).
    """

    def __init__(self) -> None:
        self.now = 0.0
        self.nodes: dict[tuple[str, int], UserAgentCore] = {}
        self.events: dict[int, list[Event]] = {}
        self.drop: Callable[[bytes, int, int], bool] | None = None
        self.sent: list[tuple[int, int, str]] = []

    def add(self, port: int, **kw: object) -> UserAgentCore:
        core = UserAgentCore(UserAgentConfig("127.0.0.1", port, **kw))  # type: ignore[arg-type]
        self.nodes[("127.0.0.1", port)] = core
        self.events[port] = []
        return core

    def flush(self) -> None:
        for _ in range(10000):
            moved = False
            for (host, port), core in list(self.nodes.items()):
                for data, target in core.take_output():
                    moved = True
                    dport = target.port or 5060
                    self.sent.append((port, dport, data.split(b"\r\n", 1)[0].decode()))
                    if self.drop is not None and self.drop(data, port, dport):
                        continue
                    dest = self.nodes.get((target.host, dport))
                    if dest is not None:
                        dest.receive(data, Target(target.transport, host, port), self.now)
                ev = core.next_event()
                while ev is not None:
                    self.events[port].append(ev)
                    ev = core.next_event()
            if not moved:
                return
        raise AssertionError("message storm")

    def advance(self, until: float) -> None:
        for _ in range(100000):
            self.flush()
            due = [(t, c) for c in self.nodes.values() if (t := c.get_timer()) is not None and t <= until]
            if not due:
                self.now = until
                self.flush()
                return
            at, core = min(due, key=lambda x: x[0])
            self.now = max(self.now, at)
            core.handle_timer(self.now)
        raise AssertionError("timer storm")

    def take(self, port: int) -> list[Event]:
        ev = self.events[port]
        self.events[port] = []
        return ev

    def requests(self, method: str, to_port: int | None = None) -> list[str]:
        return [
            line
            for _, d, line in self.sent
            if line.startswith(method + " ") and (to_port is None or d == to_port)
        ]


def first_line(data: bytes) -> str:
    return data.split(b"\r\n", 1)[0].decode()


def parsed(data: bytes):  # type: ignore[no-untyped-def]
    return parse_message(data)

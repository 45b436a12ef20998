"""Rating: what a text or a call to a destination costs, from the operator's rate table (pure functions).

Amounts are integers in minor units. Destinations are matched on the digits of their E.164 form, the
longest prefix winning; an empty prefix is the default rate. Calls are billed per increment as carriers
do ("60/60": the first minute whole, then whole minutes; "1/1": per second), plus a connection fee once
answered.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Rate:
    prefix: str
    sms: int
    call_minute: int
    connection_fee: int
    first_increment: int
    next_increment: int

    def sms_cost(self, segments: int) -> int:
        return self.sms * segments

    def billed_seconds(self, seconds: float) -> int:
        """Seconds charged for a call that lasted ``seconds`` (0 if it never connected)."""
        if seconds <= 0:
            return 0
        if seconds <= self.first_increment:
            return self.first_increment
        rest = seconds - self.first_increment
        steps = -(-int(rest * 1000) // (self.next_increment * 1000))  # ceil without floats drifting
        return self.first_increment + steps * self.next_increment

    def call_cost(self, seconds: float) -> int:
        billed = self.billed_seconds(seconds)
        if billed == 0:
            return 0
        return self.connection_fee + -(-billed * self.call_minute // 60)

    def affordable_seconds(self, budget: int) -> int:
        """The longest call ``budget`` pays for, in whole billing increments (0: not even the first)."""
        if self.call_minute == 0:
            return 24 * 3600  # free: bounded only by a day, so a forgotten call ends
        if self.call_cost(self.first_increment) > budget:
            return 0
        seconds = self.first_increment
        while self.call_cost(seconds + self.next_increment) <= budget and seconds < 24 * 3600:
            seconds += self.next_increment
        return seconds


class NoRate(LookupError):
    """No rate covers the destination and there is no default: it is refused."""


class RateTable:
    def __init__(self, rates: Iterable[Rate]) -> None:
        self._rates = sorted(rates, key=lambda r: len(r.prefix), reverse=True)

    @classmethod
    def from_config(cls, entries: Sequence[Mapping[str, Any]]) -> RateTable:
        return cls(
            Rate(
                prefix=str(e.get("prefix", "")),
                sms=int(e.get("sms", 0)),
                call_minute=int(e.get("call_minute", 0)),
                connection_fee=int(e.get("connection_fee", 0)),
                first_increment=int(e.get("increments", [60, 60])[0]),
                next_increment=int(e.get("increments", [60, 60])[1]),
            )
            for e in entries
        )

    def rate_for(self, e164: str) -> Rate:
        digits = "".join(c for c in e164 if c.isdigit())
        for rate in self._rates:
            if digits.startswith(rate.prefix):
                return rate
        raise NoRate(f"no rate for +{digits}")


def denied(e164: str, deny: Iterable[str], allow: Sequence[str] = ()) -> bool:
    """Blocked by a deny prefix, or outside the allow list when there is one."""
    digits = "".join(c for c in e164 if c.isdigit())
    if any(digits.startswith(p) for p in deny):
        return True
    return bool(allow) and not any(digits.startswith(p) for p in allow)

"""Choosing an SMSC bind for a destination: longest prefix, priority tiers, weights.

Routes are keyed by E.164 digit prefixes ("" is the default route). For a destination
the longest matching prefix wins; inside a route, targets of the lowest priority value
that are up share the traffic by weight (smooth weighted round-robin, as nginx does it:
deterministic, and no target gets a burst); higher priority values are the failover
tiers. If no target of the best route is up, shorter prefixes are tried, so a specific
route falls back to the default one. Sans-I/O: whether a bind is up is asked of a
callback, nothing here touches a socket.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field

from smpp.segment import SegmentPolicy


@dataclass(frozen=True, slots=True)
class Target:
    smsc: str
    weight: int = 1
    priority: int = 0  # 0 first; 1 only when every priority-0 target is down; …


@dataclass(frozen=True, slots=True)
class Route:
    prefix: str
    targets: tuple[Target, ...]
    segment_policy: SegmentPolicy = field(default_factory=SegmentPolicy)


class NoRouteError(LookupError):
    """No route matches the destination at all (a configuration matter, not an outage)."""


def normalise(destination: str) -> str:
    """'+49 151-123' → '49151123': routes match on digits only."""
    if destination.isdigit():
        return destination  # the common case, without a per-character loop
    if destination[1:].isdigit() and destination[:1] == "+":
        return destination[1:]
    return "".join(c for c in destination if c.isdigit())


class Router:
    def __init__(self, routes: Sequence[Route], is_up: Callable[[str], bool]) -> None:
        self._routes = sorted(routes, key=lambda r: len(r.prefix), reverse=True)
        self._is_up = is_up
        self._current: dict[tuple[str, str], int] = {}

    def route_for(self, destination: str) -> Route:
        """The most specific route for a destination (up or not); its policy cuts the text."""
        digits = normalise(destination)
        for r in self._routes:
            if digits.startswith(r.prefix):
                return r
        raise NoRouteError(destination)

    def select(
        self, destination: str, *, prefer: str | None = None, exclude: Collection[str] = ()
    ) -> str | None:
        """Name of the SMSC to use now, or None when every candidate bind is down.

        *prefer*: keep using this SMSC if it is up and serves the route (the parts of one
        message should travel together).
        """
        digits = normalise(destination)
        matched = False
        for r in self._routes:
            if not digits.startswith(r.prefix):
                continue
            matched = True
            up = [t for t in r.targets if t.smsc not in exclude and self._is_up(t.smsc)]
            if not up:
                continue
            if prefer is not None and any(t.smsc == prefer for t in up):
                return prefer
            tier = min(t.priority for t in up)
            return self._pick(r, [t for t in up if t.priority == tier])
        if not matched:
            raise NoRouteError(destination)
        return None

    def _pick(self, route: Route, targets: list[Target]) -> str:
        if len(targets) == 1:
            return targets[0].smsc
        total = 0
        best: Target | None = None
        best_w = 0
        cur = self._current
        for t in targets:
            k = (route.prefix, t.smsc)
            w = cur.get(k, 0) + t.weight
            cur[k] = w
            total += t.weight
            if best is None or w > best_w:
                best, best_w = t, w
        assert best is not None
        cur[(route.prefix, best.smsc)] -= total
        return best.smsc

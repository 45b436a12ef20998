"""Router: longest prefix, priority tiers (failover), weighted sharing."""

from __future__ import annotations

from collections import Counter

import pytest

from smpp.routing import NoRouteError, Route, Router, Target


def make(up: set[str]) -> Router:
    routes = [
        Route("", (Target("default"),)),
        Route("49", (Target("de-a", weight=3), Target("de-b", weight=1), Target("de-backup", priority=1))),
        Route("49151", (Target("tmobile"),)),
    ]
    return Router(routes, lambda name: name in up)


ALL = {"default", "de-a", "de-b", "de-backup", "tmobile"}


def test_longest_prefix_wins() -> None:
    r = make(ALL)
    assert r.select("+49 151 1234567") == "tmobile"
    assert r.select("+4930123") in {"de-a", "de-b"}
    assert r.select("+15551234") == "default"


def test_weights_share_traffic_smoothly() -> None:
    r = make(ALL)
    picks = [r.select("4930123") for _ in range(8)]
    assert Counter(picks) == {"de-a": 6, "de-b": 2}
    assert picks[:4].count("de-b") == 1  # spread out, not a burst


def test_failover_to_next_priority_tier_then_to_shorter_prefix() -> None:
    assert make(ALL - {"de-a", "de-b"}).select("4930123") == "de-backup"
    assert make(ALL - {"tmobile"}).select("491511") in {"de-a", "de-b"}
    assert make({"default"}).select("491511") == "default"
    assert make(set()).select("491511") is None


def test_prefer_keeps_parts_on_one_smsc_while_it_is_up() -> None:
    r = make(ALL)
    assert {r.select("4930", prefer="de-b") for _ in range(5)} == {"de-b"}
    assert make(ALL - {"de-b"}).select("4930", prefer="de-b") == "de-a"


def test_no_matching_route_is_a_named_error() -> None:
    r = Router([Route("44", (Target("uk"),))], lambda _n: True)
    with pytest.raises(NoRouteError):
        r.select("4930")
    with pytest.raises(NoRouteError):
        r.route_for("4930")

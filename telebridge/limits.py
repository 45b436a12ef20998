"""Fraud guards: how often one Matrix user may text or dial (telephony's costliest failure is a hijacked
account pumping premium or international traffic). Sliding windows in memory, sans-I/O: fed the time."""

from __future__ import annotations

from collections import deque


class SlidingWindow:
    """At most ``limit`` events per ``window`` seconds per key; ``limit`` 0 means no limit."""

    def __init__(self, limit: int, window: float = 60.0) -> None:
        self.limit = limit
        self.window = window
        self._events: dict[str, deque[float]] = {}

    def allow(self, key: str, now: float, count: int = 1) -> bool:
        """Count ``count`` events for ``key`` at ``now`` if they all fit; False (nothing counted) if not."""
        if self.limit <= 0:
            return True
        events = self._events.setdefault(key, deque())
        while events and events[0] <= now - self.window:
            events.popleft()
        if len(events) + count > self.limit:
            return False
        events.extend([now] * count)
        return True

    def retry_after(self, key: str, now: float) -> float:
        """Seconds until ``key`` may act again."""
        events = self._events.get(key)
        if not events or len(events) < self.limit:
            return 0.0
        return max(0.0, events[0] + self.window - now)

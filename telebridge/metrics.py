"""Prometheus metrics, served on their own listener (``metrics.*`` in the config)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

TRANSACTIONS = Counter("telebridge_as_transactions_total", "Appservice transactions received", ["result"])
EVENTS = Counter("telebridge_matrix_events_total", "Matrix events handled", ["type", "result"])
LOOKUPS = Counter("telebridge_thirdparty_lookups_total", "Third-party lookups answered", ["kind", "status"])
USER_QUERIES = Counter("telebridge_user_queries_total", "Homeserver user queries answered", ["status"])
AUTH_FAILURES = Counter(
    "telebridge_as_auth_failures_total", "Requests with a missing or wrong hs_token", ["reason"]
)
ERRORS = Counter("telebridge_errors_total", "Errors while handling outside input", ["where"])
SMS = Counter("telebridge_sms_total", "Text messages by direction and outcome", ["direction", "outcome"])
SMS_SEGMENTS = Counter("telebridge_sms_segments_total", "SMS segments queued", ["direction"])
CALLS = Counter("telebridge_calls_total", "Calls by direction and outcome", ["direction", "outcome"])
CALL_SETUP = Histogram(
    "telebridge_call_setup_seconds",
    "Time the bridge adds to call setup: m.call.invite → INVITE sent, 200 OK → m.call.answer sent",
    ["phase"],
    buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0),
)
CREDIT_REFUSALS = Counter(
    "telebridge_credit_refusals_total", "Texts and calls refused by credit or rules", ["kind", "reason"]
)
PORTALS = Gauge("telebridge_portals", "Rooms bridged to phone parties")


class _MediaCollector(Collector):
    """The media workers' health, read from the running :class:`media.service.MediaService` at each
    scrape: a worker that crashed too often stays down (its calls ended, capacity is lost) and only
    these figures and the log show it."""

    def __init__(self) -> None:
        self.service: Any = None

    def collect(self) -> Iterator[Metric]:
        service = self.service
        if service is None:
            return
        yield GaugeMetricFamily(
            "telebridge_media_workers", "Media worker processes running", value=service.workers_running
        )
        yield GaugeMetricFamily(
            "telebridge_media_workers_configured",
            "Media worker processes configured",
            value=service.worker_count,
        )
        yield CounterMetricFamily(
            "telebridge_media_worker_deaths",
            "Media worker processes that died (their calls ended; restarted unless crashing in a loop)",
            value=service.worker_deaths,
        )


_MEDIA = _MediaCollector()
REGISTRY.register(_MEDIA)


def watch_media(service: Any) -> None:
    """Report this media service's workers (None: stop reporting)."""
    _MEDIA.service = service


async def _metrics(_: web.Request) -> web.Response:
    body = generate_latest(REGISTRY)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def start_metrics_server(host: str, port: int) -> web.AppRunner:
    app = web.Application()
    app.router.add_get("/metrics", _metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner

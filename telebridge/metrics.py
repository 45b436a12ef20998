"""Prometheus metrics, served on their own listener (``metrics.*`` in the config)."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram, generate_latest

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

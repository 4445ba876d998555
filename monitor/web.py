"""The daemon's HTTP server: /metrics, /healthz, /readyz, the JSON API and callback receivers.

`build_app` receives ready components through a narrow view and only routes; it never reaches
into the daemon. State-changing routes need the bearer token from the config.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.aiohttp import make_aiohttp_handler

from monitor import __version__
from monitor.poller import SourcePoller

log = logging.getLogger(__name__)


class CallbackReceiver(Protocol):
    """A source that accepts pushed events (NAVER Live Station callbacks)."""

    @property
    def name(self) -> str: ...

    def check_callback_token(self, token: str) -> bool: ...

    def accept_callback(self, payload: Any) -> int: ...


class DaemonView(Protocol):
    """What the HTTP layer may see of the running daemon."""

    def pollers(self) -> Sequence[SourcePoller]: ...

    def callback_receivers(self, kind: str) -> Sequence[CallbackReceiver]: ...

    def api_token(self) -> str | None: ...


VIEW = web.AppKey("view", DaemonView)
CALLBACKS = web.AppKey("callback_requests", Counter)
EXTRA_ROUTES = web.AppKey("extra_routes", list)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda d: json.dumps(d, indent=None))


def require_token(handler: Handler) -> Handler:
    """Wraps a state-changing handler: `Authorization: Bearer <api.token>` or 401/403."""

    async def checked(request: web.Request) -> web.StreamResponse:
        expected = request.app[VIEW].api_token()
        if not expected:
            return json_response(
                {"status": "error", "error": "state-changing API is disabled: set api.token"}, 403
            )
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), expected.encode()):
            return web.json_response(
                {"status": "error", "error": "missing or wrong bearer token"},
                status=401,
                headers={"WWW-Authenticate": 'Bearer realm="streamwatch"'},
            )
        return await handler(request)

    return checked


async def healthz(request: web.Request) -> web.Response:
    # Answering at all proves the event loop turns; that is what a liveness probe asks.
    return web.Response(text="ok\n")


async def readyz(request: web.Request) -> web.Response:
    waiting = [str(p.ref) for p in request.app[VIEW].pollers() if p.up is None]
    if waiting:
        return web.Response(status=503, text="waiting for first poll: " + ", ".join(waiting) + "\n")
    return web.Response(text="ready\n")


async def sources(request: web.Request) -> web.Response:
    data = []
    for poller in request.app[VIEW].pollers():
        latest = poller.latest
        data.append(
            {
                "kind": poller.ref.kind,
                "name": poller.ref.name,
                "up": poller.up,
                "lastPollAt": latest.taken_at if latest else None,
                "lastPollDurationSeconds": latest.duration if latest else None,
                "lastError": latest.failure.message if latest and latest.failure else None,
                "lastErrorReason": latest.failure.reason if latest and latest.failure else None,
                "entities": len(poller.last_good.entities) if poller.last_good else 0,
                "downSince": poller.down_since,
            }
        )
    return json_response({"status": "success", "data": data})


async def naver_callback(request: web.Request) -> web.Response:
    counter = request.app[CALLBACKS]
    token = request.match_info["token"]
    receiver = next(
        (r for r in request.app[VIEW].callback_receivers("naver") if r.check_callback_token(token)),
        None,
    )
    if receiver is None:
        # 404 rather than 401: an unknown token must not reveal that the route exists.
        counter.labels("naver", "", "rejected_token").inc()
        return web.Response(status=404, text="not found\n")
    try:
        payload = await request.json()
        fresh = receiver.accept_callback(payload)
    except (ValueError, TypeError) as exc:
        counter.labels("naver", receiver.name, "bad_request").inc()
        log.warning(
            "callback rejected receiver=naver source=%s error=%r", receiver.name, str(exc)[:200]
        )
        return json_response({"status": "error", "error": str(exc)[:200]}, 400)
    counter.labels("naver", receiver.name, "accepted").inc()
    return json_response({"status": "success", "new": fresh})


def build_app(view: DaemonView, registry: CollectorRegistry) -> web.Application:
    app = web.Application(client_max_size=1024 * 1024)
    app[VIEW] = view
    app[CALLBACKS] = Counter(
        "streamwatch_callback_requests_total",
        "Callback requests received, by receiver, source and result (accepted, bad_request, rejected_token).",
        ["receiver", "source", "result"],
        registry=registry,
    )
    app.router.add_get("/metrics", make_aiohttp_handler(registry))
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/api/v1/sources", sources)
    app.router.add_get("/api/v1/status/buildinfo", buildinfo)
    app.router.add_post("/callbacks/naver/{token}", naver_callback)
    return app


async def buildinfo(request: web.Request) -> web.Response:
    return json_response({"status": "success", "data": {"version": __version__}})

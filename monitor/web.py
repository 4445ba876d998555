"""The daemon's HTTP server: /metrics, /healthz, /readyz, the JSON API and callback receivers.

`build_app` receives the ready components it reads (`Views`) and only routes; it never sees
the daemon. State-changing routes need the bearer token from the config.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter

from monitor import __version__, statuspage
from monitor.alerting.engine import AlertEngine
from monitor.alerting.silences import Silencer, parse_time
from monitor.alerting.transitions import Transition, iso
from monitor.export import Exporter
from monitor.labels import Matcher
from monitor.sources.manager import SourceManager
from monitor.store import Store

log = logging.getLogger(__name__)


class CallbackReceiver(Protocol):
    """A source that accepts pushed events (NAVER Live Station callbacks)."""

    @property
    def name(self) -> str: ...

    def check_callback_token(self, token: str) -> bool: ...

    def accept_callback_body(self, raw: bytes) -> int: ...


@dataclass(frozen=True)
class Views:
    """What the HTTP layer reads: ready components, not the daemon."""

    exporter: Exporter
    engine: AlertEngine
    silencer: Silencer
    sources: SourceManager
    store: Store
    callback_requests: Counter
    api_token: Callable[[], str | None]
    clock: Callable[[], float]
    config_file: str = ""
    started_at: float = 0.0
    rules_summary: Callable[[], str] = lambda: ""
    # The newest action attempts, newest first (the actions component's audit), for `/`.
    recent_actions: Callable[[], Sequence[Mapping[str, Any]]] = lambda: ()


VIEWS = web.AppKey("views", Views)

MAX_TRANSITIONS = 1000  # a page of GET /api/v1/transitions at most


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status)


async def json_body(request: web.Request) -> Any:
    """The request's JSON (at most the app's client_max_size, 1 MiB), or ValueError: a body
    nested too deep for the parser is a 400 like any other malformed one, not a 500."""
    raw = await request.read()
    try:
        return json.loads(raw)
    except RecursionError:
        raise ValueError("body is nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"body is not JSON: {exc}") from None


def require_token(handler: Handler) -> Handler:
    """Wraps a state-changing handler: `Authorization: Bearer <api.token>` or 401/403."""

    async def checked(request: web.Request) -> web.StreamResponse:
        expected = request.app[VIEWS].api_token()
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


async def metrics(request: web.Request) -> web.StreamResponse:
    # Rendering 10,000 streams takes a fraction of a second: a worker thread keeps the loop
    # (polls, callbacks, /healthz) turning meanwhile. Snapshots are immutable, so it is safe.
    accept = ",".join(request.headers.getall("Accept", []))
    encoding = request.headers.get("Accept-Encoding", "")
    exporter = request.app[VIEWS].exporter
    chunks, content_type, content_encoding = await exporter.payload(accept, encoding)
    headers = {"Content-Type": content_type, "Vary": "Accept, Accept-Encoding"}
    if content_encoding:
        headers["Content-Encoding"] = content_encoding
    response = web.StreamResponse(headers=headers)
    response.content_length = sum(map(len, chunks))
    await response.prepare(request)
    for chunk in chunks:
        await response.write(chunk)
    await response.write_eof()
    return response


async def healthz(request: web.Request) -> web.Response:
    # Answering at all proves the event loop turns; that is what a liveness probe asks.
    return web.Response(text="ok\n")


async def readyz(request: web.Request) -> web.Response:
    views = request.app[VIEWS]
    problems = []
    waiting = [str(p.ref) for p in views.sources.pollers() if p.up is None]
    if waiting:
        problems.append("waiting for first poll: " + ", ".join(waiting))
    if views.engine.write_failing:
        problems.append(
            f"state writes are failing: {views.engine.unsaved} transition(s) not saved yet"
        )
    if problems:
        return web.Response(status=503, text="\n".join(problems) + "\n")
    return web.Response(text="ready\n")


async def sources(request: web.Request) -> web.Response:
    data = []
    for poller in request.app[VIEWS].sources.pollers():
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
                "lastErrorCode": latest.failure.code if latest and latest.failure else None,
                "entities": len(poller.last_good.entities) if poller.last_good else 0,
                "downSince": poller.down_since,
                "intervalSeconds": poller.source.interval,
                "effectiveIntervalSeconds": poller.effective_interval,
            }
        )
    return json_response({"status": "success", "data": data})


async def naver_callback(request: web.Request) -> web.Response:
    counter = request.app[VIEWS].callback_requests
    token = request.match_info["token"]
    receiver = next(
        (
            r
            for r in request.app[VIEWS].sources.callback_receivers("naver")
            if r.check_callback_token(token)
        ),
        None,
    )
    if receiver is None:
        # 404 rather than 401: an unknown token must not reveal that the route exists.
        counter.labels("naver", "", "rejected_token").inc()
        return web.Response(status=404, text="not found\n")
    try:
        # The source parses it, within its bounds (size, depth, codes): a hostile body is a 400.
        fresh = receiver.accept_callback_body(await request.read())
    except (ValueError, TypeError) as exc:
        counter.labels("naver", receiver.name, "bad_request").inc()
        log.warning(
            "callback rejected",
            extra={"receiver": "naver", "source": receiver.name, "error": str(exc)[:200]},
        )
        return json_response({"status": "error", "error": str(exc)[:200]}, 400)
    counter.labels("naver", receiver.name, "accepted").inc()
    return json_response({"status": "success", "new": fresh})


def callback_counter(registry: CollectorRegistry) -> Counter:
    return Counter(
        "streamwatch_callback_requests_total",
        "Callback requests received, by receiver, source and result (accepted, bad_request, rejected_token).",
        ["receiver", "source", "result"],
        registry=registry,
    )


def build_app(views: Views, routes: Sequence[web.RouteDef] = ()) -> web.Application:
    """The app over `views`, plus the routes components bring (receivers, action triggers)."""
    app = web.Application(client_max_size=1024 * 1024)
    app[VIEWS] = views
    app.router.add_routes(routes)
    app.router.add_routes(statuspage.routes(VIEWS))
    app.router.add_get("/api/v1/status", status)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/api/v1/sources", sources)
    app.router.add_get("/api/v1/status/buildinfo", buildinfo)
    app.router.add_get("/api/v1/alerts", alerts)
    app.router.add_get("/api/v1/rules", rules)
    app.router.add_get("/api/v1/transitions", transitions)
    app.router.add_get("/api/v1/silences", list_silences)
    app.router.add_post("/api/v1/silences", require_token(create_silence))
    app.router.add_delete("/api/v1/silences/{id}", require_token(expire_silence))
    app.router.add_post("/callbacks/naver/{token}", naver_callback)
    return app


def _engine(request: web.Request) -> AlertEngine:
    return request.app[VIEWS].engine


async def alerts(request: web.Request) -> web.Response:
    engine = _engine(request)
    data = [alert.to_api(muted) for alert, muted in engine.active_alerts(resolved=True)]
    return json_response({"status": "success", "data": data})


async def rules(request: web.Request) -> web.Response:
    engine = _engine(request)
    groups = []
    for group in engine.groups:
        described = []
        for rule in group.rules:
            health = engine.health.get(rule.key)
            active = [a for a in engine.alerts.get(rule.key, {}).values() if a.state != "inactive"]
            described.append(
                {
                    **rule.describe(),
                    "type": "alerting",
                    "health": health.health if health else "unknown",
                    "lastError": health.last_error if health else None,
                    "lastEvaluation": iso(health.last_evaluation) if health else None,
                    "evaluationTime": health.evaluation_seconds if health else 0.0,
                    "state": "firing"
                    if any(a.state == "firing" for a in active)
                    else "pending"
                    if active
                    else "inactive",
                    "alerts": len(active),
                }
            )
        groups.append({"name": group.name, "file": group.file, "rules": described})
    return json_response({"status": "success", "data": {"groups": groups}})


def _silencer(request: web.Request) -> Silencer:
    return request.app[VIEWS].silencer


async def transitions(request: web.Request) -> web.Response:
    """The saved transition stream, oldest first: `?after=<id>` pages on, `limit` ≤ 1000."""
    try:
        after = int(request.query.get("after", "0"))
        limit = int(request.query.get("limit", str(MAX_TRANSITIONS)))
    except ValueError:
        return json_response({"status": "error", "error": "after and limit are integers"}, 400)
    if not 1 <= limit <= MAX_TRANSITIONS:
        return json_response(
            {"status": "error", "error": f"limit must be 1..{MAX_TRANSITIONS}"}, 400
        )
    entries = request.app[VIEWS].store.outbox_entries(after, limit)
    data = [_transition_api(Transition.from_json(e.body, e.id)) for e in entries]
    return json_response({"status": "success", "data": data})


def _transition_api(t: Transition) -> dict[str, Any]:
    return {
        "id": t.id,
        "kind": t.kind.value,
        "at": iso(t.at),
        "alertname": t.alertname,
        "rule": t.rule,
        "fingerprint": t.fingerprint,
        "from": t.from_state.value,
        "to": t.to_state.value,
        "labels": dict(t.labels),
        "annotations": dict(t.annotations),
        "target": t.target.to_json(),
        "startsAt": iso(t.starts_at),
        "endsAt": iso(t.resolved_at),
        "value": t.value,
        "actions": [dict(a) for a in t.actions],
        "silencedBy": list(t.silenced_by),
    }


async def list_silences(request: web.Request) -> web.Response:
    now = request.app[VIEWS].clock()
    data = [s.to_api(now) for s in _silencer(request).list(now)]
    return json_response({"status": "success", "data": data})


async def create_silence(request: web.Request) -> web.Response:
    """Alertmanager v2's silence body: matchers [{name, value, isRegex, isEqual}], startsAt,
    endsAt, createdBy, comment; with `id` it replaces an unexpired silence."""
    view = request.app[VIEWS]
    now = view.clock()
    try:
        body = await json_body(request)
        if not isinstance(body, dict):
            raise ValueError("body must be a JSON object")
        matchers = body.get("matchers")
        if not isinstance(matchers, list) or not matchers:
            raise ValueError("matchers: a non-empty list is required")
        parsed = [Matcher.from_api(m) for m in matchers]
        starts_at = parse_time(body["startsAt"]) if "startsAt" in body else now
        ends_at = parse_time(body.get("endsAt"))
        silence = _silencer(request).create(
            parsed,
            starts_at,
            ends_at,
            body.get("createdBy", ""),
            body.get("comment", ""),
            now,
            body.get("id"),
        )
    except KeyError:
        return json_response({"status": "error", "error": "no such silence"}, 404)
    except (ValueError, TypeError) as exc:
        return json_response({"status": "error", "error": str(exc)}, 400)
    log.info(
        "silence saved",
        extra={
            "silence_id": silence.id,
            "created_by": silence.created_by,
            "matchers": ",".join(map(str, silence.matchers)),
        },
    )
    return json_response({"status": "success", "data": {"silenceID": silence.id}})


async def expire_silence(request: web.Request) -> web.Response:
    view = request.app[VIEWS]
    try:
        silence = _silencer(request).expire(request.match_info["id"], view.clock())
    except KeyError:
        return json_response({"status": "error", "error": "no such silence"}, 404)
    log.info("silence expired", extra={"silence_id": silence.id})
    return json_response({"status": "success", "data": silence.to_api(view.clock())})


async def status(request: web.Request) -> web.Response:
    views = request.app[VIEWS]
    data = {
        "version": __version__,
        "configFile": views.config_file,
        "rules": views.rules_summary(),
        "startedAt": iso(views.started_at),
        "sources": len(views.sources.pollers()),
    }
    return json_response({"status": "success", "data": data})


async def buildinfo(request: web.Request) -> web.Response:
    return json_response({"status": "success", "data": {"version": __version__}})

"""The status page at `/`: server-rendered, no scripts and no assets from elsewhere, refreshing
itself. Sources, alerts, recent actions and silences; a silence is created and expired from
the page with the API token (a form field: no cookies, so nothing for another site to ride on).
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from importlib import resources
from typing import Any
from urllib.parse import urlencode

import jinja2
from aiohttp import web

from monitor import __version__
from monitor.alerting.transitions import iso
from monitor.labels import Matcher
from monitor.schema import format_duration, parse_duration

REFRESH_SECONDS = 10
MAX_SILENCE = 30 * 86400.0  # a silence from the page lasts at most 30 days

_ENV = jinja2.Environment(
    loader=jinja2.FunctionLoader(
        lambda name: resources.files("monitor").joinpath("templates", name).read_text("utf-8")
    ),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)


def routes(views_key: Any) -> list[web.RouteDef]:
    """The page's routes; `views_key` is the app key holding the web layer's Views."""

    async def page(request: web.Request) -> web.Response:
        views = request.app[views_key]
        message = request.query.get("msg", "")[:300]
        html = _ENV.get_template("status.html").render(
            **_context(views),
            message=message,
            error=request.query.get("error") == "1",
            refresh=REFRESH_SECONDS,
        )
        return web.Response(text=html, content_type="text/html")

    async def create(request: web.Request) -> web.Response:
        views = request.app[views_key]
        form = await request.post()
        if not _token_ok(views, form.get("token")):
            return _back("wrong or missing API token", error=True)
        now = views.clock()
        try:
            lines = [line.strip() for line in str(form.get("matchers", "")).splitlines()]
            matchers = [Matcher.parse(line) for line in lines if line]
            if not matchers:
                raise ValueError("give at least one matcher")
            duration = parse_duration(str(form.get("duration", "")))
            if not 0 < duration <= MAX_SILENCE:
                raise ValueError(
                    f"the duration must be between 1s and {format_duration(MAX_SILENCE)}"
                )
            silence = views.silencer.create(
                matchers,
                now,
                now + duration,
                str(form.get("created_by", "")),
                str(form.get("comment", "")),
                now,
            )
        except (ValueError, TypeError) as exc:
            return _back(f"silence not created: {exc}", error=True)
        return _back(f"silence {silence.id} created")

    async def expire(request: web.Request) -> web.Response:
        views = request.app[views_key]
        form = await request.post()
        if not _token_ok(views, form.get("token")):
            return _back("wrong or missing API token", error=True)
        try:
            silence = views.silencer.expire(request.match_info["id"], views.clock())
        except KeyError:
            return _back("no such silence", error=True)
        return _back(f"silence {silence.id} expired")

    return [
        web.get("/", page),
        web.post("/silences", create),
        web.post("/silences/{id}/expire", expire),
    ]


def _token_ok(views: Any, given: Any) -> bool:
    expected = views.api_token()
    if not expected or not isinstance(given, str):
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


def _back(message: str, *, error: bool = False) -> web.Response:
    """Back to the page (POST, then redirect, then GET: a reload does not post again)."""
    query = {"msg": message, **({"error": "1"} if error else {})}
    raise web.HTTPSeeOther(location="/?" + urlencode(query))


def _ago(ts: float | None, now: float) -> str:
    if ts is None:
        return ""
    return f"{iso(ts)} ({format_duration(max(0.0, round(now - ts)))} ago)"


def _context(views: Any) -> dict[str, Any]:
    now = views.clock()
    sources = []
    for poller in views.sources.pollers():
        latest = poller.latest
        failure = latest.failure if latest is not None else None
        state = "waiting" if poller.up is None else ("up" if poller.up else "down")
        sources.append(
            {
                "kind": poller.ref.kind,
                "name": poller.ref.name,
                "state": state,
                "down_since": _ago(poller.down_since, now) if poller.up is False else "",
                "last_poll": _ago(latest.taken_at, now) if latest else "",
                "duration": f"{latest.duration:.2f} s" if latest else "",
                "interval": format_duration(poller.source.interval),
                "effective": format_duration(poller.effective_interval),
                "failure": f"{failure.reason}: {failure.message}" if failure else "",
            }
        )
    alerts = []
    for alert, muted in views.engine.active_alerts(resolved=True):
        listed = alert.to_api(muted)
        target = listed["target"]
        alerts.append(
            {
                "state": listed["state"],
                "alertname": alert.alertname,
                "summary": listed["annotations"].get("summary", ""),
                "since": listed["startsAt"],
                "target": f"{target['source']} {target['kind']} "
                + ",".join(f"{k}={v}" for k, v in sorted(target["labels"].items())),
                "silenced_by": ", ".join(muted),
            }
        )
    order = {"firing": 0, "pending": 1, "resolved": 2}
    alerts.sort(key=lambda a: (order.get(a["state"], 3), a["alertname"]))
    silences = [
        {
            "id": s.id,
            "state": s.state(now),
            "matchers": ", ".join(map(str, s.matchers)),
            "ends": iso(s.ends_at),
            "created_by": s.created_by,
            "comment": s.comment,
        }
        for s in views.silencer.list(now)
    ]
    actions = list(views.recent_actions())
    return {
        "version": __version__,
        "config_file": views.config_file,
        "rules": views.rules_summary(),
        "started": _ago(views.started_at, now),
        "sources": sources,
        "alerts": alerts,
        "firing": sum(a["state"] == "firing" for a in alerts),
        "silences": silences,
        "actions": [_action_row(a) for a in actions],
        "actions_note": "no actions yet",
    }


def _target_text(target: Any) -> str:
    if not isinstance(target, Mapping):
        return str(target or "")
    labels = target.get("labels") if isinstance(target.get("labels"), Mapping) else {}
    named = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
    return f"{target.get('source', '')} {target.get('kind', '')} {named}".strip()


def _action_row(attempt: Mapping[str, Any]) -> dict[str, str]:
    when = attempt.get("time") or attempt.get("started_at")
    return {
        "time": iso(when) if isinstance(when, int | float) else str(when or ""),
        "action": str(attempt.get("action", "")),
        "target": _target_text(attempt.get("target")),
        "result": str(attempt.get("result", "")),
        "detail": str(attempt.get("detail", ""))[:200],
    }

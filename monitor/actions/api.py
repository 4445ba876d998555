"""`GET /api/v1/actions` (recent attempts, the audit trail) and `POST /api/v1/actions` (a
manual action through the same guard; bearer token)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from aiohttp import web

from monitor.actions.runner import ActionRunner
from monitor.component import ActionRequest
from monitor.model import SourceRef, Target
from monitor.sources.manager import SourceManager
from monitor.web import require_token

MAX_BODY = 64 * 1024
LIMIT_MAX = 1000


def _error(message: str, status: int) -> web.Response:
    return web.json_response({"status": "error", "error": message}, status=status)


def routes(runner: ActionRunner, sources: SourceManager) -> list[web.RouteDef]:
    async def list_attempts(request: web.Request) -> web.Response:
        try:
            limit = int(request.query.get("limit", "100"))
        except ValueError:
            return _error("limit must be an integer", 400)
        if not 1 <= limit <= LIMIT_MAX:
            return _error(f"limit must be 1..{LIMIT_MAX}", 400)
        where, params = ["1"], []
        for key in ("action", "result", "fingerprint"):
            if key in request.query:
                where.append(f"{key} = ?")
                params.append(request.query[key])
        rows = runner.audit.attempts(where=" AND ".join(where), params=params, limit=limit)
        return web.json_response({"status": "success", "data": rows})

    async def trigger(request: web.Request) -> web.Response:
        if (request.content_length or 0) > MAX_BODY:
            return _error(f"body over {MAX_BODY} bytes", 413)
        raw = await request.content.read(MAX_BODY + 1)
        if len(raw) > MAX_BODY:
            return _error(f"body over {MAX_BODY} bytes", 413)
        try:
            body = json.loads(raw)
            action_request = parse_request(body, lambda kind, labels: sources.find(kind, labels))
        except (ValueError, RecursionError) as exc:
            return _error(str(exc)[:300], 400)
        except LookupError as exc:
            return _error(str(exc)[:300], 404)
        try:
            outcome = await runner.request(action_request)
        except ValueError as exc:
            return _error(str(exc)[:500], 400)
        return web.json_response({"status": "success", "data": outcome})

    return [
        web.get("/api/v1/actions", list_attempts),
        web.post("/api/v1/actions", require_token(trigger)),
    ]


def parse_request(body: Any, find: Callable[..., Any]) -> ActionRequest:
    """`{"action", "target": {"source", "kind", "labels"}}` or `{"action", "kind", "labels"}`
    (the source that sees the entity is looked up), plus `params`, `dry_run`, `reason`."""
    if not isinstance(body, dict):
        raise ValueError("the body must be a JSON object")
    action = body.get("action")
    if not isinstance(action, str):
        raise ValueError("action (restart, hls_dump, id3_event) is required")
    params = body.get("params", {})
    if not isinstance(params, dict):
        raise ValueError("params must be an object")
    dry_run = body.get("dry_run")
    if dry_run is not None and not isinstance(dry_run, bool):
        raise ValueError("dry_run must be true or false")
    reason = body.get("reason", "")
    if not isinstance(reason, str):
        raise ValueError("reason must be a string")
    spec = body.get("target", body)
    if not isinstance(spec, dict):
        raise ValueError("target must be an object")
    kind, labels = spec.get("kind"), spec.get("labels")
    if not isinstance(kind, str) or not isinstance(labels, dict):
        raise ValueError("target needs kind and labels")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
        raise ValueError("labels must map strings to strings")
    source = spec.get("source")
    if isinstance(source, str):
        target = Target(SourceRef.parse(source), kind, labels)
    else:
        found = find(kind, labels)
        if found is None:
            raise LookupError(f"no running source sees a {kind} with labels {labels}")
        owner, entity = found
        target = Target.of(owner.ref, entity)
    return ActionRequest(
        action=action,
        target=target,
        params=params,
        requested_by="api",
        reason=reason[:200],
        dry_run=dry_run,
    )

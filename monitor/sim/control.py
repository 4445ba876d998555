"""The HTTP side of the kit: `Simulator.app()`, the middleware that applies faults and keeps the
call log, and the `/_sim` control API the three simulators share (no auth, JSON in and out):

    GET    /_sim/state              {"now", "started_at", "elapsed", "faults", "schedule",
                                     "calls": <count>, ...vendor keys}
    GET    /_sim/calls              {"calls": [{"time", "method", "path", "query", "status", "body"}]}
    DELETE /_sim/calls              {"cleared": n}
    GET    /_sim/faults             {"faults": [fault, ...]}
    POST   /_sim/faults             body: a fault {"kind", "status", "code", "message",
                                    "retry_after", "seconds", "path", "method", "count"};
                                    201 {"fault": fault}
    DELETE /_sim/faults[?kind=K]    {"cleared": n}
    GET    /_sim/schedule           {"elapsed": s, "schedule": [{"at", "action", "kwargs"}]}
    POST   /_sim/schedule           body: {"at": s since start | "in": s from now, "action",
                                    "kwargs"}; 201 {"at": s since start, "action": name}
    GET    /_sim/actions            {"actions": [name, ...]}
    POST   /_sim/actions/{name}     body: the keyword arguments; {"ok": true, "result": ...}

A bad body or argument is 400 and an unknown action or target 404, both as {"error": "..."}.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import socket
import struct
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from monitor.sim.kit import NO_ANSWER, Call, Controls, Fault, UnknownAction

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Simulator(Controls):
    """A simulator: the kit's controls plus an aiohttp app. A subclass adds its state and routes.

    HTTP hooks: `answer` (authentication and the vendor's own errors around a handler),
    `error_body` (the documented error answer of a `status` fault) and `setup` (routes and
    lifetimes of a fresh app).
    """

    def error_body(self, fault: Fault) -> web.Response:
        """The vendor's documented error answer for a `status` fault."""
        return web.json_response({"error": fault.message or "simulated"}, status=fault.status)

    async def answer(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """The vendor's own answer: authentication, its error bodies, then `handler`."""
        return await handler(request)

    def setup(self, app: web.Application) -> None:
        """Add the vendor's routes (and lifetimes) to a fresh app."""

    def app(self) -> web.Application:
        """A fresh aiohttp app over this state (an app runs once; the state lives on)."""
        app = web.Application(middlewares=[_middleware])
        app[SIM_KEY] = self
        closing = app[CLOSING_KEY] = asyncio.Event()

        async def release(_app: web.Application) -> None:
            closing.set()  # requests held by a delay fault go on at once

        app.on_shutdown.append(release)
        router = app.router
        router.add_get("/_sim/state", _state)
        router.add_get("/_sim/calls", _calls)
        router.add_delete("/_sim/calls", _clear_calls)
        router.add_get("/_sim/faults", _faults)
        router.add_post("/_sim/faults", _add_fault)
        router.add_delete("/_sim/faults", _clear_faults)
        router.add_get("/_sim/schedule", _schedule)
        router.add_post("/_sim/schedule", _add_schedule)
        router.add_get("/_sim/actions", _actions)
        router.add_post("/_sim/actions/{name}", _apply)
        self.setup(app)
        return app

    async def respond(
        self, request: web.Request, handler: Handler
    ) -> tuple[web.StreamResponse, int]:
        """Faults first, then the vendor's answer; also returns the status to log."""
        path = request.raw_path.partition("?")[0]
        delays, fault = self.take_faults(request.method, path)
        for held in delays:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(request.app[CLOSING_KEY].wait(), held.seconds)
        if fault is not None and fault.kind == "status":
            response = self.error_body(fault)
            if fault.retry_after is not None:
                response.headers["Retry-After"] = str(round(float(fault.retry_after)))
            return response, response.status
        if fault is not None and fault.kind == "reset":
            return _reset(request), NO_ANSWER
        response = await self.answer(request, handler)
        if fault is not None and fault.kind == "bad_json":
            response = _cut_in_half(response)
        elif fault is not None and fault.kind == "truncate":
            response = await _truncated(request, response)
        return response, response.status


SIM_KEY = web.AppKey("sim", Simulator)
CLOSING_KEY = web.AppKey("sim_closing", asyncio.Event)
NOW_KEY = web.RequestKey("sim_now", float)  # the clock reading a request is answered at


def now_of(request: web.Request) -> float:
    """The clock reading the request is answered at (read once, when it arrived)."""
    return request.get(NOW_KEY) or request.app[SIM_KEY].clock()


def is_control(path: str) -> bool:
    return path == "/_sim" or path.startswith("/_sim/")


@web.middleware
async def _middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if is_control(request.path):
        return await _control(request, handler)
    sim = request.app[SIM_KEY]
    request[NOW_KEY] = now = sim.tick()
    body = await _logged_body(request)
    path = request.raw_path.partition("?")[0]
    status = 500
    try:
        response, status = await sim.respond(request, handler)
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        sim.calls.append(Call(now, request.method, path, dict(request.query), status, body))
    return response


async def _logged_body(request: web.Request) -> Any:
    if request.method in ("GET", "HEAD") or not request.can_read_body:
        return None
    raw = await request.read()  # kept by aiohttp: the handler reads it again
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None


# ---- the faults' answers ------------------------------------------------------------------------


def _body(response: web.StreamResponse) -> bytes:
    body = getattr(response, "body", None)
    return bytes(body) if isinstance(body, bytes | bytearray) else b""


def _copied_headers(response: web.StreamResponse) -> dict[str, str]:
    skip = {"content-length", "transfer-encoding"}
    return {k: v for k, v in response.headers.items() if k.lower() not in skip}


def _cut_in_half(response: web.StreamResponse) -> web.Response:
    body = _body(response)
    return web.Response(
        status=response.status,
        body=body[: len(body) // 2] or b"{",
        headers=_copied_headers(response),
    )


async def _truncated(request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
    body = _body(response) or b"{}"
    stream = web.StreamResponse(status=response.status, headers=_copied_headers(response))
    stream.content_length = len(body)
    await stream.prepare(request)
    await stream.write(body[: len(body) // 2])
    if request.transport is not None:
        request.transport.close()
    return stream


def _reset(request: web.Request) -> web.StreamResponse:
    transport = request.transport
    if transport is not None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # linger 0: closing sends RST instead of FIN
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    return web.Response(status=500)  # never sent: the connection is gone


# ---- /_sim -----------------------------------------------------------------------------------


def _json(payload: Any, status: int = 200) -> web.Response:
    dumps = functools.partial(json.dumps, default=_jsonable)
    return web.json_response(payload, status=status, dumps=dumps)


def _jsonable(value: Any) -> Any:
    to_json = getattr(value, "to_json", None)
    if callable(to_json):
        return to_json()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


async def _control(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except UnknownAction as exc:
        return _json({"error": str(exc)}, 404)
    except KeyError as exc:
        return _json({"error": str(exc.args[0] if exc.args else exc)}, 404)
    except (ValueError, TypeError) as exc:
        return _json({"error": str(exc)}, 400)
    except web.HTTPException as exc:
        return _json({"error": exc.reason}, exc.status)


async def control_body(request: web.Request) -> dict[str, Any]:
    """The JSON object of a control request ({} when empty); ValueError otherwise."""
    text = await request.text()
    if not text.strip():
        return {}
    try:
        body = json.loads(text)
    except ValueError:
        raise ValueError("the body is not JSON") from None
    if not isinstance(body, dict):
        raise ValueError("the body must be a JSON object")
    return body


def _sim(request: web.Request) -> Simulator:
    return request.app[SIM_KEY]


async def _state(request: web.Request) -> web.Response:
    return _json(_sim(request).state())


async def _calls(request: web.Request) -> web.Response:
    return _json({"calls": [call.to_json() for call in _sim(request).calls]})


async def _clear_calls(request: web.Request) -> web.Response:
    calls = _sim(request).calls
    cleared = len(calls)
    calls.clear()
    return _json({"cleared": cleared})


async def _faults(request: web.Request) -> web.Response:
    sim = _sim(request)
    sim.tick()
    return _json({"faults": [fault.to_json() for fault in sim.faults]})


async def _add_fault(request: web.Request) -> web.Response:
    sim = _sim(request)
    sim.tick()
    fault = sim.add_fault(Fault(**await control_body(request)))
    return _json({"fault": fault.to_json()}, 201)


async def _clear_faults(request: web.Request) -> web.Response:
    return _json({"cleared": _sim(request).clear_faults(request.query.get("kind"))})


async def _schedule(request: web.Request) -> web.Response:
    sim = _sim(request)
    sim.tick()
    return _json({"elapsed": sim.elapsed(), "schedule": sim.pending()})


async def _add_schedule(request: web.Request) -> web.Response:
    sim = _sim(request)
    body = await control_body(request)
    if ("at" in body) == ("in" in body):
        raise ValueError('give exactly one of "at" (seconds since start) or "in" (from now)')
    action = body.get("action")
    if not isinstance(action, str):
        raise ValueError('"action" (a name) is required')
    kwargs = body.get("kwargs") or {}
    if not isinstance(kwargs, dict):
        raise ValueError('"kwargs" must be an object')
    at = float(body["at"]) if "at" in body else sim.elapsed() + float(body["in"])
    entry = sim.schedule(at, action, **kwargs)
    return _json({"at": entry.at, "action": entry.action}, 201)


async def _actions(request: web.Request) -> web.Response:
    return _json({"actions": list(_sim(request).actions())})


async def _apply(request: web.Request) -> web.Response:
    sim = _sim(request)
    result = sim.apply(request.match_info["name"], **await control_body(request))
    return _json({"ok": True, "result": result})

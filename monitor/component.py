"""The seam between the daemon and the parts that stand on the outbox (notifiers, actions).

A component gets what it may use (`Deps`), and gives back, inside an async context that owns
its lifetime (connections, tasks): its outbox consumers and its HTTP routes. The daemon enters
each component in order and leaves them in reverse; it knows nothing else of them.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import CollectorRegistry

from monitor.alerting.engine import AlertEngine
from monitor.model import Entity, SourceRef, Target
from monitor.outbox import Consumer
from monitor.sources.manager import SourceManager
from monitor.store import Store


@dataclass(frozen=True)
class ActionRequest:
    """An action asked for from outside the rules: `POST /api/v1/actions`, an MQTT command,
    an Alertmanager webhook. It passes the same guard as a rule's action."""

    action: str  # restart, hls_dump, id3_event
    target: Target
    params: Mapping[str, Any] = field(default_factory=dict)
    requested_by: str = ""  # "api", "mqtt", "alertmanager:<receiver>", ...
    reason: str = ""
    dry_run: bool | None = None


class ActionGate:
    """Where requests for actions from outside the rules go. The actions component plugs its
    runner in; until then (or without it) a request is refused with LookupError."""

    def __init__(self) -> None:
        self._runner: Callable[[ActionRequest], Awaitable[Mapping[str, Any]]] | None = None

    def plug(self, runner: Callable[[ActionRequest], Awaitable[Mapping[str, Any]]]) -> None:
        self._runner = runner

    async def __call__(self, request: ActionRequest) -> Mapping[str, Any]:
        """The attempt's record (result, detail, ids), as the runner reports it."""
        if self._runner is None:
            raise LookupError("actions are not running in this daemon")
        return await self._runner(request)


@dataclass(frozen=True)
class Deps:
    """What the daemon hands a component."""

    config: Any  # monitor.config.Config (typed loosely: config imports the components' models)
    store: Store
    registry: CollectorRegistry
    engine: AlertEngine
    sources: SourceManager
    clock: Callable[[], float] = time.time
    # Hands entities to the rules at once, as a partial snapshot of `source` (e.g. the
    # action runner's StreamwatchRemediationExhausted entities).
    push: Callable[[SourceRef, list[Entity]], None] | None = None
    api_token: Callable[[], str | None] = lambda: None
    base_url: Callable[[], str | None] = lambda: None  # the daemon's own URL, once it listens
    actions: ActionGate = field(default_factory=ActionGate)


@dataclass
class Parts:
    """What a running component offers: consumers of the outbox and HTTP routes."""

    consumers: list[Consumer] = field(default_factory=list)
    routes: list[web.RouteDef] = field(default_factory=list)
    # The newest action attempts, newest first, for the status page.
    recent_actions: Callable[[], Sequence[Mapping[str, Any]]] | None = None


class Component(Protocol):
    def __call__(self, deps: Deps) -> AbstractAsyncContextManager[Parts]: ...


def components() -> Sequence[Component]:
    """Every component, in start order. Imported here so that a component's package is only
    loaded by a daemon."""
    from monitor.actions import component as actions
    from monitor.notify import component as notify

    # Actions first: the notifiers' command paths (MQTT, Alertmanager) trigger through them.
    return (actions, notify)

"""Wiring and lifecycle: build the components from the config, start them in order, reload,
stop them in reverse order.

Like Alertmanager's `app/`, this module never touches signals: the command turns SIGTERM into
`stop()` and SIGHUP into `reload()`, so a whole daemon can be started inside a test. Every
long-lived part (the state database, the consumers, the sources, the scheduler, the HTTP
server) is one entry of an AsyncExitStack, so a failed start undoes what it did and a stop
closes each part after everything that uses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC
from pathlib import Path
from typing import Any

from aiohttp import web
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from prometheus_client import CollectorRegistry, Gauge

from monitor import __version__, systemd
from monitor.alerting.collector import EngineCollector
from monitor.alerting.engine import AlertEngine
from monitor.alerting.rules import RuleError, RuleGroup, describe_rules, load_rule_files
from monitor.alerting.silences import MaintenanceWindow, Silencer
from monitor.component import Deps, components
from monitor.config import Config, ConfigError, SilenceConfig, load_config
from monitor.export import Exporter
from monitor.labels import Matcher
from monitor.listener import BoundedSite, dropped_counter
from monitor.model import Snapshot
from monitor.outbox import Consumer, Outbox
from monitor.pipeline import Pipeline
from monitor.sources import ENTITY_KINDS
from monitor.sources.base import Clock, SourceMetrics
from monitor.sources.manager import SourceManager, configured_sources
from monitor.sources.poller import SourcePoller
from monitor.store import Store
from monitor.web import Views, build_app, callback_counter

log = logging.getLogger(__name__)

# Event dedup keys are needed for NAVER's 10-minute late window; a day is ample.
EVENT_KEY_RETENTION = 86400.0
# Transitions every consumer has handled stay readable (GET /api/v1/transitions) this long.
TRANSITION_RETENTION = 7 * 86400.0
FLUSH_INTERVAL = 5.0  # seconds between retries of a failed state write


class Daemon:
    def __init__(
        self,
        config_path: str | Path,
        *,
        config: Config | None = None,
        clock: Clock = time.time,
        listen: str | None = None,
        drain_seconds: float = 5.0,
        consumers: Sequence[Consumer] = (),
    ):
        self.config_path = Path(config_path)
        self.config = config if config is not None else load_config(self.config_path)
        self.rule_groups = load_rules(self.config)
        self.clock = clock
        self.drain_seconds = drain_seconds
        self.consumers = tuple(consumers)
        # Called with every snapshot after the engine has seen it: for embedding and tests.
        self.snapshot_listeners: list[Callable[[Snapshot], None]] = []
        self._listen_override = listen
        self.registry = CollectorRegistry(auto_describe=True)
        self.source_metrics = SourceMetrics(self.registry)
        self._reload_ok, self._reload_time = _reload_gauges(self.registry)
        self.callback_requests = callback_counter(self.registry)
        self._connections_dropped = dropped_counter(self.registry)
        self.sources: SourceManager | None = None
        self.exporter = Exporter(self.registry, self.pollers)
        self.engine: AlertEngine | None = None
        self.silencer: Silencer | None = None
        self.store: Store | None = None
        self.outbox: Outbox | None = None
        self.url: str | None = None
        self.started_at = 0.0
        self._recent_actions: Callable[[], Sequence[Any]] = lambda: ()
        self._stack = contextlib.AsyncExitStack()
        self._stopped = asyncio.Event()
        self._reload_lock = asyncio.Lock()

    @property
    def listen_address(self) -> str:
        return self._listen_override or self.config.listen

    def _base_url(self) -> str | None:
        """The daemon's own URL for links in notifications: where it listens, or, before
        the listener is up, where it will (unless it picks a free port)."""
        if self.url is not None:
            return self.url
        host, _, port = self.listen_address.rpartition(":")
        return None if port == "0" else f"http://{host}:{port}"

    def pollers(self) -> Sequence[SourcePoller]:
        return self.sources.pollers() if self.sources is not None else []

    def api_token(self) -> str | None:
        token = self.config.api.token
        return token.get_secret_value() if token else None

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self, *, serve: bool = True, schedule: bool = True) -> None:
        """Open the state and the sources; with `schedule`, poll on the intervals and run the
        outbox consumers; with `serve`, listen for HTTP. `streamwatch once` uses neither."""
        try:
            await self._start(serve=serve, schedule=schedule)
        except BaseException:
            await self._stack.aclose()
            raise

    async def _start(self, *, serve: bool, schedule: bool) -> None:
        stack = self._stack
        self.started_at = time.time()
        self.store = store = Store.in_dir(self.config.state_dir)
        stack.callback(store.close)
        self.silencer = Silencer(store, windows(self.config.silences))
        self.engine = engine = AlertEngine(
            self.rule_groups,
            store=store,
            silencer=self.silencer,
            clock=self.clock,
            resolved_retention=self.config.alerting.resolved_retention,
            source_down_after=self.config.alerting.source_down_after,
        )
        stack.callback(engine.flush)  # a last try at a state write that failed
        self.registry.register(EngineCollector(engine))
        self.outbox = Outbox(store, self.consumers, self.registry, clock=self.clock)
        pipeline = Pipeline(engine, self.exporter, self.outbox, self.snapshot_listeners)
        stack.push_async_callback(pipeline.close)
        self.sources = SourceManager(
            self.source_metrics,
            on_snapshot=pipeline.on_snapshot,
            on_removed=pipeline.on_source_removed,
            clock=self.clock,
            store=store,
            drain_seconds=self.drain_seconds,
        )
        stack.push_async_callback(self.sources.close)
        routes: list[web.RouteDef] = []
        if serve or schedule:  # `once` notifies and acts on nothing
            deps = Deps(
                config=self.config,
                store=store,
                registry=self.registry,
                engine=engine,
                sources=self.sources,
                clock=self.clock,
                push=self.sources.push,
                api_token=self.api_token,
                base_url=self._base_url,
            )
            for component in components():
                parts = await stack.enter_async_context(component(deps))
                self.outbox.add(parts.consumers)
                routes += parts.routes
                if parts.recent_actions is not None:
                    self._recent_actions = parts.recent_actions
        if schedule:
            await stack.enter_async_context(self.outbox.running())
        configured = {str(ref) for ref in configured_sources(self.config.sources)}
        for source in engine.sources() - configured:
            if source.startswith("streamwatch/"):
                continue  # the daemon's own (the action runner's), never in the config
            engine.forget_source(source)  # a source removed while the daemon was down
        await self.sources.apply(self.config.sources)
        if schedule:
            scheduler = await stack.enter_async_context(self._scheduler())
            self.sources.schedule_with(scheduler)
        self._mark_loaded(True)
        if not serve:
            return
        pipeline.warm_exporter = True
        self.url = await stack.enter_async_context(self._http(self._views(), routes))
        log.info(
            "streamwatch started",
            extra={
                "version": __version__,
                "listen": self.url,
                "sources": len(self.pollers()),
                "rules": describe_rules(self.rule_groups),
            },
        )
        interval = systemd.watchdog_interval()
        if interval:
            await stack.enter_async_context(_watchdog(interval))
        systemd.ready()

    async def stop(self) -> None:
        """Stop listening, stop scheduling, let running polls finish for `drain_seconds`, then
        close the sources, the consumers and the state, in that order."""
        systemd.stopping()
        await self._stack.aclose()
        self.exporter.close()
        self._stopped.set()
        log.info("streamwatch stopped")

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    @contextlib.asynccontextmanager
    async def _scheduler(self) -> AsyncIterator[AsyncIOScheduler]:
        scheduler = AsyncIOScheduler(timezone=UTC)
        scheduler.start()
        scheduler.add_job(self.prune, "interval", hours=1, id="prune", coalesce=True)
        scheduler.add_job(
            self.housekeeping, "interval", seconds=FLUSH_INTERVAL, id="flush", coalesce=True
        )
        try:
            yield scheduler
        finally:
            scheduler.shutdown(wait=False)

    @contextlib.asynccontextmanager
    async def _http(self, views: Views, routes: Sequence[web.RouteDef]) -> AsyncIterator[str]:
        app = build_app(views, routes)
        # No access log: a callback URL carries its token in the path.
        runner = web.AppRunner(
            app,
            access_log=None,
            handler_cancellation=True,
            keepalive_timeout=self.config.http.idle_timeout,
        )
        await runner.setup()
        try:
            host, _, port = self.listen_address.rpartition(":")
            site = BoundedSite(
                runner,
                host.strip("[]"),
                int(port),
                max_connections=self.config.http.max_connections,
                dropped=self._connections_dropped,
            )
            await site.start()
            bound = runner.addresses[0]
            host = bound[0] if ":" not in bound[0] else f"[{bound[0]}]"
            yield f"http://{host}:{bound[1]}"
        finally:
            await runner.cleanup()

    def _views(self) -> Views:
        assert self.engine and self.silencer and self.sources and self.store
        return Views(
            exporter=self.exporter,
            engine=self.engine,
            silencer=self.silencer,
            sources=self.sources,
            store=self.store,
            callback_requests=self.callback_requests,
            api_token=self.api_token,
            clock=self.clock,
            config_file=str(self.config_path),
            started_at=self.started_at,
            rules_summary=lambda: describe_rules(self.rule_groups),
            recent_actions=lambda: self._recent_actions(),
        )

    # -- reload -------------------------------------------------------------------------------

    async def reload(self) -> bool:
        """Parse and validate everything first; on any error keep the running config.
        Reloads run one at a time: two quick SIGHUPs must not interleave their source diffs."""
        async with self._reload_lock:
            systemd.reloading()
            try:
                return await self._reload()
            except Exception:
                log.exception("reload failed; the running configuration stays")
                self._mark_loaded(False)
                return False
            finally:
                systemd.ready()

    async def _reload(self) -> bool:
        try:
            new = load_config(self.config_path)
            groups = load_rules(new)
        except (ConfigError, RuleError) as exc:
            for problem in exc.problems:
                log.error("reload rejected", extra={"problem": problem})
            self._mark_loaded(False)
            return False
        for setting in ("listen", "state_dir", "log", "notify", "actions", "http"):
            if getattr(new, setting) != getattr(self.config, setting) and not (
                setting == "listen" and self._listen_override
            ):
                log.warning(
                    "setting takes effect on restart, not on reload", extra={"setting": setting}
                )
        if self.sources is not None:
            await self.sources.apply(new.sources)
        self.rule_groups = groups
        if self.engine is not None:
            self.engine.update_rules(groups, new.alerting.source_down_after)
            self.engine.resolved_retention = new.alerting.resolved_retention
        if self.silencer is not None:
            self.silencer.set_windows(windows(new.silences))
        self.config = new.model_copy(
            update={
                "listen": self.config.listen,
                "state_dir": self.config.state_dir,
                "log": self.config.log,
            }
        )
        self._mark_loaded(True)
        log.info(
            "configuration reloaded",
            extra={"sources": len(self.pollers()), "rules": describe_rules(groups)},
        )
        return True

    # -- housekeeping -------------------------------------------------------------------------

    def housekeeping(self) -> None:
        """Every few seconds: evaluate the source-down rule of sources that are down (one
        waiting out a Retry-After brings no snapshot), retry a failed state write, refresh
        the outbox depth."""
        if self.engine is not None:
            for poller in self.pollers():
                if poller.latest is not None and not poller.latest.ok:
                    self.engine.recheck_down(poller.latest)
            if self.engine.write_failing or self.engine.unsaved:
                self.engine.flush()
        if self.outbox is not None:
            self.outbox.refresh_depth()

    def prune(self) -> None:
        """Hourly: forget event keys long past any cursor's late window, silences expired
        longer than their retention, and transitions every consumer has handled."""
        now = self.clock()
        if self.store is not None:
            self.store.forget_events_before(now - EVENT_KEY_RETENTION)
            self.store.prune_outbox(now - TRANSITION_RETENTION, [c.name for c in self.consumers])
        if self.silencer is not None:
            self.silencer.prune(now)

    def _mark_loaded(self, ok: bool) -> None:
        self._reload_ok.set(1 if ok else 0)
        if ok:
            self._reload_time.set(time.time())

    # -- for `streamwatch once` and tests -----------------------------------------------------

    async def poll_all(self) -> list[Snapshot]:
        """One poll of every source, now."""
        return await self.sources.poll_all() if self.sources is not None else []


@contextlib.asynccontextmanager
async def _watchdog(interval: float) -> AsyncIterator[None]:
    async def ping() -> None:
        while True:
            systemd.notify("WATCHDOG=1")
            await asyncio.sleep(interval)

    task = asyncio.get_running_loop().create_task(ping())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _reload_gauges(registry: CollectorRegistry) -> tuple[Gauge, Gauge]:
    Gauge(
        "streamwatch_build_info",
        "streamwatch version; the value is always 1.",
        ["version"],
        registry=registry,
    ).labels(__version__).set(1)
    return (
        Gauge(
            "streamwatch_config_last_reload_successful",
            "1 when the last configuration (re)load succeeded, 0 when it was rejected.",
            registry=registry,
        ),
        Gauge(
            "streamwatch_config_last_reload_success_timestamp_seconds",
            "When the configuration was last loaded successfully, Unix time.",
            registry=registry,
        ),
    )


def load_rules(config: Config) -> list[RuleGroup]:
    return load_rule_files(config.rule_files or [], kinds=ENTITY_KINDS)


def windows(silences: Sequence[SilenceConfig]) -> list[MaintenanceWindow]:
    built = []
    for item in silences:
        matchers = [Matcher.parse(m) for m in item.matchers]
        if item.schedule is not None:
            built.append(
                MaintenanceWindow.cron(
                    item.name, matchers, item.schedule, item.duration or 0.0, item.timezone
                )
            )
        else:
            assert item.starts_at is not None and item.ends_at is not None
            built.append(
                MaintenanceWindow(
                    item.name,
                    tuple(matchers),
                    starts_at=item.starts_at.timestamp(),
                    ends_at=item.ends_at.timestamp(),
                )
            )
    return built

"""Wiring and lifecycle: build the components from the config, run them, reload, drain.

Like Alertmanager's `app/`, this module never touches signals: the command turns SIGTERM into
`stop()` and SIGHUP into `reload()`, so a whole daemon can be started inside a test.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp import web
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from pydantic import BaseModel

from monitor import __version__, systemd
from monitor.alerting.engine import AlertEngine, Transition
from monitor.alerting.rules import RuleError, RuleGroup, load_rule_files
from monitor.alerting.silences import MaintenanceWindow, Silencer
from monitor.config import Config, ConfigError, SilenceConfig, load_config
from monitor.export import Exporter
from monitor.labels import Matcher
from monitor.model import Entity, Snapshot, SourceRef
from monitor.poller import SourcePoller
from monitor.sources import ENTITY_KINDS, build_source, source_configs
from monitor.sources.base import Clock, SourceContext, SourceMetrics
from monitor.store import Store
from monitor.web import CallbackReceiver, build_app

log = logging.getLogger(__name__)

SourceKey = tuple[str, str]
# Event dedup keys are needed for NAVER's 10-minute late window; a day is ample.
EVENT_KEY_RETENTION = 86400.0


class Daemon:
    def __init__(
        self,
        config_path: str | Path,
        *,
        config: Config | None = None,
        clock: Clock = time.time,
        listen: str | None = None,
        drain_seconds: float = 10.0,
    ):
        self.config_path = Path(config_path)
        self.config = config if config is not None else load_config(self.config_path)
        self.rule_groups = load_rules(self.config)
        self.clock = clock
        self.drain_seconds = drain_seconds
        self._listen_override = listen
        self.registry = CollectorRegistry(auto_describe=True)
        self.source_metrics = SourceMetrics(self.registry)
        self._reload_ok = Gauge(
            "streamwatch_config_last_reload_successful",
            "1 when the last configuration (re)load succeeded, 0 when it was rejected.",
            registry=self.registry,
        )
        self._reload_time = Gauge(
            "streamwatch_config_last_reload_success_timestamp_seconds",
            "When the configuration was last loaded successfully, Unix time.",
            registry=self.registry,
        )
        Gauge(
            "streamwatch_build_info",
            "streamwatch version; the value is always 1.",
            ["version"],
            registry=self.registry,
        ).labels(__version__).set(1)
        self.exporter = Exporter(self.registry, self.pollers)
        self.registry.register(AlertsCollector(self))
        self.engine: AlertEngine | None = None
        self.silencer: Silencer | None = None
        self.snapshot_listeners: list[Callable[[Snapshot], None]] = []
        self._pollers: dict[SourceKey, SourcePoller] = {}
        self._source_configs: dict[SourceKey, BaseModel] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._scheduler: AsyncIOScheduler | None = None
        self._runner: web.AppRunner | None = None
        self._store: Store | None = None
        self._stopped = asyncio.Event()
        self._reload_lock = asyncio.Lock()
        self._watchdog_task: asyncio.Task[None] | None = None
        self.url: str | None = None

    # -- what the HTTP layer may see ----------------------------------------------------------

    def pollers(self) -> Sequence[SourcePoller]:
        return list(self._pollers.values())

    def callback_receivers(self, kind: str) -> Sequence[CallbackReceiver]:
        return [p.source for p in self._pollers.values() if p.ref.kind == kind]  # type: ignore[misc]

    def api_token(self) -> str | None:
        token = self.config.api.token
        return token.get_secret_value() if token else None

    @property
    def store(self) -> Store:
        assert self._store is not None, "daemon not started"
        return self._store

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self, *, serve: bool = True, schedule: bool = True) -> None:
        """Open the store and the sources; with `schedule`, poll on the intervals; with
        `serve`, listen for HTTP. `streamwatch once` uses neither."""
        self._store = Store.in_dir(self.config.state_dir)
        self.silencer = Silencer(self._store, windows(self.config.silences))
        self.engine = AlertEngine(
            self.rule_groups,
            store=self._store,
            silencer=self.silencer,
            clock=self.clock,
            resolved_retention=self.config.alerting.resolved_retention,
            source_down_after=self.config.alerting.source_down_after,
        )
        self.snapshot_listeners.insert(0, self.engine.on_snapshot)
        self.engine.subscribe(log_transitions)
        configured = {f"{kind}/{name}" for kind, name in source_configs(self.config.sources)}
        for source in self.engine.sources() - configured:
            self.engine.forget_source(source)  # a source removed while the daemon was down
        if schedule:
            self._scheduler = AsyncIOScheduler(timezone=UTC)
            self._scheduler.start()
            self._scheduler.add_job(self.prune, "interval", hours=1, id="prune", coalesce=True)
        await self._apply_sources(self.config)
        self._mark_loaded(True)
        if not serve:
            return
        app = build_app(self, self.registry)
        # No access log: a callback URL carries its token in the path.
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        listen = self._listen_override or self.config.listen
        host, _, port = listen.rpartition(":")
        site = web.TCPSite(self._runner, host.strip("[]"), int(port))
        await site.start()
        bound = self._runner.addresses[0]
        self.url = (
            f"http://{bound[0]}:{bound[1]}"
            if ":" not in bound[0]
            else f"http://[{bound[0]}]:{bound[1]}"
        )
        log.info(
            "streamwatch started version=%s listen=%s sources=%d",
            __version__,
            self.url,
            len(self._pollers),
        )
        interval = systemd.watchdog_interval()
        if interval:
            self._watchdog_task = asyncio.get_running_loop().create_task(self._watchdog(interval))
        systemd.ready()

    async def stop(self) -> None:
        """Stop polling, let running polls finish for `drain_seconds`, then cancel the rest
        and close every session, the server and the store."""
        systemd.stopping()
        if self._watchdog_task is not None:
            self._watchdog_task.cancel()
            self._watchdog_task = None
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None
        running = [t for t in self._tasks if not t.done()]
        if running:
            _, pending = await asyncio.wait(running, timeout=self.drain_seconds)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        for poller in self._pollers.values():
            await poller.source.close()
        self._pollers.clear()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._store is not None:
            self._store.close()
            self._store = None
        self.exporter.close()
        self._stopped.set()
        log.info("streamwatch stopped")

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

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
                log.error("reload rejected: %s", problem)
            self._mark_loaded(False)
            return False
        for setting in ("listen", "state_dir", "log"):
            if getattr(new, setting) != getattr(self.config, setting) and not (
                setting == "listen" and self._listen_override
            ):
                log.warning("%s changed; it takes effect on restart, not on reload", setting)
        await self._apply_sources(new)
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
            "configuration reloaded sources=%d rules=%d",
            len(self._pollers),
            sum(len(g.rules) for g in groups),
        )
        return True

    def prune(self) -> None:
        """Hourly: forget event keys long past any cursor's late window, and silences expired
        longer than their retention."""
        now = self.clock()
        if self._store is not None:
            self._store.forget_events_before(now - EVENT_KEY_RETENTION)
        if self.silencer is not None:
            self.silencer.prune(now)

    def _mark_loaded(self, ok: bool) -> None:
        self._reload_ok.set(1 if ok else 0)
        if ok:
            self._reload_time.set(time.time())

    # -- sources ------------------------------------------------------------------------------

    def _context(self) -> SourceContext:
        return SourceContext(
            metrics=self.source_metrics,
            clock=self.clock,
            store=self._store,
            request_refresh=self.refresh_now,
            push=self.push_entities,
        )

    async def _apply_sources(self, config: Config) -> None:
        """Keep sources whose config is unchanged (their state and sessions survive), replace
        changed ones (carrying their snapshot, health and budgets over), start new ones, and
        close removed ones (their alerts resolve, their series go)."""
        wanted = source_configs(config.sources)
        replaced: dict[SourceKey, SourcePoller] = {}
        for key in [k for k in self._pollers if wanted.get(k) != self._source_configs.get(k)]:
            poller = await self._remove_source(key, forget=key not in wanted)
            if key in wanted:
                replaced[key] = poller
        for key, source_config in wanted.items():
            if key in self._pollers:
                continue
            source = build_source(key[0], source_config, self._context())
            old = replaced.get(key)
            if old is not None:
                source.inherit(old.source)
            await source.open()
            poller = SourcePoller(source, self.source_metrics, clock=self.clock)
            poller.listeners.append(lambda snapshot, poller=poller: self._publish(poller, snapshot))
            if old is not None:
                poller.inherit(old)
            self._pollers[key] = poller
            self._source_configs[key] = source_config
            if self._scheduler is not None:
                self._schedule(key, poller)

    async def _remove_source(self, key: SourceKey, *, forget: bool) -> SourcePoller:
        poller = self._pollers.pop(key)
        self._source_configs.pop(key, None)
        if self._scheduler is not None:
            with contextlib.suppress(Exception):
                self._scheduler.remove_job(self._job_id(key))
        await poller.cancel()
        await poller.source.close()
        if forget:
            self.source_metrics.forget(poller.ref)
            if self.engine is not None:
                self.engine.forget_source(str(poller.ref))
        return poller

    @staticmethod
    def _job_id(key: SourceKey) -> str:
        return f"poll:{key[0]}/{key[1]}"

    def _schedule(self, key: SourceKey, poller: SourcePoller) -> None:
        assert self._scheduler is not None
        # A random sub-second offset keeps many sources from polling in lockstep.
        first = datetime.now(UTC) + timedelta(
            seconds=random.uniform(0, min(1.0, poller.source.interval))
        )
        self._scheduler.add_job(
            self._poll_job,
            "interval",
            seconds=poller.source.interval,
            args=[key],
            id=self._job_id(key),
            next_run_time=first,
            # Two, so that a tick during an overrunning poll reaches the poller, which skips
            # it (its lock keeps polls from overlapping) and says so once, where APScheduler
            # would warn on every tick.
            max_instances=2,
            coalesce=True,
            misfire_grace_time=max(1, int(poller.source.interval)),
        )

    async def _poll_job(self, key: SourceKey, requested: bool = False) -> None:
        poller = self._pollers.get(key)
        if poller is None:
            return
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            await poller.refresh(requested=requested)
        finally:
            if task is not None:
                self._tasks.discard(task)

    def push_entities(self, ref: SourceRef, entities: list[Entity]) -> None:
        """Entities an upstream pushed (callback events) go to the rules at once, as a partial
        snapshot; /metrics takes them from the next poll."""
        if (ref.kind, ref.name) not in self._pollers:
            return
        snapshot = Snapshot(
            source=ref, taken_at=self.clock(), entities=tuple(entities), partial=True
        )
        for listener in self.snapshot_listeners:
            try:
                listener(snapshot)
            except Exception:
                log.exception("snapshot listener failed source=%s", snapshot.source)

    def refresh_now(self, ref: SourceRef) -> None:
        """Poll a source at once (a callback said something changed)."""
        key = (ref.kind, ref.name)
        if key in self._pollers and not self._stopped.is_set():
            self._spawn(self._poll_job(key, requested=True))

    async def poll_all(self) -> list[Snapshot]:
        """One poll of every source, now (for `streamwatch once` and tests)."""
        # A poll cancelled because a reload removed its source yields no snapshot, not an error.
        results = await asyncio.gather(
            *(p.refresh() for p in self._pollers.values()), return_exceptions=True
        )
        return [s for s in results if isinstance(s, Snapshot)]

    def _publish(self, poller: SourcePoller, snapshot: Snapshot) -> None:
        if self._pollers.get((poller.ref.kind, poller.ref.name)) is not poller:
            return  # a poll of a source that a reload has just replaced or removed
        if snapshot.ok and self._runner is not None:
            # Render the new snapshot for the scraper now, off the loop, not when it asks.
            self._spawn(self.exporter.warm_soon())
        for listener in self.snapshot_listeners:
            try:
                listener(snapshot)
            except Exception:
                log.exception("snapshot listener failed source=%s", snapshot.source)

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _watchdog(self, interval: float) -> None:
        while True:
            systemd.notify("WATCHDOG=1")
            await asyncio.sleep(interval)


def log_transitions(transitions: Sequence[Transition]) -> None:
    """One log line per alert transition: the journal then tells an incident's story."""
    for transition in transitions:
        alert = transition.alert
        labels = ",".join(f"{k}={v}" for k, v in sorted(alert.labels.items()) if k != "alertname")
        log.info(
            "alert %s alertname=%s fingerprint=%s labels=%s%s",
            transition.kind,
            alert.alertname,
            alert.fingerprint,
            labels,
            f" silenced_by={','.join(transition.silenced_by)}" if transition.silenced_by else "",
        )


def load_rules(config: Config) -> list[RuleGroup]:
    return load_rule_files(config.rule_files, kinds=ENTITY_KINDS)


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


class AlertsCollector(Collector):
    """`streamwatch_alerts{alertname, state}`: pending and firing alerts per rule."""

    def __init__(self, daemon: Daemon):
        self._daemon = daemon

    def describe(self) -> list[Metric]:
        return [self._family()]

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "streamwatch_alerts",
            "Alerts by rule and state (pending, firing), silenced ones included.",
            labels=["alertname", "state"],
        )

    def collect(self) -> list[Metric]:
        family = self._family()
        engine = self._daemon.engine
        if engine is not None:
            for (alertname, state), count in sorted(engine.counts().items()):
                family.add_metric([alertname, state], count)
        return [family]

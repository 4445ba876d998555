"""A SmartSTREAM merchant as a source: live events (and ingest jobs) as entities
(`smartstream.live_event`, `smartstream.job`), and the live event actions (get, start, stop,
reset, restart) in terms of live event ids or `ref:<ref_id>`. HTTP is `SmartstreamClient`'s."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from monitor.model import Entity
from monitor.sources import values as parse
from monitor.sources.base import Source, SourceContext
from monitor.sources.http import BAD_RESPONSE, TIMEOUT, UNAUTHORIZED, SourceError
from monitor.sources.ratelimit import TokenBucket
from monitor.sources.smartstream.client import (
    RATE_WINDOW,
    BudgetExhausted,
    SmartstreamClient,
    Tally,
)
from monitor.sources.smartstream.config import SmartstreamSourceConfig

log = logging.getLogger(__name__)

LIVE_EVENT_KIND = "smartstream.live_event"
JOB_KIND = "smartstream.job"
ENTITY_KINDS = (LIVE_EVENT_KIND, JOB_KIND)

ENCODE_STATUS_PENDING = "encode_status_pending"
ENCODE_STATUS_RUNNING = "encode_status_running"
# The only values the documents show. Others exist (stopped, error, ...) but are unpublished;
# they pass through raw in `encode_status`.
LIVE_EVENT_ENCODE_STATUSES: tuple[str, ...] = (ENCODE_STATUS_PENDING, ENCODE_STATUS_RUNNING)
# Job encode_status is an integer whose meanings are not published.
JOB_ENCODE_STATUSES: tuple[str, ...] = ()

Sleep = Callable[[float], Awaitable[object]]


@dataclass(frozen=True)
class RestartStep:
    """One step of a restart: what was called, whether it worked, what the event said."""

    step: str  # stop | reset | start | wait
    ok: bool
    at: float
    encode_status: str | None = None
    error: str | None = None  # SourceError text (no secret)


@dataclass(frozen=True)
class RestartResult:
    live_event: str
    ok: bool
    steps: tuple[RestartStep, ...]
    encode_status: str | None  # the last one seen
    started_at: float
    finished_at: float

    @property
    def failed_step(self) -> str | None:
        return None if self.ok else self.steps[-1].step


class RestartError(SourceError):
    """A restart ended badly at `step`; `result` holds every step up to there."""

    def __init__(self, step: str, cause: SourceError, result: RestartResult) -> None:
        super().__init__(
            cause.reason,
            f"restart {result.live_event}: {step} failed: {cause}",
            status=cause.status,
            code=cause.code,
            retry_after=cause.retry_after,
        )
        self.step = step
        self.result = result


class SmartstreamSource(Source):
    """Polls one merchant's live events (and ingest jobs) and carries out live event actions."""

    kind = "smartstream"

    def __init__(
        self,
        config: SmartstreamSourceConfig,
        context: SourceContext,
        *,
        sleep: Sleep = asyncio.sleep,
        bucket: TokenBucket | None = None,
        action_max_wait: float = 30.0,
        renew_before: float = 60.0,
    ) -> None:
        super().__init__(context=context, **Source.settings(config))
        self.config = config
        self._clock = context.clock
        self._sleep = sleep
        self.bucket = bucket or TokenBucket.per_window(
            config.rate_limit, RATE_WINDOW, clock=context.clock, sleep=sleep
        )
        self.action_max_wait = action_max_wait
        self.client = SmartstreamClient(
            config,
            bucket=self.bucket,
            clock=context.clock,
            timeout=self.timeout,
            on_throttled=self._count_throttled,
            renew_before=renew_before,
            label=str(self.ref),
        )
        self._jobs: list[Entity] = []
        # Requests of the last complete poll (live event pages, a token fetch, job pages) and
        # of the last complete job list: what one full poll costs the budget.
        self.requests_per_poll = 0
        self._job_requests = 1

    def inherit(self, old: Source) -> None:
        # The account's budget outlives a reload: a fresh, full bucket could overspend it.
        if not isinstance(old, SmartstreamSource):
            return
        self.requests_per_poll, self._job_requests = old.requests_per_poll, old._job_requests
        account = ("url", "merchant_id", "rate_limit")
        if any(getattr(old.config, k) != getattr(self.config, k) for k in account):
            return
        self.bucket = self.client.bucket = old.bucket
        credentials = ("api_key", "token", "mail_address", "password")
        if all(getattr(old.config, k) == getattr(self.config, k) for k in credentials):
            # A fetched token stays valid across a reload; fetching another spends budget.
            self.client._token = old.client._token
            if old.client._token is not None:
                self.client.http.redact.add(old.client._token.value)

    # --- pacing: the budget, not the upstream, decides how often a full poll fits

    @property
    def min_interval(self) -> float:
        """Seconds the budget needs to refill one full poll's requests at its steady rate
        (the burst aside); the poller starts no poll sooner. 0 before the first poll."""
        return self.requests_per_poll / self.bucket.rate

    def pacing(self) -> dict[str, Any]:
        return {
            "requests_per_poll": self.requests_per_poll,
            "rate_limit": self.config.rate_limit,
            "budget_interval_s": round(self.min_interval, 3),
        }

    @property
    def poll_deadline(self) -> float:
        # A poll waits for its tokens (it never fails for lack of them): its deadline leaves
        # room for the budget to refill a whole poll from empty.
        return super().poll_deadline + self.min_interval

    def __repr__(self) -> str:
        return f"SmartstreamSource({self.ref}, merchant={self.config.merchant_id!r})"

    async def open(self) -> None:
        await self.client.open()

    async def close(self) -> None:
        await self.client.close()

    def _count_throttled(self, n: int) -> None:
        self.context.metrics.requests_throttled.labels(self.ref.kind, self.ref.name).inc(n)

    # --- poll

    async def poll(self) -> list[Entity]:
        """Live events, page after page, each page waiting for its token as long as it takes
        (the poll's deadline allows for it): our own budget never fails a poll, only the
        upstream's 429 does. Jobs are secondary (see `_poll_jobs`)."""
        tally = Tally()
        try:
            events = await self.client.list_live_events(max_wait=None, tally=tally)
            entities = [self._live_event_entity(item) for item in events]
            requests = tally.spent
            if self.config.jobs:
                # Jobs may wait only for what the stretched interval set aside for them.
                budget = self.min_interval
                tally.allowance = budget if budget > self.interval else 0.0
                entities += await self._poll_jobs(tally)
                requests += self._job_requests
            self.requests_per_poll = requests
        finally:
            self._log_throttling(tally)
        return entities

    async def _poll_jobs(self, tally: Tally) -> list[Entity]:
        """Jobs are secondary: when the budget is short their listing is left out and the last
        complete job list is reported again (its `observed_at` tells how old it is)."""
        before = tally.spent
        try:
            jobs = await self.client.list_jobs(max_wait=None, tally=tally)
        except BudgetExhausted:
            return list(self._jobs)
        self._job_requests = max(1, tally.spent - before)
        now = self._clock()
        self._jobs = [self._job_entity(item, now) for item in jobs]
        return list(self._jobs)

    def _log_throttling(self, tally: Tally) -> None:
        if not (tally.delayed or tally.left_out):
            return
        # Info, not a warning: waiting for the budget is how a poll fits it; a lasting
        # shortage shows as a stretched effective interval, which the poller says once.
        log.info(
            "poll throttled",
            extra={
                "source": str(self.ref),
                "rate_limit": self.config.rate_limit,
                "delayed": tally.delayed,
                "waited_s": round(tally.waited, 3),
                "left_out": ", ".join(tally.left_out),
            },
        )

    def _live_event_entity(self, item: Mapping[str, Any]) -> Entity:
        status = parse.text(item.get("encode_status"))
        sources = item.get("input_sources")
        return Entity(
            LIVE_EVENT_KIND,
            {"merchant": self.config.merchant_id, "live_event": str(item["id"])},
            {
                "ref_id": parse.text(item.get("ref_id")),
                "name": parse.text(item.get("name")) or "",
                "encode_status": status,
                "running": status == ENCODE_STATUS_RUNNING,
                "live_encode_start_at": parse.iso_epoch(item.get("live_encode_start_at")),
                "live_encode_end_at": parse.iso_epoch(item.get("live_encode_end_at")),
                "created_at": parse.iso_epoch(item.get("created_at")),
                "updated_at": parse.iso_epoch(item.get("updated_at")),
                "input_sources": len(sources) if isinstance(sources, list) else 0,
                "media_id": parse.text(item.get("media_id")),
                "live_event_profile_id": parse.text(item.get("live_event_profile_id")),
                "ad_insertion": item.get("enable_ad_insertion_flag") is True,
                "live_to_file": item.get("enable_live_to_file_flag") is True,
            },
        )

    def _job_entity(self, item: Mapping[str, Any], observed_at: float) -> Entity:
        return Entity(
            JOB_KIND,
            {"merchant": self.config.merchant_id, "job": str(item["id"])},
            {
                "ref_id": parse.text(item.get("ref_id")),
                "name": parse.text(item.get("name")) or "",
                "media_id": parse.text(item.get("media_id")),
                "encode_status": parse.integer(item.get("encode_status")),
                "source_type": parse.text(item.get("source_type")),
                "job_profile_id": parse.text(item.get("job_profile_id")),
                "created_at": parse.iso_epoch(item.get("created_at")),
                "updated_at": parse.iso_epoch(item.get("updated_at")),
                "observed_at": observed_at,
            },
        )

    # --- actions (target: a live event id or `ref:<ref_id>`)

    async def get_live_event(self, target: str) -> Entity:
        body = await self.client.live_event("GET", target, max_wait=self.action_max_wait)
        return self._event_or_raise(body, f"GET live_events/{target}")

    async def start_live_event(self, target: str) -> Entity | None:
        return self._event_or_none(await self._action(target, "start"))

    async def stop_live_event(self, target: str) -> Entity | None:
        return self._event_or_none(await self._action(target, "stop"))

    async def reset_live_event(self, target: str) -> None:
        await self._action(target, "reset")

    async def get_job(self, target: str) -> Entity:
        body = await self.client.get_job(target, max_wait=self.action_max_wait)
        if not isinstance(body, dict) or "id" not in body:
            raise SourceError(BAD_RESPONSE, f"GET jobs/{target}: answer is not a job")
        return self._job_entity(body, self._clock())

    async def _action(self, target: str, action: str) -> Any:
        body = await self.client.live_event("POST", target, action, max_wait=self.action_max_wait)
        log.info(
            "live event action done",
            extra={"source": str(self.ref), "live_event": target, "action": action},
        )
        return body

    def _event_or_raise(self, body: Any, what: str) -> Entity:
        event = self._event_or_none(body)
        if event is None:
            raise SourceError(BAD_RESPONSE, f"{what}: answer is not a live event")
        return event

    def _event_or_none(self, body: Any) -> Entity | None:
        if isinstance(body, dict) and isinstance(body.get("id"), str | int):
            return self._live_event_entity(body)
        return None

    async def restart_live_event(
        self,
        target: str,
        *,
        poll_interval: float = 5.0,
        deadline: float = 120.0,
        until: Iterable[str] = (ENCODE_STATUS_RUNNING,),
    ) -> RestartResult:
        """stop → reset → start (the API refuses a start after a stop without a reset), then
        read the event every `poll_interval` s until its encode_status is one of `until`, for
        at most `deadline` s. A stop the API refuses (already stopped) does not end the
        restart; any other failure does, with RestartError saying at which step."""
        wanted = frozenset(until)
        started_at = self._clock()
        steps: list[RestartStep] = []
        status: str | None = None
        fields = {"source": str(self.ref), "live_event": target}

        def result(ok: bool) -> RestartResult:
            return RestartResult(target, ok, tuple(steps), status, started_at, self._clock())

        def fail(step: str, cause: SourceError) -> RestartError:
            steps.append(RestartStep(step, False, self._clock(), status, str(cause)))
            log.warning("restart failed", extra={**fields, "step": step, "error": str(cause)})
            return RestartError(step, cause, result(False))

        for step in ("stop", "reset", "start"):
            try:
                event = self._event_or_none(await self._action(target, step))
            except SourceError as exc:
                if step == "stop" and exc.status == 400:
                    steps.append(RestartStep(step, False, self._clock(), status, str(exc)))
                    continue
                raise fail(step, exc) from exc
            status = _status_of(event, status)
            steps.append(RestartStep(step, True, self._clock(), status))

        wait_until = self._clock() + deadline
        while status not in wanted:
            remaining = wait_until - self._clock()
            if remaining <= 0:
                cause = SourceError(
                    TIMEOUT,
                    f"encode_status still {status} after {deadline:g}s, wanted {sorted(wanted)}",
                )
                raise fail("wait", cause)
            await self._sleep(min(poll_interval, remaining))
            budget = min(self.action_max_wait, max(0.0, wait_until - self._clock()))
            try:
                body = await self.client.live_event("GET", target, max_wait=budget)
                status = _status_of(self._event_or_none(body), status)
            except SourceError as exc:
                if exc.reason == UNAUTHORIZED or exc.status == 404:
                    raise fail("wait", exc) from exc
                log.info("restart status read failed", extra={**fields, "error": str(exc)})
        steps.append(RestartStep("wait", True, self._clock(), status))
        log.info("restart done", extra={**fields, "encode_status": status})
        return result(True)


def _status_of(event: Entity | None, default: str | None) -> str | None:
    if event is None:
        return default
    value = event.fields.get("encode_status")
    return value if isinstance(value, str) else default

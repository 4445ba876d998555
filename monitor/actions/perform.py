"""What each action does once the guard let it through: look up the verb by the target's
entity kind (the registry; never the vendor), call it, and verify where the upstream allows.
HLS dumps are saved before `:startHlsDump`, so that a job stops them after `duration` even
across a restart."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from monitor.actions.audit import ActionLog, Dump
from monitor.actions.guard import Attempt, Calls
from monitor.sources import registry
from monitor.sources.base import Source
from monitor.sources.verbs import VerbResult

# Parameters the runner reads and the verbs do not need to see.
RUNNER_KEYS = ("after", "duration", "on_resolve")


class Performer:
    def __init__(
        self,
        audit: ActionLog,
        source_of: Callable[[Attempt], Source | None],
        dumps_root: Path,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ):
        self.audit = audit
        self.source_of = source_of
        self.dumps_root = dumps_root
        self.clock = clock
        self.sleep = sleep

    def _params(self, attempt: Attempt, **more: Any) -> dict[str, Any]:
        params = {k: v for k, v in attempt.params.items() if k not in RUNNER_KEYS}
        if self.sleep is not None:
            params["_sleep"] = self.sleep
        return {**params, **more}

    def _source(self, attempt: Attempt) -> Source:
        source = self.source_of(attempt)
        if source is None:
            raise LookupError(f"source {attempt.target.source} is not running")
        return source

    async def __call__(self, attempt: Attempt, attempt_id: int, calls: Calls) -> VerbResult:
        verb = registry.verb(attempt.target.kind, attempt.action)
        if verb is None:
            raise LookupError(f"{attempt.target.kind} has no {attempt.action} action")
        source = self._source(attempt)
        labels = attempt.target.labels
        if attempt.action == "hls_dump":
            return await self._hls_dump(attempt, attempt_id, calls, source)
        result = await verb(source, labels, self._params(attempt))
        calls.add(attempt.action, result.ok, result.detail)
        if not result.ok or attempt.action != "restart":
            return result
        verified = await self.verify(attempt, calls, source)
        return VerbResult(verified.ok, f"{result.detail}; {verified.detail}", verified.entity)

    async def verify(
        self, attempt: Attempt, calls: Calls, source: Source | None = None
    ) -> VerbResult:
        """The restart's `restart.verify` helper; without one, the verb's word is taken."""
        verify = registry.verb(attempt.target.kind, f"{attempt.action}.verify")
        if verify is None:
            return VerbResult(True, "done (this kind cannot be verified)")
        source = source or self._source(attempt)
        result = await verify(source, attempt.target.labels, self._params(attempt))
        calls.add("verify", result.ok, result.detail)
        return result

    # -- HLS dumps --------------------------------------------------------------------------

    def dump_path(self, attempt: Attempt, dump_id: str) -> Path:
        """`output_path` below the dumps root: relative ones are joined to it, absolute ones
        must lie inside it; the default is <root>/<vhost>/<app>/<stream>/<dump id>."""
        root = self.dumps_root.resolve()
        given = attempt.params.get("output_path")
        if given:
            path = Path(given)
            path = (path if path.is_absolute() else root / path).resolve()
        else:
            labels = attempt.target.labels
            parts = [labels.get(k, "") for k in ("vhost", "app", "stream")]
            path = root.joinpath(*[p for p in parts if p], dump_id).resolve()
        if path == root or root not in path.parents:
            raise ValueError(f"output_path {given!r} is not below the dumps root {root}")
        return path

    async def _hls_dump(
        self, attempt: Attempt, attempt_id: int, calls: Calls, source: Source
    ) -> VerbResult:
        verb = registry.verb(attempt.target.kind, "hls_dump")
        assert verb is not None
        dump_id = f"streamwatch-{attempt_id}"
        path = self.dump_path(attempt, dump_id)
        info_file = attempt.params.get("info_file") or str(path / "info.xml")
        output = attempt.params.get("output_stream_name") or attempt.target.labels.get("stream", "")
        now = self.clock()
        duration = float(attempt.params.get("duration") or 60.0)
        user_data = json.dumps(
            {
                "alertname": attempt.alertname,
                "fingerprint": attempt.fingerprint,
                "labels": dict(attempt.labels),
                "firedAt": attempt.fired_at,
                "requestedBy": attempt.requested_by,
            },
            sort_keys=True,
        )
        dump = Dump(
            dump_id,
            attempt.target,
            output,
            str(path),
            info_file,
            now,
            now + duration,
            None,
            "starting",
            0,
        )
        self.audit.add_dump(dump, attempt_id)  # saved first: its stop job survives a restart
        path.mkdir(parents=True, exist_ok=True)
        params = self._params(
            attempt,
            id=dump_id,
            output_path=str(path),
            info_file=info_file,
            output_stream_name=output,
            user_data=user_data,
        )
        try:
            result = await verb(source, attempt.target.labels, params)
        except BaseException:
            self.audit.set_dump(
                dump_id, state="ended", stopped_at=self.clock(), detail="start failed"
            )
            raise
        calls.add("hls_dump", result.ok, result.detail)
        self.audit.set_dump(
            dump_id, state="running" if result.ok else "ended", detail=result.detail[:500]
        )
        return result

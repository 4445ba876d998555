"""HLS dumps after they started: stopped with `:stopHlsDump` once past their end (a saved job,
so a daemon restarted mid-dump still stops it on time, and one that was down stops it at
start-up), their info file read back, and the disk budget kept by deleting the oldest dumps
this daemon made, never anything else."""

from __future__ import annotations

import logging
import shutil
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

from monitor.actions.audit import ActionLog, Dump
from monitor.actions.config import DumpsConfig
from monitor.model import Target
from monitor.sources import registry
from monitor.sources.base import Source, SourceError

log = logging.getLogger(__name__)

LIVE = ("starting", "running")
FINISHED = ("stopped", "ended")
INFO_MAX = 4 * 1024 * 1024  # an info file larger than this is not read


def read_info_status(path: str | None) -> str | None:
    """`<Status>` of a dump's info file: `<DumpInfo>` on a real OME 0.20, `<HLSDumpInfo>` in
    the docs; None when it cannot be read from here."""
    if not path:
        return None
    try:
        file = Path(path)
        if file.stat().st_size > INFO_MAX:
            return None
        root = ET.fromstring(file.read_bytes())
    except (OSError, ET.ParseError):
        return None
    if root.tag not in ("DumpInfo", "HLSDumpInfo"):
        return None
    status = root.findtext("Status")
    return status.strip() if status else None


def dir_bytes(path: Path) -> int:
    total = 0
    try:
        for file in path.rglob("*"):
            if file.is_file() and not file.is_symlink():
                total += file.stat().st_size
    except OSError:
        pass
    return total


class Dumps:
    def __init__(
        self,
        audit: ActionLog,
        config: DumpsConfig,
        root: Path,
        source_of: Callable[[Target], Source | None],
        *,
        clock: Callable[[], float] = time.time,
    ):
        self.audit = audit
        self.config = config
        self.root = root
        self.source_of = source_of
        self.clock = clock

    def next_stop(self) -> float | None:
        rows = self.audit.dumps(where="state IN ('starting', 'running')")
        return min((d.stop_at for d in rows), default=None)

    async def stop_due(self) -> int:
        """Stop every dump past its end; returns how many were stopped."""
        now = self.clock()
        stopped = 0
        for dump in self.audit.dumps(
            where="state IN ('starting', 'running') AND stop_at <= ?", params=(now,)
        ):
            if await self._stop(dump):
                stopped += 1
        if stopped:
            self.keep_budget()
        return stopped

    async def _stop(self, dump: Dump) -> bool:
        fields = {"dump": dump.id, "source": str(dump.target.source)}
        verb = registry.verb(dump.target.kind, "hls_dump.stop")
        source = self.source_of(dump.target)
        if verb is None or source is None:
            if source is None:
                log.warning("dump not stopped: source not running", extra=fields)
            return False
        try:
            result = await verb(
                source,
                dump.target.labels,
                {"id": dump.id, "output_stream_name": dump.output_stream_name},
            )
        except SourceError as exc:
            if not await self._listed(dump, source):
                # OME no longer knows the dump (its stream was restarted or ended): over.
                self.audit.set_dump(
                    dump.id, state="ended", stopped_at=self.clock(), detail=str(exc)[:500]
                )
                return True
            log.warning("dump stop failed", extra={**fields, "error": str(exc)})
            return False
        status = read_info_status(dump.info_file)
        detail = result.detail + (f"; info file: {status}" if status else "")
        self.audit.set_dump(
            dump.id,
            state="stopped",
            stopped_at=self.clock(),
            bytes=dir_bytes(Path(dump.output_path)),
            detail=detail[:500],
        )
        log.info("dump stopped", extra={**fields, "status": status or "unknown"})
        return True

    async def _listed(self, dump: Dump, source: Source) -> bool:
        verb = registry.verb(dump.target.kind, "hls_dump.status")
        if verb is None:
            return True
        try:
            result = await verb(
                source,
                dump.target.labels,
                {"id": dump.id, "output_stream_name": dump.output_stream_name},
            )
        except SourceError as exc:
            return exc.status != 404
        return result.ok and result.detail == "enabled"

    def keep_budget(self) -> list[str]:
        """Delete the oldest finished dumps of this daemon until at most `max_dumps` remain
        and their bytes fit `max_bytes`. Only directories recorded as this daemon's dumps,
        below the dumps root, are ever deleted."""
        kept = self.audit.dumps(where="state IN ('stopped', 'ended')")
        live = self.audit.dumps(where="state IN ('starting', 'running')")
        count = len(kept) + len(live)
        total = sum(d.bytes for d in kept)
        root = self.root.resolve()
        deleted: list[str] = []
        for dump in kept:  # oldest first
            if count <= self.config.max_dumps and total <= self.config.max_bytes:
                break
            path = Path(dump.output_path).resolve()
            if root in path.parents:
                shutil.rmtree(path, ignore_errors=True)
            self.audit.set_dump(dump.id, state="deleted", detail="deleted to keep the disk budget")
            log.info("dump deleted", extra={"dump": dump.id, "bytes": dump.bytes})
            count -= 1
            total -= dump.bytes
            deleted.append(dump.id)
        return deleted

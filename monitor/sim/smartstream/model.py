"""The SmartSTREAM simulator's model: encode statuses, error codes, live events and jobs, and
the documents' time formats.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from aiohttp import web

ENCODE_STATUS_PENDING = "encode_status_pending"
ENCODE_STATUS_RUNNING = "encode_status_running"
ENCODE_STATUS_STOPPED = "encode_status_stopped"  # [sim] value not published
ENCODE_STATUS_ERROR = "encode_status_error"  # [sim] value not published

JOB_QUEUED, JOB_ENCODING, JOB_COMPLETE, JOB_FAILED = 0, 1, 2, 3  # [sim] meanings not published
MESSAGES = {
    "BAD_REQUEST": "Invalid request parameters",
    "UNAUTHORIZED": "Authentication failed",
    "LIVE_EVENT_NOT_FOUND": "The specified live event does not exist",
    "JOB_NOT_FOUND": "The specified job does not exist",
    "FAILED_TO_START": "Failed to start",
    "FAILED_TO_STOP": "Failed to stop",
    "FAILED_TO_RESET": "Failed to reset",
    "FAILED_TO_CANCEL": "Failed to cancel",
    "FAILED_TO_SAVE": "Failed to save",
    "FAILED_TO_UPDATE": "Failed to update",
    "FAILED_TO_DELETE": "Failed to delete",
    "SERVER_ERROR": "An unexpected error has occurred",
    "TOO_MANY_REQUESTS": "Too many requests",
}

JST = timezone(timedelta(hours=9))
LIVE_SORT = ("created_at", "updated_at", "name", "id", "ref_id", "encode_status")
JOB_SORT = ("created_at", "updated_at", "name", "id", "ref_id", "encode_status")


class SimError(Exception):
    """An API error the handler answers with the documented body."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(code)
        self.status = status
        self.code = code
        self.message = message or MESSAGES.get(code, code)
        self.headers = headers or {}

    def response(self) -> web.Response:
        return web.json_response(
            {"code": self.code, "message": self.message}, status=self.status, headers=self.headers
        )


def iso(epoch: float | None, tz: timezone = JST) -> str | None:
    """Epoch → the documents' format, e.g. `2018-03-14T14:42:04.632+09:00`."""
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, tz).isoformat(timespec="milliseconds")


def iso_utc(epoch: float) -> str:
    """Epoch → `2017-10-01T00:00:00.000Z`, the auth-token `expiration` format."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def hex_id(seed: str) -> str:
    return hashlib.md5(seed.encode()).hexdigest()


@dataclass
class LiveEvent:
    id: str
    ref_id: str
    name: str
    encode_status: str
    created_at: float
    updated_at: float
    description: str = ""
    live_event_profile_id: str = "c2e31a9d22d9487dae8d837c38231f81"
    input_sources: list[str] = field(default_factory=list)
    media_id: str | None = None
    enable_ad_insertion_flag: bool = False
    enable_live_to_file_flag: bool = False
    live_encode_start_at: float | None = None
    live_encode_end_at: float | None = None
    needs_reset: bool = False
    pending_since: float | None = None

    def to_json(self, merchant_id: str) -> dict[str, Any]:
        return {
            "merchant_id": merchant_id,
            "id": self.id,
            "ref_id": self.ref_id,
            "name": self.name,
            "description": self.description,
            "enable_ad_insertion_flag": self.enable_ad_insertion_flag,
            "live_event_profile_id": self.live_event_profile_id,
            "input_sources": list(self.input_sources),
            "media_id": self.media_id,
            "encode_status": self.encode_status,
            "enable_live_to_file_flag": self.enable_live_to_file_flag,
            "live_encode_start_at": iso(self.live_encode_start_at),
            "live_encode_end_at": iso(self.live_encode_end_at),
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
            "preview": {"src": f"https://vod-sim.smartstream.jp/live/preview_{self.id}_image.jpg"},
        }


@dataclass
class Job:
    id: str
    ref_id: str
    name: str
    encode_status: int
    created_at: float
    updated_at: float
    job_profile_id: str = "1"
    media_id: str | None = None
    description: str = ""
    source_type: str = "url"
    source_url: str = ""

    def to_json(self, merchant_id: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "ref_id": self.ref_id,
            "name": self.name,
            "merchant_id": merchant_id,
            "job_profile_id": self.job_profile_id,
            "media_id": self.media_id,
            "description": self.description,
            "encode_status": self.encode_status,
            "source_type": self.source_type,
            "source_url": self.source_url,
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
        }


def status_of(code: str | None) -> int:
    """The HTTP status that goes with an error code ([sim]: the documents pair only some)."""
    if code is None:
        return 500
    if code == "UNAUTHORIZED":
        return 401
    if code == "TOO_MANY_REQUESTS":
        return 429
    if code.endswith("_NOT_FOUND"):
        return 404
    if code == "BAD_REQUEST" or code.startswith("FAILED_TO_"):
        return 400
    return 500

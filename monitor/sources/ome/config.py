"""The config of one OME server (`sources.ome[]`)."""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator

from monitor.schema import Url
from monitor.sources.settings import Interval, SourceConfig, Timeout


class OmeSourceConfig(SourceConfig):
    url: Url
    access_token: SecretStr
    interval: Interval = 5.0
    timeout: Timeout = 3.0
    include: list[str] = Field(default_factory=lambda: ["*/*"])
    exclude: list[str] = Field(default_factory=list)
    expected_streams: list[str] = Field(default_factory=list)
    concurrency: int = Field(16, ge=1, le=256)
    stream_info: bool = True
    # Stream info (tracks, source type) is fetched for a new stream, when its createdTime
    # changes (republished), and every Nth poll; the cached info is reported in between.
    stream_info_every: int = Field(10, ge=1, le=1000)
    pushes: bool = True
    records: bool = True

    @field_validator("include", "exclude")
    @classmethod
    def _vhost_app_globs(cls, globs: list[str]) -> list[str]:
        for glob in globs:
            if glob.count("/") != 1:
                raise ValueError(f"{glob!r}: expected a VHOST/APP glob such as '*/*'")
        return globs

    @field_validator("expected_streams")
    @classmethod
    def _stream_paths(cls, paths: list[str]) -> list[str]:
        for path in paths:
            parts = path.split("/")
            if len(parts) != 3 or not all(parts):
                raise ValueError(f"{path!r}: expected VHOST/APP/STREAM")
        return paths

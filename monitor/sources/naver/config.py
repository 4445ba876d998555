"""The config of one NAVER Cloud Live Station account (`sources.naver[]`)."""

from __future__ import annotations

from pydantic import Field, SecretStr

from monitor.schema import Url
from monitor.sources.settings import Interval, SourceConfig, Timeout


class NaverSourceConfig(SourceConfig):
    url: Url = "https://livestation.apigw.ntruss.com"
    access_key: SecretStr
    secret_key: SecretStr
    region: str = "KR"
    interval: Interval = 30.0
    timeout: Timeout = 10.0
    page_size: int = Field(100, ge=1, le=100)
    callback_token: SecretStr | None = None
    events: bool = True

"""The config of one SmartSTREAM merchant (`sources.smartstream[]`)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, SecretStr, model_validator

from monitor.schema import Url
from monitor.sources.settings import Interval, SourceConfig, Timeout


class SmartstreamSourceConfig(SourceConfig):
    url: Url = "https://ovp-s-api.smartstream.ne.jp"
    merchant_id: Annotated[str, Field(min_length=1)]
    api_key: SecretStr
    token: SecretStr | None = None
    mail_address: str | None = None
    password: SecretStr | None = None
    interval: Interval = 30.0
    timeout: Timeout = 10.0
    rate_limit: int = Field(50, ge=1, description="requests per minute, polls and actions together")
    page_size: int = Field(100, ge=1, le=1000)
    jobs: bool = True

    @model_validator(mode="after")
    def _credentials(self) -> SmartstreamSourceConfig:
        if self.token is None and not (self.mail_address and self.password):
            raise ValueError("give either token, or mail_address and password")
        return self

"""The `notify:` section: webhooks, MQTT and Alertmanager, with Alertmanager's defaults."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, SecretStr, field_validator

from monitor.labels import Matcher
from monitor.schema import Strict, Url, duration_between

GroupWait = duration_between(0.0, 3600.0)
GroupInterval = duration_between(1.0, 86400.0)
RepeatInterval = duration_between(60.0, 30 * 86400.0)
Timeout = duration_between(0.1, 300.0)
ResendInterval = duration_between(1.0, 3600.0)
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64)]


def _matcher(value: Any) -> Any:
    return Matcher.parse(value) if isinstance(value, str) else value


MatcherText = Annotated[Matcher, BeforeValidator(_matcher)]


class WebhookConfig(Strict):
    model_config = Strict.model_config | {"arbitrary_types_allowed": True}

    name: Name
    url: Url
    match: list[MatcherText] = Field(default_factory=list)
    group_by: list[str] = Field(default_factory=lambda: ["alertname"])
    group_wait: GroupWait = 30.0  # type: ignore[valid-type]
    group_interval: GroupInterval = 300.0  # type: ignore[valid-type]
    repeat_interval: RepeatInterval = 4 * 3600.0  # type: ignore[valid-type]
    send_resolved: bool = True
    max_alerts: Annotated[int, Field(ge=0, le=1000)] = 0  # 0: all (at most 1000, see MAX_GROUP)
    hmac_secret: SecretStr | None = None
    timeout: Timeout = 10.0  # type: ignore[valid-type]

    @field_validator("url")
    @classmethod
    def _no_credentials_in_url(cls, value: str) -> str:
        # A user:password@ URL would end up in logs and errors; secrets go in hmac_secret.
        if re.match(r"^https?://[^/]*@", value):
            raise ValueError("credentials in the URL are refused: use hmac_secret")
        return value


class MqttConfig(Strict):
    url: Annotated[str, Field(pattern=r"^mqtts?://[^/\s@]+(:\d+)?/?$")] = "mqtt://127.0.0.1:1883"
    username: str | None = None
    password: SecretStr | None = None
    prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_./-]*$", max_length=128)] = (
        "streamwatch"
    )
    qos: Literal[0, 1, 2] = 1
    client_id: str | None = None
    # TLS (implied by mqtts://): a CA file to trust instead of the system's, a client cert.
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    tls_insecure: bool = False  # do not check the broker's host name (testing only)
    keepalive: duration_between(5.0, 3600.0) = 60.0  # type: ignore[valid-type]
    max_queue: Annotated[int, Field(ge=10, le=1_000_000)] = 10_000
    commands: bool = True  # subscribe to <prefix>/commands/actions

    @property
    def tls(self) -> bool:
        return self.url.startswith("mqtts://")

    @property
    def host_port(self) -> tuple[str, int]:
        rest = self.url.split("://", 1)[1].rstrip("/")
        host, _, port = rest.rpartition(":")
        if not host:
            return rest, 8883 if self.tls else 1883
        return host, int(port)


class AlertmanagerConfig(Strict):
    url: Url
    resend_interval: ResendInterval = 60.0  # type: ignore[valid-type]
    timeout: Timeout = 10.0  # type: ignore[valid-type]

    @field_validator("url")
    @classmethod
    def _no_credentials_in_url(cls, value: str) -> str:
        if re.match(r"^https?://[^/]*@", value):
            raise ValueError("credentials in the URL are refused")
        return value


class NotifyConfig(Strict):
    webhooks: list[WebhookConfig] = Field(default_factory=list)
    mqtt: MqttConfig | None = None
    alertmanagers: list[AlertmanagerConfig] = Field(default_factory=list)

    @field_validator("webhooks")
    @classmethod
    def _unique_names(cls, value: list[WebhookConfig]) -> list[WebhookConfig]:
        names = [w.name for w in value]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate webhook name(s) {', '.join(duplicates)}")
        return value

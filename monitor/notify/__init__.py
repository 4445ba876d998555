"""Outbox consumers that tell people: webhooks, MQTT, Alertmanager (the notification issue).

Each notifier is an outbox consumer (so a dead endpoint delays only itself) with its own task
(the webhook's group sender, the Alertmanager resender, the MQTT connection). The route
`POST /api/v1/alertmanager` is always offered: it takes Alertmanager's webhooks for actions.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from monitor.component import Deps, Parts


@contextlib.asynccontextmanager
async def component(deps: Deps) -> AsyncIterator[Parts]:
    import aiohttp
    from prometheus_client import CollectorRegistry

    from monitor.notify.alertmanager import AlertmanagerPusher, receive_route
    from monitor.notify.common import NotifyMetrics
    from monitor.notify.mqtt import MqttNotifier
    from monitor.notify.tables import MIGRATIONS
    from monitor.notify.webhook import WebhookNotifier

    deps.store.migrate_part("notify", MIGRATIONS)
    config = deps.config.notify
    forget_unconfigured(deps, config)
    configured = bool(config.webhooks or config.alertmanagers or config.mqtt)
    # The families exist only where something notifies (an idle daemon exports none).
    metrics = NotifyMetrics(deps.registry if configured else CollectorRegistry())
    parts = Parts(routes=[receive_route(deps)])
    tasks: list[asyncio.Task[None]] = []
    mqtt: MqttNotifier | None = None
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=32),
        trust_env=False,
        cookie_jar=aiohttp.DummyCookieJar(),
    )
    try:
        for hook in config.webhooks:
            notifier = WebhookNotifier(
                hook, deps.store, session, metrics, clock=deps.clock, base_url=deps.base_url
            )
            parts.consumers.append(notifier)
            tasks.append(asyncio.create_task(notifier.run(), name=f"notify:{notifier.name}"))
        for am in config.alertmanagers:
            pusher = AlertmanagerPusher(
                am, deps.store, session, metrics, clock=deps.clock, base_url=deps.base_url
            )
            parts.consumers.append(pusher)
            tasks.append(asyncio.create_task(pusher.run(), name=f"notify:{pusher.name}"))
        if config.mqtt is not None:
            mqtt = MqttNotifier(config.mqtt, deps, metrics)
            parts.consumers.append(mqtt)
            tasks.append(asyncio.create_task(mqtt.run(), name="notify:mqtt"))
        yield parts
    finally:
        if mqtt is not None:
            await mqtt.stop()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await session.close()


def forget_unconfigured(deps: Deps, config: Any) -> None:
    """Groups and pending pushes of webhooks and Alertmanagers no longer in the config."""
    hooks = [hook.name for hook in config.webhooks]
    ams = [am.url for am in config.alertmanagers]
    with deps.store.transaction():
        for table in ("notify_webhook_alert", "notify_webhook_group"):
            deps.store.execute(
                f"DELETE FROM {table} WHERE receiver NOT IN ({','.join('?' * len(hooks))})",
                hooks,
            )
        deps.store.execute(
            f"DELETE FROM notify_am_alert WHERE am NOT IN ({','.join('?' * len(ams))})", ams
        )

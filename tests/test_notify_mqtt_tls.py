"""MQTT over TLS with a username and password, on a real mosquitto: the notifier trusts the
configured CA, logs in, and publishes; a broker whose certificate it cannot trust, or a wrong
password, gets nothing."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import ssl
import subprocess
from pathlib import Path

import aiomqtt
import pytest
from prometheus_client import CollectorRegistry
from test_notify_mqtt import MOSQUITTO, FakeSources, free_port

from monitor.component import ActionGate, Deps
from monitor.notify.common import NotifyMetrics
from monitor.notify.config import NotifyConfig
from monitor.notify.mqtt import MqttNotifier

USER, PASSWORD = "sw", "mqtt-Pa55word"


def openssl(*args: str) -> None:
    path = shutil.which("openssl")
    assert path, "openssl is missing (Debian's openssl package)"
    subprocess.run([path, *args], check=True, capture_output=True, timeout=60)


def certificates(tmp: Path, name: str) -> tuple[Path, Path, Path]:
    """A CA and a broker certificate for 127.0.0.1 signed by it: (ca, cert, key)."""
    ca_key, ca = tmp / f"{name}-ca.key", tmp / f"{name}-ca.pem"
    key, csr, cert = tmp / f"{name}.key", tmp / f"{name}.csr", tmp / f"{name}.pem"
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
            f"/CN={name} test CA", "-keyout", str(ca_key), "-out", str(ca))  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
            "-keyout", str(key), "-out", str(csr))  # fmt: skip
    ext = tmp / f"{name}.ext"
    ext.write_text("subjectAltName = IP:127.0.0.1, DNS:localhost\n")
    openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
            "-CAcreateserial", "-days", "1", "-extfile", str(ext), "-out", str(cert))  # fmt: skip
    return ca, cert, key


def password_file(tmp: Path) -> Path:
    passwords = tmp / "passwords"
    tool = shutil.which("mosquitto_passwd")
    assert tool, "mosquitto_passwd is missing: apt-get install mosquitto"
    subprocess.run([tool, "-b", "-c", str(passwords), USER, PASSWORD], check=True, timeout=30)
    return passwords


@pytest.fixture
async def tls_broker(tmp_path):
    ca, cert, key = certificates(tmp_path, "broker")
    passwords = password_file(tmp_path)
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {passwords}\n"
        f"cafile {ca}\ncertfile {cert}\nkeyfile {key}\npersistence false\nlog_dest stderr\n"
        "log_type all\n" + ("user root\n" if os.geteuid() == 0 else "")
        # Started as root, mosquitto drops to its own user, which cannot read a key in pytest's
        # private temporary directory; these are throwaway test keys.
    )
    path = shutil.which("mosquitto") or shutil.which(MOSQUITTO)
    if path is None:
        pytest.fail("mosquitto is not installed: apt-get install mosquitto (tests need it)")
    process = await asyncio.create_subprocess_exec(
        path, "-c", str(conf), stderr=asyncio.subprocess.PIPE
    )
    assert process.stderr is not None
    async with asyncio.timeout(10):
        while b"Opening ipv4 listen socket" not in (line := await process.stderr.readline()):
            assert line, "mosquitto exited"
    drain = asyncio.create_task(_drain(process.stderr))
    try:
        yield port, ca
    finally:
        process.terminate()
        await process.wait()
        await drain


async def _drain(stream: asyncio.StreamReader) -> None:
    while await stream.readline():
        pass


def notifier(port: int, ca: Path, password: str) -> MqttNotifier:
    config = NotifyConfig.model_validate(
        {
            "mqtt": {
                "url": f"mqtts://127.0.0.1:{port}",
                "username": USER,
                "password": password,
                "ca_file": str(ca),
                "prefix": "sw",
            }
        }
    ).mqtt
    assert config is not None
    deps = Deps(
        config=None,
        store=None,  # type: ignore[arg-type]
        registry=CollectorRegistry(),
        engine=None,  # type: ignore[arg-type]
        sources=FakeSources(),  # type: ignore[arg-type]
        actions=ActionGate(),
    )
    made = MqttNotifier(config, deps, NotifyMetrics(deps.registry))
    made.connect_wait = 0.5
    return made


async def status(port: int, ca: Path) -> bytes:
    context = ssl.create_default_context(cafile=str(ca))
    async with (
        asyncio.timeout(10),
        aiomqtt.Client(
            "127.0.0.1", port, username=USER, password=PASSWORD, tls_context=context
        ) as client,
    ):
        await client.subscribe("sw/status", qos=1)
        async for message in client.messages:
            return bytes(message.payload)  # type: ignore[arg-type]
    raise AssertionError("no status")


async def test_tls_with_a_password_publishes_its_status(tls_broker):
    port, ca = tls_broker
    made = notifier(port, ca, PASSWORD)
    task = asyncio.create_task(made.run())
    try:
        async with asyncio.timeout(10):
            await made._connected.wait()
        assert await status(port, ca) == b"online"
    finally:
        await made.stop()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.mark.parametrize("case", ["untrusted broker", "wrong password"])
async def test_an_untrusted_broker_or_a_wrong_password_gets_nothing(tls_broker, tmp_path, case):
    port, ca = tls_broker
    other_ca, _, _ = certificates(tmp_path, "other")
    made = notifier(port, other_ca if case == "untrusted broker" else ca,
                    PASSWORD if case == "untrusted broker" else "wrong")  # fmt: skip
    task = asyncio.create_task(made.run())
    try:
        # Given time for several connection attempts, it never connects.
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(3):
                await made._connected.wait()
    finally:
        await made.stop()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

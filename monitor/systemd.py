"""sd_notify without a dependency: READY, RELOADING, STOPPING and the watchdog ping are one
datagram each to $NOTIFY_SOCKET."""

from __future__ import annotations

import os
import socket
import time


def notify(state: str) -> bool:
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # abstract socket namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError:
        return False
    return True


def ready() -> bool:
    return notify("READY=1\nSTATUS=running")


def reloading() -> bool:
    # Type=notify-reload (systemd 253+) wants MONOTONIC_USEC with RELOADING=1.
    return notify(f"RELOADING=1\nMONOTONIC_USEC={time.monotonic_ns() // 1000}")


def stopping() -> bool:
    return notify("STOPPING=1")


def watchdog_interval() -> float | None:
    """Half of WATCHDOG_USEC, the ping period systemd recommends, or None without a watchdog."""
    usec = os.environ.get("WATCHDOG_USEC")
    if not usec or not usec.isdigit():
        return None
    pid = os.environ.get("WATCHDOG_PID")
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return None
    return int(usec) / 2_000_000

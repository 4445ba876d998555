"""What stops the daemon from starting is said in one line that names the thing and the fix:
no traceback, exit non-zero, nothing left running. `check` finds what it can beforehand."""

from __future__ import annotations

import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from monitor.cli import main
from monitor.store import DB_NAME, Store


def config(tmp_path: Path, listen: str = "127.0.0.1:0", state_dir: Path | None = None) -> Path:
    path = tmp_path / "streamwatch.yaml"
    path.write_text(
        f"listen: {listen}\nstate_dir: {state_dir or tmp_path / 'state'}\nrule_files: []\n"
    )
    return path


def run(*args: str) -> subprocess.CompletedProcess[str]:
    """`streamwatch ARGS` in its own process, as systemd would start it."""
    return subprocess.run(
        [sys.executable, "-m", "monitor", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr and "Unclosed" not in result.stderr, result.stderr
    for needle in needles:
        assert needle in result.stderr, result.stderr


def test_port_in_use(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run("run", "-c", str(config(tmp_path, f"127.0.0.1:{port}")))
    one_line_error(
        result,
        f"streamwatch: cannot start: cannot listen on 127.0.0.1:{port}: address already in use",
        "is another streamwatch running?",
    )
    assert result.returncode == 1


@pytest.mark.parametrize(
    ("listen", "message"),
    [
        ("garbage", "expected HOST:PORT such as 127.0.0.1:9108"),
        ("localhost:99999", "port 99999 is out of range: 0..65535"),
    ],
)
def test_bad_listen_override(tmp_path, listen, message):
    result = run("run", "-c", str(config(tmp_path)), "--listen", listen)
    one_line_error(result, message)
    assert result.returncode == 2


def _file_state_dir(tmp_path: Path) -> Path:
    target = tmp_path / "not-a-dir"
    target.write_text("x")
    return target


def _empty(tmp_path: Path) -> Path:
    state = tmp_path / "state"
    state.mkdir()
    (state / DB_NAME).write_bytes(b"")
    return state


def _corrupt(tmp_path: Path) -> Path:
    state = tmp_path / "state"
    Store.in_dir(state).close()
    db = state / DB_NAME
    db.write_bytes(b"this is not SQLite" + db.read_bytes()[18:])
    return state


def _truncated(tmp_path: Path) -> Path:
    state = tmp_path / "state"
    store = Store.in_dir(state)
    store.save_alerts([], [], [(float(i), "firing", "g/r", "fp", "x" * 2000) for i in range(50)])
    store.close()
    db = state / DB_NAME
    db.write_bytes(db.read_bytes()[: 3 * 4096])
    return state


def _foreign(tmp_path: Path) -> Path:
    state = tmp_path / "state"
    state.mkdir()
    other = sqlite3.connect(state / DB_NAME)
    other.execute("CREATE TABLE photos (id INTEGER)")
    other.commit()
    other.close()
    return state


def _newer(tmp_path: Path) -> Path:
    state = tmp_path / "state"
    Store.in_dir(state).close()
    db = sqlite3.connect(state / DB_NAME)
    db.execute("PRAGMA user_version = 999")
    db.close()
    return state


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (_file_state_dir, "exists and is not a directory"),
        (_empty, "is empty (0 bytes)"),
        (_corrupt, "is not a readable SQLite database"),
        (_truncated, "move it away"),
        (_foreign, "is an SQLite database of something else"),
        (_newer, "schema version 999 is newer than this streamwatch knows"),
    ],
)
def test_unusable_state_is_named_by_run_and_by_check(tmp_path, capsys, make, message):
    state_dir = make(tmp_path)
    path = config(tmp_path, state_dir=state_dir)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    assert main(["check", "-c", str(path)]) == 1, "check catches it before the unit starts"
    assert message in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.rglob("*")) == before, "check changed nothing"
    result = run("run", "-c", str(path))
    one_line_error(result, "streamwatch: cannot start: state file", message)
    assert result.returncode == 1

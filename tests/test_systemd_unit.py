"""The shipped unit passes `systemd-analyze verify`, points at the install the README
describes, and names documentation that the package really installs."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).parent.parent
UNIT = ROOT / "systemd" / "streamwatch.service"
VENV_BIN = "/opt/streamwatch/bin/streamwatch"


def test_systemd_analyze_verifies_the_unit(tmp_path):
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing: .ci/run installs systemd"
    # Beside this Python (a venv's bin, not on PATH unless activated), else on PATH.
    beside = Path(sys.executable).parent / "streamwatch"
    streamwatch = str(beside) if beside.exists() else shutil.which("streamwatch")
    assert streamwatch, "the package is not installed (pip install -e .)"
    text = UNIT.read_text()
    assert VENV_BIN in text, "ExecStart points at the README's venv"
    # verify checks that the executables exist: use this machine's install for the check.
    unit = tmp_path / "streamwatch.service"
    unit.write_text(text.replace(VENV_BIN, streamwatch))
    done = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )
    complaints = [
        line for line in (done.stdout + done.stderr).splitlines() if "streamwatch.service" in line
    ]
    assert done.returncode == 0 and not complaints, done.stdout + done.stderr


def test_documentation_is_the_readme_the_package_installs():
    [documentation] = re.findall(r"^Documentation=(\S+)$", UNIT.read_text(), re.M)
    prefix = "file:///opt/streamwatch/"
    assert documentation.startswith(prefix)
    installed = documentation.removeprefix(prefix)  # relative to the venv
    data_files = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "data-files"
    ]
    directory, name = installed.rsplit("/", 1)
    assert name in data_files[directory]
    assert (ROOT / name).exists()


def test_file_limit_covers_the_connection_cap():
    from monitor.config import HttpConfig

    [limit] = re.findall(r"^LimitNOFILE=(\d+)$", UNIT.read_text(), re.M)
    assert int(limit) >= 4 * HttpConfig().max_connections

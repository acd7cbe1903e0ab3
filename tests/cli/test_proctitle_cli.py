"""Every party of a run names itself in ``ps``: role and email, forked or spawned."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cli.test_cli import TOY, cli
from tests.cli.test_crashes_cli import _env


def _cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs /proc")
@pytest.mark.parametrize("form", ["simulate-forked", "run-main-py-spawned"])
def test_each_party_process_says_its_role_and_email(tmp_path: Path, form: str):
    app = tmp_path / "toy_app"
    shutil.copytree(TOY, app, ignore=shutil.ignore_patterns("__pycache__", "main.py"))
    work = tmp_path / "work"
    rc = "num-server-rounds=100 slow-seconds=0.3"
    if form == "simulate-forked":
        args = ["simulate", str(app), "-n", "2"]
        want = {
            "do1@example.org": "syft_flwr data-owner do1@example.org",
            "do2@example.org": "syft_flwr data-owner do2@example.org",
            "researcher@example.org": "syft_flwr researcher researcher@example.org",
        }
    else:  # `run` starts each party as `python main.py` (a new process)
        boot = cli(
            "bootstrap", str(app), "-a", "ds@example.org", "-d", "a@example.org,b@x.org"
        )
        assert boot.returncode == 0, boot.stderr
        data = [tmp_path / "a", tmp_path / "b"]
        for d in data:
            d.mkdir()
        args = ["run", str(app), "-m", ",".join(map(str, data))]
        want = {
            "a@example.org": "syft_flwr data-owner a@example.org",
            "b@x.org": "syft_flwr data-owner b@x.org",
            "ds@example.org": "syft_flwr researcher ds@example.org",
        }
    proc = subprocess.Popen(
        [sys.executable, "-m", "syft_flwr", *args, "--workdir", str(work)]
        + ["--run-config", rc],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=_env(),
        start_new_session=True,
    )
    seen: dict[str, str] = {}
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                parties = json.loads((work / "parties.json").read_text())
            except (FileNotFoundError, ValueError):
                parties = []
            seen = {p["email"]: _cmdline(p["pid"]) for p in parties}
            if seen and all(seen.get(e) == t for e, t in want.items()):
                break
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    assert seen == want, out[-3000:]
    assert proc.returncode == 130, out[-3000:]

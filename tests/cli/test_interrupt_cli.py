"""Ctrl-C during ``simulate``: exit 130, "interrupted", the command that resumes.

SIGINT goes to the whole process group of a real ``syft_flwr simulate``, as a
terminal sends it; the printed command is then run as written and resumes,
appending to the interrupted run's logs.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cli.test_cli import TOY
from tests.cli.test_crashes_cli import _env, _frozen, _party_pid

RESEARCHER_LOG = "researcher@example.org.log"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone in all but name; it has no stat "Z" on Linux only.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return True


@pytest.mark.slow
def test_ctrl_c_exits_130_says_interrupted_and_the_printed_command_resumes(
    tmp_path: Path,
):
    app = tmp_path / "toy_app"
    shutil.copytree(TOY, app, ignore=shutil.ignore_patterns("__pycache__"))
    work = tmp_path / "work"
    cmd = [
        sys.executable,
        "-m",
        "syft_flwr",
        "simulate",
        str(app),
        "--workdir",
        str(work),
        "--run-config",
        "num-server-rounds=6 slow-seconds=0.3",
    ]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=_env(),
        start_new_session=True,
    )
    log = work / "logs" / RESEARCHER_LOG
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        pid = _party_pid(work)
        if pid is not None:
            with _frozen(pid):  # round 2 begun and round 6 not: the run is mid-way
                text = log.read_text() if log.exists() else ""
                if "[ROUND 2/6]" in text and "[ROUND 6/6]" not in text:
                    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in a terminal
                    break
        time.sleep(0.05)
    else:
        raise AssertionError("the run ended before it could be interrupted")
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    assert "simulation interrupted" in out and "FAILED" not in out, out
    summary = json.loads((work / "summary.json").read_text())
    assert summary["interrupted"] and not summary["ok"]
    # No party outlives simulate.
    parties = json.loads((work / "parties.json").read_text())
    assert parties and not [p for p in parties if _alive(p["pid"])]
    # The command printed is the one typed (the same --workdir) and it resumes.
    lines = out.splitlines()
    hint = lines[lines.index("to resume from the last completed round, run:") + 1]
    argv = shlex.split(hint.strip())
    assert argv[0] == "syft_flwr" and argv[1:] == cmd[3:]
    first_log = log.read_text()
    again = subprocess.run(
        [sys.executable, "-m", *argv],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=300,
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert 'TOY_RESULT {"final_mean": 6.0}' in again.stdout
    # The interrupted run's log is kept; the rerun is appended after a marker.
    text = log.read_text()
    assert text.startswith(first_log)
    assert "===== syft_flwr simulate: run again in this work dir at" in text
    assert "resuming run" in text[len(first_log) :]
    # The relayed progress shows only the rerun, not the earlier log again.
    rerun = text[len(first_log) :]
    assert again.stdout.count("[ROUND 2/6]") == rerun.count("[ROUND 2/6]") == 1


@pytest.mark.slow
def test_ctrl_c_without_workdir_keeps_the_temp_folder_and_names_it(tmp_path: Path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    cmd = [sys.executable, "-m", "syft_flwr", "simulate", str(TOY)]
    cmd += ["--fresh", "--run-config", "num-server-rounds=100 slow-seconds=0.3"]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=dict(_env(), TMPDIR=str(tmp)),
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        work = next(iter(tmp.glob("syft_flwr_sim_*")), None)
        log = work / "logs" / RESEARCHER_LOG if work else None
        if log is not None and log.exists() and "[ROUND 1/100]" in log.read_text():
            os.killpg(proc.pid, signal.SIGINT)
            break
        time.sleep(0.05)
    else:
        raise AssertionError("the run ended before it could be interrupted")
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    assert work is not None and work.is_dir()
    assert f"kept the temporary work folder {work}" in out
    lines = out.splitlines()
    hint = lines[lines.index("to resume from the last completed round, run:") + 1]
    # The typed command, minus --fresh (it would start over), plus the folder.
    assert shlex.split(hint) == [
        "syft_flwr",
        *cmd[3:5],
        *cmd[6:],
        "--workdir",
        str(work),
    ]

"""Parties killed with -9 mid-run, every party a real OS process (``simulate``).

* The researcher: the same command again resumes; the result equals an
  uninterrupted run of the same command in another work dir.
* A data owner: the researcher stops waiting for it when its heartbeat stops,
  and ``simulate`` says which process exited and why.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from syft_flwr.simulation import RESUME_MARK

ROOT = Path(__file__).resolve().parents[2]
TOY = ROOT / "tests" / "assets" / "toy_app"
LEGACY = ROOT / "examples" / "legacy_numpy"


def _env() -> dict[str, str]:
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SYFT_FLWR_", "SYFTBOX_"))
    }


def _simulate(app: Path, work: Path, run_config: str, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "syft_flwr",
        "simulate",
        str(app),
        "-n",
        "2",
        "--workdir",
        str(work),
        "--run-config",
        run_config,
        *extra,
    ]


def _party_pid(work: Path, email: str = "researcher@example.org") -> int | None:
    """The pid of ``email``'s process in the simulation in ``work``."""
    try:
        parties = json.loads((work / "parties.json").read_text())
    except (FileNotFoundError, ValueError):
        return None
    return next((p["pid"] for p in parties if p["email"] == email), None)


def _this_run(log: Path) -> str:
    """What the latest run in a work dir wrote to ``log`` (after the rerun marker)."""
    return log.read_text().rpartition(RESUME_MARK)[2]


def _result(stdout: str, prefix: str) -> dict:
    lines = [ln for ln in stdout.splitlines() if prefix in ln]
    assert lines, stdout[-3000:]
    return json.loads(lines[-1].split(prefix, 1)[1])


@contextlib.contextmanager
def _frozen(pid: int) -> Iterator[None]:
    """Hold ``pid`` still (SIGSTOP) so what the test reads is the state it acts on.

    Polling a running party races it: on a loaded machine the party can finish
    the whole run between the test's check and its kill. A stopped process
    cannot move on, so the check and the kill see the same state.
    """
    try:
        os.kill(pid, signal.SIGSTOP)
    except ProcessLookupError:
        yield
        return
    try:
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


def _exchanges(work: Path) -> int:
    return len(list((work / "SyftBox" / ".syft_flwr").rglob("resume/*.exchange")))


def _kill_researcher_after(work: Path, exchanges: int, proc: subprocess.Popen) -> int:
    """kill -9 the researcher once ``exchanges`` calls are in its checkpoint.

    Returns the number of completed calls the checkpoint held at the kill (the
    researcher is stopped while they are counted, so it is exact).
    """
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        pid = _party_pid(work)
        if pid is not None:
            with _frozen(pid):
                done = _exchanges(work)
                if done >= exchanges:
                    os.kill(pid, signal.SIGKILL)
                    return done
        time.sleep(0.01)
    pytest.fail("the run ended before the researcher could be killed")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("app", "run_config", "prefix", "kill_after", "rounds"),
    [
        # Message API: FedAvg.start(); a slow ClientApp keeps rounds long.
        (TOY, "num-server-rounds=6 slow-seconds=0.3", "TOY_RESULT ", 3, 6),
        # Legacy Server/Strategy (server_fn); weights_sha256 compares the model.
        (LEGACY, "num-server-rounds=12", "SYFT_FLWR_RESULT ", 8, 12),
    ],
    ids=["message-api", "legacy-server"],
)
def test_kill_9_researcher_then_same_command_resumes(
    tmp_path: Path,
    app: Path,
    run_config: str,
    prefix: str,
    kill_after: int,
    rounds: int,
):
    app_dir = tmp_path / app.name
    shutil.copytree(app, app_dir, ignore=shutil.ignore_patterns("__pycache__"))
    whole = subprocess.run(
        _simulate(app_dir, tmp_path / "whole", run_config),
        capture_output=True,
        text=True,
        timeout=300,
        env=_env(),
    )
    assert whole.returncode == 0, whole.stdout + whole.stderr
    expected = _result(whole.stdout, prefix)

    work = tmp_path / "crashed"
    cmd = _simulate(app_dir, work, run_config)
    first = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env()
    )
    at_kill = _kill_researcher_after(work, kill_after, first)
    out1, _ = first.communicate(timeout=120)
    # The researcher died mid-run: its checkpoint still holds what it had done.
    assert _exchanges(work) >= at_kill >= kill_after, out1
    assert first.returncode == 1, out1
    assert "the researcher was killed by SIGKILL" in out1
    assert "run the same command again" in out1

    second = subprocess.run(
        cmd, capture_output=True, text=True, timeout=300, env=_env()
    )
    assert second.returncode == 0, second.stdout + second.stderr
    # The same result as the uninterrupted run...
    assert _result(second.stdout, prefix) == expected
    log = (work / "logs" / "researcher@example.org.log").read_text()
    log = log.rsplit("run again in this work dir", 1)[1]
    assert "resuming run" in log and "replayed" in log
    # ...and the data owners trained only the rounds the checkpoint lacked (the
    # rerun appends to the crashed run's log, after a marker line).
    do_log = (work / "logs" / "do1@example.org.log").read_text()
    assert "run again in this work dir" in do_log
    trained = do_log.rsplit("run again in this work dir", 1)[1].count("running train")
    assert 0 < trained < rounds
    # The completed run left no checkpoint behind.
    assert not list((work / "SyftBox" / ".syft_flwr").rglob("resume/*.exchange"))

    # --fresh starts over: every round trained again.
    third = subprocess.run(
        [*cmd, "--fresh"], capture_output=True, text=True, timeout=300, env=_env()
    )
    assert third.returncode == 0, third.stdout + third.stderr
    assert _result(third.stdout, prefix) == expected
    assert (work / "logs" / "do1@example.org.log").read_text().count(
        "running train"
    ) == rounds
    # ...and the resumed run's log was moved aside, not overwritten.
    assert (work / "logs" / "do1@example.org.log.prev").read_text() == do_log


@pytest.mark.slow
def test_kill_9_data_owner_researcher_goes_on_and_simulate_says_why(tmp_path: Path):
    app_dir = tmp_path / "toy_app"
    shutil.copytree(TOY, app_dir, ignore=shutil.ignore_patterns("__pycache__"))
    work = tmp_path / "work"
    env = dict(_env(), SYFT_FLWR_HEARTBEAT_INTERVAL="0.5")
    # A round timeout far longer than the test: only liveness can end the wait.
    cmd = _simulate(
        app_dir,
        work,
        "num-server-rounds=4 slow-seconds=0.3 min-nodes=2 round-timeout=600",
    )
    cmd[cmd.index("-n") + 1] = "3"
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    log = work / "logs" / "researcher@example.org.log"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        pid = _party_pid(work, "do3@example.org")
        researcher = _party_pid(work)
        if pid is not None and researcher is not None:
            # With the researcher held still, round 2 started and round 4 not yet
            # means a round that needs do3 is still ahead of it.
            with _frozen(researcher):
                text = log.read_text() if log.exists() else ""
                if "[ROUND 2/4]" in text and "[ROUND 4/4]" not in text:
                    os.kill(pid, signal.SIGKILL)
                    break
        time.sleep(0.05)
    else:
        pytest.fail("the run ended before do3 could be killed")
    out, _ = proc.communicate(timeout=300)
    assert "data owner do3@example.org was killed by SIGKILL (last log line:" in out
    summary = json.loads((work / "summary.json").read_text())
    by_email = {p["email"]: p for p in summary["parties"]}
    assert by_email["researcher@example.org"]["returncode"] == 0, out
    assert by_email["do3@example.org"]["returncode"] == -signal.SIGKILL
    assert "killed by SIGKILL" in by_email["do3@example.org"]["note"]
    assert not summary["ok"] and proc.returncode == 1
    text = log.read_text()
    assert "do3@example.org stopped answering: no heartbeat" in text
    assert "timed out" not in text
    assert 'TOY_RESULT {"final_mean": 4.0}' in out


@pytest.mark.slow
def test_a_tampered_journal_stops_the_resume_and_fresh_gives_the_honest_result(
    tmp_path: Path,
):
    """Recorded replies rewritten to 1000.0 in a crashed run are never replayed."""
    app_dir = tmp_path / "toy_app"
    shutil.copytree(TOY, app_dir, ignore=shutil.ignore_patterns("__pycache__"))
    work = tmp_path / "crashed"
    cmd = _simulate(app_dir, work, "num-server-rounds=4 slow-seconds=0.3")
    first = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env()
    )
    _kill_researcher_after(work, 3, first)  # train 1, evaluate 1, train 2
    out1, _ = first.communicate(timeout=120)
    assert first.returncode == 1, out1

    # Someone who can write the state folder rewrites the recorded replies.
    journal = next((work / "SyftBox" / ".syft_flwr").rglob("resume/run.json")).parent
    sys.path.insert(0, str(ROOT / "tests" / "fl_orchestrator"))
    try:
        from test_resume import _tamper_replies
    finally:
        sys.path.pop(0)
    assert _tamper_replies(journal, 1000.0) >= 2

    second = subprocess.run(
        cmd, capture_output=True, text=True, timeout=300, env=_env()
    )
    both = second.stdout + second.stderr
    assert second.returncode != 0, both
    assert "failed its integrity check" in both, both  # the terminal says why
    log = _this_run(work / "logs" / "researcher@example.org.log")
    assert "failed its integrity check" in log and "--fresh" in log
    assert "resuming run" not in log and "nothing of it was replayed" in log
    assert "TOY_RESULT" not in second.stdout  # no result from forged replies
    # Nothing was trained on the data owners' side for the refused command (a
    # rerun appends to each log after a marker line: read what came after it).
    assert "running train" not in _this_run(work / "logs" / "do1@example.org.log")

    third = subprocess.run(
        [*cmd, "--fresh"], capture_output=True, text=True, timeout=300, env=_env()
    )
    assert third.returncode == 0, third.stdout + third.stderr
    assert _result(third.stdout, "TOY_RESULT ") == {"final_mean": 4.0}

"""A data owner's process killed with -9 around a privacy charge, for real.

``simulate --privacy`` runs the researcher and two data owners as OS
processes; the test kills do1 with SIGKILL and starts it again with the very
command line, environment and folder it had (from ``parties.json``), as a data
owner restarting their machine would.

* Killed after the charge, while the noised reply is kept but cannot be
  written (a directory stands where the reply file must go): after the restart
  the researcher gets the kept reply, the budget was charged once for it, the
  ClientApp ran once, and the audit trail shows one charge.
* Killed while the ClientApp runs (before the charge): after the restart the
  request is refused as the ledger's rules say (it is never run twice),
  nothing was charged for it, and nothing of it left.
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

from syft_flwr.client.syft_core_client import SyftCoreClient
from syft_flwr.data_owner.privacy.accountant import epsilon_spent, event_key
from syft_flwr.events.audit import audit_entries

ROOT = Path(__file__).resolve().parents[3]
APP = ROOT / "examples" / "fedavg_tabular"
DO1 = "do1@example.org"
KEY = event_key(1.0, 1.0)
POLICY = (
    "clip_norm = 1.0\nnoise_multiplier = 1.0\nepsilon = 100.0\ndelta = 1e-5\n"
    "[analytics.sensitivity]\n"
    "num-examples = 1.0\ntrain_loss = 0.1\neval_loss = 0.1\neval_acc = 0.01\n"
)


def _env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SYFT_FLWR_", "SYFTBOX_"))
    }
    # do1 is held still and dead for a while on purpose: the researcher must
    # keep waiting for it rather than take it for gone.
    env["SYFT_FLWR_HEARTBEAT_MISSES"] = "100000"
    return env


def _text(p: Path) -> str:
    return p.read_text() if p.exists() else ""


def _wait(what: str, cond: object, timeout: float = 120) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()  # type: ignore[operator]
        if got:
            return got
        time.sleep(0.02)
    pytest.fail(f"timed out waiting for {what}")


@contextlib.contextmanager
def _frozen(pid: int) -> Iterator[None]:
    """Hold ``pid`` still (SIGSTOP) so what the test reads is what it acts on."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


def _pid(work: Path, email: str) -> int | None:
    try:
        parties = json.loads((work / "parties.json").read_text())
    except (FileNotFoundError, ValueError):
        return None
    return next((p["pid"] for p in parties if p["email"] == email), None)


def _requests(work: Path) -> list[Path]:
    inbox = work / "SyftBox" / "datasites" / DO1 / "app_data"
    return sorted(inbox.rglob("messages/researcher@example.org/*.request"))


def _budget_rows(work: Path) -> list[dict[str, object]]:
    out = subprocess.run(
        [sys.executable, "-m", "syft_flwr.cli", "budget", "--json"]
        + ["--config", str(work / "configs" / f"{DO1}.json")],
        capture_output=True,
        text=True,
        check=True,
        env=_env(),
    )
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def _budget(work: Path) -> dict[str, object]:
    [row] = _budget_rows(work)
    return row


def _restart_recipe(work: Path, email: str) -> tuple[list[str], dict[str, str]]:
    """The command and variables ``simulate`` started ``email`` with."""
    parties = json.loads((work / "parties.json").read_text())
    [party] = [p for p in parties if p["email"] == email]
    return party["argv"], {**_env(), **party["env"]}


#: Put first in do1's train: it "trains" until it is killed, so the test finds
#: it running (never a race against how long training takes).
_HANG = (
    '    """Run a few local epochs from the global model; reply with the new model."""\n'
    '    if int(context.node_config.get("partition-id", 0)) == 0:\n'
    "        import time\n"
    "\n"
    "        time.sleep(3600)  # the crash test kills this data owner here\n"
)


def _start(
    tmp_path: Path, *, hang_do1: bool = False
) -> tuple[Path, subprocess.Popen[str]]:
    app = tmp_path / APP.name
    shutil.copytree(APP, app, ignore=shutil.ignore_patterns("__pycache__"))
    if hang_do1:
        source = app / "fedavg_tabular" / "client_app.py"
        text = source.read_text()
        doc = '    """Run a few local epochs from the global model; reply with the new model."""\n'
        assert doc in text
        source.write_text(text.replace(doc, _HANG, 1))
    policy = tmp_path / "privacy.toml"
    policy.write_text(POLICY)
    work = tmp_path / "work"
    cmd = [sys.executable, "-m", "syft_flwr.cli", "simulate", str(app), "-n", "2"]
    cmd += ["--workdir", str(work), "--privacy", str(policy), "--run-config"]
    cmd += ["num-server-rounds=1 local-epochs=1 round-timeout=600"]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env()
    )
    return work, proc


@pytest.mark.slow
def test_kill_9_after_the_charge_the_kept_reply_arrives_charged_once(
    tmp_path: Path,
) -> None:
    work, sim = _start(tmp_path)
    do_log = work / "logs" / f"{DO1}.log"
    pid = _wait("do1 to start", lambda: _pid(work, DO1))
    boss = _pid(work, "researcher@example.org")
    assert isinstance(pid, int) and isinstance(boss, int)
    with _frozen(boss):  # no request is sent before do1 is held still
        _wait("do1 to serve", lambda: "is serving" in _text(do_log))
        os.kill(pid, signal.SIGSTOP)
    try:
        # do1 is held still until the obstacle stands where its reply must go.
        [request] = _wait("the first request to do1", lambda: _requests(work))  # type: ignore[misc]
        assert "running" not in _text(do_log)
        obstacle = request.with_name(request.name[: -len(".request")] + ".response")
        obstacle.mkdir()
    finally:
        os.kill(pid, signal.SIGCONT)
    _wait(
        "the reply to be kept", lambda: "it is kept and retried" in do_log.read_text()
    )
    with _frozen(pid):
        argv, env = _restart_recipe(work, DO1)
        charged = _budget(work)
        assert charged["replies"] == 1  # durable before the reply could leave
        os.kill(pid, signal.SIGKILL)
    obstacle.rmdir()  # the obstacle goes away; do1's machine restarts
    with open(tmp_path / "do1-restarted.log", "wb") as log:
        again = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path / APP.name
        )
    try:
        out, _ = sim.communicate(timeout=300)
        again.wait(timeout=120)
    finally:
        if again.poll() is None:
            again.kill()
    assert again.returncode == 0  # the restarted do1 ended with the run
    restarted = (tmp_path / "do1-restarted.log").read_text()
    # The researcher got every reply, the kept one of do1 included.
    researcher = (work / "logs" / "researcher@example.org.log").read_text()
    assert "ClientApp calls: 4 sent, 4 succeeded, 0 failed" in researcher, out
    assert "SYFT_FLWR_RESULT" in out
    assert "was answered before; sending the same reply" in restarted
    # The ClientApp trained once for the request; the budget paid once for it
    # (the evaluate round after the restart is the second charge).
    assert do_log.read_text().count("running train") == 1
    assert "running train" not in restarted
    row = _budget(work)
    assert row["replies"] == 2
    assert row["spent"] == epsilon_spent({KEY: 2}, 1e-5)
    assert _charges(work) == ["train", "evaluate"]


def _charges(work: Path) -> list[str]:
    """The message types the audit trail of do1 shows a privacy charge for."""
    client = SyftCoreClient.load(work / "configs" / f"{DO1}.json")
    return [
        str(e["message_type"])
        for e in audit_entries(client)
        if str(e.get("privacy", "")).startswith("charged")
    ]


@pytest.mark.slow
def test_kill_9_while_the_client_app_runs_charges_nothing_and_never_reruns(
    tmp_path: Path,
) -> None:
    work, sim = _start(tmp_path, hang_do1=True)
    do_log = work / "logs" / f"{DO1}.log"
    pid = _wait("do1 to start", lambda: _pid(work, DO1))
    assert isinstance(pid, int)
    _wait("do1 to train", lambda: "running train" in _text(do_log), timeout=180)
    with _frozen(pid):
        # The charge is made in this (held) process once the ClientApp returns.
        assert "charged to dataset" not in _text(do_log)
        argv, env = _restart_recipe(work, DO1)
        assert not _budget_rows(work)  # nothing charged yet
        os.killpg(pid, signal.SIGKILL)  # the machine goes down: worker too
    with open(tmp_path / "do1-restarted.log", "wb") as log:
        again = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path / APP.name
        )
    try:
        out, _ = sim.communicate(timeout=300)
        again.wait(timeout=120)
    finally:
        if again.poll() is None:
            again.kill()
    restarted = (tmp_path / "do1-restarted.log").read_text()
    # The ledger's rule: a request that was running when the data owner
    # stopped is refused, not run again; nothing left for it, nothing charged.
    assert "the data owner stopped while request" in restarted
    assert "running train" not in restarted
    researcher = (work / "logs" / "researcher@example.org.log").read_text()
    assert "ClientApp calls: 4 sent, 3 succeeded, 1 failed" in researcher, out
    [row] = _budget_rows(work)
    assert row["replies"] == 1  # the evaluate round after the restart only
    assert _charges(work) == ["evaluate"]

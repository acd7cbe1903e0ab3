"""Starting and stopping the parties of a simulation: forked or spawned processes,
their command lines, their logs kept across a resumed run.
"""

from __future__ import annotations

import json
import os
import runpy
import signal
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Protocol

from syft_flwr.data_owner.contain.serving import SIMULATION_ENV
from syft_flwr.data_owner.privacy.policy import ENV_PRIVACY_POLICY
from syft_flwr.project import ProjectConfig
from syft_flwr.simulation._network import (
    RESEARCHER_EMAIL,
    RESUME_MARK,
    Party,
    _write_text_atomic,
    prepare_network,
)
from syft_flwr.simulation._plan import _Plan


def _party_cmd(
    cfg: ProjectConfig,
    party: Party,
    app_name: str,
    datasites: list[str],
    run_config: str | None,
    entry: str = "party",
) -> list[str]:
    if entry == "main.py":
        # Exactly as upstream's simulator starts a party; our main.py also reads
        # the node config (upstream's template ignores its arguments).
        cmd = [sys.executable, str(cfg.app_dir / "main.py"), "-s"]
        if run_config:
            cmd += ["--run-config", run_config]
        if party.node_config:
            cmd += ["--node-config", party.node_config]
        return cmd
    cmd = [
        sys.executable,
        "-m",
        "syft_flwr.cli",
        "party",
        str(cfg.app_dir),
        "--role",
        party.role,
        "--config",
        str(party.config_path),
        "--app-name",
        app_name,
        "--aggregator",
        RESEARCHER_EMAIL if cfg.aggregator is None else cfg.aggregator,
        "--datasites",
        ",".join(datasites),
    ]
    if run_config:
        cmd += ["--run-config", run_config]
    if party.node_config:
        cmd += ["--node-config", party.node_config]
    if party.role == "data-owner":
        cmd.append("--no-review")  # a local simulation of the researcher's own app
    return cmd


class _PartyProcess(Protocol):
    """What the runner needs of a party's process (``subprocess.Popen`` has it)."""

    pid: int

    @property
    def returncode(self) -> int | None: ...

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...

    def send_signal(self, sig: int) -> None: ...

    def terminate(self) -> None: ...

    def kill(self) -> None: ...


class _ForkedParty:
    """A party started with ``os.fork()`` from this (already warm) process.

    Every party is still its own OS process, with its own session, log file,
    environment and working directory; what it skips is starting Python and
    importing Flower and syft_flwr again (about 0.9 s of CPU per party, paid 9
    times over on 2 cores for 8 data owners). The interface is ``Popen``'s.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._returncode: int | None = None

    @property
    def returncode(self) -> int | None:
        return self._returncode

    def poll(self) -> int | None:
        if self._returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                return self._returncode
            if pid:
                self._returncode = os.waitstatus_to_exitcode(status)
        return self._returncode

    def wait(self, timeout: float | None = None) -> int:
        end = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if end is not None and time.monotonic() >= end:
                raise subprocess.TimeoutExpired(f"party {self.pid}", timeout or 0.0)
            time.sleep(0.01)
        assert self._returncode is not None
        return self._returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def _can_fork() -> bool:
    # Forking a process that runs other threads can deadlock the child on a
    # lock one of them held; then (and off POSIX) parties start the slow way.
    return hasattr(os, "fork") and threading.active_count() == 1


def _fork_party(
    argv: list[str], env: dict[str, str], cwd: Path, log_path: Path, append: bool
) -> _ForkedParty:
    """Run ``syft_flwr <argv>`` in a forked child; its output goes to ``log_path``."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        return _ForkedParty(pid)
    code = 1
    try:
        os.setsid()  # like start_new_session: Ctrl-C reaches the runner only
        keep = os.O_APPEND if append else os.O_TRUNC
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | keep, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        for stream in (sys.stdout, sys.stderr):
            if hasattr(stream, "reconfigure"):
                stream.reconfigure(line_buffering=True)
        os.chdir(cwd)
        from syft_flwr._proctitle import prepare

        prepare()  # before the environment is replaced (see prepare)
        os.environ.clear()
        os.environ.update(env)
        sys.argv = ["syft_flwr", *argv]
        if "numpy" in sys.modules:  # not the parent's (shared) random stream
            sys.modules["numpy"].random.seed()
        # The party runs the program `python -m syft_flwr.cli` (the slow way's
        # command), not a function of the CLI: simulation sits below the CLI
        # and imports nothing from it (sys.argv above is what it parses).
        runpy.run_module("syft_flwr.cli", run_name="__main__")
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except KeyboardInterrupt:
        code = 130
    except BaseException:
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _prepare(plan: _Plan) -> list[Party]:
    """Create the shared network folder and describe every party (researcher last)."""
    plan.root.mkdir(parents=True, exist_ok=True)
    plan.logs.mkdir(parents=True, exist_ok=True)
    configs = prepare_network(
        plan.root, [plan.aggregator, *plan.datasites], encryption=plan.encryption
    )
    parties = [
        Party(
            email=e,
            role="data-owner",
            config_path=configs[e],
            log_path=plan.logs / f"{e}.log",
            node_config=f"partition-id={i} num-partitions={plan.n}",
            data_dir=plan.dataset_paths[i] if plan.dataset_paths else None,
        )
        for i, e in enumerate(plan.datasites)
    ]
    agg = plan.aggregator
    parties.append(Party(agg, "researcher", configs[agg], plan.logs / f"{agg}.log"))
    _keep_earlier_logs(plan, parties)
    return parties


def _keep_earlier_logs(plan: _Plan, parties: list[Party]) -> None:
    """A rerun never overwrites the logs of the run before it.

    Resuming appends after a marker line; ``--fresh`` moves the earlier log
    aside to ``<email>.log.prev`` (one generation) and starts a new one.
    """
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    for p in parties:
        if not p.log_path.exists():
            continue
        if plan.resuming:
            with open(p.log_path, "a") as f:
                f.write(f"\n{RESUME_MARK} {stamp} =====\n")
        elif plan.fresh:
            os.replace(p.log_path, p.log_path.with_name(f"{p.log_path.name}.prev"))


def _party_env(plan: _Plan, p: Party, base_env: dict[str, str]) -> dict[str, str]:
    """The environment one party starts with: its config, folders and opt-downs."""
    env = dict(base_env)
    env["SYFTBOX_CLIENT_CONFIG_PATH"] = str(p.config_path)
    env["OUTPUT_DIR"] = str(plan.root / "outputs" / p.email)
    Path(env["OUTPUT_DIR"]).mkdir(parents=True, exist_ok=True)
    if p.data_dir is not None:
        env["DATA_DIR"] = str(p.data_dir)
    else:
        env.pop("DATA_DIR", None)
    if p.role == "data-owner":
        # The simulated data owners serve the app folder unreviewed, as the
        # researcher simulates its own code (main.py of an upstream
        # template takes no options: the variable is its opt-down).
        env["SYFT_FLWR_NO_REVIEW"] = "true"
        if plan.privacy is not None:
            env[ENV_PRIVACY_POLICY] = str(plan.privacy)
        # Nobody's private data here: where this machine cannot contain,
        # the ClientApp runs uncontained with one warning (serve refuses).
        env[SIMULATION_ENV] = "1"
    return env


def _start_parties(plan: _Plan, parties: list[Party]) -> dict[str, _PartyProcess]:
    """Start every party as its own OS process (data owners first).

    With the default ``party`` entry, parties are forked from this process, which
    has imported everything already (see :class:`_ForkedParty`); ``main.py``
    entries (the app's own script) are started as new Python processes.
    """
    fork = plan.entry == "party" and _can_fork()
    base_env = dict(os.environ)
    base_env["PYTHONUNBUFFERED"] = "1"
    base_env["SYFT_FLWR_ENCRYPTION_ENABLED"] = "true" if plan.encryption else "false"
    procs: dict[str, _PartyProcess] = {}
    # How to start each party again by hand (its command and the variables set
    # for it here): parties.json says it, e.g. after a data owner's crash.
    again: dict[str, dict[str, object]] = {}
    # Data owners first: they publish their permissions and wait for work.
    for p in parties:
        env = _party_env(plan, p, base_env)
        cmd = _party_cmd(
            plan.cfg, p, plan.app_name, plan.datasites, plan.run_config, plan.entry
        )
        if plan.fresh and p.role == "researcher":
            cmd.append("--fresh")
        extra = {k: v for k, v in env.items() if os.environ.get(k) != v}
        again[p.email] = {"argv": cmd, "env": extra}
        if fork:
            # cmd is [python, -m, syft_flwr.cli, party, ...]
            procs[p.email] = _fork_party(
                cmd[3:], env, plan.cfg.app_dir, p.log_path, plan.resuming
            )
            continue
        with open(p.log_path, "ab" if plan.resuming else "wb") as log:
            procs[p.email] = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=str(plan.cfg.app_dir),
                start_new_session=True,
            )
    _write_text_atomic(
        plan.root / "parties.json",
        json.dumps(
            [
                {
                    "email": p.email,
                    "role": p.role,
                    "pid": procs[p.email].pid,
                    **again[p.email],
                }
                for p in parties
            ],
            indent=2,
        ),
    )
    return procs


def _stop_parties(parties: list[Party], procs: dict[str, _PartyProcess]) -> None:
    """Data owners exit on the stop signal; give them a moment, then end them.

    A researcher killed by a signal sent no stop signal: nobody waits for one.
    """
    rc = procs[parties[-1].email].returncode
    grace = time.monotonic() + (30 if rc is None or rc >= 0 else 0)
    for p in parties:
        proc = procs[p.email]
        try:
            proc.wait(timeout=max(0.1, grace - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _kill_leftovers(procs: dict[str, _PartyProcess]) -> None:
    """Last resort (an error or Ctrl-C above): no party process outlives simulate."""
    for proc in procs.values():
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:  # not its own group leader yet
                proc.kill()
            proc.wait()

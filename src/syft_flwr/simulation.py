"""Local simulation: researcher and N data owners as OS processes over local folders.

Every party gets its own SyftBox client config on one shared data dir (the
file system is the network, so sync is instant); messages take the same path
as on a real SyftBox network: envelope, encryption, watchdog events.
"""

from __future__ import annotations

import dataclasses
import json
import os
import runpy
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol

from syft_flwr.config import Settings
from syft_flwr.data_owner.contain.serving import SIMULATION_ENV
from syft_flwr.data_owner.privacy.policy import ENV_PRIVACY_POLICY
from syft_flwr.errors import ConfigError
from syft_flwr.project import ProjectConfig, load_project, parse_run_config
from syft_flwr.run_config import check_counts

__all__ = ["Party", "SimulationResult", "prepare_network", "simulate"]

RESEARCHER_EMAIL = "researcher@example.org"
#: Starts the part of a party's log written by a rerun in the same work dir.
RESUME_MARK = "===== syft_flwr simulate: run again in this work dir at"


@dataclass
class Party:
    email: str
    role: str
    config_path: Path
    log_path: Path
    node_config: str = ""
    data_dir: Path | None = None
    returncode: int | None = None
    seconds: float = 0.0
    #: Why it ended early, in plain words (empty if it ran to the end).
    note: str = ""


@dataclass
class SimulationResult:
    """Outcome of :func:`simulate`."""

    ok: bool
    workdir: Path
    parties: list[Party] = field(default_factory=list)
    seconds: float = 0.0
    #: Stopped by Ctrl-C (or SIGINT): not a failure; the same workdir resumes.
    interrupted: bool = False

    @property
    def researcher(self) -> Party:
        return next(p for p in self.parties if p.role == "researcher")

    def log(self, email: str) -> str:
        p = next(p for p in self.parties if p.email == email)
        return p.log_path.read_text(errors="replace")


def _write_config(path: Path, data_dir: Path, email: str) -> None:
    from syft_core import SyftClientConfig

    path.parent.mkdir(parents=True, exist_ok=True)
    SyftClientConfig(
        path=path, data_dir=data_dir, email=email, server_url="http://127.0.0.1:9"
    ).save()


def prepare_network(
    workdir: Path, emails: Sequence[str], *, encryption: bool = True
) -> dict[str, Path]:
    """Create a shared SyftBox-layout data dir and one client config per email.

    With encryption on, every party's keys and DID are created up front (as each
    would on first start), so nobody waits for a peer's keys to appear.
    """
    data_dir = workdir / "SyftBox"
    (data_dir / "datasites").mkdir(parents=True, exist_ok=True)
    configs = {}
    for email in emails:
        path = workdir / "configs" / f"{email}.json"
        _write_config(path, data_dir, email)
        configs[email] = path
        if encryption:
            from syft_flwr.client.syft_core_client import SyftCoreClient
            from syft_flwr.crypto.policy import load_or_create_keys

            c = SyftCoreClient.load(path)
            load_or_create_keys(c, c.make_transport())
    return configs


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


class _Tail:
    def __init__(
        self, path: Path, prefix: str, only_problems: bool, pos: int = 0
    ) -> None:
        self.path, self.prefix, self.only_problems = path, prefix, only_problems
        self.pos = pos  # a resumed run's log already holds the earlier runs
        self.buf = ""

    def pump(self, out: IO[str]) -> None:
        try:
            with open(self.path, errors="replace") as f:
                f.seek(self.pos)
                data = f.read()
                self.pos = f.tell()
        except FileNotFoundError:
            return
        self.buf += data
        *lines, self.buf = self.buf.split("\n")
        for line in lines:
            if self.only_problems and not any(
                w in line
                for w in ("WARNING", "ERROR", "Traceback", "the researcher ended")
            ):
                continue
            out.write(f"{self.prefix} {line}\n")
        out.flush()


@dataclass(frozen=True)
class _Plan:
    """What one simulation will run: checked inputs, resolved names and folders."""

    cfg: ProjectConfig
    datasites: list[str]
    aggregator: str
    dataset_paths: list[Path]
    encryption: bool
    root: Path
    logs: Path
    run_config: str | None
    entry: str
    app_name: str
    fresh: bool
    #: The work dir holds an earlier run of this app: logs are appended to.
    resuming: bool = False
    #: The data owners' privacy policy file (else the environment's, if any).
    privacy: Path | None = None

    @property
    def n(self) -> int:
        return len(self.datasites)


def simulate(
    app_dir: str | Path,
    num_data_owners: int | None = None,
    *,
    mock_dataset_paths: Sequence[str | Path] | None = None,
    run_config: str | None = None,
    workdir: str | Path | None = None,
    encryption: bool | None = None,
    timeout: float = 1800.0,
    out: IO[str] | None = None,
    quiet: bool = False,
    entry: str = "party",
    log_dir: str | Path | None = None,
    fresh: bool = False,
    privacy: str | Path | None = None,
) -> SimulationResult:
    """Run a Flower app with a researcher and N data owners as separate processes.

    Run it again with the same ``workdir`` after the researcher was interrupted
    (crash, kill, Ctrl-C) and the run continues from the last completed round.

    Parameters
    ----------
    app_dir:
        A Flower app folder (bootstrapped or not).
    num_data_owners:
        How many data owners; defaults to the number of mock dataset paths, else
        the app's ``[tool.syft_flwr] datasites``, else 2.
    mock_dataset_paths:
        One folder per data owner, given to it as ``DATA_DIR``.
    run_config:
        Overrides, e.g. ``"num-server-rounds=5 lr=0.1"``.
    workdir:
        Where the network, logs and outputs go (a new temp dir if None).
    encryption:
        Defaults to ``SYFT_FLWR_ENCRYPTION_ENABLED`` (on).
    timeout:
        Seconds before the whole simulation is stopped.
    out:
        Where live progress goes (default stdout).
    entry:
        ``"party"`` (default) starts each party with ``python -m syft_flwr.cli
        party``; ``"main.py"`` runs the bootstrapped app's own ``main.py -s`` per
        party, as upstream syft-flwr's simulator does (the parties are then the
        app's ``[tool.syft_flwr]`` aggregator and data owners).
    log_dir:
        Where each party's ``<email>.log`` goes (default ``<workdir>/logs``).
    fresh:
        Start over instead of resuming an interrupted run in ``workdir``.
    privacy:
        A data owner's privacy policy file, applied by every simulated data
        owner (default: ``SYFT_FLWR_PRIVACY_POLICY``, passed on). Each keeps its
        budget in its own private state in ``workdir``, which ``fresh`` keeps:
        a new run spends from what earlier ones left.

    Returns
    -------
    SimulationResult
        ``ok`` is True only if every process exited with 0.
    """
    out = out or sys.stdout
    # The four steps a reader can follow: plan and prepare the network, start
    # every party, watch the run until the researcher ends, collect the results.
    plan = _plan(
        app_dir,
        num_data_owners,
        mock_dataset_paths=mock_dataset_paths,
        run_config=run_config,
        workdir=workdir,
        encryption=encryption,
        entry=entry,
        log_dir=log_dir,
        fresh=fresh,
        timeout=timeout,
        privacy=privacy,
    )
    parties = _prepare(plan)
    if not quiet:
        out.write(
            f"syft_flwr simulate: {plan.cfg.name} with {plan.n} data owners "
            f"(encryption {'on' if plan.encryption else 'off'}), work dir {plan.root}\n"
        )
    tails = [
        _Tail(
            p.log_path,
            f"[{p.email}]",
            only_problems=p.role != "researcher",
            pos=_size(p.log_path) if plan.resuming else 0,
        )
        for p in (parties[-1], *parties[:-1])
    ]
    start = time.monotonic()
    procs: dict[str, _PartyProcess] = {}
    interrupted = False
    try:
        procs = _start_parties(plan, parties)
        interrupted = _watch(parties, procs, tails, start + timeout, out, quiet)
        _stop_parties(parties, procs)
    except KeyboardInterrupt:  # a second Ctrl-C while the parties stop
        interrupted = bool(procs)
        if not procs:
            raise
    finally:
        _kill_leftovers(procs)
    return _collect(plan, parties, procs, tails, start, out, quiet, interrupted)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _plan(
    app_dir: str | Path,
    num_data_owners: int | None,
    *,
    mock_dataset_paths: Sequence[str | Path] | None,
    run_config: str | None,
    workdir: str | Path | None,
    encryption: bool | None,
    entry: str,
    log_dir: str | Path | None,
    fresh: bool = False,
    timeout: float = 1800.0,
    privacy: str | Path | None = None,
) -> _Plan:
    """Check the inputs and decide names and folders (nothing is started yet)."""
    cfg = load_project(app_dir)
    check_counts(num_data_owners, timeout)
    parse_run_config(cfg.app_config, run_config)  # refused here, not in a party
    paths = _dataset_paths(mock_dataset_paths)
    n = _count_data_owners(cfg, num_data_owners, paths)
    _check_entry(cfg, entry, n)
    datasites = (
        list(cfg.datasites)
        if len(cfg.datasites) == n
        else [f"do{i + 1}@example.org" for i in range(n)]
    )
    agg = cfg.aggregator or RESEARCHER_EMAIL
    if cfg.aggregator is None:
        cfg = dataclasses.replace(cfg, aggregator=agg)
    enc = Settings.from_env().encryption_enabled if encryption is None else encryption
    # Absolute: every party runs in the app folder, not the caller's cwd.
    root = (
        Path(workdir).expanduser().resolve()
        if workdir
        else Path(tempfile.mkdtemp(prefix="syft_flwr_sim_"))
    )
    logs = Path(log_dir).expanduser().resolve() if log_dir else root / "logs"
    app_name, resuming = _app_name(root, cfg.name, fresh)
    return _Plan(
        app_name=app_name,
        resuming=resuming,
        fresh=fresh,
        cfg=cfg,
        datasites=datasites,
        aggregator=agg,
        dataset_paths=paths,
        encryption=enc,
        root=root,
        logs=logs,
        run_config=run_config,
        entry=entry,
        privacy=_privacy_file(privacy),
    )


def _dataset_paths(given: Sequence[str | Path] | None) -> list[Path]:
    """The mock dataset folders, absolute; each must exist."""
    paths = [Path(x).resolve() for x in (given or [])]
    for data_path in paths:
        if not data_path.exists():
            raise ConfigError(f"mock dataset path does not exist: {data_path}")
    return paths


def _count_data_owners(
    cfg: ProjectConfig, num_data_owners: int | None, paths: list[Path]
) -> int:
    """How many data owners: as asked, else one per dataset path or datasite, else 2."""
    if num_data_owners is None:
        n = len(paths) or len(cfg.datasites) or 2
    else:
        n = num_data_owners
    if paths and n != len(paths):
        raise ConfigError(
            f"--num-data-owners {n} differs from the {len(paths)} mock dataset "
            "paths: give one path per data owner, or leave -n out"
        )
    return n


def _check_entry(cfg: ProjectConfig, entry: str, n: int) -> None:
    """``main.py`` needs a bootstrapped app with one datasite per data owner."""
    if entry not in ("party", "main.py"):
        raise ConfigError(f"entry must be 'party' or 'main.py', got {entry!r}")
    if entry != "main.py":
        return
    if not cfg.bootstrapped or not (cfg.app_dir / "main.py").is_file():
        raise ConfigError(
            f"{cfg.app_dir} has no main.py and [tool.syft_flwr] table: "
            "run `syft_flwr bootstrap` first"
        )
    if len(cfg.datasites) != n:
        raise ConfigError(
            f"{n} mock dataset paths for {len(cfg.datasites)} data owners in "
            f"{cfg.app_dir / 'pyproject.toml'}: give one path per data owner"
        )


def _privacy_file(privacy: str | Path | None) -> Path | None:
    """The policy file each data owner gets, checked here (not in a party)."""
    from syft_flwr.data_owner.privacy import PrivacyPolicy

    if privacy is None:
        return None
    path = Path(privacy).expanduser().resolve()
    PrivacyPolicy.load(path)  # a bad file is refused before anything starts
    return path


def _app_name(root: Path, name: str, fresh: bool) -> tuple[str, bool]:
    """The app folder name of this network: kept across reruns in one work dir.

    The researcher's checkpoint and each data owner's reply cache live under the
    app name, so a rerun in the same work dir resumes; a new work dir, or
    ``fresh``, gets a new name (no leftovers of another run can interfere).
    Also returns whether the name was kept (an earlier run is resumed).
    """
    state = root / "simulation.json"
    if not fresh:
        try:
            saved = json.loads(state.read_text()).get("app_name")
        except (FileNotFoundError, ValueError, AttributeError):
            saved = None
        if isinstance(saved, str) and saved.startswith(f"{name}_"):
            return saved, True
    app_name = f"{name}_{int(time.time())}_{secrets.token_hex(3)}"
    root.mkdir(parents=True, exist_ok=True)
    _write_text_atomic(state, json.dumps({"app_name": app_name}))
    return app_name, False


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


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


def _watch(
    parties: list[Party],
    procs: dict[str, _PartyProcess],
    tails: list[_Tail],
    deadline: float,
    out: IO[str],
    quiet: bool,
) -> bool:
    """Relay progress until the researcher exits, the deadline passes or Ctrl-C.

    Returns whether the run was interrupted (Ctrl-C).

    A data owner that exits while the run goes on is reported at once, with its
    exit code and the last line of its log (the researcher itself stops waiting
    for it when its heartbeat stops).
    """
    researcher = parties[-1]
    rproc = procs[researcher.email]
    interrupted = False
    try:
        while rproc.poll() is None:
            if not quiet:
                for t in tails:
                    t.pump(out)
            for p in parties[:-1]:
                rc = procs[p.email].poll()
                # exit 0: the researcher ended the run; only trouble is news
                if rc not in (None, 0) and not p.note:
                    p.note = _exit_note(p, rc)
                    if not quiet:
                        out.write(f"data owner {p.email} {p.note}\n")
                        out.flush()
            if time.monotonic() > deadline:
                out.write("simulation timed out; stopping the researcher\n")
                rproc.send_signal(signal.SIGINT)
                rproc.wait(timeout=30)
                break
            time.sleep(0.2)
    except KeyboardInterrupt:
        interrupted = True
        out.write("interrupted: asking the researcher to stop the data owners\n")
        rproc.send_signal(signal.SIGINT)
        try:
            rproc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            rproc.kill()
    if not quiet:  # what was logged just before the researcher exited
        for t in tails:
            t.pump(out)
    rc = rproc.returncode
    if rc is not None and rc < 0 and not interrupted:
        researcher.note = _exit_note(researcher, rc)
        if not quiet:
            out.write(
                f"the researcher {researcher.note}; run the same command again "
                "to resume from the last completed round\n"
            )
    return interrupted


def _exit_note(party: Party, returncode: int) -> str:
    """``exited with code 1 (last log line: ...)`` / ``was killed by SIGKILL``."""
    if returncode < 0:
        try:
            what = f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            what = f"was killed by signal {-returncode}"
    else:
        what = f"exited with code {returncode}"
    last = _last_line(party.log_path)
    return f"{what} (last log line: {last})" if last else what


def _last_line(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 4096))
            lines = f.read().decode("utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    return next((ln.strip() for ln in reversed(lines) if ln.strip()), "")


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


def _collect(
    plan: _Plan,
    parties: list[Party],
    procs: dict[str, _PartyProcess],
    tails: list[_Tail],
    start: float,
    out: IO[str],
    quiet: bool,
    interrupted: bool = False,
) -> SimulationResult:
    """Record exit codes, print the summary and write ``summary.json``."""
    if not quiet:
        for t in tails:
            t.pump(out)
    for p in parties:
        p.returncode = procs[p.email].returncode
    # Ctrl-C after every party had finished its work interrupted nothing.
    interrupted = interrupted and not all(p.returncode == 0 for p in parties)
    result = SimulationResult(
        ok=not interrupted and all(p.returncode == 0 for p in parties),
        workdir=plan.root,
        parties=parties,
        seconds=time.monotonic() - start,
        interrupted=interrupted,
    )
    if not quiet:
        out.write("\nsummary:\n")
        for p in parties:
            state = _state(p.returncode, interrupted)
            out.write(f"  {p.role:<10} {p.email:<28} {state:<18} log: {p.log_path}\n")
            if p.note:
                out.write(f"  {'':<10} {p.note}\n")
        verdict = (
            "interrupted" if interrupted else ("succeeded" if result.ok else "FAILED")
        )
        out.write(f"simulation {verdict} in {result.seconds:.1f} s\n")
        out.flush()
    _write_text_atomic(
        plan.root / "summary.json",
        json.dumps(
            {
                "ok": result.ok,
                "interrupted": result.interrupted,
                "seconds": result.seconds,
                "parties": [
                    {
                        "email": p.email,
                        "role": p.role,
                        "returncode": p.returncode,
                        "note": p.note,
                    }
                    for p in parties
                ],
            },
            indent=2,
        ),
    )
    return result


def _state(returncode: int | None, interrupted: bool) -> str:
    """A party's line in the summary: ok, interrupted (Ctrl-C) or FAILED."""
    if returncode == 0:
        return "ok"
    if interrupted and returncode in (130, -signal.SIGINT):
        return "interrupted"
    return f"FAILED (exit {returncode})"

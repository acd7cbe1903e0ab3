"""Run syft_flwr parties as OS processes on a SyftBox harness network, and watch it.

Shared by ``tests/integration/test_syftbox_fl.py`` and ``benchmarks/bench_syftbox.py``
(both put this folder on ``sys.path``). Every party is one
``python -m syft_flwr party <app> --role ... --config <its SyftBox config>`` process
with its own ``OUTPUT_DIR`` and no ``DATA_DIR``; data owners are started first.

:class:`NetworkMonitor` polls every party's local ``datasites/`` (and the server's
copy) while a job runs. It records the largest file ever seen, which party ever saw
which pair's rpc messages, one parsed request head per pair (to check encryption) and
the moments the researcher log announces each Flower round (per-round timings).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from syft_flwr.testing.syftbox_network import SyftBoxNetwork

__all__ = [
    "ENDPOINT",
    "RESULT_PREFIX",
    "JobResult",
    "LogMarks",
    "NetworkMonitor",
    "PartyRun",
    "party_env",
    "per_round_seconds",
    "result_line",
    "run_job",
    "simulate_with_marks",
    "unique_app_name",
    "wire_app",
]

RESULT_PREFIX = "SYFT_FLWR_RESULT "
ENDPOINT = "messages"  # syft_flwr's rpc endpoint
_POLL = 0.1
_MARKS_POLL = 0.02  # seconds; resolution of the per-round timings
_ROUND = re.compile(r"\[ROUND (\d+)/(\d+)\]")
_FINISHED = "Strategy execution finished"
#: Environment that must not leak from the caller into a party process: the
#: SyftBox identity comes from --config, data from node_config, and syft_flwr runs
#: with its defaults (encryption on, 4 MiB chunks).
_DROP_ENV = ("DATA_DIR", "SYFT_FLWR_ENCRYPTION_ENABLED", "SYFT_FLWR_CHUNK_SIZE")


def unique_app_name(prefix: str) -> str:
    """A fresh app name per job, so jobs on one network never share folders."""
    return f"{prefix}_{int(time.time())}_{secrets.token_hex(3)}"


def wire_app(app_name: str) -> str:
    """The app folder under ``app_data`` (``ProjectConfig.flwr_app_name``)."""
    return app_name if app_name.startswith("flwr/") else f"flwr/{app_name}"


def party_env(config_path: Path, output_dir: Path) -> dict[str, str]:
    """A party's environment: inherited, minus SyftBox/syft_flwr/data settings."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.upper().startswith("SYFTBOX_") and k not in _DROP_ENV
    }
    env["PYTHONUNBUFFERED"] = "1"
    env["SYFTBOX_CLIENT_CONFIG_PATH"] = str(config_path)
    env["OUTPUT_DIR"] = str(output_dir)
    return env


class LogMarks:
    """Monotonic times at which the researcher log first shows round markers.

    ``marks`` maps ``"round 1"``, ``"round 2"``, ..., ``"finished"`` and ``"result"``
    to the first moment a poll saw them (resolution: the poll interval).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.marks: dict[str, float] = {}
        self._pos = 0
        self._buf = ""
        self._lock = threading.Lock()

    def poll(self) -> None:
        with self._lock:
            self._poll()

    def _poll(self) -> None:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self._pos)
                data = fh.read()
                self._pos = fh.tell()
        except FileNotFoundError:
            return
        now = time.monotonic()
        self._buf += data.decode("utf-8", errors="replace")
        *lines, self._buf = self._buf.split("\n")
        for line in lines:
            m = _ROUND.search(line)
            if m:
                self.marks.setdefault(f"round {int(m.group(1))}", now)
            elif _FINISHED in line:
                self.marks.setdefault("finished", now)
            elif line.startswith(RESULT_PREFIX):
                self.marks.setdefault("result", now)


def per_round_seconds(marks: dict[str, float]) -> list[float]:
    """Seconds of each Flower round: from its ``[ROUND n/N]`` to the next one.

    The last round ends at "Strategy execution finished". Rounds whose end was not
    seen are left out.
    """
    starts = sorted(
        (int(k.split()[1]), t) for k, t in marks.items() if k.startswith("round ")
    )
    out = []
    for i, (_n, t) in enumerate(starts):
        end = starts[i + 1][1] if i + 1 < len(starts) else marks.get("finished")
        if end is not None:
            out.append(end - t)
    return out


class NetworkMonitor:
    """Poll all parties' ``datasites/`` (and the server's copy) in a thread.

    Parameters
    ----------
    net
        The running network.
    app_name
        The job's app name (``--app-name``; ``flwr/`` is prepended on the wire).
    researcher
        The researcher's email (the requester whose folders are watched).
    data_owners
        The data owners' emails.
    researcher_log
        If given, round markers are read from it (see :class:`LogMarks`).
    """

    def __init__(
        self,
        net: SyftBoxNetwork,
        app_name: str,
        researcher: str,
        data_owners: Sequence[str],
        *,
        researcher_log: Path | None = None,
        interval: float = _POLL,
    ) -> None:
        self.net = net
        self.app = wire_app(app_name)
        self.researcher = researcher
        self.data_owners = list(data_owners)
        self.interval = interval
        self.marks = LogMarks(researcher_log) if researcher_log else None
        self.max_file_size = 0
        self.max_file_path = ""
        #: (viewer, owner) -> names ever seen in owner's rpc/messages/<researcher>/
        self.seen: dict[tuple[str, str], set[str]] = {}
        #: (viewer, owner) -> "syft_flwr" part of the first request head parsed there
        self.heads: dict[tuple[str, str], dict[str, Any]] = {}
        self.scans = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def messages_dir(self, viewer: str, owner: str) -> Path:
        """``viewer``'s local copy of ``owner``'s folder for the researcher's messages."""
        return (
            self.net.party(viewer).datasite(owner)
            / "app_data"
            / self.app
            / "rpc"
            / ENDPOINT
            / self.researcher
        )

    def _roots(self) -> list[Path]:
        return [p.datasites for p in self.net.parties] + [self.net.server_snapshot]

    def scan(self) -> None:
        """One pass over every tree (also callable by hand after the job)."""
        biggest, where = 0, ""
        for root in self._roots():
            for dirpath, _dirs, files in os.walk(root):
                for name in files:
                    path = os.path.join(dirpath, name)
                    try:
                        size = os.stat(path).st_size
                    except OSError:  # deleted meanwhile
                        continue
                    if size > biggest:
                        biggest, where = size, path
        seen: dict[tuple[str, str], set[str]] = {}
        for viewer in self.net.emails:
            for owner in self.data_owners:
                folder = self.messages_dir(viewer, owner)
                try:
                    names = set(os.listdir(folder))
                except OSError:
                    names = set()
                seen[(viewer, owner)] = names
                if (viewer, owner) not in self.heads:
                    self._parse_a_head(viewer, owner, folder, names)
        with self._lock:
            if biggest > self.max_file_size:
                self.max_file_size, self.max_file_path = biggest, where
            for k, names in seen.items():
                self.seen.setdefault(k, set()).update(names)
            self.scans += 1
        if self.marks is not None:
            self.marks.poll()

    def _parse_a_head(
        self, viewer: str, owner: str, folder: Path, names: Iterable[str]
    ) -> None:
        for name in names:
            if not name.endswith(".request"):
                continue
            try:
                doc = json.loads((folder / name).read_bytes())
            except (OSError, ValueError):  # partial download or deleted: next scan
                continue
            self.heads[(viewer, owner)] = dict(doc.get("syft_flwr") or {})
            return

    def _run(self) -> None:
        # Round marks are polled often (timing resolution); the trees every interval.
        next_scan = 0.0
        while not self._stop.is_set():
            try:
                if time.monotonic() >= next_scan:
                    self.scan()
                    next_scan = time.monotonic() + self.interval
                elif self.marks is not None:
                    self.marks.poll()
            except Exception as exc:  # keep watching; report at the end
                self.errors.append(repr(exc))
            self._stop.wait(_MARKS_POLL)

    def start(self) -> NetworkMonitor:
        self._thread = threading.Thread(
            target=self._run, name="syftbox-monitor", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.scan()

    def visible_to(self, viewer: str, owner: str) -> set[str]:
        """Names ``viewer`` ever had in ``owner``'s folder of researcher messages."""
        with self._lock:
            return set(self.seen.get((viewer, owner), set()))


@dataclass
class PartyRun:
    """One party process of a job."""

    email: str
    role: str
    cmd: list[str]
    log_path: Path
    output_dir: Path
    popen: subprocess.Popen[bytes] | None = None
    returncode: int | None = None
    started_at: float = 0.0
    ended_at: float = 0.0

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError as exc:
            return f"<cannot read {self.log_path}: {exc}>"

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:])


@dataclass
class JobResult:
    """What a job left behind."""

    app_name: str
    parties: list[PartyRun]
    seconds: float
    monitor: NetworkMonitor
    timed_out: bool = False
    ready_seconds: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def researcher(self) -> PartyRun:
        return next(p for p in self.parties if p.role == "researcher")

    @property
    def ok(self) -> bool:
        return not self.timed_out and all(p.returncode == 0 for p in self.parties)

    def result(self) -> dict[str, Any] | None:
        """The JSON of the researcher's ``SYFT_FLWR_RESULT`` line, if printed."""
        return result_line(self.researcher.log())

    def report(self, lines: int = 40) -> str:
        """Exit codes and log tails of every party plus the network's log paths."""
        out = [f"job {self.app_name}: timed_out={self.timed_out}"]
        for p in self.parties:
            out.append(
                f"\n--- {p.role} {p.email} exit={p.returncode} log={p.log_path} ---\n"
                + p.tail(lines)
            )
        net = self.monitor.net
        out.append(f"\nserver log: {net.server_log_path}")
        out += [f"client log {p.email}: {p.log_path}" for p in net.parties]
        return "\n".join(out)


def result_line(text: str) -> dict[str, Any] | None:
    """Parse the last ``SYFT_FLWR_RESULT {json}`` line of a log."""
    found = None
    for line in text.splitlines():
        if line.startswith(RESULT_PREFIX):
            with contextlib.suppress(ValueError):
                found = json.loads(line[len(RESULT_PREFIX) :])
    return found


def _party_cmd(
    app_dir: Path,
    role: str,
    config: Path,
    app_name: str,
    researcher: str,
    data_owners: Sequence[str],
    run_config: str | None,
    node_config: str | None,
) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "syft_flwr",
        "party",
        str(app_dir),
        "--role",
        role,
        "--config",
        str(config),
        "--app-name",
        app_name,
        "--aggregator",
        researcher,
        "--datasites",
        ",".join(data_owners),
    ]
    if run_config:
        cmd += ["--run-config", run_config]
    if node_config:
        cmd += ["--node-config", node_config]
    if role == "data-owner":
        cmd.append("--no-review")  # serves the local app folder, as simulate does
    return cmd


def _spawn(party: PartyRun, cwd: Path) -> None:
    party.output_dir.mkdir(parents=True, exist_ok=True)
    party.log_path.parent.mkdir(parents=True, exist_ok=True)
    config = Path(party.cmd[party.cmd.index("--config") + 1])
    with open(party.log_path, "wb") as log:
        party.popen = subprocess.Popen(
            party.cmd,
            cwd=cwd,
            env=party_env(config, party.output_dir),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    party.started_at = time.monotonic()


def _end(party: PartyRun, deadline: float) -> bool:
    """Wait for ``party`` until ``deadline``; stop it if needed. True if it ended."""
    assert party.popen is not None
    ended = True
    try:
        party.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        ended = False
        with contextlib.suppress(ProcessLookupError):
            party.popen.send_signal(signal.SIGINT)  # researcher: still stops the DOs
        try:
            party.popen.wait(timeout=15)
        except subprocess.TimeoutExpired:
            party.popen.kill()
            party.popen.wait()
    # Each party leads its own process group: end any child it left behind.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(party.popen.pid, signal.SIGKILL)
    party.returncode = party.popen.returncode
    party.ended_at = time.monotonic()
    return ended


def wait_prepared(
    net: SyftBoxNetwork,
    researcher: str,
    data_owners: Sequence[str],
    app_name: str,
    timeout: float,
    alive: Callable[[], None] | None = None,
) -> float:
    """Wait until the researcher's copy shows every data owner serving the app.

    That is: its ``rpc.schema.json`` and its ``public/did.json`` are synced (what
    ``SyftGrid`` waits for before writing a request). Returns the seconds waited.
    """
    t0 = time.monotonic()
    ds = net.party(researcher)
    want = [
        path
        for owner in data_owners
        for path in (
            ds.datasite(owner)
            / "app_data"
            / wire_app(app_name)
            / "rpc"
            / "rpc.schema.json",
            ds.datasite(owner) / "public" / "did.json",
        )
    ]
    while not all(p.is_file() for p in want):
        if time.monotonic() - t0 > timeout:
            missing = [str(p) for p in want if not p.is_file()]
            raise TimeoutError(
                f"data owners not ready after {timeout:.0f} s: {missing}"
            )
        net.check_alive()
        if alive is not None:
            alive()
        time.sleep(0.05)
    return time.monotonic() - t0


def run_job(
    net: SyftBoxNetwork,
    app_dir: Path,
    workdir: Path,
    *,
    researcher: str,
    data_owners: Sequence[str],
    app_name: str,
    run_config: str | None = None,
    timeout: float = 180.0,
    wait_ready: bool = False,
    researcher_lead: float | None = None,
    ready_timeout: float = 60.0,
    monitor_interval: float = _POLL,
) -> JobResult:
    """Run one syft_flwr job: data owners first, then the researcher.

    Data owner ``i`` gets ``--node-config "partition-id=i num-partitions=N"``. With
    ``wait_ready`` the researcher only starts once it can see every data owner
    serving the app (clean round-1 timings); otherwise it starts right away and
    ``SyftGrid`` defers its first requests itself. ``researcher_lead`` (seconds)
    inverts the order: the researcher starts that long before the data owners.

    The monitor keeps running; call ``result.monitor.stop()`` when done with it.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    n = len(data_owners)
    parties = [
        PartyRun(
            email=owner,
            role="data-owner",
            cmd=_party_cmd(
                app_dir,
                "data-owner",
                net.party(owner).config_path,
                app_name,
                researcher,
                data_owners,
                run_config,
                f"partition-id={i} num-partitions={n}",
            ),
            log_path=workdir / "logs" / f"{owner}.log",
            output_dir=workdir / "outputs" / owner,
        )
        for i, owner in enumerate(data_owners)
    ]
    res_party = PartyRun(
        email=researcher,
        role="researcher",
        cmd=_party_cmd(
            app_dir,
            "researcher",
            net.party(researcher).config_path,
            app_name,
            researcher,
            data_owners,
            run_config,
            None,
        ),
        log_path=workdir / "logs" / f"{researcher}.log",
        output_dir=workdir / "outputs" / researcher,
    )
    monitor = NetworkMonitor(
        net,
        app_name,
        researcher,
        data_owners,
        researcher_log=res_party.log_path,
        interval=monitor_interval,
    ).start()
    t0 = time.monotonic()
    timed_out = False
    ready_s: float | None = None
    try:
        if researcher_lead is not None:
            # Deliberately the wrong order: the researcher has to wait for them.
            _spawn(res_party, app_dir)
            time.sleep(researcher_lead)
        for p in parties:
            _spawn(p, app_dir)

        def _alive() -> None:
            for p in parties:
                if p.popen is not None and p.popen.poll() is not None:
                    raise RuntimeError(
                        f"data owner {p.email} exited early ({p.popen.returncode}):\n"
                        + p.tail()
                    )

        if wait_ready and researcher_lead is None:
            ready_s = wait_prepared(
                net, researcher, data_owners, app_name, ready_timeout, _alive
            )
        if researcher_lead is None:
            _spawn(res_party, app_dir)
        parties.append(res_party)
        deadline = t0 + timeout
        timed_out = not _end(res_party, deadline)
        # Data owners end on the researcher's stop signal (one more sync round trip).
        grace = max(deadline, time.monotonic() + 45.0)
        for p in parties[:-1]:
            timed_out = not _end(p, grace) or timed_out
    except BaseException:
        monitor.stop()
        raise
    finally:
        for p in parties:
            if p.popen is not None and p.returncode is None:
                _end(p, time.monotonic())
    return JobResult(
        app_name=app_name,
        parties=parties,
        seconds=time.monotonic() - t0,
        monitor=monitor,
        timed_out=timed_out,
        ready_seconds=ready_s,
    )


def simulate_with_marks(
    app_dir: Path,
    num_data_owners: int,
    workdir: Path,
    *,
    run_config: str | None = None,
    timeout: float = 180.0,
) -> tuple[Any, dict[str, float]]:
    """``syft_flwr.simulation.simulate`` (encryption on), timing its rounds too.

    Returns the ``SimulationResult`` and the round marks of its researcher log.
    """
    from syft_flwr.project import load_project
    from syft_flwr.simulation import RESEARCHER_EMAIL, simulate

    agg = load_project(app_dir).aggregator or RESEARCHER_EMAIL
    marks = LogMarks(workdir / "logs" / f"{agg}.log")
    box: dict[str, Any] = {}

    def _run() -> None:
        try:
            box["result"] = simulate(
                app_dir,
                num_data_owners,
                run_config=run_config,
                workdir=workdir,
                encryption=True,
                timeout=timeout,
                quiet=True,
            )
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=_run, name="simulate", daemon=True)
    thread.start()
    while thread.is_alive():
        marks.poll()
        thread.join(_MARKS_POLL)
    marks.poll()
    if "error" in box:
        raise box["error"]
    return box["result"], marks.marks

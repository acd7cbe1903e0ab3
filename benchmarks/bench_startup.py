"""Start-up and round times of ``syft_flwr simulate`` on local folders.

What is measured, per number of data owners N (every party its own process,
encryption on, the test app ``tests/assets/toy_app``: FedAvg, 1,000 floats):

* **command -> first request**: from starting ``python -m syft_flwr simulate``
  to the first ``*.request`` file appearing in any data owner's folder
  (a watchdog observer on the network's ``datasites/``);
* **round 1** and **steady round**: from Flower's ``[ROUND n/R]`` log line to the
  next one (the last round is left out: it ends with the stop signal), read by
  tailing the researcher's log every 5 ms; steady is the median of rounds 2..R-1;
* **total**: the whole command, processes ended.
* **CPU / steady round**: user + system CPU of every process of the run (the
  ``simulate`` command and every process under it, from ``/proc/<pid>/stat``)
  sampled at each ``[ROUND n/R]`` line, averaged over rounds 2..R-1; also the
  researcher's share (found in ``parties.json``, where the checkout writes it). Steadier than wall time on a shared box.
  Linux only (``nan`` elsewhere); take ``--rounds 20`` or more for a figure finer
  than the 10 ms clock tick. **CPU / data owner / round** is that figure over N.
* **p50 / p99 steady round** and **rounds > 0.4 s**: over every steady round of
  every repeat (nearest rank; under 100 rounds the p99 is the slowest round).
  A round over 0.4 s is a stall (issue 29: watchdog's 0.5 s rename pairing).

Reference rows, measured in the same run:

* **in-process limit**: the same app, researcher and N data-owner threads in this
  process over the in-memory transport with encryption on (imports and keys paid
  before the clock starts): what is left when no process starts.
* Flower's simulation engine needs ``flwr[simulation]`` (Ray), which is not in this
  environment; its figures from ``/work/shared/reference/flower-api.md`` (same box,
  2 nodes) are printed as a quoted reference, not measured.

Usage::

    .venv/bin/python benchmarks/bench_startup.py [--sizes 2 8] [--rounds 5]
        [--repeats 3] [--src OTHER_CHECKOUT/src] [--json out.json]

``--src`` runs another checkout's ``syft_flwr`` (e.g. the commit before a change,
from ``git archive``) for a before/after table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TOY = REPO / "tests" / "assets" / "toy_app"
DS = "researcher@example.org"


class _FirstRequest:
    """Time of the first ``*.request`` file under a folder (watchdog)."""

    def __init__(self, folder: Path) -> None:
        from watchdog.events import (
            FileClosedEvent,
            FileCreatedEvent,
            FileMovedEvent,
            FileSystemEventHandler,
        )
        from watchdog.observers import Observer

        self.at: float | None = None
        outer = self

        class _H(FileSystemEventHandler):
            def dispatch(self, event: Any) -> None:
                path = str(getattr(event, "dest_path", "") or event.src_path)
                if outer.at is None and path.endswith(".request"):
                    outer.at = time.monotonic()

        folder.mkdir(parents=True, exist_ok=True)
        self._obs = Observer()
        # Writes only: the reads of every party must not cost this process CPU
        # (it shares the cores with the run it measures).
        self._obs.schedule(
            _H(),
            str(folder),
            recursive=True,
            event_filter=[FileCreatedEvent, FileMovedEvent, FileClosedEvent],
        )
        self._obs.start()

    def stop(self) -> None:
        self._obs.stop()
        self._obs.join(5)


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` (``/proc/<pid>/stat``), nan if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / _TICK


def _descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (``/proc/<pid>/task/*/children``)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            tasks = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for t in tasks:
            try:
                with open(f"/proc/{p}/task/{t}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
            except OSError:
                pass
    return out


class _CpuSampler:
    """CPU seconds of the run's processes: the command and every party under it.

    The processes are found once, at the first sample (every party runs by the
    first round); the researcher by ``parties.json`` where the checkout writes it.
    """

    def __init__(self, root_pid: int, workdir: Path) -> None:
        self.root_pid = root_pid
        self.parties_file = workdir / "parties.json"
        self.pids: list[int] | None = None
        self.researcher: int | None = None

    def sample(self) -> tuple[float, float]:
        """(all processes, researcher) CPU seconds now."""
        if self.pids is None:
            self.pids = _descendants(self.root_pid)
            try:
                parties = json.loads(self.parties_file.read_text())
                self.researcher = next(
                    int(p["pid"]) for p in parties if p.get("role") == "researcher"
                )
            except (OSError, ValueError, StopIteration):
                self.researcher = None
        total = sum(_cpu_seconds(p) for p in self.pids)
        if self.researcher is None:
            return total, float("nan")
        return total, _cpu_seconds(self.researcher)


class _LogMarks:
    """First-seen times of ``[ROUND n/`` lines in a growing log file."""

    def __init__(self, path: Path, cpu: _CpuSampler | None = None) -> None:
        self.path = path
        self.marks: dict[int, float] = {}
        self.cpu_marks: dict[int, tuple[float, float]] = {}
        self._cpu = cpu
        self._pos = 0
        self._buf = ""
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._loop, daemon=True)
        self._t.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.poll()
            time.sleep(0.005)

    def poll(self) -> None:
        try:
            with open(self.path, errors="replace") as f:
                f.seek(self._pos)
                data = f.read()
                self._pos = f.tell()
        except FileNotFoundError:
            return
        now = time.monotonic()
        self._buf += data
        *lines, self._buf = self._buf.split("\n")
        for line in lines:
            if "[ROUND " in line:
                n = int(line.split("[ROUND ", 1)[1].split("/", 1)[0])
                if n not in self.marks:
                    self.marks[n] = now
                    if self._cpu is not None:
                        self.cpu_marks[n] = self._cpu.sample()

    def stop(self) -> None:
        self._stop.set()
        self._t.join(5)
        self.poll()


def _rounds(marks: dict[int, float]) -> list[float]:
    ns = sorted(marks)
    return [marks[b] - marks[a] for a, b in zip(ns, ns[1:], strict=False)]


def _steady_cpu(cpu_marks: dict[int, tuple[float, float]]) -> tuple[float, float]:
    """Mean CPU seconds per round over rounds 2..R-1: (all, researcher)."""
    ns = sorted(cpu_marks)
    if len(ns) < 3:
        return float("nan"), float("nan")
    a, b = ns[1], ns[-1]
    rounds = b - a
    return tuple(  # type: ignore[return-value]
        (cpu_marks[b][i] - cpu_marks[a][i]) / rounds for i in (0, 1)
    )


def run_simulate(
    n: int,
    rounds: int,
    src: Path | None,
    tmp: Path,
    containment: str | None = None,
) -> dict[str, float]:
    """One ``syft_flwr simulate`` command; its start-up and round times."""
    app = tmp / "toy_app"
    if not app.exists():
        shutil.copytree(TOY, app, ignore=shutil.ignore_patterns("__pycache__"))
    work = Path(tempfile.mkdtemp(prefix=f"n{n}_", dir=tmp))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYFT_FLWR_")}
    if src is not None:
        env["PYTHONPATH"] = str(src)
    first = _FirstRequest(work / "SyftBox" / "datasites")
    cmd = [
        sys.executable,
        "-m",
        "syft_flwr",
        "simulate",
        str(app),
        "-n",
        str(n),
        "--workdir",
        str(work),
        "--run-config",
        f"num-server-rounds={rounds}",
    ]
    if containment is not None:  # default: simulate's own (full where possible)
        cmd += ["--containment", containment]
    t0 = time.monotonic()
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    marks = _LogMarks(work / "logs" / f"{DS}.log", _CpuSampler(proc.pid, work))
    stdout, stderr = proc.communicate(timeout=600)
    total = time.monotonic() - t0
    first.stop()
    marks.stop()
    if proc.returncode != 0:
        raise RuntimeError(f"simulate failed:\n{stdout[-3000:]}{stderr}")
    per_round = _rounds(marks.marks)
    cpu_all, cpu_researcher = _steady_cpu(marks.cpu_marks)
    shutil.rmtree(work, ignore_errors=True)
    return {
        "first_request": (first.at - t0) if first.at else float("nan"),
        "round1": per_round[0],
        "steady": statistics.median(per_round[1:]),
        "total": total,
        "cpu": cpu_all,
        "cpu_researcher": cpu_researcher,
        "rounds": per_round[1:],
    }


def run_in_process(n: int, rounds: int, tmp: Path) -> dict[str, float]:
    """The same app with every party a thread of this process (memory transport)."""
    import logging

    from syft_flwr.client import MemoryClient
    from syft_flwr.config import Settings
    from syft_flwr.crypto.policy import load_or_create_keys
    from syft_flwr.data_owner.runner import run_data_owner
    from syft_flwr.project import load_component, load_project
    from syft_flwr.researcher.runner import run_researcher
    from syft_flwr.transports.memory import MemoryHub, MemoryTransport

    cfg = load_project(TOY)
    server_app = load_component(cfg.serverapp, cfg.app_dir)
    client_app = load_component(cfg.clientapp, cfg.app_dir)
    hub = MemoryHub()
    owners = [f"do{i + 1}@example.org" for i in range(n)]
    settings = Settings(encryption_enabled=True)
    clients = {e: MemoryClient(e, hub) for e in [DS, *owners]}
    for c in clients.values():  # keys paid before the clock, like imports
        load_or_create_keys(c, c.make_transport())
    rc = dict(cfg.app_config, **{"num-server-rounds": rounds, "min-nodes": 2})
    marks: dict[int, float] = {}
    first: list[float] = []

    class _Marks(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            msg = record.getMessage()
            if "[ROUND " in msg:
                k = int(msg.split("[ROUND ", 1)[1].split("/", 1)[0])
                marks.setdefault(k, time.monotonic())

    handler = _Marks()
    logging.getLogger("flwr").addHandler(handler)
    watcher = MemoryTransport(hub, DS)
    for e in owners:
        watcher.watch(
            f"{e}/app_data/flwr/toy/rpc/messages",
            lambda k: (
                first.append(time.monotonic()) if k.endswith(".request") else None
            ),
        )
    t0 = time.monotonic()
    threads = []
    for i, e in enumerate(owners):
        th = threading.Thread(
            target=run_data_owner,
            args=(client_app, "flwr/toy"),
            kwargs=dict(
                client=clients[e],
                aggregators=[DS],
                run_config=rc,
                node_config={"partition-id": i, "num-partitions": n},
                settings=settings,
            ),
            daemon=True,
        )
        th.start()
        threads.append(th)
    devnull = open(os.devnull, "w")  # noqa: SIM115 - the app prints its result
    saved, sys.stdout = sys.stdout, devnull
    try:
        run_researcher(
            server_app,
            "flwr/toy",
            owners,
            client=clients[DS],
            run_config=rc,
            settings=settings,
            stop_wait=5,
        )
    finally:
        sys.stdout = saved
        devnull.close()
    for th in threads:
        th.join(10)
    total = time.monotonic() - t0
    logging.getLogger("flwr").removeHandler(handler)
    per_round = _rounds(marks)
    return {
        "first_request": (min(first) - t0) if first else float("nan"),
        "round1": per_round[0],
        "steady": statistics.median(per_round[1:]),
        "total": total,
        "cpu": float("nan"),
        "cpu_researcher": float("nan"),
        "rounds": per_round[1:],
    }


def _ms(seconds: float) -> str:
    return "-" if seconds != seconds else f"{seconds * 1000:.0f}"  # nan: not measured


def _median(rows: list[dict]) -> dict[str, float]:
    """Median of each figure over the repeats; p50/p99/slow over all steady rounds.

    Also the CPU per data owner per round (all processes' CPU over N), ``n``
    being read from the caller's row.
    """
    out = {k: statistics.median(r[k] for r in rows) for k in rows[0] if k != "rounds"}
    steady = sorted(x for r in rows for x in r["rounds"])
    out["p50"] = statistics.median(steady)
    # Nearest rank: with fewer than 100 rounds p99 is the slowest one.
    out["p99"] = steady[min(len(steady) - 1, math.ceil(0.99 * len(steady)) - 1)]
    out["slow"] = sum(1 for x in steady if x > 0.4)
    out["n_rounds"] = len(steady)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[2, 8])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--src", type=Path, default=None)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument(
        "--containment",
        choices=["full", "none"],
        default=None,
        help="pass --containment to simulate (default: simulate's own, full)",
    )
    args = p.parse_args(argv)
    if args.rounds < 3:
        p.error("--rounds must be at least 3 (round 1, a steady round, a last round)")
    logging_quiet()
    tmp = Path(tempfile.mkdtemp(prefix="bench_startup_"))
    rows: list[tuple[str, int, dict[str, float]]] = []
    try:
        for n in args.sizes:
            sim = [
                run_simulate(n, args.rounds, args.src, tmp, args.containment)
                for _ in range(args.repeats)
            ]
            rows.append(("syft_flwr simulate (processes, folders)", n, _median(sim)))
            inproc = [run_in_process(n, args.rounds, tmp) for _ in range(args.repeats)]
            rows.append(("in-process limit (threads, memory)", n, _median(inproc)))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(
        f"Start-up and round times, toy app, {args.rounds} rounds, encryption on, "
        f"median of {args.repeats} (seconds)\n"
    )
    print(
        "| setup | N | command -> first request | round 1 | steady round | total "
        "| p50 / p99 steady round | rounds > 0.4 s | CPU / steady round (ms) "
        "| CPU / data owner / round (ms) | researcher CPU / round (ms) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, n, r in rows:
        print(
            f"| {name} | {n} | {r['first_request']:.2f} | {r['round1']:.3f} | "
            f"{r['steady']:.3f} | {r['total']:.2f} | "
            f"{r['p50']:.3f} / {r['p99']:.3f} | {r['slow']} of {r['n_rounds']} | "
            f"{_ms(r['cpu'])} | {_ms(r['cpu'] / n)} | {_ms(r['cpu_researcher'])} |"
        )
    print(
        "| Flower simulation engine (Ray), quoted from flower-api.md, not measured "
        "here | 2 | - | 7.8-9.9 | 0.21-0.42 | 15-20 | - | - | - | - | - |"
    )
    if args.json:
        args.json.write_text(
            json.dumps([{"setup": a, "n": n, **r} for a, n, r in rows], indent=2)
        )
    return 0


def logging_quiet() -> None:
    """Keep the in-process runs' log lines off the table."""
    import logging

    logging.getLogger("syft_flwr").setLevel(logging.WARNING)
    logging.getLogger("flwr").setLevel(logging.INFO)
    logging.getLogger("flwr").propagate = False
    for h in list(logging.getLogger("flwr").handlers):
        if not isinstance(h, logging.NullHandler):
            h.setLevel(logging.CRITICAL)


if __name__ == "__main__":
    raise SystemExit(main())

"""Following a running simulation and its outcome: the live log tail, the wait for
the researcher, each party's exit note and the summary.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import IO

from syft_flwr.simulation._network import Party, SimulationResult, _write_text_atomic
from syft_flwr.simulation._parties import _PartyProcess
from syft_flwr.simulation._plan import _Plan


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

"""``simulate`` / ``run`` on the command line: run, then say what happened.

On top of :func:`syft_flwr.simulation.simulate` the command line adds what
only it knows: the exact command that resumes an interrupted run, exit 130
for Ctrl-C, and what becomes of the temporary work folder of a run given no
``--workdir`` (removed when the run succeeded, kept when it did not).
"""

from __future__ import annotations

import dataclasses
import json
import shlex
import shutil
from pathlib import Path
from typing import Any

import click
import typer

from syft_flwr.errors import SyftFlwrError

__all__ = ["SimulateOptions", "resume_command", "simulate_and_report"]


@dataclasses.dataclass(frozen=True)
class SimulateOptions:
    """The options ``simulate`` and ``run`` share."""

    app_dir: Path
    run_config: list[str] | None
    workdir: Path | None
    fresh: bool
    timeout: float
    history_out: Path | None
    plot_out: Path | None
    privacy: Path | None = None


def simulate_and_report(
    opts: SimulateOptions,
    num_data_owners: int | None,
    paths: list[str] | None,
    *,
    entry: str = "party",
    log_dir: Path | None = None,
) -> None:
    """Run the simulation; exit 130 if interrupted, 1 if it failed.

    Raises
    ------
    typer.Exit
        130 after Ctrl-C (with the command that resumes), 1 after a failure.
    """
    from syft_flwr.simulation import simulate as _run_simulation

    res = _run_simulation(
        opts.app_dir,
        num_data_owners,
        mock_dataset_paths=paths,
        run_config=" ".join(opts.run_config) if opts.run_config else None,
        workdir=opts.workdir,
        timeout=opts.timeout,
        entry=entry,
        log_dir=log_dir,
        fresh=opts.fresh,
        privacy=opts.privacy,
    )
    try:
        if res.ok and (opts.history_out or opts.plot_out):
            _write_history(res, opts.history_out, opts.plot_out)
    finally:  # the history is read from the work folder: tidy it after
        if opts.workdir is None:
            _tidy_temp_workdir(res.workdir, res.ok)
    if res.interrupted:
        print("to resume from the last completed round, run:")
        print(f"  {resume_command(res.workdir, given=opts.workdir is not None)}")
        raise typer.Exit(130)
    if not res.ok:
        raise typer.Exit(1)


def resume_command(workdir: Path, *, given: bool) -> str:
    """The command as the user typed it, minus ``--fresh``, with ``--workdir``."""
    ctx = click.get_current_context(silent=True)
    root = ctx.find_root() if ctx is not None else None
    argv = list((root.obj or {}).get("argv", [])) if root is not None else []
    argv = [a for a in argv if a != "--fresh"]
    if not given:  # the run's temporary folder holds its checkpoint
        argv += ["--workdir", str(workdir)]
    return shlex.join(["syft_flwr", *argv])


def _tidy_temp_workdir(workdir: Path, ok: bool) -> None:
    """Remove the temporary work folder of a run that succeeded; else keep it."""
    outputs = workdir / "outputs"
    wrote = outputs.is_dir() and any(p.is_file() for p in outputs.rglob("*"))
    if ok and not wrote:
        shutil.rmtree(workdir, ignore_errors=True)
        print(
            f"removed the temporary work folder {workdir} (the run succeeded; "
            "give --workdir to keep it)"
        )
    elif ok:
        print(f"kept the temporary work folder {workdir}: the parties wrote outputs")
    else:
        print(
            f"kept the temporary work folder {workdir} (logs and progress of the "
            "run that did not succeed; delete it when done)"
        )


def _write_history(res: Any, history_out: Path | None, plot_out: Path | None) -> None:
    """``--history-out`` / ``--plot-out`` of a successful simulation."""
    from syft_flwr.history import plot_history, simulation_history

    history = simulation_history(res)
    if history is None:
        raise SyftFlwrError(
            "the run saved no per-round history (its ServerApp did not use a "
            "Flower strategy's start())"
        )
    if history_out is not None:
        history_out.parent.mkdir(parents=True, exist_ok=True)
        history_out.write_text(json.dumps(history, indent=2, sort_keys=True) + "\n")
        print(f"history of {len(history['rounds'])} round(s) written to {history_out}")
    if plot_out is not None:
        plot_out.parent.mkdir(parents=True, exist_ok=True)
        plot_history(history, plot_out)
        print(f"plot of the per-round metrics written to {plot_out}")

"""Local simulation: researcher and N data owners as OS processes over local folders.

Every party gets its own SyftBox client config on one shared data dir (the
file system is the network, so sync is instant); messages take the same path
as on a real SyftBox network: envelope, encryption, watchdog events.

This module is the public face; the work is split by concern: the network and
its parties (``_network``), the checked plan (``_plan``), starting and stopping
processes (``_parties``), and following the run to its summary (``_collect``).
Every name importable from here before the split still is.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from syft_flwr.simulation._collect import _collect as _collect
from syft_flwr.simulation._collect import _exit_note as _exit_note
from syft_flwr.simulation._collect import _last_line as _last_line
from syft_flwr.simulation._collect import _state as _state
from syft_flwr.simulation._collect import _Tail as _Tail
from syft_flwr.simulation._collect import _watch as _watch
from syft_flwr.simulation._network import RESEARCHER_EMAIL as RESEARCHER_EMAIL
from syft_flwr.simulation._network import RESUME_MARK as RESUME_MARK
from syft_flwr.simulation._network import Party as Party
from syft_flwr.simulation._network import SimulationResult as SimulationResult
from syft_flwr.simulation._network import _write_config as _write_config
from syft_flwr.simulation._network import _write_text_atomic as _write_text_atomic
from syft_flwr.simulation._network import prepare_network as prepare_network
from syft_flwr.simulation._parties import _can_fork as _can_fork
from syft_flwr.simulation._parties import _fork_party as _fork_party
from syft_flwr.simulation._parties import _ForkedParty as _ForkedParty
from syft_flwr.simulation._parties import _keep_earlier_logs as _keep_earlier_logs
from syft_flwr.simulation._parties import _kill_leftovers as _kill_leftovers
from syft_flwr.simulation._parties import _party_cmd as _party_cmd
from syft_flwr.simulation._parties import _PartyProcess as _PartyProcess
from syft_flwr.simulation._parties import _prepare as _prepare
from syft_flwr.simulation._parties import _start_parties as _start_parties
from syft_flwr.simulation._parties import _stop_parties as _stop_parties
from syft_flwr.simulation._plan import _app_name as _app_name
from syft_flwr.simulation._plan import _check_entry as _check_entry
from syft_flwr.simulation._plan import _count_data_owners as _count_data_owners
from syft_flwr.simulation._plan import _dataset_paths as _dataset_paths
from syft_flwr.simulation._plan import _Plan as _Plan
from syft_flwr.simulation._plan import _plan as _plan
from syft_flwr.simulation._plan import _privacy_file as _privacy_file
from syft_flwr.simulation._plan import _size as _size

__all__ = ["Party", "SimulationResult", "prepare_network", "simulate"]


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

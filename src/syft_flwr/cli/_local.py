"""The commands that start parties on this machine: ``simulate``, ``run`` (upstream's
form of it), the hidden ``party`` (one process of a simulation) and ``containment``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import click
import typer

from syft_flwr.cli._common import (
    PrivacyOpt,
    RunConfigOpt,
    emails,
)
from syft_flwr.cli._containment import (
    AllowReadOpt,
    AllowWriteOpt,
    ContainmentOpt,
    CpuSecondsOpt,
    MaxFileMbOpt,
    MaxProcessesOpt,
    MemoryMbOpt,
    containment,
    export_policy,
    policy_from,
)
from syft_flwr.cli._setup import _prompt
from syft_flwr.cli._simulate import SimulateOptions as _SimulateOptions
from syft_flwr.cli._simulate import simulate_and_report as _simulate
from syft_flwr.errors import ConfigError

# Options shared by ``simulate`` and ``run`` (both start a local simulation).
AppDirArg = Annotated[Path, typer.Argument(help="The Flower app folder.")]
WorkdirOpt = Annotated[
    Path | None,
    typer.Option(
        "--workdir",
        help="Folder for the simulated network and outputs (default: a new "
        "temporary folder, removed after a run that succeeded); run again with "
        "the same folder to resume an interrupted run.",
    ),
]
FreshOpt = Annotated[
    bool,
    typer.Option(
        "--fresh",
        help="Start over instead of resuming an interrupted run in --workdir.",
    ),
]
TimeoutOpt = Annotated[
    float,
    typer.Option("--timeout", help="Seconds before the whole run is stopped."),
]
HistoryOutOpt = Annotated[
    Path | None,
    typer.Option(
        "--history-out",
        help="Write the run's per-round metrics (its history) to this JSON file.",
    ),
]
PlotOutOpt = Annotated[
    Path | None,
    typer.Option(
        "--plot-out",
        help="Plot the run's per-round metrics to this PNG file (needs matplotlib).",
    ),
]


def simulate(
    app_dir: AppDirArg,
    num_data_owners: Annotated[
        int | None,
        typer.Option(
            "-n",
            "--num-data-owners",
            help="How many data owners, 1 or more (default: the app's "
            "datasites, else 2).",
        ),
    ] = None,
    run_config: RunConfigOpt = None,
    workdir: WorkdirOpt = None,
    fresh: FreshOpt = False,
    timeout: TimeoutOpt = 1800.0,
    history_out: HistoryOutOpt = None,
    plot_out: PlotOutOpt = None,
    privacy: PrivacyOpt = None,
    containment: ContainmentOpt = None,
    memory_mb: MemoryMbOpt = None,
    cpu_seconds: CpuSecondsOpt = None,
    max_processes: MaxProcessesOpt = None,
    max_file_mb: MaxFileMbOpt = None,
    allow_read: AllowReadOpt = None,
    allow_write: AllowWriteOpt = None,
) -> None:
    """Run the researcher and N data owners as local processes.

    The data owners' ClientApps run contained, as a data owner's would; where
    this machine cannot contain, they run uncontained with one warning line.
    """
    export_policy(
        policy_from(
            containment,
            memory_mb,
            cpu_seconds,
            max_processes,
            max_file_mb,
            allow_read,
            allow_write,
        )
    )
    opts = _SimulateOptions(
        app_dir, run_config, workdir, fresh, timeout, history_out, plot_out, privacy
    )
    _simulate(opts, num_data_owners, None)


def run(
    app_dir: AppDirArg,
    mock_dataset_paths: Annotated[
        list[str] | None,
        typer.Option(
            "-m",
            "--mock-dataset-paths",
            help="One data folder per data owner (its DATA_DIR), comma-separated "
            "or repeated (asked for if left out); logs go to APP_DIR/simulation_logs.",
        ),
    ] = None,
    run_config: RunConfigOpt = None,
    workdir: WorkdirOpt = None,
    fresh: FreshOpt = False,
    timeout: TimeoutOpt = 1800.0,
    history_out: HistoryOutOpt = None,
    plot_out: PlotOutOpt = None,
    privacy: PrivacyOpt = None,
    containment: ContainmentOpt = None,
    memory_mb: MemoryMbOpt = None,
    cpu_seconds: CpuSecondsOpt = None,
    max_processes: MaxProcessesOpt = None,
    max_file_mb: MaxFileMbOpt = None,
    allow_read: AllowReadOpt = None,
    allow_write: AllowWriteOpt = None,
) -> None:
    """Simulate with one data owner per mock dataset path (upstream's form)."""
    export_policy(
        policy_from(
            containment,
            memory_mb,
            cpu_seconds,
            max_processes,
            max_file_mb,
            allow_read,
            allow_write,
        )
    )
    from syft_flwr.project import load_project, parse_run_config
    from syft_flwr.run_config import check_counts
    from syft_flwr.run_simulation import LOG_DIR_NAME

    cfg = load_project(app_dir)  # a clear error before any prompt
    check_counts(None, timeout)
    parse_run_config(cfg.app_config, run_config)
    values = mock_dataset_paths or [
        _prompt("Enter comma-separated paths to mock datasets", "--mock-dataset-paths")
    ]
    paths = [p.strip() for v in values for p in v.split(",") if p.strip()]
    if not paths:
        raise ConfigError("give --mock-dataset-paths (one folder per data owner)")
    # A bootstrapped app runs through its own main.py, as upstream's `run` did.
    use_main = cfg.bootstrapped and (cfg.app_dir / "main.py").is_file()
    opts = _SimulateOptions(
        app_dir, run_config, workdir, fresh, timeout, history_out, plot_out, privacy
    )
    _simulate(
        opts,
        None,
        paths,
        entry="main.py" if use_main else "party",
        log_dir=cfg.app_dir / LOG_DIR_NAME,
    )


def party(
    app_dir: AppDirArg,
    role: Annotated[
        str,
        typer.Option(
            "--role",
            click_type=click.Choice(["researcher", "data-owner"]),
            help="Which side this process plays.",
        ),
    ],
    config: Annotated[
        str, typer.Option("--config", help="This party's SyftBox config.")
    ],
    app_name: Annotated[
        str | None, typer.Option("--app-name", help="The app folder name on the wire.")
    ] = None,
    aggregator: Annotated[
        str | None, typer.Option("--aggregator", help="The researcher's email.")
    ] = None,
    datasites: Annotated[
        str | None,
        typer.Option("--datasites", help="Data owner emails, comma-separated."),
    ] = None,
    run_config: RunConfigOpt = None,
    node_config: Annotated[
        list[str] | None,
        typer.Option("--node-config", help="This node's config; repeatable."),
    ] = None,
    fresh: Annotated[
        bool, typer.Option("--fresh", help="Start the run over instead of resuming it.")
    ] = False,
    no_review: Annotated[
        bool,
        typer.Option(
            "--no-review",
            help="Data owner: serve this local folder's code although nobody "
            "reviewed it (logged; shown by `syft_flwr status`). Default: "
            "SYFT_FLWR_NO_REVIEW, else refused (use `syft_flwr serve`).",
        ),
    ] = False,
    privacy: PrivacyOpt = None,
    containment: ContainmentOpt = None,
    memory_mb: MemoryMbOpt = None,
    cpu_seconds: CpuSecondsOpt = None,
    max_processes: MaxProcessesOpt = None,
    max_file_mb: MaxFileMbOpt = None,
    allow_read: AllowReadOpt = None,
    allow_write: AllowWriteOpt = None,
) -> None:
    """Internal: one party of a `simulate` run (also usable by hand)."""
    from syft_flwr._proctitle import set_party_title
    from syft_flwr.client.syft_core_client import SyftCoreClient
    from syft_flwr.ids import normalize_email
    from syft_flwr.logs import setup_logging
    from syft_flwr.project import load_project
    from syft_flwr.run import run_role

    setup_logging()
    cfg = load_project(app_dir)
    changes: dict[str, object] = {}
    if app_name:
        changes["app_name"] = app_name
    if datasites:
        changes["datasites"] = tuple(emails(datasites))
    if aggregator:
        changes["aggregator"] = normalize_email(aggregator)
    cfg = dataclasses.replace(cfg, **changes)  # type: ignore[arg-type]
    client = SyftCoreClient.load(config)
    set_party_title(role, client.email)
    run_role(
        cfg,
        client,
        role,
        run_config=run_config,
        node_config=node_config,
        fresh=fresh,
        no_review=no_review or None,
        privacy=privacy,
        containment=policy_from(
            containment,
            memory_mb,
            cpu_seconds,
            max_processes,
            max_file_mb,
            allow_read,
            allow_write,
        ),
    )


def register(app: typer.Typer) -> None:
    """Add ``simulate``, ``run``, ``party`` and ``containment`` to the app, in order."""
    app.command()(simulate)
    app.command()(run)
    app.command(hidden=True)(party)
    app.command()(containment)

"""The ``syft_flwr`` command line: bootstrap, run, simulate, keys, review, audit.

Built on typer with rich help, as Flower's own ``flwr`` CLI is. Commands parse
arguments and call public functions. :func:`main` turns every error into one
plain line on stderr and an exit code: 0 done, 1 failed, 2 usage or
configuration error, 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Annotated, Any

import click
import typer

from syft_flwr._printable import printable
from syft_flwr._version import __version__
from syft_flwr.cli._common import (
    ConfigOpt,
    JsonOpt,
    PrivacyOpt,
    RunConfigOpt,
    client_for,
    emails,
    print_json,
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
from syft_flwr.cli._simulate import SimulateOptions as _SimulateOptions
from syft_flwr.cli._simulate import simulate_and_report as _simulate
from syft_flwr.errors import AlreadyExistsError, ConfigError, SyftFlwrError

__all__ = ["app", "get_command", "main", "run_cli"]

app = typer.Typer(
    name="syft_flwr",
    help="Run Flower apps across data owners over file sync (SyftBox, Google Drive).",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
)


def _prompt(question: str, option: str) -> str:
    """Ask on stdin for a value the user left out (as upstream's CLI did).

    The question is shown only on a terminal; piped input is read silently.

    Raises
    ------
    ConfigError
        If nothing can be read (no input, e.g. in CI).
    """
    interactive = sys.stdin is not None and sys.stdin.isatty()
    if interactive:
        print(f"{question}: ", end="", file=sys.stderr, flush=True)
    try:
        answer = sys.stdin.readline() if sys.stdin is not None else ""
    except (OSError, ValueError):
        answer = ""
    if not answer.strip():
        if interactive:
            print(file=sys.stderr)
        raise ConfigError(f"give {option} (nothing was entered when asked)")
    return answer.strip()


@app.command()
def version(json_: JsonOpt = False) -> None:
    """Print the versions of syft_flwr and Flower."""
    import flwr

    flwr_version = getattr(flwr, "__version__", "?")
    if json_:
        print_json({"syft_flwr": __version__, "flwr": flwr_version})
    else:
        print(f"syft_flwr {__version__} (flwr {flwr_version})")


@app.command()
def bootstrap(
    project_dir: Annotated[
        Path, typer.Argument(help="The Flower app folder to turn into a syft_flwr app.")
    ],
    aggregator: Annotated[
        str | None,
        typer.Option(
            "-a",
            "--aggregator",
            "-s",
            "--server",
            help="The researcher's email (asked for if left out).",
        ),
    ] = None,
    datasites: Annotated[
        list[str] | None,
        typer.Option(
            "-d",
            "--datasites",
            help="Data owner emails, comma-separated or repeated (asked for if "
            "left out).",
        ),
    ] = None,
    transport: Annotated[
        str | None,
        typer.Option(
            "-t",
            "--transport",
            click_type=click.Choice(["syftbox", "p2p"]),
            help="syftbox (default) or p2p (Google Drive).",
        ),
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Replace an existing main.py (by default it is refused)."
        ),
    ] = False,
) -> None:
    """Turn a Flower app folder into a syft_flwr app."""
    from syft_flwr.project import bootstrap as _bootstrap
    from syft_flwr.project import load_project

    load_project(project_dir)  # not a Flower app: say so before asking anything
    aggregator = aggregator or _prompt(
        "Enter the researcher's email (the aggregator, runs the ServerApp)",
        "-a/--aggregator",
    )
    values = datasites or [
        _prompt(
            "Enter the data owners' emails, comma-separated (each runs the ClientApp)",
            "-d/--datasites",
        )
    ]
    owners = [e for v in values for e in emails(v)]
    try:
        cfg = _bootstrap(project_dir, aggregator, owners, transport, force=force)
    except AlreadyExistsError:
        raise ConfigError(
            f"{project_dir / 'main.py'} already exists; run the same command with "
            "--force to replace it"
        ) from None
    print(f"bootstrapped {cfg.app_dir} (app {cfg.app_name}, transport {cfg.transport})")
    print(f"  aggregator: {cfg.aggregator}")
    print(f"  data owners: {', '.join(cfg.datasites)}")


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


@app.command()
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


@app.command()
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


@app.command(hidden=True)
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


app.command()(containment)


keys_app = typer.Typer(
    help="Your encryption keys and your peers' pinned fingerprints. Without a "
    "subcommand: create your keys if needed and show your fingerprint.",
    invoke_without_command=True,
    no_args_is_help=False,
)
app.add_typer(keys_app, name="keys")


def _key_info_dict(info: Any) -> dict[str, Any]:
    return dataclasses.asdict(info)


@keys_app.callback()
def keys(ctx: typer.Context, config: ConfigOpt = None, json_: JsonOpt = False) -> None:
    """Create your keys if needed and show your fingerprint."""
    ctx.obj = {"config": config}
    if ctx.invoked_subcommand is not None:
        return
    from syft_flwr.crypto.identity import show_keys

    own = show_keys(client_for(config))[0]
    if json_:
        print_json(_key_info_dict(own))
        return
    print(f"{own.email}")
    print(f"  fingerprint: {own.fingerprint}")
    print(f"  read aloud:  {own.digits}")
    print("  compare it with your peers over a channel you trust (call, in person)")


def _keys_config(ctx: typer.Context, config: str | None) -> str | None:
    """``--config`` given after the subcommand, else the one before it."""
    parent = ctx.parent.obj if ctx.parent is not None and ctx.parent.obj else {}
    return config if config is not None else parent.get("config")


@keys_app.command("show")
def keys_show(
    ctx: typer.Context,
    email: Annotated[
        str | None,
        typer.Argument(
            help="Only this peer, also comparing its pin with what it publishes now."
        ),
    ] = None,
    config: ConfigOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Print your and your peers' fingerprints, to read aloud."""
    from syft_flwr.crypto.identity import show_keys

    infos = show_keys(client_for(_keys_config(ctx, config)), email)
    if json_:
        print_json([_key_info_dict(i) for i in infos])
        return
    for info in infos:
        label = "you" if info.role == "own" else info.status
        print(f"{printable(info.email)}  [{label}]")
        if info.fingerprint:
            print(f"  fingerprint: {printable(info.fingerprint)}")
        if info.digits:
            print(f"  read aloud:  {info.digits}")
        if info.role == "peer" and info.published and info.status != "pinned":
            print(f"  published now: {printable(info.published)}")
        if info.status == "changed":
            print(
                f"  REFUSED until you check it: syft_flwr keys trust {printable(info.email)} "
                f"--fingerprint '{printable(info.published)}'"
            )
        elif info.status == "older":
            print(
                "  REFUSED: it publishes keys older than the ones you already saw "
                "(an old did.json put back?); ask them to publish again"
            )
        elif info.status == "not pinned":
            print(
                f"  to pin it after checking: syft_flwr keys trust {printable(info.email)}"
            )
    if len(infos) == 1 and email is None:
        print("(no peers pinned yet: peers are pinned the first time you exchange)")


@keys_app.command("trust")
def keys_trust(
    ctx: typer.Context,
    email: Annotated[str, typer.Argument(help="The peer whose published key to pin.")],
    fingerprint: Annotated[
        str | None,
        typer.Option(
            "--fingerprint",
            help="The fingerprint the peer read to you; refused if it does not match.",
        ),
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Accept a peer's (new) identity key after checking it."""
    from syft_flwr.crypto.identity import trust_peer

    pin = trust_peer(client_for(_keys_config(ctx, config)), email, fingerprint)
    print(f"trusted {pin.email}")
    print(f"  fingerprint: {pin.fingerprint}")
    print(f"  read aloud:  {pin.fingerprint_digits}")
    if fingerprint is None:
        print("  (no --fingerprint given: make sure you compared it with them)")


@keys_app.command("rotate")
def keys_rotate(
    ctx: typer.Context,
    grace: Annotated[
        str | None,
        typer.Option(
            "--grace",
            help="How long the old prekey still opens messages, e.g. 7d, 12h, 30m "
            "or seconds (default: SYFT_FLWR_PREKEY_GRACE, else 7d).",
        ),
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Publish a new signed prekey; destroy the old one after a grace period."""
    import time

    from syft_flwr.config import Settings, parse_duration
    from syft_flwr.crypto.identity import rotate_prekey

    try:
        seconds = None if grace is None else parse_duration(grace)
    except ConfigError as exc:
        raise ConfigError(f"--grace: {exc}") from None
    r = rotate_prekey(
        client_for(_keys_config(ctx, config)),
        grace=seconds,
        settings=Settings.from_env(),
    )
    until = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(r.retired.destroy_after))
    print(f"published a new signed prekey {r.new_prekey}")
    print(f"  the old one ({r.retired.id}) still opens messages until {until},")
    print("  then it is destroyed: messages sealed to it can no longer be opened")
    print(f"  your fingerprint is unchanged: {r.fingerprint}")


@keys_app.command("adopt-pins")
def keys_adopt_pins(
    ctx: typer.Context,
    yes: Annotated[
        bool,
        typer.Option("--yes", help="Keep them without asking (you checked them)."),
    ] = False,
    config: ConfigOpt = None,
) -> None:
    """Keep the peer pins an older syft_flwr wrote, after checking them."""
    from syft_flwr.crypto.identity import adopt_legacy_pins, legacy_pins
    from syft_flwr.review.package import printable

    client = client_for(_keys_config(ctx, config))
    pins = legacy_pins(client)
    if pins is None:
        print("nothing to adopt: your pinned peer keys are already checked")
        return
    print("pinned by an older syft_flwr, without an integrity check:")
    for pin in pins.values():
        print(f"{printable(pin.email)}")
        print(f"  fingerprint: {pin.fingerprint}")
        print(f"  read aloud:  {pin.fingerprint_digits}")
    if not pins:
        print("  (no peers)")
    print("compare them with your peers over a channel you trust before keeping them")
    if not yes and not typer.confirm("keep these pins?", default=False):
        print("nothing was changed")
        raise typer.Exit(1)
    adopt_legacy_pins(client)
    print(f"kept {len(pins)} pinned peer key(s); they are checked from now on")


def _parse_since(value: str | None) -> float | None:
    """``"1d"``/``"12h"`` (that long ago) or an ISO date/time, as POSIX time."""
    if not value:
        return None
    import time as _time

    from syft_flwr.config import parse_duration
    from syft_flwr.wire.envelope import parse_time

    try:
        return _time.time() - parse_duration(value)
    except ConfigError:
        pass
    try:
        return parse_time(value)
    except ValueError:
        raise ConfigError(
            f"--since {value!r}: use a duration like 1d or 12h, or an ISO date"
        ) from None


@app.command()
def audit(
    config: Annotated[
        str | None,
        typer.Option(
            "--config",
            help="SyftBox client config path (default: SYFTBOX_CLIENT_CONFIG_PATH, "
            "then ~/.syftbox/config.json).",
        ),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            help="Only events since then: a duration like 1d or 12h, or an ISO date.",
        ),
    ] = None,
    verify: Annotated[
        bool,
        typer.Option(
            "--verify",
            help="Only check that no line was changed, removed or added; exit 1 if "
            "one was, 3 if the trail cannot be fully verified.",
        ),
    ] = False,
    json_: JsonOpt = False,
) -> None:
    """Data owner: show what ran on your data, for whom, when, and what left."""
    from syft_flwr.data_owner.audit import audit_entries, format_audit, verify_audit

    client = client_for(config)
    report = verify_audit(client)
    if verify:
        if json_:
            print_json(dataclasses.asdict(report))
        else:
            print(report.summary())
        code = {"tampered": 1, "unverifiable": 3}.get(report.status, 0)
        if code:
            raise typer.Exit(code)
        return
    entries = audit_entries(client, since=_parse_since(since))
    if json_:
        print_json(entries)
        return
    print(format_audit(entries) if entries else "no audit events yet")
    if report.status in ("tampered", "unverifiable"):
        # The table is shown either way (it is what is there), and the warning
        # after it, on both streams, so a data owner cannot miss it.
        print(report.summary())
        print(f"syft_flwr audit: {report.summary()}", file=sys.stderr)


@app.command("gdrive-login")
def gdrive_login(
    client_secrets: Annotated[
        Path, typer.Option("--client-secrets", help="The OAuth desktop client JSON.")
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out", help="Where to save the token (default token.json, mode 0600)."
        ),
    ] = Path("token.json"),
    no_browser: Annotated[
        bool, typer.Option("--no-browser", help="Print the URL instead of opening it.")
    ] = False,
) -> None:
    """Create a Google Drive OAuth token file (desktop flow)."""
    try:
        from google_auth_oauthlib.flow import InstalledAppFlow
    except ImportError:
        # Not "pip install syft-flwr[oauth]": that name on PyPI is upstream's.
        raise ConfigError(
            "install the OAuth helper: pip install google-auth-oauthlib (or, in "
            'your clone of syft_flwr: pip install -e ".[oauth]")'
        ) from None
    from syft_flwr.transports.gdrive import DRIVE_SCOPES, _write_private

    if not client_secrets.is_file():
        raise ConfigError(
            f"--client-secrets {client_secrets}: no such file (download the "
            "Desktop OAuth client JSON from the Google Cloud console)"
        )
    flow = InstalledAppFlow.from_client_secrets_file(
        str(client_secrets), list(DRIVE_SCOPES)
    )
    creds = flow.run_local_server(port=0, open_browser=not no_browser)
    _write_private(Path(out), creds.to_json())
    print(f"saved the token to {out} (mode 0600); set GDRIVE_TOKEN_PATH={out}")


from syft_flwr.cli import privacy as _privacy  # noqa: E402
from syft_flwr.cli import review as _review  # noqa: E402  (registers its commands)

_review.register(app)
app.command()(_privacy.budget)


# click >= 8.2 raises this for a bare `syft_flwr`; older clicks print help themselves
_NO_ARGS_IS_HELP: Any = getattr(click.exceptions, "NoArgsIsHelpError", ())


def _one_line(text: object) -> str:
    # Error messages can quote names, reasons and paths other parties chose.
    return printable(" ".join(str(text).split()))


def _restore_argument_help(group: click.Group, typer_app: typer.Typer) -> None:
    """Copy each argument's help from its typer declaration onto the click one.

    Click 8.5 gave ``click.Argument`` a ``help`` parameter of its own; typer 0.20
    sets ``help`` and then calls click's constructor, which resets it to None, so
    ``--help`` would list arguments unexplained. Drop this once typer passes
    ``help`` on.
    """
    for info in typer_app.registered_commands:
        callback = info.callback
        assert callback is not None
        name = info.name or typer.main.get_command_name(callback.__name__)
        declared = typer.utils.get_params_from_function(callback)
        for param in group.commands[name].params:
            meta = declared.get(param.name or "")
            if isinstance(param, click.Argument) and meta is not None:
                param.help = param.help or getattr(meta.default, "help", None)
    for sub in typer_app.registered_groups:
        assert sub.name is not None and sub.typer_instance is not None
        child = group.commands[sub.name]
        assert isinstance(child, click.Group)
        _restore_argument_help(child, sub.typer_instance)


def get_command() -> click.Group:
    """The ``syft_flwr`` command as a click group (for introspection and docs).

    Returns
    -------
    click.Group
        :data:`app` built by typer, every argument's help in place.
    """
    command = typer.main.get_command(app)
    assert isinstance(command, click.Group)
    _restore_argument_help(command, app)
    return command


def run_cli(argv: list[str] | None = None) -> int:
    """Run the command line on ``argv`` and return its exit code (never raises).

    Parameters
    ----------
    argv : list of str, optional
        The arguments after the program name (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        0 done, 1 failed, 2 usage or configuration error, 130 interrupted.
    """
    command = get_command()
    try:
        # standalone_mode=False: errors reach us, so each is one plain line.
        args = list(sys.argv[1:] if argv is None else argv)
        # obj: the arguments as given, so simulate can print the command that resumes
        result = command.main(
            args=args, prog_name="syft_flwr", standalone_mode=False, obj={"argv": args}
        )
    except _NO_ARGS_IS_HELP as exc:
        # `syft_flwr` alone: show the help (rich on a terminal), exit as a usage error
        help_text = exc.ctx.get_help()  # rich prints it itself and returns ""
        if help_text:
            click.echo(help_text)
        return 2
    except click.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx is not None else "syft_flwr"
        print(
            f"syft_flwr: error: {_one_line(exc.format_message())} "
            f"(see: {where} --help)",
            file=sys.stderr,
        )
        return 2
    except click.ClickException as exc:
        print(f"syft_flwr: error: {_one_line(exc.format_message())}", file=sys.stderr)
        return exc.exit_code
    except ConfigError as exc:
        print(f"syft_flwr: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except SyftFlwrError as exc:
        print(
            f"syft_flwr: error: {type(exc).__name__}: {_one_line(exc)}", file=sys.stderr
        )
        return 1
    except (KeyboardInterrupt, click.Abort):
        print("syft_flwr: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # e.g. a read-only or full work folder: no traceback
        print(f"syft_flwr: error: {_one_line(exc)}", file=sys.stderr)
        return 1
    return result if isinstance(result, int) else 0


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``syft_flwr`` command (and ``python -m syft_flwr``)."""
    sys.exit(run_cli(argv))


if __name__ == "__main__":
    main()

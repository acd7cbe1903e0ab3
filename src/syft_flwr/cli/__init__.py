"""The ``syft_flwr`` command line: bootstrap, run, simulate, keys, review, version.

Commands parse arguments and call public functions; errors become one line on
stderr and a non-zero exit code (2 for configuration errors, 1 for failed runs,
130 for Ctrl-C).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from syft_flwr import __version__
from syft_flwr.cli.review import add_run_config_option
from syft_flwr.errors import ConfigError, SyftFlwrError

__all__ = ["main"]


def _emails(value: str) -> list[str]:
    return [e.strip() for e in value.split(",") if e.strip()]


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


def _cmd_version(args: argparse.Namespace) -> int:
    import flwr

    print(f"syft_flwr {__version__} (flwr {getattr(flwr, '__version__', '?')})")
    return 0


def _cmd_bootstrap(args: argparse.Namespace) -> int:
    from syft_flwr.project import bootstrap

    aggregator = args.aggregator or _prompt(
        "Enter the datasite email of the Aggregator (Flower Server)", "-a/--aggregator"
    )
    values = args.datasites or [
        _prompt(
            "Enter a comma-separated email of datasites of the Flower Clients",
            "-d/--datasites",
        )
    ]
    datasites = [e for v in values for e in _emails(v)]
    cfg = bootstrap(
        args.project_dir, aggregator, datasites, args.transport, force=args.force
    )
    print(f"bootstrapped {cfg.app_dir} (app {cfg.app_name}, transport {cfg.transport})")
    print(f"  aggregator: {cfg.aggregator}")
    print(f"  data owners: {', '.join(cfg.datasites)}")
    return 0


def _simulate(
    args: argparse.Namespace,
    paths: list[str] | None,
    *,
    entry: str = "party",
    log_dir: Path | None = None,
) -> int:
    from syft_flwr.simulation import simulate

    res = simulate(
        args.app_dir,
        args.num_data_owners,
        mock_dataset_paths=paths,
        run_config=" ".join(args.run_config) if args.run_config else None,
        workdir=args.workdir,
        timeout=args.timeout,
        entry=entry,
        log_dir=log_dir,
        fresh=args.fresh,
    )
    return 0 if res.ok else 1


def _cmd_simulate(args: argparse.Namespace) -> int:
    return _simulate(args, None)


def _cmd_run(args: argparse.Namespace) -> int:
    from syft_flwr.project import load_project
    from syft_flwr.run_simulation import LOG_DIR_NAME

    cfg = load_project(args.app_dir)  # a clear error before any prompt
    values = args.mock_dataset_paths or [
        _prompt("Enter comma-separated paths to mock datasets", "--mock-dataset-paths")
    ]
    paths = [p.strip() for v in values for p in v.split(",") if p.strip()]
    if not paths:
        raise ConfigError("give --mock-dataset-paths (one folder per data owner)")
    args.num_data_owners = None
    # A bootstrapped app runs through its own main.py, as upstream's `run` did.
    use_main = cfg.bootstrapped and (cfg.app_dir / "main.py").is_file()
    return _simulate(
        args,
        paths,
        entry="main.py" if use_main else "party",
        log_dir=cfg.app_dir / LOG_DIR_NAME,
    )


def _cmd_party(args: argparse.Namespace) -> int:
    """One party of a run (used by `simulate`; also usable by hand)."""
    from syft_flwr.client.syft_core_client import SyftCoreClient
    from syft_flwr.ids import normalize_email
    from syft_flwr.logs import setup_logging
    from syft_flwr.project import load_project
    from syft_flwr.run import run_role

    setup_logging()
    cfg = load_project(args.app_dir)
    changes: dict[str, object] = {}
    if args.app_name:
        changes["app_name"] = args.app_name
    if args.datasites:
        changes["datasites"] = tuple(_emails(args.datasites))
    if args.aggregator:
        changes["aggregator"] = normalize_email(args.aggregator)
    cfg = dataclasses.replace(cfg, **changes)  # type: ignore[arg-type]
    client = SyftCoreClient.load(args.config)
    run_role(
        cfg,
        client,
        args.role,
        run_config=args.run_config,
        node_config=args.node_config,
        fresh=args.fresh,
    )
    return 0


def _keys_client(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from syft_flwr.client.factory import create_client

    return create_client(config_path=args.config)


def _cmd_keys(args: argparse.Namespace) -> int:
    """``syft_flwr keys`` without a subcommand: create if needed, show own fingerprint."""
    from syft_flwr.crypto.identity import show_keys

    own = show_keys(_keys_client(args))[0]
    print(f"{own.email}")
    print(f"  fingerprint: {own.fingerprint}")
    print(f"  read aloud:  {own.digits}")
    print("  compare it with your peers over a channel you trust (call, in person)")
    return 0


def _cmd_keys_show(args: argparse.Namespace) -> int:
    from syft_flwr.crypto.identity import show_keys

    infos = show_keys(_keys_client(args), args.email)
    for info in infos:
        label = "you" if info.role == "own" else info.status
        print(f"{info.email}  [{label}]")
        if info.fingerprint:
            print(f"  fingerprint: {info.fingerprint}")
        if info.digits:
            print(f"  read aloud:  {info.digits}")
        if info.role == "peer" and info.published and info.status != "pinned":
            print(f"  published now: {info.published}")
        if info.status == "changed":
            print(
                f"  REFUSED until you check it: syft_flwr keys trust {info.email} "
                f"--fingerprint '{info.published}'"
            )
        elif info.status == "not pinned":
            print(f"  to pin it after checking: syft_flwr keys trust {info.email}")
    if len(infos) == 1 and args.email is None:
        print("(no peers pinned yet: peers are pinned the first time you exchange)")
    return 0


def _cmd_keys_rotate(args: argparse.Namespace) -> int:
    import time

    from syft_flwr.config import Settings, parse_duration
    from syft_flwr.crypto.identity import rotate_prekey

    grace = None if args.grace is None else parse_duration(args.grace)
    r = rotate_prekey(_keys_client(args), grace=grace, settings=Settings.from_env())
    until = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(r.retired.destroy_after))
    print(f"published a new signed prekey {r.new_prekey}")
    print(f"  the old one ({r.retired.id}) still opens messages until {until},")
    print("  then it is destroyed: messages sealed to it can no longer be opened")
    print(f"  your fingerprint is unchanged: {r.fingerprint}")
    return 0


def _cmd_keys_trust(args: argparse.Namespace) -> int:
    from syft_flwr.crypto.identity import trust_peer

    pin = trust_peer(_keys_client(args), args.email, args.fingerprint)
    print(f"trusted {pin.email}")
    print(f"  fingerprint: {pin.fingerprint}")
    print(f"  read aloud:  {pin.fingerprint_digits}")
    if args.fingerprint is None:
        print("  (no --fingerprint given: make sure you compared it with them)")
    return 0


def _parse_since(value: str | None) -> float | None:
    """``"1d"``/``"12h"`` (that long ago) or an ISO date/time, as POSIX time."""
    if not value:
        return None
    import time as _time

    from syft_flwr.config import parse_duration
    from syft_flwr.envelope import parse_time

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


def _cmd_audit(args: argparse.Namespace) -> int:
    """Print the data owner's audit trail (what ran, for whom, when, what left)."""
    import json as _json

    from syft_flwr.client.factory import create_client
    from syft_flwr.events.audit import audit_entries, format_audit

    entries = audit_entries(
        create_client(config_path=args.config), since=_parse_since(args.since)
    )
    if args.json:
        print(_json.dumps(entries, indent=2, sort_keys=True))
    elif not entries:
        print("no audit events yet")
    else:
        print(format_audit(entries))
    return 0


def _cmd_gdrive_login(args: argparse.Namespace) -> int:
    """Run Google's desktop OAuth flow and save the token file with mode 0600."""
    try:
        from google_auth_oauthlib.flow import InstalledAppFlow
    except ImportError:
        raise ConfigError(
            'install the OAuth helper: pip install "syft-flwr[oauth]"'
        ) from None
    from syft_flwr.transports.gdrive import DRIVE_SCOPES, _write_private

    flow = InstalledAppFlow.from_client_secrets_file(
        str(args.client_secrets), list(DRIVE_SCOPES)
    )
    creds = flow.run_local_server(port=0, open_browser=not args.no_browser)
    _write_private(Path(args.out), creds.to_json())
    print(
        f"saved the token to {args.out} (mode 0600); set GDRIVE_TOKEN_PATH={args.out}"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="syft_flwr",
        description="Run Flower apps across data owners over file sync (SyftBox, Google Drive).",
    )
    # The metavar lists only the public commands; `party` (internal, used by
    # `simulate`) is added without help, so it is not listed anywhere.
    sub = p.add_subparsers(
        dest="command",
        required=True,
        metavar="{version,bootstrap,simulate,run,keys,audit,gdrive-login}",
    )

    s = sub.add_parser("version", help="print versions")
    s.set_defaults(func=_cmd_version)

    s = sub.add_parser(
        "bootstrap", help="turn a Flower app folder into a syft_flwr app"
    )
    s.add_argument("project_dir", type=Path, help="the Flower app folder")
    s.add_argument(
        "-a",
        "--aggregator",
        "-s",
        "--server",
        default=None,
        help="the researcher's email (asked for if left out)",
    )
    s.add_argument(
        "-d",
        "--datasites",
        action="append",
        default=None,
        help="data owner emails, comma-separated or repeated (asked for if left out)",
    )
    s.add_argument(
        "-t",
        "--transport",
        choices=["syftbox", "p2p"],
        default=None,
        help="syftbox (default) or p2p (Google Drive)",
    )
    s.add_argument(
        "--force",
        action="store_true",
        help="replace an existing main.py (by default bootstrap refuses)",
    )
    s.set_defaults(func=_cmd_bootstrap)

    for name, helptext in (
        ("simulate", "run researcher + N data owners as local processes"),
        ("run", "simulate with one data owner per mock dataset path (upstream form)"),
    ):
        s = sub.add_parser(name, help=helptext)
        s.add_argument("app_dir", type=Path, help="the Flower app folder")
        if name == "simulate":
            s.add_argument(
                "-n",
                "--num-data-owners",
                type=int,
                default=None,
                help="how many data owners (default: the app's datasites, else 2)",
            )
            s.set_defaults(func=_cmd_simulate)
        else:
            s.add_argument(
                "-m",
                "--mock-dataset-paths",
                action="append",
                help="one data folder per data owner (its DATA_DIR), comma-separated "
                "or repeated (asked for if left out); logs go to "
                "APP_DIR/simulation_logs",
            )
            s.set_defaults(func=_cmd_run)
        add_run_config_option(s)
        s.add_argument(
            "--workdir",
            type=Path,
            default=None,
            help="folder for the simulated network and outputs (default: a new "
            "temporary folder); run again with the same folder to resume an "
            "interrupted run",
        )
        s.add_argument(
            "--fresh",
            action="store_true",
            help="start over instead of resuming an interrupted run in --workdir",
        )
        s.add_argument(
            "--timeout",
            type=float,
            default=1800.0,
            help="seconds before the whole run is stopped (default 1800)",
        )

    config_help = "SyftBox client config path (default: SYFTBOX_CLIENT_CONFIG_PATH)"
    s = sub.add_parser(
        "keys",
        help="your encryption keys and your peers' pinned fingerprints",
        description="Without a subcommand: create your keys if needed and show "
        "your fingerprint.",
    )
    s.add_argument("--config", default=None, help=config_help)
    s.set_defaults(func=_cmd_keys)
    keys_sub = s.add_subparsers(dest="keys_command", metavar="{show,trust,rotate}")
    k = keys_sub.add_parser(
        "show", help="print your and your peers' fingerprints, to read aloud"
    )
    k.add_argument(
        "email",
        nargs="?",
        default=None,
        help="only this peer, also comparing its pin with what it publishes now",
    )
    k.add_argument("--config", default=argparse.SUPPRESS, help=config_help)
    k.set_defaults(func=_cmd_keys_show)
    k = keys_sub.add_parser(
        "trust", help="accept a peer's (new) identity key after checking it"
    )
    k.add_argument("email", help="the peer whose published key to pin")
    k.add_argument(
        "--fingerprint",
        default=None,
        help="the fingerprint the peer read to you; refused if it does not match",
    )
    k.add_argument("--config", default=argparse.SUPPRESS, help=config_help)
    k.set_defaults(func=_cmd_keys_trust)
    k = keys_sub.add_parser(
        "rotate",
        help="publish a new signed prekey; destroy the old one after a grace period",
    )
    k.add_argument(
        "--grace",
        default=None,
        help="how long the old prekey still opens messages, e.g. 7d, 12h, 30m or "
        "seconds (default: SYFT_FLWR_PREKEY_GRACE, else 7d)",
    )
    k.add_argument("--config", default=argparse.SUPPRESS, help=config_help)
    k.set_defaults(func=_cmd_keys_rotate)

    from syft_flwr.cli.review import add_commands

    add_commands(sub, config_help)

    s = sub.add_parser(
        "audit",
        help="show what ran on your data, for whom, when, and what left (data owner)",
    )
    s.add_argument(
        "--config",
        default=None,
        help="SyftBox client config path (default: SYFTBOX_CLIENT_CONFIG_PATH, "
        "then ~/.syftbox/config.json)",
    )
    s.add_argument(
        "--since",
        default=None,
        help="only events since then: a duration like 1d or 12h, or an ISO date",
    )
    s.add_argument(
        "--json", action="store_true", help="print the events as JSON, for scripts"
    )
    s.set_defaults(func=_cmd_audit)

    s = sub.add_parser(
        "gdrive-login", help="create a Google Drive OAuth token file (desktop flow)"
    )
    s.add_argument(
        "--client-secrets", type=Path, required=True, help="OAuth desktop client JSON"
    )
    s.add_argument(
        "--out",
        type=Path,
        default=Path("token.json"),
        help="where to save the token (default token.json, mode 0600)",
    )
    s.add_argument(
        "--no-browser", action="store_true", help="print the URL instead of opening it"
    )
    s.set_defaults(func=_cmd_gdrive_login)

    s = sub.add_parser("party", description="Internal: one party of a `simulate` run.")
    s.add_argument("app_dir", type=Path, help="the Flower app folder")
    s.add_argument(
        "--role",
        choices=["researcher", "data-owner"],
        required=True,
        help="which side this process plays",
    )
    s.add_argument("--config", required=True, help="this party's SyftBox config")
    s.add_argument("--app-name", default=None, help="the app folder name on the wire")
    s.add_argument("--aggregator", default=None, help="the researcher's email")
    s.add_argument(
        "--datasites", default=None, help="data owner emails, comma-separated"
    )
    s.add_argument(
        "--run-config", action="append", default=None, help="app config overrides"
    )
    s.add_argument(
        "--node-config", action="append", default=None, help="this node's config"
    )
    s.add_argument(
        "--fresh",
        action="store_true",
        help="start the run over instead of resuming it",
    )
    s.set_defaults(func=_cmd_party)
    return p


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``syft_flwr`` command."""
    args = build_parser().parse_args(argv)
    try:
        code = args.func(args)
    except ConfigError as exc:
        print(f"syft_flwr: error: {exc}", file=sys.stderr)
        code = 2
    except SyftFlwrError as exc:
        print(f"syft_flwr: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        code = 130
    except OSError as exc:  # e.g. a read-only or full work folder: no traceback
        print(f"syft_flwr: error: {exc}", file=sys.stderr)
        code = 1
    sys.exit(code)


if __name__ == "__main__":
    main()

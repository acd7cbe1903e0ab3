"""The set-up commands: ``bootstrap`` (turn a Flower app into a syft_flwr app) and
``gdrive-login`` (a Google Drive OAuth token); :func:`_prompt` asks for what was left out.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import click
import typer

from syft_flwr.cli._common import (
    emails,
)
from syft_flwr.errors import AlreadyExistsError, ConfigError


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


def register_bootstrap(app: typer.Typer) -> None:
    """Add ``bootstrap`` to the ``syft_flwr`` app (in the help's order)."""
    app.command()(bootstrap)


def register_login(app: typer.Typer) -> None:
    """Add ``gdrive-login`` to the ``syft_flwr`` app (in the help's order)."""
    app.command("gdrive-login")(gdrive_login)

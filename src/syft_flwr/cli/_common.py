"""Options and helpers shared by the ``syft_flwr`` commands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from syft_flwr.errors import ConfigError

if TYPE_CHECKING:  # the CLI imports the client machinery only when a command runs
    from syft_flwr.client.protocol import SyftFlwrClient

JSON_HELP = "Print the result as JSON, for scripts."

ConfigOpt = Annotated[
    str | None,
    typer.Option(
        "--config",
        help="SyftBox client config path (default: SYFTBOX_CLIENT_CONFIG_PATH).",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help=JSON_HELP)]
RunConfigOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--run-config",
        help="App config overrides, key=value for keys of the app's config, "
        'e.g. "num-server-rounds=5"; repeatable.',
    ),
]

PrivacyOpt = Annotated[
    Path | None,
    typer.Option(
        "--privacy",
        help="Data owner: your privacy policy (TOML: clip_norm, noise_multiplier, "
        "epsilon, delta, ...); every reply is clipped, noised and charged to the "
        "dataset's budget. Default: SYFT_FLWR_PRIVACY_POLICY; none: no DP.",
    ),
]


def emails(value: str) -> list[str]:
    """Split a comma-separated list of emails, dropping blanks."""
    return [e.strip() for e in value.split(",") if e.strip()]


def client_for(config: str | None) -> SyftFlwrClient:
    """The client of the user whose SyftBox config is ``config`` (or the default)."""
    from syft_flwr.client.syft_core_client import SyftCoreClient

    # The command line speaks SyftBox; Google Drive parties run through main.py.
    try:
        return SyftCoreClient.load(config)
    except ConfigError as exc:
        raise ConfigError(
            f"{exc}; give your SyftBox config with --config PATH"
        ) from None


def print_json(value: Any) -> None:
    """Print ``value`` as indented JSON with sorted keys (stable for scripts)."""
    print(json.dumps(value, indent=2, sort_keys=True, default=str))

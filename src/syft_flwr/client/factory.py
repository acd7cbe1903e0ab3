"""``create_client``: pick the identity and transport for this process."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from syft_flwr.client.protocol import SyftFlwrClient
from syft_flwr.client.syft_core_client import SyftCoreClient
from syft_flwr.client.syft_p2p_client import SyftP2PClient
from syft_flwr.errors import ConfigError

__all__ = ["create_client", "wrap_client"]

_ALIASES = {"syftbox": "syftbox", "p2p": "gdrive", "gdrive": "gdrive"}


def _transport_from_pyproject(project_dir: Path) -> str | None:
    import tomllib

    path = project_dir / "pyproject.toml"
    if not path.is_file():
        return None
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    value = data.get("tool", {}).get("syft_flwr", {}).get("transport")
    return str(value) if value else None


def create_client(
    transport: str | None = None,
    project_dir: str | Path | None = None,
    email: str | None = None,
    *,
    config_path: str | Path | None = None,
    **kwargs: Any,
) -> SyftFlwrClient:
    """Create the client for this process.

    Detection order: explicit ``transport`` -> ``[tool.syft_flwr].transport`` in
    ``<project_dir>/pyproject.toml`` -> SyftBox if a SyftBox config loads
    (``config_path``, else ``SYFTBOX_CLIENT_CONFIG_PATH``, else
    ``~/.syftbox/config.json``).

    Parameters
    ----------
    transport:
        ``"syftbox"``, ``"p2p"`` / ``"gdrive"``.
    project_dir:
        A bootstrapped Flower app folder.
    email:
        Email for Google Drive mode (else ``SYFTBOX_EMAIL``).
    config_path:
        SyftBox client config path (``filepath=`` is accepted too).
    **kwargs:
        Passed to :class:`SyftP2PClient` in Drive mode.

    Raises
    ------
    ConfigError
        If no transport can be determined or its configuration is missing.
    """
    config_path = config_path or kwargs.pop("filepath", None)
    name = transport
    if name is None and project_dir is not None:
        name = _transport_from_pyproject(Path(project_dir))
    if name is not None:
        key = _ALIASES.get(name.lower())
        if key is None:
            raise ConfigError(f"unknown transport {name!r}; use 'syftbox' or 'p2p'")
        if key == "gdrive":
            email = email or os.environ.get("SYFTBOX_EMAIL")
            if not email:
                raise ConfigError(
                    "Google Drive mode needs your email: set SYFTBOX_EMAIL to your "
                    "Google account's email"
                )
            return SyftP2PClient(email, **kwargs)
        return SyftCoreClient.load(config_path)
    try:
        return SyftCoreClient.load(config_path)
    except ConfigError as exc:
        raise ConfigError(
            f"no transport configured and {exc}; pass transport='p2p' and an "
            "email for Google Drive"
        ) from exc


def wrap_client(client: Any | None) -> SyftFlwrClient:
    """Accept ``None``, a ``syft_core.Client`` or a :class:`SyftFlwrClient`."""
    if client is None:
        return create_client()
    if isinstance(client, SyftFlwrClient):
        return client
    from syft_core import Client

    if isinstance(client, Client):
        return SyftCoreClient(client)
    raise TypeError(
        f"expected a SyftFlwrClient or syft_core.Client, got {type(client).__name__}"
    )

"""Helpers kept for apps and notebooks written for upstream syft-flwr."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from syft_flwr._ids import node_id_for
from syft_flwr.errors import ConfigError, PathNotFoundError

__all__ = [
    "EMAIL_REGEX",
    "check_reply_to_field",
    "create_flwr_message",
    "create_temp_client",
    "get_syftbox_dataset_path",
    "is_valid_datasite",
    "run_syft_flwr",
    "setup_client",
    "str_to_int",
]

#: Upstream's email check (loose); syft_flwr validates emails more strictly
#: where it uses them (``syft_flwr._ids.normalize_email``).
EMAIL_REGEX = r"^[^@]+@[^@]+\.[^@]+$"

#: Where upstream looks for data when ``DATA_DIR`` is unset.
DEFAULT_DATA_DIR = ".data/"


def is_valid_datasite(datasite: str) -> bool:
    """True if ``datasite`` looks like an email (upstream's check)."""
    return re.match(EMAIL_REGEX, datasite) is not None


def get_syftbox_dataset_path() -> Path:
    """Return ``DATA_DIR`` (default ``.data/``): the data owner's data folder.

    Raises
    ------
    PathNotFoundError
        If that folder does not exist (a ``FileNotFoundError``, as upstream).
    """
    d = Path(os.environ.get("DATA_DIR") or DEFAULT_DATA_DIR)
    if not d.exists():
        raise PathNotFoundError(
            f"Path {d} does not exist (must be a valid file or directory; "
            "set DATA_DIR to the data owner's data folder)"
        )
    return d


def run_syft_flwr() -> bool:
    """True when running under syft_flwr with data (the ``DATA_DIR`` folder exists)."""
    try:
        get_syftbox_dataset_path()
    except FileNotFoundError:
        return False
    return True


def str_to_int(email: str) -> int:
    """Node id of an email (deterministic, 64-bit, never 0 or 1).

    Upstream used a 32-bit CRC; syft_flwr's ids are wider to make collisions
    between data owners practically impossible.
    """
    return node_id_for(email)


def create_temp_client(email: str, workspace_dir: str | Path) -> Any:
    """Create a ``syft_core.Client`` whose datasites live under ``workspace_dir``.

    For local tests and simulations; the config is saved at
    ``<workspace_dir>/.syftbox/<local part>_config.json``, as upstream did.
    """
    from syft_core import Client, SyftClientConfig

    ws = Path(workspace_dir)
    config = SyftClientConfig(
        email=email,
        data_dir=ws,
        server_url="http://127.0.0.1:9",
        path=ws / ".syftbox" / f"{email.split('@')[0]}_config.json",
    ).save()
    return Client(config)


def setup_client(
    app_name: str, project_dir: str | Path | None = None
) -> tuple[Any, bool, str]:
    """Upstream's ``(client, encryption_enabled, "flwr/<app_name>")``.

    The client is a :class:`~syft_flwr.client.SyftFlwrClient`; with encryption on,
    its keys are created if missing (as upstream's ``ensure_bootstrap``).
    """
    from syft_flwr.client.factory import create_client
    from syft_flwr.config import Settings
    from syft_flwr.crypto.policy import load_or_create_keys

    client = create_client(project_dir=project_dir)
    enc = Settings.from_env().encryption_enabled
    if enc:
        load_or_create_keys(client, client.make_transport())
    name = app_name if app_name.startswith("flwr/") else f"flwr/{app_name}"
    return client, enc, name


def check_reply_to_field(metadata: Any) -> bool:
    """True if ``metadata.reply_to_message_id`` is empty (a request, not a reply)."""
    return metadata.reply_to_message_id == ""


def create_flwr_message(
    content: Any,
    message_type: str,
    dst_node_id: int,
    group_id: str,
    ttl: float | None = None,
    error: Any | None = None,
    reply_to: Any | None = None,
) -> Any:
    """Create a Flower ``Message`` (upstream's helper).

    A reply when ``reply_to`` is given (an error reply if ``error`` is too);
    otherwise a new message to ``dst_node_id``.

    Raises
    ------
    ConfigError
        An error without ``reply_to`` (Flower cannot address it).
    """
    from flwr.app import Message

    if reply_to is not None:
        if error is not None:
            return Message(error, reply_to=reply_to)
        return Message(content, reply_to=reply_to)
    if error is not None:
        raise ConfigError("an error message needs reply_to (the message it answers)")
    kwargs: dict[str, Any] = {"group_id": group_id}
    if ttl is not None:
        kwargs["ttl"] = ttl
    return Message(content, dst_node_id, message_type, **kwargs)

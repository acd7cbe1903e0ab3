"""Helpers kept for apps written for the upstream syft-flwr."""

from __future__ import annotations

import os
from pathlib import Path

from syft_flwr.errors import ConfigError
from syft_flwr.ids import node_id_for

__all__ = ["get_syftbox_dataset_path", "run_syft_flwr", "str_to_int"]


def run_syft_flwr() -> bool:
    """True when running under syft_flwr with private data (``DATA_DIR`` exists)."""
    d = os.environ.get("DATA_DIR")
    return bool(d) and Path(d).exists()


def get_syftbox_dataset_path() -> Path:
    """Return ``DATA_DIR`` (the data owner's private or mock data folder).

    Raises
    ------
    ConfigError
        If ``DATA_DIR`` is unset or does not exist.
    """
    d = os.environ.get("DATA_DIR")
    if not d or not Path(d).exists():
        raise ConfigError(f"DATA_DIR is not set or does not exist ({d!r})")
    return Path(d)


def str_to_int(email: str) -> int:
    """Node id of an email (deterministic, 64-bit, never 0 or 1)."""
    return node_id_for(email)

"""Logging set-up: plain words, one line per event, for researchers and data owners."""

from __future__ import annotations

import logging
import sys

from syft_flwr.config import Settings

__all__ = ["setup_logging"]

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def setup_logging(level: str | None = None) -> None:
    """Configure the ``syft_flwr`` logger (``SYFT_FLWR_LOG_LEVEL``, default INFO)."""
    lvl = (level or Settings.from_env().log_level).upper()
    logger = logging.getLogger("syft_flwr")
    logger.setLevel(lvl)
    if not any(getattr(h, "_syft_flwr", False) for h in logger.handlers):
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter(FORMAT, "%H:%M:%S"))
        h._syft_flwr = True  # type: ignore[attr-defined]
        logger.addHandler(h)
        logger.propagate = False

"""Logging set-up: plain words, one line per event, for researchers and data owners."""

from __future__ import annotations

import logging
import sys

from syft_flwr._printable import printable
from syft_flwr.config import Settings

__all__ = ["PrintableFormatter", "setup_logging", "use_color"]

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


class PrintableFormatter(logging.Formatter):
    """A formatter that shows every message through :func:`printable`.

    Log lines carry emails, file names, ids and reasons from other parties; a
    terminal escape or newline in one could fake or hide another line. The
    message stays on its line; a traceback keeps its newlines but nothing else.
    """

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802
        record.message = printable(record.message)
        return super().formatMessage(record)

    def formatException(self, ei: object) -> str:  # noqa: N802
        return printable(super().formatException(ei), multiline=True)  # type: ignore[arg-type]

    def formatStack(self, stack_info: str) -> str:  # noqa: N802
        return printable(super().formatStack(stack_info), multiline=True)


def use_color(stream: object = None, settings: Settings | None = None) -> bool:
    """Colour only on a terminal, and never when ``NO_COLOR`` is set (no-color.org)."""
    s = stream if stream is not None else sys.stderr
    if (settings or Settings.from_env()).no_color:
        return False
    isatty = getattr(s, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


def setup_logging(level: str | None = None) -> None:
    """Configure the ``syft_flwr`` logger (``SYFT_FLWR_LOG_LEVEL``, default INFO).

    Flower's own log lines lose their colour codes when stderr is not a
    terminal (a log file, a pipe) or ``NO_COLOR`` is set.
    """
    from syft_flwr._flwr_compat import set_flower_log_colors

    settings = Settings.from_env()
    set_flower_log_colors(use_color(sys.stderr, settings))
    lvl = (level or settings.log_level).upper()
    logger = logging.getLogger("syft_flwr")
    logger.setLevel(lvl)
    if not any(getattr(h, "_syft_flwr", False) for h in logger.handlers):
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(PrintableFormatter(FORMAT, "%H:%M:%S"))
        h._syft_flwr = True  # type: ignore[attr-defined]
        logger.addHandler(h)
        logger.propagate = False

"""Name this process after the party it plays, so ``ps`` tells parties apart.

Every party of a simulation is otherwise the same ``syft_flwr simulate ...``
(forked) or ``python main.py ...`` (spawned) line; with the title set, ``ps``
and ``top`` show ``syft_flwr researcher ds@...`` / ``syft_flwr data-owner
do1@...``.
"""

from __future__ import annotations

import logging

__all__ = ["party_title", "prepare", "set_party_title"]

logger = logging.getLogger("syft_flwr.run")


def party_title(role: str, email: str) -> str:
    """``syft_flwr <role> <email>``: what ``ps`` shows for a party."""
    return f"syft_flwr {role} {email}"


def prepare() -> None:
    """Let the title be set later, after the environment is replaced.

    On Linux setproctitle finds the memory of the command line next to the
    initial environment the first time it is used; a forked party replaces its
    environment before it runs, so this is called before that.
    """
    try:
        import setproctitle
    except ImportError:  # pragma: no cover - a declared dependency
        return
    setproctitle.getproctitle()


def set_party_title(role: str, email: str) -> str:
    """Set this process's title (``ps``/``top``) to :func:`party_title`.

    Returns
    -------
    str
        The title set (also when the platform could not set it: then only a
        debug line says so; a title is a convenience, never a reason to stop).
    """
    title = party_title(role, email)
    try:
        import setproctitle
    except ImportError:  # pragma: no cover - a declared dependency
        logger.debug("setproctitle is not installed: process title unchanged")
        return title
    setproctitle.setproctitle(title)
    return title

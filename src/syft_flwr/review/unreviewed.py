"""The data owner's own record of local app folders it served without review.

Serving a local folder (``main.py``, ``syft_flwr party --role data-owner``)
runs code nobody approved; it is an explicit opt-down (``--no-review`` or
``SYFT_FLWR_NO_REVIEW``). Each such serve is logged and remembered here, in the
private review folder, so ``syft_flwr status`` keeps showing it afterwards.
The record is only shown, never acted on.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from syft_flwr.crypto.keys import _atomic_write

__all__ = ["UnreviewedServe", "record_unreviewed", "unreviewed_serves"]

logger = logging.getLogger("syft_flwr.review")

_FILE = "unreviewed.json"
#: How many of the latest unreviewed serves are remembered.
_KEEP = 20


@dataclass(frozen=True)
class UnreviewedServe:
    """One local app folder served without review.

    Attributes
    ----------
    app_name : str
        The app served.
    folder : str
        The app folder its code was loaded from.
    project_hash : str
        Hash of its files when serving started (empty if it could not be taken).
    started : float
        POSIX time.
    """

    app_name: str
    folder: str
    project_hash: str
    started: float


def _folder(client: Any) -> Path | None:
    state = client.state_dir("_review")
    return None if state is None else Path(state)


def unreviewed_serves(client: Any) -> list[UnreviewedServe]:
    """The latest local serves without review, oldest first (none if unreadable)."""
    folder = _folder(client)
    if folder is None:
        return []
    try:
        doc = json.loads((folder / _FILE).read_text("utf-8"))
        return [UnreviewedServe(**d) for d in doc]
    except FileNotFoundError:
        return []
    except (ValueError, TypeError) as exc:
        logger.warning("the list of serves without review is damaged: %s", exc)
        return []


def record_unreviewed(
    client: Any, app_name: str, folder: Path, project_hash: str | None
) -> UnreviewedServe:
    """Log and remember that ``folder`` is served without review."""
    entry = UnreviewedServe(app_name, str(folder), project_hash or "", time.time())
    logger.warning(
        "serving %s from %s WITHOUT REVIEW (--no-review): this code (hash %s) was "
        "not approved and runs on your data as it is; use `syft_flwr serve` for a "
        "project you reviewed",
        app_name,
        folder,
        (project_hash or "unknown")[:12],
    )
    state = _folder(client)
    if state is not None:
        kept = [*unreviewed_serves(client), entry][-_KEEP:]
        state.mkdir(mode=0o700, parents=True, exist_ok=True)
        data = json.dumps([asdict(e) for e in kept], indent=2).encode()
        _atomic_write(state / _FILE, data, 0o600, force_mode=True)
    return entry

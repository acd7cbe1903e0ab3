"""Where the data owner runs code: start the contained worker, remember its level.

Used by ``serve`` (an approved project), ``run`` / ``party`` / the simulation's
data owners (a local app served without review) and the data-owner notebook.
The worker is started before any request is accepted, so a machine that cannot
contain refuses at once (fail closed); only a local simulation, which holds
nobody's private data, falls back to no containment with one warning line.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from syft_flwr.config import Settings
from syft_flwr.crypto.keys import _atomic_write
from syft_flwr.data_owner.contain.app import ContainedClientApp
from syft_flwr.data_owner.contain.policy import ContainmentPolicy
from syft_flwr.data_owner.contain.process import WorkerSpec
from syft_flwr.ids import node_id_for

__all__ = [
    "SIMULATION_ENV",
    "containment_in_force",
    "record_containment",
    "start_contained",
]

logger = logging.getLogger("syft_flwr.data_owner")

#: Set by the local simulation for its data owners only: when the machine
#: cannot contain, run uncontained with a warning instead of refusing.
SIMULATION_ENV = "_SYFT_FLWR_SIMULATED_DATA_OWNER"
_FILE = "containment.json"
_KEEP = 20


def start_contained(
    *,
    app_dir: Path,
    ref: str,
    files: Mapping[str, str] | None,
    email: str,
    app_name: str,
    client: Any | None = None,
    policy: ContainmentPolicy | None = None,
    settings: Settings | None = None,
    node_config: dict[str, Any] | None = None,
    run_config: dict[str, Any] | None = None,
) -> ContainedClientApp:
    """Start the ClientApp's worker and wait until it is ready (or refuse).

    Parameters
    ----------
    app_dir, ref : Path, str
        The app folder and its ClientApp (``"pkg.mod:app"``).
    files : mapping of str to str, optional
        ``{relpath: sha256}`` of an approved project (re-checked by the
        worker before it imports anything of it); ``None`` for a local app.
    policy : ContainmentPolicy, optional
        Default :meth:`ContainmentPolicy.from_env` (the data owner's own).

    Raises
    ------
    ContainmentUnavailable
        A layer cannot be enforced here (not in a local simulation).
    ConfigError
        The ClientApp could not be loaded.
    """
    settings = settings or Settings.from_env()
    spec = WorkerSpec(
        app_dir=Path(app_dir).resolve(),
        ref=ref,
        files=None if files is None else dict(files),
        node_id=node_id_for(email),
        policy=policy or ContainmentPolicy.from_env(),
        max_bytes=settings.max_message_bytes,
        node_config=dict(node_config or {}),
        run_config=dict(run_config or {}),
    )
    app = ContainedClientApp(spec, fallback=os.environ.get(SIMULATION_ENV) == "1")
    app.start()
    if client is not None:
        record_containment(client, app_name, app.summary)
    return app


def _folder(client: Any) -> Path | None:
    state = client.state_dir("_review")
    return None if state is None else Path(state)


def containment_in_force(client: Any) -> list[dict[str, object]]:
    """The latest serves and the containment each ran with, oldest first."""
    folder = _folder(client)
    if folder is None:
        return []
    try:
        doc = json.loads((folder / _FILE).read_text("utf-8"))
    except FileNotFoundError:
        return []
    except ValueError as exc:
        logger.warning("the record of containment levels is damaged: %s", exc)
        return []
    if not isinstance(doc, list):
        return []
    return [d for d in doc if isinstance(d, dict)]


def record_containment(client: Any, app_name: str, summary: str) -> None:
    """Remember the level ``app_name`` is served with (``syft_flwr status``)."""
    folder = _folder(client)
    if folder is None:
        return
    entry = {"app_name": app_name, "containment": summary, "started": time.time()}
    kept = [*containment_in_force(client), entry][-_KEEP:]
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    data = json.dumps(kept, indent=2).encode()
    _atomic_write(folder / _FILE, data, 0o600, force_mode=True)

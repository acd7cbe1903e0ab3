"""The party's private Drive state: folder ids, the change-feed token, the index.

Kept in one JSON file per identity and root folder, replaced atomically (temp
file, fsync, rename, mode 0600), so a crash leaves either the old or the new
state. With it a restart finds its root and channel folders by id (no name
search, which lags on Drive) and resumes the changes feed where it stopped
instead of listing every channel again.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from syft_flwr.transports.gdrive._auth import _write_private
from syft_flwr.transports.gdrive._catalog import Catalog

__all__ = ["Bookmarks", "DriveState", "StateFile"]

logger = logging.getLogger("syft_flwr.transports.gdrive")

_VERSION = 1


@dataclass
class DriveState:
    """What a transport remembers between runs (all ids are Drive file ids)."""

    root_id: str | None = None
    #: Ids reserved (``files.generateIds``) for folders not yet known to exist:
    #: ``"root"``, ``"to:<reader>"`` or ``"shared:<folder key>"``. Saved before the create, so a crash
    #: between the two re-uses the id instead of making a second folder.
    reserved: dict[str, str] = field(default_factory=dict)
    #: Channel folder id -> ``[writer, reader]``.
    channels: dict[str, list[str]] = field(default_factory=dict)
    page_token: str | None = None
    #: Shared blob folder id -> ``[owner, folder key]`` (mine and peers').
    shared: dict[str, list[str]] = field(default_factory=dict)
    #: File id -> ``[channel id, key, md5, size, modifiedTime]``.
    index: dict[str, list[Any]] = field(default_factory=dict)


class StateFile:
    """Loads and atomically saves :class:`DriveState` (or keeps it in memory).

    Parameters
    ----------
    path:
        The JSON file; ``None`` keeps the state in memory only (every start is
        then a first start).
    identity, root_name:
        Recorded in the file; a file written for another identity or root is
        ignored rather than trusted.
    """

    def __init__(self, path: Path | None, identity: str, root_name: str) -> None:
        self.path = path
        self._who = {"identity": identity, "root_name": root_name}
        self._lock = threading.Lock()
        self._saved: str | None = None

    def load(self) -> DriveState:
        if self.path is None or not self.path.exists():
            return DriveState()
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            if raw.get("version") != _VERSION or any(
                raw.get(k) != v for k, v in self._who.items()
            ):
                logger.warning("ignoring Drive state %s: not ours", self.path)
                return DriveState()
            return DriveState(
                root_id=raw.get("root_id"),
                reserved=dict(raw.get("reserved") or {}),
                channels={k: list(v) for k, v in (raw.get("channels") or {}).items()},
                page_token=raw.get("page_token"),
                shared={k: list(v) for k, v in (raw.get("shared") or {}).items()},
                index={k: list(v) for k, v in (raw.get("index") or {}).items()},
            )
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            logger.warning("ignoring unreadable Drive state %s: %s", self.path, exc)
            return DriveState()

    def save(self, state: DriveState) -> None:
        """Durably replace the file with ``state`` (a no-op if unchanged)."""
        if self.path is None:
            return
        text = json.dumps(
            {"version": _VERSION, **self._who, **asdict(state)}, sort_keys=True
        )
        with self._lock:
            if text == self._saved:
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            _write_private(self.path, text)
            self._saved = text


class Bookmarks:
    """The ids a restart must find again, saved with the catalog.

    Owns this identity's root folder id, the folder ids reserved before their
    create and the changes feed's page token; :meth:`save` writes them with
    the catalog's listed channels and files to the :class:`StateFile`.
    """

    def __init__(self, state_file: StateFile, catalog: Catalog) -> None:
        self._file = state_file
        self._catalog = catalog
        self._lock = threading.Lock()
        self._root_id: str | None = None
        self._reserved: dict[str, str] = {}  # slot -> id reserved for a folder
        self._page_token: str | None = None

    def load(self) -> DriveState:
        """The saved state; its reserved ids are adopted."""
        saved = self._file.load()
        with self._lock:
            self._reserved = dict(saved.reserved)
        return saved

    @property
    def root_id(self) -> str | None:
        with self._lock:
            return self._root_id

    def set_root(self, root_id: str | None) -> None:
        with self._lock:
            self._root_id = root_id

    def reserved(self, slot: str) -> str | None:
        with self._lock:
            return self._reserved.get(slot)

    def reserve(self, slot: str, file_id: str) -> None:
        with self._lock:
            self._reserved[slot] = file_id

    def release(self, slot: str) -> None:
        with self._lock:
            self._reserved.pop(slot, None)

    @property
    def page_token(self) -> str | None:
        with self._lock:
            return self._page_token

    def set_page_token(self, token: str | None) -> None:
        with self._lock:
            self._page_token = token

    def save(self) -> None:
        """Save root, reserved ids, page token and the catalog together."""
        with self._lock:
            if self._root_id is None and not self._reserved:
                return
            # The token before the catalog: a change applied in between is then
            # in the saved index and replayed by the feed, never lost.
            root_id, reserved = self._root_id, dict(self._reserved)
            token = self._page_token
        channels, shared, index = self._catalog.snapshot()
        self._file.save(
            DriveState(
                root_id=root_id,
                reserved=reserved,
                channels=channels,
                shared=shared,
                page_token=token,
                index=index,
            )
        )

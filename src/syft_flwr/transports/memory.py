"""In-memory transport: a first-class backend for testing your own Flower apps.

Every participant's :class:`MemoryTransport` is bound to one shared
:class:`MemoryHub` (per instance; nothing global, nothing to clean up between
tests). The envelope, encryption, events and grid code above it is exactly the
code that runs over SyftBox or Google Drive.

Examples
--------
>>> hub = MemoryHub()
>>> ds = MemoryTransport(hub, "ds@example.org")
>>> do = MemoryTransport(hub, "do@example.org")
>>> ds.put("do@example.org/app_data/a/rpc/messages/ds@example.org/x.request", b"hi")
>>> do.get("do@example.org/app_data/a/rpc/messages/ds@example.org/x.request")
b'hi'
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

from syft_flwr.errors import MessageNotFound, TransportClosed, TransportError
from syft_flwr.transports.base import KeyCallback, Transport, Watch, check_key

__all__ = ["MemoryHub", "MemoryTransport"]

logger = logging.getLogger(__name__)


class MemoryHub:
    """Shared state of an in-memory network: files and watches.

    Parameters
    ----------
    max_file_size:
        If set, ``put`` of a larger file raises ``TransportError`` (mimics
        SyftBox's per-file limit, so tests prove chunking keeps files small).
    reject:
        Optional predicate ``(writer, key) -> bool``; a rejected write is stored
        under a SyftBox-style ``.syftrejected.`` name and never becomes visible,
        like a sync client refusing an upload.
    """

    def __init__(
        self,
        *,
        max_file_size: int | None = None,
        reject: Callable[[str, str], bool] | None = None,
    ) -> None:
        self._lock = threading.RLock()
        self._files: dict[str, bytes] = {}
        self._rejected: set[str] = set()
        self._watches: list[Watch] = []
        self.max_file_size = max_file_size
        self.reject = reject
        self.largest_file = 0
        self.writes = 0
        self._private: dict[str, dict[str, object]] = {}

    def private_state(self, identity: str) -> dict[str, object]:
        """The private, never-shared state of ``identity`` on this hub.

        Stands in for a party's private state folder when an in-memory client has
        none: its private keys, rotated prekeys and pinned peer keys live here,
        keyed by identity (so a new client object of the same party finds its
        keys, and no other party ever does).

        Parameters
        ----------
        identity : str
            The party's email.

        Returns
        -------
        dict
            Mutable; owned by the caller's crypto layer.
        """
        with self._lock:
            return self._private.setdefault(identity, {})

    def snapshot(self) -> dict[str, bytes]:
        """Return a copy of all files (for assertions in tests)."""
        with self._lock:
            return dict(self._files)

    def _notify(self, key: str) -> None:
        with self._lock:
            watches = [w for w in self._watches if w.matches(key)]
        # Callbacks run outside the lock, in the writer's thread; they must be quick.
        # A failing callback must break neither the writer nor the other watches.
        for w in watches:
            try:
                w.fire(key)
            except Exception:
                logger.exception("watch callback failed for %s", key)


class MemoryTransport(Transport):
    """A participant's view of a :class:`MemoryHub`."""

    name = "memory"
    default_rescan_interval = 1.0
    # One hub, every party sees every key: sharing needs no permission step.
    can_share = True

    def __init__(self, hub: MemoryHub, identity: str) -> None:
        super().__init__(identity)
        self.hub = hub
        self.max_file_size = hub.max_file_size
        self._own_watches: list[Watch] = []

    def share(self, folder: str, readers: Sequence[str]) -> None:
        self._check_open()

    def _check_open(self) -> None:
        if self.closed:
            raise TransportClosed(f"{self!r} is closed")

    def put(self, key: str, data: bytes) -> None:
        self._check_open()
        check_key(key)
        size = len(data)
        if self.hub.max_file_size is not None and size > self.hub.max_file_size:
            raise TransportError(
                f"{key}: {size} bytes exceeds the {self.hub.max_file_size} byte limit"
            )
        if self.hub.reject is not None and self.hub.reject(self.identity, key):
            with self.hub._lock:
                self.hub._rejected.add(key)
            return
        with self.hub._lock:
            self.hub._files[key] = bytes(data)
            self.hub.largest_file = max(self.hub.largest_file, size)
            self.hub.writes += 1
        self.hub._notify(key)

    def get(self, key: str) -> bytes:
        self._check_open()
        with self.hub._lock:
            try:
                return self.hub._files[key]
            except KeyError:
                raise MessageNotFound(key) from None

    def exists(self, key: str) -> bool:
        with self.hub._lock:
            return key in self.hub._files

    def list(self, prefix: str) -> list[str]:
        self._check_open()
        p = prefix.rstrip("/") + "/"
        with self.hub._lock:
            return sorted(k for k in self.hub._files if k.startswith(p))

    def delete(self, key: str) -> None:
        self._check_open()
        with self.hub._lock:
            self.hub._files.pop(key, None)

    def watch(self, prefix: str, callback: KeyCallback) -> Watch:
        self._check_open()
        w = Watch(prefix, callback)
        with self.hub._lock:
            self.hub._watches.append(w)
        self._own_watches.append(w)
        return w

    def is_rejected(self, key: str) -> bool:
        with self.hub._lock:
            return key in self.hub._rejected

    def close(self) -> None:
        super().close()
        with self.hub._lock:
            for w in self._own_watches:
                w.cancel()
            self.hub._watches = [w for w in self.hub._watches if not w.cancelled]

"""The one home of a data owner's kept replies: ``<state_dir>/replies``.

Each kept reply is one file ``<id>.reply`` in :mod:`~syft_flwr.data_owner.kept_reply`'s
format (tagged with the data owner's own key when it has one); a reply with
attachments keeps its sealed chunks as ``<id>.a<k>.<nnnnnn>.chunk`` (hard links
to the chunks just sent, where the disk allows), and its file holds their
references and content keys. Without a folder, replies live in memory.

:class:`ReplyStore` owns the files and what it knows of them (which ids have
linked chunks); the request ledger (:mod:`~syft_flwr.data_owner.ledger`) decides
which replies are kept, and for how long.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

from syft_flwr._fs import fsync_dir
from syft_flwr.crypto.state_mac import StateKey
from syft_flwr.data_owner.kept_reply import open_kept, write_kept
from syft_flwr.wire import frames
from syft_flwr.wire.blobs import ATTACHED_MAGIC, read_local_blob, unpack_attached

__all__ = ["ReplyStore", "chunk_owner"]

logger = logging.getLogger("syft_flwr.data_owner.ledger")

#: A stored reply's attachments are kept as ``<id>.a<k>.<nnnnnn>.chunk``.
_CHUNK_SUFFIX = ".chunk"
#: Sizes in our own stored replies are not limited below what memory allows.
_NO_LIMIT = 2**62
#: A leftover temporary file older than this (seconds) is removed by a sweep.
_STALE_TMP = 3600.0


class ReplyStore:
    """Kept replies in ``folder`` (created private), or in memory with ``None``.

    Ids are validated by the caller (``envelope.ID_PATTERN``, or the ledger's
    own alias-only names): never a path. ``mac`` tags and checks each file.
    """

    def __init__(self, folder: Path | None, mac: StateKey | None) -> None:
        self.folder = folder
        self._mac = mac
        self._lock = threading.Lock()
        self._memory: dict[str, tuple[int, bytes]] = {}
        #: ids whose kept reply has linked attachment chunks (found by scan,
        #: added by link): only those need their chunks looked up.
        self._linked: set[str] = set()
        if folder is not None:
            folder.mkdir(exist_ok=True, mode=0o700)

    def _path(self, mid: str) -> Path:
        assert self.folder is not None
        return self.folder / f"{mid}.reply"

    # -- writing ------------------------------------------------------------------
    def write(
        self, mid: str, status: int, body: bytes, *, durable: bool, peer: str = ""
    ) -> None:
        """Keep ``mid``'s reply (atomically; fsynced with ``durable``)."""
        if self.folder is None:
            with self._lock:
                self._memory[mid] = (status, frames.inline(body))
            return
        path = self._path(mid)
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            write_kept(fd, mid, peer, status, body, self._mac)
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        if durable:
            fsync_dir(path.parent)

    def link(self, mid: str, link: Callable[[Path, str], bool]) -> bool:
        """Give ``mid``'s sealed attachment chunks a name here with ``link``.

        False (nothing kept) when there is no folder or they cannot be linked.
        """
        if self.folder is None:
            return False
        self.delete_chunks(mid)  # a link never replaces: an earlier attempt's go
        with self._lock:
            self._linked.add(mid)
        if not link(self.folder, mid):
            with self._lock:
                self._linked.discard(mid)
            return False
        return True

    def sync(self, mid: str) -> None:
        """Make ``mid``'s kept reply durable: its file, chunks and folder entry."""
        if self.folder is None:
            return
        for path in [self._path(mid), *self._chunk_paths(mid)]:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(self.folder)

    # -- reading ------------------------------------------------------------------
    def read(self, mid: str, peer: str | None = None) -> tuple[int, bytes] | None:
        """The kept ``(status, body)`` of ``mid``, checked; ``None`` if not kept.

        Raises
        ------
        StateIntegrityError
            With a key: the file was changed or carries no tag. Never send it.
        """
        if self.folder is None:
            with self._lock:
                return self._memory.get(mid)
        try:
            data = self._path(mid).read_bytes()
        except OSError:
            return None
        data, kept_for = open_kept(mid, data, self._mac)
        if peer is not None and self._mac is not None and kept_for != peer:
            logger.warning(
                "the kept reply to %s answers %s, not %s; it is not sent to them",
                mid,
                kept_for,
                peer,
            )
            return None
        if len(data) < 2:
            return None
        status, body = int.from_bytes(data[:2], "big"), data[2:]
        if not body.startswith(ATTACHED_MAGIC):
            return status, body
        return self._with_attachments(mid, status, body)

    def _with_attachments(
        self, mid: str, status: int, body: bytes
    ) -> tuple[int, bytes] | None:
        """A kept reply whose attachments are kept chunks, opened and checked."""
        assert self.folder is not None
        try:
            refs, inner = unpack_attached(body, max_total=_NO_LIMIT)
            parts = [
                read_local_blob(self.folder, ref, f"{mid}.a{k}")
                for k, ref in enumerate(refs)
            ]
        except (OSError, ValueError) as exc:  # EnvelopeError is a ValueError
            logger.warning("the kept reply to %s cannot be read back: %s", mid, exc)
            return None
        return status, frames.FramedBody(bytes(inner), parts)

    # -- removing -----------------------------------------------------------------
    def delete(self, mids: list[str]) -> None:
        """Forget the kept replies of ``mids`` (files and chunks)."""
        for m in mids:
            if self.folder is None:
                with self._lock:
                    self._memory.pop(m, None)
                continue
            try:
                self._path(m).unlink()
            except FileNotFoundError:
                pass
            self.delete_chunks(m)

    def _chunk_paths(self, mid: str) -> list[Path]:
        """The attachment chunks kept for ``mid``'s reply (see :meth:`link`)."""
        with self._lock:
            if self.folder is None or mid not in self._linked:
                return []  # no folder listing for a reply without attachments
        try:
            names = os.listdir(self.folder)
        except OSError:
            return []
        return [self.folder / n for n in names if chunk_owner(n) == mid]

    def delete_chunks(self, mid: str) -> None:
        for p in self._chunk_paths(mid):
            p.unlink(missing_ok=True)
        with self._lock:
            self._linked.discard(mid)

    # -- housekeeping -------------------------------------------------------------
    def scan(self, aliased: set[str]) -> dict[str, int]:
        """One pass at start: note linked ids; return the sizes of ``aliased`` ones."""
        assert self.folder is not None
        sizes: dict[str, int] = {}
        with os.scandir(self.folder) as found:
            for e in found:
                owner = chunk_owner(e.name)
                if owner is not None:
                    self._linked.add(owner)
                elif e.name.endswith(".reply"):
                    owner = e.name[: -len(".reply")]
                if owner in aliased:
                    try:
                        sizes[owner] = sizes.get(owner, 0) + e.stat().st_size
                    except OSError:
                        continue
        return sizes

    def sweep(self, keep: set[str], now: float) -> None:
        """Remove files of replies not in ``keep``, and stale temporary files."""
        if self.folder is None:
            return
        try:
            names = os.listdir(self.folder)
        except OSError:
            return
        for name in names:
            p = self.folder / name
            try:
                if name.endswith(".reply"):
                    if name[: -len(".reply")] in keep:
                        continue
                elif name.endswith(_CHUNK_SUFFIX):
                    if chunk_owner(name) in keep:
                        continue
                elif not name.endswith(".tmp") or p.stat().st_mtime > now - _STALE_TMP:
                    continue
                p.unlink()
            except OSError:
                continue


def chunk_owner(name: str) -> str | None:
    """The request id of a kept chunk ``<id>.a<k>.<nnnnnn>.chunk``, else None."""
    if not name.endswith(_CHUNK_SUFFIX):
        return None
    mid, _, rest = name[: -len(_CHUNK_SUFFIX)].rpartition(".a")
    k, _, index = rest.partition(".")
    return mid if mid and k.isdigit() and index.isdigit() else None

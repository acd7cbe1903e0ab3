"""Atomic writes into SyftBox folders that never make a watcher wait.

A file is written whole to a temporary name, then renamed onto its final
name, so a reader (and the sync client) sees either the old file or the new
one, never a part. The temporary file lives in one folder per datasites
root, :data:`TMP_DIR`, outside every folder anyone watches.

Why not next to the final file: watchdog (inotify) sees a rename inside a
watched folder as an IN_MOVED_FROM then an IN_MOVED_TO, and holds an
IN_MOVED_FROM for up to 0.5 s to pair it. Its reading thread checks the head
of the queue, finds the IN_MOVED_FROM, and sleeps the full 0.5 s even when
the IN_MOVED_TO pairs it a microsecond later; every event behind it waits.
When the threads switch between the two halves of a rename (a loaded box),
a round stalls for half a second. A rename from an unwatched folder is a lone
IN_MOVED_TO, which watchdog delivers at once (as a created file). It also
spares every watcher the create/modify/close events of the temporary file.

Both sync clients ignore the folder: SyftBox 0.4.0 ignores ``/.syft*`` at the
datasites root, the Go client ignores ``*.tmp`` (the folder's name and every
file in it). Where the folder cannot be used (it is not a plain folder, or
the target lies on another file system) the temporary file goes next to the
target as before, still named ``*.tmp``.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
import time
from pathlib import Path

from syft_flwr.transports.base import TMP_SUFFIX

__all__ = ["TMP_DIR", "AtomicWriter"]

#: The temporary folder, directly under the datasites root.
TMP_DIR = ".syft-flwr.tmp"
#: Temporary files older than this are left from a crash and removed at start.
_STALE_AFTER = 24 * 3600.0
_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)


class AtomicWriter:
    """Write files under ``root`` by temp file (in :data:`TMP_DIR`) + rename.

    Parameters
    ----------
    root:
        The resolved datasites folder.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.tmp_dir: str | None = _open_tmp_dir(root / TMP_DIR)

    def write(self, path: Path, data: bytes) -> None:
        """Replace ``path`` with ``data`` atomically; raises ``OSError``."""
        if self.tmp_dir is not None:
            tmp = os.path.join(
                self.tmp_dir, f"{path.name}.{secrets.token_hex(8)}{TMP_SUFFIX}"
            )
            try:
                fd = os.open(tmp, _FLAGS, 0o666)
            except OSError:  # the folder was removed or spoiled: next to the file
                self.tmp_dir = None
            else:
                self._finish(fd, tmp, path, data)
                return
        tmp = f"{path}.{secrets.token_hex(4)}{TMP_SUFFIX}"
        try:
            fd = os.open(tmp, _FLAGS, 0o666)
        except FileNotFoundError:  # a new folder (most are there already)
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, _FLAGS, 0o666)
        self._finish(fd, tmp, path, data)

    def _finish(self, fd: int, tmp: str, path: Path, data: bytes) -> None:
        """Write ``data`` to the open temp file, close it, rename it to ``path``."""
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
            try:
                os.replace(tmp, path)
            except FileNotFoundError:  # a new folder (most are there already)
                path.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp, path)
        except OSError as exc:
            _unlink_quietly(tmp)
            if exc.errno != errno.EXDEV:
                raise
            # The target is on another file system (a mount inside the
            # datasites): write next to it from now on.
            self.tmp_dir = None
            self.write(path, data)


def _open_tmp_dir(folder: Path) -> str | None:
    """Create (or reuse) the temp folder; ``None`` if it is not a plain folder."""
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        st = os.lstat(folder)
    except OSError:
        return None
    # A link (planted, or left by anything else) is not followed: the temp
    # files would land wherever it points.
    if not stat.S_ISDIR(st.st_mode):
        return None
    _remove_stale(folder)
    return str(folder)


def _remove_stale(folder: Path) -> None:
    """Remove temp files a crashed writer left behind (older than a day)."""
    cutoff = time.time() - _STALE_AFTER
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        try:
            if entry.is_file(follow_symlinks=False) and (
                entry.stat(follow_symlinks=False).st_mtime < cutoff
            ):
                os.unlink(entry.path)
        except OSError:
            pass


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass

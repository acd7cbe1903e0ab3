"""Small file-system helpers shared by the modules that keep durable state."""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable, Iterable
from pathlib import Path

__all__ = ["fsync_dir", "write_durable"]


def fsync_dir(folder: Path) -> None:
    """Persist a folder's entries (a rename or link into it), where the OS allows it.

    Not possible (nor needed) on Windows; some file systems refuse fsync on a
    folder, which is ignored.
    """
    if os.name == "nt":
        return
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_durable(
    path: Path,
    pieces: Iterable[bytes | memoryview],
    *,
    seal: Callable[[bytes], bytes] | None = None,
) -> None:
    """Write ``pieces`` (in order) to ``path`` atomically and durably.

    The bytes go to a private temp file beside ``path`` (mode 0600), are
    fsynced, renamed over ``path``, and the folder is fsynced: after a crash
    the file is either the old one or the whole new one. With ``seal``, the
    SHA-256 of the bytes is computed as they are written (no second pass over
    a large reply) and ``seal(digest)`` is appended.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    digest = hashlib.sha256() if seal is not None else None
    with open(tmp, "wb", opener=lambda p, f: os.open(p, f, 0o600)) as fh:
        for piece in pieces:
            fh.write(piece)
            if digest is not None:
                digest.update(piece)
        if seal is not None and digest is not None:
            fh.write(seal(digest.digest()))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)

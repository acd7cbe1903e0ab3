"""Small file-system helpers shared by the modules that keep durable state."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

__all__ = ["fsync_dir"]


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

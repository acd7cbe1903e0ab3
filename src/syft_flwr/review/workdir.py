"""Check a served project's working folder against its manifest: every file, no extras.

The packer's skip rules do not apply here: a working folder holds exactly the
files of the approved manifest, so anything else in it (a ``__pycache__``
planted or written there, a native module, a hidden file) is a change, and the
folder is refused before the app is imported and before each request.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Sequence
from pathlib import Path

from syft_flwr.review.package import FileEntry, project_hash_of

__all__ = ["work_dir_problem"]


def _scan(root: Path) -> tuple[dict[str, FileEntry], str | None]:
    """Every regular file under ``root`` by relative path, or why it cannot be."""
    found: dict[str, FileEntry] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        base = Path(dirpath)
        for name in sorted(dirnames):
            if os.path.islink(base / name):
                rel = (base / name).relative_to(root).as_posix()
                return found, f"{rel} is a link"
        for name in sorted(filenames):
            full = base / name
            rel = full.relative_to(root).as_posix()
            if not stat.S_ISREG(os.lstat(full).st_mode):
                return found, f"{rel} is a link or special file"
            data = full.read_bytes()
            found[rel] = FileEntry(rel, hashlib.sha256(data).hexdigest(), len(data))
    return found, None


def work_dir_problem(
    root: str | Path,
    project_hash: str,
    files: Sequence[FileEntry] | None = None,
) -> str | None:
    """Why the folder ``root`` is not exactly the approved project (``None``: it is).

    Parameters
    ----------
    root : str or Path
        The working folder the project was unpacked into.
    project_hash : str
        The approved project hash.
    files : sequence of FileEntry, optional
        The manifest's files: with them the answer names the extra, missing
        or changed file; without, only the hash over every file is compared.

    Returns
    -------
    str or None
    """
    try:
        found, problem = _scan(Path(root))
    except OSError as exc:
        return f"the working folder cannot be read: {exc}"
    if problem is not None:
        return problem
    if files is not None:
        expected = {f.path: f for f in files}
        extra = sorted(set(found) - set(expected))
        if extra:
            return f"an extra file {extra[0]} is in the working folder"
        missing = sorted(set(expected) - set(found))
        if missing:
            return f"{missing[0]} is missing from the working folder"
        changed = sorted(p for p in expected if expected[p] != found[p])
        if changed:
            return f"{changed[0]} was changed"
    now = project_hash_of(list(found.values()))
    if now != project_hash:
        return f"its files hash to {now[:12]} now"
    return None

"""What a data owner reads before deciding: a project's code, and what changed.

:func:`show_text` renders a stored project for review: its name, hash and
researcher, the entry points it runs, the diff against the version of that
researcher approved before, then every file. Everything in it came from a
researcher or a shared folder, so every line goes through :func:`printable`.
"""

from __future__ import annotations

import difflib
import os
from typing import TYPE_CHECKING

from syft_flwr._printable import printable
from syft_flwr.review.entry import entry_point_lines

if TYPE_CHECKING:
    from syft_flwr.review.store import ProjectStore

__all__ = ["show_text"]


def show_text(store: ProjectStore, ref: str, researcher: str | None = None) -> str:
    """The code of project ``ref`` and a diff against the version approved before.

    Parameters
    ----------
    store : ProjectStore
    ref : str
        A hash prefix.
    researcher : str, optional
        Whose submission, when several researchers submitted that project.

    Returns
    -------
    str
    """
    rec = store.get(ref, researcher)
    pkg = store.package(rec)
    p = printable  # everything below came from a researcher or a shared folder
    out = [
        f"project {p(rec.name)} {p(rec.project_hash)} [{p(rec.status)}]",
        f"from {p(rec.researcher)} (fingerprint {p(rec.fingerprint)})",
        *(p(line) for line in entry_point_lines(pkg.files)),
    ]
    if rec.reason:
        out.append(f"reason: {p(rec.reason)}")
    if rec.note:
        out.append(f"note: {p(rec.note)}")
    prev = store.previous_approved(rec)
    if prev is not None:
        old = store.package(prev).files
        out.append(f"\n=== diff against approved {p(prev.short)} ===")
        for path in sorted(set(old) | set(pkg.files)):
            a = _lines(old.get(path, b""))
            b = _lines(pkg.files.get(path, b""))
            out.extend(
                p(line.rstrip("\n"), multiline=True)
                for line in difflib.unified_diff(a, b, f"a/{path}", f"b/{path}")
            )
    for path in sorted(pkg.files):
        out.append(f"\n=== {p(path)} ===")
        text = pkg.files[path].decode("utf-8", errors="replace")
        out.append(p(text, multiline=True).rstrip("\n"))
    return os.linesep.join(out) + os.linesep


def _lines(data: bytes) -> list[str]:
    return data.decode("utf-8", errors="replace").splitlines(keepends=True)

"""Read an untrusted project package, and write its files, without trusting it.

Every member must be a regular file under ``app/`` with a clean relative name
(:func:`~syft_flwr.review.package.check_member_path`), within the size and count
limits counted while reading, and the files must be exactly those of the signed
manifest, and be files the packer would have packed
(:func:`syft_flwr.review.rules.files_problem`: no bytecode, native modules,
caches, hidden files, text that is not UTF-8 or holds control or format
characters, no module next to a package of one name). The signature itself is
checked by :meth:`Package.verify` against the researcher's pinned key.
"""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Mapping
from pathlib import Path

from syft_flwr.errors import ReviewError, UnsafeArchiveError
from syft_flwr.review.manifest import (
    _MAX_MANIFEST_BYTES,
    DEFAULT_MAX_FILES,
    DEFAULT_MAX_PACKAGE_BYTES,
    FILES_PREFIX,
    MANIFEST_NAME,
    SIGNATURE_NAME,
    Manifest,
    Package,
    _entries,
    check_member_path,
)
from syft_flwr.review.rules import files_problem

__all__ = ["read_package", "write_tree"]


def _kind(m: tarfile.TarInfo) -> str:
    if m.issym():
        return "a symlink"
    if m.islnk():
        return "a hard link"
    if m.isdir():
        return "a folder entry"
    if m.ischr() or m.isblk():
        return "a device"
    if m.isfifo():
        return "a FIFO"
    return "not a regular file"


def read_package(
    data: bytes,
    *,
    max_bytes: int = DEFAULT_MAX_PACKAGE_BYTES,
    max_files: int = DEFAULT_MAX_FILES,
) -> Package:
    """Read an untrusted package; check its shape against its manifest.

    The signature is *not* checked here (that needs the researcher's pinned
    key): call :meth:`Package.verify`.

    Parameters
    ----------
    data : bytes
        The package as received.
    max_bytes, max_files : int
        Limits on the total file size and the number of files.

    Returns
    -------
    Package

    Raises
    ------
    UnsafeArchiveError
        Not a package; a member that is a link, device, folder or FIFO; an
        absolute or ``..`` path; over a limit; files that differ from the
        manifest; a file the packer would never pack.
    """
    members = _read_members(data, max_bytes=max_bytes, max_files=max_files)
    mbytes = members.pop(MANIFEST_NAME, None)
    signature = members.pop(SIGNATURE_NAME, None)
    if mbytes is None or signature is None:
        raise UnsafeArchiveError("project archive has no signed manifest")
    manifest = Manifest.from_bytes(mbytes, max_files=max_files)
    files = _app_files(members, max_bytes=max_bytes)
    if _entries(files) != manifest.files:
        raise UnsafeArchiveError("project files do not match the signed manifest")
    problem = files_problem(files)
    if problem is not None:
        raise UnsafeArchiveError(
            f"the project cannot be reviewed as it runs: {problem}"
        )
    return Package(manifest, mbytes, signature, files)


def _read_members(data: bytes, *, max_bytes: int, max_files: int) -> dict[str, bytes]:
    """Every member of the gzipped tar ``data`` by checked path, within the limits.

    The manifest and signature count towards the limits too (hence the slack).
    """
    members: dict[str, bytes] = {}
    total = 0
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            while (m := tar.next()) is not None:
                if len(members) >= max_files + 2:
                    raise UnsafeArchiveError(
                        f"project archive has more than {max_files} files"
                    )
                name = _member_name(m, members)
                total += m.size
                if total > max_bytes + _MAX_MANIFEST_BYTES:
                    raise UnsafeArchiveError(
                        f"project archive holds more than {max_bytes} bytes"
                    )
                members[name] = _member_body(tar, m, name)
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        if isinstance(exc, ReviewError):
            raise
        raise UnsafeArchiveError(f"not a project archive: {exc}") from exc
    return members


def _member_name(m: tarfile.TarInfo, seen: Mapping[str, bytes]) -> str:
    """The checked path of a regular-file member not seen before."""
    if not m.isreg():
        raise UnsafeArchiveError(
            f"project archive member {m.name!r} is {_kind(m)}; only "
            "regular files are accepted"
        )
    name = check_member_path(m.name)
    if name in seen:
        raise UnsafeArchiveError(f"project archive repeats {name!r}")
    return name


def _member_body(tar: tarfile.TarFile, m: tarfile.TarInfo, name: str) -> bytes:
    """The bytes of member ``m``, exactly its declared size (a cut one is refused)."""
    fh = tar.extractfile(m)
    body = fh.read(m.size + 1) if fh is not None else b""
    if len(body) != m.size:
        raise UnsafeArchiveError(f"project archive member {name!r} is cut")
    return body


def _app_files(members: Mapping[str, bytes], *, max_bytes: int) -> dict[str, bytes]:
    """The project's files (under ``app/``, prefix dropped), within ``max_bytes``."""
    if any(not n.startswith(FILES_PREFIX) for n in members):
        raise UnsafeArchiveError("project archive has files outside app/")
    files = {n[len(FILES_PREFIX) :]: b for n, b in members.items()}
    if sum(len(b) for b in files.values()) > max_bytes:
        raise UnsafeArchiveError(f"project files hold more than {max_bytes} bytes")
    return files


def write_tree(files: Mapping[str, bytes], dest: str | Path) -> Path:
    """Write ``files`` (checked paths) under a new, empty folder ``dest``.

    Raises
    ------
    UnsafeArchiveError
        A path that is not clean, or ``dest`` exists and is not empty.
    """
    root = Path(dest)
    if root.exists() and any(root.iterdir()):
        raise UnsafeArchiveError(f"{root} is not empty; refusing to unpack over it")
    root.mkdir(parents=True, exist_ok=True)
    base = root.resolve()
    for rel, data in files.items():
        target = (root / check_member_path(rel)).resolve()
        if base not in target.parents:  # belt and braces over check_member_path
            raise UnsafeArchiveError(f"{rel!r} would land outside {root}")
        target.parent.mkdir(parents=True, exist_ok=True)
        # O_EXCL + O_NOFOLLOW: never write through something already there.
        fd = os.open(
            target,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0),
            0o644,
        )
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
    return root

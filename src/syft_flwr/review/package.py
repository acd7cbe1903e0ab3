"""Pack a Flower app folder into a signed project package, and unpack one safely.

A package is a gzipped tar holding three kinds of members, in this order::

    syft_flwr-manifest.json   what the project is: files, their sha256, the hash
    syft_flwr-manifest.sig    the researcher's Ed25519 identity-key signature
    app/<path>                the files themselves

The *project hash* is the sha256 over the sorted ``(path, sha256, size)`` list,
so it names exactly the code, independent of tar or gzip details; the data owner
approves that hash and every request names it (see ``docs/review.md``); the
manifest, the hash and the signature live in :mod:`syft_flwr.review.manifest`
(their names are re-exported here, their home before it was split out).

Only sources travel: files with a source suffix (:data:`SOURCE_SUFFIXES`), no
hidden files, no virtualenvs, caches, ``simulation_logs`` or data folders
(:data:`EXCLUDED_DIRS`), UTF-8 text without control or format characters
(:mod:`syft_flwr.review.rules`, one rule for packing and receipt). Unpacking
trusts nothing: every member must be a regular file under ``app/`` with a clean
relative name, within the size and count limits, match the signed manifest byte
for byte, and be a file the packer would have packed
(:mod:`syft_flwr.review.unpack`).
"""

from __future__ import annotations

import io
import os
import stat
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from syft_flwr._email import fold_domain
from syft_flwr._printable import printable as printable
from syft_flwr.errors import ConfigError
from syft_flwr.review.manifest import _MAX_MANIFEST_BYTES as _MAX_MANIFEST_BYTES
from syft_flwr.review.manifest import _SIGNING_PREFIX as _SIGNING_PREFIX
from syft_flwr.review.manifest import DEFAULT_MAX_FILES as DEFAULT_MAX_FILES
from syft_flwr.review.manifest import (
    DEFAULT_MAX_PACKAGE_BYTES as DEFAULT_MAX_PACKAGE_BYTES,
)
from syft_flwr.review.manifest import FILES_PREFIX as FILES_PREFIX
from syft_flwr.review.manifest import FORMAT as FORMAT
from syft_flwr.review.manifest import MANIFEST_NAME as MANIFEST_NAME
from syft_flwr.review.manifest import SIGNATURE_NAME as SIGNATURE_NAME
from syft_flwr.review.manifest import FileEntry as FileEntry
from syft_flwr.review.manifest import Manifest as Manifest
from syft_flwr.review.manifest import Package as Package
from syft_flwr.review.manifest import _entries as _entries
from syft_flwr.review.manifest import _hex64 as _hex64
from syft_flwr.review.manifest import _signed_bytes as _signed_bytes
from syft_flwr.review.manifest import _size as _size
from syft_flwr.review.manifest import check_member_path as check_member_path
from syft_flwr.review.manifest import project_hash_of as project_hash_of
from syft_flwr.review.manifest import verify_manifest as verify_manifest
from syft_flwr.review.rules import EXCLUDED_DIRS as EXCLUDED_DIRS
from syft_flwr.review.rules import SOURCE_SUFFIXES as SOURCE_SUFFIXES
from syft_flwr.review.rules import files_problem, skip_reason

__all__ = [
    "DEFAULT_MAX_FILES",
    "DEFAULT_MAX_PACKAGE_BYTES",
    "EXCLUDED_DIRS",
    "FileEntry",
    "Manifest",
    "Package",
    "SOURCE_SUFFIXES",
    "check_member_path",
    "collect_files",
    "hash_tree",
    "pack_app",
    "printable",
    "project_hash_of",
    "verify_manifest",
]


def _included(rel_parts: tuple[str, ...]) -> bool:
    return skip_reason("/".join(rel_parts)) is None


def collect_files(
    app_dir: str | Path,
    *,
    max_bytes: int = DEFAULT_MAX_PACKAGE_BYTES,
    max_files: int = DEFAULT_MAX_FILES,
) -> dict[str, bytes]:
    """The files of ``app_dir`` that travel in a package, by relative path.

    Parameters
    ----------
    app_dir : str or Path
        The Flower app folder (with its ``pyproject.toml``).
    max_bytes, max_files : int
        Limits on the total size and the number of files.

    Returns
    -------
    dict of str to bytes

    Raises
    ------
    ConfigError
        No ``pyproject.toml``, a link where a source file would be, a limit hit,
        or files a data owner would refuse (text that is not UTF-8 or holds
        control or format characters, a module and a package of one name).
    """
    root = Path(app_dir)
    if not (root / "pyproject.toml").is_file():
        raise ConfigError(f"{root} has no pyproject.toml: not a Flower app folder")
    out: dict[str, bytes] = {}
    total = 0
    for parts, full in _source_files(root):
        st = os.lstat(full)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(
                f"{full} is a link or special file; packages hold regular files only"
            )
        total += st.st_size
        if len(out) + 1 > max_files or total > max_bytes:
            raise ConfigError(
                f"{root} has more than {max_files} source files or {max_bytes} "
                "bytes of them: is data or an environment inside the app folder?"
            )
        out["/".join(parts)] = full.read_bytes()
    problem = files_problem(out)
    if problem is not None:
        raise ConfigError(f"cannot pack {root}: {problem}")
    return out


def _source_files(root: Path) -> Iterator[tuple[tuple[str, ...], Path]]:
    """The files under ``root`` the rules let travel, in a stable order.

    Folders that never travel are pruned before they are listed (a huge
    ``.venv`` or data folder is never walked), links to folders are not
    followed.
    """
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        rel_dir = Path(dirpath).relative_to(root).parts
        dirnames[:] = sorted(
            d
            for d in dirnames
            if _included((*rel_dir, d, "x.py"))
            and not os.path.islink(Path(dirpath) / d)
        )
        for name in sorted(filenames):
            parts = (*rel_dir, name)
            if _included(parts):
                yield parts, Path(dirpath) / name


def hash_tree(app_dir: str | Path, **limits: int) -> str:
    """The project hash of the files in ``app_dir`` as they are now.

    The data owner re-hashes the folder it serves before each request, so a file
    changed after approval is noticed; the researcher computes the hash its
    requests name the same way.
    """
    return project_hash_of(_entries(collect_files(app_dir, **limits)))


def pack_app(
    app_dir: str | Path,
    researcher: str,
    identity: Ed25519PrivateKey,
    *,
    name: str | None = None,
    max_bytes: int = DEFAULT_MAX_PACKAGE_BYTES,
    max_files: int = DEFAULT_MAX_FILES,
    clock: Any = time.time,
) -> tuple[bytes, Manifest]:
    """Pack ``app_dir`` into a signed package.

    Parameters
    ----------
    app_dir : str or Path
        The Flower app folder.
    researcher : str
        The signer's email.
    identity : Ed25519PrivateKey
        The researcher's identity key (``PrivateKeys.identity``).
    name : str, optional
        Project name shown to data owners (default: the folder's name).
    max_bytes, max_files : int
        Size and count limits (see :func:`collect_files`).
    clock : callable, optional
        Current POSIX time.

    Returns
    -------
    tuple of (bytes, Manifest)
        The package bytes and its manifest.
    """
    files = collect_files(app_dir, max_bytes=max_bytes, max_files=max_files)
    entries = _entries(files)
    manifest = Manifest(
        name=name or Path(app_dir).resolve().name,
        researcher=fold_domain(researcher),
        project_hash=project_hash_of(entries),
        files=entries,
        created=float(clock()),
    )
    mbytes = manifest.to_bytes()
    signature = identity.sign(_signed_bytes(mbytes))
    buf = io.BytesIO()
    # mtime 0 and fixed owners: the same folder packs to the same bytes.
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        for member_name, data in (
            (MANIFEST_NAME, mbytes),
            (SIGNATURE_NAME, signature),
            *((FILES_PREFIX + p, files[p]) for p in sorted(files)),
        ):
            info = tarfile.TarInfo(member_name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue(), manifest

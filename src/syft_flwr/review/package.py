"""Pack a Flower app folder into a signed project package, and unpack one safely.

A package is a gzipped tar holding three kinds of members, in this order::

    syft_flwr-manifest.json   what the project is: files, their sha256, the hash
    syft_flwr-manifest.sig    the researcher's Ed25519 identity-key signature
    app/<path>                the files themselves

The *project hash* is the sha256 over the sorted ``(path, sha256, size)`` list,
so it names exactly the code, independent of tar or gzip details; the data owner
approves that hash and every request names it (see ``docs/review.md``).

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

import hashlib
import io
import json
import os
import stat
import tarfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from syft_flwr._email import fold_domain
from syft_flwr._printable import printable
from syft_flwr.errors import (
    ConfigError,
    EnvelopeError,
    ProjectSignatureError,
    UnsafeArchiveError,
)
from syft_flwr.review.rules import (
    EXCLUDED_DIRS,
    SOURCE_SUFFIXES,
    files_problem,
    name_problem,
    skip_reason,
)
from syft_flwr.wire import strict_json

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

FORMAT = "syft_flwr.project/1"
MANIFEST_NAME = "syft_flwr-manifest.json"
SIGNATURE_NAME = "syft_flwr-manifest.sig"
FILES_PREFIX = "app/"
#: Domain separation: a manifest signature can never pass for a message signature.
_SIGNING_PREFIX = b"syft_flwr project manifest v1\x00"

#: Largest total size of the files of a project, in bytes (sources, not data).
DEFAULT_MAX_PACKAGE_BYTES = 10 * 1024 * 1024
#: Most files a project may hold.
DEFAULT_MAX_FILES = 500
#: Largest manifest, in bytes.
_MAX_MANIFEST_BYTES = 1024 * 1024


@dataclass(frozen=True)
class FileEntry:
    """One file of a project: relative POSIX path, sha256 (hex) and size."""

    path: str
    sha256: str
    size: int


@dataclass(frozen=True)
class Manifest:
    """What a researcher signs: the project's files and its hash.

    Attributes
    ----------
    name : str
        The app folder's name (for people; the hash is what counts).
    researcher : str
        Email of the signer.
    project_hash : str
        sha256 (hex) over the file list, see :func:`project_hash_of`.
    files : tuple of FileEntry
        Sorted by path.
    created : float
        POSIX time of packing.
    """

    name: str
    researcher: str
    project_hash: str
    files: tuple[FileEntry, ...]
    created: float

    def to_bytes(self) -> bytes:
        """Canonical JSON (sorted keys, no spaces): the bytes that are signed."""
        doc = {
            "format": FORMAT,
            "name": self.name,
            "researcher": self.researcher,
            "project_hash": self.project_hash,
            "created": self.created,
            "files": [
                {"path": f.path, "sha256": f.sha256, "size": f.size} for f in self.files
            ],
        }
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, data: bytes, *, max_files: int = DEFAULT_MAX_FILES) -> Manifest:
        """Parse an untrusted manifest (strict JSON, every field checked).

        Raises
        ------
        UnsafeArchiveError
            Malformed, unknown format, bad paths, or a hash that does not match.
        """
        try:
            doc = strict_json.loads(data, max_bytes=_MAX_MANIFEST_BYTES)
        except EnvelopeError as exc:
            raise UnsafeArchiveError(f"project manifest is not valid: {exc}") from exc
        try:
            if not isinstance(doc, dict) or doc.get("format") != FORMAT:
                raise ValueError(f"unknown manifest format (this reads {FORMAT!r})")
            raw_files = doc["files"]
            if not isinstance(raw_files, list) or len(raw_files) > max_files:
                raise ValueError(f"files must be a list of at most {max_files}")
            files = tuple(
                FileEntry(
                    check_member_path(str(f["path"])),
                    _hex64(f["sha256"]),
                    _size(f["size"]),
                )
                for f in raw_files
            )
            m = cls(
                name=printable(str(doc["name"]))[:200],
                researcher=fold_domain(str(doc["researcher"])),
                project_hash=_hex64(doc["project_hash"]),
                files=files,
                created=float(doc["created"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise UnsafeArchiveError(f"project manifest is not valid: {exc}") from exc
        if [f.path for f in files] != sorted({f.path for f in files}):
            raise UnsafeArchiveError("manifest files are not sorted and unique")
        if project_hash_of(files) != m.project_hash:
            raise UnsafeArchiveError("manifest project hash does not match its files")
        return m


@dataclass(frozen=True)
class Package:
    """A verified-shape package: manifest, its raw bytes and signature, the files."""

    manifest: Manifest
    manifest_bytes: bytes
    signature: bytes
    files: Mapping[str, bytes] = field(repr=False)

    @property
    def project_hash(self) -> str:
        return self.manifest.project_hash

    def verify(self, researcher_key: Ed25519PublicKey) -> None:
        """Check the manifest signature against the researcher's (pinned) key.

        Raises
        ------
        ProjectSignatureError
            Signed by another key, or altered after signing.
        """
        verify_manifest(self.manifest_bytes, self.signature, researcher_key)


def _hex64(value: Any) -> str:
    text = str(value)
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        raise ValueError(f"not a sha256 hex digest: {text[:80]!r}")
    return text


def _size(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"not a size: {value!r}")
    return value


def check_member_path(path: str) -> str:
    """Return ``path`` if it is a clean relative POSIX path, else raise.

    Raises
    ------
    UnsafeArchiveError
        Absolute, ``..`` or ``.`` segments, empty segments, backslashes, control
        or format characters (escapes, C1 controls, bidi overrides).
    """
    bad = (
        not path
        or path.startswith("/")
        or "\\" in path
        or name_problem(path) is not None  # NUL, escapes, U+009B, U+202E
        or (len(path) > 1 and path[1] == ":")  # a Windows drive
        or len(path) > 1024
    )
    if bad or any(part in ("", ".", "..") for part in path.split("/")):
        raise UnsafeArchiveError(f"unsafe path in project archive: {path!r}")
    return path


def project_hash_of(files: tuple[FileEntry, ...] | list[FileEntry]) -> str:
    """sha256 (hex) over the sorted ``path, sha256, size`` lines of ``files``."""
    h = hashlib.sha256(b"syft_flwr project files v1\n")
    for f in sorted(files, key=lambda e: e.path):
        h.update(f"{f.path}\x00{f.sha256}\x00{f.size}\n".encode())
    return h.hexdigest()


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
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        rel_dir = Path(dirpath).relative_to(root).parts
        # Prune here so a huge .venv or data folder is never even listed.
        dirnames[:] = sorted(
            d
            for d in dirnames
            if _included((*rel_dir, d, "x.py"))
            and not os.path.islink(Path(dirpath) / d)
        )
        for name in sorted(filenames):
            parts = (*rel_dir, name)
            if not _included(parts):
                continue
            full = Path(dirpath) / name
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


def _entries(files: Mapping[str, bytes]) -> tuple[FileEntry, ...]:
    return tuple(
        FileEntry(p, hashlib.sha256(files[p]).hexdigest(), len(files[p]))
        for p in sorted(files)
    )


def hash_tree(app_dir: str | Path, **limits: int) -> str:
    """The project hash of the files in ``app_dir`` as they are now.

    The data owner re-hashes the folder it serves before each request, so a file
    changed after approval is noticed; the researcher computes the hash its
    requests name the same way.
    """
    return project_hash_of(_entries(collect_files(app_dir, **limits)))


def _signed_bytes(manifest_bytes: bytes) -> bytes:
    return _SIGNING_PREFIX + manifest_bytes


def verify_manifest(
    manifest_bytes: bytes, signature: bytes, key: Ed25519PublicKey
) -> None:
    """Raise :class:`ProjectSignatureError` unless ``key`` signed the manifest."""
    try:
        key.verify(signature, _signed_bytes(manifest_bytes))
    except InvalidSignature:
        raise ProjectSignatureError(
            "the project manifest is not signed by the researcher's pinned identity "
            "key: it was altered, or someone else signed it"
        ) from None


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

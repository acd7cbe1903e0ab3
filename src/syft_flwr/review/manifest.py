"""What a researcher signs: a project's manifest, its files' hash, its signature.

The *project hash* is the sha256 over the sorted ``(path, sha256, size)`` list,
so it names exactly the code, independent of tar or gzip details; the data owner
approves that hash and every request names it (see ``docs/review.md``). The
manifest is canonical JSON signed with the researcher's Ed25519 identity key
under a domain-separation prefix; :meth:`Manifest.from_bytes` is the strict
parser for a manifest received. Packing is :mod:`syft_flwr.review.package`,
unpacking :mod:`syft_flwr.review.unpack`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from syft_flwr._email import fold_domain
from syft_flwr._printable import printable
from syft_flwr.errors import EnvelopeError, ProjectSignatureError, UnsafeArchiveError
from syft_flwr.review.rules import name_problem
from syft_flwr.wire import strict_json

__all__ = [
    "DEFAULT_MAX_FILES",
    "DEFAULT_MAX_PACKAGE_BYTES",
    "FILES_PREFIX",
    "FORMAT",
    "MANIFEST_NAME",
    "SIGNATURE_NAME",
    "FileEntry",
    "Manifest",
    "Package",
    "check_member_path",
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


def _entries(files: Mapping[str, bytes]) -> tuple[FileEntry, ...]:
    return tuple(
        FileEntry(p, hashlib.sha256(files[p]).hexdigest(), len(files[p]))
        for p in sorted(files)
    )


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

"""Attachments: a large part of a message stored as its own chunk files.

A large array (see :mod:`syft_flwr.wire.frames`) travels as a *blob*: its bytes cut
into chunks of at most ``chunk_payload`` bytes, each sealed on its own with
AES-256-GCM under a fresh random *content key* (plaintext when encryption is
off), each with its SHA-256 as stored. The message that uses the blob carries,
inside its own sealed and signed body, a :class:`BlobRef`: the blob's id, size,
chunk size, the SHA-256 of every stored chunk, the content key, and where the
chunks are. So:

* the same blob can serve several messages (one push of the same model to N
  data owners writes it once; each request carries the key sealed for its own
  recipient by the message's X3DH seal);
* a chunk dropped, reordered, duplicated, truncated or taken from another blob
  fails: the associated data of chunk ``i`` binds the blob id, its size, the
  chunk count and ``i``; the digests come from the sender's signed message, so
  even another recipient holding the content key cannot swap a chunk;
* a party that was not addressed has the ciphertext at most, never the key.

Chunks are read straight into the one buffer that becomes ``Array.data`` (no
join buffer, no second copy).

Size: one module over ~400 lines because the blob reference, its chunk plan, the
associated data of each chunk and the reading that checks them are one format
whose checks must agree; splitting them would put the writer and the checker of
the same bytes in different files.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import os
import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from syft_flwr._fs import fsync_dir
from syft_flwr.errors import (
    DecryptionError,
    EncryptionError,
    EnvelopeError,
    IncompleteMessage,
    SyftFlwrError,
)
from syft_flwr.wire import strict_json
from syft_flwr.wire.envelope import ID_PATTERN

__all__ = [
    "ATTACHED_MAGIC",
    "BLOB_ALG",
    "BlobRef",
    "TAG_SIZE",
    "chunk_file_name",
    "chunk_plan",
    "fsync_local_chunks",
    "pack_attached",
    "read_blob",
    "read_local_blob",
    "refs_from_json",
    "refs_to_json",
    "unpack_attached",
    "write_blob",
]

#: Scheme of a sealed blob chunk (named in every encrypted :class:`BlobRef`).
BLOB_ALG = "aes256gcm-blob-v1"
TAG_SIZE = 16
KEY_SIZE = 32
_AAD_DOMAIN = b"syft_flwr/blob/" + BLOB_ALG.encode() + b"\x00"
_SHA256_HEX = frozenset("0123456789abcdef")
_FIELDS = frozenset({"id", "size", "chunk", "sha256", "key", "alg", "shared"})
#: 2 GiB in chunks of at least 64 KiB (MIN_CHUNK_SIZE).
MAX_CHUNKS = 32_768

#: ``put(index, stored_bytes)``: store chunk ``index``.
PutChunk = Callable[[int, bytes], None]
#: ``read(index, stored_size)``: the stored chunk ``index``, at most that many bytes.
ReadChunk = Callable[[int, int], bytes]


@dataclass(frozen=True)
class BlobRef:
    """What a message says about one of its attachments.

    Attributes
    ----------
    id : str
        The blob's id (bound into every chunk's associated data).
    size : int
        Plaintext bytes.
    chunk : int
        Plaintext bytes per chunk (the last one may be shorter).
    sha256 : tuple of str
        Hex SHA-256 of each chunk as stored; empty for an encrypted attachment
        only its sender and its one recipient can open (the GCM tag then
        suffices, see :func:`write_blob`).
    key : bytes or None
        The 32-byte content key; ``None`` when stored in plaintext.
    shared : str or None
        ``None``: the chunks sit next to the message. Else the name of the
        sender's shared blob folder that holds them.
    """

    id: str
    size: int
    chunk: int
    sha256: tuple[str, ...]
    key: bytes | None = None
    shared: str | None = None

    @property
    def count(self) -> int:
        return chunk_count(self.size, self.chunk)

    @property
    def overhead(self) -> int:
        return TAG_SIZE if self.key is not None else 0

    def stored_size(self, index: int) -> int:
        """Bytes of chunk ``index`` as stored."""
        start = index * self.chunk
        return min(self.chunk, self.size - start) + self.overhead

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"id": self.id, "size": self.size, "chunk": self.chunk}
        if self.sha256:
            doc["sha256"] = list(self.sha256)
        if self.key is not None:
            doc["alg"] = BLOB_ALG
            doc["key"] = base64.b64encode(self.key).decode("ascii")
        if self.shared is not None:
            doc["shared"] = self.shared
        return doc

    @classmethod
    def from_json(cls, doc: object, *, max_size: int) -> BlobRef:
        """Check an untrusted reference strictly and return it.

        Raises
        ------
        EnvelopeError
            Unknown fields, a bad id, sizes that disagree, a bad digest or key.
        """
        if not isinstance(doc, dict) or set(doc) - _FIELDS:
            raise EnvelopeError("an attachment reference has unknown fields")
        blob_id, shared = doc.get("id"), doc.get("shared")
        if not isinstance(blob_id, str) or not ID_PATTERN.match(blob_id):
            raise EnvelopeError(f"invalid attachment id {str(blob_id)[:80]!r}")
        if shared is not None and (
            not isinstance(shared, str) or not ID_PATTERN.match(shared)
        ):
            raise EnvelopeError(f"invalid shared folder {str(shared)[:80]!r}")
        size, chunk = doc.get("size"), doc.get("chunk")
        for name, value in (("size", size), ("chunk", chunk)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise EnvelopeError(f"attachment {name} must be a non-negative int")
        assert isinstance(size, int) and isinstance(chunk, int)
        if size > max_size:
            raise EnvelopeError(f"attachment of {size} bytes exceeds {max_size}")
        digests = doc.get("sha256", [])
        if not isinstance(digests, list) or chunk < 1:
            raise EnvelopeError("attachment lists no chunks")
        if chunk_count(size, chunk) > MAX_CHUNKS:
            raise EnvelopeError(f"attachment of {size} bytes has too many chunks")
        if digests and len(digests) != chunk_count(size, chunk):
            raise EnvelopeError(
                f"attachment of {size} bytes in chunks of {chunk} lists "
                f"{len(digests)} digests"
            )
        for d in digests:
            if not isinstance(d, str) or len(d) != 64 or set(d) - _SHA256_HEX:
                raise EnvelopeError("an attachment digest is not 64 hex digits")
        key = None
        if "key" in doc or "alg" in doc:
            if doc.get("alg") != BLOB_ALG:
                raise EnvelopeError(
                    f"unknown attachment scheme {str(doc.get('alg'))[:40]!r}; "
                    "upgrade syft_flwr"
                )
            try:
                key = base64.b64decode(str(doc.get("key")), validate=True)
            except (binascii.Error, ValueError) as exc:
                raise EnvelopeError("attachment key is not base64") from exc
            if len(key) != KEY_SIZE:
                raise EnvelopeError("attachment key is not 32 bytes")
        if not digests and (key is None or shared is not None):
            # Plaintext, or one content key held by several recipients: only the
            # digests the sender signed tell its chunks from anybody else's.
            raise EnvelopeError("attachment lists no chunk digests")
        return cls(blob_id, size, chunk, tuple(digests), key, shared)


def chunk_file_name(stem: str, index: int) -> str:
    """``<stem>.<nnnnnn>.chunk``: chunk ``index`` of a blob stored under ``stem``."""
    return f"{stem}.{index:06d}.chunk"


def chunk_count(size: int, chunk: int) -> int:
    """Chunks of a ``size``-byte blob in chunks of ``chunk`` bytes (at least 1)."""
    if chunk < 1:
        return 1
    return max(1, -(-size // chunk))


def chunk_plan(size: int, chunk: int) -> Iterator[tuple[int, int, int]]:
    """``(index, start, end)`` of each plaintext chunk."""
    for i in range(chunk_count(size, chunk)):
        yield i, i * chunk, min(size, (i + 1) * chunk)


def _aad(blob_id: str, size: int, count: int, index: int) -> bytes:
    raw = blob_id.encode("utf-8")
    return b"".join(
        (
            _AAD_DOMAIN,
            struct.pack(">I", len(raw)),
            raw,
            struct.pack(">QQQ", size, count, index),
        )
    )


def _nonce(index: int) -> bytes:
    # One key per blob, so the chunk index is a unique nonce.
    return index.to_bytes(12, "big")


def write_blob(
    data: bytes | memoryview,
    put: PutChunk,
    *,
    blob_id: str,
    chunk_payload: int,
    encrypt: bool,
    shared: str | None = None,
    key: bytes | None = None,
    digests: bool = True,
) -> BlobRef:
    """Seal and store ``data`` chunk by chunk; return its reference.

    Memory stays at one chunk: each is sealed, hashed, stored and dropped.

    Parameters
    ----------
    data
        The plaintext (not copied).
    put
        Stores chunk ``i``'s bytes.
    blob_id
        Bound into every chunk.
    chunk_payload
        Plaintext bytes per chunk (a stored chunk is 16 bytes more when sealed).
    encrypt
        Seal under a fresh content key (or ``key``).
    shared
        Recorded in the reference: the shared folder the chunks go to.
    key
        Use this content key instead of a fresh one (tests).
    digests
        Record each stored chunk's SHA-256. Needed for plaintext and for shared
        blobs (several parties hold the key); an encrypted blob for one
        recipient may leave them out, its GCM tags already tell a chunk that is
        not the sender's (saves a hashing pass on both sides).
    """
    if chunk_payload < 1:
        raise EncryptionError("chunk payload must be at least 1 byte")
    view = memoryview(data).cast("B")
    size = len(view)
    count = chunk_count(size, chunk_payload)
    key, aead = _content_cipher(encrypt, key)
    hashes = []
    digests = digests or not encrypt or shared is not None
    for i, start, end in chunk_plan(size, chunk_payload):
        piece = view[start:end]
        stored = (
            aead.encrypt(_nonce(i), piece, _aad(blob_id, size, count, i))
            if aead is not None
            else piece
        )
        if digests:
            hashes.append(hashlib.sha256(stored).hexdigest())
        put(i, stored)  # type: ignore[arg-type]
    return BlobRef(blob_id, size, chunk_payload, tuple(hashes), key, shared)


def _content_cipher(
    encrypt: bool, key: bytes | None
) -> tuple[bytes | None, AESGCM | None]:
    """The blob's content key (``key``, else a fresh one) and its cipher; none in clear."""
    if not encrypt:
        return None, None
    key = key if key is not None else os.urandom(KEY_SIZE)
    return key, AESGCM(key)


def read_blob(ref: BlobRef, read: ReadChunk) -> bytes:
    """Read, check and open a blob into one ``bytes`` object.

    Chunks are written straight into the buffer that is returned (``BytesIO``
    hands over its buffer without a copy), so peak memory is the blob plus one
    chunk.

    Raises
    ------
    IncompleteMessage
        A chunk is missing, or not (yet) the size and digest the reference
        gives: a sync still under way. Try again later.
    DecryptionError
        A chunk has the right digest but does not open: tampered by whoever
        wrote the reference, or sealed for another blob.
    """
    # TAG_SIZE bytes of slack: GCM's update_into wants room for a block more
    # than it writes; cut off again before the buffer is handed over.
    slack = TAG_SIZE if ref.key is not None else 0
    # The last chunk first: until it is there (chunks are written in order)
    # nothing is allocated, so an announced size costs memory only once the
    # sender has really stored that much.
    last = ref.count - 1
    tail = _read_checked(ref, read, last)
    # bytes(n) comes from calloc: fresh pages the kernel zeroes when they are
    # first written (by the decryption below), with no memset pass over them
    # first. BytesIO takes it over as its buffer (the only reference: no copy).
    buf = io.BytesIO(bytes(ref.size + slack))
    with buf.getbuffer() as out:
        for i, start, end in chunk_plan(ref.size, ref.chunk):
            stored = tail if i == last else _read_checked(ref, read, i)
            if ref.key is None:
                out[start:end] = stored
            else:
                _open_into(ref, i, stored, out[start : end + slack])
    buf.truncate(ref.size)
    return buf.getvalue()


def read_local_blob(folder: Path, ref: BlobRef, stem: str) -> bytes:
    """Read a blob whose chunks are private files ``folder/<stem>.<nnnnnn>.chunk``.

    The chunks a party kept of a message (the researcher's resume journal, the
    data owner's stored replies) are checked and opened as on receipt.

    Raises
    ------
    ValueError
        A bad name, or a chunk that is missing, short, altered or does not open.
    """
    if "/" in stem or stem.startswith("."):
        raise ValueError(f"bad attachment name {stem!r}")

    def read(i: int, limit: int) -> bytes:
        fd = os.open(folder / chunk_file_name(stem, i), os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as fh:
            return fh.read(limit)

    try:
        return read_blob(ref, read)
    except SyftFlwrError as exc:
        raise ValueError(f"kept attachment {stem}: {exc}") from exc


def fsync_local_chunks(folder: Path, kept: Sequence[tuple[BlobRef, str]]) -> None:
    """fsync the chunk files of ``kept`` ``(ref, stem)`` blobs and ``folder`` itself.

    For chunks moved or linked into ``folder`` (a rename or link is durable only
    once the folder is synced).
    """
    for ref, stem in kept:
        for i in range(ref.count):
            fd = os.open(folder / chunk_file_name(stem, i), os.O_RDONLY | os.O_NOFOLLOW)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    fsync_dir(folder)


def _read_checked(ref: BlobRef, read: ReadChunk, i: int) -> bytes:
    """Stored chunk ``i``, its size and digest checked ("not ready yet" if not)."""
    want = ref.stored_size(i)
    try:
        stored = read(i, want)
    except OSError as exc:
        raise IncompleteMessage(
            f"chunk {i} of attachment {ref.id} is not available yet"
        ) from exc
    if len(stored) != want or (
        ref.sha256 and hashlib.sha256(stored).hexdigest() != ref.sha256[i]
    ):
        raise IncompleteMessage(
            f"chunk {i} of attachment {ref.id} does not match its digest "
            f"yet ({len(stored)} of {want} bytes)"
        )
    return stored


def _open_into(ref: BlobRef, index: int, stored: bytes, out: memoryview) -> None:
    """Decrypt chunk ``index`` straight into ``out`` (no plaintext copy).

    The plaintext lands in ``out`` before the tag is checked; on a bad tag the
    caller's buffer is thrown away with the error.
    """
    assert ref.key is not None
    view = memoryview(stored)
    body, tag = view[:-TAG_SIZE], bytes(view[-TAG_SIZE:])
    if len(body) != len(out) - TAG_SIZE:
        raise DecryptionError(
            f"chunk {index} of attachment {ref.id} has {len(body)} bytes, "
            f"expected {len(out) - TAG_SIZE}"
        )
    dec = Cipher(algorithms.AES(ref.key), modes.GCM(_nonce(index), tag)).decryptor()
    dec.authenticate_additional_data(_aad(ref.id, ref.size, ref.count, index))
    dec.update_into(body, out)
    try:
        dec.finalize()
    except InvalidTag:
        raise DecryptionError(
            f"chunk {index} of {ref.count} of attachment {ref.id} failed "
            "authentication (tampered, reordered or from another blob)"
        ) from None


def refs_to_json(refs: list[BlobRef]) -> list[dict[str, Any]]:
    return [r.to_json() for r in refs]


def refs_from_json(doc: object, *, max_total: int) -> list[BlobRef]:
    """Strictly parse a list of references whose sizes add up to at most ``max_total``."""
    if not isinstance(doc, list):
        raise EnvelopeError("attachments are not a list")
    refs = [BlobRef.from_json(d, max_size=max_total) for d in doc]
    if sum(r.size for r in refs) > max_total:
        raise EnvelopeError(f"attachments exceed {max_total} bytes in total")
    return refs


#: Start of a sealed body that lists attachments (envelope v2). 0x00 first: no
#: protobuf and no framed body (``\x00SFM``) starts like this.
ATTACHED_MAGIC = b"\x00SFA\x01"
_ATTACHED_LEN = struct.Struct(">I")
#: The list of references is small: ~70 bytes per 4 MiB chunk plus ~150 per blob.
MAX_REFS_BYTES = 8 * 1024 * 1024


def pack_attached(refs: list[BlobRef], inner: bytes | memoryview) -> bytes:
    """The sealed body of a message with attachments: their references, then ``inner``."""
    doc = json.dumps(refs_to_json(refs), separators=(",", ":")).encode("utf-8")
    return b"".join((ATTACHED_MAGIC, _ATTACHED_LEN.pack(len(doc)), doc, inner))


def unpack_attached(
    body: bytes | memoryview, *, max_total: int
) -> tuple[list[BlobRef], memoryview]:
    """Split a sealed body into its attachment references and the inner body.

    A body without the attachment header comes back whole with no references.

    Raises
    ------
    EnvelopeError
        The header is there but the references break the rules.
    """
    view = memoryview(body).cast("B")
    if bytes(view[: len(ATTACHED_MAGIC)]) != ATTACHED_MAGIC:
        return [], view
    start = len(ATTACHED_MAGIC) + _ATTACHED_LEN.size
    if len(view) < start:
        raise EnvelopeError("attachment header is truncated")
    (n,) = _ATTACHED_LEN.unpack_from(view, len(ATTACHED_MAGIC))
    if n > MAX_REFS_BYTES or start + n > len(view):
        raise EnvelopeError(f"attachment list of {n} bytes is too long or truncated")
    try:
        doc = strict_json.loads(
            bytes(view[start : start + n]), max_bytes=MAX_REFS_BYTES
        )
    except IncompleteMessage as exc:  # the body is complete: this is malformed
        raise EnvelopeError(f"attachment list is not valid JSON: {exc}") from exc
    return refs_from_json(doc, max_total=max_total), view[start + n :]

"""The on-disk envelope (format version 3): bytes <-> a head file plus chunk files.

The full specification is ``docs/envelope.md``. In short:

* The *head* is ``<id>.request`` / ``<id>.response``: JSON with syft-rpc's fields
  (``id, sender, url, method, headers, body, created, expires`` and
  ``status_code`` on responses), so other SyftBox tools can read it, plus one
  extra object ``"syft_flwr"`` describing how the body is stored::

      "syft_flwr": {"v": 3, "kind": "request", "size": 1234,
                    "storage": "inline" | "chunks",
                    "chunks": [{"size": 4194304, "sha256": "..."}, ...],
                    "encryption": null | {"alg": "...", "ek": "<base64>"}}

* Small bodies (<= ``inline_limit``) travel base64'd in ``body``, as syft-rpc
  does. Larger bodies go to raw binary chunk files ``<id>.<kind>.<nnnnnn>.chunk``
  next to the head, each at most ``chunk_size`` bytes and each with its sha256
  in the head. Chunks are written first and the head last, so the head's
  appearance commits the message.
* Encryption (see ``syft_flwr.crypto``) is a :class:`BodyCodec` applied per chunk;
  the head then carries the algorithm and the ephemeral public key. From
  version 3 every head field but the stored body, the chunk list and the
  encryption header (:func:`signed_head`) is bound into the seal too, so a
  status, a creation time or a header cannot be changed on a sealed message.
* A reader treats unparsable JSON, a missing chunk or a chunk whose size or
  hash does not match as :class:`~syft_flwr.errors.IncompleteMessage`: "not
  ready yet, try again", never "bad message". Only a head that parses but breaks
  the format raises :class:`~syft_flwr.errors.EnvelopeError`.

The head's fields and its strict reader live in :mod:`syft_flwr.wire.head`; this
module writes messages (:func:`encode_message`), opens their bodies
(:func:`decode_body`) and keeps every name it always had.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from syft_flwr.errors import ChunkIntegrityError, EnvelopeError, IncompleteMessage

# The head and its reader, under the names they always had here. The encoder
# below reads ENVELOPE_VERSION and signed_head from this module's namespace.
from syft_flwr.wire.head import ENVELOPE_VERSION as ENVELOPE_VERSION
from syft_flwr.wire.head import ID_PATTERN as ID_PATTERN
from syft_flwr.wire.head import MAX_HEAD_BYTES as MAX_HEAD_BYTES
from syft_flwr.wire.head import MAX_HEADERS as MAX_HEADERS
from syft_flwr.wire.head import MAX_PART_OVERHEAD as MAX_PART_OVERHEAD
from syft_flwr.wire.head import MAX_TEXT as MAX_TEXT
from syft_flwr.wire.head import SIGNED_HEAD_VERSION as SIGNED_HEAD_VERSION
from syft_flwr.wire.head import ChunkInfo as ChunkInfo
from syft_flwr.wire.head import Head as Head
from syft_flwr.wire.head import Kind as Kind
from syft_flwr.wire.head import check_id as check_id
from syft_flwr.wire.head import chunk_name as chunk_name
from syft_flwr.wire.head import format_time as format_time
from syft_flwr.wire.head import head_name as head_name
from syft_flwr.wire.head import parse_head as parse_head
from syft_flwr.wire.head import parse_time as parse_time
from syft_flwr.wire.head import signed_head as signed_head

__all__ = [
    "ENVELOPE_VERSION",
    "BodyCodec",
    "ChunkInfo",
    "Head",
    "ID_PATTERN",
    "MAX_HEAD_BYTES",
    "PlainCodec",
    "SIGNED_HEAD_VERSION",
    "SealContext",
    "check_id",
    "chunk_name",
    "decode_body",
    "encode_message",
    "format_time",
    "head_name",
    "parse_head",
    "parse_time",
    "signed_head",
]

#: Bytes kept free in a head for everything but the inline body.
HEAD_RESERVE = 2048
CONTENT_TYPE = "application/vnd.flower.message+protobuf"


@dataclass(frozen=True)
class SealContext:
    """Everything a body is bound to; used as AEAD associated data when encrypting.

    ``head`` is :func:`signed_head` of the message's head (version 3), or empty
    for older versions, whose other head fields were not sealed.
    """

    message_id: str
    sender: str
    recipient: str
    app: str
    endpoint: str
    kind: Kind
    expires: str
    head: bytes = b""


class BodyCodec(ABC):
    """Turns a body into the byte parts stored on disk, and back (bytes -> bytes)."""

    #: Value of ``syft_flwr.encryption.alg``, or ``None`` for plaintext.
    algorithm: str | None = None
    #: Bytes a part grows by (e.g. the AEAD tag); chunks are planned around it.
    overhead: int = 0

    @abstractmethod
    def seal(
        self, ctx: SealContext, parts: Sequence[memoryview]
    ) -> tuple[dict[str, Any] | None, list[bytes]]:
        """Return ``(encryption header or None, stored parts)`` for plaintext parts."""

    @abstractmethod
    def open(
        self,
        ctx: SealContext,
        header: Mapping[str, Any] | None,
        parts: Sequence[bytes],
    ) -> bytes:
        """Return the plaintext body from stored parts (raises on tampering)."""


class PlainCodec(BodyCodec):
    """No encryption: stored parts are the plaintext slices."""

    def seal(
        self, ctx: SealContext, parts: Sequence[memoryview]
    ) -> tuple[dict[str, Any] | None, list[bytes]]:
        # Slices of the caller's buffer, not copies: a 100 MB body stays 100 MB.
        return None, list(parts)  # type: ignore[arg-type]

    def open(
        self,
        ctx: SealContext,
        header: Mapping[str, Any] | None,
        parts: Sequence[bytes],
    ) -> bytes:
        return b"".join(parts)


def _plan_parts(
    body: memoryview, inline_limit: int, chunk_payload: int
) -> list[memoryview]:
    if len(body) <= inline_limit:
        return [body]
    n = max(1, math.ceil(len(body) / chunk_payload))
    return [body[i * chunk_payload : (i + 1) * chunk_payload] for i in range(n)]


def _head_doc(
    ctx: SealContext,
    url: str,
    created: str,
    size: int,
    inline: bool,
    status_code: int | None,
    headers: Mapping[str, str] | None,
) -> dict[str, Any]:
    """The head without what sealing produces (stored body, chunks, encryption)."""
    hdrs = {"content-type": CONTENT_TYPE, "x-syft-flwr-envelope": str(ENVELOPE_VERSION)}
    if headers:
        hdrs.update(headers)
    doc: dict[str, Any] = {
        "id": ctx.message_id,
        "sender": ctx.sender,
        "url": url,
        "headers": hdrs,
        "body": "",
        "created": created,
        "expires": ctx.expires,
    }
    if ctx.kind == "request":
        doc["method"] = "POST"
    else:
        doc["status_code"] = 200 if status_code is None else int(status_code)
    doc["syft_flwr"] = {
        "v": ENVELOPE_VERSION,
        "kind": ctx.kind,
        "size": size,
        "storage": "inline" if inline else "chunks",
        "chunks": [],
        "encryption": None,
    }
    return doc


def encode_message(
    *,
    ctx: SealContext,
    url: str,
    body: bytes | memoryview,
    created: str,
    codec: BodyCodec,
    chunk_size: int,
    inline_limit: int,
    status_code: int | None = None,
    headers: Mapping[str, str] | None = None,
) -> tuple[bytes, list[tuple[str, bytes]]]:
    """Encode a body into ``(head bytes, [(chunk file name, chunk bytes), ...])``.

    Write the chunks first and the head last (the head commits the message).
    Every chunk is at most ``chunk_size`` bytes; bodies up to ``inline_limit``
    travel inline in the head.
    """
    view = memoryview(body).cast("B")
    # The head carries the inline body base64'd (4/3) plus some JSON; keep it
    # under chunk_size too, so no file ever exceeds the limit.
    room = (chunk_size - HEAD_RESERVE) * 3 // 4 - codec.overhead
    inline_limit = min(inline_limit, max(0, room))
    parts = _plan_parts(view, inline_limit, chunk_size - codec.overhead)
    inline = len(view) <= inline_limit
    doc = _head_doc(ctx, url, created, len(view), inline, status_code, headers)
    # Everything the reader acts on is sealed with the body (version 3), so
    # nobody can turn a sealed 200 into an error, or back-date it.
    ctx = replace(ctx, head=signed_head(doc))
    enc_header, stored = codec.seal(ctx, parts)
    if inline:
        doc["body"] = base64.b64encode(stored[0]).decode("ascii")
    else:
        doc["syft_flwr"]["chunks"] = [
            {"size": len(p), "sha256": hashlib.sha256(p).hexdigest()} for p in stored
        ]
    doc["syft_flwr"]["encryption"] = enc_header
    head = json.dumps(doc, separators=(",", ":")).encode("utf-8")
    if len(head) > chunk_size:
        # Only with absurdly small chunks for the body size (the manifest grows
        # ~90 bytes per chunk): refuse rather than write a file over the limit.
        raise EnvelopeError(
            f"a {len(view)}-byte body needs {len(stored)} chunks of {chunk_size} "
            f"bytes, and their list ({len(head)} bytes) exceeds the chunk size; "
            "raise SYFT_FLWR_CHUNK_SIZE"
        )
    chunks = (
        []
        if inline
        else [
            (chunk_name(ctx.message_id, ctx.kind, i), p) for i, p in enumerate(stored)
        ]
    )
    return head, chunks


def decode_body(
    head: Head,
    ctx: SealContext,
    codec: BodyCodec,
    read_chunk: Callable[[str], bytes],
) -> bytes:
    """Return the plaintext body of ``head``, reading chunk files with ``read_chunk``.

    ``read_chunk(name)`` must raise ``IncompleteMessage`` (or any ``OSError``)
    when a chunk is not there yet.

    Raises
    ------
    IncompleteMessage
        A chunk is missing or does not match its size/hash yet.
    ChunkIntegrityError
        The decoded body does not have the announced size.
    """
    if head.storage == "inline":
        parts = [head.inline_body]
    else:
        parts = []
        for i, info in enumerate(head.chunks):
            name = chunk_name(head.id, head.kind, i)
            try:
                data = read_chunk(name)
            except OSError as exc:
                raise IncompleteMessage(f"chunk {name} not available yet") from exc
            if (
                len(data) != info.size
                or hashlib.sha256(data).hexdigest() != info.sha256
            ):
                # A sync client may still be writing it in place: not ready yet.
                raise IncompleteMessage(
                    f"chunk {name} does not match its manifest yet "
                    f"({len(data)} of {info.size} bytes)"
                )
            parts.append(data)
    body = codec.open(ctx, head.encryption, parts)
    if head.version >= 1 and len(body) != head.size:
        raise ChunkIntegrityError(
            f"body of {head.id} is {len(body)} bytes, head announced {head.size}"
        )
    return body

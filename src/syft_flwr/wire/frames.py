"""A message body with large parts kept apart: the framed body format.

A Flower message carrying a 95 MB model is, in protobuf, one 95 MB blob that
protobuf copies several times on the way in and out. The framed body keeps the
large buffers (the ``data`` of big ``Array`` objects) out of the protobuf: a
small *prefix* holds a table of the parts and the protobuf of everything else,
and the parts follow as raw bytes::

    b"\\x00SFM" | version (u8, 1 or 2) | table length (u32) | skeleton length (u64)
    | table (JSON) | skeleton (protobuf)
    | part 0 | part 1 | ...                    <- only when the parts are inline

The table is ``[[record, key, size], ...]`` in version 1. Version 2 (written
only when the sender names the content) is ``{"parts": [[record, key, size],
...], "content": "<64 hex>"}``: ``content`` is the Merkle hash Flower computes
for the message's content (``RecordDict.object_id``), so a data owner can
recognise a re-sent request without hashing the arrays again.

The first byte is 0x00, which no protobuf message starts with (field number 0
does not exist), so a reader tells a framed body from a plain protobuf one by
its first byte. A body is either *inline* (the parts follow the prefix: the
self-contained form stored in ledgers and checkpoints) or *detached* (only the
prefix; the parts travel as separate attachments, see ``syft_flwr.wire.blobs``).

This module knows nothing of Flower (``syft_flwr.serde`` fills the table and the
skeleton) and nothing of files (``syft_flwr.wire.mailbox`` moves the parts).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from syft_flwr.errors import SerializationError
from syft_flwr.wire import strict_json

__all__ = [
    "FramedBody",
    "content_id",
    "inline",
    "pieces",
    "total_size",
    "Frame",
    "MAGIC",
    "PartSlot",
    "detach",
    "is_framed",
    "pack",
    "parse_frame",
]

MAGIC = b"\x00SFM"
VERSION = 1
#: The table is an object that may name the content (see the module docs).
VERSION_NAMED = 2
_HEX = frozenset("0123456789abcdef")
_HEADER = struct.Struct(">4sBIQ")  # magic, version, table length, skeleton length
#: A table lists (record, key, size) per part; a few KB for real models.
MAX_TABLE_BYTES = 4 * 1024 * 1024
MAX_PARTS = 65_536
MAX_NAME = 1024


@dataclass(frozen=True)
class PartSlot:
    """Where a part goes back: ``record``'s array ``key`` gets ``size`` bytes."""

    record: str
    key: str
    size: int


@dataclass(frozen=True)
class Frame:
    """A parsed framed body: its table, its skeleton, and its parts if inline."""

    slots: tuple[PartSlot, ...]
    skeleton: memoryview
    #: The parts (views into the body) when inline; empty when detached.
    parts: tuple[memoryview, ...]
    #: Length of the prefix (header + table + skeleton).
    prefix_size: int
    #: The content's hash as the sender named it (version 2), else None.
    content_id: str | None = None


class FramedBody(bytes):
    """The prefix of a framed body, with its parts attached as separate buffers.

    A ``bytes`` (the detached prefix), so code that passes bodies around (the
    event loop, logs) keeps working; :func:`syft_flwr.serde.bytes_to_flower_message`
    finds the parts in :attr:`parts`. Never store one as bytes: the parts are not
    in it (use ``serde.flower_message_to_bytes`` for a self-contained copy).
    """

    parts: tuple[bytes, ...]

    def __new__(cls, prefix: bytes, parts: Sequence[bytes]) -> FramedBody:
        obj = super().__new__(cls, prefix)
        obj.parts = tuple(parts)
        return obj

    @property
    def total_size(self) -> int:
        """Bytes of the prefix plus every part."""
        return len(self) + sum(len(p) for p in self.parts)


def pieces(body: bytes) -> list[bytes | memoryview]:
    """The buffers that make up ``body`` as self-contained bytes, in order.

    A :class:`FramedBody` is its prefix followed by its parts (the inline
    framed form, written without joining); anything else is itself.
    """
    if isinstance(body, FramedBody):
        return [memoryview(body), *body.parts]
    return [body]


def total_size(body: bytes) -> int:
    """Bytes of ``body`` in its self-contained form."""
    return body.total_size if isinstance(body, FramedBody) else len(body)


def inline(body: bytes) -> bytes:
    """``body`` as one self-contained ``bytes`` (joins a FramedBody's parts)."""
    if isinstance(body, FramedBody):
        return b"".join(pieces(body))
    return body


def is_framed(data: bytes | bytearray | memoryview) -> bool:
    """True when ``data`` starts like a framed body (never true for protobuf)."""
    return bytes(memoryview(data)[:4]) == MAGIC


def pack(
    slots: Sequence[PartSlot],
    skeleton: bytes,
    parts: Sequence[bytes | memoryview] = (),
    *,
    content_id: str | None = None,
) -> bytes:
    """Return a framed body: the prefix, followed by ``parts`` if given (inline).

    Parameters
    ----------
    slots
        One per part, in order.
    skeleton
        Protobuf of the message with the parts' bytes left out.
    parts
        The parts for an inline (self-contained) body; empty for a detached prefix.
    content_id
        The content's hash (64 lowercase hex) to name in the table (version 2);
        without it the body is version 1, as older writers wrote it.
    """
    listed = [[s.record, s.key, s.size] for s in slots]
    version = VERSION
    doc: object = listed
    if content_id is not None:
        if not _is_hex64(content_id):
            raise SerializationError("a content id is 64 lowercase hex digits")
        version, doc = VERSION_NAMED, {"parts": listed, "content": content_id}
    table = json.dumps(doc, separators=(",", ":")).encode("utf-8")
    head = _HEADER.pack(MAGIC, version, len(table), len(skeleton))
    if parts and len(parts) != len(slots):
        raise SerializationError("an inline framed body needs one part per slot")
    return b"".join((head, table, skeleton, *parts))


def parse_frame(data: bytes | memoryview, *, max_total: int = 2**63) -> Frame:
    """Parse a framed body (inline or detached) under strict limits.

    Raises
    ------
    SerializationError
        Not a framed body, a table that breaks the rules, or sizes that disagree.
    """
    view = memoryview(data).cast("B")
    if len(view) < _HEADER.size:
        raise SerializationError("framed body is shorter than its header")
    magic, version, table_len, skel_len = _HEADER.unpack_from(view)
    if magic != MAGIC:
        raise SerializationError("not a framed body")
    if version not in (VERSION, VERSION_NAMED):
        raise SerializationError(
            f"framed body version {version} is not {VERSION} or {VERSION_NAMED}; "
            "upgrade syft_flwr"
        )
    if table_len > MAX_TABLE_BYTES:
        raise SerializationError(f"framed body table of {table_len} bytes is too big")
    start = _HEADER.size
    prefix = start + table_len + skel_len
    if prefix > len(view):
        raise SerializationError("framed body is shorter than its table and skeleton")
    slots, content_id = _parse_table(view[start : start + table_len], version)
    total = sum(s.size for s in slots)
    if total > max_total:
        raise SerializationError(f"framed body parts total {total} bytes: too large")
    skeleton = view[start + table_len : prefix]
    rest = len(view) - prefix
    if rest == 0:
        return Frame(slots, skeleton, (), prefix, content_id)
    if rest != total:
        raise SerializationError(
            f"framed body carries {rest} bytes of parts, its table says {total}"
        )
    parts, at = [], prefix
    for s in slots:
        parts.append(view[at : at + s.size])
        at += s.size
    return Frame(slots, skeleton, tuple(parts), prefix, content_id)


def _is_hex64(value: object) -> bool:
    return isinstance(value, str) and len(value) == 64 and not set(value) - _HEX


def _parse_table(
    raw: memoryview, version: int
) -> tuple[tuple[PartSlot, ...], str | None]:
    try:
        doc = strict_json.loads(bytes(raw), max_bytes=MAX_TABLE_BYTES)
    except ValueError as exc:  # EnvelopeError / IncompleteMessage are ValueErrors
        raise SerializationError(f"framed body table is not valid JSON: {exc}") from exc
    content_id = None
    if version == VERSION_NAMED:
        if not isinstance(doc, dict) or set(doc) != {"parts", "content"}:
            raise SerializationError(
                "framed body table must name exactly 'parts' and 'content'"
            )
        content_id = doc["content"]
        if not _is_hex64(content_id):
            raise SerializationError("framed body content id is not 64 hex digits")
        doc = doc["parts"]
    return _parse_slots(doc), content_id


def _parse_slots(doc: object) -> tuple[PartSlot, ...]:
    if not isinstance(doc, list) or len(doc) > MAX_PARTS:
        raise SerializationError("framed body table is not a list of parts")
    slots = []
    for entry in doc:
        if (
            not isinstance(entry, list)
            or len(entry) != 3
            or not all(isinstance(x, str) and len(x) <= MAX_NAME for x in entry[:2])
            or isinstance(entry[2], bool)
            or not isinstance(entry[2], int)
            or entry[2] < 0
        ):
            raise SerializationError(f"bad framed body table entry {str(entry)[:80]}")
        slots.append(PartSlot(entry[0], entry[1], entry[2]))
    if len({(s.record, s.key) for s in slots}) != len(slots):
        raise SerializationError("framed body table names an array twice")
    return tuple(slots)


def content_id(body: bytes | memoryview) -> str | None:
    """The content hash a framed body's sender named (version 2), else None.

    Reads only the prefix; a body that is not framed, or does not parse,
    names nothing.
    """
    if not is_framed(body):
        return None
    try:
        view = memoryview(body).cast("B")
        if len(view) < _HEADER.size or view[4] != VERSION_NAMED:
            return None
        return parse_frame(bytes(view[: _prefix_size(view)])).content_id
    except SerializationError:
        return None


def _prefix_size(view: memoryview) -> int:
    _, _, table_len, skel_len = _HEADER.unpack_from(view)
    return int(_HEADER.size + table_len + skel_len)


def detach(
    body: bytes | memoryview,
) -> tuple[memoryview, tuple[memoryview, ...]]:
    """Split an inline framed body into its prefix and its parts, without copying.

    A body that is not framed, or is framed but already detached, comes back
    whole with no parts.

    Raises
    ------
    SerializationError
        A framed body whose table and sizes disagree.
    """
    view = memoryview(body).cast("B")
    if isinstance(body, FramedBody):
        return view, tuple(memoryview(p).cast("B") for p in body.parts)
    if not is_framed(view):
        return view, ()
    frame = parse_frame(view)
    if not frame.parts:
        return view, ()
    return view[: frame.prefix_size], frame.parts

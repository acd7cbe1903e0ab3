"""The journal's files: durable atomic writes and the exchange file's layout.

An exchange file holds one completed ``send_and_receive`` call: a 4-byte
big-endian length, a JSON index ``[[fingerprint, stored size or -1, kept or
null], ...]``, then each stored reply's bytes (a kept reply stores only its
framed prefix; its attachments are chunks linked into the journal's
``parts`` folder). :class:`~syft_flwr.researcher.journal_seal.JournalSeal`
appends the integrity tag.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from flwr.app import Message

from syft_flwr import _fs
from syft_flwr.serde import split_message
from syft_flwr.wire import frames
from syft_flwr.wire.blobs import BlobRef, read_local_blob

__all__ = ["Entry", "Kept", "exchange_index", "pack", "unpack", "write_durable"]


def write_durable(
    path: Path,
    data: bytes | Sequence[bytes | memoryview],
    *,
    seal: Callable[[bytes], bytes] | None = None,
) -> None:
    """Write ``data`` (or its pieces, in order) to ``path`` atomically and durably.

    A framed body is written piece by piece (see :func:`syft_flwr._fs.write_durable`,
    which does the writing, the optional seal and the fsyncs).
    """
    pieces = frames.pieces(data) if isinstance(data, bytes) else data
    _fs.write_durable(path, pieces, seal=seal)


#: A reply kept with its attachments linked into the journal: the framed prefix,
#: the references (content keys included) and the file stem of each attachment.
Kept = tuple[bytes, Sequence[BlobRef], Sequence[str]]
#: What :meth:`Journal.record` takes per request: a reply (or its bytes), a kept
#: reply, or nothing.
Entry = Message | bytes | Kept | None


def pack(entries: Sequence[tuple[str, Entry]]) -> list[bytes | memoryview]:
    """The pieces of one exchange file: a JSON index, then each stored reply.

    Index entries are ``[fingerprint, stored bytes or -1, kept or null]``; a kept
    reply stores its framed prefix and lists ``[[reference, stem], ...]``; any
    other reply is stored in its inline (self-contained) form, from its own
    buffers.
    """
    index: list[list[Any]] = []
    pieces: list[bytes | memoryview] = []
    for fp, entry in entries:
        if entry is None:
            index.append([fp, -1, None])
        elif isinstance(entry, tuple):
            prefix, refs, stems = entry
            kept = [[r.to_json(), st] for r, st in zip(refs, stems, strict=True)]
            index.append([fp, len(prefix), kept])
            pieces.append(prefix)
        elif isinstance(entry, bytes):
            index.append([fp, len(entry), None])
            pieces.append(entry)
        else:
            split = split_message(entry)
            index.append(
                [fp, len(split.prefix) + sum(len(p) for p in split.parts), None]
            )
            pieces += [split.prefix, *split.parts]
    head = json.dumps(index).encode()
    return [struct.pack(">I", len(head)), head, *pieces]


def unpack(data: bytes, parts_dir: Path) -> list[tuple[str, bytes | None]]:
    (n,) = struct.unpack(">I", data[:4])
    head = json.loads(data[4 : 4 + n])
    view = memoryview(data)
    pos = 4 + n
    out: list[tuple[str, bytes | None]] = []
    for fp, size, kept in head:
        if size < 0:
            out.append((fp, None))
            continue
        body = bytes(view[pos : pos + size])
        pos += size
        if kept:
            body = frames.FramedBody(
                body,
                [
                    read_local_blob(
                        parts_dir, BlobRef.from_json(doc, max_size=2**62), stem
                    )
                    for doc, stem in kept
                ],
            )
        out.append((fp, body))
    if pos != len(data):
        raise ValueError("trailing bytes")
    return out


def exchange_index(path: Path) -> int:
    """The sequence number of an exchange file ``<nnnnnnnn>.exchange``."""
    try:
        return int(path.stem)
    except ValueError:
        return -1

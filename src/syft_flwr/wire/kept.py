"""Kept chunks: a message's sealed attachment chunks given private names that outlive it.

Where the backend can link a file (local folders on one disk) the chunks
already on disk are kept as they are, sealed, without writing them again;
deleting the exchange later removes only their shared names. (A link, not a
rename: a file renamed out of a watched folder holds up watchdog's event queue
for half a second, waiting for a matching arrival.)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from syft_flwr.transports.base import Transport
from syft_flwr.wire.blobs import chunk_file_name
from syft_flwr.wire.layout import attachment_chunk_name
from syft_flwr.wire.message import Incoming, StoredParts

__all__ = ["keep_attachments", "link_chunks", "link_parts"]


def link_parts(
    transport: Transport, stored: StoredParts, dest: Path, stem: str
) -> bool:
    """Link ``stored``'s attachment chunks into ``dest`` (see ``SyftFlwrRpc.link_parts``)."""
    if not stored.chunks or any(not c for c in stored.chunks):
        return False
    stems = [f"{stem}.a{k}" for k in range(len(stored.chunks))]
    return link_chunks(transport, stored.chunks, dest, stems)


def keep_attachments(
    transport: Transport, incoming: Incoming, dest: Path
) -> list[str] | None:
    """Link a read message's attachment chunks into ``dest``; return their stems.

    See ``SyftFlwrRpc.keep_attachments``; ``None`` when they could not all be
    linked (nothing is linked then).
    """
    refs = incoming.attachments
    if not refs or any(r.shared is not None for r in refs):
        return None
    dest.mkdir(parents=True, exist_ok=True)
    mid, kind, folder = incoming.id, incoming.head.kind, incoming.path.folder
    keys = [
        [f"{folder}/{attachment_chunk_name(mid, kind, k, i)}" for i in range(ref.count)]
        for k, ref in enumerate(refs)
    ]
    stems = [f"{mid}.a{k}" for k in range(len(refs))]
    return stems if link_chunks(transport, keys, dest, stems) else None


def link_chunks(
    transport: Transport,
    keys: Sequence[Sequence[str]],
    dest: Path,
    stems: Sequence[str],
) -> bool:
    """Link every chunk of every part into ``dest``: all of them, or none.

    Chunk ``i`` of part ``k`` (transport key ``keys[k][i]``) becomes
    ``dest/<stems[k]>.<i:06d>.chunk``. Returns False, leaving no link, if
    one cannot be made.
    """
    made: list[Path] = []
    for part_keys, stem in zip(keys, stems, strict=True):
        for i, key in enumerate(part_keys):
            target = dest / chunk_file_name(stem, i)
            if not transport.link_out(key, target):
                for p in made:
                    p.unlink(missing_ok=True)
                return False
            made.append(target)
    return True

"""Request fingerprints: the same for a request and its re-send after a resume.

The researcher's journal keys its records by them and the data owner's reply
cache keys kept replies by them (see :mod:`syft_flwr.researcher.journal`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from flwr.app import Message

__all__ = ["request_fingerprint", "request_fingerprints"]


def request_fingerprint(
    msg: Message,
    *,
    with_sender: bool = False,
    content_id: str | None = None,
    sender: str | None = None,
) -> str:
    """A hash that is the same for a request and its re-send after a resume.

    Parameters
    ----------
    msg:
        An instruction Message (with content).
    with_sender:
        Include ``run_id`` and ``src_node_id`` (the data owner's view: two
        researchers or runs never share a cached reply).
    content_id:
        The content's Merkle hash as the (authenticated) sender named it in the
        request, instead of hashing the content here. A sender that names the
        wrong hash only ever gets its own earlier replies: pass ``sender``.
    sender:
        The authenticated sender's email, included when given.

    Returns
    -------
    str
        Hex sha256 of message type, group id, destination node and the content's
        Merkle hash (message id and creation time are left out on purpose).
    """
    content = content_id or (msg.content.object_id if msg.has_content() else "-")
    return _fingerprint(msg, content, with_sender=with_sender, sender=sender)


def request_fingerprints(msgs: Sequence[Message]) -> list[str]:
    """:func:`request_fingerprint` of each message, in order.

    A content object several messages share (a broadcast: one ``RecordDict``
    for every data owner) is hashed once: Flower recomputes the Merkle hash on
    every ``object_id`` read.
    """
    hashed: dict[int, str] = {}  # id(content) -> object_id; all alive meanwhile
    out = []
    for msg in msgs:
        content = "-"
        if msg.has_content():
            c = msg.content
            if id(c) not in hashed:
                hashed[id(c)] = c.object_id
            content = hashed[id(c)]
        out.append(_fingerprint(msg, content, with_sender=False))
    return out


def _fingerprint(
    msg: Message, content: str, *, with_sender: bool, sender: str | None = None
) -> str:
    md = msg.metadata
    parts = [md.message_type, md.group_id, str(md.dst_node_id), content]
    if with_sender:
        parts += [str(md.run_id), str(md.src_node_id)]
    if sender is not None:
        parts.append(sender)
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()

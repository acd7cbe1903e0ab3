"""The file a data owner keeps a reply in, authenticated with its own key.

A kept reply is re-sent, sealed, as the data owner's own answer, so it must be
exactly what this data owner wrote for this request and this sender. With a key
(``StateKey(keys, "ledger")``) the file is::

    b"\\xffSK1" | len(sender) (2 bytes) | sender (UTF-8) | status (2 bytes) | body | tag

where ``tag = HMAC("reply", request id, sender, sha256(status + body))``. The hash
is computed while the file is written, so a large reply is never read again just
to tag it. Without a key (no identity key) the file is ``status | body``, the
format of older versions, and it is taken on trust. A status never starts with
``0xff`` (it would be above 65000), so the two formats cannot be confused.
"""

from __future__ import annotations

import hashlib
import logging
import os

from syft_flwr.crypto.state_mac import TAG_LEN, StateKey
from syft_flwr.errors import StateIntegrityError
from syft_flwr.wire import frames

__all__ = ["open_kept", "write_kept"]

logger = logging.getLogger("syft_flwr.data_owner.ledger")

_MAGIC = b"\xffSK1"


def write_kept(
    fd: int, mid: str, peer: str, status: int, body: bytes, mac: StateKey | None
) -> None:
    """Write the kept reply of ``mid`` (for ``peer``) to ``fd``, tagged with ``mac``."""
    digest = hashlib.sha256()
    if mac is not None:
        who = peer.encode()
        _write_all(fd, _MAGIC + len(who).to_bytes(2, "big") + who)
    head = status.to_bytes(2, "big")
    _write_all(fd, head)
    digest.update(head)
    for piece in frames.pieces(body):  # a FramedBody: no join
        _write_all(fd, piece)
        digest.update(piece)
    if mac is not None:
        _write_all(fd, mac.tag(*_fields(mid, peer, digest.digest())))


def open_kept(mid: str, data: bytes, mac: StateKey | None) -> tuple[bytes, str]:
    """The status and body of a kept reply file, and the sender it answers.

    Raises
    ------
    StateIntegrityError
        With ``mac``: the file was changed, written under another key or for
        another request, or has no tag (an older version's file). Never send it.
    """
    tagged = data.startswith(_MAGIC) and len(data) >= len(_MAGIC) + 2 + TAG_LEN
    if not tagged:
        if mac is None:
            return data, ""  # no key: taken on trust
        what = f"the kept reply to request {mid} carries no integrity tag"
        logger.warning("%s; it is not sent", what)
        raise StateIntegrityError(f"{what}; it is not sent")
    n = int.from_bytes(data[4:6], "big")
    peer = data[6 : 6 + n].decode("utf-8", "replace")
    body, tag = data[6 + n : -TAG_LEN], data[-TAG_LEN:]
    if mac is not None:
        digest = hashlib.sha256(body).digest()
        try:
            mac.verify(
                tag,
                *_fields(mid, peer, digest),
                what=f"the kept reply to request {mid}",
            )
        except StateIntegrityError as exc:
            logger.warning("%s; it is not sent", exc)
            raise
    return body, peer


def _fields(mid: str, peer: str, digest: bytes) -> tuple[str | bytes, ...]:
    # What the tag covers: the request, who it answers, its bytes.
    return ("reply", mid, peer, digest)


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data).cast("B")
    while view:
        n = os.write(fd, view)
        view = view[n:]

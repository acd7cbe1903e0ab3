"""``ReplyCache``: a data owner's last replies, so a resumed round is not recomputed.

Kept replies are the data owner's: this module is their one home beside the
request ledger that stores them (issue 25). It grew up beside the researcher's
resume journal, so :mod:`syft_flwr.researcher.journal` still re-exports it and
``syft_flwr.researcher.reply_cache`` is an alias of this module.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from pathlib import Path
from typing import Any

from flwr.app import Message

from syft_flwr._fs import write_durable
from syft_flwr.crypto.state_mac import TAG_LEN, StateKey
from syft_flwr.data_owner.ledger import Ledger
from syft_flwr.data_owner.worker import current_request
from syft_flwr.errors import StateIntegrityError
from syft_flwr.serde import bytes_to_flower_message, flower_message_to_bytes
from syft_flwr.wire import frames

__all__ = ["DEFAULT_CACHED_REPLIES", "ReplyCache"]

logger = logging.getLogger("syft_flwr.checkpoint")

#: How many replies a data owner keeps; only the interrupted phase is re-sent.
DEFAULT_CACHED_REPLIES = 8


class ReplyCache:
    """A data owner's last replies, keyed by :func:`request_fingerprint`.

    Two ways to keep them:

    * on the serving loop's ledger (:meth:`on_ledger`, what
      :func:`~syft_flwr.data_owner.handler.run_data_owner` uses):
      the reply the loop stores for the request anyway gets the fingerprint as
      an alias, so each reply is written once, before it is sent; the ledger
      keeps the newest ``keep`` of them;
    * in a folder of its own (``ReplyCache(folder)``): one file per reply,
      fsynced before it is sent (a handler called without a serving loop).

    Parameters
    ----------
    folder:
        A private folder (the data owner's state dir for the app).
    keep:
        How many replies to keep (oldest are deleted first).
    state_key:
        Authenticates the replies kept in ``folder`` (a trailing tag over the
        fingerprint and the reply's bytes, computed as they are written); one
        that fails is not used, and the request is computed again. ``None``:
        taken on trust (no identity key).
    """

    def __init__(
        self,
        folder: Path,
        keep: int = DEFAULT_CACHED_REPLIES,
        *,
        state_key: StateKey | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.keep = keep
        self._mac = state_key
        self._lock = threading.Lock()
        self.ledger: Ledger | None = None
        self._legacy = False  # on a ledger: an older version's folder to read too

    @classmethod
    def on_ledger(cls, ledger: Ledger, legacy: Path | None = None) -> ReplyCache:
        """A reply cache kept as aliases of ``ledger``'s stored replies.

        ``legacy`` is the folder an older version kept its cached replies in;
        they are still found there (read only) when the ledger has none.
        """
        folder = legacy if legacy is not None else (ledger.dir or Path())
        cache = cls(folder, ledger.keep_aliases)
        cache.ledger = ledger
        cache._legacy = legacy is not None and any(legacy.glob("*.reply"))
        if cache._legacy and ledger.authenticated:
            # An older version's untagged replies: never re-sent as our own.
            logger.warning(
                "replies an older version cached in %s carry no integrity tag; "
                "they are not used (such a request is computed again)",
                legacy,
            )
            cache._legacy = False
        return cache

    def _path(self, fp: str) -> Path:
        return self.folder / f"{fp}.reply"

    def _read(self, fp: str) -> bytes | None:
        """A reply kept in :attr:`folder` (its tag checked), or ``None``."""
        try:
            data = self._path(fp).read_bytes()
        except FileNotFoundError:
            return None
        if self._mac is None or self.ledger is not None:
            return data  # legacy files on a keyed ledger were refused above
        body, tag = data[:-TAG_LEN], data[-TAG_LEN:]
        digest = hashlib.sha256(body).digest()
        self._mac.verify(tag, "reply", fp, digest, what=f"cached reply {fp[:12]}")
        return body

    def get(self, fp: str) -> Message | None:
        """Return the cached reply for ``fp``, or ``None``."""
        data: bytes | None = None
        try:
            if self.ledger is not None:
                stored = self.ledger.alias_reply(fp)
                data = None if stored is None else stored[1]
            if data is None and (self.ledger is None or self._legacy):
                data = self._read(fp)
        except StateIntegrityError as exc:  # never re-send it: compute again
            logger.warning("not using a cached reply %s: %s", fp[:12], exc)
            return None
        if data is None:
            return None
        try:
            return bytes_to_flower_message(data)
        except Exception as exc:  # a damaged cache entry: compute again
            logger.warning("ignoring a damaged cached reply %s: %s", fp[:12], exc)
            return None

    def put(self, fp: str, reply: Message | bytes) -> None:
        """Keep ``reply`` under ``fp``; it is kept before it is sent.

        ``reply`` may be the message or its serialized bytes (callers that
        already serialized it for sending pass those: no second serialization).
        On a ledger, inside a request its serving loop runs, ``reply`` must be
        what the handler returns: the loop keeps that, once, under ``fp``.
        """
        if self.ledger is not None:
            req = current_request()
            if req is not None and req.ledger is self.ledger and req.keep_reply_as(fp):
                return  # the serving loop stores it, once, before sending it
            data = reply if isinstance(reply, bytes) else flower_message_to_bytes(reply)
            self.ledger.keep_alias(fp, data)
            return
        data = reply if isinstance(reply, bytes) else flower_message_to_bytes(reply)
        mac = self._mac
        seal = None if mac is None else (lambda digest: mac.tag("reply", fp, digest))
        write_durable(self._path(fp), frames.pieces(data), seal=seal)
        with self._lock:
            entries: list[tuple[float, Any]] = []
            for p in self.folder.glob("*.reply"):
                try:
                    entries.append((p.stat().st_mtime_ns, p))
                except FileNotFoundError:
                    continue
            entries.sort()
            for _, p in entries[: max(0, len(entries) - self.keep)]:
                p.unlink(missing_ok=True)

"""A data owner's three sweeps of its own endpoint folders.

* answered replies: our responses whose request the requester removed (it read
  them) are deleted, and their kept reply is released;
* old exchanges: requests created before ``cleanup_expiry`` ago, or expired over
  an hour ago, go with their response;
* orphan chunks: chunk files without a head, once seen so for ``cleanup_expiry``.

:class:`Sweeps` owns the one piece of state they need (when each orphan chunk
was first seen). It runs on the request loop's thread only, so it holds no lock.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

from syft_flwr.data_owner.ledger import Ledger
from syft_flwr.errors import EnvelopeError, TransportError
from syft_flwr.transports.base import RpcPath, Transport
from syft_flwr.wire.envelope import ID_PATTERN, parse_head
from syft_flwr.wire.mailbox import SyftFlwrRpc

__all__ = ["Sweeps"]

logger = logging.getLogger("syft_flwr.events")

#: A request that expired this long ago (seconds) is cleaned up.
EXPIRED_GRACE = 3600.0


class Sweeps:
    """Housekeeping of the endpoints ``endpoints()`` names, in ``owner``'s folders.

    Parameters
    ----------
    transport, rpc:
        The data owner's transport and mailbox.
    ledger:
        Releases the kept reply of a request the requester has read.
    owner:
        The data owner's email (whose folders are swept).
    endpoints:
        The endpoint names being served (read at each sweep).
    cleanup_expiry:
        Seconds after which an exchange or an orphan chunk is removed.
    clock:
        POSIX time source, the one request expiries are compared with.
    """

    def __init__(
        self,
        transport: Transport,
        rpc: SyftFlwrRpc,
        ledger: Ledger,
        owner: str,
        endpoints: Callable[[], Iterable[str]],
        cleanup_expiry: float,
        clock: Callable[[], float],
    ) -> None:
        self._transport = transport
        self._rpc = rpc
        self._ledger = ledger
        self._owner = owner
        self._endpoints = endpoints
        self.cleanup_expiry = cleanup_expiry
        self._clock = clock
        self._orphans: dict[str, float] = {}  # chunk key -> first seen headless

    def _listing(self, name: str) -> list[str] | None:
        try:
            return self._transport.list(self._rpc.endpoint_prefix(self._owner, name))
        except TransportError:
            return None

    def answered(self) -> int:
        """Delete our responses whose request the requester already removed.

        On backends where only the owner may delete (Google Drive) this is how a
        data owner cleans up its own files once the researcher has read them.
        Returns how many of our responses are still waiting to be read.
        """
        remaining = 0
        for name in self._endpoints():
            keys = self._listing(name)
            if keys is not None:
                remaining += self._answered_in(set(keys))
        return remaining

    def _answered_in(self, keys: set[str]) -> int:
        remaining = 0
        for k in keys:
            if not k.endswith(".response"):
                continue
            if k[: -len(".response")] + ".request" in keys:
                remaining += 1
                continue
            p = RpcPath.parse(k)
            if p is not None:
                mid = p.name[: -len(".response")]
                try:
                    self._rpc.delete_message(p.folder, mid, "response")
                except TransportError as exc:
                    logger.debug("could not delete %s: %s", k, exc)
                # The requester has read it: no resend can come any more.
                if ID_PATTERN.match(mid):
                    self._ledger.drop_reply(mid)
        return remaining

    def cleanup(self) -> int:
        """Old exchanges and orphan chunks; return how many were removed.

        Files this identity may not delete are left alone.
        """
        now = self._clock()
        cutoff = now - self.cleanup_expiry
        removed = 0
        for name in self._endpoints():
            keys = self._listing(name)
            if keys is None:
                continue
            removed += self._old_requests(keys, cutoff, now)
            removed += self._orphan_chunks(
                keys, self._rpc.endpoint_prefix(self._owner, name) + "/"
            )
        if removed:
            logger.info("cleaned up %d old exchanges and stray files", removed)
        return removed

    def _old_requests(self, keys: list[str], cutoff: float, now: float) -> int:
        removed = 0
        for k in keys:
            if not k.endswith(".request"):
                continue
            try:
                head = parse_head(self._rpc.read_head_bytes(k))
                old = head.created_at < cutoff or head.expires_at < now - EXPIRED_GRACE
            except (EnvelopeError, TransportError):
                continue
            p = RpcPath.parse(k)
            if not old or p is None:
                continue
            mid = p.name[: -len(".request")]
            try:
                self._rpc.delete_message(p.folder, mid, "request")
                self._rpc.delete_message(p.folder, mid, "response")
            except TransportError as exc:
                logger.debug("could not clean up %s: %s", k, exc)
                continue
            removed += 1
        return removed

    def _orphan_chunks(self, keys: list[str], prefix: str) -> int:
        present = set(keys)
        mono = time.monotonic()
        removed = 0
        orphans = set()
        for k in keys:
            if not _is_orphan_chunk(k, present):
                continue
            orphans.add(k)
            first = self._orphans.setdefault(k, mono)
            if mono - first < self.cleanup_expiry:
                continue
            try:
                self._transport.delete(k)
                removed += 1
                orphans.discard(k)
            except TransportError as exc:
                logger.debug("could not delete orphan chunk %s: %s", k, exc)
        # forget orphans of this endpoint that got their head or went away
        for k in [k for k in self._orphans if k.startswith(prefix)]:
            if k not in orphans:
                self._orphans.pop(k, None)
        return removed


def _is_orphan_chunk(key: str, present: set[str]) -> bool:
    """Whether ``key`` is a message chunk whose head is not in ``present``."""
    if not key.endswith(".chunk"):
        return False
    folder, _, name = key.rpartition("/")
    parts = name.split(".")
    if len(parts) != 4 or parts[1] not in ("request", "response"):
        return False
    return f"{folder}/{parts[0]}.{parts[1]}" not in present

"""``Outbox``: writing the researcher's requests, and the folders they share.

Owns the requests not written yet (a data owner that does not serve the app,
or has not published its keys, gets its request when it does) and the shared
attachment folders of a push (one copy of the model for every data owner,
deleted when the last request using it is over).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass

from flwr.app import Message
from flwr.common.constant import ErrorCode

from syft_flwr.errors import EncryptionError, EnvelopeError, KeyNotFound, TransportError
from syft_flwr.researcher.inbox import Inbox, error_reply
from syft_flwr.researcher.roster import Roster
from syft_flwr.review.guard import attach_project_hash, take_project_hash
from syft_flwr.serde import SplitMessage, has_large_array, split_message
from syft_flwr.wire.blobs import BlobRef
from syft_flwr.wire.mailbox import Part, SyftFlwrRpc

__all__ = ["Outbox", "Outgoing", "split_request"]

logger = logging.getLogger("syft_flwr.grid")

# One push: (data owner email, message, its body and large parts).
Batch = list[tuple[str, Message, SplitMessage]]


@dataclass
class Outgoing:
    """A request ready to write: the detached body and its large parts."""

    email: str
    body: bytes
    parts: tuple[Part, ...]
    expires_at: float

    @property
    def shared_group(self) -> str | None:
        """The shared attachment folder this request refers to, if any."""
        return next(
            (r.shared for r in self.parts if isinstance(r, BlobRef) and r.shared),
            None,
        )


def split_request(msg: Message, project_hash: str | None) -> SplitMessage:
    """The message as a small body plus its large arrays (not copied).

    A body with large arrays names its content's hash (Flower's Merkle
    ``object_id``, without the project record, as the data owner sees the
    content): the data owner recognises a re-sent request by it without
    hashing the arrays again. Strategies share one content object between
    messages, so it is computed once per push (and is already cached when
    the resume journal fingerprinted the call).
    """
    content_id = (
        msg.content.object_id if msg.has_content() and has_large_array(msg) else None
    )
    if project_hash is None:
        return split_message(msg, content_id=content_id)
    # Inside the (sealed, signed) body; removed again at once because
    # strategies may share one content object between messages.
    attach_project_hash(msg, project_hash)
    try:
        return split_message(msg, content_id=content_id)
    finally:
        take_project_hash(msg)


class Outbox:
    """Requests to write, deferred requests, and shared attachment folders.

    Parameters
    ----------
    rpc : SyftFlwrRpc
        The researcher's mailbox.
    endpoint : str
        The exchange's endpoint name.
    roster : Roster
        Says whether a data owner serves the app.
    inbox : Inbox
        Where a request that cannot be sent gets its error reply.
    """

    def __init__(
        self, rpc: SyftFlwrRpc, endpoint: str, roster: Roster, inbox: Inbox
    ) -> None:
        self._rpc = rpc
        self._endpoint = endpoint
        self._roster = roster
        self._inbox = inbox
        self._lock = threading.RLock()
        self._unsent: dict[str, Outgoing] = {}
        # Shared attachment folders (one per push whose messages share arrays)
        # and the requests still using each; removed when none is left.
        self._groups: dict[str, set[str]] = {}
        self._group_of: dict[str, str] = {}
        self._swept_shared = False

    # -- shared attachment folders ---------------------------------------------
    def store_shared(self, batch: Batch) -> dict[int, BlobRef]:
        """Store once every large array that several messages of a push carry.

        Returns ``id(array bytes) -> reference``. Arrays are matched by identity
        (strategies hand the same ``ArrayRecord`` to every message), so nothing
        is hashed or compared byte by byte.
        """
        users: dict[int, set[str]] = {}
        data: dict[int, bytes] = {}
        for email, _, split in batch:
            for part in split.parts:
                users.setdefault(id(part), set()).add(email)
                data[id(part)] = part
        wanted = {k: v for k, v in users.items() if len(v) > 1}
        if not wanted or not self._rpc.can_share:
            return {}
        self._sweep_shared_once()
        readers = set().union(*wanted.values())
        expires = max(m.metadata.created_at + m.metadata.ttl for _, m, _ in batch)
        group = None
        try:
            group = self._rpc.new_shared_group(readers, expires)
            return {k: self._rpc.put_shared(group, data[k]) for k in wanted}
        except TransportError as exc:
            # Not fatal: each request then carries its own copy.
            logger.warning("could not store the shared model once: %s", exc)
            if group is not None:
                self._delete_shared(group, quiet="could not remove shared folder")
            return {}

    def _sweep_shared_once(self) -> None:
        if self._swept_shared:
            return
        self._swept_shared = True
        try:
            removed = self._rpc.sweep_shared()
        except TransportError as exc:
            logger.debug("could not sweep old shared attachments: %s", exc)
            return
        if removed:
            logger.info("removed %d expired shared model folders", removed)

    def track(self, mid: str, out: Outgoing) -> None:
        """Count ``mid`` as a user of its shared folder, if it has one."""
        group = out.shared_group
        if group is not None:
            with self._lock:
                self._groups.setdefault(group, set()).add(mid)
                self._group_of[mid] = group

    def release(self, mid: str) -> None:
        """Forget ``mid``'s use of its shared folder; delete the folder when unused."""
        with self._lock:
            group = self._group_of.pop(mid, None)
            if group is None or (users := self._groups.get(group)) is None:
                return
            users.discard(mid)
            if users:
                return
            del self._groups[group]
        self._delete_shared(group)

    def _delete_shared(
        self, group: str, quiet: str = "could not delete shared folder"
    ) -> None:
        try:
            self._rpc.delete_shared(group)
        except TransportError as exc:
            logger.debug("%s %s: %s", quiet, group, exc)

    def close(self) -> None:
        """Delete every shared folder still in use: nothing is left behind."""
        with self._lock:
            groups = list(self._groups)
            self._groups.clear()
            self._group_of.clear()
        for group in groups:
            self._delete_shared(group)

    # -- writing and deferring -------------------------------------------------
    def dispatch(self, mid: str, out: Outgoing) -> None:
        """Write the request now if its data owner serves the app, else later."""
        if self._roster.is_ready(out.email, force=True):
            self._send(mid, out)
        else:
            self._defer(mid, out, "has not started serving the app")

    def _defer(self, mid: str, out: Outgoing, why: str) -> None:
        # Writing before the owner's permissions exist gets the file rejected for
        # good on SyftBox; so the request waits here, unwritten, until it is ready.
        with self._lock:
            self._unsent[mid] = out
        if self._roster.first_warning(out.email):
            logger.info("%s %s; its request waits until it does", out.email, why)

    def _send(self, mid: str, out: Outgoing) -> None:
        p = self._inbox.get(mid)
        if p is None:
            return
        try:
            self._rpc.send_request(
                out.email,
                self._endpoint,
                out.body,
                expires_at=out.expires_at,
                message_id=mid,
                parts=out.parts,
            )
        except KeyNotFound:
            self._roster.not_ready(out.email)
            self._defer(mid, out, "has not published its public keys")
        except (TransportError, EncryptionError, EnvelopeError) as exc:
            logger.error("could not send to %s: %s", out.email, exc)
            self._inbox.fail(
                mid,
                error_reply(
                    p.message,
                    ErrorCode.NODE_UNAVAILABLE,
                    f"could not send to {out.email}: {exc}",
                ),
            )

    def flush(self, ids: Iterable[str]) -> None:
        """Write the deferred requests among ``ids`` whose data owner is ready now."""
        with self._lock:
            todo = [(m, self._unsent[m]) for m in ids if m in self._unsent]
        for mid, out in todo:
            if self._roster.is_ready(out.email):
                with self._lock:
                    if self._unsent.pop(mid, None) is None:
                        continue
                self._send(mid, out)

    def is_unsent(self, mid: str) -> bool:
        """Whether ``mid`` still waits to be written."""
        with self._lock:
            return mid in self._unsent

    def has_unsent(self) -> bool:
        """Whether any request still waits to be written."""
        with self._lock:
            return bool(self._unsent)

    def forget(self, mid: str) -> bool:
        """Drop ``mid``; True if it was never written (nothing to withdraw)."""
        with self._lock:
            return self._unsent.pop(mid, None) is not None

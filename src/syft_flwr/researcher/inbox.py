"""``Inbox``: the researcher's requests awaiting replies, and reading those replies.

Owns the pending requests, the ones a file event announced (arrived), the
ones that failed before reaching the data owner, and the reply files set
aside (not provably the data owner's answer). Reading turns a reply file into
a Flower reply or an error reply for its data owner, never into an exception.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from flwr.app import Error, Message
from flwr.common.constant import ErrorCode

from syft_flwr._flwr_compat import set_message_id
from syft_flwr.errors import (
    EncryptionError,
    EnvelopeError,
    IncompleteMessage,
    KeyNotFound,
    PermissionDenied,
    SecurityError,
    SerializationError,
    TransportError,
)
from syft_flwr.researcher.reply_check import screen_reply
from syft_flwr.researcher.wakeup import Wakeup
from syft_flwr.serde import bytes_to_flower_message
from syft_flwr.wire.mailbox import Incoming, SyftFlwrRpc
from syft_flwr.wire.reasons import reason_text

__all__ = ["Inbox", "Pending", "error_reply"]

logger = logging.getLogger("syft_flwr.grid")

# HTTP-like status of a refused/failed response -> Flower error code.
_STATUS_TO_ERROR = {
    400: ErrorCode.MESSAGE_UNAVAILABLE,
    403: ErrorCode.MESSAGE_UNAVAILABLE,
    409: ErrorCode.MESSAGE_UNAVAILABLE,
    419: ErrorCode.REPLY_MESSAGE_UNAVAILABLE,
    500: ErrorCode.CLIENT_APP_RAISED_EXCEPTION,
}

# Called with each authentic, screened reply and the file it came from.
KeepReply = Callable[[str, Incoming, Message], None]


@dataclass
class Pending:
    """A request sent (or about to be) and awaiting its reply."""

    message: Message
    email: str
    node_id: int
    sent_at: float


def error_reply(msg: Message, code: int, reason: str) -> Message:
    """An error reply to ``msg`` (with its own message id)."""
    reply = Message(Error(code=code, reason=reason), reply_to=msg)
    set_message_id(reply, str(uuid.uuid4()))
    return reply


def to_reply(p: Pending, mid: str, inc: Incoming) -> Message:
    """The Flower reply a response file stands for (an error reply if it is not one)."""
    status = inc.head.status_code or 200
    if status != 200:
        # Text the data owner wrote (sealed with its status when encryption
        # is on); never message bytes, whatever sits in the body.
        reason = reason_text(inc.body) if len(inc.body) else f"status {status}"
        code = _STATUS_TO_ERROR.get(status, ErrorCode.UNKNOWN)
        return error_reply(p.message, code, f"{p.email}: {reason}")
    try:
        reply = bytes_to_flower_message(inc.body)
    except SerializationError as exc:
        return error_reply(
            p.message,
            ErrorCode.MESSAGE_UNAVAILABLE,
            f"{p.email}: unreadable reply: {exc}",
        )
    md = reply.metadata
    if md.reply_to_message_id != mid or md.src_node_id != p.node_id:
        return error_reply(
            p.message,
            ErrorCode.MESSAGE_UNAVAILABLE,
            f"{p.email}: reply does not match the request "
            f"(reply_to={md.reply_to_message_id!r}, src={md.src_node_id})",
        )
    if not md.message_id:
        set_message_id(reply, str(uuid.uuid4()))
    return reply


class Inbox:
    """Requests awaiting replies, and the reading of their reply files.

    Parameters
    ----------
    rpc : SyftFlwrRpc
        The researcher's mailbox.
    endpoint : str
        The exchange's endpoint name.
    wake : Wakeup
        Told when a file event announces a reply.
    allow_nonfinite : callable
        Whether replies holding NaN or Inf are accepted (read at each reply).
    on_done : callable
        Called with a message id once its exchange is over (the outbox
        releases its shared attachments then).
    """

    def __init__(
        self,
        rpc: SyftFlwrRpc,
        endpoint: str,
        wake: Wakeup,
        allow_nonfinite: Callable[[], bool],
        on_done: Callable[[str], None],
    ) -> None:
        self._rpc = rpc
        self._endpoint = endpoint
        self._wake = wake
        self._allow_nonfinite = allow_nonfinite
        self._on_done = on_done
        self._lock = threading.RLock()
        self._pending: dict[str, Pending] = {}
        self._failed: dict[str, Message] = {}
        self._arrived: set[str] = set()
        # message id -> why its reply file was set aside
        self._aside: dict[str, str] = {}

    # -- bookkeeping ----------------------------------------------------------
    def register(self, mid: str, msg: Message, email: str) -> None:
        """Await a reply to ``msg`` (before it is written: no event is lost)."""
        with self._lock:
            self._pending[mid] = Pending(
                msg, email, msg.metadata.dst_node_id, time.monotonic()
            )

    def get(self, mid: str) -> Pending | None:
        """The pending request ``mid``, if still awaited."""
        with self._lock:
            return self._pending.get(mid)

    def pending_ids(self) -> list[str]:
        """Every request still awaited."""
        with self._lock:
            return list(self._pending)

    def emails_of(self, mids: Iterable[str]) -> set[str]:
        """The data owners the awaited requests among ``mids`` went to."""
        with self._lock:
            return {self._pending[m].email for m in mids if m in self._pending}

    def to_emails(self, mids: Iterable[str], emails: Iterable[str]) -> set[str]:
        """The awaited requests among ``mids`` that went to one of ``emails``."""
        emails = set(emails)
        with self._lock:
            return {
                m
                for m in mids
                if m in self._pending and self._pending[m].email in emails
            }

    def fail(self, mid: str, reply: Message) -> None:
        """``mid`` could not be sent: ``reply`` (an error) is its answer."""
        with self._lock:
            self._failed[mid] = reply

    def forget(self, mid: str) -> Pending | None:
        """Stop awaiting ``mid``; return it if it was awaited."""
        with self._lock:
            p = self._pending.pop(mid, None)
            self._arrived.discard(mid)
            self._failed.pop(mid, None)
            self._aside.pop(mid, None)
        return p

    # -- events ---------------------------------------------------------------
    def on_response(self, mid: str) -> None:
        """A file event announced the reply of ``mid`` (transport thread)."""
        with self._lock:
            hit = mid in self._pending
            if hit:
                self._arrived.add(mid)
        if hit:
            self._wake.notify()

    def has_arrived(self, mids: set[str]) -> bool:
        """Whether a file event announced a reply of one of ``mids``."""
        with self._lock:
            return bool(self._arrived & mids)

    def clear_arrived(self, mids: set[str]) -> None:
        """Forget the announcements of ``mids`` (they are read next)."""
        with self._lock:
            self._arrived -= mids

    # -- reading --------------------------------------------------------------
    def pull(
        self,
        ids: list[str],
        *,
        full: bool,
        check_rejected: bool,
        unsent: Callable[[str], bool],
        keep: KeepReply | None = None,
    ) -> list[Message]:
        """Read the replies of ``ids``; with ``full=False`` only those announced.

        Requests for which ``unsent(mid)`` holds are skipped (nothing to read
        yet). ``keep`` sees each authentic reply that is not an error.
        """
        with self._lock:
            if not full:
                ids = [m for m in ids if m in self._arrived or m in self._failed]
            self._arrived.difference_update(ids)
        out: list[Message] = []
        for mid in ids:
            if unsent(mid):
                continue
            with self._lock:
                p = self._pending.get(mid)
                failed = self._failed.pop(mid, None)
            if p is None:
                continue
            if failed is not None:
                out.append(failed)
                self.complete(mid, p, delete=False)
                continue
            reply = self._read(mid, p, check_rejected, keep)
            if reply is not None:
                out.append(reply)
        return out

    def _read(
        self, mid: str, p: Pending, check_rejected: bool, keep: KeepReply | None
    ) -> Message | None:
        """The reply of ``mid`` if its file is there and settles the exchange."""
        inc = self._response(mid, p, check_rejected)
        if isinstance(inc, Message) or inc is None:
            return inc
        # Authentic is not harmless: NaN/Inf or another shape never reach
        # the strategy; they become this data owner's error reply.
        reply = screen_reply(
            p.message,
            to_reply(p, mid, inc),
            sender=p.email,
            allow_nonfinite=self._allow_nonfinite(),
        )
        if keep is not None and not reply.has_error():
            keep(mid, inc, reply)
        self.complete(mid, p, response=inc)
        return reply

    def _response(
        self, mid: str, p: Pending, check_rejected: bool
    ) -> Incoming | Message | None:
        """The response file of ``mid``; an error reply when it settles with one."""
        try:
            return self._rpc.response_for(
                p.email, self._endpoint, mid, check_rejected=check_rejected
            )
        except IncompleteMessage:
            return None  # partial reply: not ready yet
        except PermissionDenied as exc:
            self.complete(mid, p)
            return error_reply(p.message, ErrorCode.NODE_UNAVAILABLE, str(exc))
        except KeyNotFound as exc:
            # The data owner's keys are not (fully) synced yet: wait.
            self._set_aside(p, mid, exc, waiting_for="its public keys")
        except (EnvelopeError, EncryptionError, SecurityError) as exc:
            # Not provably the data owner's answer: never ends the wait.
            self._set_aside(p, mid, exc)
        except TransportError as exc:
            logger.warning("could not read the reply of %s: %s", p.email, exc)
        return None

    def _set_aside(
        self,
        p: Pending,
        mid: str,
        exc: Exception,
        *,
        waiting_for: str = "its own reply",
    ) -> None:
        """Log (once per reason) a reply file that does not count, and keep waiting.

        With encryption on, only a reply sealed by the addressed data owner
        counts; a planted, tampered or unreadable file must not end the exchange
        and throw away the real result that may still come.
        """
        reason = str(exc)
        with self._lock:
            if self._aside.get(mid) == reason:
                return
            self._aside[mid] = reason
        logger.warning(
            "set aside a reply file for the request to %s (%s): %s; it does not "
            "count as %s's answer, still waiting for %s",
            p.email,
            mid,
            reason,
            p.email,
            waiting_for,
        )

    def complete(
        self,
        mid: str,
        p: Pending,
        *,
        delete: bool = True,
        response: Incoming | None = None,
    ) -> None:
        """End the exchange ``mid``: forget it, and delete its files unless told not to."""
        with self._lock:
            self._pending.pop(mid, None)
            self._arrived.discard(mid)
            self._aside.pop(mid, None)
        self._on_done(mid)
        if delete:
            try:
                self._rpc.finish(p.email, self._endpoint, mid, response=response)
            except TransportError as exc:
                logger.debug("could not clean up exchange %s: %s", mid, exc)

    def sweep_stale(self, email: str) -> None:
        """Withdraw this researcher's leftovers from earlier runs of the app.

        A researcher that crashed (or was killed) never withdrew its requests; a
        data owner starting late would still train on them. Exchanges this grid
        did not send are deleted on first contact with each data owner.
        """
        folder = self._rpc.folder(email, self._endpoint, self._rpc.identity)
        try:
            keys = self._rpc.transport.list(folder)
        except TransportError as exc:
            logger.debug("could not list %s: %s", folder, exc)
            return
        stale = {
            k.rsplit("/", 1)[-1].split(".")[0]
            for k in keys
            if k.endswith((".request", ".response"))
        } - set(self.pending_ids())
        for mid in stale:
            try:
                self._rpc.finish(email, self._endpoint, mid)
            except TransportError as exc:
                logger.debug("could not remove stale exchange %s: %s", mid, exc)
        if stale:
            logger.info(
                "withdrew %d request(s) to %s left over from an earlier run",
                len(stale),
                email,
            )

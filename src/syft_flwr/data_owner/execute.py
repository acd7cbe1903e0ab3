"""Running a request once: received -> running -> stored/replied.

:class:`Execution` takes a request the loop has admitted (every guarantee
checked), records it, runs its handler on the worker under its deadline,
keeps the reply in the ledger before its head is written, and delivers it.
A crash at any point never makes the handler run twice, and a finished reply
is never lost.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from syft_flwr.data_owner.audit import AuditLog
from syft_flwr.data_owner.delivery import Delivery
from syft_flwr.data_owner.ledger import RECEIVED, RUNNING, Ledger
from syft_flwr.data_owner.protocol import MessageHandler
from syft_flwr.data_owner.worker import HandlerWorker, ReplyAlias, RequestInfo
from syft_flwr.wire import frames
from syft_flwr.wire.mailbox import Incoming, StoredParts, SyftFlwrRpc

__all__ = ["Execution"]

logger = logging.getLogger("syft_flwr.events")

#: The 504 body of a request that expired while an overrunning handler held the worker.
_BUSY = (
    b"an earlier ClientApp call is still running past its deadline; "
    b"this request expired waiting for it and was not run"
)


class Execution:
    """Runs admitted requests once and keeps and delivers their replies.

    Parameters
    ----------
    rpc:
        The data owner's mailbox (links a sent reply's sealed chunks).
    ledger:
        The request ledger: states, and the one home of kept replies.
    audit:
        The audit trail (``received`` and ``run`` entries).
    app_name:
        The app being served.
    worker, delivery:
        Where handlers run, and how replies are written.
    stop:
        Set when the loop stops.
    clock:
        POSIX time source, the one request expiries are compared with.
    """

    def __init__(
        self,
        rpc: SyftFlwrRpc,
        ledger: Ledger,
        audit: AuditLog,
        app_name: str,
        worker: HandlerWorker,
        delivery: Delivery,
        stop: threading.Event,
        clock: Callable[[], float],
    ) -> None:
        self._rpc = rpc
        self._ledger = ledger
        self._audit = audit
        self._app_name = app_name
        self._worker = worker
        self._delivery = delivery
        self._stop = stop
        self._clock = clock

    def run(self, endpoint: str, handler: MessageHandler, incoming: Incoming) -> None:
        """Run the handler once, deliver its reply, then keep it.

        received -> running -> stored/replied: ``running`` is durable before the
        handler starts (never run twice); a reply that could not be delivered is
        kept durably and retried (never lost).
        """
        mid, head = incoming.id, incoming.head
        expires_at = head.expires_at
        self._received(incoming, expires_at)
        if not self._worker.wait_until_free(expires_at):
            if not self._stop.is_set():
                self._delivery.send(
                    incoming.path, mid, 504, _BUSY, head.expires, expires_at
                )
            return
        self._ledger.mark(mid, RUNNING, expires_at)
        ran = self._call(endpoint, handler, incoming, expires_at)
        if ran is None:  # stopping: the run's result is not awaited
            return
        status, body, alias = ran
        self._deliver_and_keep(incoming, status, body, alias)

    def _received(self, incoming: Incoming, expires_at: float) -> None:
        self._ledger.mark(incoming.id, RECEIVED, expires_at, durable=False)
        self._audit.record(
            "received",
            id=incoming.id,
            app=self._app_name,
            sender=incoming.sender,
            fingerprint=self._fingerprint(incoming.sender),
            bytes=len(incoming.body),
            encrypted=incoming.head.encrypted,
        )

    def _call(
        self,
        endpoint: str,
        handler: MessageHandler,
        incoming: Incoming,
        expires_at: float,
    ) -> tuple[int, bytes, str | None] | None:
        """Run the handler on the worker; its reply and the alias it asked for.

        ``None`` when the loop is stopping. The run is in the audit trail with
        what the handler said it ran.
        """
        started = self._clock()
        reply_alias = ReplyAlias()
        info = RequestInfo(
            id=incoming.id,
            sender=incoming.sender,
            endpoint=endpoint,
            created=incoming.head.created,
            expires=incoming.head.expires,
            headers=dict(incoming.head.headers),
            encrypted=incoming.head.encrypted,
            audit={},
            expires_at=expires_at,
            ledger=self._ledger,
            _keep=reply_alias,
        )
        outcome = self._worker.call(handler, info, incoming.body, expires_at)
        alias = reply_alias.close()  # a handler past its deadline may no longer ask
        self._audit.record(
            "run",
            id=incoming.id,
            app=self._app_name,
            sender=incoming.sender,
            start=round(started, 3),
            end=round(self._clock(), 3),
            status="stopped" if outcome is None else outcome[0],
            **info.audit,
        )
        if outcome is None:
            return None
        status, body = outcome
        # Only the handler's own answer is worth reusing under an alias.
        return status, body, alias if status == 200 else None

    def _deliver_and_keep(
        self, incoming: Incoming, status: int, body: bytes, alias: str | None
    ) -> None:
        """Send the reply, keeping it in the ledger before its head is written.

        The reply is kept once its attachments are stored and before its head
        makes it visible: no crash after it leaves can make the ClientApp run
        twice (the handler's reply cache finds it under ``alias`` when a resumed
        researcher re-sends the request under a new id). Attachments are kept
        by linking the sealed chunks just written, so the data owner stores a
        large reply once.
        """
        mid, expires, expires_at = (
            incoming.id,
            incoming.head.expires,
            incoming.head.expires_at,
        )
        peer = incoming.path.peer
        kept = False

        def keep_before_head(stored: StoredParts) -> None:
            nonlocal kept
            kept = self._keep_reply(
                mid, status, body, expires_at, alias=alias, stored=stored, peer=peer
            )

        if self._delivery.send(
            incoming.path, mid, status, body, expires, expires_at, keep_before_head
        ):
            return
        # Not delivered: kept durably, retried with backoff (and after a restart).
        self._keep_reply(
            mid,
            status,
            body,
            expires_at,
            durable=True,
            again=kept,
            alias=None if kept else alias,
            peer=peer,
        )

    def _keep_reply(
        self,
        mid: str,
        status: int,
        body: bytes,
        expires_at: float,
        *,
        durable: bool = False,
        alias: str | None = None,
        again: bool = False,
        stored: StoredParts | None = None,
        peer: str = "",
    ) -> bool:
        """Store the reply in the ledger (``again``: already stored, make it durable).

        With ``stored`` (the reply as just written, before its head) its sealed
        attachments are linked rather than written again where the backend
        allows it. Returns whether the reply is kept.
        """
        try:
            if again:
                self._ledger.sync_reply(mid)
            elif stored is None or not self._ledger.store_sealed(
                mid,
                status,
                stored.body,
                lambda folder, stem: self._rpc.link_parts(stored, folder, stem),
                expires_at,
                size=frames.total_size(body),
                durable=durable,
                alias=alias,
                peer=peer,
            ):
                self._ledger.store_reply(
                    mid,
                    status,
                    body,
                    expires_at,
                    durable=durable,
                    alias=alias,
                    peer=peer,
                )
        except OSError as exc:
            logger.error("could not keep the reply to %s durably: %s", mid, exc)
            return False
        return True

    def _fingerprint(self, email: str) -> str | None:
        """The sender's key fingerprint, when encryption is on.

        Taken from the key directory's cached bundle (the one that just opened
        the request, checked against the pin), not from the pin file on disk:
        no file read per request.
        """
        directory = getattr(self._rpc.policy, "directory", None)
        if directory is None:
            return None
        from syft_flwr.crypto.keys import fingerprint

        try:
            return fingerprint(directory.get(email))
        except Exception:  # noqa: BLE001 - the audit never stops serving
            return None

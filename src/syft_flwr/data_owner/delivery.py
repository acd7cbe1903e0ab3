"""Delivery of a data owner's replies: written once, or kept and retried until expiry.

:class:`Delivery` owns what the request loop knows about its own answers: the
replies waiting for another write attempt (with backoff), the ids this process
answered, and how many it served. It is used from the loop's thread only, so it
holds no lock.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from syft_flwr.data_owner.audit import AuditLog
from syft_flwr.data_owner.ledger import REPLIED, Ledger
from syft_flwr.errors import EncryptionError, PermissionDenied, SecurityError
from syft_flwr.transports.base import RpcPath
from syft_flwr.wire import frames
from syft_flwr.wire.mailbox import StoredParts, SyftFlwrRpc

__all__ = ["Delivery"]

logger = logging.getLogger("syft_flwr.events")

#: Longest wait between two attempts at writing one reply (seconds).
MAX_BACKOFF = 30.0
#: Wait before the first retry (seconds); each later one doubles it.
FIRST_BACKOFF = 0.5


@dataclass
class _Retry:
    path: RpcPath
    status: int
    body: bytes
    expires: str
    expires_at: float
    next_at: float
    delay: float


class Delivery:
    """Writes replies through ``rpc``; keeps failed ones and retries them with backoff.

    Parameters
    ----------
    rpc:
        The data owner's mailbox.
    ledger:
        Where a delivered reply is marked ``replied``.
    audit:
        The audit trail (one ``replied`` entry per reply written).
    app_name:
        The app being served (named in the audit trail).
    clock:
        POSIX time source, the one request expiries are compared with.
    """

    def __init__(
        self,
        rpc: SyftFlwrRpc,
        ledger: Ledger,
        audit: AuditLog,
        app_name: str,
        clock: Callable[[], float],
    ) -> None:
        self._rpc = rpc
        self._ledger = ledger
        self._audit = audit
        self._app_name = app_name
        self._clock = clock
        #: Replies waiting for another write attempt, by request id.
        self.retries: dict[str, _Retry] = {}
        #: Ids this process replied to.
        self.answered: set[str] = set()
        #: How many replies this process wrote.
        self.served = 0

    def send(
        self,
        path: RpcPath,
        mid: str,
        status: int,
        body: bytes,
        expires: str,
        expires_at: float,
        before_head: Callable[[StoredParts], None] | None = None,
    ) -> bool:
        """Write the reply; on failure keep it and retry with backoff until expiry.

        Returns whether the reply is on the transport now. ``before_head`` is
        passed to :meth:`~syft_flwr.wire.mailbox.SyftFlwrRpc.send_response` (first
        attempt only: a retried reply is already kept).
        """
        try:
            self._rpc.send_response(
                path,
                request_id=mid,
                expires=expires,
                status_code=status,
                body=body,
                before_head=before_head,
            )
        except Exception as exc:  # noqa: BLE001 - any write failure is retried
            self._keep_for_retry(path, mid, status, body, expires, expires_at, exc)
            return False
        self._delivered(path, mid, status, body, expires_at)
        return True

    def _keep_for_retry(
        self,
        path: RpcPath,
        mid: str,
        status: int,
        body: bytes,
        expires: str,
        expires_at: float,
        exc: Exception,
    ) -> None:
        retry = self.retries.get(mid)
        delay = min(MAX_BACKOFF, FIRST_BACKOFF if retry is None else retry.delay * 2)
        self.retries[mid] = _Retry(
            path, status, body, expires, expires_at, time.monotonic() + delay, delay
        )
        logger.warning(
            "could not write the reply to %s (%s); it is kept and retried in %.1f s",
            mid,
            exc,
            delay,
        )

    def _delivered(
        self, path: RpcPath, mid: str, status: int, body: bytes, expires_at: float
    ) -> None:
        self.retries.pop(mid, None)
        # Not fsynced: if lost, a restart resends the stored reply (harmless).
        self._ledger.mark(mid, REPLIED, expires_at, durable=False)
        self._audit.record(
            "replied",
            id=mid,
            app=self._app_name,
            sender=path.peer,
            status=status,
            bytes=frames.total_size(body),
        )
        self.answered.add(mid)
        self.served += 1

    def retry_due(self, *, force: bool = False) -> None:
        """Write again the kept replies whose backoff is over (all with ``force``)."""
        now = time.monotonic()
        for mid, r in list(self.retries.items()):
            if self._clock() >= r.expires_at:
                self.retries.pop(mid, None)
                logger.error(
                    "gave up writing the reply to %s: the request expired", mid
                )
                continue
            if force or now >= r.next_at:
                self.send(r.path, mid, r.status, r.body, r.expires, r.expires_at)

    def flush(self) -> None:
        """Before exiting: one last attempt at every kept reply; say what is left."""
        if not self.retries:
            return
        self.retry_due(force=True)
        if self.retries:
            logger.warning(
                "%d replies could not be written yet; they are kept and sent "
                "when this data owner serves again",
                len(self.retries),
            )

    def send_refusal(
        self, path: RpcPath, mid: str, status: int, reason: str, expires: str | None
    ) -> None:
        """Answer ``mid`` with ``status`` and ``reason``, sealed if it can be."""
        for plaintext in (False, True):
            try:
                self._rpc.send_response(
                    path,
                    request_id=mid,
                    expires=expires,
                    status_code=status,
                    body=reason.encode(),
                    plaintext=plaintext,
                )
                return
            except (EncryptionError, SecurityError) as exc:
                # The refusal cannot be sealed (e.g. the requester never published
                # keys). It carries only our own reason text, so it goes in clear
                # rather than leave the requester waiting in silence.
                logger.info("sending the refusal of %s unencrypted: %s", mid, exc)
            except PermissionDenied as exc:
                # The transport deals only with allowed peers (Google Drive):
                # a stranger gets no reply at all, plaintext or not.
                logger.info("not answering %s from %s: %s", mid, path.peer, exc)
                return
            except Exception:
                logger.exception("could not write the refusal for %s", mid)
                return

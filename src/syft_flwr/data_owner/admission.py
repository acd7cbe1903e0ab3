"""Admission: the request loop's guarantees, checked before anything runs.

For each request file, in order (see :mod:`syft_flwr.data_owner.loop`): a
request whose reply is ours is left alone; a badly named file is ignored; a
sender who is not allowed gets a 403; a partial request is "not ready yet"
(never deleted, never answered); a malformed one gets a 400, an expired one a
419, one that does not open a 403; a request this data owner already started is
never run again (its kept reply is sent again, or a 409).

:class:`Admission` owns what the loop remembers about request files: which are
not ready yet (and since when), which were refused, and which carry a reply
this data owner never wrote. It runs on the loop's thread only: no lock.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from syft_flwr.data_owner.delivery import Delivery
from syft_flwr.data_owner.ledger import REPLIED, RUNNING, STORED, TAINTED, Ledger
from syft_flwr.data_owner.refusals import RefusalLog
from syft_flwr.errors import (
    EncryptionError,
    EnvelopeError,
    IncompleteMessage,
    KeyNotFound,
    MessageNotFound,
    SecurityError,
    StateIntegrityError,
)
from syft_flwr.transports.base import RpcPath, Transport
from syft_flwr.wire.envelope import ID_PATTERN, Head, parse_head
from syft_flwr.wire.mailbox import Incoming, SyftFlwrRpc

__all__ = ["Admission"]

logger = logging.getLogger("syft_flwr.events")

#: Seconds a request may stay unreadable before we warn (it is never deleted).
INCOMPLETE_WARN_AFTER = 30.0


class Admission:
    """Decides, for each request file, whether it runs now.

    Parameters
    ----------
    owner, app_name:
        The data owner's email and the app served.
    transport, rpc:
        The data owner's transport and mailbox.
    ledger:
        What this data owner did with each request id.
    refusals:
        Logs each refusal once (audit trail).
    delivery:
        Sends refusals and kept replies; knows which ids were answered.
    allowed_senders:
        Folded emails that may have requests run (``None``: anyone).
    max_message_bytes:
        The largest request accepted.
    clock:
        POSIX time source, the one request expiries are compared with.
    """

    def __init__(
        self,
        *,
        owner: str,
        app_name: str,
        transport: Transport,
        rpc: SyftFlwrRpc,
        ledger: Ledger,
        refusals: RefusalLog,
        delivery: Delivery,
        allowed_senders: set[str] | None,
        max_message_bytes: int,
        clock: Callable[[], float],
    ) -> None:
        self._owner = owner
        self._app_name = app_name
        self._transport = transport
        self._rpc = rpc
        self._ledger = ledger
        self.refusals = refusals
        self._delivery = delivery
        self.allowed_senders = allowed_senders
        self._max_message_bytes = max_message_bytes
        self._clock = clock
        #: Request files not readable yet: head key -> first seen (monotonic).
        self.incomplete: dict[str, float] = {}
        self._warned: set[str] = set()
        self._refused: set[str] = set()  # head keys refused (logged once)
        self._foreign_replies: set[str] = set()  # replies found that we never wrote

    def admit(self, key: str, path: RpcPath, auto_decrypt: bool) -> Incoming | None:
        """The request at ``key``, read and opened, if it is to run now.

        Everything else (answered already, refused, not ready yet) is dealt
        with here, in the order of the guarantees (see :mod:`.loop`).
        """
        mid = path.name[: -len(".request")]
        if self._reply_is_ours(key, path, mid):
            return None
        if not ID_PATTERN.match(mid):
            self._ignore_bad_name(key, path)
            return None
        # Sender check before reading the body: nothing of an unknown sender is
        # decrypted or parsed beyond the head.
        sender = path.peer
        if self.allowed_senders is not None and sender not in self.allowed_senders:
            why = f"{sender} is not an allowed sender for this app"
            self._refuse(path, mid, 403, why, key)
            return None
        head = self._checked_head(key, path, mid, auto_decrypt)
        if head is None:
            return None
        if mid in self._delivery.answered:
            # We answered it and the requester deleted our reply first while
            # cleaning up (its request deletion has not arrived yet): not a replay.
            return None
        state = self._ledger.state(mid)
        if state in (RUNNING, STORED, REPLIED, TAINTED):
            self.incomplete.pop(key, None)
            self._answer_again(path, mid, key, state, head.expires, head.expires_at)
            return None
        incoming = self._read_request(key, path, mid, head)
        if incoming is not None:
            self.incomplete.pop(key, None)
        return incoming

    def _reply_is_ours(self, key: str, path: RpcPath, mid: str) -> bool:
        """Whether a reply to ``key`` is there and ours: then nothing is to be done.

        A reply this data owner never wrote (planted, or left by a broken sync)
        must not stop the real answer, which replaces it.
        """
        response_key = key[: -len(".request")] + ".response"
        if not self._transport.exists(response_key):
            return False
        if self.replied_or_refused(key) or self._own_reply(response_key):
            self.incomplete.pop(key, None)
            return True
        if key not in self._foreign_replies:
            self._foreign_replies.add(key)
            logger.warning(
                "a reply to request %s from %s is already there but was not "
                "written by %s for this request as it stands (another "
                "request's reply, altered, or not sealed by it); it will be "
                "replaced by the real answer",
                mid,
                path.peer,
                self._owner,
            )
        return False

    def _ignore_bad_name(self, key: str, path: RpcPath) -> None:
        """A request file name no requester writes (a path trick, a newline, ...).

        It is never read, never run, never answered (a reply would reuse the
        name); the refusal is logged once.
        """
        if key in self._refused:
            return
        self._refused.add(key)
        self.refusals.refused(
            key,
            mid="",
            app=self._app_name,
            folder=f"{self._app_name}/{path.endpoint}",
            sender=path.peer,
            status=400,
            reason=f"ignored a request file with an invalid name: {path.name[:80]!r}",
        )

    def _checked_head(
        self, key: str, path: RpcPath, mid: str, auto_decrypt: bool
    ) -> Head | None:
        """The request's head, parsed once; ``None`` when it is not to run now.

        Not ready (partial), withdrawn, malformed, expired (419) and encrypted
        for an endpoint that does not decrypt are told apart here.
        """
        try:
            raw_head = self._rpc.read_head_bytes(key)
            head = parse_head(
                raw_head,
                expected_kind="request",
                max_message_bytes=self._max_message_bytes,
            )
        except MessageNotFound:
            self.incomplete.pop(key, None)  # withdrawn
            return None
        except IncompleteMessage as exc:
            self._not_ready(key, path.peer, mid, str(exc))
            return None
        except EnvelopeError as exc:
            self._refuse(path, mid, 400, f"malformed request: {exc}", key)
            return None
        try:
            expires_at = head.expires_at
        except EnvelopeError as exc:
            self._refuse(path, mid, 400, f"malformed request: {exc}", key)
            return None
        if expires_at <= self._clock():
            why = f"request expired at {head.expires}; it was not executed"
            self._refuse(path, mid, 419, why, key, expires=head.expires)
            return None
        if head.encrypted and not auto_decrypt:
            self._refuse(path, mid, 400, "endpoint does not decrypt requests", key)
            return None
        return head

    def _read_request(
        self, key: str, path: RpcPath, mid: str, head: Head
    ) -> Incoming | None:
        """The request's body, opened; ``None`` when it is not to run now."""
        try:
            return self._rpc.read(key, head=head)  # head parsed once, above
        except MessageNotFound:
            self.incomplete.pop(key, None)
        except IncompleteMessage as exc:
            self._not_ready(key, path.peer, mid, str(exc))
        except KeyNotFound as exc:
            # The sender's public keys are not visible (yet): a half-synced
            # did.json. Wait for them until the request expires (then 419).
            self._not_ready(key, path.peer, mid, f"waiting for its public keys: {exc}")
        except (SecurityError, EncryptionError) as exc:
            self._refuse(path, mid, 403, f"refused: {exc}", key, expires=head.expires)
        except EnvelopeError as exc:
            self._refuse(path, mid, 400, f"malformed request: {exc}", key)
        return None

    def _own_reply(self, response_key: str) -> bool:
        """Whether the reply file at ``response_key`` is ours (then keep it).

        A reply from an earlier run of this data owner (its ledger lost, or
        another device) must not make the work run twice. Only one this data
        owner can vouch for counts: its own id and (encryption on) its own
        seal over that id and every signed head field. Anything else, an old
        reply of ours copied under this id included, is replaced by the real
        answer.
        """
        try:
            return self._rpc.vouch_for_reply(response_key)
        except MessageNotFound:
            return True  # gone meanwhile: the next pass decides

    def replied_or_refused(self, key: str) -> bool:
        """Whether this data owner answered (or refused) the request at ``key``."""
        mid = key.rsplit("/", 1)[-1][: -len(".request")]
        return (
            mid in self._delivery.answered
            or mid in self._ledger
            or key in self._refused
        )

    def _answer_again(
        self,
        path: RpcPath,
        mid: str,
        key: str,
        state: str | None,
        expires: str,
        expires_at: float,
    ) -> None:
        """A request this data owner has already started: never run it again."""
        if mid in self._delivery.retries:
            return  # its reply is queued for another write attempt
        try:
            stored = self._ledger.stored_reply(mid, peer=path.peer)
        except StateIntegrityError as exc:  # never send what we cannot vouch for
            self._refuse(
                path, mid, 409, f"{exc}; it is not run again", key, expires=expires
            )
            return
        if stored is not None:
            logger.info("request %s was answered before; sending the same reply", mid)
            self._delivery.send(path, mid, stored[0], stored[1], expires, expires_at)
            return
        why = (
            f"request {mid} was already executed; it is not run again"
            if state != RUNNING
            else f"the data owner stopped while request {mid} was running; it is "
            "not run again"
        )
        self._refuse(path, mid, 409, why, key, expires=expires)

    def _refuse(
        self,
        path: RpcPath,
        mid: str,
        status: int,
        reason: str,
        key: str,
        *,
        expires: str | None = None,
    ) -> None:
        self.incomplete.pop(key, None)
        if key in self._refused:
            return  # already answered and logged
        self._refused.add(key)
        self.refusals.refused(
            key,
            mid=mid,
            app=self._app_name,
            folder=f"{self._app_name}/{path.endpoint}",
            sender=path.peer,
            status=status,
            reason=reason,
        )
        self._delivery.send_refusal(path, mid, status, reason, expires)

    def _not_ready(self, key: str, sender: str, mid: str, why: str) -> None:
        first = self.incomplete.setdefault(key, time.monotonic())
        if time.monotonic() - first > INCOMPLETE_WARN_AFTER and key not in self._warned:
            self._warned.add(key)
            if not self.refusals.first_time("incomplete:" + key):
                return  # warned about before a restart
            logger.warning(
                "request %s from %s is still incomplete after %.0f s (%s); "
                "waiting for the rest to sync, nothing was deleted",
                mid,
                sender,
                INCOMPLETE_WARN_AFTER,
                why,
            )

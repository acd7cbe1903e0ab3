"""One request loop for every transport.

:class:`TransportEvents` serves requests arriving at an app's endpoints: it
reacts to the transport's watch callbacks (watchdog on SyftBox, the changes
feed on Drive, direct calls in memory), serves everything already pending at
start, and rescans every ``poll_interval`` for anything a watch missed.

Guarantees, in the order they are checked for each request:

1. a request whose response exists is not run again;
2. a partial/unparsable request is "not ready yet": never deleted, never
   answered; retried on the next event or rescan (a warning after a grace period);
3. a sender who is not allowed, or whose file sits in another party's folder,
   gets a 403 and nothing runs (no reply at all where the transport deals only
   with allowed peers, as on Google Drive);
4. an expired request gets a 419 and is not executed;
5. an undecryptable or (with encryption on) plaintext request gets an error reply;
6. a request id already executed (durable ledger, survives restarts) gets a 409;
7. otherwise the handler runs once; its exception becomes a 500 reply whose body
   says what failed (type and message only; the traceback stays in the local log).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from syft_flwr._email import fold_domain
from syft_flwr.client.protocol import SyftFlwrClient
from syft_flwr.config import Settings, parse_duration
from syft_flwr.data_owner.audit import AuditLog
from syft_flwr.data_owner.delivery import Delivery, _Retry
from syft_flwr.data_owner.execute import Execution
from syft_flwr.data_owner.ledger import (
    REPLIED,
    RUNNING,
    STORED,
    TAINTED,
    open_ledger,
)
from syft_flwr.data_owner.protocol import MessageHandler, SyftFlwrEvents
from syft_flwr.data_owner.refusals import RefusalLog
from syft_flwr.data_owner.sweeps import Sweeps
from syft_flwr.data_owner.worker import (
    HandlerWorker,
    ReplyAlias,
    RequestInfo,
    _current,  # noqa: F401 - the contextvar, where tests look it up
    current_request,
)
from syft_flwr.errors import (
    EncryptionError,
    EnvelopeError,
    IncompleteMessage,
    KeyNotFound,
    MessageNotFound,
    SecurityError,
    StateIntegrityError,
    TransportError,
)
from syft_flwr.transports.base import RpcPath, Transport, Watch
from syft_flwr.wire.envelope import ID_PATTERN, Head, parse_head
from syft_flwr.wire.mailbox import CodecPolicy, Incoming, SyftFlwrRpc

__all__ = ["RequestInfo", "TransportEvents", "current_request"]

logger = logging.getLogger("syft_flwr.events")

#: Seconds a request may stay unreadable before we warn (it is never deleted).
INCOMPLETE_WARN_AFTER = 30.0


@dataclass
class _Endpoint:
    name: str
    handler: MessageHandler
    auto_decrypt: bool
    encrypt_reply: bool


_STOP = "\x00stop"


#: The old private name of :class:`~syft_flwr.data_owner.worker.ReplyAlias`.
_ReplyKeep = ReplyAlias


class TransportEvents(SyftFlwrEvents):
    """Serve requests for ``app_name`` over a transport.

    Parameters
    ----------
    app_name:
        The app folder name under ``app_data``.
    client:
        The local identity.
    transport:
        Defaults to ``client.make_transport()``.
    policy:
        Body codec policy (encryption); defaults to plaintext.
    settings:
        Defaults to ``Settings.from_env()``.
    cleanup_expiry, cleanup_interval:
        Delete exchanges older than ``cleanup_expiry`` every ``cleanup_interval``
        (durations like ``"1d"``, ``"12h"``).
    poll_interval:
        Seconds between fallback rescans (events are the primary signal).
    allowed_senders:
        If given, only these emails may have requests executed.
    clock:
        POSIX time source (injectable for expiry tests).
    audit:
        The audit trail (default: the identity's, in its private state).
    """

    DRAIN_TIMEOUT = 0.5  # seconds

    def __init__(
        self,
        app_name: str,
        client: SyftFlwrClient,
        *,
        transport: Transport | None = None,
        policy: CodecPolicy | None = None,
        settings: Settings | None = None,
        cleanup_expiry: str | float = "1d",
        cleanup_interval: str | float = "1d",
        poll_interval: float | None = None,
        allowed_senders: Iterable[str] | None = None,
        clock: Callable[[], float] = time.time,
        audit: AuditLog | None = None,
    ) -> None:
        self._client = client
        self.app_name = app_name.strip("/")
        self.settings = settings or Settings.from_env()
        self._owns_transport = transport is None
        self.transport = transport or client.make_transport()
        if policy is None:
            from syft_flwr.crypto.policy import default_policy

            policy = default_policy(client, self.transport, self.settings)
        self.rpc = SyftFlwrRpc(
            self.transport,
            self.app_name,
            settings=self.settings,
            policy=policy,
            clock=clock,
        )
        self.clock = clock
        self.cleanup_interval = parse_duration(cleanup_interval)
        self.poll_interval = float(
            poll_interval if poll_interval is not None else self.settings.poll_interval
        )
        self.allowed_senders = (
            None
            if allowed_senders is None
            else {fold_domain(s) for s in allowed_senders}
        )
        self.ledger = open_ledger(
            client.state_dir(self.app_name), client, policy, clock
        )
        #: What ran on this data owner's data, for whom, when, and what left.
        self.audit = audit or AuditLog.for_client(client, clock=clock)
        #: Refusals logged once per file (across restarts), within a quota per
        #: sender and folder, so a flood cannot push real entries out.
        self.refusals = RefusalLog(self.audit, clock=clock)
        self._endpoints: dict[str, _Endpoint] = {}
        self._queue: queue.Queue[str] = queue.Queue()
        self._stop = threading.Event()
        self._running = threading.Event()
        self._watches: list[Watch] = []
        self._incomplete: dict[str, float] = {}  # head key -> first seen (monotonic)
        self._warned: set[str] = set()
        self._refused: set[str] = set()  # head keys refused (logged once)
        self._foreign_replies: set[str] = set()  # replies found that we never wrote
        #: Runs handlers off the loop thread, under their deadline.
        # The collaborators read ``self.clock`` through _now: it may be swapped.
        self._worker = HandlerWorker(self._stop, self._now)
        #: Writes replies, retrying those that could not be written.
        self._delivery = Delivery(
            self.rpc, self.ledger, self.audit, self.app_name, self._now
        )
        #: Runs an admitted request once; keeps and delivers its reply.
        self._execution = Execution(
            self.rpc,
            self.ledger,
            self.audit,
            self.app_name,
            self._worker,
            self._delivery,
            self._stop,
            self._now,
        )
        #: Removes what the requester has read, old exchanges and stray chunks.
        self._sweeps = Sweeps(
            self.transport,
            self.rpc,
            self.ledger,
            client.email,
            lambda: list(self._endpoints),
            parse_duration(cleanup_expiry),
            self._now,
        )
        #: Seconds to wait at exit for the requester to read our last replies
        #: (kept short so stop() returns within a second; Drive overrides it).
        self.drain_timeout = type(self).DRAIN_TIMEOUT

    def _now(self) -> float:
        return self.clock()

    # -- protocol -------------------------------------------------------------
    @property
    def client_email(self) -> str:
        return self._client.email

    @property
    def app_dir(self) -> Path:
        return self._client.app_data(self.app_name)

    @property
    def is_running(self) -> bool:
        return self._running.is_set()

    @property
    def served(self) -> int:
        """How many replies this process wrote."""
        return self._delivery.served

    @property
    def cleanup_expiry(self) -> float:
        """Seconds after which an old exchange or a stray chunk is removed."""
        return self._sweeps.cleanup_expiry

    @cleanup_expiry.setter
    def cleanup_expiry(self, seconds: float) -> None:
        self._sweeps.cleanup_expiry = seconds

    @property
    def _retries(self) -> dict[str, _Retry]:
        """Replies waiting for another write attempt, by request id."""
        return self._delivery.retries

    @property
    def _answered(self) -> set[str]:
        """Ids this process replied to."""
        return self._delivery.answered

    def on_request(
        self,
        endpoint: str,
        handler: MessageHandler,
        auto_decrypt: bool = True,
        encrypt_reply: bool = False,
    ) -> None:
        name = endpoint.strip("/")
        if not name or "/" in name:
            raise ValueError(f"endpoint must be one path segment, got {endpoint!r}")
        self._endpoints[name] = _Endpoint(name, handler, auto_decrypt, encrypt_reply)
        if self.is_running:
            self._start_endpoint(self._endpoints[name])

    def run_forever(self) -> None:
        if not self._endpoints:
            raise RuntimeError(
                "register a handler with on_request() before run_forever()"
            )
        self._stop.clear()
        self._running.set()
        try:
            # A snapshot: on_request() may add an endpoint from another thread.
            for ep in list(self._endpoints.values()):
                self._start_endpoint(ep)
            logger.info(
                "%s is serving app %s over %s (endpoints: %s)",
                self.client_email,
                self.app_name,
                self.transport.name,
                ", ".join(self._endpoints),
            )
            self._loop()
            self._drain()
        finally:
            self.refusals.close()  # the counts of this run, then the memory file
            for w in self._watches:
                w.cancel()
            self._watches.clear()
            self._running.clear()

    def stop(self) -> None:
        self._stop.set()
        self._queue.put(_STOP)

    def close(self) -> None:
        """Stop, and close the transport if this object created it."""
        self.stop()
        if self._owns_transport:
            self.transport.close()

    # -- internals ------------------------------------------------------------
    def _start_endpoint(self, ep: _Endpoint) -> None:
        self.transport.prepare(
            self.app_name, ep.name, sorted(self.allowed_senders or ())
        )
        self._watches.append(self.rpc.watch_requests(ep.name, self._queue.put))
        self._rescan()

    def _rescan(self) -> None:
        for name in list(self._endpoints):  # on_request() may add one meanwhile
            try:
                for key, answered in self.rpc.request_keys(name):
                    # A request with a reply we did not write (planted) is
                    # still ours to answer.
                    if not answered or not self._replied_or_refused(key):
                        self._queue.put(key)
            except TransportError as exc:
                logger.warning("could not list requests for %s: %s", name, exc)

    def _loop(self) -> None:
        mono = time.monotonic
        next_rescan = mono() + self.poll_interval
        next_cleanup = mono() + min(self.cleanup_interval, 3600.0)
        while not self._stop.is_set():
            busy = self._incomplete or self._retries
            wait = max(0.0, min(next_rescan - mono(), 0.25 if busy else 1.0))
            try:
                key = self._queue.get(timeout=wait)
            except queue.Empty:
                key = None
            if self._stop.is_set():
                break
            if key is not None and key != _STOP:
                self._handle_key(key)
            if self._incomplete and key is None:
                for k in list(self._incomplete):
                    self._handle_key(k)
            if self._retries:
                self._delivery.retry_due()
            now = mono()
            if now >= next_rescan:
                self.refusals.flush_due()
                self._rescan()
                self._sweeps.answered()
                next_rescan = now + self.poll_interval
            if now >= next_cleanup:
                self.cleanup()
                self.ledger.trim()
                next_cleanup = now + self.cleanup_interval

    def _handle_key(self, key: str) -> None:
        try:
            self._process(key)
        except Exception:  # the loop must survive anything a file can do to it
            logger.exception("unexpected error while serving %s", key)

    def _process(self, key: str) -> None:
        """Take the request at ``key`` through the guarantees, in their order."""
        path = RpcPath.parse(key)
        if path is None or path.owner != self.client_email:
            return
        ep = self._endpoints.get(path.endpoint)
        if ep is None:
            return
        mid = path.name[: -len(".request")]
        if self._reply_is_ours(key, path, mid):
            return
        if not ID_PATTERN.match(mid):
            self._ignore_bad_name(key, path)
            return
        # Sender check before reading the body: nothing of an unknown sender is
        # decrypted or parsed beyond the head.
        sender = path.peer
        if self.allowed_senders is not None and sender not in self.allowed_senders:
            self._refuse(
                path, mid, 403, f"{sender} is not an allowed sender for this app", key
            )
            return
        head = self._checked_head(key, path, mid, ep)
        if head is None:
            return
        if mid in self._answered:
            # We answered it and the requester deleted our reply first while
            # cleaning up (its request deletion has not arrived yet): not a replay.
            return
        state = self.ledger.state(mid)
        if state in (RUNNING, STORED, REPLIED, TAINTED):
            self._incomplete.pop(key, None)
            self._answer_again(path, mid, key, state, head.expires, head.expires_at)
            return
        incoming = self._read_request(key, path, mid, head)
        if incoming is not None:
            self._incomplete.pop(key, None)
            self._execution.run(ep.name, ep.handler, incoming)

    def _reply_is_ours(self, key: str, path: RpcPath, mid: str) -> bool:
        """Whether a reply to ``key`` is there and ours: then nothing is to be done.

        A reply this data owner never wrote (planted, or left by a broken sync)
        must not stop the real answer, which replaces it.
        """
        response_key = key[: -len(".request")] + ".response"
        if not self.transport.exists(response_key):
            return False
        if self._replied_or_refused(key) or self._own_reply(response_key):
            self._incomplete.pop(key, None)
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
                self.client_email,
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
            app=self.app_name,
            folder=f"{self.app_name}/{path.endpoint}",
            sender=path.peer,
            status=400,
            reason=f"ignored a request file with an invalid name: {path.name[:80]!r}",
        )

    def _checked_head(
        self, key: str, path: RpcPath, mid: str, ep: _Endpoint
    ) -> Head | None:
        """The request's head, parsed once; ``None`` when it is not to run now.

        Not ready (partial), withdrawn, malformed, expired (419) and encrypted
        for an endpoint that does not decrypt are told apart here.
        """
        try:
            raw_head = self.rpc.read_head_bytes(key)
            head = parse_head(
                raw_head,
                expected_kind="request",
                max_message_bytes=self.settings.max_message_bytes,
            )
        except MessageNotFound:
            self._incomplete.pop(key, None)  # withdrawn
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
        if expires_at <= self.clock():
            why = f"request expired at {head.expires}; it was not executed"
            self._refuse(path, mid, 419, why, key, expires=head.expires)
            return None
        if head.encrypted and not ep.auto_decrypt:
            self._refuse(path, mid, 400, "endpoint does not decrypt requests", key)
            return None
        return head

    def _read_request(
        self, key: str, path: RpcPath, mid: str, head: Head
    ) -> Incoming | None:
        """The request's body, opened; ``None`` when it is not to run now."""
        try:
            return self.rpc.read(key, head=head)  # head parsed once, above
        except MessageNotFound:
            self._incomplete.pop(key, None)
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
            return self.rpc.vouch_for_reply(response_key)
        except MessageNotFound:
            return True  # gone meanwhile: the next pass decides

    def _replied_or_refused(self, key: str) -> bool:
        """Whether this data owner answered (or refused) the request at ``key``."""
        mid = key.rsplit("/", 1)[-1][: -len(".request")]
        return mid in self._answered or mid in self.ledger or key in self._refused

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
        if mid in self._retries:
            return  # its reply is queued for another write attempt
        try:
            stored = self.ledger.stored_reply(mid, peer=path.peer)
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
        self._incomplete.pop(key, None)
        if key in self._refused:
            return  # already answered and logged
        self._refused.add(key)
        self.refusals.refused(
            key,
            mid=mid,
            app=self.app_name,
            folder=f"{self.app_name}/{path.endpoint}",
            sender=path.peer,
            status=status,
            reason=reason,
        )
        self._delivery.send_refusal(path, mid, status, reason, expires)

    def _not_ready(self, key: str, sender: str, mid: str, why: str) -> None:
        first = self._incomplete.setdefault(key, time.monotonic())
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

    def _drain(self) -> None:
        """Before exiting, wait briefly for the requester to consume our last replies.

        Then delete them: where only a file's owner may delete it (Google Drive),
        nobody else would.
        """
        deadline = time.monotonic() + self.drain_timeout
        self._delivery.flush()
        while True:
            left = self._sweeps.answered()
            if not left or time.monotonic() >= deadline:
                if left:
                    logger.info(
                        "%d replies not yet read by the researcher remain", left
                    )
                return
            time.sleep(0.2)

    def cleanup(self) -> int:
        """Housekeeping; return how many exchanges or stray files were removed.

        * exchanges created before ``cleanup_expiry`` ago, and requests that
          expired over an hour ago (answered with 419 or never picked up);
        * chunk files without a head (a writer that crashed, or planted files),
          once they have been seen orphaned for ``cleanup_expiry``.
        Files this identity may not delete are left alone.
        """
        return self._sweeps.cleanup()

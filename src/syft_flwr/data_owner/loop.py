"""One request loop for every transport.

(Size: slightly over 400 lines: the loop, its lifecycle, and the compatibility
properties that keep ``TransportEvents``' attributes where callers found them.)

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
from syft_flwr.data_owner.admission import Admission
from syft_flwr.data_owner.audit import AuditLog
from syft_flwr.data_owner.delivery import Delivery, _Retry
from syft_flwr.data_owner.execute import Execution
from syft_flwr.data_owner.ledger import (
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
    TransportError,
)
from syft_flwr.transports.base import RpcPath, Transport, Watch
from syft_flwr.wire.mailbox import CodecPolicy, SyftFlwrRpc

__all__ = ["RequestInfo", "TransportEvents", "current_request"]

logger = logging.getLogger("syft_flwr.events")


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
        self._make_owners(
            None
            if allowed_senders is None
            else {fold_domain(e) for e in allowed_senders},
            parse_duration(cleanup_expiry),
        )
        #: Seconds to wait at exit for the requester to read our last replies
        #: (kept short so stop() returns within a second; Drive overrides it).
        self.drain_timeout = type(self).DRAIN_TIMEOUT

    def _make_owners(
        self, allowed_senders: set[str] | None, cleanup_expiry: float
    ) -> None:
        """The loop's collaborators, each the owner of its own state."""
        #: Runs handlers off the loop thread, under their deadline.
        # The collaborators read ``self.clock`` through _now: it may be swapped.
        self._worker = HandlerWorker(self._stop, self._now)
        #: Writes replies, retrying those that could not be written.
        self._delivery = Delivery(
            self.rpc, self.ledger, self.audit, self.app_name, self._now
        )
        #: Checks each request file against the guarantees before anything runs.
        self._admission = Admission(
            owner=self.client_email,
            app_name=self.app_name,
            transport=self.transport,
            rpc=self.rpc,
            ledger=self.ledger,
            refusals=self.refusals,
            delivery=self._delivery,
            allowed_senders=allowed_senders,
            max_message_bytes=self.settings.max_message_bytes,
            clock=self._now,
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
            self.client_email,
            lambda: list(self._endpoints),
            cleanup_expiry,
            self._now,
        )

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
    def allowed_senders(self) -> set[str] | None:
        """Folded emails that may have requests executed (``None``: anyone)."""
        return self._admission.allowed_senders

    @allowed_senders.setter
    def allowed_senders(self, emails: set[str] | None) -> None:
        self._admission.allowed_senders = emails

    @property
    def _incomplete(self) -> dict[str, float]:
        """Request files not readable yet: head key -> first seen (monotonic)."""
        return self._admission.incomplete

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
                    if not answered or not self._admission.replied_or_refused(key):
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
        """Take the request at ``key`` through the guarantees; run it if admitted."""
        path = RpcPath.parse(key)
        if path is None or path.owner != self.client_email:
            return
        ep = self._endpoints.get(path.endpoint)
        if ep is None:
            return
        incoming = self._admission.admit(key, path, ep.auto_decrypt)
        if incoming is not None:
            self._execution.run(ep.name, ep.handler, incoming)

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

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

import contextvars
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from syft_flwr._email import fold_domain
from syft_flwr.client.protocol import SyftFlwrClient
from syft_flwr.config import Settings, parse_duration
from syft_flwr.data_owner.audit import AuditLog
from syft_flwr.data_owner.ledger import (
    RECEIVED,
    REPLIED,
    RUNNING,
    STORED,
    TAINTED,
    Ledger,
    open_ledger,
)
from syft_flwr.data_owner.protocol import MessageHandler, SyftFlwrEvents
from syft_flwr.data_owner.refusals import RefusalLog
from syft_flwr.errors import (
    EncryptionError,
    EnvelopeError,
    IncompleteMessage,
    KeyNotFound,
    MessageNotFound,
    PermissionDenied,
    SecurityError,
    StateIntegrityError,
    TransportError,
)
from syft_flwr.transports.base import RpcPath, Transport, Watch
from syft_flwr.wire import frames
from syft_flwr.wire.envelope import ID_PATTERN, parse_head
from syft_flwr.wire.mailbox import CodecPolicy, Incoming, StoredParts, SyftFlwrRpc

__all__ = ["RequestInfo", "TransportEvents", "current_request"]

logger = logging.getLogger("syft_flwr.events")

#: Seconds a request may stay unreadable before we warn (it is never deleted).
INCOMPLETE_WARN_AFTER = 30.0


@dataclass(frozen=True)
class RequestInfo:
    """What a handler may want to know about the request it is serving."""

    id: str
    sender: str
    endpoint: str
    created: str
    expires: str
    headers: dict[str, str]
    encrypted: bool
    #: What the handler ran (message type, round group, run id...), for the
    #: data owner's audit trail; a handler may add names, never private values.
    audit: dict[str, object] = field(default_factory=dict)
    #: Where this request's reply is kept (see :meth:`keep_reply_as`).
    ledger: Ledger | None = field(default=None, repr=False, compare=False)
    _keep: _ReplyKeep | None = field(default=None, repr=False, compare=False)

    def keep_reply_as(self, alias: str) -> bool:
        """Ask for this request's reply to be findable under ``alias`` too.

        The reply is stored once, in :attr:`ledger`, when the handler returns
        (and before it is sent); ``ledger.alias_reply(alias)`` then finds it.
        A reply cache uses this instead of writing a second copy. Returns False
        when the reply is no longer the handler's to give (it overran its
        deadline, or there is no ledger): the caller keeps it itself.
        """
        keep = self._keep
        if keep is None:
            return False
        with keep.lock:
            if keep.closed:
                return False
            keep.alias = alias
            return True


_current: contextvars.ContextVar[RequestInfo | None] = contextvars.ContextVar(
    "syft_flwr_current_request", default=None
)


def current_request() -> RequestInfo | None:
    """Return the request being served by the current handler call, if any."""
    return _current.get()


class _ReplyKeep:
    """A handler's :meth:`RequestInfo.keep_reply_as` request, until the reply is taken."""

    __slots__ = ("alias", "closed", "lock")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.alias: str | None = None
        self.closed = False

    def close(self) -> str | None:
        with self.lock:
            self.closed = True
            return self.alias


@dataclass
class _Endpoint:
    name: str
    handler: MessageHandler
    auto_decrypt: bool
    encrypt_reply: bool


_STOP = "\x00stop"


class _HandlerWorker:
    """One long-lived daemon thread that runs handlers, one at a time.

    Handlers run off the loop thread so the loop can stop and enforce deadlines
    while a ClientApp runs; one thread for all calls (not one per call) keeps
    the hand-off cheap. A handler that never returns keeps the thread: later
    jobs queue behind it, so the ClientApp is never called twice at once.
    """

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[], None], threading.Event]] = (
            queue.SimpleQueue()
        )
        self._idle = threading.Event()
        self._idle.set()
        self._pending = 0
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def submit(self, fn: Callable[[], None]) -> threading.Event:
        """Queue ``fn``; the returned event is set when it has returned."""
        done = threading.Event()
        with self._lock:
            self._pending += 1
            self._idle.clear()
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="syft_flwr-handler", daemon=True
                )
                self._thread.start()
        self._jobs.put((fn, done))
        return done

    def wait_idle(self, timeout: float) -> bool:
        """True once no handler is queued or running."""
        return self._idle.wait(timeout)

    def _run(self) -> None:
        while True:
            fn, done = self._jobs.get()
            try:
                fn()
            finally:
                done.set()
                with self._lock:
                    self._pending -= 1
                    if self._pending == 0:
                        self._idle.set()


@dataclass
class _Retry:
    path: RpcPath
    status: int
    body: bytes
    expires: str
    expires_at: float
    next_at: float
    delay: float


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
        self.cleanup_expiry = parse_duration(cleanup_expiry)
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
        self._answered: set[str] = set()  # ids this process replied to
        self._retries: dict[str, _Retry] = {}  # replies waiting for another write
        self._worker = _HandlerWorker()  # runs handlers off the loop thread
        self._refused: set[str] = set()  # head keys refused (logged once)
        self._foreign_replies: set[str] = set()  # replies found that we never wrote
        self._orphans: dict[str, float] = {}  # chunk key -> first seen headless
        self.served = 0
        #: Seconds to wait at exit for the requester to read our last replies
        #: (kept short so stop() returns within a second; Drive overrides it).
        self.drain_timeout = type(self).DRAIN_TIMEOUT

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
            for ep in self._endpoints.values():
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
        for name in self._endpoints:
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
                self._retry_due()
            now = mono()
            if now >= next_rescan:
                self.refusals.flush_due()
                self._rescan()
                self._sweep_answered()
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
        path = RpcPath.parse(key)
        if path is None or path.owner != self.client_email:
            return
        ep = self._endpoints.get(path.endpoint)
        if ep is None:
            return
        response_key = key[: -len(".request")] + ".response"
        mid = path.name[: -len(".request")]
        sender = path.peer
        if self.transport.exists(response_key):
            if self._replied_or_refused(key) or self._own_reply(response_key):
                self._incomplete.pop(key, None)
                return
            # A reply this data owner never wrote (planted, or left by a broken
            # sync): it must not stop the real answer, which replaces it.
            if key not in self._foreign_replies:
                self._foreign_replies.add(key)
                logger.warning(
                    "a reply to request %s from %s is already there but was not "
                    "written by %s for this request as it stands (another "
                    "request's reply, altered, or not sealed by it); it will be "
                    "replaced by the real answer",
                    mid,
                    sender,
                    self.client_email,
                )
        if not ID_PATTERN.match(mid):
            # Not a name any requester writes (a path trick, a newline, ...):
            # never read, never run, never answered (a reply would reuse it).
            if key not in self._refused:
                self._refused.add(key)
                self.refusals.refused(
                    key,
                    mid="",
                    app=self.app_name,
                    folder=f"{self.app_name}/{path.endpoint}",
                    sender=sender,
                    status=400,
                    reason=f"ignored a request file with an invalid name: "
                    f"{path.name[:80]!r}",
                )
            return

        # Sender check before reading the body: nothing of an unknown sender is
        # decrypted or parsed beyond the head.
        if self.allowed_senders is not None and sender not in self.allowed_senders:
            self._refuse(
                path, mid, 403, f"{sender} is not an allowed sender for this app", key
            )
            return
        try:
            raw_head = self.rpc.read_head_bytes(key)
            head = parse_head(
                raw_head,
                expected_kind="request",
                max_message_bytes=self.settings.max_message_bytes,
            )
        except MessageNotFound:
            self._incomplete.pop(key, None)  # withdrawn
            return
        except IncompleteMessage as exc:
            self._not_ready(key, sender, mid, str(exc))
            return
        except EnvelopeError as exc:
            self._refuse(path, mid, 400, f"malformed request: {exc}", key)
            return
        try:
            expires_at = head.expires_at
        except EnvelopeError as exc:
            self._refuse(path, mid, 400, f"malformed request: {exc}", key)
            return
        if expires_at <= self.clock():
            self._refuse(
                path,
                mid,
                419,
                f"request expired at {head.expires}; it was not executed",
                key,
                expires=head.expires,
            )
            return
        if head.encrypted and not ep.auto_decrypt:
            self._refuse(path, mid, 400, "endpoint does not decrypt requests", key)
            return
        if mid in self._answered:
            # We answered it and the requester deleted our reply first while
            # cleaning up (its request deletion has not arrived yet): not a replay.
            return
        state = self.ledger.state(mid)
        if state in (RUNNING, STORED, REPLIED, TAINTED):
            self._incomplete.pop(key, None)
            self._answer_again(path, mid, key, state, head.expires, expires_at)
            return
        try:
            incoming = self.rpc.read(key, head=head)  # parsed once, above
        except MessageNotFound:
            self._incomplete.pop(key, None)
            return
        except IncompleteMessage as exc:
            self._not_ready(key, sender, mid, str(exc))
            return
        except KeyNotFound as exc:
            # The sender's public keys are not visible (yet): a half-synced
            # did.json. Wait for them until the request expires (then 419).
            self._not_ready(key, sender, mid, f"waiting for its public keys: {exc}")
            return
        except (SecurityError, EncryptionError) as exc:
            self._refuse(path, mid, 403, f"refused: {exc}", key, expires=head.expires)
            return
        except EnvelopeError as exc:
            self._refuse(path, mid, 400, f"malformed request: {exc}", key)
            return
        self._incomplete.pop(key, None)
        self._execute(ep, incoming)

    def _fingerprint(self, email: str) -> str | None:
        """The sender's key fingerprint, when encryption is on.

        Taken from the key directory's cached bundle (the one that just opened
        the request, checked against the pin), not from the pin file on disk:
        no file read per request.
        """
        directory = getattr(self.rpc.policy, "directory", None)
        if directory is None:
            return None
        from syft_flwr.crypto.keys import fingerprint

        try:
            return fingerprint(directory.get(email))
        except Exception:  # noqa: BLE001 - the audit never stops serving
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

    def _execute(self, ep: _Endpoint, incoming: Incoming) -> None:
        """Run the handler once, deliver its reply, then keep it.

        received -> running -> stored/replied: ``running`` is durable before the
        handler starts (never run twice); a reply that could not be delivered is
        kept durably and retried (never lost).
        """
        mid, head = incoming.id, incoming.head
        expires_at = head.expires_at
        self.ledger.mark(mid, RECEIVED, expires_at, durable=False)
        self.audit.record(
            "received",
            id=mid,
            app=self.app_name,
            sender=incoming.sender,
            fingerprint=self._fingerprint(incoming.sender),
            bytes=len(incoming.body),
            encrypted=head.encrypted,
        )
        if not self._wait_idle(expires_at):
            if not self._stop.is_set():
                self._deliver(
                    incoming.path,
                    mid,
                    504,
                    b"an earlier ClientApp call is still running past its deadline; "
                    b"this request expired waiting for it and was not run",
                    head.expires,
                    expires_at,
                )
            return
        self.ledger.mark(mid, RUNNING, expires_at)
        started = self.clock()
        info_box: dict[str, object] = {}
        reply_alias = _ReplyKeep()
        outcome = self._run_handler(ep, incoming, expires_at, info_box, reply_alias)
        alias = reply_alias.close()  # a handler past its deadline may no longer ask
        self.audit.record(
            "run",
            id=mid,
            app=self.app_name,
            sender=incoming.sender,
            start=round(started, 3),
            end=round(self.clock(), 3),
            status="stopped" if outcome is None else outcome[0],
            **info_box,
        )
        if outcome is None:  # stopping: the run's result is not awaited
            return
        status, body = outcome
        if status != 200:
            alias = None  # only the handler's own answer is worth reusing
        # The reply is kept once its attachments are stored and before its
        # head makes it visible: no crash after it leaves can make the
        # ClientApp run twice (the handler's reply cache finds it under
        # ``alias`` when a resumed researcher re-sends the request under a new
        # id). Attachments are kept by linking the sealed chunks just written,
        # so the data owner stores a large reply once.
        kept: list[bool] = []

        def keep(stored: StoredParts) -> None:
            kept.append(
                self._keep_reply(
                    mid,
                    status,
                    body,
                    expires_at,
                    alias=alias,
                    stored=stored,
                    peer=incoming.path.peer,
                )
            )

        delivered = self._deliver(
            incoming.path, mid, status, body, head.expires, expires_at, keep
        )
        if not delivered:
            # Kept durably, retried with backoff (and after a restart).
            self._keep_reply(
                mid,
                status,
                body,
                expires_at,
                durable=True,
                again=any(kept),
                alias=None if any(kept) else alias,
                peer=incoming.path.peer,
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
                self.ledger.sync_reply(mid)
            elif stored is None or not self.ledger.store_sealed(
                mid,
                status,
                stored.body,
                lambda folder, stem: self.rpc.link_parts(stored, folder, stem),
                expires_at,
                size=frames.total_size(body),
                durable=durable,
                alias=alias,
                peer=peer,
            ):
                self.ledger.store_reply(
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

    def _run_handler(
        self,
        ep: _Endpoint,
        incoming: Incoming,
        expires_at: float,
        audit_out: dict[str, object] | None = None,
        keep: _ReplyKeep | None = None,
    ) -> tuple[int, bytes] | None:
        """Call the handler in a worker thread, never past the request's expiry.

        Returns ``(status, body)``, or ``None`` when the loop is stopping (the
        stop signal and Ctrl-C are honoured while a ClientApp runs). A handler
        that overruns gets a 504 reply at the deadline; it keeps running in the
        background (Python cannot kill a thread) and the next request waits for
        it, so the ClientApp is never called twice at once.
        """
        info = RequestInfo(
            id=incoming.id,
            sender=incoming.sender,
            endpoint=ep.name,
            created=incoming.head.created,
            expires=incoming.head.expires,
            headers=dict(incoming.head.headers),
            encrypted=incoming.head.encrypted,
            audit=audit_out if audit_out is not None else {},
            ledger=self.ledger,
            _keep=keep,
        )
        box: dict[str, object] = {}

        def work() -> None:
            token = _current.set(info)
            try:
                box["result"] = ep.handler(incoming.body)
            except BaseException as exc:  # noqa: BLE001 - reported as a 500 below
                box["error"] = exc
                logger.exception(
                    "handler for %s raised on request %s", ep.name, incoming.id
                )
            finally:
                _current.reset(token)

        done = self._worker.submit(work)
        while not done.wait(timeout=0.1):
            if self._stop.is_set():
                logger.warning(
                    "stopping while the ClientApp still runs request %s; it gets "
                    "no reply and is not run again",
                    incoming.id,
                )
                return None
            if self.clock() >= expires_at:
                logger.error(
                    "the ClientApp did not finish request %s before it expired; "
                    "the researcher is told so",
                    incoming.id,
                )
                return 504, (
                    b"the ClientApp did not finish before the request expired "
                    b"(details in the data owner's log)"
                )
        if "error" in box:
            exc = box["error"]
            return 500, f"{type(exc).__name__}: {exc}".encode()
        result = box.get("result")
        if isinstance(result, str):
            return 200, result.encode("utf-8")
        if result is None:
            return 200, b""
        # bytes (a FramedBody included, whose parts bytes() would drop) as is.
        if isinstance(result, bytes):
            return 200, result
        if isinstance(result, bytearray | memoryview):
            return 200, bytes(result)
        raise TypeError(f"a ClientApp handler returned {type(result).__name__}")

    def _wait_idle(self, expires_at: float) -> bool:
        """Wait for a handler that overran its deadline; False if we must give up."""
        while not self._worker.wait_idle(0.1):
            if self._stop.is_set() or self.clock() >= expires_at:
                return False
        return True

    def _deliver(
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
            self.rpc.send_response(
                path,
                request_id=mid,
                expires=expires,
                status_code=status,
                body=body,
                before_head=before_head,
            )
        except Exception as exc:  # noqa: BLE001 - any write failure is retried
            retry = self._retries.get(mid)
            delay = min(30.0, 0.5 if retry is None else retry.delay * 2)
            self._retries[mid] = _Retry(
                path, status, body, expires, expires_at, time.monotonic() + delay, delay
            )
            logger.warning(
                "could not write the reply to %s (%s); it is kept and retried in "
                "%.1f s",
                mid,
                exc,
                delay,
            )
            return False
        self._retries.pop(mid, None)
        # Not fsynced: if lost, a restart resends the stored reply (harmless).
        self.ledger.mark(mid, REPLIED, expires_at, durable=False)
        self.audit.record(
            "replied",
            id=mid,
            app=self.app_name,
            sender=path.peer,
            status=status,
            bytes=frames.total_size(body),
        )
        self._answered.add(mid)
        self.served += 1
        return True

    def _retry_due(self, *, force: bool = False) -> None:
        now = time.monotonic()
        for mid, r in list(self._retries.items()):
            if self.clock() >= r.expires_at:
                self._retries.pop(mid, None)
                logger.error(
                    "gave up writing the reply to %s: the request expired", mid
                )
                continue
            if force or now >= r.next_at:
                self._deliver(r.path, mid, r.status, r.body, r.expires, r.expires_at)

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
            self._deliver(path, mid, stored[0], stored[1], expires, expires_at)
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
        for plaintext in (False, True):
            try:
                self.rpc.send_response(
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
        if self._retries:
            self._retry_due(force=True)
            if self._retries:
                logger.warning(
                    "%d replies could not be written yet; they are kept and sent "
                    "when this data owner serves again",
                    len(self._retries),
                )
        while True:
            left = self._sweep_answered()
            if not left or time.monotonic() >= deadline:
                if left:
                    logger.info(
                        "%d replies not yet read by the researcher remain", left
                    )
                return
            time.sleep(0.2)

    def _sweep_answered(self) -> int:
        """Delete our responses whose request the requester already removed.

        On backends where only the owner may delete (Google Drive) this is how a
        data owner cleans up its own files once the researcher has read them.
        """
        remaining = 0
        for name in self._endpoints:
            try:
                keys = set(
                    self.transport.list(
                        self.rpc.endpoint_prefix(self.client_email, name)
                    )
                )
            except TransportError:
                continue
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
                        self.rpc.delete_message(p.folder, mid, "response")
                    except TransportError as exc:
                        logger.debug("could not delete %s: %s", k, exc)
                    # The requester has read it: no resend can come any more.
                    if ID_PATTERN.match(mid):
                        self.ledger.drop_reply(mid)
        return remaining

    def cleanup(self) -> int:
        """Housekeeping; return how many exchanges or stray files were removed.

        * exchanges created before ``cleanup_expiry`` ago, and requests that
          expired over an hour ago (answered with 419 or never picked up);
        * chunk files without a head (a writer that crashed, or planted files),
          once they have been seen orphaned for ``cleanup_expiry``.
        Files this identity may not delete are left alone.
        """
        now = self.clock()
        cutoff = now - self.cleanup_expiry
        removed = 0
        for name in self._endpoints:
            try:
                keys = self.transport.list(
                    self.rpc.endpoint_prefix(self.client_email, name)
                )
            except TransportError:
                continue
            removed += self._sweep_old_requests(keys, cutoff, now)
            removed += self._sweep_orphan_chunks(
                keys, self.rpc.endpoint_prefix(self.client_email, name) + "/"
            )
        if removed:
            logger.info("cleaned up %d old exchanges and stray files", removed)
        return removed

    def _sweep_old_requests(self, keys: list[str], cutoff: float, now: float) -> int:
        removed = 0
        for k in keys:
            if not k.endswith(".request"):
                continue
            try:
                head = parse_head(self.rpc.read_head_bytes(k))
                old = head.created_at < cutoff or head.expires_at < now - 3600.0
            except (EnvelopeError, TransportError):
                continue
            p = RpcPath.parse(k)
            if not old or p is None:
                continue
            mid = p.name[: -len(".request")]
            try:
                self.rpc.delete_message(p.folder, mid, "request")
                self.rpc.delete_message(p.folder, mid, "response")
            except TransportError as exc:
                logger.debug("could not clean up %s: %s", k, exc)
                continue
            removed += 1
        return removed

    def _sweep_orphan_chunks(self, keys: list[str], prefix: str) -> int:
        present = set(keys)
        mono = time.monotonic()
        removed = 0
        orphans = set()
        for k in keys:
            if not k.endswith(".chunk"):
                continue
            folder, _, name = k.rpartition("/")
            parts = name.split(".")
            if len(parts) != 4 or parts[1] not in ("request", "response"):
                continue
            if f"{folder}/{parts[0]}.{parts[1]}" in present:
                continue  # its head is there: not an orphan
            orphans.add(k)
            first = self._orphans.setdefault(k, mono)
            if mono - first < self.cleanup_expiry:
                continue
            try:
                self.transport.delete(k)
                removed += 1
                orphans.discard(k)
            except TransportError as exc:
                logger.debug("could not delete orphan chunk %s: %s", k, exc)
        # forget orphans of this endpoint that got their head or went away
        for k in [k for k in self._orphans if k.startswith(prefix)]:
            if k not in orphans:
                self._orphans.pop(k, None)
        return removed

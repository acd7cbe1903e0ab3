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
from dataclasses import dataclass
from pathlib import Path

from syft_flwr.client.protocol import SyftFlwrClient
from syft_flwr.config import Settings, parse_duration
from syft_flwr.envelope import parse_head
from syft_flwr.errors import (
    EncryptionError,
    EnvelopeError,
    IncompleteMessage,
    MessageNotFound,
    PermissionDenied,
    SecurityError,
    TransportError,
)
from syft_flwr.events.ledger import Ledger
from syft_flwr.events.protocol import MessageHandler, SyftFlwrEvents
from syft_flwr.rpc import CodecPolicy, Incoming, SyftFlwrRpc
from syft_flwr.transports.base import RpcPath, Transport, Watch

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


_current: contextvars.ContextVar[RequestInfo | None] = contextvars.ContextVar(
    "syft_flwr_current_request", default=None
)


def current_request() -> RequestInfo | None:
    """Return the request being served by the current handler call, if any."""
    return _current.get()


@dataclass
class _Endpoint:
    name: str
    handler: MessageHandler
    auto_decrypt: bool
    encrypt_reply: bool


_STOP = "\x00stop"


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
            None if allowed_senders is None else {s.lower() for s in allowed_senders}
        )
        self.ledger = Ledger(client.state_dir(self.app_name))
        self._endpoints: dict[str, _Endpoint] = {}
        self._queue: queue.Queue[str] = queue.Queue()
        self._stop = threading.Event()
        self._running = threading.Event()
        self._watches: list[Watch] = []
        self._incomplete: dict[str, float] = {}  # head key -> first seen (monotonic)
        self._warned: set[str] = set()
        self._answered: set[str] = set()  # ids this process replied to
        self._refused: set[str] = set()  # head keys refused (logged once)
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
                for key in self.rpc.pending_request_keys(name):
                    self._queue.put(key)
            except TransportError as exc:
                logger.warning("could not list requests for %s: %s", name, exc)

    def _loop(self) -> None:
        mono = time.monotonic
        next_rescan = mono() + self.poll_interval
        next_cleanup = mono() + min(self.cleanup_interval, 3600.0)
        while not self._stop.is_set():
            wait = max(
                0.0, min(next_rescan - mono(), 0.25 if self._incomplete else 1.0)
            )
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
            now = mono()
            if now >= next_rescan:
                self._rescan()
                self._sweep_answered()
                next_rescan = now + self.poll_interval
            if now >= next_cleanup:
                self.cleanup()
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
        if self.transport.exists(response_key):
            self._incomplete.pop(key, None)
            return
        mid = path.name[: -len(".request")]
        sender = path.peer

        # Sender check before reading the body: nothing of an unknown sender is
        # decrypted or parsed beyond the head.
        if self.allowed_senders is not None and sender not in self.allowed_senders:
            self._refuse(
                path, mid, 403, f"{sender} is not an allowed sender for this app", key
            )
            return
        try:
            raw_head = self.transport.get(key)
            head = parse_head(raw_head, expected_kind="request")
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
        if mid in self.ledger:
            self._refuse(
                path,
                mid,
                409,
                f"request {mid} was already executed; it is not run again",
                key,
                expires=head.expires,
            )
            return
        try:
            incoming = self.rpc.read(key, raw_head=raw_head)
        except MessageNotFound:
            self._incomplete.pop(key, None)
            return
        except IncompleteMessage as exc:
            self._not_ready(key, sender, mid, str(exc))
            return
        except (SecurityError, EncryptionError) as exc:
            self._refuse(path, mid, 403, f"refused: {exc}", key, expires=head.expires)
            return
        except EnvelopeError as exc:
            self._refuse(path, mid, 400, f"malformed request: {exc}", key)
            return
        self._incomplete.pop(key, None)
        self._execute(ep, incoming)

    def _execute(self, ep: _Endpoint, incoming: Incoming) -> None:
        # Record before running: a crash mid-handler must not lead to a second run.
        self.ledger.add(incoming.id)
        info = RequestInfo(
            id=incoming.id,
            sender=incoming.sender,
            endpoint=ep.name,
            created=incoming.head.created,
            expires=incoming.head.expires,
            headers=dict(incoming.head.headers),
            encrypted=incoming.head.encrypted,
        )
        token = _current.set(info)
        status, body = 200, b""
        try:
            result = ep.handler(incoming.body)
            if isinstance(result, str):
                body = result.encode("utf-8")
            elif result is not None:
                body = bytes(result)
        except Exception as exc:
            logger.exception(
                "handler for %s raised on request %s", ep.name, incoming.id
            )
            status, body = 500, f"{type(exc).__name__}: {exc}".encode()
        finally:
            _current.reset(token)
        try:
            self.rpc.send_response(incoming, status_code=status, body=body)
            self._answered.add(incoming.id)
            self.served += 1
        except Exception:
            logger.exception("could not write the reply to %s", incoming.id)

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
        logger.warning("refused request %s from %s: %s", mid, path.peer, reason)
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
                    try:
                        self.rpc.delete_message(
                            p.folder, p.name[: -len(".response")], "response"
                        )
                    except TransportError as exc:
                        logger.debug("could not delete %s: %s", k, exc)
        return remaining

    def cleanup(self) -> int:
        """Delete exchanges older than ``cleanup_expiry``; return how many."""
        cutoff = self.clock() - self.cleanup_expiry
        removed = 0
        for name in self._endpoints:
            try:
                keys = self.transport.list(
                    self.rpc.endpoint_prefix(self.client_email, name)
                )
            except TransportError:
                continue
            for k in keys:
                if not k.endswith(".request"):
                    continue
                try:
                    head = parse_head(self.transport.get(k))
                    old = head.created_at < cutoff
                except (EnvelopeError, TransportError):
                    continue
                if old:
                    p = RpcPath.parse(k)
                    if p is None:
                        continue
                    mid = p.name[: -len(".request")]
                    self.rpc.delete_message(p.folder, mid, "request")
                    self.rpc.delete_message(p.folder, mid, "response")
                    removed += 1
        if removed:
            logger.info("cleaned up %d old exchanges", removed)
        return removed

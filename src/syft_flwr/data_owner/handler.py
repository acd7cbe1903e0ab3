"""Data-owner side: serve a Flower ``ClientApp`` on private data until told to stop."""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from flwr.app import ConfigRecord, Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import ErrorCode

from syft_flwr._flwr_compat import SYSTEM_MESSAGE_TYPE, set_message_id, set_reply_to
from syft_flwr.client.factory import wrap_client
from syft_flwr.client.syft_p2p_client import restrict_peers
from syft_flwr.config import Settings
from syft_flwr.data_owner.loop import TransportEvents, current_request
from syft_flwr.data_owner.protocol import SyftFlwrEvents
from syft_flwr.errors import RunFailed, SerializationError, TransportError
from syft_flwr.events.factory import create_events_watcher
from syft_flwr.ids import node_id_for
from syft_flwr.researcher.grid import DEFAULT_ENDPOINT
from syft_flwr.researcher.journal import ReplyCache, request_fingerprint
from syft_flwr.review.guard import take_project_hash
from syft_flwr.serde import bytes_to_flower_message, split_message
from syft_flwr.transports.base import Transport, heartbeat_key
from syft_flwr.wire import frames

__all__ = ["ClientAppHandler", "Heartbeat", "run_data_owner", "syftbox_flwr_client"]

logger = logging.getLogger("syft_flwr.data_owner")


class ClientAppHandler:
    """Turns request bodies into ClientApp calls and replies (the events handler).

    Parameters
    ----------
    client_app:
        The Flower ``ClientApp`` (Message API or ``client_fn`` legacy).
    email:
        This data owner's email; its node id is the one the researcher uses.
    node_config:
        ``Context.node_config`` (e.g. ``partition-id`` in a local simulation).
    run_config:
        ``Context.run_config`` (the app's ``[tool.flwr.app.config]``).
    on_stop:
        Called when the researcher's stop signal arrives.
    reveal_errors:
        Put the exception message into error replies (default: only its type,
        because messages can carry private values). ``SYFT_FLWR_REVEAL_ERRORS``.
    check:
        Called with the project hash a request names (``None`` if none) before
        anything runs; a returned string refuses the request with that reason
        (e.g. :class:`~syft_flwr.review.guard.ProjectGuard`).
    reply_cache:
        Where successful replies are kept (private state), so a request re-sent
        by a resumed researcher is answered without running the ClientApp again.
    """

    def __init__(
        self,
        client_app: ClientApp,
        *,
        email: str,
        node_config: dict[str, Any] | None = None,
        run_config: dict[str, Any] | None = None,
        on_stop: Callable[[str], None] | None = None,
        reveal_errors: bool | None = None,
        check: Callable[[str | None], str | None] | None = None,
        reply_cache: ReplyCache | None = None,
    ) -> None:
        self.client_app = client_app
        self.reply_cache = reply_cache
        self.email = email
        self.node_id = node_id_for(email)
        self.node_config = dict(node_config or {})
        self.run_config = dict(run_config or {})
        self.on_stop = on_stop
        if reveal_errors is None:
            reveal_errors = Settings.from_env().reveal_errors
        self.reveal_errors = reveal_errors
        self._contexts: dict[int, Context] = {}
        self.stopped_reason: str | None = None
        #: How the researcher said the run ended ("completed", "failed", ...).
        self.stopped_outcome: str | None = None
        self.handled = 0
        self.succeeded = 0
        self.failed = 0
        self.check = check
        #: Requests refused by ``check`` (nothing ran for them).
        self.refused = 0
        #: Requests answered from the reply cache (ClientApp not run again).
        self.from_cache = 0

    def context_for(self, run_id: int) -> Context:
        """The persistent Context of ``run_id`` (its ``state`` survives rounds)."""
        ctx = self._contexts.get(run_id)
        if ctx is None:
            ctx = Context(
                run_id=run_id,
                node_id=self.node_id,
                node_config=dict(self.node_config),
                state=RecordDict(),
                run_config=dict(self.run_config),
            )
            self._contexts[run_id] = ctx
        return ctx

    def _finish(self, reply: Message) -> bytes:
        set_message_id(reply, str(uuid.uuid4()))
        # Large arrays stay in their own buffers (no join): the loop, the
        # ledger and the transport write them piece by piece.
        return split_message(reply).framed()

    def __call__(self, body: bytes) -> bytes | None:
        try:
            msg = bytes_to_flower_message(body)
        except SerializationError as exc:
            # Not a Flower message at all: an error status, there is nothing to reply to.
            raise SerializationError(f"request is not a Flower message: {exc}") from exc
        md = msg.metadata
        req = current_request()
        if req is not None:  # the audit trail: names and ids, never values
            req.audit.update(
                message_type=md.message_type, group=md.group_id, run_id=md.run_id
            )
        if md.dst_node_id != self.node_id:
            return self._finish(
                Message(
                    Error(
                        ErrorCode.MESSAGE_UNAVAILABLE,
                        f"{self.email}: message addressed to node {md.dst_node_id}, "
                        f"this data owner is node {self.node_id}",
                    ),
                    reply_to=msg,
                )
            )
        # Always taken out, so the ClientApp sees the content the strategy built.
        named = take_project_hash(msg)
        if md.message_type == SYSTEM_MESSAGE_TYPE:
            return self._system(msg)
        refusal = self.check(named) if self.check is not None else None
        if refusal is not None:
            # Answered through the same sealed reply path: an authenticated refusal.
            self.refused += 1
            if req is not None:
                req.audit["outcome"] = f"refused: {refusal}"
            return self._finish(
                Message(
                    Error(
                        ErrorCode.MESSAGE_UNAVAILABLE,
                        f"{self.email} refused the request: {refusal}",
                    ),
                    reply_to=msg,
                )
            )
        who = req.sender if req else "the researcher"
        logger.info(
            "running %s (round group %r) for %s", md.message_type, md.group_id, who
        )
        # The researcher names the content's hash in a body with large arrays
        # (sealed and signed with it): no second pass over the arrays here.
        # Keyed by the authenticated sender too, so a wrong name only ever
        # finds that sender's own earlier replies.
        fp = request_fingerprint(
            msg,
            with_sender=True,
            content_id=frames.content_id(body),
            sender=req.sender if req is not None else None,
        )
        cached = self.reply_cache.get(fp) if self.reply_cache is not None else None
        if cached is not None:
            logger.info(
                "answered the re-sent %s (round group %r) from the reply cache; "
                "the ClientApp is not run twice",
                md.message_type,
                md.group_id,
            )
            set_reply_to(cached, md.message_id)
            self.handled += 1
            self.succeeded += 1
            self.from_cache += 1
            if req is not None:
                req.audit["outcome"] = "ok (from the reply cache, not run again)"
            return self._finish(cached)
        ctx = self.context_for(md.run_id)
        try:
            reply = self.client_app(message=msg, context=ctx)
        except Exception as exc:
            # The full trace stays here; the reply names the failure only.
            logger.exception("the ClientApp raised while handling %s", md.message_type)
            detail = (
                f": {exc}"
                if self.reveal_errors
                else " (details in the data owner's log)"
            )
            reply = Message(
                Error(
                    ErrorCode.CLIENT_APP_RAISED_EXCEPTION,
                    f"{self.email}: ClientApp raised {type(exc).__name__} while handling "
                    f"{md.message_type!r}{detail}",
                ),
                reply_to=msg,
            )
        self.handled += 1
        data = self._finish(reply)  # serialized once, for the reply and the cache
        if reply.has_error():
            self.failed += 1
        else:
            self.succeeded += 1
            if self.reply_cache is not None:
                # Kept before the reply leaves (under the serving loop: the one
                # copy the loop stores anyway): a crash after sending must not
                # make the re-sent request train a second time.
                self.reply_cache.put(fp, data)
        if req is not None:
            req.audit["outcome"] = "error" if reply.has_error() else "ok"
        return data

    def check_outcome(self) -> None:
        """Raise :class:`RunFailed` if this data owner's part of the run failed.

        Failed means: the researcher said the run failed, or ClientApp calls
        were made and not one succeeded.
        """
        if self.handled and not self.succeeded:
            raise RunFailed(
                f"all {self.handled} ClientApp calls on {self.email} failed "
                "(the tracebacks are above in this log)"
            )
        if self.stopped_outcome == "failed":
            raise RunFailed(f"the researcher ended the run: {self.stopped_reason}")

    def _system(self, msg: Message) -> bytes:
        action = reason = outcome = ""
        if msg.has_content():
            for rec in msg.content.config_records.values():
                action = str(rec.get("action", action))
                reason = str(rec.get("reason", reason))
                outcome = str(rec.get("outcome", outcome))
        if action == "stop":
            self.stopped_reason = reason or "stop requested"
            self.stopped_outcome = outcome or "completed"
            logger.info("the researcher ended the run: %s", self.stopped_reason)
            reply = Message(
                RecordDict({"ack": ConfigRecord({"action": "stop", "stopped": True})}),
                reply_to=msg,
            )
            out = self._finish(reply)
            if self.on_stop is not None:
                self.on_stop(self.stopped_reason)
            return out
        return self._finish(
            Message(
                Error(
                    ErrorCode.MESSAGE_UNAVAILABLE,
                    f"unsupported system action {action!r}",
                ),
                reply_to=msg,
            )
        )


class Heartbeat:
    """Publishes a data owner's liveness beat through its transport until stopped.

    Parameters
    ----------
    transport:
        The data owner's transport (:meth:`Transport.beat`).
    app_name, endpoint:
        What is being served.
    peers:
        Who may read the beat (the researcher emails).
    interval:
        Seconds between beats.
    """

    def __init__(
        self,
        transport: Transport,
        app_name: str,
        endpoint: str,
        peers: Iterable[str],
        interval: float,
    ) -> None:
        self.transport = transport
        self.app_name = app_name
        self.endpoint = endpoint
        self.peers = sorted({p.strip().lower() for p in peers})
        self.interval = interval
        self.beats = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"heartbeat-{transport.identity}", daemon=True
        )

    def start(self) -> Heartbeat:
        """Start beating (the first beat goes out at once)."""
        self._thread.start()
        return self

    def beat(self) -> None:
        """Publish one beat (a counter: the change is what the researcher sees)."""
        body = json.dumps({"seq": self.beats, "interval": self.interval}).encode()
        self.transport.beat(self.app_name, self.endpoint, self.peers, body)
        self.beats += 1

    def _run(self) -> None:
        # The first beat says "serving": wait until this side is prepared (the
        # researcher then writes its deferred requests at once, no polling).
        while not self._stop.is_set():
            try:
                if self.transport.is_prepared(
                    self.transport.identity, self.app_name, self.endpoint
                ):
                    break
            except TransportError:
                pass
            self._stop.wait(0.02)
        while not self._stop.is_set():
            try:
                self.beat()
            except TransportError as exc:  # e.g. Drive briefly unreachable
                logger.debug("heartbeat not published: %s", exc)
            self._stop.wait(self.interval)

    def stop(self) -> None:
        """Stop beating and remove the beat files (a clean exit leaves nothing)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        try:
            self.transport.delete_many(
                heartbeat_key(
                    self.transport.identity, self.app_name, self.endpoint, peer
                )
                for peer in self.peers
            )
        except TransportError as exc:
            logger.debug("could not remove the heartbeat: %s", exc)


def run_data_owner(
    client_app: ClientApp,
    app_name: str,
    *,
    client: Any | None = None,
    aggregators: Iterable[str] | None = None,
    run_config: dict[str, Any] | None = None,
    node_config: dict[str, Any] | None = None,
    settings: Settings | None = None,
    events: SyftFlwrEvents | None = None,
    endpoint: str = DEFAULT_ENDPOINT,
    check: Callable[[str | None], str | None] | None = None,
    state_dir: str | Path | None = None,
) -> ClientAppHandler:
    """Serve ``client_app`` for ``app_name`` until the researcher's stop signal.

    Parameters
    ----------
    client_app:
        The Flower ``ClientApp`` to run on this data owner's private data.
    app_name:
        The app folder name (must match the researcher's).
    client:
        ``SyftFlwrClient`` / ``syft_core.Client`` (``create_client()`` if None).
    aggregators:
        Emails allowed to send work (the researcher); others are refused.
    run_config, node_config:
        The Flower ``Context`` configs.
    settings:
        Defaults to ``Settings.from_env()``.
    events:
        A ready events adapter (else ``create_events_watcher``).
    check:
        Refuses requests before anything runs (see :class:`ClientAppHandler`).
    state_dir:
        Private folder for the reply cache (default: the client's state dir for
        the app; none when ``events`` is given without a client).

    Returns
    -------
    ClientAppHandler
        After the loop ended (``stopped_reason`` says why).
    """
    aggregators = None if aggregators is None else list(aggregators)
    if events is None:
        client = wrap_client(client)
        if aggregators is not None:
            # On Drive: share with, read from and answer only the aggregators.
            restrict_peers(client, aggregators)
    if state_dir is None and client is not None:
        state_dir = wrap_client(client).state_dir(app_name)
    ev = events or create_events_watcher(
        app_name,
        client=client,
        settings=settings or Settings.from_env(),
        allowed_senders=None if aggregators is None else list(aggregators),
    )
    handler = ClientAppHandler(
        client_app,
        email=ev.client_email,
        reveal_errors=(settings or Settings.from_env()).reveal_errors,
        node_config=node_config,
        run_config=run_config,
        on_stop=lambda _reason: ev.stop(),
        check=check,
        reply_cache=_reply_cache(ev, state_dir),
    )
    ev.on_request(endpoint, handler)
    heartbeat = _start_heartbeat(ev, app_name, endpoint, aggregators, settings)
    logger.info(
        "%s is waiting for work from %s",
        ev.client_email,
        ", ".join(aggregators or ["anyone"]),
    )
    try:
        ev.run_forever()
    except KeyboardInterrupt:
        # Stop cleanly, then let the caller see the interruption (exit 130).
        logger.info("interrupted; stopping")
        ev.stop()
        raise
    finally:
        if heartbeat is not None:
            heartbeat.stop()
        if events is None and isinstance(ev, TransportEvents):
            ev.close()
    return handler


def _reply_cache(ev: SyftFlwrEvents, state_dir: str | Path | None) -> ReplyCache | None:
    """The reply cache: on the serving loop's ledger when it keeps it in ``state_dir``.

    There each reply is written once (the ledger's stored reply, with the
    request's fingerprint as an alias); replies an older version cached in
    ``state_dir/reply_cache`` are still read.
    """
    if state_dir is None:
        return None
    folder = Path(state_dir) / "reply_cache"
    ledger = getattr(ev, "ledger", None)
    if (
        isinstance(ev, TransportEvents)
        and ledger is not None
        and ledger.dir is not None
        and ledger.dir.resolve() == Path(state_dir).resolve()
    ):
        return ReplyCache.on_ledger(ledger, legacy=folder if folder.is_dir() else None)
    from syft_flwr.crypto.own_state import state_key_for

    client = getattr(ev, "_client", None)  # the data owner's own key, if any
    policy = getattr(getattr(ev, "rpc", None), "policy", None)
    return ReplyCache(folder, state_key=state_key_for(client, policy, "reply-cache"))


def _start_heartbeat(
    ev: SyftFlwrEvents,
    app_name: str,
    endpoint: str,
    aggregators: Iterable[str] | None,
    settings: Settings | None,
) -> Heartbeat | None:
    """Beat to the researchers while serving (none when the sender is unknown)."""
    transport = getattr(ev, "transport", None)
    if not isinstance(transport, Transport) or aggregators is None:
        return None
    s = settings or Settings.from_env()
    interval = s.heartbeat_interval or transport.default_heartbeat_interval
    return Heartbeat(
        transport, app_name.strip("/"), endpoint, aggregators, interval
    ).start()


def syftbox_flwr_client(
    client_app: ClientApp,
    context: Context,
    app_name: str,
    project_dir: str | Path | None = None,
) -> None:
    """Upstream-compatible entry point: serve ``client_app`` for ``app_name``.

    Raises
    ------
    RunFailed
        Every ClientApp call failed, or the researcher reported a failed run.
    """
    from syft_flwr.client.factory import create_client

    handler = run_data_owner(
        client_app,
        app_name,
        client=create_client(project_dir=project_dir) if project_dir else None,
        run_config=dict(context.run_config),
        node_config=dict(context.node_config),
    )
    handler.check_outcome()

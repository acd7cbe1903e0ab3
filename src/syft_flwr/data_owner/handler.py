"""The ClientApp handler: turns a data owner's request bodies into ClientApp calls.

The runner that serves it is :mod:`syft_flwr.data_owner.runner`.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from flwr.app import ConfigRecord, Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import ErrorCode

from syft_flwr._flwr_compat import SYSTEM_MESSAGE_TYPE, set_message_id, set_reply_to
from syft_flwr.config import Settings
from syft_flwr.data_owner.reply_cache import ReplyCache
from syft_flwr.data_owner.worker import RequestInfo, current_request
from syft_flwr.errors import RunFailed, SerializationError
from syft_flwr.ids import node_id_for
from syft_flwr.researcher.fingerprint import request_fingerprint
from syft_flwr.review.guard import take_project_hash
from syft_flwr.serde import bytes_to_flower_message, split_message
from syft_flwr.wire import frames

if TYPE_CHECKING:
    from syft_flwr.data_owner.contain.app import ContainedClientApp
    from syft_flwr.data_owner.privacy import PrivacyGuard

__all__ = ["ClientAppHandler"]

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
    privacy:
        The data owner's privacy step (:class:`~syft_flwr.data_owner.privacy.
        PrivacyGuard`): every reply is clipped, noised and charged to the
        dataset's budget here, in this process, before it is kept or sent.
        ``None``: replies leave as the ClientApp made them.
    """

    def __init__(
        self,
        client_app: ClientApp | ContainedClientApp,
        *,
        email: str,
        node_config: dict[str, Any] | None = None,
        run_config: dict[str, Any] | None = None,
        on_stop: Callable[[str], None] | None = None,
        reveal_errors: bool | None = None,
        check: Callable[[str | None], str | None] | None = None,
        reply_cache: ReplyCache | None = None,
        privacy: PrivacyGuard | None = None,
    ) -> None:
        self.client_app = client_app
        self.reply_cache = reply_cache
        self.privacy = privacy
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
        """Answer one request body with the reply message, serialized (framed).

        In order: the message must be for this node; the project hash it names
        is taken out; a system message (stop) is handled here; ``check`` may
        refuse it; a re-sent request is answered from the reply cache; else
        the ClientApp runs once.
        """
        msg = _parse(body)
        md = msg.metadata
        req = current_request()
        if req is not None:  # the audit trail: names and ids, never values
            req.audit.update(
                message_type=md.message_type, group=md.group_id, run_id=md.run_id
            )
        if md.dst_node_id != self.node_id:
            return self._error(
                msg,
                f"{self.email}: message addressed to node {md.dst_node_id}, "
                f"this data owner is node {self.node_id}",
            )
        # Always taken out, so the ClientApp sees the content the strategy built.
        named = take_project_hash(msg)
        if md.message_type == SYSTEM_MESSAGE_TYPE:
            return self._system(msg)
        refusal = self.check(named) if self.check is not None else None
        if refusal is not None:
            return self._refuse(msg, refusal, req)
        who = req.sender if req else "the researcher"
        logger.info(
            "running %s (round group %r) for %s", md.message_type, md.group_id, who
        )
        fp = _fingerprint(msg, body, req)
        cached = self.reply_cache.get(fp) if self.reply_cache is not None else None
        if cached is not None:
            return self._from_cache(msg, cached, req)
        return self._run(msg, fp, req, named)

    def _error(self, msg: Message, text: str) -> bytes:
        """An error reply to ``msg`` (the message is unavailable here)."""
        return self._finish(
            Message(Error(ErrorCode.MESSAGE_UNAVAILABLE, text), reply_to=msg)
        )

    def _refuse(self, msg: Message, refusal: str, req: RequestInfo | None) -> bytes:
        """``check`` refused ``msg``: nothing runs."""
        # Answered through the same sealed reply path: an authenticated refusal.
        self.refused += 1
        if req is not None:
            req.audit["outcome"] = f"refused: {refusal}"
        return self._error(msg, f"{self.email} refused the request: {refusal}")

    def _from_cache(
        self, msg: Message, cached: Message, req: RequestInfo | None
    ) -> bytes:
        """A re-sent request answered with the kept reply: no second run."""
        md = msg.metadata
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

    def _run(
        self, msg: Message, fp: str, req: RequestInfo | None, project: str | None
    ) -> bytes:
        """Run the ClientApp once; keep a successful reply in the reply cache."""
        md = msg.metadata
        try:
            reply = self.client_app(message=msg, context=self.context_for(md.run_id))
        except Exception as exc:
            # The full trace stays here; the reply names the failure only.
            logger.exception("the ClientApp raised while handling %s", md.message_type)
            reply = self._raised(msg, exc)
        if self.privacy is not None and not reply.has_error():
            # Here, in the data owner's process and before anything is kept or
            # sent: clipped, noised and durably charged, or refused.
            reply = self.privacy.apply(
                msg, reply, project=project, audit=req.audit if req else None
            )
            if reply.has_error():
                self.refused += 1
                return self._finish(reply)  # a refusal, like ``check``'s
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

    def _raised(self, msg: Message, exc: Exception) -> Message:
        """The error reply of a ClientApp that raised ``exc``."""
        detail = (
            f": {exc}" if self.reveal_errors else " (details in the data owner's log)"
        )
        return Message(
            Error(
                ErrorCode.CLIENT_APP_RAISED_EXCEPTION,
                f"{self.email}: ClientApp raised {type(exc).__name__} while handling "
                f"{msg.metadata.message_type!r}{detail}",
            ),
            reply_to=msg,
        )

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
        return self._error(msg, f"unsupported system action {action!r}")


def _parse(body: bytes) -> Message:
    try:
        return bytes_to_flower_message(body)
    except SerializationError as exc:
        # Not a Flower message at all: an error status, there is nothing to reply to.
        raise SerializationError(f"request is not a Flower message: {exc}") from exc


def _fingerprint(msg: Message, body: bytes, req: RequestInfo | None) -> str:
    """The key a re-sent request's reply is kept under in the reply cache.

    The researcher names the content's hash in a body with large arrays (sealed
    and signed with it): no second pass over the arrays here. Keyed by the
    authenticated sender too, so a wrong name only ever finds that sender's own
    earlier replies.
    """
    return request_fingerprint(
        msg,
        with_sender=True,
        content_id=frames.content_id(body),
        sender=req.sender if req is not None else None,
    )

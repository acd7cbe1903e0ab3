"""``SyftGrid``: a Flower ``Grid`` whose messages travel as files.

The researcher's ServerApp (any strategy, Message API or legacy) talks to this
Grid exactly as to Flower's own. Each instruction becomes a request file in the
data owner's datasite; each reply file becomes a Flower reply. Replies are
noticed through the transport's watch (watchdog on SyftBox), so a reply that
lands on disk is returned within milliseconds; ``SYFT_FLWR_POLL_INTERVAL`` only
bounds a fallback rescan.

``SyftGrid`` keeps Flower's ``Grid`` API and delegates, as Flower's own
in-memory grid does: the data owners, their heartbeats and readiness live in
a :class:`~syft_flwr.researcher.roster.Roster`; requests to write and shared
attachment folders in an :class:`~syft_flwr.researcher.outbox.Outbox`;
requests awaiting replies and reading them in an
:class:`~syft_flwr.researcher.inbox.Inbox`; the resume journal's replay and
recording in :class:`~syft_flwr.researcher.replay.Resume`; what became of the
work in :class:`~syft_flwr.researcher.tally.WorkTally`. Each owns its fields and
its lock; the waiting loops sleep on one :class:`~syft_flwr.researcher.wakeup.Wakeup`,
and one call's wait for its replies is a :class:`~syft_flwr.researcher.reply_wait.ReplyWait`.

Size: over 400 lines because it is the public face, Flower's ``Grid`` API
(``set_run``, ``run``, ``create_message``, ``get_node_ids``, ``push_messages``,
``pull_messages`` in both Flower signatures, ``send_and_receive``) and the
documented extras (``warm_up``, ``withdraw``, ``send_stop_signal``, ``close``,
``email_of``, ``node_id_of``), each with its documentation. It holds no state
of its own beyond the run and its settings: what is left here is arguments,
routing and delegation.
"""

from __future__ import annotations

import logging
import time
import uuid
import warnings
from collections.abc import Callable, Iterable
from typing import Any

from flwr.app import ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from syft_flwr import progress
from syft_flwr._flwr_compat import (
    AGGREGATOR_NODE_ID,
    SYSTEM_MESSAGE_TYPE,
    Run,
    empty_run,
    run_copy,
    set_message_id,
    set_routing,
    set_task_identity,
    task_identity_run_id,
)
from syft_flwr.client.factory import wrap_client
from syft_flwr.client.protocol import SyftFlwrClient
from syft_flwr.client.syft_p2p_client import restrict_peers
from syft_flwr.config import Settings
from syft_flwr.errors import TransportError
from syft_flwr.researcher.deadline import WaitTimers
from syft_flwr.researcher.inbox import Inbox
from syft_flwr.researcher.journal import Journal
from syft_flwr.researcher.outbox import Outbox, Outgoing, split_request
from syft_flwr.researcher.replay import Resume
from syft_flwr.researcher.reply_wait import ReplyWait
from syft_flwr.researcher.roster import Roster
from syft_flwr.researcher.tally import WorkTally, log_summary
from syft_flwr.researcher.wakeup import Wakeup
from syft_flwr.serde import SplitMessage
from syft_flwr.transports.base import Transport
from syft_flwr.wire.mailbox import CodecPolicy, SyftFlwrRpc

__all__ = ["DEFAULT_ENDPOINT", "SyftGrid", "WorkTally"]

logger = logging.getLogger("syft_flwr.grid")

DEFAULT_ENDPOINT = "messages"
PROGRESS_EVERY = 10.0  # seconds between "still waiting" log lines


class SyftGrid(Grid):
    """SyftGrid is the server-side message orchestrator for federated learning.

    Parameters
    ----------
    app_name:
        Name of the FL application (e.g. ``"flwr/diabetes"``); the app folder
        under each datasite's ``app_data``.
    datasites:
        Data owner emails; each becomes a node id (see :func:`syft_flwr.ids.node_id_for`).
    client:
        ``SyftFlwrClient`` or ``syft_core.Client``; ``create_client()`` if None.
    rpc:
        A ready :class:`~syft_flwr.wire.mailbox.SyftFlwrRpc`; built from the client's
        transport if None.
    transport:
        Use this transport instead of ``client.make_transport()``.
    policy:
        Body codec policy (encryption). Default: encrypted when
        ``SYFT_FLWR_ENCRYPTION_ENABLED`` is on (the default), else plaintext.
    settings:
        Timeouts and chunking; default ``Settings.from_env()`` read at each call.
    endpoint:
        RPC endpoint name (``"messages"``, as upstream syft-flwr).
    project_hash:
        The reviewed project this run's code is (``syft_flwr submit``); named
        inside every message body, so data owners can refuse other code.
    journal:
        Resume record (see :mod:`syft_flwr.researcher.journal`): calls
        found in it are answered from disk, completed calls are appended.
    allow_nonfinite:
        Accept replies whose floating-point arrays hold NaN or Inf. Default
        (``None``): ``SYFT_FLWR_ALLOW_NONFINITE``, else ``False``: such a reply
        becomes an error reply for its data owner (see
        :mod:`syft_flwr.researcher.reply_check`).

    Raises
    ------
    NodeIdCollisionError
        If two datasites map to one node id.
    """

    def __init__(
        self,
        app_name: str,
        datasites: list[str] | None = None,
        client: Any | None = None,
        rpc: SyftFlwrRpc | None = None,
        *,
        transport: Transport | None = None,
        policy: CodecPolicy | None = None,
        settings: Settings | None = None,
        endpoint: str = DEFAULT_ENDPOINT,
        clock: Callable[[], float] = time.time,
        project_hash: str | None = None,
        journal: Journal | None = None,
        allow_nonfinite: bool | None = None,
    ) -> None:
        self._explicit_settings = settings
        self._explicit_allow_nonfinite = allow_nonfinite
        self._said_nonfinite = False
        self.project_hash = project_hash
        self.settings = settings or Settings.from_env()
        self.app_name = app_name.strip("/")
        self.endpoint = endpoint.strip("/")
        self.clock = clock
        self._client, self._rpc, self._owns_transport = self._connect(
            client, rpc, datasites, transport, policy
        )
        self._run: Run | None = None
        self.tally = WorkTally()
        self._wake = Wakeup()
        self._roster = Roster(
            self._rpc,
            self.app_name,
            self.endpoint,
            datasites or [],
            self._settings,
            self._wake,
        )
        self.datasites = self._roster.datasites
        self._outbox: Outbox
        self._inbox = Inbox(
            self._rpc,
            self.endpoint,
            self._wake,
            self._allow_nonfinite,
            on_done=lambda mid: self._outbox.release(mid),
        )
        self._outbox = Outbox(self._rpc, self.endpoint, self._roster, self._inbox)
        self._resume = Resume(journal, self._rpc) if journal is not None else None

    def _connect(
        self,
        client: Any | None,
        rpc: SyftFlwrRpc | None,
        datasites: list[str] | None,
        transport: Transport | None,
        policy: CodecPolicy | None,
    ) -> tuple[SyftFlwrClient | None, SyftFlwrRpc, bool]:
        """The researcher's client, its mailbox, and whether the grid owns the transport."""
        if rpc is not None:
            return (wrap_client(client) if client is not None else None), rpc, False
        wrapped = wrap_client(client)
        if datasites:
            # On Drive: share with, read from and answer only these peers.
            restrict_peers(wrapped, datasites)
        tr = transport or wrapped.make_transport()
        if policy is None:
            from syft_flwr.crypto.policy import default_policy

            policy = default_policy(wrapped, tr, self.settings)
        mailbox = SyftFlwrRpc(
            tr, self.app_name, settings=self.settings, policy=policy, clock=self.clock
        )
        return wrapped, mailbox, transport is None

    # -- helpers --------------------------------------------------------------
    @property
    def journal(self) -> Journal | None:
        """The resume record (``None``: calls are neither replayed nor recorded)."""
        return self._resume.journal if self._resume is not None else None

    @journal.setter
    def journal(self, journal: Journal | None) -> None:
        self._resume = Resume(journal, self._rpc) if journal is not None else None

    @property
    def transport(self) -> Transport:
        return self._rpc.transport

    @property
    def rpc(self) -> SyftFlwrRpc:
        return self._rpc

    @property
    def client(self) -> SyftFlwrClient | None:
        """The researcher's client (``None`` when built from a bare rpc)."""
        return self._client

    def get_client_email(self) -> str:
        """Get the email address of the server's client."""
        return self._rpc.identity

    def email_of(self, node_id: int) -> str:
        """Return the datasite email of ``node_id`` (``KeyError`` if unknown)."""
        return self._roster.email_of(node_id)

    def node_id_of(self, email: str) -> int:
        """Return the node id of datasite ``email``."""
        return self._roster.node_id_of(email)

    def _settings(self) -> Settings:
        # Read env at call time unless settings were given: users set
        # SYFT_FLWR_MSG_TIMEOUT after building the grid (seed example).
        return self._explicit_settings or Settings.from_env()

    def _get_timeout(self, timeout: float | None) -> float:
        """Explicit argument > ``SYFT_FLWR_MSG_TIMEOUT`` > 120 s."""
        return float(timeout) if timeout is not None else self._settings().msg_timeout

    def _allow_nonfinite(self) -> bool:
        """Argument > ``SYFT_FLWR_ALLOW_NONFINITE`` > False; said once when on."""
        allow = self._explicit_allow_nonfinite
        if allow is None:
            allow = self._settings().allow_nonfinite
        if allow and not self._said_nonfinite:
            self._said_nonfinite = True
            logger.warning(
                "replies holding NaN or Inf are accepted (allow_nonfinite is on): "
                "one such reply can make the aggregated model NaN"
            )
        return allow

    def _ensure_watch(self, email: str) -> None:
        self._roster.ensure_watch(
            email, self._inbox.on_response, before=self._inbox.sweep_stale
        )

    def warm_up(self, wait: float = 0.0) -> None:
        """Set up what the first round would otherwise pay for, before it starts.

        Per data owner: leftovers of an earlier run withdrawn, the reply and
        heartbeat watches registered, readiness checked. Then wait up to
        ``wait`` seconds for every data owner to serve the app (a data owner's
        first heartbeat says so at once), so round 1 does not start while they
        are still starting. Whoever is not ready by then gets its requests when
        it is, as before.

        Parameters
        ----------
        wait:
            Seconds to wait for data owners to be ready (0: do not wait).
        """
        for email in self.datasites:
            try:
                self._ensure_watch(email)
            except TransportError as exc:  # the first push will try again
                logger.debug("could not prepare the exchange with %s: %s", email, exc)
        waiting = self._roster.wait_ready(wait)
        if waiting and wait > 0:
            logger.info(
                "%d of %d data owners serve the app; starting, the others get "
                "their requests when they do (waiting for %s)",
                len(self.datasites) - len(waiting),
                len(self.datasites),
                ", ".join(waiting),
            )

    def _give_up_on_silent(self, remaining: set[str]) -> set[str]:
        """Withdraw the requests to data owners whose heartbeat stopped.

        Only a data owner seen beating can be declared dead: one that never
        started (or runs an older syft_flwr) is waited for until the timeout.
        Returns the message ids given up on.
        """
        silent = self._roster.silent()
        if not silent:
            return set()
        mids = self._inbox.to_emails(remaining, silent)
        self._roster.declare_dead(self._inbox.emails_of(mids), silent)
        if mids:
            late = self.withdraw(mids)
            logger.info(
                "not waiting for %s (no heartbeat)", ", ".join(sorted(set(late)))
            )
        return mids

    # -- Grid API -------------------------------------------------------------
    def set_run(self, run_id: int | Run) -> None:
        """Set the run (a Flower ``Run`` or a bare run id)."""
        run = run_id if isinstance(run_id, Run) else empty_run(int(run_id))
        self._run = run
        # Instruction Messages read TaskIdentity (flwr >= 1.39); this grid is the
        # researcher side of the run, so it is this process's identity.
        set_task_identity(run.run_id)

    @property
    def run(self) -> Run:
        """Get the current Flower Run object (a copy)."""
        if self._run is None:
            raise RuntimeError("no run set: call set_run(run_id) first")
        return run_copy(self._run)

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        """Create a new Flower message with proper metadata."""
        if self._run is not None:
            # TaskIdentity is process-wide; another grid may have set it last.
            if task_identity_run_id() != self._run.run_id:
                set_task_identity(self._run.run_id)
        elif task_identity_run_id() is None:
            raise RuntimeError("no run set: call set_run(run_id) first")
        return Message(
            content,
            dst_node_id=dst_node_id,
            message_type=message_type,
            ttl=ttl,
            group_id=group_id,
        )

    def get_node_ids(self) -> list[int]:
        """Node ids of all configured data owners (deterministic from emails)."""
        return self._roster.node_ids()

    def _check(self, msg: Message) -> str:
        md = msg.metadata
        if md.reply_to_message_id != "" or not md.ttl > 0:
            raise ValueError(f"Invalid message: {md}")
        email = self._roster.find_email(md.dst_node_id)
        if email is None:
            raise ValueError(
                f"Invalid message: unknown destination node {md.dst_node_id}"
            )
        return email

    def _route(self, messages: Iterable[Message]) -> list[tuple[str, Message]]:
        """Check each message, give it this run's routing and a fresh id, count it."""
        if self._run is None:
            raise RuntimeError("no run set: call set_run(run_id) first")
        routed = []
        for msg in messages:
            email = self._check(msg)
            set_routing(msg, run_id=self._run.run_id, src_node_id=AGGREGATOR_NODE_ID)
            set_message_id(msg, str(uuid.uuid4()))
            routed.append((email, msg))
        return routed

    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        """Write each message as a request file; return Flower message ids.

        Content shared by several messages of one push (the same model to every
        data owner) is serialized, encrypted and stored once; each request
        carries a reference to it and its content key, sealed for its recipient.
        """
        batch = [(e, m, self._split(m)) for e, m in self._route(messages)]
        shared = self._outbox.store_shared(batch)
        ids: list[str] = []
        for email, msg, split in batch:
            md = msg.metadata
            mid = md.message_id
            out = Outgoing(
                email,
                split.prefix,
                tuple(shared.get(id(p), p) for p in split.parts),
                md.created_at + md.ttl,
            )
            self._ensure_watch(email)
            # Register before writing so a fast reply's event is never lost.
            self._inbox.register(mid, msg, email)
            self.tally.count_sent(msg)
            self._outbox.track(mid, out)
            self._outbox.dispatch(mid, out)
            ids.append(mid)
        return ids

    def _split(self, msg: Message) -> SplitMessage:
        """The message as a small body plus its large arrays (not copied)."""
        return split_request(msg, self.project_hash)

    # Flower 1.43's signature (the first parameter renamed, the old name kept
    # as a keyword alias): mypy sees a rename of Flower <= 1.42's parameter.
    def pull_messages(  # type: ignore[override]
        self,
        reply_to_message_ids: Iterable[str] | None = None,
        *,
        message_ids: Iterable[str] | None = None,
    ) -> list[Message]:
        """Return the replies available now (never blocks).

        Parameters
        ----------
        reply_to_message_ids : iterable of str, optional
            Ids returned by :meth:`push_messages` whose replies to collect. ``None``
            (the default) collects every reply that arrived for this grid.
        message_ids : iterable of str, optional
            Deprecated keyword alias of ``reply_to_message_ids`` (its name up to
            Flower 1.42); accepted so that both Flower's current and next ``Grid``
            signatures work. Passing both is a ``TypeError``.
        """
        if message_ids is not None:
            if reply_to_message_ids is not None:
                raise TypeError(
                    "pull_messages() takes reply_to_message_ids or its deprecated "
                    "alias message_ids, not both"
                )
            warnings.warn(
                "pull_messages(message_ids=...) is deprecated; pass the ids as "
                "reply_to_message_ids (Flower >= 1.43)",
                DeprecationWarning,
                stacklevel=2,
            )
            reply_to_message_ids = message_ids
        if reply_to_message_ids is None:
            ids = self._inbox.pending_ids()
        else:
            ids = list(reply_to_message_ids)
        return self._pull(ids, full=True)

    def _pull(
        self, ids: list[str], *, full: bool, check_rejected: bool | None = None
    ) -> list[Message]:
        """Read replies; with ``full=False`` only those a file event announced.

        A full pass reads every pending reply and checks for rejection markers
        (unless ``check_rejected=False``); between full passes (every poll
        interval) file events say what to read, so a wake-up costs no I/O (and
        no Drive API call) for replies not there yet.
        """
        if check_rejected is None:
            check_rejected = full
        self._outbox.flush(ids)
        keep = self._resume.keep if self._resume is not None else None
        out = self._inbox.pull(
            ids,
            full=full,
            check_rejected=check_rejected,
            unsent=self._outbox.is_unsent,
            keep=keep,
        )
        self.tally.count(out)
        return out

    def withdraw(self, message_ids: Iterable[str]) -> list[str]:
        """Delete unanswered requests so late data owners do not train on them.

        Returns the emails whose requests were withdrawn.
        """
        emails = []
        for mid in message_ids:
            p = self._inbox.forget(mid)
            never_written = self._outbox.forget(mid)
            if p is None:
                continue
            emails.append(p.email)
            self._outbox.release(mid)
            if never_written:
                continue
            try:
                self._rpc.withdraw(p.email, self.endpoint, mid)
            except TransportError as exc:
                logger.warning(
                    "could not withdraw request %s to %s: %s", mid, p.email, exc
                )
        return emails

    def send_and_receive(
        self,
        messages: Iterable[Message],
        *,
        timeout: float | None = None,
    ) -> list[Message]:
        """Push messages and wait for their replies (event-driven).

        Timeout precedence: the ``timeout`` argument, else ``SYFT_FLWR_MSG_TIMEOUT``,
        else 120 s. On timeout the replies that arrived are returned, the data
        owners that did not answer are logged, and their requests are withdrawn.
        """
        messages = list(messages)
        if self._resume is None:
            return self._send_and_receive(messages, timeout)
        # Resume: a call recorded before a crash is answered from the journal; a
        # completed live call is recorded before the ServerApp sees its replies.
        replies, replayed = self._resume.call(
            messages,
            lambda msgs: self._send_and_receive(msgs, timeout),
            route=self._route_replayed,
        )
        if replayed:
            self.tally.count(replies)
        return replies

    def _route_replayed(self, messages: list[Message]) -> None:
        """Give replayed messages what a push would: routing, ids, the tally."""
        for _, msg in self._route(messages):
            self.tally.count_sent(msg)

    def _send_and_receive(
        self, messages: list[Message], timeout: float | None
    ) -> list[Message]:
        wait_s = self._get_timeout(timeout)
        ids = self.push_messages(messages)
        shown = progress.wait("replies", len(ids), wait_s)
        timers = WaitTimers(
            wait_s,
            self._settings().poll_interval,
            min(PROGRESS_EVERY, shown.every),
            self._roster.heartbeat_limit()[0],
        )
        wait = ReplyWait(
            ids,
            timers,
            shown,
            pull=lambda mids, full, rej: self._pull(
                mids, full=full, check_rejected=rej
            ),
            give_up=self._give_up_on_silent,
            inbox=self._inbox,
            outbox=self._outbox,
            roster=self._roster,
            wake=self._wake,
        )
        try:
            wait.run()
        finally:
            shown.done()
        log_summary(
            wait.replies,
            len(ids),
            timers.elapsed(),
            len(wait.given_up),
            self._roster.find_email,
        )
        if wait.remaining:
            late = self.withdraw(wait.remaining)
            logger.warning(
                "timed out after %.0f s: no reply from %s; their requests were withdrawn",
                wait_s,
                ", ".join(sorted(set(late))) or "?",
            )
        return wait.replies

    def send_stop_signal(
        self,
        group_id: str,
        reason: str = "Training complete",
        ttl: float = 60.0,
        *,
        wait: float = 0.0,
        outcome: str = "completed",
    ) -> list[Message]:
        """Send a stop signal to all connected FL clients.

        Parameters
        ----------
        group_id:
            Identifier for this group of stop messages.
        reason:
            Human-readable reason for stopping.
        ttl:
            Time-to-live for the stop messages in seconds.
        wait:
            Seconds to wait for acknowledgements (0: fire and forget).
        outcome:
            ``"completed"``, ``"failed"`` or ``"interrupted"``: how the run
            ended; a data owner told ``"failed"`` exits non-zero.

        Returns
        -------
        list[Message]
            The stop messages that were sent.
        """
        if self._run is None:
            self.set_run(0)
        stop = ConfigRecord({"action": "stop", "reason": reason, "outcome": outcome})
        msgs = [
            self.create_message(
                RecordDict({"config": stop}), SYSTEM_MESSAGE_TYPE, nid, group_id, ttl
            )
            for nid in self.get_node_ids()
        ]
        ids = self.push_messages(msgs)
        if wait > 0:
            self._await_acks(set(ids), wait)
        return msgs

    def _await_acks(self, remaining: set[str], wait: float) -> None:
        """Wait up to ``wait`` s for the stop acknowledgements; withdraw the rest."""
        deadline = time.monotonic() + wait
        while remaining and time.monotonic() < deadline:
            for r in self.pull_messages(list(remaining)):
                remaining.discard(r.metadata.reply_to_message_id)
            self._wake.wait(
                lambda: self._inbox.has_arrived(remaining),
                timeout=max(0.0, min(0.5, deadline - time.monotonic())),
                on_hint=False,
            )
            self._inbox.clear_arrived(remaining)
        if remaining:
            late = self.withdraw(remaining)
            logger.info("no stop acknowledgement from %s", ", ".join(sorted(late)))

    def close(self) -> None:
        """Stop watching for replies; close the transport if this grid created it.

        Shared model folders still in use are deleted: nothing is left behind.
        """
        self._roster.cancel_watches()
        self._outbox.close()
        if self._owns_transport:
            self.transport.close()

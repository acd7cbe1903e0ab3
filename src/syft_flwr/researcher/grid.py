"""``SyftGrid``: a Flower ``Grid`` whose messages travel as files.

The researcher's ServerApp (any strategy, Message API or legacy) talks to this
Grid exactly as to Flower's own. Each instruction becomes a request file in the
data owner's datasite; each reply file becomes a Flower reply. Replies are
noticed through the transport's watch (watchdog on SyftBox), so a reply that
lands on disk is returned within milliseconds; ``SYFT_FLWR_POLL_INTERVAL`` only
bounds a fallback rescan.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from flwr.app import ConfigRecord, Error, Message, RecordDict
from flwr.common.constant import ErrorCode
from flwr.serverapp import Grid

from syft_flwr import progress
from syft_flwr._flwr_compat import (
    AGGREGATOR_NODE_ID,
    SYSTEM_MESSAGE_TYPE,
    Run,
    empty_run,
    run_copy,
    set_message_id,
    set_reply_to,
    set_routing,
    set_task_identity,
    task_identity_run_id,
)
from syft_flwr.client.factory import wrap_client
from syft_flwr.client.protocol import SyftFlwrClient
from syft_flwr.client.syft_p2p_client import restrict_peers
from syft_flwr.config import Settings
from syft_flwr.errors import (
    EncryptionError,
    EnvelopeError,
    IncompleteMessage,
    KeyNotFound,
    PermissionDenied,
    SecurityError,
    SerializationError,
    TransportError,
)
from syft_flwr.ids import node_id_map, normalize_email
from syft_flwr.researcher.journal import (
    Entry,
    Journal,
    Kept,
    request_fingerprints,
)
from syft_flwr.researcher.reply_check import screen_reply
from syft_flwr.review.guard import attach_project_hash, take_project_hash
from syft_flwr.serde import (
    SpillableArray,
    SplitMessage,
    bytes_to_flower_message,
    has_large_array,
    split_message,
)
from syft_flwr.transports.base import Transport, Watch
from syft_flwr.wire import frames
from syft_flwr.wire.blobs import BlobRef
from syft_flwr.wire.mailbox import CodecPolicy, Incoming, Part, SyftFlwrRpc
from syft_flwr.wire.reasons import reason_text

__all__ = ["DEFAULT_ENDPOINT", "SyftGrid", "WorkTally"]

logger = logging.getLogger("syft_flwr.grid")

DEFAULT_ENDPOINT = "messages"
PROGRESS_EVERY = 10.0  # seconds between "still waiting" log lines

# HTTP-like status of a refused/failed response -> Flower error code.
_STATUS_TO_ERROR = {
    400: ErrorCode.MESSAGE_UNAVAILABLE,
    403: ErrorCode.MESSAGE_UNAVAILABLE,
    409: ErrorCode.MESSAGE_UNAVAILABLE,
    419: ErrorCode.REPLY_MESSAGE_UNAVAILABLE,
    500: ErrorCode.CLIENT_APP_RAISED_EXCEPTION,
}


@dataclass
class _Pending:
    message: Message
    email: str
    node_id: int
    sent_at: float


@dataclass
class _Outgoing:
    """A request ready to write: the detached body and its large parts."""

    email: str
    body: bytes
    parts: tuple[Part, ...]
    expires_at: float


@dataclass
class WorkTally:
    """What became of the ClientApp work this grid sent (system messages excluded).

    ``sent`` requests went out; ``succeeded`` got a reply without error;
    ``failed`` got an error reply (a raised ClientApp, a refusal, an unreadable
    reply). Requests never answered count in neither.
    """

    sent: int = 0
    succeeded: int = 0
    failed: int = 0

    @property
    def all_failed(self) -> bool:
        """True when work was sent and not one ClientApp call succeeded."""
        return self.sent > 0 and self.succeeded == 0


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
        self.journal = journal
        self._owns_transport = False
        self.settings = settings or Settings.from_env()
        self.app_name = app_name.strip("/")
        self.endpoint = endpoint.strip("/")
        self.clock = clock
        self._client: SyftFlwrClient | None
        if rpc is not None:
            self._client = wrap_client(client) if client is not None else None
            self._rpc = rpc
        else:
            self._client = wrap_client(client)
            if datasites:
                # On Drive: share with, read from and answer only these peers.
                restrict_peers(self._client, datasites)
            self._owns_transport = transport is None
            tr = transport or self._client.make_transport()
            if policy is None:
                from syft_flwr.crypto.policy import default_policy

                policy = default_policy(self._client, tr, self.settings)
            self._rpc = SyftFlwrRpc(
                tr, self.app_name, settings=self.settings, policy=policy, clock=clock
            )
        self.datasites = [normalize_email(d) for d in (datasites or [])]
        self._node_to_email = node_id_map(self.datasites)
        self._email_to_node = {e: n for n, e in self._node_to_email.items()}
        self._run: Run | None = None
        self._lock = threading.RLock()
        self._cv = threading.Condition(self._lock)
        self._pending: dict[str, _Pending] = {}
        self._failed: dict[str, Message] = {}
        self._arrived: set[str] = set()
        self._watches: dict[str, Watch] = {}
        self._watching: set[str] = set()  # watches being registered
        self._warned_unprepared: set[str] = set()
        self._unsent: dict[str, _Outgoing] = {}
        # Shared attachment folders (one per push whose messages share arrays)
        # and the requests still using each; removed when none is left.
        self._groups: dict[str, set[str]] = {}
        self._group_of: dict[str, str] = {}
        self._swept_shared = False
        # Replies whose attachments were linked into the journal (message id ->
        # prefix, references, stems), while a journaled call is in flight.
        self._kept: dict[str, Kept] = {}
        self._keeping = False
        # Large reply arrays backed by the journal, released at the next call.
        self._spillable: list[SpillableArray] = []
        self._ready: set[str] = set()
        self._ready_checked: dict[str, float] = {}
        # Liveness: when each data owner's heartbeat last changed (monotonic),
        # and who was reported dead (logged once; cleared by the next beat).
        self._beats: dict[str, float] = {}
        self._dead: set[str] = set()
        # A beat from a data owner with deferred requests: it may be ready now.
        self._ready_hint = False
        self.tally = WorkTally()
        # message id -> why its reply file was set aside
        self._aside: dict[str, str] = {}

    # -- helpers --------------------------------------------------------------
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
        return self._node_to_email[node_id]

    def node_id_of(self, email: str) -> int:
        """Return the node id of datasite ``email``."""
        return self._email_to_node[normalize_email(email)]

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
        # Never hold the grid lock across a transport call: the transport's event
        # thread may be inside _on_response, waiting for this lock (deadlock).
        with self._lock:
            if email in self._watches or email in self._watching:
                return
            self._watching.add(email)
        try:
            self._sweep_stale(email)
            w = self._rpc.watch_responses(email, self.endpoint, self._on_response)
            beat = self.transport.watch_heartbeat(
                email, self.app_name, self.endpoint, lambda: self._on_beat(email)
            )
        except BaseException:
            with self._lock:
                self._watching.discard(email)
            raise
        with self._lock:
            self._watches[email] = w
            self._watches[f"{email}#heartbeat"] = beat
            self._watching.discard(email)
        # A beat from before the watch existed counts as one now (one read per
        # data owner per run): a data owner that dies before its next beat is
        # then still noticed.
        try:
            if self.transport.has_heartbeat(email, self.app_name, self.endpoint):
                self._on_beat(email)
        except TransportError as exc:
            logger.debug("could not look for the heartbeat of %s: %s", email, exc)

    def _sweep_stale(self, email: str) -> None:
        """Withdraw this researcher's leftovers from earlier runs of the app.

        A researcher that crashed (or was killed) never withdrew its requests; a
        data owner starting late would still train on them. Exchanges this grid
        did not send are deleted on first contact with each data owner.
        """
        folder = self._rpc.folder(email, self.endpoint, self._rpc.identity)
        try:
            keys = self.transport.list(folder)
        except TransportError as exc:
            logger.debug("could not list %s: %s", folder, exc)
            return
        with self._lock:
            mine = set(self._pending)
        stale = {
            k.rsplit("/", 1)[-1].split(".")[0]
            for k in keys
            if k.endswith((".request", ".response"))
        } - mine
        for mid in stale:
            try:
                self._rpc.finish(email, self.endpoint, mid)
            except TransportError as exc:
                logger.debug("could not remove stale exchange %s: %s", mid, exc)
        if stale:
            logger.info(
                "withdrew %d request(s) to %s left over from an earlier run",
                len(stale),
                email,
            )

    def _on_beat(self, email: str) -> None:
        with self._cv:
            self._beats[email] = time.monotonic()
            back = email in self._dead
            self._dead.discard(email)
            # A data owner beats once it serves the app: its deferred requests
            # can go now, not at the next readiness poll.
            if email not in self._ready:
                self._ready_checked.pop(email, None)
                self._ready_hint = True
            self._cv.notify_all()
        if back:
            logger.info("%s is alive again (its heartbeat is back)", email)

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
        end = time.monotonic() + wait
        while True:
            waiting = [e for e in self.datasites if not self._is_ready(e)]
            now = time.monotonic()
            if not waiting or now >= end:
                break
            with self._lock:
                new = [e for e in waiting if e not in self._warned_unprepared]
                self._warned_unprepared.update(new)
            for email in new:
                logger.info(
                    "%s has not started serving the app; waiting up to %.0f s "
                    "before round 1",
                    email,
                    wait,
                )
            with self._cv:
                self._cv.wait_for(
                    lambda: self._ready_hint, timeout=min(0.25, end - now)
                )
                self._ready_hint = False
        if waiting and wait > 0:
            logger.info(
                "%d of %d data owners serve the app; starting, the others get "
                "their requests when they do (waiting for %s)",
                len(self.datasites) - len(waiting),
                len(self.datasites),
                ", ".join(waiting),
            )

    def _heartbeat_limit(self) -> tuple[float, float]:
        """(seconds between beats, seconds of silence after which we give up)."""
        s = self._settings()
        interval = s.heartbeat_interval or self.transport.default_heartbeat_interval
        return interval, interval * s.heartbeat_misses

    def _give_up_on_silent(self, remaining: set[str]) -> set[str]:
        """Withdraw the requests to data owners whose heartbeat stopped.

        Only a data owner seen beating can be declared dead: one that never
        started (or runs an older syft_flwr) is waited for until the timeout.
        Returns the message ids given up on.
        """
        _, limit = self._heartbeat_limit()
        now = time.monotonic()
        with self._lock:
            silent = {e: now - t for e, t in self._beats.items() if now - t > limit}
            if not silent:
                return set()
            mids = {
                m
                for m in remaining
                if m in self._pending and self._pending[m].email in silent
            }
            newly = {self._pending[m].email for m in mids} - self._dead
            self._dead |= newly
        for email in sorted(newly):
            logger.warning(
                "%s stopped answering: no heartbeat for %.0f s (its process may have "
                "crashed or lost its connection); going on without it",
                email,
                silent[email],
            )
        if mids:
            late = self.withdraw(mids)
            logger.info(
                "not waiting for %s (no heartbeat)", ", ".join(sorted(set(late)))
            )
        return mids

    def _on_response(self, mid: str) -> None:
        with self._cv:
            if mid in self._pending:
                self._arrived.add(mid)
                self._cv.notify_all()

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
        return list(self._node_to_email)

    def _check(self, msg: Message) -> str:
        md = msg.metadata
        if md.reply_to_message_id != "" or not md.ttl > 0:
            raise ValueError(f"Invalid message: {md}")
        email = self._node_to_email.get(md.dst_node_id)
        if email is None:
            raise ValueError(
                f"Invalid message: unknown destination node {md.dst_node_id}"
            )
        return email

    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        """Write each message as a request file; return Flower message ids.

        Content shared by several messages of one push (the same model to every
        data owner) is serialized, encrypted and stored once; each request
        carries a reference to it and its content key, sealed for its recipient.
        """
        if self._run is None:
            raise RuntimeError("no run set: call set_run(run_id) first")
        batch: list[tuple[str, Message, SplitMessage]] = []
        for msg in messages:
            email = self._check(msg)
            set_routing(msg, run_id=self._run.run_id, src_node_id=AGGREGATOR_NODE_ID)
            set_message_id(msg, str(uuid.uuid4()))
            batch.append((email, msg, self._split(msg)))
        shared = self._store_shared(batch)
        ids: list[str] = []
        for email, msg, split in batch:
            md = msg.metadata
            mid = md.message_id
            out = _Outgoing(
                email,
                split.prefix,
                tuple(shared.get(id(p), p) for p in split.parts),
                md.created_at + md.ttl,
            )
            self._ensure_watch(email)
            with self._lock:
                # Register before writing so a fast reply's event is never lost.
                self._pending[mid] = _Pending(
                    msg, email, md.dst_node_id, time.monotonic()
                )
                if md.message_type != SYSTEM_MESSAGE_TYPE:
                    self.tally.sent += 1
                group = next(
                    (
                        r.shared
                        for r in out.parts
                        if isinstance(r, BlobRef) and r.shared
                    ),
                    None,
                )
                if group is not None:
                    self._groups.setdefault(group, set()).add(mid)
                    self._group_of[mid] = group
            if self._is_ready(email, force=True):
                self._send(mid, out)
            else:
                self._defer(mid, out, "has not started serving the app")
            ids.append(mid)
        return ids

    def _split(self, msg: Message) -> SplitMessage:
        """The message as a small body plus its large arrays (not copied).

        A body with large arrays names its content's hash (Flower's Merkle
        ``object_id``, without the project record, as the data owner sees the
        content): the data owner recognises a re-sent request by it without
        hashing the arrays again. Strategies share one content object between
        messages, so it is computed once per push (and is already cached when
        the resume journal fingerprinted the call).
        """
        content_id = (
            msg.content.object_id
            if msg.has_content() and has_large_array(msg)
            else None
        )
        if self.project_hash is None:
            return split_message(msg, content_id=content_id)
        # Inside the (sealed, signed) body; removed again at once because
        # strategies may share one content object between messages.
        attach_project_hash(msg, self.project_hash)
        try:
            return split_message(msg, content_id=content_id)
        finally:
            take_project_hash(msg)

    def _store_shared(
        self, batch: list[tuple[str, Message, SplitMessage]]
    ) -> dict[int, BlobRef]:
        """Store once every large array that several messages of a push carry.

        Returns ``id(array bytes) -> reference``. Arrays are matched by identity
        (strategies hand the same ``ArrayRecord`` to every message), so nothing
        is hashed or compared byte by byte.
        """
        users: dict[int, set[str]] = {}
        data: dict[int, bytes] = {}
        for email, _, split in batch:
            for part in split.parts:
                users.setdefault(id(part), set()).add(email)
                data[id(part)] = part
        wanted = {k: v for k, v in users.items() if len(v) > 1}
        if not wanted or not self._rpc.can_share:
            return {}
        self._sweep_shared_once()
        readers = set().union(*wanted.values())
        expires = max(m.metadata.created_at + m.metadata.ttl for _, m, _ in batch)
        group = None
        try:
            group = self._rpc.new_shared_group(readers, expires)
            return {k: self._rpc.put_shared(group, data[k]) for k in wanted}
        except TransportError as exc:
            # Not fatal: each request then carries its own copy.
            logger.warning("could not store the shared model once: %s", exc)
            if group is not None:
                try:
                    self._rpc.delete_shared(group)
                except TransportError as again:
                    logger.debug("could not remove shared folder %s: %s", group, again)
            return {}

    def _sweep_shared_once(self) -> None:
        if self._swept_shared:
            return
        self._swept_shared = True
        try:
            removed = self._rpc.sweep_shared()
        except TransportError as exc:
            logger.debug("could not sweep old shared attachments: %s", exc)
            return
        if removed:
            logger.info("removed %d expired shared model folders", removed)

    def _release_shared(self, mid: str) -> None:
        """Forget ``mid``'s use of its shared folder; delete the folder when unused."""
        with self._lock:
            group = self._group_of.pop(mid, None)
            users = self._groups.get(group) if group is not None else None
            if users is None:
                return
            users.discard(mid)
            if users:
                return
            del self._groups[group]  # type: ignore[arg-type]
        try:
            self._rpc.delete_shared(group)  # type: ignore[arg-type]
        except TransportError as exc:
            logger.debug("could not delete shared folder %s: %s", group, exc)

    def _is_ready(self, email: str, *, force: bool = False) -> bool:
        """Whether ``email`` serves the app (checked at most every 0.25 s)."""
        now = time.monotonic()
        with self._lock:
            if email in self._ready:
                return True
            if not force and now - self._ready_checked.get(email, 0.0) < 0.25:
                return False
            self._ready_checked[email] = now
        try:
            ok = self.transport.is_prepared(email, self.app_name, self.endpoint)
        except TransportError as exc:  # e.g. Drive unreachable: try again later
            logger.debug("could not check whether %s is ready: %s", email, exc)
            return False
        if ok:
            with self._lock:
                self._ready.add(email)
        return ok

    def _defer(self, mid: str, out: _Outgoing, why: str) -> None:
        # Writing before the owner's permissions exist gets the file rejected for
        # good on SyftBox; so the request waits here, unwritten, until it is ready.
        with self._lock:
            self._unsent[mid] = out
            first = out.email not in self._warned_unprepared
            self._warned_unprepared.add(out.email)
        if first:
            logger.info("%s %s; its request waits until it does", out.email, why)

    def _send(self, mid: str, out: _Outgoing) -> None:
        with self._lock:
            p = self._pending.get(mid)
        if p is None:
            return
        try:
            self._rpc.send_request(
                out.email,
                self.endpoint,
                out.body,
                expires_at=out.expires_at,
                message_id=mid,
                parts=out.parts,
            )
        except KeyNotFound:
            with self._lock:
                self._ready.discard(out.email)
            self._defer(mid, out, "has not published its public keys")
        except (TransportError, EncryptionError, EnvelopeError) as exc:
            logger.error("could not send to %s: %s", out.email, exc)
            with self._lock:
                self._failed[mid] = self._error_reply(
                    p.message,
                    ErrorCode.NODE_UNAVAILABLE,
                    f"could not send to {out.email}: {exc}",
                )

    def _flush_unsent(self, ids: Iterable[str]) -> None:
        with self._lock:
            todo = [(m, self._unsent[m]) for m in ids if m in self._unsent]
        for mid, out in todo:
            if self._is_ready(out.email):
                with self._lock:
                    if self._unsent.pop(mid, None) is None:
                        continue
                self._send(mid, out)

    def _error_reply(self, msg: Message, code: int, reason: str) -> Message:
        reply = Message(Error(code=code, reason=reason), reply_to=msg)
        set_message_id(reply, str(uuid.uuid4()))
        return reply

    def _to_reply(self, p: _Pending, mid: str, inc: Incoming) -> Message:
        status = inc.head.status_code or 200
        if status != 200:
            # Text the data owner wrote (sealed with its status when encryption
            # is on); never message bytes, whatever sits in the body.
            reason = reason_text(inc.body) if len(inc.body) else f"status {status}"
            code = _STATUS_TO_ERROR.get(status, ErrorCode.UNKNOWN)
            return self._error_reply(p.message, code, f"{p.email}: {reason}")
        try:
            reply = bytes_to_flower_message(inc.body)
        except SerializationError as exc:
            return self._error_reply(
                p.message,
                ErrorCode.MESSAGE_UNAVAILABLE,
                f"{p.email}: unreadable reply: {exc}",
            )
        md = reply.metadata
        if md.reply_to_message_id != mid or md.src_node_id != p.node_id:
            return self._error_reply(
                p.message,
                ErrorCode.MESSAGE_UNAVAILABLE,
                f"{p.email}: reply does not match the request "
                f"(reply_to={md.reply_to_message_id!r}, src={md.src_node_id})",
            )
        if not md.message_id:
            set_message_id(reply, str(uuid.uuid4()))
        return reply

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
            with self._lock:
                ids = list(self._pending)
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
        self._flush_unsent(ids)
        with self._lock:
            if not full:
                ids = [m for m in ids if m in self._arrived or m in self._failed]
            self._arrived.difference_update(ids)
        out: list[Message] = []
        for mid in ids:
            with self._lock:
                if mid in self._unsent:
                    continue
                p = self._pending.get(mid)
                failed = self._failed.pop(mid, None)
            if p is None:
                continue
            if failed is not None:
                out.append(failed)
                self._complete(mid, p, delete=False)
                continue
            try:
                inc = self._rpc.response_for(
                    p.email, self.endpoint, mid, check_rejected=check_rejected
                )
            except IncompleteMessage:
                continue  # partial reply: not ready yet
            except PermissionDenied as exc:
                out.append(
                    self._error_reply(p.message, ErrorCode.NODE_UNAVAILABLE, str(exc))
                )
                self._complete(mid, p)
                continue
            except KeyNotFound as exc:
                # The data owner's keys are not (fully) synced yet: wait.
                self._set_aside(p, mid, exc, waiting_for="its public keys")
                continue
            except (EnvelopeError, EncryptionError, SecurityError) as exc:
                # Not provably the data owner's answer: never ends the wait.
                self._set_aside(p, mid, exc)
                continue
            except TransportError as exc:
                logger.warning("could not read the reply of %s: %s", p.email, exc)
                continue
            if inc is None:
                continue
            # Authentic is not harmless: NaN/Inf or another shape never reach
            # the strategy; they become this data owner's error reply.
            reply = screen_reply(
                p.message,
                self._to_reply(p, mid, inc),
                sender=p.email,
                allow_nonfinite=self._allow_nonfinite(),
            )
            if self._keeping and not reply.has_error():
                self._keep(mid, inc, reply)
            out.append(reply)
            self._complete(mid, p, response=inc)
        self._count(out)
        return out

    def _keep(self, mid: str, inc: Incoming, reply: Message) -> None:
        """Link a large reply's sealed attachments into the journal (no rewrite)."""
        assert self.journal is not None
        try:
            stems = self._rpc.keep_attachments(inc, self.journal.parts_dir)
        except OSError as exc:
            logger.debug("could not keep the attachments of %s: %s", mid, exc)
            return
        if stems is not None:
            prefix = bytes(inc.body)  # the FramedBody's prefix, without its parts
            with self._lock:
                self._kept[mid] = (prefix, inc.attachments, stems)
            self._make_spillable(reply, prefix, inc.attachments, stems)

    def _make_spillable(
        self,
        reply: Message,
        prefix: bytes,
        refs: Sequence[BlobRef],
        stems: Sequence[str],
    ) -> None:
        """Back the reply's large arrays by their kept chunks (see :meth:`_spill`)."""
        journal = self.journal
        assert journal is not None
        slots = frames.parse_frame(prefix).slots
        records = reply.content.array_records
        for slot, ref, stem in zip(slots, refs, stems, strict=True):
            record = records[slot.record]
            arr = record[slot.key]
            spillable = SpillableArray(
                arr.dtype,
                arr.shape,
                arr.stype,
                arr.data,
                functools.partial(journal.read_kept, ref, stem),
                # Aggregation reads each reply once (``numpy()`` copies it):
                # then it need not stay in memory beside the others.
                release_on_read=True,
            )
            record[slot.key] = spillable
            self._spillable.append(spillable)

    def _spill(self) -> None:
        """Release the previous call's large reply arrays that were never read.

        Flower's strategy loops keep the previous phase's replies referenced
        while the next phase runs; their bytes are on disk (the journal), so
        they leave memory here and are read back only if somebody reads them.
        """
        with self._lock:
            spillable, self._spillable = self._spillable, []
        for arr in spillable:
            arr.spill()

    def _set_aside(
        self,
        p: _Pending,
        mid: str,
        exc: Exception,
        *,
        waiting_for: str = "its own reply",
    ) -> None:
        """Log (once per reason) a reply file that does not count, and keep waiting.

        With encryption on, only a reply sealed by the addressed data owner
        counts; a planted, tampered or unreadable file must not end the exchange
        and throw away the real result that may still come.
        """
        reason = str(exc)
        with self._lock:
            if self._aside.get(mid) == reason:
                return
            self._aside[mid] = reason
        logger.warning(
            "set aside a reply file for the request to %s (%s): %s; it does not "
            "count as %s's answer, still waiting for %s",
            p.email,
            mid,
            reason,
            p.email,
            waiting_for,
        )

    def _count(self, replies: list[Message]) -> None:
        with self._lock:
            for r in replies:
                if r.metadata.message_type == SYSTEM_MESSAGE_TYPE:
                    continue
                if r.has_error():
                    self.tally.failed += 1
                else:
                    self.tally.succeeded += 1

    def _complete(
        self,
        mid: str,
        p: _Pending,
        *,
        delete: bool = True,
        response: Incoming | None = None,
    ) -> None:
        with self._lock:
            self._pending.pop(mid, None)
            self._arrived.discard(mid)
            self._aside.pop(mid, None)
        self._release_shared(mid)
        if delete:
            try:
                self._rpc.finish(p.email, self.endpoint, mid, response=response)
            except TransportError as exc:
                logger.debug("could not clean up exchange %s: %s", mid, exc)

    def withdraw(self, message_ids: Iterable[str]) -> list[str]:
        """Delete unanswered requests so late data owners do not train on them.

        Returns the emails whose requests were withdrawn.
        """
        emails = []
        for mid in message_ids:
            with self._lock:
                p = self._pending.pop(mid, None)
                self._arrived.discard(mid)
                self._failed.pop(mid, None)
                self._aside.pop(mid, None)
                never_written = self._unsent.pop(mid, None) is not None
            if p is None:
                continue
            emails.append(p.email)
            self._release_shared(mid)
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
        if self.journal is None:
            return self._send_and_receive(messages, timeout)
        # Resume: a call recorded before a crash is answered from the journal; a
        # completed live call is recorded before the ServerApp sees its replies.
        fps = request_fingerprints(messages)
        recorded = self.journal.replay(fps)
        if recorded is not None:
            return self._replay(messages, recorded)
        self._spill()
        self._keeping = True
        try:
            replies = self._send_and_receive(messages, timeout)
        finally:
            self._keeping = False
            with self._lock:
                kept, self._kept = self._kept, {}
        by_id = {r.metadata.reply_to_message_id: r for r in replies}
        entries: list[tuple[str, Entry]] = []
        for fp, m in zip(fps, messages, strict=True):
            mid = m.metadata.message_id
            entries.append((fp, kept.get(mid) or by_id.get(mid)))
        self.journal.record(entries)
        return replies

    def _replay(
        self, messages: list[Message], recorded: list[bytes | None]
    ) -> list[Message]:
        if self._run is None:
            raise RuntimeError("no run set: call set_run(run_id) first")
        replies: list[Message] = []
        for msg, body in zip(messages, recorded, strict=True):
            self._check(msg)
            set_routing(msg, run_id=self._run.run_id, src_node_id=AGGREGATOR_NODE_ID)
            set_message_id(msg, str(uuid.uuid4()))
            if msg.metadata.message_type != SYSTEM_MESSAGE_TYPE:
                with self._lock:
                    self.tally.sent += 1
            if body is None:
                continue  # it was not answered in the interrupted run either
            reply = bytes_to_flower_message(body)
            set_reply_to(reply, msg.metadata.message_id)
            replies.append(reply)
        self._count(replies)
        logger.debug("replayed %d replies from the checkpoint", len(replies))
        return replies

    def _send_and_receive(
        self, messages: list[Message], timeout: float | None
    ) -> list[Message]:
        wait_s = self._get_timeout(timeout)
        rescan = self._settings().poll_interval
        ids = self.push_messages(messages)
        shown = progress.wait("replies", len(ids), wait_s)
        remaining = set(ids)
        replies: list[Message] = []
        start = time.monotonic()
        deadline = start + wait_s
        next_progress = start + min(PROGRESS_EVERY, shown.every)
        next_full = start  # the first pass reads everything
        beat_every, _ = self._heartbeat_limit()
        given_up: set[str] = set()
        first = True
        try:
            while remaining:
                now = time.monotonic()
                full = now >= next_full
                if full:
                    next_full = now + rescan
                # The first pass comes right after the requests were written:
                # no sync client has refused them yet, so no rejection marker
                # is looked for (a folder listing per data owner). Every later
                # full pass looks.
                pulled = self._pull(
                    list(remaining), full=full, check_rejected=full and not first
                )
                first = False
                for reply in pulled:
                    remaining.discard(reply.metadata.reply_to_message_id)
                    replies.append(reply)
                gone = self._give_up_on_silent(remaining)
                given_up |= gone
                remaining.difference_update(gone)
                if not remaining:
                    break
                now = time.monotonic()
                if now >= deadline:
                    break
                if now >= next_progress:
                    self._log_progress(ids, remaining, replies, shown)
                    next_progress = now + min(PROGRESS_EVERY, shown.every)
                with self._cv:
                    # File events wake us; deferred requests are retried often; a
                    # full pass every poll interval catches anything events missed.
                    step = 0.25 if self._unsent else rescan
                    self._cv.wait_for(
                        lambda: bool(self._arrived & remaining) or self._ready_hint,
                        timeout=max(
                            0.0,
                            min(
                                deadline - now,
                                step,
                                next_progress - now,
                                next_full - now,
                                beat_every,
                            ),
                        ),
                    )
                    self._ready_hint = False
        finally:
            shown.done()
        answered = sorted(
            {self._node_to_email.get(r.metadata.src_node_id, "?") for r in replies}
        )
        failed = sum(1 for r in replies if r.has_error())
        logger.info(
            "%d/%d replies in %.1f s from %s%s%s",
            len(replies),
            len(ids),
            time.monotonic() - start,
            ", ".join(answered) or "nobody",
            f" ({failed} errors)" if failed else "",
            f" (gave up on {len(given_up)}: no heartbeat)" if given_up else "",
        )
        if remaining:
            late = self.withdraw(remaining)
            logger.warning(
                "timed out after %.0f s: no reply from %s; their requests were withdrawn",
                wait_s,
                ", ".join(sorted(set(late))) or "?",
            )
        return replies

    def _log_progress(
        self,
        ids: list[str],
        remaining: set[str],
        replies: list[Message],
        shown: progress.WaitHandle,
    ) -> None:
        """Tell the progress reporter who answered and who is still awaited."""
        with self._lock:
            waiting = {self._pending[m].email for m in remaining if m in self._pending}
        answered = {self._node_to_email.get(r.metadata.src_node_id) for r in replies}
        shown.update(
            answered=sorted(e for e in answered if e),
            waiting=waiting,
            count=len(ids) - len(remaining),
        )

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
        msgs = [
            self.create_message(
                RecordDict(
                    {
                        "config": ConfigRecord(
                            {"action": "stop", "reason": reason, "outcome": outcome}
                        )
                    }
                ),
                SYSTEM_MESSAGE_TYPE,
                nid,
                group_id,
                ttl,
            )
            for nid in self.get_node_ids()
        ]
        ids = self.push_messages(msgs)
        if wait > 0:
            remaining = set(ids)
            deadline = time.monotonic() + wait
            while remaining and time.monotonic() < deadline:
                for r in self.pull_messages(list(remaining)):
                    remaining.discard(r.metadata.reply_to_message_id)
                with self._cv:
                    self._cv.wait_for(
                        lambda: bool(self._arrived & remaining),
                        timeout=max(0.0, min(0.5, deadline - time.monotonic())),
                    )
                    self._arrived -= remaining
            if remaining:
                late = self.withdraw(remaining)
                logger.info("no stop acknowledgement from %s", ", ".join(sorted(late)))
        return msgs

    def close(self) -> None:
        """Stop watching for replies; close the transport if this grid created it.

        Shared model folders still in use are deleted: nothing is left behind.
        """
        with self._lock:
            for w in self._watches.values():
                w.cancel()
            self._watches.clear()
            groups = list(self._groups)
            self._groups.clear()
            self._group_of.clear()
        for group in groups:
            try:
                self._rpc.delete_shared(group)
            except TransportError as exc:
                logger.debug("could not delete shared folder %s: %s", group, exc)
        if self._owns_transport:
            self.transport.close()

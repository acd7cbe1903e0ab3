"""Request/response files over any transport: the syft-rpc layout with our envelope.

A request from ``S`` to ``R`` for ``<app>``/``<endpoint>`` lives at::

    R/app_data/<app>/rpc/<endpoint>/S/<id>.request     (+ <id>.request.<n>.chunk)
    R/app_data/<app>/rpc/<endpoint>/S/<id>.response    (+ <id>.response.<n>.chunk)

The sender writes the request into its copy of ``R``'s datasite; ``R`` answers
next to it. This package knows the layout and the envelope, not Flower and not
the backend: a :class:`~syft_flwr.transports.base.Transport` moves the files and
a :class:`CodecPolicy` decides how bodies are sealed (plaintext or encrypted).

:class:`SyftFlwrRpc` is the face; the work is done by small owners of their own
state: :mod:`~syft_flwr.wire.layout` (where files live),
:mod:`~syft_flwr.wire.writer` (writing and deleting, with the memory of what was
written), :mod:`~syft_flwr.wire.reader` (reading and checking, with the shared
attachment cache), :mod:`~syft_flwr.wire.shared` (shared attachment groups) and
:mod:`~syft_flwr.wire.kept` (linking kept chunks).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

from syft_flwr.config import Settings
from syft_flwr.transports.base import RpcPath, Transport, Watch
from syft_flwr.wire import kept
from syft_flwr.wire.blobs import BlobRef
from syft_flwr.wire.codec_policy import CodecPolicy, PlaintextPolicy
from syft_flwr.wire.envelope import Head, Kind, head_name
from syft_flwr.wire.layout import Layout, attachment_chunk_name, message_files
from syft_flwr.wire.message import Incoming, Part, StoredParts
from syft_flwr.wire.reader import Reader
from syft_flwr.wire.shared import SharedGroups
from syft_flwr.wire.writer import Writer

__all__ = [
    "CodecPolicy",
    "Incoming",
    "Part",
    "PlaintextPolicy",
    "StoredParts",
    "SyftFlwrRpc",
    "attachment_chunk_name",
    "message_files",
]


class SyftFlwrRpc:
    """Write and read request/response files for one app.

    Parameters
    ----------
    transport:
        Moves the files; its ``identity`` is the local user.
    app_name:
        The app folder name under ``app_data`` (may contain ``/``).
    settings:
        Chunk size and inline limit; defaults to ``Settings.from_env()``.
    policy:
        Body codec policy; defaults to plaintext.
    clock:
        Returns POSIX time; injectable for expiry tests.
    """

    def __init__(
        self,
        transport: Transport,
        app_name: str,
        *,
        settings: Settings | None = None,
        policy: CodecPolicy | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.transport = transport
        self.app_name = app_name.strip("/")
        self.settings = settings or Settings.from_env()
        chunk = self.settings.chunk_size
        if transport.max_file_size is not None:
            chunk = min(chunk, transport.max_file_size)
        self.chunk_size = chunk
        self.layout = Layout(self.app_name)
        first: CodecPolicy = policy or PlaintextPolicy()
        self._writer = Writer(
            transport, self.layout, self.settings, first, clock, chunk
        )
        self._reader = Reader(transport, self.layout, self.settings, first)
        self._shared = SharedGroups(transport, self.layout, first, clock, chunk)

    @property
    def identity(self) -> str:
        return self.transport.identity

    @property
    def policy(self) -> CodecPolicy:
        """Body codec policy; setting it changes it for writing and reading alike."""
        return self._reader.policy

    @policy.setter
    def policy(self, policy: CodecPolicy) -> None:
        self._writer.policy = self._reader.policy = self._shared.policy = policy

    @property
    def clock(self) -> Callable[[], float]:
        """Returns POSIX time (creation stamps, expiry of shared groups)."""
        return self._writer.clock

    @clock.setter
    def clock(self, clock: Callable[[], float]) -> None:
        self._writer.clock = self._shared.clock = clock

    # -- layout -------------------------------------------------------------------
    def url(self, owner: str, endpoint: str) -> str:
        return self.layout.url(owner, endpoint)

    def folder(self, owner: str, endpoint: str, peer: str) -> str:
        """Key of the folder holding ``peer``'s exchanges with ``owner``."""
        return self.layout.folder(owner, endpoint, peer)

    def endpoint_prefix(self, owner: str, endpoint: str) -> str:
        return self.layout.endpoint_prefix(owner, endpoint)

    def head_key(
        self, owner: str, endpoint: str, peer: str, mid: str, kind: Kind
    ) -> str:
        return self.layout.head_key(owner, endpoint, peer, mid, kind)

    # -- shared attachments (one blob for several recipients) ------------------------
    @property
    def can_share(self) -> bool:
        """Whether the transport can store one blob for several readers."""
        return self.transport.can_share

    def shared_folder(self, owner: str, group: str) -> str:
        """Key of ``owner``'s shared blob folder ``group`` for this app."""
        return self.layout.shared_folder(owner, group)

    def new_shared_group(self, readers: Iterable[str], expires_at: float) -> str:
        """Create a shared blob folder readable by ``readers``; return its name.

        The name carries the expiry, so :meth:`sweep_shared` can remove what a
        crashed run left behind.
        """
        return self._shared.new_group(readers, expires_at)

    def put_shared(self, group: str, data: bytes | memoryview) -> BlobRef:
        """Store ``data`` once in shared folder ``group``; return its reference.

        Encrypted under a fresh content key when encryption is on; each request
        that names the reference carries the key sealed for its own recipient.
        """
        return self._shared.put(group, data)

    def delete_shared(self, group: str) -> None:
        """Delete shared folder ``group`` (its chunks, then its permission files)."""
        self._shared.delete(group)

    def sweep_shared(self, now: float | None = None) -> int:
        """Delete this party's shared blob folders whose requests have expired.

        Returns the number of folders removed.
        """
        return self._shared.sweep(now)

    # -- writing ------------------------------------------------------------------
    def send_request(
        self,
        recipient: str,
        endpoint: str,
        body: bytes | memoryview,
        *,
        expires_at: float,
        message_id: str | None = None,
        headers: Mapping[str, str] | None = None,
        parts: Sequence[Part] | None = None,
    ) -> str:
        """Write a request for ``recipient``; return its id.

        ``body`` may be an inline framed body (its large parts become
        attachments), or a detached one with its ``parts`` given separately
        (bytes to store next to the request, or shared :class:`BlobRef`).
        """
        return self._writer.send_request(
            recipient,
            endpoint,
            body,
            expires_at=expires_at,
            message_id=message_id,
            headers=headers,
            parts=parts,
        )

    def send_response(
        self,
        request: Incoming | RpcPath,
        *,
        request_id: str | None = None,
        expires: str | None = None,
        status_code: int = 200,
        body: bytes | memoryview = b"",
        headers: Mapping[str, str] | None = None,
        plaintext: bool = False,
        before_head: Callable[[StoredParts], None] | None = None,
    ) -> None:
        """Answer a request (decoded, or only located when it could not be read).

        ``plaintext`` is only for refusals that cannot be sealed: their body is
        the refusal reason, never data. ``before_head`` is called once the
        reply's attachments (if any) are stored and before its head makes it
        visible: the data owner keeps the reply there (:meth:`link_parts`).
        """
        self._writer.send_response(
            request,
            request_id=request_id,
            expires=expires,
            status_code=status_code,
            body=body,
            headers=headers,
            plaintext=plaintext,
            before_head=before_head,
        )

    # -- keeping ------------------------------------------------------------------
    def link_parts(self, stored: StoredParts, dest: Path, stem: str) -> bool:
        """Give the chunks of ``stored``'s attachments private names in ``dest``.

        Chunk ``i`` of attachment ``k`` becomes ``dest/<stem>.a<k>.<i:06d>.chunk``
        (:func:`~syft_flwr.wire.blobs.chunk_file_name`), a hard link where the
        backend allows it: the sealed bytes are stored once and stay when the
        message's files are deleted. Returns False (and links nothing) when
        there are no attachments or they cannot all be linked (another
        backend, another disk, a shared attachment): the caller keeps a copy.
        """
        return kept.link_parts(self.transport, stored, dest, stem)

    def keep_attachments(self, incoming: Incoming, dest: Path) -> list[str] | None:
        """Give a message's attachment chunks private names in folder ``dest``.

        For a record that must outlive the exchange (the researcher's resume
        journal): where the backend can link a file (local folders on one disk)
        the chunks already on disk are kept as they are, sealed, without writing
        them again; deleting the exchange later removes only their shared
        names. Returns the file stem of each attachment
        (``<stem>.<i:06d>.chunk``), or ``None``, linking nothing, when they
        could not all be linked (shared attachments, another backend, another
        disk): the caller then writes the bytes it has.
        """
        return kept.keep_attachments(self.transport, incoming, dest)

    # -- reading ------------------------------------------------------------------
    def read(
        self, key: str, *, raw_head: bytes | None = None, head: Head | None = None
    ) -> Incoming:
        """Read and decode the head file at ``key`` and its chunks.

        ``raw_head`` is the head's bytes when the caller already read them (saves
        a second read, which on Drive is a second download); ``head`` is the
        head already parsed from them by :func:`~syft_flwr.wire.envelope.parse_head`
        with this side's ``max_message_bytes`` (saves a second parse). Every
        other check runs.

        Raises
        ------
        MessageNotFound
            No head file at ``key``.
        IncompleteMessage
            Partial head, or chunks not all there yet: retry later.
        EnvelopeError
            The head is complete but malformed.
        UnknownSenderError
            The head's sender is not the party whose folder it sits in.
        EncryptionError
            The body cannot be opened (tampered, wrong keys, plaintext refused).
        """
        return self._reader.read(key, raw_head=raw_head, head=head)

    def vouch_for_reply(self, key: str) -> bool:
        """Whether the reply file at ``key`` is one this side wrote, as it stands.

        Its head must parse, name this side as sender and the file's own id,
        and (encryption on) carry this side's signature over that id, its
        recipient and every signed head field, in a version its reader accepts.
        A reply copied from another request, or altered, is not vouched for.
        With encryption off nothing is signed: sender and id are all there is.

        Raises
        ------
        MessageNotFound
            No file at ``key`` (gone meanwhile).
        """
        return self._reader.vouch_for_reply(key)

    def read_head_bytes(self, key: str) -> bytes:
        """The bytes of a head file, read under the head size limit.

        Raises
        ------
        MessageNotFound
            No such file.
        UnsafeFileError
            Not a regular file, or larger than any head may be.
        """
        return self._reader.read_head_bytes(key)

    def response_for(
        self, recipient: str, endpoint: str, mid: str, *, check_rejected: bool = True
    ) -> Incoming | None:
        """Return the decoded response to request ``mid`` sent to ``recipient``.

        Returns ``None`` while there is no response file yet. With
        ``check_rejected=False`` the (costlier) rejection-marker check is skipped.

        Raises
        ------
        PermissionDenied
            The backend refused to deliver the request (rejection marker).
        IncompleteMessage, EnvelopeError, EncryptionError, UnknownSenderError
            As :meth:`read`.
        """
        return self._reader.response_for(
            recipient, endpoint, mid, check_rejected=check_rejected
        )

    # -- deleting -----------------------------------------------------------------
    def delete_message(
        self, folder: str, mid: str, kind: Kind, *, read: Incoming | None = None
    ) -> None:
        """Delete a head and its chunks (head first, so readers stop at once).

        The chunk files are known without listing the folder when this side
        wrote the message, or when ``read`` is the message as read from it
        (its head names its chunks and attachments); otherwise the folder is
        listed for files named after the message.
        """
        self._writer.delete_message(folder, mid, kind, read=read)

    def withdraw(self, recipient: str, endpoint: str, mid: str) -> None:
        """Delete a request this side wrote (a late data owner then skips it)."""
        self.delete_message(
            self.folder(recipient, endpoint, self.identity), mid, "request"
        )

    def finish(
        self,
        recipient: str,
        endpoint: str,
        mid: str,
        *,
        response: Incoming | None = None,
    ) -> None:
        """Delete both sides of a completed exchange that this side may delete.

        ``response`` is the reply as read (its files are then known).
        """
        folder = self.folder(recipient, endpoint, self.identity)
        self.delete_message(folder, mid, "request")
        self.delete_message(folder, mid, "response", read=response)

    # -- watching -----------------------------------------------------------------
    def watch_responses(
        self, recipient: str, endpoint: str, callback: Callable[[str], None]
    ) -> Watch:
        """Call ``callback(message_id)`` when a response file for us may have changed."""
        folder = self.folder(recipient, endpoint, self.identity)

        def on_key(key: str) -> None:
            name = key.rsplit("/", 1)[-1]
            if ".response" in name:
                callback(name.split(".")[0])

        return self.transport.watch(folder, on_key)

    def watch_requests(self, endpoint: str, callback: Callable[[str], None]) -> Watch:
        """Call ``callback(head_key)`` when a request to us (or its chunk) changes."""
        prefix = self.endpoint_prefix(self.identity, endpoint)

        def on_key(key: str) -> None:
            path = RpcPath.parse(key)
            if path is None or ".request" not in path.name:
                return
            mid = path.name.split(".")[0]
            callback(f"{path.folder}/{head_name(mid, 'request')}")

        return self.transport.watch(prefix, on_key)

    def request_keys(self, endpoint: str) -> list[tuple[str, bool]]:
        """Return ``(head key, has a response file)`` for every request to us."""
        keys = self.transport.list(self.endpoint_prefix(self.identity, endpoint))
        present = set(keys)
        return [
            (k, k[: -len(".request")] + ".response" in present)
            for k in keys
            if k.endswith(".request")
        ]

    def pending_request_keys(self, endpoint: str) -> list[str]:
        """Return head keys of requests to us that have no response yet."""
        return [k for k, answered in self.request_keys(endpoint) if not answered]

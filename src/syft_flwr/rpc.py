"""Request/response files over any transport: the syft-rpc layout with our envelope.

A request from ``S`` to ``R`` for ``<app>``/``<endpoint>`` lives at::

    R/app_data/<app>/rpc/<endpoint>/S/<id>.request     (+ <id>.request.<n>.chunk)
    R/app_data/<app>/rpc/<endpoint>/S/<id>.response    (+ <id>.response.<n>.chunk)

The sender writes the request into its copy of ``R``'s datasite; ``R`` answers
next to it. This module knows the layout and the envelope, not Flower and not
the backend: a :class:`~syft_flwr.transports.base.Transport` moves the files and
a :class:`CodecPolicy` decides how bodies are sealed (plaintext or encrypted).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from syft_flwr._email import fold_domain
from syft_flwr.config import Settings
from syft_flwr.envelope import (
    MAX_HEAD_BYTES,
    BodyCodec,
    Head,
    Kind,
    PlainCodec,
    SealContext,
    chunk_name,
    decode_body,
    encode_message,
    format_time,
    head_name,
    parse_head,
)
from syft_flwr.errors import (
    EncryptionError,
    MessageNotFound,
    PermissionDenied,
    PlaintextRefused,
    UnknownSenderError,
)
from syft_flwr.transports.base import RpcPath, Transport, Watch, join_key

__all__ = [
    "CodecPolicy",
    "Incoming",
    "PlaintextPolicy",
    "SyftFlwrRpc",
]


class CodecPolicy(Protocol):
    """Chooses the body codec for each message (see ``syft_flwr.crypto``)."""

    #: When True, plaintext incoming messages are refused and outgoing ones sealed.
    required: bool

    def for_sending(self, ctx: SealContext) -> BodyCodec:
        """Codec to seal a body addressed to ``ctx.recipient``."""
        ...

    def for_receiving(self, ctx: SealContext, head: Head) -> BodyCodec:
        """Codec to open a body sent by ``ctx.sender`` (raise to refuse it)."""
        ...


class PlaintextPolicy:
    """Encryption off: bodies are stored as they are; encrypted ones are refused."""

    required = False

    def for_sending(self, ctx: SealContext) -> BodyCodec:
        return PlainCodec()

    def for_receiving(self, ctx: SealContext, head: Head) -> BodyCodec:
        if head.encrypted:
            raise EncryptionError(
                f"{head.kind} {head.id} from {ctx.sender} is encrypted but encryption is "
                "off here; set SYFT_FLWR_ENCRYPTION_ENABLED the same on both sides"
            )
        return PlainCodec()


@dataclass(frozen=True)
class Incoming:
    """A decoded request or response."""

    path: RpcPath
    head: Head
    body: bytes

    @property
    def id(self) -> str:
        return self.head.id

    @property
    def sender(self) -> str:
        return self.head.sender


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
        self.policy: CodecPolicy = policy or PlaintextPolicy()
        self.clock = clock
        chunk = self.settings.chunk_size
        if transport.max_file_size is not None:
            chunk = min(chunk, transport.max_file_size)
        self.chunk_size = chunk

    @property
    def identity(self) -> str:
        return self.transport.identity

    # -- layout -------------------------------------------------------------------
    def url(self, owner: str, endpoint: str) -> str:
        return f"syft://{owner}/app_data/{self.app_name}/rpc/{endpoint.strip('/')}"

    def folder(self, owner: str, endpoint: str, peer: str) -> str:
        """Key of the folder holding ``peer``'s exchanges with ``owner``."""
        return join_key(
            owner, "app_data", self.app_name, "rpc", endpoint.strip("/"), peer
        )

    def endpoint_prefix(self, owner: str, endpoint: str) -> str:
        return join_key(owner, "app_data", self.app_name, "rpc", endpoint.strip("/"))

    def head_key(
        self, owner: str, endpoint: str, peer: str, mid: str, kind: Kind
    ) -> str:
        return f"{self.folder(owner, endpoint, peer)}/{head_name(mid, kind)}"

    # -- writing ------------------------------------------------------------------
    def _write(
        self,
        *,
        folder: str,
        ctx: SealContext,
        url: str,
        body: bytes | memoryview,
        status_code: int | None = None,
        headers: Mapping[str, str] | None = None,
        plaintext: bool = False,
    ) -> None:
        codec = PlainCodec() if plaintext else self.policy.for_sending(ctx)
        head, chunks = encode_message(
            ctx=ctx,
            url=url,
            body=body,
            created=format_time(self.clock()),
            codec=codec,
            chunk_size=self.chunk_size,
            inline_limit=self.settings.inline_limit,
            status_code=status_code,
            headers=headers,
        )
        # Chunks first, head last: the head's appearance commits the message.
        for name, data in chunks:
            self.transport.put(f"{folder}/{name}", data)
        self.transport.put(f"{folder}/{head_name(ctx.message_id, ctx.kind)}", head)

    def send_request(
        self,
        recipient: str,
        endpoint: str,
        body: bytes | memoryview,
        *,
        expires_at: float,
        message_id: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> str:
        """Write a request for ``recipient``; return its id."""
        mid = message_id or str(uuid.uuid4())
        recipient = fold_domain(recipient)
        ctx = SealContext(
            message_id=mid,
            sender=self.identity,
            recipient=recipient,
            app=self.app_name,
            endpoint=endpoint.strip("/"),
            kind="request",
            expires=format_time(expires_at),
        )
        self._write(
            folder=self.folder(recipient, endpoint, self.identity),
            ctx=ctx,
            url=self.url(recipient, endpoint),
            body=body,
            headers=headers,
        )
        return mid

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
    ) -> None:
        """Answer a request (decoded, or only located when it could not be read).

        ``plaintext`` is only for refusals that cannot be sealed: their body is
        the refusal reason, never data.
        """
        if plaintext and status_code == 200:
            raise ValueError("only refusals may be sent unencrypted")
        if isinstance(request, Incoming):
            path, mid, exp = request.path, request.id, request.head.expires
        else:
            path = request
            mid = request_id or request.name.split(".")[0]
            exp = expires or format_time(self.clock() + 3600)
        ctx = SealContext(
            message_id=mid,
            sender=self.identity,
            recipient=path.peer,
            app=self.app_name,
            endpoint=path.endpoint,
            kind="response",
            expires=exp,
        )
        self._write(
            folder=path.folder,
            ctx=ctx,
            url=self.url(path.owner, path.endpoint),
            body=body,
            status_code=status_code,
            headers=headers,
            plaintext=plaintext,
        )

    # -- reading ------------------------------------------------------------------
    def read(self, key: str, *, raw_head: bytes | None = None) -> Incoming:
        """Read and decode the head file at ``key`` and its chunks.

        ``raw_head`` is the head's bytes when the caller already read them (saves
        a second read, which on Drive is a second download).

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
        path = RpcPath.parse(key)
        if path is None or path.app != self.app_name:
            raise MessageNotFound(f"{key} is not a message of app {self.app_name}")
        kind: Kind = "response" if path.name.endswith(".response") else "request"
        data = raw_head if raw_head is not None else self.read_head_bytes(key)
        head = parse_head(
            data,
            expected_kind=kind,
            max_message_bytes=self.settings.max_message_bytes,
        )
        # Who may have written this file: the requester writes into its own
        # sub-folder, the folder owner answers next to it.
        expected_sender = path.peer if kind == "request" else path.owner
        if head.sender != expected_sender:
            raise UnknownSenderError(
                f"{kind} {head.id} claims sender {head.sender} but sits in the folder "
                f"of {expected_sender}"
            )
        if head.id != path.name.rsplit(".", 1)[0]:
            raise UnknownSenderError(
                f"{kind} file {path.name} carries a different id ({head.id})"
            )
        ctx = SealContext(
            message_id=head.id,
            sender=head.sender,
            recipient=path.owner if kind == "request" else path.peer,
            app=self.app_name,
            endpoint=path.endpoint,
            kind=kind,
            expires=head.expires,
        )
        # A refusal (non-200 response) may come in clear when the data owner
        # could not seal it. With encryption on, nothing proves who wrote such a
        # file, so it never counts as the data owner's answer: it is refused
        # with the reason it claims (useful in logs, never trusted).
        refusal = kind == "response" and (head.status_code or 200) != 200
        if self.policy.required and not head.encrypted:
            if refusal and head.storage == "inline":
                claimed = head.inline_body[:200].decode("utf-8", errors="replace")
                raise PlaintextRefused(
                    f"an unauthenticated refusal (status {head.status_code}, not "
                    f"sealed by {head.sender}) says: {claimed!r}"
                )
            raise PlaintextRefused(
                f"{kind} {head.id} from {head.sender} is not encrypted, but encryption "
                "is required here (SYFT_FLWR_ENCRYPTION_ENABLED)"
            )
        codec = (
            PlainCodec()
            if refusal and not head.encrypted
            else self.policy.for_receiving(ctx, head)
        )
        folder = path.folder
        # Each chunk is read up to the size its (validated) manifest gives it.
        limits = {
            chunk_name(head.id, head.kind, i): c.size for i, c in enumerate(head.chunks)
        }
        body = decode_body(
            head,
            ctx,
            codec,
            lambda n: self.transport.read_limited(f"{folder}/{n}", limits[n]),
        )
        return Incoming(path=path, head=head, body=body)

    def read_head_bytes(self, key: str) -> bytes:
        """The bytes of a head file, read under the head size limit.

        Raises
        ------
        MessageNotFound
            No such file.
        UnsafeFileError
            Not a regular file, or larger than any head may be.
        """
        return self.transport.read_limited(key, MAX_HEAD_BYTES)

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
        key = self.head_key(recipient, endpoint, self.identity, mid, "response")
        try:
            return self.read(key)
        except MessageNotFound:
            req = self.head_key(recipient, endpoint, self.identity, mid, "request")
            if check_rejected and self.transport.is_rejected(req):
                raise PermissionDenied(
                    f"{recipient}'s datasite refused request {mid} (rejected by sync)"
                ) from None
            return None

    def delete_message(self, folder: str, mid: str, kind: Kind) -> None:
        """Delete a head and its chunks (head first, so readers stop at once)."""
        self.transport.delete(f"{folder}/{head_name(mid, kind)}")
        prefix = f"{folder}/{mid}.{kind}."
        chunks = [k for k in self.transport.list(folder) if k.startswith(prefix)]
        if chunks:
            self.transport.delete_many(chunks)

    def withdraw(self, recipient: str, endpoint: str, mid: str) -> None:
        """Delete a request this side wrote (a late data owner then skips it)."""
        self.delete_message(
            self.folder(recipient, endpoint, self.identity), mid, "request"
        )

    def finish(self, recipient: str, endpoint: str, mid: str) -> None:
        """Delete both sides of a completed exchange that this side may delete."""
        folder = self.folder(recipient, endpoint, self.identity)
        self.delete_message(folder, mid, "request")
        self.delete_message(folder, mid, "response")

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

"""The one exception hierarchy of syft_flwr.

Every error raised by the package derives from :class:`SyftFlwrError`; where the
meaning matches a builtin, the class also derives from it so callers may catch
either::

    SyftFlwrError
    ├── ConfigError (ValueError)
    │   ├── NodeIdCollisionError
    │   ├── PathNotFoundError (FileNotFoundError)  app folder, main.py, DATA_DIR
    │   └── AlreadyExistsError (FileExistsError)   bootstrap over an existing main.py
    ├── RunFailed                      the ServerApp raised, or every ClientApp call failed
    ├── CheckpointError                a saved checkpoint cannot be read (use --fresh)
    ├── SerializationError (ValueError)
    ├── EnvelopeError (ValueError)
    │   ├── IncompleteMessage          file partial / chunk not synced yet: retry later
    │   ├── ChunkIntegrityError        a chunk's size or sha256 does not match
    │   └── UnsafeFileError            not a regular file, a link, or over a size limit
    ├── TransportError (OSError)
    │   ├── MessageNotFound (FileNotFoundError)
    │   ├── PermissionDenied (PermissionError)    e.g. SyftBox rejected the write
    │   ├── TransportTimeout (TimeoutError)
    │   ├── TransportClosed
    │   └── RemoteServiceError         a backend (Drive) kept failing after retries
    ├── EncryptionError
    │   ├── KeyNotFound (LookupError)  no private keys or no peer DID document
    │   ├── KeyConflictError           keys on disk do not match the published DID
    │   ├── PeerKeyChangedError        a peer's identity key differs from the pinned one
    │   ├── KeyRollbackError           a peer's published keys are older than seen before
    │   ├── KeyFilePermissionError (PermissionError)
    │   ├── BadSignatureError          a prekey signature does not verify
    │   ├── DecryptionError            tampered/truncated/reordered ciphertext
    │   └── PlaintextRefused           plaintext received while encryption is on
    └── SecurityError
        ├── UnknownSenderError         sender is not an allowed aggregator/data owner
        ├── ReplayError                a request id was already executed
        ├── MessageExpired             the request's expiry has passed
        ├── UnacceptableReply          a reply's values are not finite or not the model's shape
        ├── UnsignedHeadError          a sealed message's head is not signed (envelope < 3)
        ├── StateIntegrityError        a party's own private state failed its MAC check
        ├── ContainmentUnavailable     a containment layer cannot be enforced here
        ├── WorkerFailed               the ClientApp's worker died, broke its protocol or overran
        │   └── ClientAppStopped       killed at the request's deadline
        └── ReviewError                a project package or review decision is refused
            ├── UnsafeArchiveError     ``../``, absolute paths, links, devices, too big
            ├── ProjectSignatureError  not signed by the researcher's pinned identity key
            └── ProjectNotApproved     a request names a project that may not run here

Backend errors (``OSError``, ``googleapiclient.errors.HttpError``) are mapped to
these at the transport boundary, with the original chained as ``__cause__``.
"""

from __future__ import annotations

__all__ = [
    "AlreadyExistsError",
    "ContainmentUnavailable",
    "BadSignatureError",
    "CheckpointError",
    "ClientAppStopped",
    "ChunkIntegrityError",
    "ConfigError",
    "DecryptionError",
    "EncryptionError",
    "EnvelopeError",
    "IncompleteMessage",
    "KeyConflictError",
    "KeyFilePermissionError",
    "KeyNotFound",
    "KeyRollbackError",
    "MessageExpired",
    "MessageNotFound",
    "NodeIdCollisionError",
    "PathNotFoundError",
    "PeerKeyChangedError",
    "PermissionDenied",
    "PlaintextRefused",
    "ProjectNotApproved",
    "ProjectSignatureError",
    "RemoteServiceError",
    "ReplayError",
    "ReviewError",
    "RunFailed",
    "SecurityError",
    "SerializationError",
    "StateIntegrityError",
    "SyftFlwrError",
    "TransportClosed",
    "TransportError",
    "TransportTimeout",
    "UnacceptableReply",
    "UnknownSenderError",
    "UnsafeArchiveError",
    "UnsafeFileError",
    "UnsignedHeadError",
    "WorkerFailed",
]


class SyftFlwrError(Exception):
    """Base class of every syft_flwr error."""


class ConfigError(SyftFlwrError, ValueError):
    """Invalid configuration (missing aggregator, bad email, bad env value, ...)."""


class NodeIdCollisionError(ConfigError):
    """Two datasites of one run map to the same Flower node id."""


class PathNotFoundError(ConfigError, FileNotFoundError):
    """A required folder or file is missing (upstream raised FileNotFoundError)."""


class AlreadyExistsError(ConfigError, FileExistsError):
    """Refusing to overwrite a file (upstream raised FileExistsError)."""


class RunFailed(SyftFlwrError):
    """A federated run did not succeed: the ServerApp raised, or no ClientApp
    call succeeded. Parties exit non-zero on it."""


class CheckpointError(SyftFlwrError):
    """Saved progress (the researcher's journal) is unreadable; rerun with ``--fresh``."""


class SerializationError(SyftFlwrError, ValueError):
    """Bytes could not be turned into a Flower Message (or back)."""


class EnvelopeError(SyftFlwrError, ValueError):
    """An on-disk message envelope is malformed."""


class IncompleteMessage(EnvelopeError):
    """A message file is partial or a chunk has not arrived yet; try again later."""


class ChunkIntegrityError(EnvelopeError):
    """A chunk file's size or sha256 does not match the envelope manifest."""


class UnsafeFileError(EnvelopeError):
    """A file in a shared folder is refused unread: a symlink, FIFO or device, a
    path leading outside the datasites, or more bytes than the limit allows."""


class TransportError(SyftFlwrError, OSError):
    """A transport could not move a file."""


class MessageNotFound(TransportError, FileNotFoundError):
    """No file under that key."""


class PermissionDenied(TransportError, PermissionError):
    """The backend refused the operation (e.g. a SyftBox rejection marker)."""


class TransportTimeout(TransportError, TimeoutError):
    """A transport operation did not finish in time."""


class TransportClosed(TransportError):
    """The transport was closed."""


class RemoteServiceError(TransportError):
    """A remote backend (e.g. Google Drive) kept failing after all retries."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class EncryptionError(SyftFlwrError):
    """Base class of end-to-end encryption errors."""


class KeyNotFound(EncryptionError, LookupError):
    """Private keys or a peer's public DID document are missing."""


class KeyConflictError(EncryptionError):
    """Keys on disk conflict with the published DID document; nothing was overwritten."""


class PeerKeyChangedError(EncryptionError):
    """A peer's published identity key is not the one pinned on first use.

    Nothing is sent to (or accepted from) that peer until the user checks the new
    fingerprint out of band and accepts it (``syft_flwr keys trust EMAIL``).

    Parameters
    ----------
    message : str
        The explanation shown to the user.
    email : str
        The peer.
    pinned : str
        Fingerprint of the pinned (first seen) identity key.
    published : str
        Fingerprint of the identity key published now.
    """

    def __init__(self, message: str, *, email: str, pinned: str, published: str):
        super().__init__(message)
        self.email = email
        self.pinned = pinned
        self.published = published


class KeyFilePermissionError(EncryptionError, PermissionError):
    """A private key file is readable by other users."""


class BadSignatureError(EncryptionError):
    """A signed prekey's signature does not verify under the identity key."""


class DecryptionError(EncryptionError):
    """Ciphertext failed authentication (tampered, truncated, reordered or misaddressed)."""


class PlaintextRefused(EncryptionError):
    """A plaintext message arrived while encryption is required."""


class SecurityError(SyftFlwrError):
    """A message was refused for a security reason."""


class UnknownSenderError(SecurityError):
    """The sender is not an allowed party of this run."""


class ReplayError(SecurityError):
    """This request id was already executed."""


class MessageExpired(SecurityError):
    """The message's expiry time has passed."""


class ReviewError(SecurityError):
    """A project package, or a review decision about one, is refused."""


class UnsafeArchiveError(ReviewError):
    """A project archive holds ``..``/absolute paths, links, devices, or is too big."""


class ProjectSignatureError(ReviewError):
    """A project manifest is not signed by the researcher's pinned identity key."""


class ProjectNotApproved(ReviewError):
    """A request names a project that is not approved, or whose files changed."""


class StateIntegrityError(SecurityError):
    """A record of a party's private state failed its integrity check.

    The record was changed, copied from another party or another run, or written by
    a version of syft_flwr that did not authenticate it. It is never acted on.
    """


class UnacceptableReply(SecurityError):
    """A data owner's reply carries values the researcher will not aggregate.

    An array or metric that is not finite (NaN, Inf), an array whose shape, dtype
    or serialization differs from the model the data owner was sent, or one that
    is not a readable numpy array. The reply counts as that data owner's failure.
    """


class UnsignedHeadError(SecurityError):
    """A sealed message's head fields (status, creation time, ...) are not signed.

    Envelopes before version 3 sealed the body but not the head around it, so a
    status there could have been changed by anyone who can write the file. Such a
    message is refused where the unsigned fields would change what the reader
    does (see ``docs/envelope.md``).
    """


class KeyRollbackError(EncryptionError):
    """A peer publishes keys older than the ones already seen (an old DID put back).

    Its key version, signed by its identity key, is lower than the pinned one (or
    missing). Nothing is sent to or accepted from the peer until it publishes its
    current keys again.

    Attributes
    ----------
    email : str
        The peer.
    pinned : int
        The highest key version seen from it.
    published : int
        The version it publishes now (0: none).
    """

    def __init__(self, message: str, *, email: str, pinned: int, published: int):
        super().__init__(message)
        self.email = email
        self.pinned = pinned
        self.published = published


class ContainmentUnavailable(SecurityError):
    """A containment layer the data owner requires cannot be enforced on this machine.

    Nothing of the approved code runs (fail closed). The message names the
    layer and why; ``--containment none`` (``SYFT_FLWR_CONTAINMENT=none``) is
    the data owner's explicit opt-down.

    Attributes
    ----------
    layers : tuple of str
        The layers that cannot be enforced (e.g. ``"network"``, ``"files"``).
    """

    def __init__(self, message: str, *, layers: tuple[str, ...] = ()):
        super().__init__(message)
        self.layers = layers


class PrivacyBudgetExceeded(SecurityError):
    """Answering a request would spend more privacy budget than the data owner allows.

    Nothing leaves; the researcher gets an error reply saying how much of the
    dataset's budget (or the project's cap) is spent and how much is left.
    """


class PrivacyPolicyViolation(SecurityError):
    """A reply the data owner's privacy policy cannot make private is refused.

    E.g. arrays whose names or shapes do not match the request, a metric with no
    declared sensitivity, or free text (a ConfigRecord). Nothing of it leaves.
    """


class WorkerFailed(SecurityError):
    """The worker process running the ClientApp died, broke its protocol, or overran.

    The request gets an error reply saying how; the worker is killed (its
    whole process group) and a fresh one serves the next request.
    """


class ClientAppStopped(WorkerFailed):
    """The ClientApp was still running at the request's deadline and was killed."""

"""The transport contract: move opaque files between datasites, and notice them.

A transport knows nothing of Flower, envelopes or encryption. It stores bytes
under string *keys* and tells a callback when a key under a watched prefix
appears or changes. Everything else (serialization, chunking, encryption,
retries of "not ready yet", idempotence) is written once, above it.

Keys
----
Keys are ``/``-separated, relative, and follow the SyftBox datasite layout::

    <owner>/app_data/<app>/rpc/<endpoint>/<peer>/<file>

``<owner>`` is the datasite the folder belongs to (the data owner for FL
requests), ``<peer>`` the other party of the exchange. A transport maps keys to
its storage: SyftBox to ``<data_dir>/datasites/<key>``, the memory transport to
a dict, Google Drive to per-(writer -> reader) shared folders. Keys never
contain ``..``, empty segments or a leading ``/``.

Size: just over 400 lines because it is the whole transport contract (the key
layout, watches and the ``Transport`` ABC with its documented defaults), which
every transport implements and reads as one page.
"""

from __future__ import annotations

import builtins  # ``list`` is a method name of Transport
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from syft_flwr._email import fold_domain
from syft_flwr.errors import (
    ConfigError,
    MessageNotFound,
    TransportError,
    UnsafeFileError,
)

__all__ = [
    "KeyCallback",
    "RpcPath",
    "Transport",
    "Watch",
    "HEARTBEAT_NAME",
    "check_key",
    "heartbeat_key",
    "join_key",
    "schema_key",
]

#: Called with the key of a file that appeared or changed. Must be quick and must
#: not block (enqueue work, set an event); it may run on a backend thread.
KeyCallback = Callable[[str], None]

#: Suffix of temporary files. Both SyftBox sync clients ignore ``*.tmp``.
TMP_SUFFIX = ".tmp"


def check_key(key: str) -> str:
    """Validate a transport key and return it.

    Raises
    ------
    ConfigError
        If the key is absolute, empty, or has empty or ``..`` segments.
    """
    if not key or key.startswith("/") or "\\" in key:
        raise ConfigError(f"invalid transport key: {key!r}")
    for part in key.split("/"):
        if part in ("", ".", ".."):
            raise ConfigError(f"invalid transport key: {key!r}")
    return key


def schema_key(owner: str, app: str) -> str:
    """Key of an app's ``rpc.schema.json`` in ``owner``'s datasite."""
    return join_key(owner, "app_data", app, "rpc", "rpc.schema.json")


#: File name of a serving party's heartbeat in its ``<endpoint>/<peer>/`` folder.
#: Neither a request nor a response: the RPC layer and cleanup ignore it.
HEARTBEAT_NAME = "heartbeat.json"


def heartbeat_key(owner: str, app: str, endpoint: str, peer: str) -> str:
    """Key of ``owner``'s heartbeat for ``peer``.

    It sits in the folder the owner already writes its responses to, which the
    peer can read and watches anyway on every backend (SyftBox permissions, a
    Drive channel shared with the peer): a beat costs the reader no request.
    """
    return join_key(owner, "app_data", app, "rpc", endpoint, peer, HEARTBEAT_NAME)


def join_key(*parts: str) -> str:
    """Join key segments with ``/`` and validate the result."""
    return check_key("/".join(p.strip("/") for p in parts if p))


@dataclass(frozen=True)
class RpcPath:
    """The parts of an RPC key ``<owner>/app_data/<app>/rpc/<endpoint>/<peer>/<file>``.

    ``app`` may itself contain ``/`` (e.g. ``flwr/diabetes``); the ``rpc`` marker
    after it delimits it.
    """

    owner: str
    app: str
    endpoint: str
    peer: str
    name: str

    @property
    def key(self) -> str:
        return join_key(
            self.owner, "app_data", self.app, "rpc", self.endpoint, self.peer, self.name
        )

    @property
    def folder(self) -> str:
        return join_key(
            self.owner, "app_data", self.app, "rpc", self.endpoint, self.peer
        )

    @classmethod
    def parse(cls, key: str) -> RpcPath | None:
        """Split an RPC key into its parts, or return ``None`` if it is not one."""
        parts = key.split("/")
        if len(parts) < 7 or parts[1] != "app_data":
            return None
        try:
            rpc_at = len(parts) - 1 - parts[::-1].index("rpc")
        except ValueError:
            return None
        # <owner>/app_data/<app...>/rpc/<endpoint>/<peer>/<name>
        if rpc_at < 3 or len(parts) - rpc_at != 4:
            return None
        return cls(
            owner=parts[0],
            app="/".join(parts[2:rpc_at]),
            endpoint=parts[rpc_at + 1],
            peer=parts[rpc_at + 2],
            name=parts[rpc_at + 3],
        )


class Watch:
    """Handle of a registered watch; ``cancel()`` stops callbacks for it."""

    def __init__(self, prefix: str, callback: KeyCallback) -> None:
        self.prefix = prefix
        self.callback = callback
        self._cancelled = threading.Event()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def matches(self, key: str) -> bool:
        return not self.cancelled and (
            key == self.prefix or key.startswith(self.prefix.rstrip("/") + "/")
        )

    def fire(self, key: str) -> None:
        if self.matches(key):
            self.callback(key)

    def cancel(self) -> None:
        self._cancelled.set()


class Transport(ABC):
    """Moves opaque files under keys; the same contract for every backend.

    Implementations must guarantee:

    * ``put`` is atomic: a reader sees either the old content, nothing, or the
      whole new content (temp file + rename, or a single upload call).
    * ``get`` of a missing key raises :class:`~syft_flwr.errors.MessageNotFound`.
    * ``delete`` is idempotent and only removes what this identity may remove.
    * ``watch`` callbacks fire at least once for every file created or replaced
      under the prefix after the watch is registered (duplicates allowed).
    * backend errors surface as :class:`~syft_flwr.errors.TransportError`.

    Parameters
    ----------
    identity:
        Email of the party using this transport (lower-cased).
    """

    #: Human name used in logs and by the events factory.
    name: str = "abstract"
    #: Largest file this backend will move; the envelope layer chunks below it.
    max_file_size: int | None = None
    #: Seconds between fallback rescans the events layer should use by default.
    default_rescan_interval: float = 2.0
    #: Seconds between heartbeats of a serving party (each beat is one write).
    default_heartbeat_interval: float = 2.0
    #: Whether :meth:`share` works: one folder of ours readable by several peers.
    can_share: bool = False

    def __init__(self, identity: str) -> None:
        # Domain folded, local part exact: the same rule as syft_flwr.ids.normalize_email.
        self.identity = fold_domain(identity)
        self._closed = False

    # -- primitives -----------------------------------------------------------
    @abstractmethod
    def put(self, key: str, data: bytes) -> None:
        """Write ``data`` under ``key`` atomically, creating folders as needed."""

    @abstractmethod
    def get(self, key: str) -> bytes:
        """Return the bytes under ``key``; raise ``MessageNotFound`` if absent."""

    def read_limited(self, key: str, max_bytes: int) -> bytes:
        """Read a file someone else may have written: at most ``max_bytes``.

        Everything read from a shared folder goes through here. Backends that
        can tell (local folders) refuse links, FIFOs and devices without
        opening them for reading, and stop reading past the limit; this
        default reads the file and then checks its length.

        Raises
        ------
        MessageNotFound
            No file under ``key``.
        UnsafeFileError
            More than ``max_bytes``, or not a regular file.
        """
        data = self.get(key)
        if len(data) > max_bytes:
            raise UnsafeFileError(
                f"{key} holds {len(data)} bytes, more than the {max_bytes} allowed"
            )
        return data

    @abstractmethod
    def list(self, prefix: str) -> list[str]:
        """Return the keys of all files under ``prefix`` (recursive), sorted.

        Temporary files of in-progress writes are never listed.
        """

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove ``key`` if it exists and this identity may remove it."""

    @abstractmethod
    def watch(self, prefix: str, callback: KeyCallback) -> Watch:
        """Call ``callback(key)`` whenever a file under ``prefix`` appears or changes."""

    # -- derived operations (override for speed) ------------------------------
    def exists(self, key: str) -> bool:
        """Return whether a file exists under ``key``."""
        try:
            self.get(key)
        except MessageNotFound:
            return False
        return True

    def delete_many(self, keys: Iterable[str]) -> None:
        """Delete several keys (backends may batch this)."""
        for key in keys:
            self.delete(key)

    def is_rejected(self, key: str) -> bool:
        """Return whether the backend refused to sync the file written under ``key``.

        SyftBox renames refused uploads (``x.syftrejected.request`` for the Python
        client, ``x.rejected.request`` for the Go client); other backends refuse
        synchronously in ``put`` and return ``False`` here.
        """
        return False

    def link_out(self, key: str, dest: Path) -> bool:
        """Give our own file under ``key`` a second, private name ``dest``, if cheap.

        Backends whose files are local (one disk) make a hard link and return
        ``True``: the bytes are stored once and stay under ``dest`` when the
        shared name is deleted. Others return ``False`` and the caller keeps
        its own copy. The file must be a regular file (never a link).
        """
        return False

    def share(self, folder: str, readers: Sequence[str]) -> None:
        """Make ``folder`` (under our own datasite) readable by ``readers`` only.

        Called before anything is written into the folder. Backends that cannot
        share one folder with several peers keep ``can_share = False`` and the
        caller stores a copy per peer instead.

        Raises
        ------
        TransportError
            The backend cannot share folders.
        """
        raise TransportError(f"{self.name} transport cannot share a folder")

    def shared_folders(self, prefix: str) -> builtins.list[str]:
        """Keys of this identity's shared folders directly under ``prefix``.

        Empty ones included where the backend keeps folders (an upload that
        never happened, a crash): :meth:`unshare` removes them. By default,
        the folders that hold a file.
        """
        base = prefix.rstrip("/") + "/"
        return sorted(
            {base + k[len(base) :].split("/", 1)[0] for k in self.list(prefix)}
        )

    def unshare(self, folder: str) -> None:
        """Remove shared ``folder`` itself, once its files are deleted.

        Backends without folders of their own have nothing to do. Never
        raises for a folder that is already gone.
        """
        return None

    def prepare(self, app: str, endpoint: str, peers: Sequence[str]) -> None:
        """Prepare this identity's side of ``app``/``endpoint`` for ``peers``.

        Writes ``<me>/app_data/<app>/rpc/rpc.schema.json`` (world-readable), which
        peers take as "this party serves the app". Backends add their own steps
        first: SyftBox writes permission files so each peer may read and write
        only its own sub-folder; Google Drive creates and shares channel folders.
        """
        import json

        key = schema_key(self.identity, app)
        try:
            doc = json.loads(self.get(key))
        except (MessageNotFound, ValueError):
            doc = {}
        if endpoint not in doc:
            doc[endpoint] = {"description": "Flower messages (syft_flwr envelope)"}
            self.put(key, json.dumps(doc, sort_keys=True).encode())

    def is_prepared(self, owner: str, app: str, endpoint: str) -> bool:
        """Return whether ``owner`` serves ``app``/``endpoint`` as far as we can see.

        The researcher defers requests to a data owner until this is true, so no
        request is written before the owner's permissions exist (SyftBox rejects
        such a write for good).
        """
        import json

        try:
            doc = json.loads(self.get(schema_key(owner, app)))
        except (MessageNotFound, ValueError):
            return False
        return isinstance(doc, dict) and endpoint in doc

    def beat(self, app: str, endpoint: str, peers: Sequence[str], data: bytes) -> None:
        """Publish a liveness beat of this identity to each of ``peers``.

        The default replaces a small file (:func:`heartbeat_key`) per peer; the
        change is what the peer notices (see :meth:`watch_heartbeat`).
        """
        for peer in peers:
            key = heartbeat_key(self.identity, app, endpoint, peer.strip().lower())
            self.put(key, data)

    def watch_heartbeat(
        self, owner: str, app: str, endpoint: str, callback: Callable[[], None]
    ) -> Watch:
        """Call ``callback()`` whenever ``owner`` publishes a beat for this identity.

        The default watches the beat's key, so liveness rides on the change
        notifications the backend delivers anyway (watchdog events, Drive's
        change feed): no extra read per beat or per round.
        """
        key = heartbeat_key(owner.strip().lower(), app, endpoint, self.identity)
        # Watch the folder (watched for responses already), not the file: some
        # backends can only watch folders.
        return self.watch(
            key.rsplit("/", 1)[0], lambda k: callback() if k == key else None
        )

    def has_heartbeat(self, owner: str, app: str, endpoint: str) -> bool:
        """Return whether ``owner`` has published a beat for this identity.

        One read, for first contact: a beat published before the watch was set
        up is otherwise not seen until the next one.
        """
        owner = owner.strip().lower()
        return self.exists(heartbeat_key(owner, app, endpoint, self.identity))

    def close(self) -> None:
        """Release resources; idempotent."""
        self._closed = True

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> Transport:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(identity={self.identity!r})"

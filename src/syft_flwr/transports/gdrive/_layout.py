"""Layout on Drive: channel folder names, key parties, the index records, and
who may take part (:class:`Peers`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

from syft_flwr.errors import PermissionDenied
from syft_flwr.transports.base import RpcPath, check_key

__all__ = [
    "CHANNEL_PREFIX",
    "FOLDER_MIME",
    "Peers",
    "channel_folder_name",
    "escape_query_value",
    "file_owner",
    "key_parties",
    "make_entry",
    "parse_channel_folder_name",
    "parse_shared_folder_key",
    "parse_shared_folder_name",
    "shared_folder_name",
    "shared_folder_of",
]

FOLDER_MIME = "application/vnd.google-apps.folder"
CHANNEL_PREFIX = "syft_flwr#v1#"


def _escape_email(email: str) -> str:
    return quote(email.strip().lower(), safe="@.+-_!$&'*=?^`{|}~/")


def channel_folder_name(writer: str, reader: str) -> str:
    """Return the Drive folder name of the ``writer -> reader`` channel.

    Emails are lower-cased and ``%``/``#`` are percent-escaped, so the name splits
    unambiguously on ``#`` for any valid email.

    Examples
    --------
    >>> channel_folder_name("Ann_Lee+fl@x.org", "bob@y.com")
    'syft_flwr#v1#ann_lee+fl@x.org#to#bob@y.com'
    """
    return f"{CHANNEL_PREFIX}{_escape_email(writer)}#to#{_escape_email(reader)}"


def _split_name(name: str, count: int, tag: str) -> list[str] | None:
    """Split a folder name on ``#`` if it has our prefix, ``count`` parts and ``tag``."""
    parts = name.split("#")
    if (
        len(parts) != count
        or f"{parts[0]}#{parts[1]}#" != CHANNEL_PREFIX
        or parts[3] != tag
    ):
        return None
    return parts


def parse_channel_folder_name(name: str) -> tuple[str, str] | None:
    """Return ``(writer, reader)`` if ``name`` is exactly a channel folder name.

    The name must re-encode to itself, so near-misses (upper case, stray ``#``,
    an extra suffix) are rejected rather than guessed at.
    """
    parts = _split_name(name, 5, "to")
    if parts is None:
        return None
    writer, reader = unquote(parts[2]), unquote(parts[4])
    if "@" not in writer or "@" not in reader:
        return None
    if channel_folder_name(writer, reader) != name:
        return None
    return writer, reader


#: A shared group's name: one path segment, never ``..`` or a separator.
_GROUP = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")
#: A file in a shared folder (``<blob id>.<i:06d>.chunk``).
_FILE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}\Z")
_APP_SAFE = "@.+-_!$&'*=?^`{|}~/"


def parse_shared_folder_key(key: str) -> tuple[str, str, str] | None:
    """Return ``(owner, app, group)`` if ``key`` is a shared blob folder key.

    Shared folders are ``<owner>/app_data/<app>/blobs/<group>`` (``app`` may hold
    ``/``); ``owner`` is returned lower-cased. Anything else is ``None``.

    Examples
    --------
    >>> parse_shared_folder_key("DS@x.org/app_data/flwr/toy/blobs/g17-ab")
    ('ds@x.org', 'flwr/toy', 'g17-ab')
    >>> parse_shared_folder_key("ds@x.org/app_data/flwr/toy/rpc/g17-ab") is None
    True
    """
    parts = key.split("/")
    if (
        len(parts) < 5
        or parts[1] != "app_data"
        or parts[-2] != "blobs"
        or "@" not in parts[0]
        or not _GROUP.match(parts[-1])
        or any(p in ("", ".", "..") for p in parts)
    ):
        return None
    return parts[0].lower(), "/".join(parts[2:-2]), parts[-1]


def shared_folder_of(key: str) -> str | None:
    """Return the shared folder key (owner lower-cased) holding file ``key``, or None.

    Only files directly inside a shared folder count: ``<folder>/<name>``.
    """
    folder, _, name = key.rpartition("/")
    if not folder or not _FILE.match(name):
        return None
    parsed = parse_shared_folder_key(folder)
    if parsed is None:
        return None
    owner, app, group = parsed
    return f"{owner}/app_data/{app}/blobs/{group}"


def shared_folder_name(owner: str, app: str, group: str) -> str:
    """Return the Drive folder name of ``owner``'s shared blob folder ``group``.

    Examples
    --------
    >>> shared_folder_name("DS@x.org", "flwr/toy", "g17-ab")
    'syft_flwr#v1#ds@x.org#shared#flwr/toy#g17-ab'
    """
    return (
        f"{CHANNEL_PREFIX}{_escape_email(owner)}#shared#"
        f"{quote(app, safe=_APP_SAFE)}#{group}"
    )


def parse_shared_folder_name(name: str) -> tuple[str, str] | None:
    """Return ``(owner, folder key)`` if ``name`` is exactly a shared folder name.

    Strict like :func:`parse_channel_folder_name`: the name must re-encode to
    itself and the folder key must parse.
    """
    parts = _split_name(name, 6, "shared")
    if parts is None:
        return None
    owner, app, group = unquote(parts[2]), unquote(parts[4]), parts[5]
    key = f"{owner}/app_data/{app}/blobs/{group}"
    parsed = parse_shared_folder_key(key)
    if parsed is None or shared_folder_name(*parsed) != name:
        return None
    return parsed[0], f"{parsed[0]}/app_data/{parsed[1]}/blobs/{parsed[2]}"


def escape_query_value(value: str) -> str:
    """Escape ``\\`` and ``'`` for use inside a single-quoted Drive ``q`` string."""
    return value.replace("\\", "\\\\").replace("'", "\\'")


def key_parties(key: str) -> tuple[str, str]:
    """Return the two parties of a key: ``(owner, peer)`` for RPC keys, else ``(owner, owner)``.

    Raises
    ------
    ConfigError
        If the key is invalid.
    """
    check_key(key)
    rpc = RpcPath.parse(key)
    if rpc is not None:
        return rpc.owner.lower(), rpc.peer.lower()
    owner = key.split("/", 1)[0].lower()
    return owner, owner


@dataclass(frozen=True)
class _Channel:
    """A folder this identity reads or writes: a channel, or a shared blob folder.

    A shared blob folder has ``shared`` set to its folder key and
    ``writer == reader == owner``; it holds only keys directly under that key.
    """

    id: str
    writer: str
    reader: str
    shared: str | None = None

    @property
    def parties(self) -> frozenset[str]:
        return frozenset((self.writer, self.reader))


@dataclass(frozen=True)
class _Entry:
    """One file of a channel, as last seen."""

    file_id: str
    channel_id: str
    key: str
    md5: str | None
    size: int | None
    modified: str

    @property
    def marker(self) -> tuple[str, str, str | None]:
        return (self.file_id, self.modified, self.md5)


def make_entry(
    channel: _Channel,
    file_id: str,
    key: str,
    md5: str | None,
    size: Any,
    modified: str,
) -> _Entry:
    """Build the index record of a file of ``channel`` (``size`` as Drive sent it)."""
    return _Entry(
        file_id=file_id,
        channel_id=channel.id,
        key=key,
        md5=md5,
        size=int(size) if size is not None else None,
        modified=modified,
    )


def file_owner(f: dict[str, Any]) -> str:
    """The lower-cased email of the Drive owner of file metadata ``f``."""
    owners = f.get("owners") or [{}]
    return str(owners[0].get("emailAddress", "")).lower()


@dataclass(frozen=True)
class Peers:
    """Who this transport is, and whom it may read from and write to.

    ``allowed`` is ``None`` when every peer is allowed.
    """

    identity: str
    allowed: frozenset[str] | None

    def allows(self, email: str) -> bool:
        """Whether ``email`` is this identity or an allowed peer."""
        return email == self.identity or self.allowed is None or email in self.allowed

    def parties_for(self, key: str, *, read: bool = False) -> tuple[str, str]:
        """Return ``(me, other)`` for a key this identity takes part in.

        With ``read``, a peer's public key (a non-RPC key ``<peer>/...``, e.g. its
        ``public/did.json``) is readable too: ``other`` is then that peer.

        Raises
        ------
        PermissionDenied
            If this identity is not a party of the key.
        """
        a, b = key_parties(key)
        if read and a == b:
            return self.identity, a
        if self.identity not in (a, b):
            raise PermissionDenied(f"{self.identity} is not a party of {key!r}")
        return self.identity, b if a == self.identity else a

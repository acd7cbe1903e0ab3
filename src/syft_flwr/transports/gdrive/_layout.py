"""Layout on Drive: channel folder names, key parties, and the index records."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, unquote

from syft_flwr.transports.base import RpcPath, check_key

__all__ = [
    "CHANNEL_PREFIX",
    "FOLDER_MIME",
    "channel_folder_name",
    "escape_query_value",
    "key_parties",
    "parse_channel_folder_name",
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


def parse_channel_folder_name(name: str) -> tuple[str, str] | None:
    """Return ``(writer, reader)`` if ``name`` is exactly a channel folder name.

    The name must re-encode to itself, so near-misses (upper case, stray ``#``,
    an extra suffix) are rejected rather than guessed at.
    """
    parts = name.split("#")
    if (
        len(parts) != 5
        or f"{parts[0]}#{parts[1]}#" != CHANNEL_PREFIX
        or parts[3] != "to"
    ):
        return None
    writer, reader = unquote(parts[2]), unquote(parts[4])
    if "@" not in writer or "@" not in reader:
        return None
    if channel_folder_name(writer, reader) != name:
        return None
    return writer, reader


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
    id: str
    writer: str
    reader: str

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

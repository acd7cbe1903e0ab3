"""Private, never-synced storage for key material and trust pins.

A party's private state holds its private keys (for non-SyftBox clients), the
archive of rotated prekeys still inside their grace period, and the identity
keys it pinned for its peers on first use. Two backends share one small API:
:class:`FileKeyStore` (a private folder: every write atomic, files mode 0600) and
:class:`MemoryKeyStore` (a dict, for in-memory clients without a state folder).
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any

from syft_flwr.crypto.keys import _atomic_write
from syft_flwr.errors import EncryptionError, KeyFilePermissionError

if TYPE_CHECKING:
    from syft_flwr.client.protocol import SyftFlwrClient

__all__ = ["FileKeyStore", "KeyStore", "MemoryKeyStore", "key_store_for"]

_FILE_MODE = 0o600
_DIR_MODE = 0o700


class KeyStore(ABC):
    """Named JSON documents in a party's private state.

    Writers of one store are serialized by :attr:`lock` (within a process); every
    write replaces the whole document atomically.
    """

    def __init__(self) -> None:
        self.lock = threading.RLock()

    @abstractmethod
    def read_json(self, name: str) -> Any | None:
        """Return the document ``name``, or ``None`` if there is none.

        Parameters
        ----------
        name : str
            A plain file name such as ``"peers.json"``.

        Returns
        -------
        Any or None
        """

    @abstractmethod
    def write_json(self, name: str, value: Any) -> None:
        """Replace the document ``name`` atomically.

        Parameters
        ----------
        name : str
            A plain file name.
        value : Any
            JSON-serializable value.
        """

    @abstractmethod
    def delete(self, name: str) -> None:
        """Remove the document ``name`` if it exists.

        Parameters
        ----------
        name : str
            A plain file name.
        """


class MemoryKeyStore(KeyStore):
    """A :class:`KeyStore` in a dict (in-memory clients without a state folder).

    Parameters
    ----------
    data : dict, optional
        The dict to keep documents in (shared by every store built on it).
    """

    def __init__(self, data: dict[str, Any] | None = None) -> None:
        super().__init__()
        self._data: dict[str, Any] = {} if data is None else data

    def read_json(self, name: str) -> Any | None:
        with self.lock:
            raw = self._data.get(name)
        # Stored serialized, so callers never share mutable state with the store.
        return None if raw is None else json.loads(raw)

    def write_json(self, name: str, value: Any) -> None:
        with self.lock:
            self._data[name] = json.dumps(value)

    def delete(self, name: str) -> None:
        with self.lock:
            self._data.pop(name, None)


class FileKeyStore(KeyStore):
    """A :class:`KeyStore` in a private folder (created 0700, files 0600).

    Parameters
    ----------
    directory : Path
        The folder; it must never be synced.
    """

    def __init__(self, directory: Path) -> None:
        super().__init__()
        self.directory = Path(directory)

    def path(self, name: str) -> Path:
        """Return the file that holds document ``name``.

        Parameters
        ----------
        name : str
            A plain file name (no separators).

        Returns
        -------
        Path
        """
        if not name or "/" in name or "\\" in name or name in (".", ".."):
            raise EncryptionError(f"invalid key store name {name!r}")
        return self.directory / name

    def read_json(self, name: str) -> Any | None:
        path = self.path(name)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None
        if os.name != "nt" and st.st_mode & 0o077:
            raise KeyFilePermissionError(
                f"{path} is accessible by other users (mode "
                f"{st.st_mode & 0o777:04o}); run `chmod 600 {path}`"
            )
        try:
            return json.loads(path.read_bytes().decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise EncryptionError(f"{path} is not valid JSON: {exc}") from exc

    def write_json(self, name: str, value: Any) -> None:
        path = self.path(name)
        self.directory.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            os.chmod(self.directory, _DIR_MODE)
        data = (json.dumps(value, indent=2, sort_keys=True) + "\n").encode("utf-8")
        _atomic_write(path, data, _FILE_MODE, force_mode=True)

    def delete(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(name).unlink()


def key_store_for(client: SyftFlwrClient) -> KeyStore:
    """The private key store of ``client``.

    ``client.state_dir("_keys")`` when the client has a state folder (SyftBox:
    ``<data_dir>/.syft_flwr/state/<email>/_keys``, never synced; Drive:
    ``~/.syft_flwr/<email>/state/_keys``), else the client's private state on its
    in-memory hub, keyed by identity.

    Parameters
    ----------
    client : SyftFlwrClient

    Returns
    -------
    KeyStore

    Raises
    ------
    EncryptionError
        The client has neither a state folder nor an in-memory hub.
    """
    folder = client.state_dir("_keys")
    if folder is not None:
        return FileKeyStore(folder)
    from syft_flwr.transports.memory import MemoryHub

    hub = getattr(client, "hub", None)
    if not isinstance(hub, MemoryHub):
        raise EncryptionError(f"{client!r} has no private state to keep keys in")
    return MemoryKeyStore(hub.private_state(client.email))

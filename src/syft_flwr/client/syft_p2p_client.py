"""Identities without a SyftBox data dir: Google Drive ("P2P") and the in-memory hub."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from syft_flwr._ids import normalize_email
from syft_flwr.client.protocol import SyftFlwrClient

if TYPE_CHECKING:
    from syft_flwr.transports.base import Transport
    from syft_flwr.transports.memory import MemoryHub

__all__ = ["MemoryClient", "SyftP2PClient", "restrict_peers"]


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.@+-]", "_", name)


class SyftP2PClient(SyftFlwrClient):
    """A Google Drive user (the seed's "P2P" mode).

    Parameters
    ----------
    email:
        The Google account's email.
    transport_factory:
        Builds the :class:`~syft_flwr.transports.gdrive.GDriveTransport`; when
        ``None`` it is built from ``GDRIVE_TOKEN_PATH`` (OAuth token file) or
        ``GDRIVE_SERVICE_ACCOUNT_PATH``, with ``SYFT_FLWR_GDRIVE_API_ROOT`` to point
        at a Drive-compatible server.
    state_root:
        Where local state lives; default ``~/.syft_flwr/<email>``.
    """

    transport_name = "gdrive"

    def __init__(
        self,
        email: str,
        *,
        transport_factory: Callable[[], Transport] | None = None,
        state_root: Path | None = None,
        allowed_peers: Iterable[str] | None = None,
    ) -> None:
        # Google account addresses are case-insensitive and Drive reports them
        # lower-cased, so on Drive the whole address is folded (unlike SyftBox).
        self._email = normalize_email(email).lower()
        #: Only folders shared by these emails are used (None: anyone); the
        #: runners set it to the app's aggregator and data owners.
        self.allowed_peers = (
            None
            if allowed_peers is None
            else {normalize_email(e).lower() for e in allowed_peers}
        )
        self._factory = transport_factory
        self._state_root = state_root or Path.home() / ".syft_flwr" / _safe(self._email)

    @classmethod
    def from_env(cls) -> SyftP2PClient:
        """Build from ``SYFTBOX_EMAIL``."""
        from syft_flwr.errors import ConfigError

        email = os.environ.get("SYFTBOX_EMAIL")
        if not email:
            raise ConfigError("SYFTBOX_EMAIL is not set (needed for Google Drive mode)")
        return cls(email)

    @property
    def email(self) -> str:
        return self._email

    @property
    def syftbox_folder(self) -> Path:
        return Path("SyftBox")

    @property
    def datasites(self) -> Path:
        # Logical only: files live on Google Drive.
        return self.syftbox_folder

    def state_dir(self, app_name: str) -> Path:
        return self._state_root / "state" / _safe(app_name)

    def get_client(self) -> SyftP2PClient:
        return self

    def make_transport(self) -> Transport:
        if self._factory is not None:
            return self._factory()
        from syft_flwr.transports.gdrive import transport_from_env

        return transport_from_env(
            self._email,
            allowed_peers=self.allowed_peers,
            state_dir=self._state_root / "gdrive",
        )


def restrict_peers(client: Any, peers: Iterable[str]) -> None:
    """On Google Drive, deal only with ``peers`` unless the caller already chose.

    The Drive transport then shares nothing with, reads nothing from and writes
    nothing (no reply either) to anyone else. Other clients are left alone: on
    SyftBox the events layer refuses unknown senders itself.

    Parameters
    ----------
    client:
        Any client; only a :class:`SyftP2PClient` whose ``allowed_peers`` is
        still ``None`` is changed.
    peers:
        The emails this party works with (the aggregator, or the data owners).
    """
    if isinstance(client, SyftP2PClient) and client.allowed_peers is None:
        # Google addresses are case-insensitive: Drive folds the whole address.
        client.allowed_peers = {normalize_email(p).lower() for p in peers}


class MemoryClient(SyftFlwrClient):
    """A participant of an in-memory network (for tests and notebooks).

    Parameters
    ----------
    email:
        The participant's email.
    hub:
        The shared :class:`~syft_flwr.transports.memory.MemoryHub`.
    state_dir:
        Optional folder for durable local state; ``None`` keeps it in memory.
    """

    transport_name = "memory"

    def __init__(
        self, email: str, hub: MemoryHub, *, state_dir: Path | None = None
    ) -> None:
        self._email = normalize_email(email)
        self.hub = hub
        self._state_dir = state_dir

    @property
    def email(self) -> str:
        return self._email

    @property
    def datasites(self) -> Path:
        return Path("memory") / "datasites"

    def state_dir(self, app_name: str) -> Path | None:
        return None if self._state_dir is None else self._state_dir / _safe(app_name)

    def get_client(self) -> Any:
        return self

    def make_transport(self) -> Transport:
        from syft_flwr.transports.memory import MemoryTransport

        return MemoryTransport(self.hub, self._email)

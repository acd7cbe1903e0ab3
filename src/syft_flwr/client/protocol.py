"""The client abstraction shared by every transport."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any

from syft_flwr._email import fold_domain

if TYPE_CHECKING:
    from syft_flwr.transports.base import Transport

__all__ = ["SyftFlwrClient"]


class SyftFlwrClient(ABC):
    """Who the local user is and how their files travel.

    Subclasses wrap a SyftBox ``syft_core.Client`` (:class:`SyftCoreClient`), a
    Google Drive account (:class:`SyftP2PClient`) or an in-memory hub
    (:class:`MemoryClient`).
    """

    #: Transport name: "syftbox", "gdrive" or "memory".
    transport_name: str = "abstract"

    @property
    @abstractmethod
    def email(self) -> str:
        """Email of the local user (domain lower-cased, local part exact)."""

    @property
    def config_path(self) -> Path | None:
        """Path of the backing config file, if any."""
        return None

    @property
    @abstractmethod
    def datasites(self) -> Path:
        """Local folder holding (copies of) every datasite; logical for Drive."""

    @property
    def my_datasite(self) -> Path:
        """The local user's own datasite folder."""
        return self.datasites / self.email

    def app_data(
        self, app_name: str | None = None, datasite: str | None = None
    ) -> Path:
        """Folder ``<datasite>/app_data/<app_name>``."""
        ds = fold_domain(datasite or self.email)
        base = self.datasites / ds / "app_data"
        return base / app_name if app_name else base

    @abstractmethod
    def state_dir(self, app_name: str) -> Path | None:
        """A private, never-synced folder for this app's local state (replay ledger)."""

    @abstractmethod
    def get_client(self) -> Any:
        """The backend client object (its type selects the events adapter)."""

    @abstractmethod
    def make_transport(self) -> Transport:
        """Build the transport that moves this user's files."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(email={self.email!r})"

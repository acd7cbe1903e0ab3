"""The ``SyftFlwrEvents`` protocol: serve requests arriving at an app's endpoints."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path

__all__ = ["MessageHandler", "SyftFlwrEvents"]

#: Receives the (decrypted) request body; returns the reply body, or ``None`` for
#: an empty reply. Raising turns into an error reply (status 500).
MessageHandler = Callable[[bytes], str | bytes | None]


class SyftFlwrEvents(ABC):
    """Protocol for syft-flwr event handling implementations.

    This abstraction allows syft-flwr to work with different transport/event
    mechanisms:

    - SyftBox: watchdog file watching over the local datasites folder
    - Google Drive ("P2P"): polling the Drive changes feed
    - in-memory: a shared hub, for tests
    """

    @property
    @abstractmethod
    def client_email(self) -> str:
        """Get the email address of the current user."""

    @property
    @abstractmethod
    def app_dir(self) -> Path:
        """Get the path to the app data directory."""

    @property
    @abstractmethod
    def is_running(self) -> bool:
        """Check if the event loop is currently running."""

    @abstractmethod
    def on_request(
        self,
        endpoint: str,
        handler: MessageHandler,
        auto_decrypt: bool = True,
        encrypt_reply: bool = False,
    ) -> None:
        """Register a handler for incoming messages at an endpoint.

        Parameters
        ----------
        endpoint:
            The endpoint path (e.g. ``"/messages"``).
        handler:
            Function that receives message bytes and returns an optional response.
        auto_decrypt:
            Open encrypted requests before calling the handler. With ``False``
            encrypted requests are refused with an error reply.
        encrypt_reply:
            Kept for API compatibility: when encryption is enabled every reply is
            encrypted to the requester anyway.
        """

    @abstractmethod
    def run_forever(self) -> None:
        """Start the main event loop and block until stopped."""

    @abstractmethod
    def stop(self) -> None:
        """Signal the event loop to stop (safe from any thread, also a handler)."""

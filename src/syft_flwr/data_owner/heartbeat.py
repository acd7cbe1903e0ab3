"""A data owner's liveness beat, published through its transport while it serves."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterable

from syft_flwr.errors import TransportError
from syft_flwr.transports.base import Transport, heartbeat_key

__all__ = ["Heartbeat"]

logger = logging.getLogger("syft_flwr.data_owner")


class Heartbeat:
    """Publishes a data owner's liveness beat through its transport until stopped.

    Parameters
    ----------
    transport:
        The data owner's transport (:meth:`Transport.beat`).
    app_name, endpoint:
        What is being served.
    peers:
        Who may read the beat (the researcher emails).
    interval:
        Seconds between beats.
    """

    def __init__(
        self,
        transport: Transport,
        app_name: str,
        endpoint: str,
        peers: Iterable[str],
        interval: float,
    ) -> None:
        self.transport = transport
        self.app_name = app_name
        self.endpoint = endpoint
        self.peers = sorted({p.strip().lower() for p in peers})
        self.interval = interval
        self.beats = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"heartbeat-{transport.identity}", daemon=True
        )

    def start(self) -> Heartbeat:
        """Start beating (the first beat goes out at once)."""
        self._thread.start()
        return self

    def beat(self) -> None:
        """Publish one beat (a counter: the change is what the researcher sees)."""
        body = json.dumps({"seq": self.beats, "interval": self.interval}).encode()
        self.transport.beat(self.app_name, self.endpoint, self.peers, body)
        self.beats += 1

    def _run(self) -> None:
        # The first beat says "serving": wait until this side is prepared (the
        # researcher then writes its deferred requests at once, no polling).
        while not self._stop.is_set():
            try:
                if self.transport.is_prepared(
                    self.transport.identity, self.app_name, self.endpoint
                ):
                    break
            except TransportError:
                pass
            self._stop.wait(0.02)
        while not self._stop.is_set():
            try:
                self.beat()
            except TransportError as exc:  # e.g. Drive briefly unreachable
                logger.debug("heartbeat not published: %s", exc)
            self._stop.wait(self.interval)

    def stop(self) -> None:
        """Stop beating and remove the beat files (a clean exit leaves nothing)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        try:
            self.transport.delete_many(
                heartbeat_key(
                    self.transport.identity, self.app_name, self.endpoint, peer
                )
                for peer in self.peers
            )
        except TransportError as exc:
            logger.debug("could not remove the heartbeat: %s", exc)

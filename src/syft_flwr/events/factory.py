"""``create_events_watcher``: the events adapter for a client's transport."""

from __future__ import annotations

import logging
from typing import Any

from syft_flwr.client.factory import wrap_client
from syft_flwr.config import Settings
from syft_flwr.data_owner.loop import TransportEvents
from syft_flwr.data_owner.protocol import SyftFlwrEvents

__all__ = ["MemoryEvents", "P2PFileEvents", "SyftEvents", "create_events_watcher"]

logger = logging.getLogger("syft_flwr.events")


class SyftEvents(TransportEvents):
    """Events over a SyftBox data dir (watchdog + periodic rescan)."""


class P2PFileEvents(TransportEvents):
    """Events over Google Drive shared folders (changes-feed polling).

    At exit it waits up to 5 s for the researcher to read its last replies, then
    deletes them: on Drive only a file's owner can delete it.
    """

    DRAIN_TIMEOUT = 5.0


class MemoryEvents(TransportEvents):
    """Events over an in-memory hub (tests, notebooks)."""


class _DefaultFloat(float):
    """A float default the function can tell apart from the same value passed."""


#: The signature's documented default (2.0), recognisable by identity.
DEFAULT_POLL_INTERVAL = _DefaultFloat(2.0)

_BY_TRANSPORT: dict[str, type[TransportEvents]] = {
    "syftbox": SyftEvents,
    "gdrive": P2PFileEvents,
    "memory": MemoryEvents,
}


def create_events_watcher(
    app_name: str,
    client: Any | None = None,
    cleanup_expiry: str = "1d",
    cleanup_interval: str = "1d",
    poll_interval: float = DEFAULT_POLL_INTERVAL,
    **kwargs: Any,
) -> SyftFlwrEvents:
    """Create the events adapter that matches ``client``'s transport.

    Parameters
    ----------
    app_name:
        Name of the FL app (e.g. ``"flwr/my_app"``).
    client:
        A ``SyftFlwrClient`` or ``syft_core.Client`` (``create_client()`` if None).
    cleanup_expiry, cleanup_interval:
        Exchanges older than ``cleanup_expiry`` are deleted every ``cleanup_interval``.
    poll_interval:
        Seconds between fallback rescans (SyftBox, memory) or the Drive polling
        ceiling. Left at its default (2.0), ``SYFT_FLWR_POLL_INTERVAL`` (through
        ``settings``) applies; an explicit value wins.
    **kwargs:
        ``policy``, ``settings``, ``allowed_senders``, ``transport``, ``clock``.

    Returns
    -------
    SyftFlwrEvents
        ``SyftEvents`` (SyftBox), ``P2PFileEvents`` (Drive) or ``MemoryEvents``.
    """
    c = wrap_client(client)
    cls = _BY_TRANSPORT.get(c.transport_name)
    if cls is None:
        raise TypeError(f"no events adapter for transport {c.transport_name!r}")
    kwargs.setdefault("settings", Settings.from_env())
    if poll_interval is DEFAULT_POLL_INTERVAL:  # not chosen by the caller
        poll_interval = kwargs["settings"].poll_interval
    logger.debug("Using %s for %s", cls.__name__, c.email)
    return cls(
        app_name,
        c,
        cleanup_expiry=cleanup_expiry,
        cleanup_interval=cleanup_interval,
        poll_interval=poll_interval,
        **kwargs,
    )

"""Serve requests arriving at an app's endpoints, on any transport."""

from syft_flwr.data_owner.loop import RequestInfo, TransportEvents, current_request
from syft_flwr.data_owner.protocol import MessageHandler, SyftFlwrEvents
from syft_flwr.events.factory import (
    MemoryEvents,
    P2PFileEvents,
    SyftEvents,
    create_events_watcher,
)

__all__ = [
    "MemoryEvents",
    "MessageHandler",
    "P2PFileEvents",
    "RequestInfo",
    "SyftEvents",
    "SyftFlwrEvents",
    "TransportEvents",
    "create_events_watcher",
    "current_request",
]

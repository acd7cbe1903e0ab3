"""Serve requests arriving at an app's endpoints, on any transport."""

from syft_flwr.events.factory import (
    MemoryEvents,
    P2PFileEvents,
    SyftEvents,
    create_events_watcher,
)
from syft_flwr.events.protocol import MessageHandler, SyftFlwrEvents
from syft_flwr.events.watcher import RequestInfo, TransportEvents, current_request

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

"""Identities: who am I, where is my datasite, and which transport do I use.

``create_client()`` returns a :class:`SyftFlwrClient`; its ``get_client()`` tells
which backend it is (``syft_core.Client`` for SyftBox, the client itself for
Google Drive or the in-memory network), exactly as the events factory expects.
"""

from syft_flwr.client.factory import create_client
from syft_flwr.client.protocol import SyftFlwrClient
from syft_flwr.client.syft_core_client import SyftCoreClient
from syft_flwr.client.syft_p2p_client import MemoryClient, SyftP2PClient

__all__ = [
    "MemoryClient",
    "SyftCoreClient",
    "SyftFlwrClient",
    "SyftP2PClient",
    "create_client",
]

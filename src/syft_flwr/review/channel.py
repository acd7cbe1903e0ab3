"""The review channel both sides use: the review inbox's app and endpoint, its RPC.

Submissions travel as ordinary syft_flwr requests of the app
:data:`REVIEW_APP`, endpoint :data:`REVIEW_ENDPOINT`, over the client's own
transport, sealed to the data owner by the body codec policy (X3DH, signed by
the researcher) when encryption is on; the data owner's decision is the
response, sealed back the same way.
"""

from __future__ import annotations

from syft_flwr.client.protocol import SyftFlwrClient
from syft_flwr.config import Settings
from syft_flwr.crypto.policy import default_policy
from syft_flwr.transports.base import Transport
from syft_flwr.wire.mailbox import SyftFlwrRpc

__all__ = ["REVIEW_APP", "REVIEW_ENDPOINT", "SUBMISSION_TTL", "review_rpc"]

#: App folder and endpoint of every data owner's review inbox.
REVIEW_APP, REVIEW_ENDPOINT = "syft_flwr", "projects"
#: How long a submission waits for a decision (seconds).
SUBMISSION_TTL = 30 * 24 * 3600.0


def review_rpc(
    client: SyftFlwrClient, transport: Transport, settings: Settings
) -> SyftFlwrRpc:
    """The client's mailbox for the review app, sealed by its body codec policy."""
    return SyftFlwrRpc(
        transport,
        REVIEW_APP,
        settings=settings,
        policy=default_policy(client, transport, settings),
    )

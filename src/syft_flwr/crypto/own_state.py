"""Find the key that authenticates a party's own private state (journal, ledger).

With encryption on, the party's identity key is already in memory (the policy holds
it). With encryption off the key is read from where it is kept if this party has
one (never created here: turning encryption off must not publish a DID). A party
with no identity key at all has nothing to derive a MAC key from: its private state
is then unauthenticated, which is logged once per store and documented in
``docs/security.md``.
"""

from __future__ import annotations

import logging
import threading

from syft_flwr.client.protocol import SyftFlwrClient
from syft_flwr.crypto.keys import PrivateKeys
from syft_flwr.crypto.state_mac import StateKey
from syft_flwr.errors import KeyNotFound, SyftFlwrError

__all__ = ["state_key_for"]

logger = logging.getLogger(__name__)

_warned: set[str] = set()
_warned_lock = threading.Lock()


def state_key_for(
    client: SyftFlwrClient | None, policy: object, purpose: str
) -> StateKey | None:
    """The MAC key of the private store ``purpose``, or ``None`` without keys.

    Parameters
    ----------
    client : SyftFlwrClient or None
        Whose state (its key file is read when ``policy`` holds no keys).
    policy : object
        The codec policy in use; an encryption policy carries the keys.
    purpose : str
        The store (``"journal"``, ``"ledger"``, ...).

    Returns
    -------
    StateKey or None
        ``None`` when the party has no identity key (encryption off and never
        turned on): its private state is then not authenticated.
    """
    keys = getattr(policy, "keys", None)
    if not isinstance(keys, PrivateKeys) and client is not None:
        keys = _stored_keys(client, purpose)
    if isinstance(keys, PrivateKeys):
        return StateKey(keys, purpose)
    _warn_once(
        purpose,
        f"this party has no identity key, so its private {purpose} is not "
        "authenticated: anyone who can write its state folder can change what it "
        "reads back (turn encryption on to create keys)",
    )
    return None


def _stored_keys(client: SyftFlwrClient, purpose: str) -> PrivateKeys | None:
    from syft_flwr.crypto.policy import load_keys

    try:
        return load_keys(client)
    except KeyNotFound:  # never had keys: said once by the caller
        return None
    except SyftFlwrError as exc:  # a key file we must not use
        _warn_once(purpose + ":load", f"cannot read the identity key: {exc}")
        return None


def _warn_once(what: str, message: str) -> None:
    with _warned_lock:
        if what in _warned:
            return
        _warned.add(what)
    logger.warning("%s", message)

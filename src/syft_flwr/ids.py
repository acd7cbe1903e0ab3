"""Emails, Flower node ids and run ids."""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterable

from syft_flwr._flwr_compat import AGGREGATOR_NODE_ID
from syft_flwr.errors import ConfigError, NodeIdCollisionError

__all__ = [
    "AGGREGATOR_NODE_ID",
    "new_run_id",
    "node_id_for",
    "node_id_map",
    "normalize_email",
]

_EMAIL = re.compile(r"^[^@\s/\\]+@[^@\s/\\]+\.[^@\s/\\]+$")


def normalize_email(email: str) -> str:
    """Lower-case and validate an email (the Go SyftBox lower-cases the whole address).

    Raises
    ------
    ConfigError
        If it is not an email (also rejects ``/`` and ``\\``: emails are folder names).
    """
    e = str(email).strip().lower()
    if not _EMAIL.match(e) or e.startswith(".") or ".." in e:
        raise ConfigError(f"not a valid email address: {email!r}")
    return e


def node_id_for(email: str) -> int:
    """Return the deterministic Flower node id of a datasite.

    The first 8 bytes of ``sha256("syft_flwr/node/" + email)`` as an unsigned
    64-bit integer; 0 and 1 (Flower's SuperLink/aggregator id) are never used.
    """
    digest = hashlib.sha256(
        b"syft_flwr/node/" + normalize_email(email).encode()
    ).digest()
    nid = int.from_bytes(digest[:8], "big")
    return nid if nid > AGGREGATOR_NODE_ID else nid + 2


def node_id_map(emails: Iterable[str]) -> dict[int, str]:
    """Map node id -> email for the datasites of one run.

    Raises
    ------
    NodeIdCollisionError
        If two different datasites map to the same node id (never merged silently).
    ConfigError
        If an email is invalid.
    """
    out: dict[int, str] = {}
    for raw in emails:
        email = normalize_email(raw)
        nid = node_id_for(email)
        if nid in out and out[nid] != email:
            raise NodeIdCollisionError(
                f"datasites {out[nid]} and {email} map to the same node id {nid}"
            )
        out[nid] = email
    return out


def new_run_id() -> int:
    """Return a random 63-bit run id (fits every Flower integer field)."""
    return secrets.randbits(63) or 1

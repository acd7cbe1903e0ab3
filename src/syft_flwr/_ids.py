"""Emails, Flower node ids and run ids."""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterable

from syft_flwr._email import fold_domain
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
    """Validate an email and lower-case its domain; the local part is kept exactly.

    ``Alice@Example.ORG`` becomes ``Alice@example.org``, as syft-core's pydantic
    ``EmailStr`` does: domains are case-insensitive, local parts are not (RFC
    5321), and folding the local part would create a second identity whose key
    paths differ from syft-crypto's. Lower-case emails are unchanged, so node ids
    and key paths of existing lower-case identities stay the same.

    Parameters
    ----------
    email : str
        The address (surrounding whitespace is stripped).

    Returns
    -------
    str

    Raises
    ------
    ConfigError
        If it is not an email (also rejects ``/`` and ``\\``: emails are folder names).
    """
    e = str(email).strip()
    if not _EMAIL.match(e) or e.startswith(".") or ".." in e:
        raise ConfigError(f"not a valid email address: {email!r}")
    return fold_domain(e)


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

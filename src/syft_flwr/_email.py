"""Email case rules shared by every layer (no dependencies, so any layer may import it)."""

from __future__ import annotations

__all__ = ["fold_domain"]


def fold_domain(email: str) -> str:
    """Strip ``email`` and lower-case its domain, keeping the local part exactly.

    Domains are case-insensitive; local parts are not (RFC 5321), and syft-core and
    syft-crypto keep them as written, so ``Alice@x.org`` and ``alice@x.org`` are two
    identities with two key files. Never raises: validation is
    :func:`syft_flwr._ids.normalize_email`'s job.
    """
    e = str(email).strip()
    local, at, domain = e.rpartition("@")
    return f"{local}{at}{domain.lower()}" if at else e

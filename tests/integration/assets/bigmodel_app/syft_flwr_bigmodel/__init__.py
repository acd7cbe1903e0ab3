"""Test-only app: a >10 MB model crosses SyftBox in both directions."""

from __future__ import annotations

import hashlib

import numpy as np

__all__ = ["digest"]


def digest(arr: np.ndarray) -> str:
    """sha256 of an array's dtype, shape and raw bytes."""
    h = hashlib.sha256(f"{arr.dtype.str}{arr.shape}".encode())
    h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()

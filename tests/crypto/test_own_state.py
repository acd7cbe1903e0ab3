"""Which key authenticates a party's private state, with encryption on or off."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

import pytest

from syft_flwr.client import MemoryClient
from syft_flwr.crypto.keys import generate_keys
from syft_flwr.crypto.own_state import state_key_for
from syft_flwr.crypto.policy import save_keys
from syft_flwr.crypto.state_mac import StateKey
from syft_flwr.transports.memory import MemoryHub
from syft_flwr.wire.mailbox import PlaintextPolicy


class _Holding:
    """A policy that holds the keys (as the encryption policy does)."""

    def __init__(self, keys) -> None:
        self.keys = keys


def _purpose() -> str:
    return f"test-{uuid.uuid4().hex[:8]}"  # the warning is logged once per store


def test_the_policys_keys_are_used(tmp_path: Path) -> None:
    keys = generate_keys()
    purpose = _purpose()
    key = state_key_for(None, _Holding(keys), purpose)
    assert key is not None
    StateKey(keys, purpose).verify(key.tag("x"), "x", what="record")


def test_with_encryption_off_the_stored_identity_key_is_still_used(
    tmp_path: Path,
) -> None:
    client = MemoryClient("do@example.org", MemoryHub(), state_dir=tmp_path)
    keys = generate_keys()
    save_keys(client, keys)
    purpose = _purpose()
    key = state_key_for(client, PlaintextPolicy(), purpose)
    assert key is not None
    StateKey(keys, purpose).verify(key.tag("x"), "x", what="record")
    assert not list(tmp_path.rglob("did.json"))  # nothing created or published


def test_without_any_identity_key_state_is_unauthenticated_and_says_so_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    client = MemoryClient("do@example.org", MemoryHub(), state_dir=tmp_path)
    purpose = _purpose()
    with caplog.at_level(logging.WARNING, logger="syft_flwr.crypto.own_state"):
        assert state_key_for(client, PlaintextPolicy(), purpose) is None
        assert state_key_for(client, PlaintextPolicy(), purpose) is None
    said = [
        r
        for r in caplog.records
        if f"private {purpose} is not authenticated" in r.getMessage()
    ]
    assert len(said) == 1
    assert not list(tmp_path.rglob("pvt.jwks.json"))  # never created

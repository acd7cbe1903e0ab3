from __future__ import annotations

import pytest

from syft_flwr.crypto.keys import generate_keys
from syft_flwr.crypto.state_mac import StateKey
from syft_flwr.errors import StateIntegrityError


def test_tag_verifies_and_binds_fields_purpose_and_party() -> None:
    keys = generate_keys()
    key = StateKey(keys, "journal")
    tag = key.tag_hex("run-1", b"\x00payload")
    key.verify(tag, "run-1", b"\x00payload", what="entry")
    key.verify(bytes.fromhex(tag), "run-1", b"\x00payload", what="entry")
    # Changed field, shifted field boundary, other purpose, other party: all refused.
    for bad_key, fields in [
        (key, ("run-2", b"\x00payload")),
        (key, ("run-1\x00", b"payload")),
        (StateKey(keys, "ledger"), ("run-1", b"\x00payload")),
        (StateKey(generate_keys(), "journal"), ("run-1", b"\x00payload")),
    ]:
        with pytest.raises(StateIntegrityError, match="entry failed its integrity"):
            bad_key.verify(tag, *fields, what="entry")


@pytest.mark.parametrize("tag", ["", "zz" * 32, "00" * 31, b"", b"\x00" * 32])
def test_malformed_or_missing_tag_is_refused(tag: str | bytes) -> None:
    key = StateKey(generate_keys(), "pins")
    with pytest.raises(StateIntegrityError):
        key.verify(tag, "x", what="pin")


def test_repr_holds_no_secret() -> None:
    assert repr(StateKey(generate_keys(), "review")) == "StateKey(purpose='review')"

"""Emails, deterministic node ids, collisions, run ids."""

from __future__ import annotations

import hashlib

import pytest

import syft_flwr.ids as ids
from syft_flwr.errors import ConfigError, NodeIdCollisionError
from syft_flwr.ids import (
    AGGREGATOR_NODE_ID,
    new_run_id,
    node_id_for,
    node_id_map,
    normalize_email,
)


def test_aggregator_node_id_is_flowers_superlink_id() -> None:
    from flwr.common.constant import SUPERLINK_NODE_ID

    assert AGGREGATOR_NODE_ID == SUPERLINK_NODE_ID == 1


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # the local part is kept exactly, the domain is folded (as syft-core does)
        ("Alice@Example.ORG", "Alice@example.org"),
        ("alice@example.org", "alice@example.org"),
        ("  bob@example.org ", "bob@example.org"),
        ("a.b+tag@sub.example.org", "a.b+tag@sub.example.org"),
    ],
)
def test_normalize_email(raw: str, expected: str) -> None:
    assert normalize_email(raw) == expected


def test_upper_case_local_part_is_another_identity_with_its_own_node_id() -> None:
    assert normalize_email("Alice@example.org") != normalize_email("alice@example.org")
    assert node_id_for("Alice@example.org") != node_id_for("alice@example.org")
    # the domain is case-insensitive: same node
    assert node_id_for("alice@EXAMPLE.org") == node_id_for("alice@example.org")


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "alice",
        "alice@",
        "@example.org",
        "alice@example",
        "a@b@example.org",
        "al ice@example.org",
        "../etc@example.org",
        "a/b@example.org",
        "a\\b@example.org",
        ".alice@example.org",
        "alice@example..org",
    ],
)
def test_normalize_email_rejects(bad: str) -> None:
    with pytest.raises(ConfigError):
        normalize_email(bad)


def test_node_id_is_documented_hash() -> None:
    email = "do1@example.org"
    digest = hashlib.sha256(b"syft_flwr/node/" + email.encode()).digest()
    expected = int.from_bytes(digest[:8], "big")
    assert expected > 1  # true for this email; the 0/1 case is tested below
    assert node_id_for(email) == expected


def test_node_id_is_deterministic_domain_case_insensitive_and_fits_uint64() -> None:
    emails = [f"user{i}@example.org" for i in range(200)]
    first = [node_id_for(e) for e in emails]
    assert first == [node_id_for(e) for e in emails]
    assert node_id_for("do1@Example.ORG") == node_id_for("do1@example.org")
    assert len(set(first)) == len(first)
    assert all(1 < n < 2**64 for n in first)


@pytest.mark.parametrize(("first_bytes", "expected"), [(0, 2), (1, 3), (2, 2), (7, 7)])
def test_node_id_never_zero_or_one(
    monkeypatch: pytest.MonkeyPatch, first_bytes: int, expected: int
) -> None:
    class FakeDigest:
        def digest(self) -> bytes:
            return first_bytes.to_bytes(8, "big") + b"\xff" * 24

    monkeypatch.setattr(ids.hashlib, "sha256", lambda data=b"": FakeDigest())
    assert node_id_for("x@example.org") == expected


def test_node_id_map() -> None:
    emails = ["do1@example.org", "do2@EXAMPLE.org", "do3@example.org"]
    mapping = node_id_map(emails)
    assert mapping == {
        node_id_for("do1@example.org"): "do1@example.org",
        node_id_for("do2@example.org"): "do2@example.org",
        node_id_for("do3@example.org"): "do3@example.org",
    }
    # Order is the order of the datasites.
    assert list(mapping.values()) == [
        "do1@example.org",
        "do2@example.org",
        "do3@example.org",
    ]


def test_node_id_map_duplicate_email_is_not_a_collision() -> None:
    mapping = node_id_map(["do1@example.org", "do1@Example.org"])
    assert list(mapping.values()) == ["do1@example.org"]


def test_node_id_map_rejects_bad_email() -> None:
    with pytest.raises(ConfigError):
        node_id_map(["do1@example.org", "not-an-email"])


def test_node_id_map_collision_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    # Squeeze the real node ids into two values: three emails must collide (pigeonhole).
    real = ids.node_id_for
    monkeypatch.setattr(ids, "node_id_for", lambda email: 2 + real(email) % 2)
    emails = ["do1@example.org", "do2@example.org", "do3@example.org"]
    with pytest.raises(NodeIdCollisionError) as info:
        node_id_map(emails)
    message = str(info.value)
    assert "same node id" in message
    assert sum(e in message for e in emails) == 2
    assert isinstance(info.value, ConfigError)


def test_new_run_id() -> None:
    run_ids = {new_run_id() for _ in range(100)}
    assert len(run_ids) > 95
    assert all(0 < r < 2**63 for r in run_ids)

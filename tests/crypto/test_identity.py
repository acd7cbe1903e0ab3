"""Exact identities: case-exact local parts, no DID overwrite, memory keys by identity."""

from __future__ import annotations

import gc
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from _support import make_syft_client

from syft_flwr.client import MemoryClient
from syft_flwr.client.protocol import SyftFlwrClient
from syft_flwr.client.syft_p2p_client import SyftP2PClient
from syft_flwr.crypto.keys import fingerprint, generate_keys, private_key_path
from syft_flwr.crypto.policy import did_key, load_or_create_keys, publish_did
from syft_flwr.errors import KeyConflictError
from syft_flwr.transports.memory import MemoryHub

ALICE = "alice@example.org"


# Each factory builds "device n" of ALICE: the same shared network (hub, folder,
# Drive), but a fresh private state with no keys in it.
DeviceFactory = Callable[[int], SyftFlwrClient]


@pytest.fixture(params=["memory", "syftbox", "gdrive"])
def devices(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DeviceFactory]:
    if request.param == "memory":
        hubs = MemoryHub()
        # Memory keys live on the hub per identity, so "another device" of the
        # same identity is a client with its own (empty) state folder.
        yield lambda n: MemoryClient(ALICE, hubs, state_dir=tmp_path / f"dev{n}")
    elif request.param == "syftbox":
        # Shared datasites via a symlinked folder: two data dirs (two key files).
        shared = tmp_path / "shared_datasites"
        shared.mkdir()

        def make(n: int) -> SyftFlwrClient:
            # keys live next to the data dir: one folder per device
            c = make_syft_client(tmp_path / f"dev{n}", ALICE)
            c.data_dir.mkdir(parents=True, exist_ok=True)
            link = c.data_dir / "datasites"
            if not link.exists():
                link.symlink_to(shared, target_is_directory=True)
            return c

        yield make
    else:
        from syft_flwr.testing.drive_server import FakeDriveServer
        from syft_flwr.transports.gdrive import GDriveTransport

        with FakeDriveServer() as server:

            def make_p2p(n: int) -> SyftFlwrClient:
                return SyftP2PClient(
                    ALICE,
                    transport_factory=lambda: GDriveTransport(
                        ALICE, lambda: server.service(ALICE), poll_interval=0.5
                    ),
                    state_root=tmp_path / f"dev{n}",
                )

            yield make_p2p


def test_second_device_does_not_overwrite_the_published_did(
    devices: DeviceFactory,
) -> None:
    first = devices(1)
    t1 = first.make_transport()
    keys = load_or_create_keys(first, t1)
    published = t1.get(did_key(ALICE))
    second = devices(2)
    t2 = second.make_transport()
    with pytest.raises(KeyConflictError, match="private keys"):
        load_or_create_keys(second, t2)
    # and publishing other keys over it is refused with both fingerprints
    other = generate_keys()
    with pytest.raises(KeyConflictError) as err:
        publish_did(t2, ALICE, other, "https://syftbox.local/")
    assert fingerprint(keys) in str(err.value) and fingerprint(other) in str(err.value)
    assert t1.get(did_key(ALICE)) == published
    # the first device still works and republishing its own keys is fine
    assert load_or_create_keys(first, t1) == keys
    t1.close()
    t2.close()


def test_memory_keys_are_per_identity_never_per_object() -> None:
    hub = MemoryHub()
    seen: dict[str, str] = {}
    # id() of freed objects is reused; keys must not follow it (the old bug).
    for i in range(50):
        c = MemoryClient(f"user{i}@example.org", hub)
        seen[c.email] = fingerprint(load_or_create_keys(c, c.make_transport()))
        del c
        gc.collect()
    assert len(set(seen.values())) == 50
    # the same party on the same hub (a new client object) finds its own keys
    again = MemoryClient("user7@example.org", hub)
    assert (
        fingerprint(load_or_create_keys(again, again.make_transport()))
        == (seen["user7@example.org"])
    )
    # a new hub is a new world: fresh keys
    fresh = MemoryClient("user7@example.org", MemoryHub())
    assert (
        fingerprint(load_or_create_keys(fresh, fresh.make_transport()))
        != (seen["user7@example.org"])
    )


def test_upper_case_local_part_is_kept_exactly(tmp_path: Path) -> None:
    upper = make_syft_client(tmp_path, "Alice@Example.ORG")
    lower = make_syft_client(tmp_path, "alice@example.org")
    assert upper.email == "Alice@example.org"  # domain folded, local part exact
    k_upper = load_or_create_keys(upper, upper.make_transport())
    k_lower = load_or_create_keys(lower, lower.make_transport())
    assert fingerprint(k_upper) != fingerprint(k_lower)  # two identities
    # syft-crypto's paths for the exact email (what syft-core hands it)
    assert private_key_path(upper.data_dir, upper.server_url, "Alice@example.org")
    assert private_key_path(
        upper.data_dir, upper.server_url, "Alice@example.org"
    ).is_file()
    did = upper.datasites / "Alice@example.org" / "public" / "did.json"
    assert json.loads(did.read_text())["id"].endswith(":Alice%40example.org")
    # memory: the same rule
    hub = MemoryHub()
    m = MemoryClient("Bob@Example.org", hub)
    assert m.email == "Bob@example.org"
    load_or_create_keys(m, m.make_transport())
    assert "Bob@example.org/public/did.json" in hub.snapshot()

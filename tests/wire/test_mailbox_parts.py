"""Issue 25 (wire): the mailbox is a face over small owners; names and policy stay one."""

from __future__ import annotations

import ast
import importlib
import time
from pathlib import Path

import pytest

from syft_flwr.client import MemoryClient
from syft_flwr.config import Settings
from syft_flwr.crypto.policy import default_policy
from syft_flwr.errors import PlaintextRefused
from syft_flwr.transports.memory import MemoryHub, MemoryTransport
from syft_flwr.wire.envelope import parse_head
from syft_flwr.wire.mailbox import PlaintextPolicy, SyftFlwrRpc

APP = "flwr/parts"
EP = "messages"
DS, DO = "ds@example.org", "do@example.org"
SMALL = Settings(chunk_size=64 * 1024, inline_limit=1024)
SRC = Path(__file__).resolve().parents[2] / "src" / "syft_flwr"

# name -> the module that now owns it; the old paths hand out the same object
HOMES = {
    "CodecPolicy": "syft_flwr.wire.codec_policy",
    "PlaintextPolicy": "syft_flwr.wire.codec_policy",
    "Incoming": "syft_flwr.wire.message",
    "StoredParts": "syft_flwr.wire.message",
    "Part": "syft_flwr.wire.message",
    "attachment_chunk_name": "syft_flwr.wire.layout",
    "message_files": "syft_flwr.wire.layout",
}


@pytest.mark.parametrize("old", ["syft_flwr.rpc", "syft_flwr.wire.mailbox"])
@pytest.mark.parametrize("name", sorted(HOMES))
def test_mailbox_names_are_their_new_homes_objects(old: str, name: str) -> None:
    home = importlib.import_module(HOMES[name])
    assert getattr(importlib.import_module(old), name) is getattr(home, name)
    assert name in importlib.import_module(old).__all__


HEAD_NAMES = [
    "ENVELOPE_VERSION",
    "ChunkInfo",
    "Head",
    "ID_PATTERN",
    "MAX_HEAD_BYTES",
    "SIGNED_HEAD_VERSION",
    "check_id",
    "chunk_name",
    "format_time",
    "head_name",
    "parse_head",
    "parse_time",
    "signed_head",
]


@pytest.mark.parametrize("old", ["syft_flwr.envelope", "syft_flwr.wire.envelope"])
@pytest.mark.parametrize("name", HEAD_NAMES)
def test_envelope_head_names_are_the_head_modules(old: str, name: str) -> None:
    head = importlib.import_module("syft_flwr.wire.head")
    assert getattr(importlib.import_module(old), name) is getattr(head, name)
    assert name in importlib.import_module(old).__all__


def _imports_of(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found


# What crypto/ may use of wire/: the format beneath it, never the mailbox above.
WIRE_BELOW_CRYPTO = {
    "syft_flwr.wire",
    "syft_flwr.wire.envelope",
    "syft_flwr.wire.head",
    "syft_flwr.wire.codec_policy",
    "syft_flwr.wire.strict_json",
    "syft_flwr.wire.blobs",
    "syft_flwr.wire.frames",
    "syft_flwr.wire.reasons",
}


@pytest.mark.parametrize(
    "module", sorted(p.name for p in (SRC / "crypto").glob("*.py")), ids=str
)
def test_crypto_imports_no_wire_module_above_it(module: str) -> None:
    wire = {
        ".".join(m.split(".")[:3])  # the module, not the name imported from it
        for m in _imports_of(SRC / "crypto" / module)
        if m.startswith("syft_flwr.wire")
    }
    assert wire <= WIRE_BELOW_CRYPTO, f"crypto/{module} reaches up into {wire}"


@pytest.mark.parametrize(
    "module", sorted(p.name for p in (SRC / "wire").glob("*.py")), ids=str
)
def test_wire_imports_no_role(module: str) -> None:
    # Bytes on a transport: no Flower, no researcher, no data owner.
    bad = {
        m
        for m in _imports_of(SRC / "wire" / module)
        if m.split(".")[0] == "flwr"
        or m.startswith(("syft_flwr.researcher", "syft_flwr.data_owner"))
    }
    assert not bad, f"wire/{module} imports {bad}"


def _encrypting(hub: MemoryHub, email: str):
    client = MemoryClient(email, hub)
    transport = client.make_transport()
    return transport, default_policy(client, transport, SMALL)


def test_a_policy_set_later_seals_writes_and_refuses_plaintext_reads() -> None:
    hub = MemoryHub()
    ds_t, ds_policy = _encrypting(hub, DS)
    do_t, do_policy = _encrypting(hub, DO)
    ds = SyftFlwrRpc(ds_t, APP, settings=SMALL, policy=PlaintextPolicy())
    do = SyftFlwrRpc(do_t, APP, settings=SMALL, policy=do_policy)
    plain = ds.send_request(DO, EP, b"q", expires_at=time.time() + 600)
    ds.policy = ds_policy  # the same object everywhere it is asked
    assert ds.policy is ds_policy
    sealed = ds.send_request(DO, EP, b"q" * 5000, expires_at=time.time() + 600)
    key = ds.head_key(DO, EP, DS, sealed, "request")
    assert parse_head(hub.snapshot()[key]).encrypted  # written sealed
    assert do.read(key).body == b"q" * 5000
    group = ds.new_shared_group([DO], time.time() + 600)
    assert ds.put_shared(group, b"s" * 3000).key is not None  # shared blob sealed
    # and reading with it refuses what the plaintext policy wrote
    with pytest.raises(PlaintextRefused, match="not encrypted"):
        ds.read(ds.head_key(DO, EP, DS, plain, "request"))


def test_a_clock_set_later_stamps_writes_and_sweeps() -> None:
    hub = MemoryHub()
    ds = SyftFlwrRpc(MemoryTransport(hub, DS), APP, settings=SMALL)
    ds.clock = lambda: 2_000_000_000.0
    mid = ds.send_request(DO, EP, b"q", expires_at=2_000_000_600.0)
    head = parse_head(hub.snapshot()[ds.head_key(DO, EP, DS, mid, "request")])
    assert head.created.startswith("2033-05-18")
    group = ds.new_shared_group([DO], expires_at=1_999_999_999.0)
    ds.put_shared(group, b"s")
    assert ds.sweep_shared() == 1  # expired by the clock set later, not by now

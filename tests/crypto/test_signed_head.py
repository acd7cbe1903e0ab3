"""Envelope v3: every head field a reader acts on is sealed with the body.

Attacks on genuine sealed messages (real X3DH keys, real ``cryptography``, the
in-memory transport): each change of a head field, on a request or a reply, is
refused before the body is opened; a downgrade to an older version is refused;
of the older versions only a sealed 200 reply is still read. And the sender's own
check (``vouch_for_reply``) tells its reply to a request from a copy or an edit.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from syft_flwr.client import MemoryClient
from syft_flwr.config import Settings
from syft_flwr.crypto.policy import default_policy
from syft_flwr.errors import DecryptionError, UnsignedHeadError
from syft_flwr.transports.base import RpcPath
from syft_flwr.transports.memory import MemoryHub
from syft_flwr.wire import envelope
from syft_flwr.wire.envelope import parse_head, signed_head
from syft_flwr.wire.mailbox import PlaintextPolicy, SyftFlwrRpc

APP, EP = "flwr/signed", "messages"
DS, DO = "ds@example.org", "do@example.org"
SMALL = Settings(chunk_size=64 * 1024, inline_limit=1024)
MODEL = b"MODEL-BYTES-" + bytes(range(256)) * 4  # over the inline limit: chunked
Mutation = Callable[[dict[str, Any]], None]


@pytest.fixture
def net() -> tuple[MemoryHub, SyftFlwrRpc, SyftFlwrRpc]:
    hub = MemoryHub()
    rpcs = []
    for email in (DS, DO):
        c = MemoryClient(email, hub)
        t = c.make_transport()
        rpcs.append(
            SyftFlwrRpc(t, APP, settings=SMALL, policy=default_policy(c, t, SMALL))
        )
    return hub, rpcs[0], rpcs[1]


def _exchange(
    net: tuple[MemoryHub, SyftFlwrRpc, SyftFlwrRpc],
    *,
    status: int = 200,
    body: bytes = MODEL,
    before_reply: Callable[[], object] | None = None,
) -> tuple[str, str, str]:
    """A request from DS and DO's genuine sealed reply; returns (id, req key, resp key)."""
    _, ds, do = net
    mid = ds.send_request(DO, EP, b"work", expires_at=time.time() + 600)
    req = ds.head_key(DO, EP, DS, mid, "request")
    incoming = do.read(req)
    if before_reply is not None:
        before_reply()
    do.send_response(incoming, status_code=status, body=body)
    return mid, req, ds.head_key(DO, EP, DS, mid, "response")


def _rewrite(hub: MemoryHub, writer: SyftFlwrRpc, key: str, mutate: Mutation) -> None:
    """What anyone who can write the file does: edit the head, keep everything else."""
    doc = json.loads(hub.snapshot()[key])
    mutate(doc)
    writer.transport.put(key, json.dumps(doc).encode())


def _set(*path_and_value: Any) -> Mutation:
    *path, value = path_and_value

    def mutate(doc: dict[str, Any]) -> None:
        target = doc
        for name in path[:-1]:
            target = target[name]
        target[path[-1]] = value

    return mutate


REPLY_EDITS: dict[str, Mutation] = {
    "status 200 -> 500": _set("status_code", 500),
    "status 200 -> 409": _set("status_code", 409),
    "status 200 -> 403": _set("status_code", 403),
    "created back-dated": _set("created", "2020-01-01T00:00:00+00:00"),
    "created moved ahead": _set("created", "2099-01-01T00:00:00+00:00"),
    "url of another app": _set("url", f"syft://{DO}/app_data/flwr/other/rpc/{EP}"),
    "a header added": _set("headers", "x-extra", "1"),
    "content-type changed": _set("headers", "content-type", "text/plain"),
    "downgraded to version 2": _set("syft_flwr", "v", 2),
    "downgraded to version 1": _set("syft_flwr", "v", 1),
}


@pytest.mark.parametrize("edit", list(REPLY_EDITS), ids=list(REPLY_EDITS))
def test_an_edited_head_of_a_sealed_reply_is_refused(net, edit: str) -> None:
    hub, ds, do = net
    _, _, resp = _exchange(net)
    assert ds.read(resp).body == MODEL  # genuine, before the edit
    _rewrite(hub, do, resp, REPLY_EDITS[edit])
    # Its own signature no longer fits: refused before anything is opened, so
    # no message bytes can reach the reason.
    with pytest.raises(
        DecryptionError, match=f"not signed by the identity key of {DO}"
    ):
        ds.read(resp)


@pytest.mark.parametrize(
    "edit",
    [
        "created back-dated",
        "a header added",
        "url of another app",
        "downgraded to version 2",
    ],
)
def test_an_edited_head_of_a_sealed_request_is_refused(net, edit: str) -> None:
    hub, ds, do = net
    mid = ds.send_request(DO, EP, b"work", expires_at=time.time() + 600)
    req = ds.head_key(DO, EP, DS, mid, "request")
    _rewrite(hub, ds, req, REPLY_EDITS[edit])
    with pytest.raises(UnsignedHeadError if "version" in edit else DecryptionError):
        do.read(req)


def test_a_sealed_error_reply_carries_the_data_owners_status_and_reason(net) -> None:
    _, ds, _ = net
    _, _, resp = _exchange(net, status=500, body=b"RuntimeError: out of memory")
    got = ds.read(resp)
    assert got.head.status_code == 500 and got.body == b"RuntimeError: out of memory"
    # ... and it cannot be turned into a success either.
    hub = net[0]
    _rewrite(hub, net[2], resp, _set("status_code", 200))
    with pytest.raises(DecryptionError, match="not signed by the identity key"):
        ds.read(resp)


def test_signed_head_covers_everything_but_what_sealing_produces(net) -> None:
    hub, _, _ = net
    _, _, resp = _exchange(net)
    doc = json.loads(hub.snapshot()[resp])
    bound = json.loads(signed_head(doc))
    assert set(bound) == set(doc) - {"body"}
    assert set(bound["syft_flwr"]) == set(doc["syft_flwr"]) - {"chunks", "encryption"}
    assert bound["status_code"] == 200 and bound["created"] == doc["created"]
    assert parse_head(hub.snapshot()[resp]).signed_fields == signed_head(doc)


# -- older versions: read only where an unsigned head cannot be abused ---------------


def _as_version_2(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make this process write what syft_flwr before envelope v3 wrote."""
    monkeypatch.setattr(envelope, "signed_head", lambda doc: b"")
    monkeypatch.setattr(envelope, "ENVELOPE_VERSION", 2)


def test_an_old_sealed_200_reply_is_still_read(net, monkeypatch) -> None:
    hub, ds, do = net
    _, _, resp = _exchange(net, before_reply=lambda: _as_version_2(monkeypatch))
    head = parse_head(hub.snapshot()[resp])
    assert head.version == 2 and head.encrypted and head.signed_fields == b""
    assert ds.read(resp).body == MODEL


@pytest.mark.parametrize("status", [500, 409])
def test_an_old_sealed_error_reply_is_refused(net, monkeypatch, status: int) -> None:
    """Its status was outside the seal: it cannot be told from a flipped 200."""
    hub, ds, do = net
    _, _, resp = _exchange(net, before_reply=lambda: _as_version_2(monkeypatch))
    _rewrite(hub, do, resp, _set("status_code", status))  # the v2 attack
    with pytest.raises(UnsignedHeadError, match="older syft_flwr") as info:
        ds.read(resp)
    assert b"MODEL-BYTES" not in str(info.value).encode()


def test_an_old_sealed_request_is_refused(net, monkeypatch) -> None:
    hub, ds, do = net
    with monkeypatch.context() as m:
        _as_version_2(m)
        mid = ds.send_request(DO, EP, b"work", expires_at=time.time() + 600)
    with pytest.raises(UnsignedHeadError, match="request .* older syft_flwr"):
        do.read(ds.head_key(DO, EP, DS, mid, "request"))


# -- the sender's own check ---------------------------------------------------------


def test_the_data_owner_vouches_only_for_its_own_reply_to_that_request(net) -> None:
    hub, ds, do = net
    mid, _, resp = _exchange(net)
    assert do.vouch_for_reply(resp)
    # Its genuine reply, copied as the reply to another request (same bytes).
    other = ds.send_request(DO, EP, b"other work", expires_at=time.time() + 600)
    copied = ds.head_key(DO, EP, DS, other, "response")
    ds.transport.put(copied, hub.snapshot()[resp])
    assert not do.vouch_for_reply(copied)
    # ... with the id inside rewritten to match: the seal no longer fits.
    _rewrite(hub, ds, copied, _set("id", other))
    assert not do.vouch_for_reply(copied)
    # An edited status on its own reply.
    _rewrite(hub, ds, resp, _set("status_code", 500))
    assert not do.vouch_for_reply(resp)
    # A reply the researcher seals in the data owner's name (her own key).
    forged = ds.send_request(DO, EP, b"third", expires_at=time.time() + 600)
    path = RpcPath.parse(ds.head_key(DO, EP, DS, forged, "request"))
    assert path is not None
    ds_as_do = SyftFlwrRpc(ds.transport, APP, settings=SMALL, policy=ds.policy)
    ds_as_do.send_response(path, request_id=forged, body=b"fake")
    assert not do.vouch_for_reply(ds.head_key(DO, EP, DS, forged, "response"))


def test_with_encryption_off_sender_and_id_are_all_there_is(net) -> None:
    hub = MemoryHub()
    c_ds, c_do = MemoryClient(DS, hub), MemoryClient(DO, hub)
    plain = Settings(encryption_enabled=False)
    ds = SyftFlwrRpc(
        c_ds.make_transport(), APP, settings=plain, policy=PlaintextPolicy()
    )
    do = SyftFlwrRpc(
        c_do.make_transport(), APP, settings=plain, policy=PlaintextPolicy()
    )
    mid = ds.send_request(DO, EP, b"work", expires_at=time.time() + 600)
    do.send_response(do.read(ds.head_key(DO, EP, DS, mid, "request")), body=b"r")
    resp = ds.head_key(DO, EP, DS, mid, "response")
    assert do.vouch_for_reply(resp)
    other = ds.send_request(DO, EP, b"w2", expires_at=time.time() + 600)
    copied = ds.head_key(DO, EP, DS, other, "response")
    ds.transport.put(copied, hub.snapshot()[resp])
    assert not do.vouch_for_reply(copied)  # another request's id

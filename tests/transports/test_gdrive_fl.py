"""A whole FL job over Google Drive: researcher + 3 data owners, encrypted, with faults.

Everything goes through the real google-api-python-client to the loopback
Drive-compatible server: uploads, change feed, sharing, owner-only deletes.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from syft_flwr.client import SyftP2PClient
from syft_flwr.client.factory import create_client
from syft_flwr.config import Settings
from syft_flwr.data_owner.runner import run_data_owner
from syft_flwr.events import P2PFileEvents, create_events_watcher
from syft_flwr.project import load_component, load_project
from syft_flwr.researcher.runner import run_researcher
from syft_flwr.testing.drive_server import FakeDriveServer
from syft_flwr.transports.gdrive import GDriveTransport, transport_from_env

pytestmark = pytest.mark.gdrive

TOY = Path(__file__).resolve().parents[1] / "assets" / "toy_app"
DS = "re_searcher+lab@example.org"  # underscore and plus: both must work
DOS = ["do_1@example.org", "Do.Two@example.org", "do3@example.org"]


@pytest.fixture
def server():
    with FakeDriveServer() as s:
        yield s


def _client(server: FakeDriveServer, email: str, tmp: Path) -> SyftP2PClient:
    def factory() -> GDriveTransport:
        return GDriveTransport(email, lambda: server.service(email), poll_interval=0.5)

    return SyftP2PClient(
        email, transport_factory=factory, state_root=tmp / email.lower()
    )


def test_events_factory_picks_drive_adapter(server, tmp_path):
    c = _client(server, "a@example.org", tmp_path)
    ev = create_events_watcher("flwr/x", client=c)
    assert type(ev).__name__ == "P2PFileEvents" and isinstance(ev, P2PFileEvents)
    ev.transport.close()


def test_create_client_p2p_from_env_builds_drive_transport(server, monkeypatch):
    monkeypatch.setenv("SYFTBOX_EMAIL", "a@example.org")
    c = create_client(transport="p2p")
    assert isinstance(c, SyftP2PClient) and c.email == "a@example.org"
    env = {"SYFT_FLWR_GDRIVE_API_ROOT": server.url}
    from syft_flwr.errors import ConfigError

    with pytest.raises(ConfigError, match="GDRIVE_TOKEN_PATH"):
        transport_from_env("a@example.org", env)


@pytest.mark.slow
def test_fl_job_over_drive_encrypted_with_faults(server, tmp_path, capsys):
    cfg = load_project(TOY)
    server_app = load_component(cfg.serverapp, cfg.app_dir)
    client_app = load_component(cfg.clientapp, cfg.app_dir)
    settings = Settings(poll_interval=0.5, chunk_size=256 * 1024)  # many chunks
    rc = dict(
        cfg.app_config,
        **{"num-server-rounds": 2, "min-nodes": 3, "model-size": 300_000},
    )
    done: dict[str, object] = {}
    threads = []
    for i, email in enumerate(DOS):

        def serve(email=email, i=i):
            done[email] = run_data_owner(
                client_app,
                "flwr/toy",
                client=_client(server, email, tmp_path),
                aggregators=[DS],
                run_config=rc,
                node_config={"partition-id": i, "num-partitions": 3},
                settings=settings,
            )

        th = threading.Thread(target=serve, daemon=True)
        th.start()
        threads.append(th)

    # The model (1.2 MB) goes to the three data owners once, in a shared folder.
    shared_chunks: list[str] = []
    create = server.store.create

    def on_create(user, meta, *a, **kw):
        rec = create(user, meta, *a, **kw)
        if "/blobs/" in rec.name:
            shared_chunks.append(rec.name)
        return rec

    server.store.create = on_create
    stop_faults = threading.Event()

    def faults() -> None:
        # Bursts of rate limits, server errors and dropped connections all run long.
        kinds = [
            (429, None),
            (500, None),
            (503, None),
            (403, "rateLimitExceeded"),
            (0, "drop"),
            (0, "lost"),  # served, answer lost: must not store anything twice
        ]
        n = 0
        while not stop_faults.wait(1.0):
            server.inject_faults([kinds[n % len(kinds)]])
            if n % 2 == 0:  # and lost answers to creates: the duplicate risk
                server.inject_faults([(0, "lost")], methods=["files.create"])
            n += 1

    ft = threading.Thread(target=faults, daemon=True)
    ft.start()
    t0 = time.monotonic()
    try:
        run_researcher(
            server_app,
            "flwr/toy",
            [d.lower() for d in DOS],
            client=_client(server, DS, tmp_path),
            run_config=rc,
            settings=settings,
            stop_wait=15,
        )
    finally:
        stop_faults.set()
        ft.join()
        server.clear_faults()
    elapsed = time.monotonic() - t0
    for th in threads:
        th.join(timeout=30)
        assert not th.is_alive(), "a data owner did not stop"
    out = capsys.readouterr().out
    result = json.loads(out.split("TOY_RESULT ", 1)[1].splitlines()[0])
    assert result["final_mean"] == pytest.approx(2.0)
    assert server.counters.get("changes.list", 0) > 0
    # Faults really happened and were survived by retries.
    statuses = [status for _, _, status in server.request_log]
    assert sum(1 for st in statuses if st in (429, 500, 503, 403)) >= 3

    # No message file that its owner could delete is left behind, and nothing
    # anyone wrote is readable as plaintext model weights.
    leftovers = {
        email: [
            f["name"]
            for f in server.files_of(email)
            if f["name"].endswith((".request", ".response", ".chunk"))
        ]
        for email in [DS, *[d.lower() for d in DOS]]
    }
    assert leftovers == {e: [] for e in leftovers}, leftovers
    assert shared_chunks and all(n.startswith(f"{DS}/") for n in shared_chunks)
    assert not [f for f in server.files_of(DS) if "#shared#" in f["name"]]
    assert elapsed < 120


# -- allowed peers on every path -------------------------------------------------------


class _NoEvents:
    """Stands in for the events loop: records the client, returns at once."""

    client_email = "do_1@example.org"

    def __init__(self, seen: dict[str, object], client: object) -> None:
        seen["client"] = client

    def on_request(self, *_a: object, **_k: object) -> None:
        pass

    def run_forever(self) -> None:
        pass

    def stop(self) -> None:
        pass


def test_run_data_owner_restricts_drive_peers_to_the_aggregators(
    server, tmp_path, monkeypatch
):
    import syft_flwr.data_owner.runner as fc

    seen: dict[str, object] = {}
    monkeypatch.setattr(
        fc,
        "create_events_watcher",
        lambda app, client, **kw: _NoEvents(seen, client),
    )
    client = SyftP2PClient("do_1@example.org", state_root=tmp_path)
    assert client.allowed_peers is None
    run_data_owner(object(), "flwr/toy", client=client, aggregators=[DS.upper()])
    assert seen["client"] is client
    assert client.allowed_peers == {DS}
    # The transport built from the environment gets them, and a private state dir.
    token = tmp_path / "token.json"
    token.write_text(json.dumps(server.authorized_user_info("do_1@example.org")))
    monkeypatch.setenv("GDRIVE_TOKEN_PATH", str(token))
    monkeypatch.setenv("SYFT_FLWR_GDRIVE_API_ROOT", server.url)
    monkeypatch.setenv("SYFT_FLWR_GDRIVE_TOKEN_URI", server.token_uri)
    transport = client.make_transport()
    try:
        assert isinstance(transport, GDriveTransport)
        assert transport._peers.allowed == {DS}
        transport.put(f"do_1@example.org/app_data/flwr/toy/rpc/x/{DS}/a", b"1")
        assert list((tmp_path / "gdrive").glob("*.json"))
        from syft_flwr.errors import PermissionDenied

        with pytest.raises(PermissionDenied):
            transport.put(
                "do_1@example.org/app_data/flwr/toy/rpc/x/stranger@evil.org/a", b"1"
            )
    finally:
        transport.close()


def test_syft_grid_restricts_drive_peers_to_its_datasites(server, tmp_path):
    from syft_flwr.researcher.grid import SyftGrid
    from syft_flwr.transports.memory import MemoryHub, MemoryTransport

    client = SyftP2PClient(DS, state_root=tmp_path)
    grid = SyftGrid(
        "flwr/toy",
        [d.upper() for d in DOS],
        client=client,
        transport=MemoryTransport(MemoryHub(), DS),
    )
    assert client.allowed_peers == {d.lower() for d in DOS}
    explicit = SyftP2PClient(DS, state_root=tmp_path, allowed_peers=[DOS[0]])
    SyftGrid("flwr/toy", DOS, client=explicit, transport=grid.transport)
    assert explicit.allowed_peers == {DOS[0].lower()}  # an explicit choice wins


def test_a_stranger_gets_no_reply_and_no_share(server, tmp_path):
    """A stranger's request to a data owner on Drive: never read, never answered."""
    from syft_flwr.crypto.policy import PlaintextPolicy
    from syft_flwr.wire.mailbox import SyftFlwrRpc

    do = DOS[2].lower()
    stranger = "mallory@evil.org"
    plain = Settings(encryption_enabled=False, poll_interval=0.3)
    s_tr = GDriveTransport(stranger, lambda: server.service(stranger))
    ds_tr = GDriveTransport(DS, lambda: server.service(DS), allowed_peers=[do])
    do_tr = GDriveTransport(do, lambda: server.service(do), allowed_peers=[DS])
    events = create_events_watcher(
        "flwr/toy",
        client=_client(server, do, tmp_path),
        transport=do_tr,
        settings=plain,
        policy=PlaintextPolicy(),
        allowed_senders=[DS],
        poll_interval=0.3,
    )
    calls: list[bytes] = []
    events.on_request("messages", lambda body: calls.append(body) or b"ok")
    th = threading.Thread(target=events.run_forever, daemon=True)
    th.start()
    try:
        ds_rpc = SyftFlwrRpc(
            ds_tr, "flwr/toy", settings=plain, policy=PlaintextPolicy()
        )
        s_rpc = SyftFlwrRpc(s_tr, "flwr/toy", settings=plain, policy=PlaintextPolicy())
        evil = s_rpc.send_request(do, "messages", b"evil", expires_at=time.time() + 60)
        good = ds_rpc.send_request(do, "messages", b"good", expires_at=time.time() + 60)
        deadline = time.monotonic() + 20
        reply = None
        while reply is None and time.monotonic() < deadline:
            reply = ds_rpc.response_for(do, "messages", good)
            time.sleep(0.1)
        assert reply is not None and reply.body == b"ok"
        assert calls == [b"good"]
        assert s_rpc.response_for(do, "messages", evil) is None
        names = [f["name"] for f in server.files_of(do)]
        assert not [n for n in names if stranger in n]
        assert {email for email, _ in server.grants_of(do)} == {DS}
    finally:
        events.stop()
        th.join(timeout=10)
        for t in (s_tr, ds_tr, do_tr):
            t.close()

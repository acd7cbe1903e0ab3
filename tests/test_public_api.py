"""The public API documented in seeds/002: names, import paths, types, signatures."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path

import pytest

from syft_flwr.client import SyftCoreClient


def test_documented_imports() -> None:
    from syft_flwr.client import create_client
    from syft_flwr.events import SyftFlwrEvents, create_events_watcher
    from syft_flwr.researcher.grid import SyftGrid

    assert callable(create_client) and callable(create_events_watcher)
    assert inspect.isclass(SyftFlwrEvents) and inspect.isclass(SyftGrid)


def test_syftgrid_is_a_flower_grid_implementing_every_abstract_method() -> None:
    from flwr.server import Grid as ServerGrid
    from flwr.serverapp import Grid

    from syft_flwr.researcher.grid import SyftGrid

    assert issubclass(SyftGrid, Grid)
    assert Grid is ServerGrid
    assert SyftGrid.__abstractmethods__ == frozenset()
    expected = {
        "create_message",
        "get_node_ids",
        "pull_messages",
        "push_messages",
        "run",
        "send_and_receive",
        "set_run",
    }
    assert expected <= set(Grid.__abstractmethods__)
    for name in Grid.__abstractmethods__:
        assert name in SyftGrid.__dict__, f"{name} is not implemented by SyftGrid"
    assert isinstance(SyftGrid.__dict__["run"], property)


def test_syftgrid_signatures() -> None:
    from syft_flwr.researcher.grid import SyftGrid

    init = inspect.signature(SyftGrid.__init__)
    assert list(init.parameters)[1:5] == ["app_name", "datasites", "client", "rpc"]
    for name in ("datasites", "client", "rpc"):
        assert init.parameters[name].default is None

    create = inspect.signature(SyftGrid.create_message)
    assert list(create.parameters)[1:] == [
        "content",
        "message_type",
        "dst_node_id",
        "group_id",
        "ttl",
    ]
    assert create.parameters["ttl"].default is None

    sar = inspect.signature(SyftGrid.send_and_receive)
    assert sar.parameters["timeout"].kind is inspect.Parameter.KEYWORD_ONLY
    assert sar.parameters["timeout"].default is None

    stop = inspect.signature(SyftGrid.send_stop_signal)
    assert stop.parameters["reason"].default == "Training complete"
    assert stop.parameters["ttl"].default == 60.0

    assert list(inspect.signature(SyftGrid.set_run).parameters)[1:] == ["run_id"]
    assert callable(SyftGrid.get_client_email)


def test_events_protocol() -> None:
    from syft_flwr.events import MessageHandler, SyftFlwrEvents

    assert inspect.isabstract(SyftFlwrEvents)
    assert SyftFlwrEvents.__abstractmethods__ == frozenset(
        {"client_email", "app_dir", "is_running", "on_request", "run_forever", "stop"}
    )
    for prop in ("client_email", "app_dir", "is_running"):
        assert isinstance(inspect.getattr_static(SyftFlwrEvents, prop), property)
    on_request = inspect.signature(SyftFlwrEvents.on_request)
    assert list(on_request.parameters)[1:] == [
        "endpoint",
        "handler",
        "auto_decrypt",
        "encrypt_reply",
    ]
    assert on_request.parameters["auto_decrypt"].default is True
    assert on_request.parameters["encrypt_reply"].default is False
    assert MessageHandler is not None


def test_create_events_watcher_signature() -> None:
    from syft_flwr.events import create_events_watcher

    sig = inspect.signature(create_events_watcher)
    params = sig.parameters
    assert list(params)[:5] == [
        "app_name",
        "client",
        "cleanup_expiry",
        "cleanup_interval",
        "poll_interval",
    ]
    assert params["client"].default is None
    assert params["cleanup_expiry"].default == "1d"
    assert params["cleanup_interval"].default == "1d"
    assert params["poll_interval"].default == 2.0


def test_create_events_watcher_picks_syftevents_for_a_syft_core_client(
    make_client: Callable[[str], SyftCoreClient],
) -> None:
    from syft_core import Client

    from syft_flwr.events import SyftFlwrEvents, create_events_watcher

    wrapped = make_client("do1@example.org")
    raw = wrapped.get_client()
    assert isinstance(raw, Client)
    for client in (raw, wrapped):
        events = create_events_watcher(
            "flwr/diabetes", client=client, poll_interval=2.0
        )
        try:
            assert type(events).__name__ == "SyftEvents"
            assert isinstance(events, SyftFlwrEvents)
            assert events.client_email == "do1@example.org"
            assert events.is_running is False
            assert (
                events.app_dir
                == raw.datasites / "do1@example.org" / "app_data" / "flwr/diabetes"
            )
        finally:
            events.transport.close()  # type: ignore[attr-defined]


def test_create_events_watcher_for_other_transports(tmp_path: Path) -> None:
    from syft_flwr.client import MemoryClient, SyftP2PClient
    from syft_flwr.config import Settings
    from syft_flwr.events import create_events_watcher
    from syft_flwr.transports.memory import MemoryHub, MemoryTransport

    hub = MemoryHub()
    plain = Settings(encryption_enabled=False)
    mem = create_events_watcher(
        "app", MemoryClient("m@example.org", hub), settings=plain
    )
    assert type(mem).__name__ == "MemoryEvents"
    p2p_client = SyftP2PClient(
        "p@example.org",
        transport_factory=lambda: MemoryTransport(hub, "p@example.org"),
        state_root=tmp_path / "p2p",
    )
    assert p2p_client.get_client() is p2p_client
    p2p = create_events_watcher("app", p2p_client, settings=plain)
    assert type(p2p).__name__ == "P2PFileEvents"
    with pytest.raises(TypeError):
        create_events_watcher("app", object())


def test_create_client_detects_syftbox_from_env(
    make_client: Callable[[str], SyftCoreClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    from syft_core import Client

    from syft_flwr.client import SyftFlwrClient, create_client

    made = make_client("ds@example.org")
    monkeypatch.setenv("SYFTBOX_CLIENT_CONFIG_PATH", str(made.config_path))
    client = create_client()
    assert isinstance(client, SyftFlwrClient)
    assert isinstance(client.get_client(), Client)
    assert client.email == "ds@example.org"
    assert client.datasites == made.datasites
    assert create_client(transport="syftbox").email == "ds@example.org"


def test_create_client_for_p2p_and_errors(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from syft_flwr.client import SyftP2PClient, create_client
    from syft_flwr.errors import ConfigError

    p2p = create_client(transport="p2p", email="Alice@Example.org")
    assert isinstance(p2p, SyftP2PClient) and p2p.email == "alice@example.org"
    monkeypatch.setenv("SYFTBOX_EMAIL", "bob@example.org")
    assert create_client(transport="gdrive").email == "bob@example.org"
    monkeypatch.delenv("SYFTBOX_EMAIL")
    with pytest.raises(ConfigError):
        create_client(transport="p2p")
    with pytest.raises(ConfigError, match="unknown transport"):
        create_client(transport="carrier-pigeon")
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.syftbox/config.json here
    with pytest.raises(ConfigError):
        create_client(config_path=tmp_path / "missing.json")


def test_env_variable_names() -> None:
    from syft_flwr import config

    assert config.ENV_MSG_TIMEOUT == "SYFT_FLWR_MSG_TIMEOUT"
    assert config.ENV_POLL_INTERVAL == "SYFT_FLWR_POLL_INTERVAL"
    assert config.ENV_ENCRYPTION_ENABLED == "SYFT_FLWR_ENCRYPTION_ENABLED"


def test_every_error_derives_from_syftflwrerror() -> None:
    import syft_flwr.errors as errors

    classes = [getattr(errors, n) for n in errors.__all__]
    assert all(issubclass(c, errors.SyftFlwrError) for c in classes)
    assert issubclass(errors.ConfigError, ValueError)
    assert issubclass(errors.MessageNotFound, FileNotFoundError)
    assert issubclass(errors.PermissionDenied, PermissionError)
    assert issubclass(errors.TransportTimeout, TimeoutError)
    assert issubclass(errors.IncompleteMessage, errors.EnvelopeError)
    assert issubclass(errors.NodeIdCollisionError, errors.ConfigError)


def test_version() -> None:
    import syft_flwr

    assert isinstance(syft_flwr.__version__, str) and syft_flwr.__version__

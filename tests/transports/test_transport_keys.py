"""Keys, the RPC layout parser and Watch handles (transports/base.py)."""

from __future__ import annotations

import pytest

from syft_flwr.errors import ConfigError
from syft_flwr.transports.base import RpcPath, Watch, check_key, join_key


@pytest.mark.parametrize(
    "key", ["a", "a/b", "do@example.org/app_data/x/rpc/m/p/f.request"]
)
def test_check_key_accepts(key: str) -> None:
    assert check_key(key) == key


@pytest.mark.parametrize(
    "key", ["", "/a", "a/", "a//b", "..", "a/../b", ".", "a/./b", "a\\b"]
)
def test_check_key_rejects(key: str) -> None:
    with pytest.raises(ConfigError):
        check_key(key)


def test_join_key() -> None:
    assert join_key("a", "b/", "/c") == "a/b/c"
    assert join_key("a", "", "c") == "a/c"
    with pytest.raises(ConfigError):
        join_key("a", "..", "c")


def test_rpc_path_parse_with_nested_app_name() -> None:
    key = "do@example.org/app_data/flwr/diabetes/rpc/messages/ds@example.org/x.request"
    p = RpcPath.parse(key)
    assert p == RpcPath(
        owner="do@example.org",
        app="flwr/diabetes",
        endpoint="messages",
        peer="ds@example.org",
        name="x.request",
    )
    assert p is not None
    assert p.key == key
    assert p.folder == key.rsplit("/", 1)[0]


def test_rpc_path_parse_app_named_rpc() -> None:
    # The last "rpc" segment delimits the app: an app may itself be called "rpc".
    key = "o@example.org/app_data/rpc/rpc/ep/p@example.org/f"
    p = RpcPath.parse(key)
    assert p is not None and p.app == "rpc" and p.endpoint == "ep"


@pytest.mark.parametrize(
    "key",
    [
        "do@example.org/app_data/app/rpc/messages/x.request",  # no peer folder
        "do@example.org/public/app/rpc/messages/p/x.request",  # not app_data
        "do@example.org/app_data/app/messages/p/x.request",  # no rpc marker
        "do@example.org/app_data/rpc/messages/p/x.request",  # no app
        "do@example.org/app_data/app/rpc/messages/p/sub/x.request",  # too deep
        "short/key",
    ],
)
def test_rpc_path_parse_rejects(key: str) -> None:
    assert RpcPath.parse(key) is None


def test_watch_matching_and_cancel() -> None:
    got: list[str] = []
    w = Watch("a/b", got.append)
    assert w.matches("a/b/c") and w.matches("a/b") and w.matches("a/b/c/d")
    assert not w.matches("a/bc/d") and not w.matches("a") and not w.matches("x/a/b/c")
    w.fire("a/b/c")
    w.fire("a/bc")
    assert got == ["a/b/c"]
    w.cancel()
    assert w.cancelled and not w.matches("a/b/c")
    w.fire("a/b/d")
    assert got == ["a/b/c"]
    assert Watch("a/b/", got.append).matches("a/b/c")

"""Settings: defaults, environment, explicit overrides, validation, durations."""

from __future__ import annotations

import dataclasses

import pytest

from syft_flwr.config import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_INLINE_LIMIT,
    DEFAULT_MSG_TIMEOUT,
    DEFAULT_POLL_INTERVAL,
    ENV_CHUNK_SIZE,
    ENV_ENCRYPTION_ENABLED,
    ENV_LOG_LEVEL,
    ENV_MSG_TIMEOUT,
    ENV_POLL_INTERVAL,
    Settings,
    parse_duration,
)
from syft_flwr.errors import ConfigError


def test_defaults() -> None:
    s = Settings()
    assert s.msg_timeout == DEFAULT_MSG_TIMEOUT == 120.0
    assert s.poll_interval == DEFAULT_POLL_INTERVAL == 2.0
    assert s.encryption_enabled is True
    assert s.chunk_size == DEFAULT_CHUNK_SIZE == 4 * 1024 * 1024
    assert s.inline_limit == DEFAULT_INLINE_LIMIT == 64 * 1024
    assert s.log_level == "INFO"
    assert Settings.from_env({}) == s


def test_env_names() -> None:
    assert ENV_MSG_TIMEOUT == "SYFT_FLWR_MSG_TIMEOUT"
    assert ENV_POLL_INTERVAL == "SYFT_FLWR_POLL_INTERVAL"
    assert ENV_ENCRYPTION_ENABLED == "SYFT_FLWR_ENCRYPTION_ENABLED"
    assert ENV_CHUNK_SIZE == "SYFT_FLWR_CHUNK_SIZE"
    assert ENV_LOG_LEVEL == "SYFT_FLWR_LOG_LEVEL"


def test_from_env_reads_every_variable() -> None:
    s = Settings.from_env(
        {
            "SYFT_FLWR_MSG_TIMEOUT": "30",
            "SYFT_FLWR_POLL_INTERVAL": "0.5",
            "SYFT_FLWR_ENCRYPTION_ENABLED": "false",
            "SYFT_FLWR_CHUNK_SIZE": "2048",
            "SYFT_FLWR_LOG_LEVEL": "debug",
        }
    )
    assert s.msg_timeout == 30.0
    assert s.poll_interval == 0.5
    assert s.encryption_enabled is False
    assert s.chunk_size == 2048
    assert s.log_level == "DEBUG"


def test_from_env_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYFT_FLWR_MSG_TIMEOUT", "7.5")
    assert Settings.from_env().msg_timeout == 7.5
    monkeypatch.delenv("SYFT_FLWR_MSG_TIMEOUT")
    assert Settings.from_env().msg_timeout == 120.0


def test_empty_env_values_are_ignored() -> None:
    assert Settings.from_env({"SYFT_FLWR_MSG_TIMEOUT": ""}).msg_timeout == 120.0


def test_explicit_overrides_win_over_env_and_none_is_ignored() -> None:
    env = {"SYFT_FLWR_MSG_TIMEOUT": "30", "SYFT_FLWR_ENCRYPTION_ENABLED": "true"}
    s = Settings.from_env(
        env, msg_timeout=5.0, encryption_enabled=False, poll_interval=None
    )
    assert s.msg_timeout == 5.0
    assert s.encryption_enabled is False
    assert s.poll_interval == DEFAULT_POLL_INTERVAL


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1", True),
        ("true", True),
        ("TRUE", True),
        (" yes ", True),
        ("on", True),
        ("0", False),
        ("false", False),
        ("No", False),
        ("off", False),
    ],
)
def test_bool_parsing(value: str, expected: bool) -> None:
    env = {"SYFT_FLWR_ENCRYPTION_ENABLED": value}
    assert Settings.from_env(env).encryption_enabled is expected


@pytest.mark.parametrize(
    "env",
    [
        {"SYFT_FLWR_ENCRYPTION_ENABLED": "maybe"},
        {"SYFT_FLWR_MSG_TIMEOUT": "soon"},
        {"SYFT_FLWR_MSG_TIMEOUT": "0"},
        {"SYFT_FLWR_MSG_TIMEOUT": "-5"},
        {"SYFT_FLWR_POLL_INTERVAL": "0"},
        {"SYFT_FLWR_CHUNK_SIZE": "4MB"},
        {"SYFT_FLWR_CHUNK_SIZE": "100"},
    ],
)
def test_invalid_env_values_raise_config_error_naming_the_variable(
    env: dict[str, str],
) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env(env)
    assert isinstance(info.value, ValueError)
    assert next(iter(env)) in str(info.value)


def test_direct_validation() -> None:
    with pytest.raises(ConfigError):
        Settings(chunk_size=10)
    with pytest.raises(ConfigError):
        Settings(msg_timeout=0)
    with pytest.raises(ConfigError):
        Settings(poll_interval=-1)


def test_inline_limit_is_clamped_below_chunk_size() -> None:
    s = Settings(chunk_size=4096)
    assert s.inline_limit <= s.chunk_size
    assert s.inline_limit == 2048
    # An explicit value that fits is kept.
    assert Settings(chunk_size=8192, inline_limit=1000).inline_limit == 1000


def test_settings_are_frozen_and_with_copies() -> None:
    s = Settings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.msg_timeout = 1.0  # type: ignore[misc]
    t = s.with_(msg_timeout=3.0)
    assert t.msg_timeout == 3.0 and s.msg_timeout == 120.0
    assert t.chunk_size == s.chunk_size


def test_settings_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        Settings(5.0)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("1d", 86400.0),
        ("12h", 43200.0),
        ("30m", 1800.0),
        ("45s", 45.0),
        ("90", 90.0),
        (" 1.5h ", 5400.0),
        (10, 10.0),
        (2.5, 2.5),
    ],
)
def test_parse_duration(value: str | float, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("bad", ["", "1w", "d", "-1d", "1 day", "1h30m"])
def test_parse_duration_rejects(bad: str) -> None:
    with pytest.raises(ConfigError):
        parse_duration(bad)


def test_serving_without_review_is_off_unless_asked_for():
    assert Settings().no_review is False
    assert Settings.from_env({"SYFT_FLWR_NO_REVIEW": "1"}).no_review is True
    assert Settings.from_env({"SYFT_FLWR_NO_REVIEW": "false"}).no_review is False
    with pytest.raises(ConfigError):
        Settings.from_env({"SYFT_FLWR_NO_REVIEW": "maybe"})

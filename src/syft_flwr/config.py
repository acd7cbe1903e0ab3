"""Configuration: small frozen objects, and the one function that reads the environment.

Precedence everywhere: an explicit argument wins, then the environment, then the
defaults below. Nothing reads ``os.environ`` at import time.

Environment variables (also listed in the README):

=================================  ==========  ============================================
variable                           default     meaning
=================================  ==========  ============================================
``SYFT_FLWR_MSG_TIMEOUT``          ``120``     seconds ``send_and_receive`` waits when the
                                               caller passes no ``timeout``
``SYFT_FLWR_POLL_INTERVAL``        ``2.0``     seconds between fallback rescans (events are
                                               the primary signal); ceiling of Drive polling
``SYFT_FLWR_ENCRYPTION_ENABLED``   ``true``    end-to-end encryption; ``false`` turns it off
                                               on both sides
``SYFT_FLWR_CHUNK_SIZE``           ``4194304`` largest file written (bytes); bigger bodies
                                               are split into chunk files
``SYFT_FLWR_LOG_LEVEL``            ``INFO``    log level of the ``syft_flwr`` logger
``SYFT_FLWR_REVEAL_ERRORS``        ``false``   put ClientApp exception messages in error
                                               replies (they may contain private values)
``SYFT_FLWR_MAX_MESSAGE_BYTES``    2 GiB       largest message body accepted; a head
                                               announcing more is refused unread
``SYFT_FLWR_PREKEY_GRACE``         ``7d``      how long ``syft_flwr keys rotate`` keeps the
                                               old signed prekey before destroying it
                                               (``7d``, ``12h``, ``30m`` or seconds)
``SYFT_FLWR_HEARTBEAT_INTERVAL``   transport   seconds between a data owner's heartbeats
``SYFT_FLWR_HEARTBEAT_MISSES``     ``4``       missed heartbeats before the researcher
                                               stops waiting for a data owner
``SYFT_FLWR_ALLOW_NONFINITE``      ``false``   accept NaN/Inf in data owners' reply arrays
                                               and metrics (by default: refused)
=================================  ==========  ============================================
"""

from __future__ import annotations

import logging
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from syft_flwr.errors import ConfigError

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_HEARTBEAT_MISSES",
    "DEFAULT_INLINE_LIMIT",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "DEFAULT_MSG_TIMEOUT",
    "DEFAULT_POLL_INTERVAL",
    "ENV_CHUNK_SIZE",
    "ENV_ENCRYPTION_ENABLED",
    "ENV_HEARTBEAT_INTERVAL",
    "ENV_HEARTBEAT_MISSES",
    "ENV_LOG_LEVEL",
    "ENV_MAX_MESSAGE_BYTES",
    "ENV_MSG_TIMEOUT",
    "DEFAULT_PREKEY_GRACE",
    "ENV_POLL_INTERVAL",
    "ENV_PREKEY_GRACE",
    "ENV_REVEAL_ERRORS",
    "Settings",
    "load_flwr_pyproject",
    "load_toml",
    "parse_duration",
    "write_toml",
]

ENV_MSG_TIMEOUT = "SYFT_FLWR_MSG_TIMEOUT"
ENV_POLL_INTERVAL = "SYFT_FLWR_POLL_INTERVAL"
ENV_ENCRYPTION_ENABLED = "SYFT_FLWR_ENCRYPTION_ENABLED"
ENV_CHUNK_SIZE = "SYFT_FLWR_CHUNK_SIZE"
ENV_LOG_LEVEL = "SYFT_FLWR_LOG_LEVEL"
ENV_REVEAL_ERRORS = "SYFT_FLWR_REVEAL_ERRORS"
ENV_MAX_MESSAGE_BYTES = "SYFT_FLWR_MAX_MESSAGE_BYTES"
ENV_PREKEY_GRACE = "SYFT_FLWR_PREKEY_GRACE"
ENV_HEARTBEAT_INTERVAL = "SYFT_FLWR_HEARTBEAT_INTERVAL"
ENV_HEARTBEAT_MISSES = "SYFT_FLWR_HEARTBEAT_MISSES"
ENV_ALLOW_NONFINITE = "SYFT_FLWR_ALLOW_NONFINITE"

DEFAULT_MSG_TIMEOUT = 120.0  # seconds
DEFAULT_POLL_INTERVAL = 2.0  # seconds
#: A data owner silent for this many heartbeat intervals is taken for dead.
DEFAULT_HEARTBEAT_MISSES = 4
#: 4 MiB keeps every file on the Go client's websocket fast path and far below
#: SyftBox 0.4.0's silent 10 MB upload limit.
DEFAULT_CHUNK_SIZE = 4 * 1024 * 1024  # bytes
#: Bodies up to this size travel inline (base64) in the request/response JSON, as
#: syft-rpc does; anything larger goes to binary chunk files (no base64 of bulk).
DEFAULT_INLINE_LIMIT = 64 * 1024  # bytes
MIN_CHUNK_SIZE = 1024  # bytes; smaller only makes sense in tests
#: Largest message body a reader accepts (heads announcing more are refused).
DEFAULT_MAX_MESSAGE_BYTES = 2 * 1024**3  # bytes
#: A rotated-away signed prekey still opens messages sealed to it for this long
#: (requests in flight, peers with a cached DID), then it is destroyed.
DEFAULT_PREKEY_GRACE = 7 * 86400.0  # seconds

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _parse_bool(name: str, value: str) -> bool:
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise ConfigError(f"{name}={value!r}: expected true or false")


def _parse_float(name: str, value: str, *, minimum: float = 0.0) -> float:
    try:
        out = float(value)
    except ValueError:
        raise ConfigError(f"{name}={value!r}: expected a number of seconds") from None
    if not out > minimum:
        raise ConfigError(f"{name}={value!r}: must be greater than {minimum}")
    return out


def _parse_int(name: str, value: str, *, minimum: int) -> int:
    try:
        out = int(value)
    except ValueError:
        raise ConfigError(f"{name}={value!r}: expected an integer") from None
    if out < minimum:
        raise ConfigError(f"{name}={value!r}: must be at least {minimum}")
    return out


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")


def parse_duration(value: str | float | int) -> float:
    """Parse ``"1d"``, ``"12h"``, ``"30m"``, ``"45s"`` or a number of seconds.

    Raises
    ------
    ConfigError
        If the value is not a duration.
    """
    if isinstance(value, int | float):
        return float(value)
    m = _DURATION.match(value)
    if not m:
        raise ConfigError(f"invalid duration {value!r}: use e.g. '1d', '12h', '30m'")
    scale = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    return float(m.group(1)) * scale


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Runtime settings shared by the grid, the events loop and the runners.

    Build with ``Settings.from_env()`` to honour ``SYFT_FLWR_*`` variables, or
    directly for tests. Explicit keyword arguments to ``from_env`` win over the
    environment.

    Examples
    --------
    >>> Settings.from_env({"SYFT_FLWR_MSG_TIMEOUT": "30"}).msg_timeout
    30.0
    >>> Settings.from_env({}, encryption_enabled=False).encryption_enabled
    False
    """

    msg_timeout: float = DEFAULT_MSG_TIMEOUT
    poll_interval: float = DEFAULT_POLL_INTERVAL
    encryption_enabled: bool = True
    chunk_size: int = DEFAULT_CHUNK_SIZE
    inline_limit: int = DEFAULT_INLINE_LIMIT
    log_level: str = "INFO"
    reveal_errors: bool = False
    #: Seconds between a data owner's heartbeats; ``None``: the transport's
    #: default (2 s on folders and in memory, 10 s on Google Drive).
    heartbeat_interval: float | None = None
    #: Missed heartbeats after which the researcher stops waiting for a data owner.
    heartbeat_misses: int = DEFAULT_HEARTBEAT_MISSES
    #: ``NO_COLOR`` (https://no-color.org) set to anything non-empty.
    no_color: bool = False
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    prekey_grace: float = DEFAULT_PREKEY_GRACE
    #: Accept replies whose floating-point arrays hold NaN or Inf (the researcher's
    #: explicit opt-down; by default such a reply is refused, see ``reply_check``).
    allow_nonfinite: bool = False

    def __post_init__(self) -> None:
        if self.prekey_grace < 0:
            raise ConfigError("prekey_grace must not be negative")
        if self.chunk_size < MIN_CHUNK_SIZE:
            raise ConfigError(f"chunk_size must be at least {MIN_CHUNK_SIZE} bytes")
        if self.inline_limit > self.chunk_size:
            # The inline body is base64'd inside JSON; keep the JSON under the limit.
            object.__setattr__(self, "inline_limit", self.chunk_size // 2)
        if self.msg_timeout <= 0 or self.poll_interval <= 0:
            raise ConfigError("msg_timeout and poll_interval must be positive")

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, **overrides: object
    ) -> Settings:
        """Read ``SYFT_FLWR_*`` from ``environ`` (default ``os.environ``).

        Parameters
        ----------
        environ:
            The mapping to read; pass ``{}`` to ignore the environment.
        **overrides:
            Explicit values; ``None`` values are ignored. They win over the env.

        Raises
        ------
        ConfigError
            If a variable has an invalid value.
        """
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        if (v := env.get(ENV_MSG_TIMEOUT)) not in (None, ""):
            values["msg_timeout"] = _parse_float(ENV_MSG_TIMEOUT, v)  # type: ignore[arg-type]
        if (v := env.get(ENV_POLL_INTERVAL)) not in (None, ""):
            values["poll_interval"] = _parse_float(ENV_POLL_INTERVAL, v)  # type: ignore[arg-type]
        if (v := env.get(ENV_ENCRYPTION_ENABLED)) not in (None, ""):
            values["encryption_enabled"] = _parse_bool(ENV_ENCRYPTION_ENABLED, v)  # type: ignore[arg-type]
        if (v := env.get(ENV_CHUNK_SIZE)) not in (None, ""):
            values["chunk_size"] = _parse_int(ENV_CHUNK_SIZE, v, minimum=MIN_CHUNK_SIZE)  # type: ignore[arg-type]
        if (v := env.get(ENV_REVEAL_ERRORS)) not in (None, ""):
            values["reveal_errors"] = _parse_bool(ENV_REVEAL_ERRORS, v)  # type: ignore[arg-type]
        if (v := env.get(ENV_PREKEY_GRACE)) not in (None, ""):
            values["prekey_grace"] = parse_duration(str(v).strip())
        if (v := env.get(ENV_HEARTBEAT_INTERVAL)) not in (None, ""):
            values["heartbeat_interval"] = _parse_float(ENV_HEARTBEAT_INTERVAL, v)  # type: ignore[arg-type]
        if (v := env.get(ENV_HEARTBEAT_MISSES)) not in (None, ""):
            values["heartbeat_misses"] = _parse_int(ENV_HEARTBEAT_MISSES, v, minimum=1)  # type: ignore[arg-type]
        if (v := env.get(ENV_ALLOW_NONFINITE)) not in (None, ""):
            values["allow_nonfinite"] = _parse_bool(ENV_ALLOW_NONFINITE, v)  # type: ignore[arg-type]
        if (v := env.get(ENV_LOG_LEVEL)) not in (None, ""):
            values["log_level"] = str(v).upper()
        if (v := env.get(ENV_MAX_MESSAGE_BYTES)) not in (None, ""):
            values["max_message_bytes"] = _parse_int(  # type: ignore[assignment]
                ENV_MAX_MESSAGE_BYTES,
                v,  # type: ignore[arg-type]
                minimum=1,
            )
        if env.get("NO_COLOR"):
            values["no_color"] = True
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]

    def with_(self, **changes: object) -> Settings:
        """Return a copy with some fields changed."""
        return replace(self, **changes)  # type: ignore[arg-type]


# --- pyproject.toml helpers, under the names upstream syft-flwr code imports ---


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML file.

    Raises
    ------
    PathNotFoundError
        The file is missing.
    ConfigError
        It is not valid TOML.
    """
    from syft_flwr.errors import PathNotFoundError

    p = Path(path)
    try:
        with open(p, "rb") as fp:
            return tomllib.load(fp)
    except FileNotFoundError:
        raise PathNotFoundError(f"{p} not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"cannot read {p}: {exc}") from exc


def write_toml(path: str | Path, val: Mapping[str, Any]) -> None:
    """Write ``val`` as TOML, atomically (temp file + rename).

    Comments of an existing file are not kept; :func:`syft_flwr.bootstrap`
    edits ``pyproject.toml`` in place instead, keeping them.
    """
    import tomli_w

    p = Path(path)
    tmp = p.with_name(f".{p.name}.tmp")
    with open(tmp, "wb") as fp:
        tomli_w.dump(dict(val), fp)
    os.replace(tmp, p)


def load_flwr_pyproject(path: str | Path, check_module: bool = True) -> dict[str, Any]:
    """Load a Flower app's ``pyproject.toml`` (a file or its folder) and validate it.

    Validation is Flower's own (``flwr.common.config.validate_config``); with
    ``check_module`` the ServerApp/ClientApp references must import.

    Raises
    ------
    ConfigError
        Flower finds the file invalid (the message lists Flower's errors).
    PathNotFoundError
        There is no such file.
    """
    from flwr.common.config import validate_config

    p = Path(path)
    if p.name != "pyproject.toml":
        p = p / "pyproject.toml"
    conf = load_toml(p)
    ok, errors, warnings = validate_config(conf, check_module, p.parent)
    if not ok:
        raise ConfigError(f"invalid {p}: {'; '.join(errors)}")
    if warnings:
        logging.getLogger("syft_flwr.config").warning("%s: %s", p, "; ".join(warnings))
    return conf

"""What a data owner allows its approved code to do: the containment policy.

A small frozen object, built from explicit arguments over the environment
(:meth:`ContainmentPolicy.from_env`). The researcher never sets any of it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from syft_flwr.errors import ConfigError

__all__ = [
    "ENV_CONTAINMENT",
    "ENV_CONTAINMENT_ALLOW_READ",
    "ENV_CONTAINMENT_ALLOW_WRITE",
    "ENV_CONTAINMENT_CPU_SECONDS",
    "ENV_CONTAINMENT_MAX_FILE_MB",
    "ENV_CONTAINMENT_MAX_PROCESSES",
    "ENV_CONTAINMENT_MEMORY_MB",
    "FULL",
    "LEVELS",
    "NONE",
    "ContainmentPolicy",
]

Level = Literal["full", "none"]
FULL: Level = "full"
NONE: Level = "none"
LEVELS: tuple[Level, ...] = (FULL, NONE)

ENV_CONTAINMENT = "SYFT_FLWR_CONTAINMENT"
ENV_CONTAINMENT_MEMORY_MB = "SYFT_FLWR_CONTAINMENT_MEMORY_MB"
ENV_CONTAINMENT_CPU_SECONDS = "SYFT_FLWR_CONTAINMENT_CPU_SECONDS"
ENV_CONTAINMENT_MAX_PROCESSES = "SYFT_FLWR_CONTAINMENT_MAX_PROCESSES"
ENV_CONTAINMENT_MAX_FILE_MB = "SYFT_FLWR_CONTAINMENT_MAX_FILE_MB"
ENV_CONTAINMENT_ALLOW_READ = "SYFT_FLWR_CONTAINMENT_ALLOW_READ"
ENV_CONTAINMENT_ALLOW_WRITE = "SYFT_FLWR_CONTAINMENT_ALLOW_WRITE"


@dataclass(frozen=True, kw_only=True)
class ContainmentPolicy:
    """How approved code is contained (the data owner's choice, never the researcher's).

    Parameters
    ----------
    level : {"full", "none"}
        ``"full"`` (default): every layer must hold or nothing runs (fail
        closed). ``"none"``: the ClientApp still runs in its own killable
        worker process, with no other restriction (an explicit opt-down).
    memory_mb : int
        Address-space limit of the worker, MiB (default 4096).
    cpu_seconds : int
        CPU time a worker may use before the kernel stops it (default 86400:
        one day; a worker serves one run and is restarted after it dies).
    max_processes : int
        Processes and threads the worker may have at once (default 256).
    max_file_mb : int
        Largest file the worker may write, MiB (default 2048).
    allow_read : tuple of Path
        Extra paths the worker may read (e.g. a model cache), besides the
        app's code, the Python installation and ``DATA_DIR``.
    allow_write : tuple of Path
        Extra paths the worker may write (e.g. a GPU device), besides its
        fresh scratch folder.
    """

    level: Level = FULL
    memory_mb: int = 4096
    cpu_seconds: int = 86400
    max_processes: int = 256
    max_file_mb: int = 2048
    allow_read: tuple[Path, ...] = ()
    allow_write: tuple[Path, ...] = ()

    def __post_init__(self) -> None:
        if self.level not in LEVELS:
            raise ConfigError(
                f"containment level {self.level!r} is not one of: {', '.join(LEVELS)}"
            )
        for name in ("memory_mb", "cpu_seconds", "max_processes", "max_file_mb"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"containment {name} must be at least 1")
        object.__setattr__(
            self, "allow_read", tuple(Path(p).expanduser() for p in self.allow_read)
        )
        object.__setattr__(
            self, "allow_write", tuple(Path(p).expanduser() for p in self.allow_write)
        )

    @property
    def contained(self) -> bool:
        """True when the sandbox layers are required (level ``"full"``)."""
        return self.level == FULL

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, **overrides: object
    ) -> ContainmentPolicy:
        """Read ``SYFT_FLWR_CONTAINMENT*``; explicit non-``None`` ``overrides`` win.

        Raises
        ------
        ConfigError
            A variable has a value that is not allowed (named in the message).
        """
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        if (v := env.get(ENV_CONTAINMENT, "").strip().lower()) != "":
            values["level"] = v
        for name, var in (
            ("memory_mb", ENV_CONTAINMENT_MEMORY_MB),
            ("cpu_seconds", ENV_CONTAINMENT_CPU_SECONDS),
            ("max_processes", ENV_CONTAINMENT_MAX_PROCESSES),
            ("max_file_mb", ENV_CONTAINMENT_MAX_FILE_MB),
        ):
            if (v := env.get(var, "").strip()) != "":
                values[name] = _positive_int(var, v)
        for name, var in (
            ("allow_read", ENV_CONTAINMENT_ALLOW_READ),
            ("allow_write", ENV_CONTAINMENT_ALLOW_WRITE),
        ):
            if (v := env.get(var, "").strip()) != "":
                values[name] = tuple(Path(p) for p in v.split(os.pathsep) if p)
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls(**values)  # type: ignore[arg-type]
        except TypeError as exc:
            raise ConfigError(f"containment: {exc}") from exc

    def to_json(self) -> dict[str, object]:
        """A JSON-ready form, for the worker's start (read back by :meth:`from_json`)."""
        return {
            "level": self.level,
            "memory_mb": self.memory_mb,
            "cpu_seconds": self.cpu_seconds,
            "max_processes": self.max_processes,
            "max_file_mb": self.max_file_mb,
            "allow_read": [str(p) for p in self.allow_read],
            "allow_write": [str(p) for p in self.allow_write],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> ContainmentPolicy:
        """The policy :meth:`to_json` wrote (checked like any other).

        Raises
        ------
        ConfigError
            A field is unknown or has a value that is not allowed.
        """
        fields = dict(data)
        for name in ("allow_read", "allow_write"):
            paths = fields.get(name, [])
            if not isinstance(paths, list | tuple):
                raise ConfigError(f"containment {name} must be a list of paths")
            fields[name] = tuple(Path(str(x)) for x in paths)
        try:
            return cls(**fields)  # type: ignore[arg-type]
        except TypeError as exc:
            raise ConfigError(f"containment: {exc}") from exc

    def with_(self, **changes: object) -> ContainmentPolicy:
        """Return a copy with some fields changed."""
        return replace(self, **changes)  # type: ignore[arg-type]


def _positive_int(var: str, value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise ConfigError(f"{var}={value!r} is not a whole number") from None
    if n < 1:
        raise ConfigError(f"{var}={value!r} must be at least 1")
    return n

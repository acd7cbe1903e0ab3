"""The data owner's containment options, shared by ``serve``, ``party``, ``simulate``, ``run``.

Only the data owner sets these (flags, ``SYFT_FLWR_CONTAINMENT*``): never the
researcher's run config or the project's pyproject.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import click
import typer

from syft_flwr.data_owner.contain import policy as _p

__all__ = [
    "AllowReadOpt",
    "AllowWriteOpt",
    "ContainmentOpt",
    "CpuSecondsOpt",
    "MaxFileMbOpt",
    "MaxProcessesOpt",
    "MemoryMbOpt",
    "containment",
    "export_policy",
    "policy_from",
]

ContainmentOpt = Annotated[
    str | None,
    typer.Option(
        "--containment",
        click_type=click.Choice(list(_p.LEVELS)),
        help="How the ClientApp's worker process is contained: full (default: no "
        "network, reads only the app, Python and DATA_DIR, writes only its scratch "
        "folder, limits; refused where a layer cannot be enforced) or none (its "
        "own killable process only). Default: SYFT_FLWR_CONTAINMENT, else full.",
    ),
]
MemoryMbOpt = Annotated[
    int | None,
    typer.Option("--memory-mb", min=1, help="Worker memory limit, MiB (default 4096)."),
]
CpuSecondsOpt = Annotated[
    int | None,
    typer.Option(
        "--cpu-seconds", min=1, help="Worker CPU-time limit, seconds (default 86400)."
    ),
]
MaxProcessesOpt = Annotated[
    int | None,
    typer.Option(
        "--max-processes",
        min=1,
        help="Processes and threads the worker may have at once (default 256).",
    ),
]
MaxFileMbOpt = Annotated[
    int | None,
    typer.Option(
        "--max-file-mb",
        min=1,
        help="Largest file the worker may write, MiB (default 2048).",
    ),
]
AllowReadOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--allow-read",
        help="An extra path the worker may read (e.g. a model cache); repeatable.",
    ),
]
AllowWriteOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--allow-write",
        help="An extra path the worker may write (e.g. a GPU device); repeatable.",
    ),
]


def policy_from(
    level: str | None,
    memory_mb: int | None,
    cpu_seconds: int | None,
    max_processes: int | None,
    max_file_mb: int | None,
    allow_read: list[str] | None,
    allow_write: list[str] | None,
) -> _p.ContainmentPolicy:
    """The policy: these flags over ``SYFT_FLWR_CONTAINMENT*``."""
    return _p.ContainmentPolicy.from_env(
        level=level,
        memory_mb=memory_mb,
        cpu_seconds=cpu_seconds,
        max_processes=max_processes,
        max_file_mb=max_file_mb,
        allow_read=tuple(Path(p) for p in allow_read) if allow_read else None,
        allow_write=tuple(Path(p) for p in allow_write) if allow_write else None,
    )


def export_policy(policy: _p.ContainmentPolicy) -> None:
    """Put ``policy`` in this process's environment, for the parties it starts."""
    os.environ.update(
        {
            _p.ENV_CONTAINMENT: policy.level,
            _p.ENV_CONTAINMENT_MEMORY_MB: str(policy.memory_mb),
            _p.ENV_CONTAINMENT_CPU_SECONDS: str(policy.cpu_seconds),
            _p.ENV_CONTAINMENT_MAX_PROCESSES: str(policy.max_processes),
            _p.ENV_CONTAINMENT_MAX_FILE_MB: str(policy.max_file_mb),
            _p.ENV_CONTAINMENT_ALLOW_READ: os.pathsep.join(map(str, policy.allow_read)),
            _p.ENV_CONTAINMENT_ALLOW_WRITE: os.pathsep.join(
                map(str, policy.allow_write)
            ),
        }
    )


def containment(
    json_: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    memory_mb: MemoryMbOpt = None,
    cpu_seconds: CpuSecondsOpt = None,
    max_processes: MaxProcessesOpt = None,
    max_file_mb: MaxFileMbOpt = None,
    allow_read: AllowReadOpt = None,
    allow_write: AllowWriteOpt = None,
) -> None:
    """Data owner: probe, for real, which containment layers this machine enforces.

    A contained child tries a socket, a name lookup, a forbidden read and
    write, memory and processes past the limits; exit 0 when every layer holds.
    """
    import json

    from syft_flwr.data_owner.contain.probe import run_probe

    policy = policy_from(
        "full", memory_mb, cpu_seconds, max_processes, max_file_mb,
        allow_read, allow_write,
    )  # fmt: skip
    enforced = run_probe(policy)
    if json_:
        print(json.dumps(enforced.to_json(), indent=2))
    else:
        for layer in enforced.layers:
            mark = "enforced    " if layer.enforced else "NOT ENFORCED"
            print(f"{layer.name:<10} {mark} {layer.how}")
        print(f"containment: {enforced.summary()}")
        if enforced.missing:
            print(
                "serve and run refuse approved code here; --containment none "
                "(SYFT_FLWR_CONTAINMENT=none) runs it without these layers"
            )
    if enforced.missing:
        raise typer.Exit(1)

"""Upstream-compatible local simulation: ``syft_flwr.run(project_dir, mock_dataset_paths)``.

Each party runs the bootstrapped app's own ``main.py`` as a separate OS process
over a fresh local SyftBox-layout network (see :func:`syft_flwr.simulation.simulate`),
with one mock dataset folder per data owner as its ``DATA_DIR``. Logs go where
upstream put them: ``<project_dir>/simulation_logs/<email>.log``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from syft_flwr.errors import PathNotFoundError

__all__ = ["LOG_DIR_NAME", "run", "validate_bootstraped_project"]

#: The folder inside the project where each party's log goes (as upstream).
LOG_DIR_NAME = "simulation_logs"


def validate_bootstraped_project(project_dir: Path) -> None:
    """Check the folder, its ``main.py`` and ``pyproject.toml`` exist.

    Raises
    ------
    PathNotFoundError
        One is missing (a ``FileNotFoundError``, as upstream raised).
    """
    if not project_dir.is_dir():
        raise PathNotFoundError(f"Project directory {project_dir} does not exist")
    for name in ("main.py", "pyproject.toml"):
        if not (project_dir / name).is_file():
            raise PathNotFoundError(
                f"{name} not found at {project_dir} (run syft_flwr.bootstrap first)"
            )


def _resolve_paths(mock_dataset_paths: list[str | Path]) -> list[Path]:
    from syft_flwr.errors import ConfigError

    out = []
    for p in mock_dataset_paths:
        path = Path(p).expanduser().resolve()
        if not path.exists():
            raise ConfigError(f"Mock dataset path {path} does not exist")
        out.append(path)
    return out


def run(
    project_dir: str | Path, mock_dataset_paths: list[str | Path]
) -> bool | asyncio.Task[bool]:
    """Run a bootstrapped project in simulation mode over mock data.

    Parameters
    ----------
    project_dir:
        A Flower app folder bootstrapped with :func:`syft_flwr.bootstrap`.
    mock_dataset_paths:
        One folder per data owner, in the order of ``[tool.syft_flwr] datasites``.

    Returns
    -------
    bool or asyncio.Task
        True if every party exited 0. Called inside a running event loop (a
        Jupyter cell), it returns a Task instead, whose result is that bool;
        the simulation then runs in a worker thread so the loop stays free.

    Raises
    ------
    PathNotFoundError
        The folder, ``main.py`` or ``pyproject.toml`` is missing
        (``FileNotFoundError``).
    ConfigError
        A mock path is missing, or their number differs from the data owners'
        (``ValueError``).
    """
    from syft_flwr.simulation import simulate

    d = Path(project_dir).expanduser().resolve()
    validate_bootstraped_project(d)
    paths = _resolve_paths(list(mock_dataset_paths))

    def _go() -> bool:
        result = simulate(
            d,
            mock_dataset_paths=paths,
            entry="main.py",
            log_dir=d / LOG_DIR_NAME,
        )
        return result.ok

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return _go()
    return asyncio.ensure_future(asyncio.to_thread(_go))

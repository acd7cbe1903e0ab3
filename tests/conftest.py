"""Shared fixtures: a clean environment, SyftBox identities on one data dir, events loops."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# Test modules in sub-folders import the shared helpers as ``_support``.
if str(Path(__file__).parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).parent))

from _support import EventsRunner, make_syft_client  # noqa: E402

from syft_flwr.client import SyftCoreClient  # noqa: E402

try:  # flwr >= 1.39
    from flwr.supercore.task_identity import TaskIdentity
except ImportError:  # pragma: no cover
    TaskIdentity = None  # type: ignore[assignment,misc]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "xfail_backend(name, reason): strict xfail of a transport contract test on one "
        "backend (a known bug)",
    )


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees the developer's SYFT_FLWR_* / SYFTBOX_* settings."""
    for name in list(os.environ):
        if name.startswith(("SYFT_FLWR_", "SYFTBOX_")):
            monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
def _restore_task_identity() -> Iterator[None]:
    """Flower's TaskIdentity is process-wide; leave it as each test found it."""
    if TaskIdentity is None:  # pragma: no cover
        yield
        return
    saved = (TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id)
    yield
    TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id = saved


@pytest.fixture
def syft_root(tmp_path: Path) -> Path:
    """Root of a simulated SyftBox network; every party shares ``<root>/SyftBox``."""
    return tmp_path


@pytest.fixture
def make_client(syft_root: Path) -> Callable[[str], SyftCoreClient]:
    """Factory: ``make_client("x@example.org")`` -> SyftCoreClient on the shared data dir."""

    def factory(email: str) -> SyftCoreClient:
        return make_syft_client(syft_root, email)

    return factory


@pytest.fixture
def datasites_dir(syft_root: Path) -> Path:
    return syft_root / "SyftBox" / "datasites"


@pytest.fixture
def events_runner() -> Iterator[EventsRunner]:
    """Runs events loops in threads; stops them (and closes their transports) at teardown."""
    runner = EventsRunner()
    yield runner
    runner.stop_all()

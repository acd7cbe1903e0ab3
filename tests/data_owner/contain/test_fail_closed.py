"""Fail closed: a machine that cannot contain refuses before any request; a simulation warns.

This machine may well contain, so the worker's report is replaced by a refusal
of every layer (what ``sandbox.enter`` raises on macOS or without user
namespaces); everything around it is real: the worker process, the data
owner's serve path, the audit of what was refused.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from _hostile_app import write_app

from syft_flwr.client.syft_p2p_client import MemoryClient
from syft_flwr.data_owner.contain import process, serving
from syft_flwr.data_owner.contain.policy import ContainmentPolicy
from syft_flwr.data_owner.contain.report import LAYERS
from syft_flwr.errors import ContainmentUnavailable
from syft_flwr.transports.memory import MemoryHub

DO = "do1@example.org"


@pytest.fixture
def cannot_contain(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Workers asked for level full report every layer unavailable; their pids."""
    started: list[int] = []
    real = process.WorkerProcess.wait_ready

    def wait_ready(self: process.WorkerProcess, deadline: float):  # type: ignore[no-untyped-def]
        started.append(self.pid)
        if self.spec.policy.contained:
            self.kill()
            raise ContainmentUnavailable(
                "containment cannot be enforced here (network, processes, files, "
                "memory, limits): darwin has no Linux namespaces or Landlock",
                layers=LAYERS,
            )
        return real(self, deadline)

    monkeypatch.setattr(process.WorkerProcess, "wait_ready", wait_ready)
    return started


def _start(app_dir: Path, client: MemoryClient | None = None):  # type: ignore[no-untyped-def]
    return serving.start_contained(
        app_dir=app_dir,
        ref="hostile.client:app",
        files=None,
        email=DO,
        app_name="flwr/app",
        client=client,
        policy=ContainmentPolicy(),
    )


def test_a_data_owner_refuses_to_serve_where_it_cannot_contain(
    tmp_path: Path, cannot_contain: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(serving.SIMULATION_ENV, raising=False)
    write_app(tmp_path / "app")
    owner = MemoryClient(DO, MemoryHub(), state_dir=tmp_path / "do")
    with pytest.raises(ContainmentUnavailable, match="darwin") as info:
        _start(tmp_path / "app", owner)
    assert info.value.layers == LAYERS and len(cannot_contain) == 1
    assert serving.containment_in_force(owner) == []  # never served


def test_a_simulation_runs_uncontained_with_one_warning(
    tmp_path: Path,
    cannot_contain: list[int],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="syft_flwr")
    monkeypatch.setenv(serving.SIMULATION_ENV, "1")
    write_app(tmp_path / "app")
    owner = MemoryClient(DO, MemoryHub(), state_dir=tmp_path / "do")
    app = _start(tmp_path / "app", owner)
    try:
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1
        assert "network, processes, files, memory, limits not enforced" in (
            warnings[0].getMessage()
        )
        assert app.summary == "none" and len(cannot_contain) == 2
        [entry] = serving.containment_in_force(owner)
        assert entry["containment"] == "none" and entry["app_name"] == "flwr/app"
    finally:
        app.close()

"""The simulated network: its parties, the result of a run, and their client configs."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

RESEARCHER_EMAIL = "researcher@example.org"
#: Starts the part of a party's log written by a rerun in the same work dir.
RESUME_MARK = "===== syft_flwr simulate: run again in this work dir at"


@dataclass
class Party:
    email: str
    role: str
    config_path: Path
    log_path: Path
    node_config: str = ""
    data_dir: Path | None = None
    returncode: int | None = None
    seconds: float = 0.0
    #: Why it ended early, in plain words (empty if it ran to the end).
    note: str = ""


@dataclass
class SimulationResult:
    """Outcome of :func:`simulate`."""

    ok: bool
    workdir: Path
    parties: list[Party] = field(default_factory=list)
    seconds: float = 0.0
    #: Stopped by Ctrl-C (or SIGINT): not a failure; the same workdir resumes.
    interrupted: bool = False

    @property
    def researcher(self) -> Party:
        return next(p for p in self.parties if p.role == "researcher")

    def log(self, email: str) -> str:
        p = next(p for p in self.parties if p.email == email)
        return p.log_path.read_text(errors="replace")


def _write_config(path: Path, data_dir: Path, email: str) -> None:
    from syft_core import SyftClientConfig

    path.parent.mkdir(parents=True, exist_ok=True)
    SyftClientConfig(
        path=path, data_dir=data_dir, email=email, server_url="http://127.0.0.1:9"
    ).save()


def prepare_network(
    workdir: Path, emails: Sequence[str], *, encryption: bool = True
) -> dict[str, Path]:
    """Create a shared SyftBox-layout data dir and one client config per email.

    With encryption on, every party's keys and DID are created up front (as each
    would on first start), so nobody waits for a peer's keys to appear.
    """
    data_dir = workdir / "SyftBox"
    (data_dir / "datasites").mkdir(parents=True, exist_ok=True)
    configs = {}
    for email in emails:
        path = workdir / "configs" / f"{email}.json"
        _write_config(path, data_dir, email)
        configs[email] = path
        if encryption:
            from syft_flwr.client.syft_core_client import SyftCoreClient
            from syft_flwr.crypto.policy import load_or_create_keys

            c = SyftCoreClient.load(path)
            load_or_create_keys(c, c.make_transport())
    return configs


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)

"""The plan of one simulation: inputs checked, names and folders resolved, before
anything starts.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from syft_flwr.config import Settings
from syft_flwr.errors import ConfigError
from syft_flwr.project import ProjectConfig, load_project, parse_run_config
from syft_flwr.run_config import check_counts
from syft_flwr.simulation._network import RESEARCHER_EMAIL, _write_text_atomic


@dataclass(frozen=True)
class _Plan:
    """What one simulation will run: checked inputs, resolved names and folders."""

    cfg: ProjectConfig
    datasites: list[str]
    aggregator: str
    dataset_paths: list[Path]
    encryption: bool
    root: Path
    logs: Path
    run_config: str | None
    entry: str
    app_name: str
    fresh: bool
    #: The work dir holds an earlier run of this app: logs are appended to.
    resuming: bool = False
    #: The data owners' privacy policy file (else the environment's, if any).
    privacy: Path | None = None

    @property
    def n(self) -> int:
        return len(self.datasites)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _plan(
    app_dir: str | Path,
    num_data_owners: int | None,
    *,
    mock_dataset_paths: Sequence[str | Path] | None,
    run_config: str | None,
    workdir: str | Path | None,
    encryption: bool | None,
    entry: str,
    log_dir: str | Path | None,
    fresh: bool = False,
    timeout: float = 1800.0,
    privacy: str | Path | None = None,
) -> _Plan:
    """Check the inputs and decide names and folders (nothing is started yet)."""
    cfg = load_project(app_dir)
    check_counts(num_data_owners, timeout)
    parse_run_config(cfg.app_config, run_config)  # refused here, not in a party
    paths = _dataset_paths(mock_dataset_paths)
    n = _count_data_owners(cfg, num_data_owners, paths)
    _check_entry(cfg, entry, n)
    datasites = (
        list(cfg.datasites)
        if len(cfg.datasites) == n
        else [f"do{i + 1}@example.org" for i in range(n)]
    )
    agg = cfg.aggregator or RESEARCHER_EMAIL
    if cfg.aggregator is None:
        cfg = dataclasses.replace(cfg, aggregator=agg)
    enc = Settings.from_env().encryption_enabled if encryption is None else encryption
    # Absolute: every party runs in the app folder, not the caller's cwd.
    root = (
        Path(workdir).expanduser().resolve()
        if workdir
        else Path(tempfile.mkdtemp(prefix="syft_flwr_sim_"))
    )
    logs = Path(log_dir).expanduser().resolve() if log_dir else root / "logs"
    app_name, resuming = _app_name(root, cfg.name, fresh)
    return _Plan(
        app_name=app_name,
        resuming=resuming,
        fresh=fresh,
        cfg=cfg,
        datasites=datasites,
        aggregator=agg,
        dataset_paths=paths,
        encryption=enc,
        root=root,
        logs=logs,
        run_config=run_config,
        entry=entry,
        privacy=_privacy_file(privacy),
    )


def _dataset_paths(given: Sequence[str | Path] | None) -> list[Path]:
    """The mock dataset folders, absolute; each must exist."""
    paths = [Path(x).resolve() for x in (given or [])]
    for data_path in paths:
        if not data_path.exists():
            raise ConfigError(f"mock dataset path does not exist: {data_path}")
    return paths


def _count_data_owners(
    cfg: ProjectConfig, num_data_owners: int | None, paths: list[Path]
) -> int:
    """How many data owners: as asked, else one per dataset path or datasite, else 2."""
    if num_data_owners is None:
        n = len(paths) or len(cfg.datasites) or 2
    else:
        n = num_data_owners
    if paths and n != len(paths):
        raise ConfigError(
            f"--num-data-owners {n} differs from the {len(paths)} mock dataset "
            "paths: give one path per data owner, or leave -n out"
        )
    return n


def _check_entry(cfg: ProjectConfig, entry: str, n: int) -> None:
    """``main.py`` needs a bootstrapped app with one datasite per data owner."""
    if entry not in ("party", "main.py"):
        raise ConfigError(f"entry must be 'party' or 'main.py', got {entry!r}")
    if entry != "main.py":
        return
    if not cfg.bootstrapped or not (cfg.app_dir / "main.py").is_file():
        raise ConfigError(
            f"{cfg.app_dir} has no main.py and [tool.syft_flwr] table: "
            "run `syft_flwr bootstrap` first"
        )
    if len(cfg.datasites) != n:
        raise ConfigError(
            f"{n} mock dataset paths for {len(cfg.datasites)} data owners in "
            f"{cfg.app_dir / 'pyproject.toml'}: give one path per data owner"
        )


def _privacy_file(privacy: str | Path | None) -> Path | None:
    """The policy file each data owner gets, checked here (not in a party)."""
    from syft_flwr.data_owner.privacy import PrivacyPolicy

    if privacy is None:
        return None
    path = Path(privacy).expanduser().resolve()
    PrivacyPolicy.load(path)  # a bad file is refused before anything starts
    return path


def _app_name(root: Path, name: str, fresh: bool) -> tuple[str, bool]:
    """The app folder name of this network: kept across reruns in one work dir.

    The researcher's checkpoint and each data owner's reply cache live under the
    app name, so a rerun in the same work dir resumes; a new work dir, or
    ``fresh``, gets a new name (no leftovers of another run can interfere).
    Also returns whether the name was kept (an earlier run is resumed).
    """
    state = root / "simulation.json"
    if not fresh:
        try:
            saved = json.loads(state.read_text()).get("app_name")
        except (FileNotFoundError, ValueError, AttributeError):
            saved = None
        if isinstance(saved, str) and saved.startswith(f"{name}_"):
            return saved, True
    app_name = f"{name}_{int(time.time())}_{secrets.token_hex(3)}"
    root.mkdir(parents=True, exist_ok=True)
    _write_text_atomic(state, json.dumps({"app_name": app_name}))
    return app_name, False

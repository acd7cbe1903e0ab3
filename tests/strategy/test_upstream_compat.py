"""Helpers kept for apps written for the upstream syft-flwr."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from flwr.common import ndarrays_to_parameters

from syft_flwr.client import SyftP2PClient
from syft_flwr.errors import ConfigError
from syft_flwr.ids import node_id_for
from syft_flwr.project import load_project
from syft_flwr.run import _restrict_peers
from syft_flwr.strategy import FedAvgWithModelSaving
from syft_flwr.utils import get_syftbox_dataset_path, run_syft_flwr, str_to_int


def _load(path: Path) -> list[np.ndarray]:
    if path.suffix == ".npz":
        with np.load(path) as z:
            return [z[f"layer_{i}"] for i in range(len(z.files))]
    from safetensors.numpy import load_file

    d = load_file(str(path))
    return [d[f"layer_{i}"] for i in range(len(d))]


def test_fedavg_with_model_saving_writes_each_round(tmp_path: Path):
    weights = [
        np.arange(6, dtype=np.float32).reshape(2, 3),
        np.ones(4, dtype=np.float32),
    ]
    strategy = FedAvgWithModelSaving(tmp_path / "weights", min_available_clients=1)
    for rnd in (0, 1):
        strategy.evaluate(rnd, ndarrays_to_parameters([w + rnd for w in weights]))
    files = sorted((tmp_path / "weights").glob("parameters_round_*"))
    assert [f.stem for f in files] == ["parameters_round_0", "parameters_round_1"]
    got = _load(files[1])
    assert len(got) == 2
    np.testing.assert_array_equal(got[0], weights[0] + 1)
    np.testing.assert_array_equal(got[1], weights[1] + 1)


def test_data_dir_helpers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)  # upstream's default is ./.data/
    assert run_syft_flwr() is False
    with pytest.raises(FileNotFoundError, match="DATA_DIR") as info:
        get_syftbox_dataset_path()
    assert isinstance(info.value, ConfigError)  # also ours
    (tmp_path / ".data").mkdir()
    assert get_syftbox_dataset_path() == Path(".data/")
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    assert run_syft_flwr() is True
    assert get_syftbox_dataset_path() == tmp_path
    assert str_to_int("a@Example.ORG") == node_id_for("a@example.org")


def test_drive_clients_only_accept_this_apps_parties(tmp_path: Path):
    app = tmp_path / "app"
    app.mkdir()
    (app / "pyproject.toml").write_text(
        '[project]\nname = "x"\n[tool.flwr.app.components]\nserverapp = "a:b"\n'
        'clientapp = "a:c"\n[tool.syft_flwr]\naggregator = "r@example.org"\n'
        'datasites = ["d1@example.org", "d2@example.org"]\ntransport = "p2p"\n'
    )
    cfg = load_project(app)
    c = SyftP2PClient("d1@example.org", state_root=tmp_path / "s")
    assert c.allowed_peers is None
    _restrict_peers(c, cfg, [])
    assert c.allowed_peers == {"r@example.org", "d1@example.org", "d2@example.org"}
    explicit = SyftP2PClient("d1@example.org", allowed_peers=["R@example.org"])
    _restrict_peers(explicit, cfg, [])
    assert explicit.allowed_peers == {"r@example.org"}  # explicit arguments win

"""Strict run config parsing (``syft_flwr.run_config``) and the Python API's checks."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from syft_flwr.errors import ConfigError
from syft_flwr.project import bootstrap, load_project, parse_run_config
from syft_flwr.run import DEFAULT_NODE_CONFIG, node_config_for
from syft_flwr.simulation import simulate

TOY = Path(__file__).resolve().parent / "assets" / "toy_app"
BASE = {"num-server-rounds": 3, "lr": 0.1, "name": "fedavg", "dp": False}


def test_values_are_typed_like_the_app_defaults():
    got = parse_run_config(
        BASE, ["num-server-rounds=5 lr=1 name=fedprox", 'dp=true name="a b"']
    )
    assert got == {"num-server-rounds": 5, "lr": 1.0, "name": "a b", "dp": True}
    assert isinstance(got["lr"], float)
    assert parse_run_config(BASE, None) == BASE


@pytest.mark.parametrize(
    ("given", "needle"),
    [
        ("x=", "'x=': use key=value"),
        ("x", "'x': use key=value"),
        ("=3", "'=3': use key=value"),
        ("lr=0.1 x", "'x': use key=value"),
        ('name="open', "a quote is not closed"),
        ("nm=2", "the app has no config key 'nm'; did you mean name?"),
        ("zzz=2", "its keys: num-server-rounds, lr, name, dp"),
        ("num-server-rounds=abc", "must be a whole number (the app's default is 3)"),
        ("num-server-rounds=2.5", "must be a whole number"),
        ("dp=1", "dp must be true or false"),
        ("lr=fast", "lr must be a number"),
    ],
)
def test_every_mistake_is_a_value_error_naming_the_entry(given: str, needle: str):
    with pytest.raises(ValueError, match="--run-config") as exc:
        parse_run_config(BASE, given)
    assert isinstance(exc.value, ConfigError) and needle in str(exc.value)


def test_a_toml_file_is_checked_like_the_command_line(tmp_path: Path):
    good = tmp_path / "good.toml"
    good.write_text("num-server-rounds = 4\nlr = 2\n")
    assert parse_run_config(BASE, str(good))["lr"] == 2.0
    bad = tmp_path / "bad.toml"
    bad.write_text("num-server-roundz = 4\n")
    with pytest.raises(ConfigError, match="did you mean num-server-rounds"):
        parse_run_config(BASE, str(bad))
    with pytest.raises(ConfigError, match="no such file"):
        parse_run_config(BASE, str(tmp_path / "gone.toml"))


def test_node_config_takes_any_key_but_still_refuses_malformed_entries():
    cfg = load_project(TOY)
    got = node_config_for(cfg, "partition-id=1 num-partitions=2 extra=x")
    assert got["partition-id"] == 1 and got["extra"] == "x"
    assert set(DEFAULT_NODE_CONFIG) <= set(got)
    with pytest.raises(ConfigError, match="--node-config 'partition-id=': use"):
        node_config_for(cfg, "partition-id=")


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"num_data_owners": 0}, "--num-data-owners 0: a run needs at least 1"),
        ({"run_config": "num-server-roundz=2"}, "did you mean num-server-rounds?"),
        ({"timeout": 0}, "--timeout 0"),
    ],
)
def test_simulate_api_raises_the_same_text_before_anything_starts(
    tmp_path: Path, kwargs: dict, needle: str
):
    work = tmp_path / "work"
    with pytest.raises(ValueError) as exc:
        simulate(TOY, workdir=work, quiet=True, **kwargs)
    assert needle in str(exc.value)
    assert not work.exists()


def test_bootstrap_api_checks_every_input_before_writing(tmp_path: Path):
    app = tmp_path / "toy_app"
    shutil.copytree(TOY, app, ignore=shutil.ignore_patterns("__pycache__", "main.py"))
    before = (app / "pyproject.toml").read_text()
    for owners in (["a@x.org", "a@x.org"], ["r@x.org"], []):
        with pytest.raises(ValueError):
            bootstrap(app, "r@x.org", owners)
    with pytest.raises(ValueError, match="transport 'ftp' is not known"):
        bootstrap(app, "r@x.org", ["a@x.org"], "ftp")
    assert (app / "pyproject.toml").read_text() == before
    assert not (app / "main.py").exists()

"""Every name upstream syft-flwr code imports, with upstream's behaviour."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest
from compat._upstream import (
    DATA_OWNERS,
    RESEARCHER,
    UPSTREAM_MAIN_PY,
    clean_env,
    copy_app,
    make_data,
    upstream_bootstrap,
)

import syft_flwr
from syft_flwr.errors import ConfigError, RunFailed
from syft_flwr.project import load_project
from syft_flwr.run import DEFAULT_NODE_CONFIG, build_main_parser, node_config_for


def test_top_level_names_are_upstreams():
    assert syft_flwr.__all__ == ["__version__", "bootstrap", "run"]
    assert callable(syft_flwr.bootstrap) and callable(syft_flwr.run)
    # the modules behind them still import, as upstream's main.py needs
    from syft_flwr.bootstrap import bootstrap
    from syft_flwr.run import syftbox_run_flwr_client, syftbox_run_flwr_server
    from syft_flwr.run_simulation import run

    assert bootstrap is syft_flwr.bootstrap
    assert callable(syftbox_run_flwr_client) and callable(syftbox_run_flwr_server)
    assert run.__module__ == "syft_flwr.run_simulation"


def test_every_import_of_upstreams_template_resolves():
    names = {
        m.group(1): m.group(2)
        for m in __import__("re").finditer(
            r"^from (syft_flwr[\w.]*) import (.+)$", UPSTREAM_MAIN_PY, flags=8
        )
    }
    assert names  # the template does import from syft_flwr
    for module, imported in names.items():
        mod = __import__(module, fromlist=["x"])
        for name in (n.strip() for n in imported.split(",")):
            assert hasattr(mod, name), f"{module}.{name}"


def test_config_and_consts_modules(tmp_path: Path):
    from syft_flwr.config import load_flwr_pyproject, load_toml, write_toml
    from syft_flwr.consts import SYFT_FLWR_ENCRYPTION_ENABLED

    assert SYFT_FLWR_ENCRYPTION_ENABLED == "SYFT_FLWR_ENCRYPTION_ENABLED"
    app = copy_app(tmp_path / "app")
    upstream_bootstrap(app)
    conf = load_flwr_pyproject(app)  # a folder or the file, as upstream
    assert conf == load_flwr_pyproject(app / "pyproject.toml")
    assert conf["tool"]["syft_flwr"]["aggregator"] == RESEARCHER
    assert conf["tool"]["syft_flwr"]["datasites"] == DATA_OWNERS
    write_toml(tmp_path / "x.toml", {"a": {"b": [1, 2]}})
    assert load_toml(tmp_path / "x.toml") == {"a": {"b": [1, 2]}}
    (app / "pyproject.toml").write_text(
        (app / "pyproject.toml").read_text().replace("clientapp", "clientap")
    )
    with pytest.raises(ValueError, match="clientapp"):
        load_flwr_pyproject(app)
    with pytest.raises(FileNotFoundError):
        load_toml(tmp_path / "missing.toml")


def test_our_loader_reads_upstream_bootstrapped_pyproject(tmp_path: Path):
    app = copy_app(tmp_path / "app")
    upstream_bootstrap(app, transport="p2p")
    cfg = load_project(app)
    assert cfg.aggregator == RESEARCHER and list(cfg.datasites) == DATA_OWNERS
    assert cfg.transport == "p2p" and cfg.flwr_app_name.startswith("flwr/ds@")


def test_bootstrap_raises_upstreams_exception_types(tmp_path: Path):
    app = copy_app(tmp_path / "app")
    with pytest.raises(ValueError):
        syft_flwr.bootstrap(app, "not-an-email", DATA_OWNERS)
    with pytest.raises(FileNotFoundError):
        syft_flwr.bootstrap(tmp_path / "nope", RESEARCHER, DATA_OWNERS)
    syft_flwr.bootstrap(app, aggregator=RESEARCHER, datasites=DATA_OWNERS)
    before = (app / "pyproject.toml").read_text(), (app / "main.py").read_text()
    with pytest.raises(FileExistsError, match="main.py already exists"):
        syft_flwr.bootstrap(app, RESEARCHER, ["other@openmined.org"])
    # refused means untouched
    assert (
        (app / "pyproject.toml").read_text(),
        (app / "main.py").read_text(),
    ) == before
    syft_flwr.bootstrap(app, RESEARCHER, ["other@openmined.org"], force=True)
    assert load_project(app).datasites == ("other@openmined.org",)


def test_run_validates_like_upstream(tmp_path: Path):
    app = copy_app(tmp_path / "app")
    with pytest.raises(FileNotFoundError, match="main.py"):
        syft_flwr.run(app, [tmp_path])
    upstream_bootstrap(app)
    with pytest.raises(ValueError, match="does not exist"):
        syft_flwr.run(app, [tmp_path / "missing", tmp_path])
    with pytest.raises(ValueError, match="one path per data owner"):
        syft_flwr.run(app, [tmp_path])


def test_node_config_defaults_and_repeated_options(tmp_path: Path):
    app = copy_app(tmp_path / "app")
    cfg = load_project(app)
    assert DEFAULT_NODE_CONFIG == {"partition-id": 0, "num-partitions": 1}
    got = node_config_for(cfg)
    assert got["partition-id"] == 0 and got["num-partitions"] == 1
    # upstream's node config held the researcher's app config too; ours is the
    # data owner's alone (the app config reaches the ClientApp as run config)
    assert "min-nodes" not in got and got == DEFAULT_NODE_CONFIG
    args = build_main_parser().parse_args(
        ["-s", "--node-config", "partition-id=1", "--node-config", "num-partitions=3"]
    )
    assert args.simulation is True
    merged = node_config_for(cfg, args.node_config)
    assert (merged["partition-id"], merged["num-partitions"]) == (1, 3)
    assert node_config_for(cfg, {"partition-id": 4})["partition-id"] == 4


def test_data_owner_outcome_rules():
    from flwr.clientapp import ClientApp

    from syft_flwr.data_owner.handler import ClientAppHandler

    h = ClientAppHandler(ClientApp(), email="do1@openmined.org")
    h.check_outcome()  # no work, no failure
    h.handled, h.failed = 2, 2
    with pytest.raises(RunFailed, match="all 2 ClientApp calls"):
        h.check_outcome()
    h.succeeded = 1
    h.check_outcome()
    h.stopped_outcome, h.stopped_reason = "failed", "Server failed: KeyError"
    with pytest.raises(RunFailed, match="Server failed"):
        h.check_outcome()


def test_cli_bootstrap_prompts_for_missing_emails(tmp_path: Path):
    app = copy_app(tmp_path / "app")
    r = subprocess.run(
        [sys.executable, "-m", "syft_flwr", "bootstrap", str(app)],
        input=f"{RESEARCHER}\n{DATA_OWNERS[0]}, {DATA_OWNERS[1]}\n",
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(),
    )
    assert r.returncode == 0, r.stderr
    conf = tomllib.loads((app / "pyproject.toml").read_text())
    assert conf["tool"]["syft_flwr"]["datasites"] == DATA_OWNERS
    r = subprocess.run(
        [sys.executable, "-m", "syft_flwr", "bootstrap", str(app), "--force"],
        input="",
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(),
    )
    assert r.returncode == 2 and "give -a/--aggregator" in r.stderr


@pytest.mark.slow
def test_notebook_flow_as_a_script(tmp_path: Path):
    """The cells of upstream's local notebook, run top to bottom."""
    app = copy_app(tmp_path / "app")
    data = make_data(tmp_path, [[1.0, 2.0, 3.0], [10.0, 20.0]])
    script = tmp_path / "notebook.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import os
            from pathlib import Path
            import syft_flwr

            os.environ["SYFT_FLWR_MSG_TIMEOUT"] = "30"
            project = Path({str(app)!r})
            syft_flwr.bootstrap(project, aggregator={RESEARCHER!r},
                                datasites={DATA_OWNERS!r})
            ok = syft_flwr.run(project, [{str(data[0])!r}, {str(data[1])!r}])
            print("RUN_OK", ok)
            assert ok is True
            """
        )
    )
    r = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=240,
        env=clean_env(),
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "RUN_OK True" in r.stdout
    log = (app / "simulation_logs" / f"{RESEARCHER}.log").read_text()
    assert "ANALYTICS count=5 sum=36.0" in log
    # our main.py gives each data owner its own partition
    for i, email in enumerate(DATA_OWNERS):
        text = (app / "simulation_logs" / f"{email}.log").read_text()
        assert f"PARTITION {i}/2" in text, text


def test_config_error_stays_a_value_error():
    assert issubclass(ConfigError, ValueError)


def test_the_researchers_app_config_never_sets_the_node_config(tmp_path: Path):
    app = copy_app(tmp_path / "app")
    cfg = dataclasses.replace(
        load_project(app), app_config={"partition-id": 7, "data-path": "/etc"}
    )
    assert node_config_for(cfg) == DEFAULT_NODE_CONFIG
    assert node_config_for(cfg, "partition-id=1") == {
        "partition-id": 1,
        "num-partitions": 1,
    }

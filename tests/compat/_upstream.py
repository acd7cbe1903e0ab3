"""Make app folders exactly as upstream syft-flwr 0.5.x's ``bootstrap`` leaves them.

Upstream's bootstrap loads pyproject.toml, sets ``partition-id = 0`` and
``num-partitions = 1`` in ``[tool.flwr.app.config]``, pins itself as a
dependency, writes ``[tool.syft_flwr]`` (app_name, datasites, aggregator,
transport) and dumps the file with tomli-w (comments lost), then copies its
``main.py`` template verbatim. This module reproduces that effect (it is test
data, not a copy of upstream's code); the template is ``upstream/main.py.tpl``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import tomli_w

HERE = Path(__file__).resolve().parent
UPSTREAM_MAIN_PY = (HERE / "upstream" / "main.py.tpl").read_text()
ANALYTICS_APP = HERE / "assets" / "upstream_analytics"

RESEARCHER = "ds@openmined.org"
DATA_OWNERS = ["do1@openmined.org", "do2@openmined.org"]


def copy_app(dst: Path, src: Path = ANALYTICS_APP) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
    return dst


def upstream_bootstrap(
    app_dir: Path,
    aggregator: str = RESEARCHER,
    datasites: list[str] | None = None,
    transport: str = "syftbox",
) -> None:
    """Leave ``app_dir`` as upstream's ``bootstrap`` would."""
    path = app_dir / "pyproject.toml"
    conf = tomllib.loads(path.read_text())
    app_cfg = conf["tool"]["flwr"]["app"].setdefault("config", {})
    app_cfg["partition-id"] = 0
    app_cfg["num-partitions"] = 1
    deps = [
        d for d in conf["project"].get("dependencies", []) if not d.startswith("syft")
    ]
    conf["project"]["dependencies"] = [*deps, "syft_flwr==0.5.3"]
    conf["tool"]["syft_flwr"] = {
        "app_name": f"{aggregator}_{conf['project']['name']}_{int(time.time())}",
        "datasites": list(datasites or DATA_OWNERS),
        "aggregator": aggregator,
        "transport": transport,
    }
    path.write_bytes(tomli_w.dumps(conf).encode())
    (app_dir / "main.py").write_text(UPSTREAM_MAIN_PY)


def make_data(root: Path, values: list[list[float]]) -> list[Path]:
    """One mock dataset folder per data owner, each with a ``values.csv``."""
    out = []
    for i, vals in enumerate(values):
        d = root / f"data{i}"
        d.mkdir(parents=True)
        (d / "values.csv").write_text("\n".join(str(v) for v in vals) + "\n")
        out.append(d)
    return out


def clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SYFT_FLWR_", "SYFTBOX_", "DATA_DIR", "OUTPUT_DIR"))
    }
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def run_main_py(
    app_dir: Path,
    config_path: Path,
    log_path: Path,
    *,
    data_dir: Path | None = None,
    output_dir: Path | None = None,
    args: tuple[str, ...] = ("-s",),
) -> subprocess.Popen[bytes]:
    """Start ``python main.py -s`` as upstream's simulator starts a party."""
    # as our simulator does: a simulated data owner serves the local folder
    # unreviewed, and upstream's template takes no options to say so
    env = clean_env(
        SYFTBOX_CLIENT_CONFIG_PATH=str(config_path), SYFT_FLWR_NO_REVIEW="true"
    )
    if data_dir is not None:
        env["DATA_DIR"] = str(data_dir)
    if output_dir is not None:
        output_dir.mkdir(parents=True, exist_ok=True)
        env["OUTPUT_DIR"] = str(output_dir)
    log = open(log_path, "wb")  # noqa: SIM115 - closed by the caller's wait()
    try:
        return subprocess.Popen(
            [sys.executable, str(app_dir / "main.py"), *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=str(app_dir),
            start_new_session=True,
        )
    finally:
        log.close()

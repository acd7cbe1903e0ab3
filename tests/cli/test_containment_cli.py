"""``syft_flwr containment``: probes each layer for real and says what holds."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from syft_flwr.data_owner.contain.report import LAYERS


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYFT_FLWR_")}
    return subprocess.run(
        [sys.executable, "-m", "syft_flwr", "containment", *args],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip


def test_the_probe_names_every_layer_and_exits_0_only_when_all_hold() -> None:
    r = _cli("--json")
    report = json.loads(r.stdout)
    layers = {x["name"]: x for x in report["layers"]}
    assert set(layers) == set(LAYERS) and report["level"] == "full"
    all_hold = all(x["enforced"] for x in layers.values())
    assert r.returncode == (0 if all_hold else 1), r.stderr
    text = _cli("--memory-mb", "2048")
    for name in LAYERS:
        assert any(line.startswith(name) for line in text.stdout.splitlines())
    if all_hold:
        assert "containment: full" in text.stdout
        assert "address space at most 2048 MiB" in text.stdout  # the flag reached it
    else:
        assert "NOT ENFORCED" in text.stdout and "--containment none" in text.stdout

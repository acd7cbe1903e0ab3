"""The README's environment-variable table stays true to the code."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_environment_variable_the_code_reads_is_in_the_readme():
    names: set[str] = set()
    for path in (ROOT / "src" / "syft_flwr").rglob("*.py"):
        if "testing" in path.parts:
            continue  # the test harnesses set SyftBox's own variables for children
        names |= set(
            re.findall(r"\"((?:SYFT_FLWR|GDRIVE|SYFTBOX)_[A-Z_]+)\"", path.read_text())
        )
    assert {
        "SYFT_FLWR_MSG_TIMEOUT",
        "SYFT_FLWR_POLL_INTERVAL",
        "SYFT_FLWR_ENCRYPTION_ENABLED",
    } <= names
    readme = (ROOT / "README.md").read_text()
    table = {m for m in re.findall(r"^\| `([A-Z_]+)` \|", readme, re.MULTILINE)}
    missing = sorted(names - table)
    assert missing == [], f"add these to the README's configuration table: {missing}"


def test_readme_links_exist():
    readme = (ROOT / "README.md").read_text()
    for rel in re.findall(
        r"`((?:docs|benchmarks|notebooks|examples)/[^`\s]+)`", readme
    ):
        assert (ROOT / rel.rstrip("/")).exists(), rel

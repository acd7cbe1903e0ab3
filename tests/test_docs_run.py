"""Every block marked runnable in the docs runs as written.

A block opened with ```` ```bash runnable ```` or ```` ```python runnable ```` in
``README.md``, ``docs/*.md`` or ``examples/README.md`` is run here, in a
temporary folder holding a copy of the shipped ``examples/`` (offline parts
only: nothing that needs a SyftBox server or Google account is marked). A
snippet that stops working fails the build instead of a new user.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "examples" / "README.md"] + sorted(
    (ROOT / "docs").glob("*.md")
)
_FENCE = re.compile(
    r"^(?P<indent>[ \t]*)```(?P<lang>bash|python) runnable[ \t]*\n"
    r"(?P<body>.*?)^(?P=indent)```[ \t]*$",
    re.MULTILINE | re.DOTALL,
)


def _blocks() -> list[tuple[str, str, str]]:
    found = []
    for doc in DOCS:
        text = doc.read_text()
        for m in _FENCE.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            where = f"{doc.relative_to(ROOT)}:{line}"
            found.append((where, m["lang"], textwrap.dedent(m["body"])))
    return found


BLOCKS = _blocks()


def test_the_docs_mark_their_offline_commands_runnable():
    where = {w.split(":")[0] for w, _, _ in BLOCKS}
    assert {"examples/README.md", "docs/syftbox.md"} <= where, where


@pytest.mark.slow
@pytest.mark.parametrize(
    ("where", "lang", "body"), BLOCKS, ids=[w for w, _, _ in BLOCKS]
)
def test_runnable_block_runs_as_written(
    tmp_path: Path, where: str, lang: str, body: str
):
    shutil.copytree(
        ROOT / "examples",
        tmp_path / "examples",
        ignore=shutil.ignore_patterns(
            "__pycache__", "simulation_logs", "outputs", ".data"
        ),
    )
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SYFT_FLWR_", "SYFTBOX_"))
    }
    # `syft_flwr` and `python` are this environment's, as after `make setup`.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["TMPDIR"] = str(tmp_path)  # a run's temporary work folder stays in here
    cmd = ["bash", "-e", "-o", "pipefail", "-c", body]
    if lang == "python":
        cmd = [sys.executable, "-c", body]
    r = subprocess.run(
        cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, f"{where} failed:\n{body}\n{r.stdout[-2000:]}{r.stderr}"

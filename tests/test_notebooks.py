"""Execute the notebooks end to end (local simulated network) and check their results."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"

pytestmark = pytest.mark.timeout(300)


def _text(output: Any) -> str:
    if output.get("output_type") == "stream":
        return str(output.get("text", ""))
    return str(output.get("data", {}).get("text/plain", ""))


def execute(name: str, mime_types: list[set[str]] | None = None) -> list[str]:
    """Run ``notebooks/<name>.ipynb``; return each code cell's joined output.

    ``mime_types``, if given, receives each code cell's rich output types
    (e.g. ``image/png``).
    """
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    client = nbclient.NotebookClient(
        nb,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    client.execute()
    outputs = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
        assert not errors, f"{name}: a cell raised: {errors[0].get('ename')}"
        outputs.append("".join(_text(o) for o in cell.get("outputs", [])))
        if mime_types is not None:
            mime_types.append(
                {m for o in cell.get("outputs", []) for m in o.get("data", {})}
            )
    return outputs


@pytest.fixture(autouse=True)
def _no_inherited_output_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OUTPUT_DIR", raising=False)
    monkeypatch.delenv("DATA_DIR", raising=False)
    monkeypatch.setenv("SYFT_FLWR_ENCRYPTION_ENABLED", "true")


def test_researcher_notebook() -> None:
    mime_types: list[set[str]] = []
    out = execute("researcher", mime_types)
    # submitted for review, then approved by both data owners before the run
    review = out[3]
    assert "'do1@example.org', 'pending'" in review
    assert "('do1@example.org', 'approved'), ('do2@example.org', 'approved')" in review
    # cells: ..., run, results, plot, fingerprints, upstream bootstrap, upstream
    # run, privacy budget, clean-up
    results = out[-7]
    assert "Final accuracy: 0.9250" in results
    assert '"weights_sha256": "7a35fc4bc02f2fdd"' in results
    assert "final model: {'weights': (12,), 'bias': (1,)}" in results
    assert "data owners still serving: none" in out[-8]
    assert "SYFT_FLWR_RESULT" in out[-8]
    # the per-round metrics: read back from the saved history and plotted
    assert "rounds: [1, 2, 3, 4, 5]" in out[-6], out[-6]
    assert "'5': 0.925" in out[-6]
    assert "image/png" in mime_types[-6]
    # the data owners' identity keys were pinned on first use during the run
    assert "researcher@example.org     [own]" in out[-5]
    for email in ("do1@example.org", "do2@example.org"):
        assert f"{email}" in out[-5] and "[pinned]" in out[-5]
    # the upstream-style cells: bootstrap wrote main.py, run (awaited) succeeded
    # with the same model as the in-kernel run (same partitions, as DATA_DIR)
    assert "'main.py'" in out[-4] and "'pyproject.toml'" in out[-4]
    assert "syft_flwr.run succeeded: True" in out[-3]
    assert '"accuracy": 0.925' in out[-3]
    # a site's privacy budget: refused with its email, the run still ended
    private = out[-2]
    for email in ("do1@example.org", "do2@example.org"):
        assert f"{email} is out of privacy budget: dataset 'default'" in private
    assert "the run went on to the end; final accuracy" in private
    assert "removed" in out[-1]


def test_data_owner_notebook() -> None:
    out = execute("data_owner")
    # the review cells: submitted, fetched with signer and files, approved, told
    review = out[5]
    assert "[pending] fedavg_tabular from researcher@example.org" in review
    assert "fedavg_tabular/client_app.py" in review and "=== " in review
    assert "('do1@example.org', 'approved'), ('do2@example.org', 'approved')" in review
    assert "researcher@example.org     [pinned]" in out[-5]  # pinned on first use
    # the audit trail as a table: what ran, for whom, and the counts
    audit = out[-4]
    assert "train" in audit and "researcher@example.org" in audit
    # 10 ClientApp calls and the researcher's stop signal
    assert "'run': 11" in audit and "'replied': 11" in audit
    results = out[-6]
    for email in ("do1@example.org", "do2@example.org"):
        assert f"{email} handled 10 messages; stopped: Training complete" in results
    assert "request files left in the datasites: none" in results
    assert "data owner threads exited: True" in results
    assert "Final accuracy (researcher's test set): 0.9250" in results
    # the privacy section: six replies paid for, the last round refused
    private = out[-3]
    assert "budget epsilon 6 at delta 1e-05" in private
    for email in ("do1@example.org", "do2@example.org"):
        assert f"{email}: 6 noised replies sent, 2 refused" in private
    budget = out[-2]
    assert "dataset default: epsilon spent 5.979 of 6, 0.02099 left" in budget
    assert "6 replies" in budget


def test_notebooks_use_only_public_syft_flwr_names() -> None:
    """Notebooks are user documentation: they import only names in ``__all__``."""
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
        imports = [ln for ln in code.splitlines() if ln.startswith("from syft_flwr")]
        assert imports, path.name
        for line in imports:
            module_name, names = line[len("from ") :].split(" import ", 1)
            module = importlib.import_module(module_name)
            assert not any(p.startswith("_") for p in module_name.split(".")), line
            for name in (n.strip() for n in names.split(",")):
                assert name in module.__all__, f"{path.name}: {line}"
        assert "import syft_flwr." not in code

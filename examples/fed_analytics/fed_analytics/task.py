"""The data owners' (synthetic) patient tables and the statistics computed on them.

Columns: ``age`` (integer years), ``bmi``, ``glucose`` (floats) and ``outcome``
(0/1). A data owner's table comes from ``$DATA_DIR/patients.csv`` if
``DATA_DIR`` is set, else it is generated from ``(seed, partition-id)``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

SEED = 7
COLUMNS = ("age", "bmi", "glucose", "outcome")
NUMERIC = ("age", "bmi", "glucose")
#: Rows of partition ``i`` (of ``n``): ``BASE_ROWS * (i + 1)``.
BASE_ROWS = 150
#: Histogram bin edges the researcher asks for (right edge inclusive in numpy).
EDGES: dict[str, list[float]] = {
    "age": [18.0, 30.0, 40.0, 50.0, 60.0, 70.0, 91.0],
    "bmi": [10.0, 18.5, 25.0, 30.0, 35.0, 60.0],
    "glucose": [40.0, 70.0, 100.0, 126.0, 160.0, 300.0],
}

Table = dict[str, NDArray[np.float64]]


def generate_partition(partition_id: int, seed: int = SEED) -> Table:
    """Partition ``partition_id``'s table; sizes and distributions differ per owner."""
    rng = np.random.default_rng([seed, partition_id])
    n = BASE_ROWS * (partition_id + 1)
    age = rng.integers(18, 91, size=n).astype(np.float64)
    bmi = np.clip(rng.normal(26.0 + partition_id, 4.5, size=n), 12.0, 59.0)
    glucose = np.clip(
        rng.normal(95.0 + 0.4 * (age - 50) + 10 * partition_id, 18.0, size=n),
        45.0,
        295.0,
    )
    risk = 1 / (1 + np.exp(-(0.04 * (age - 55) + 0.03 * (glucose - 110))))
    outcome = (rng.random(n) < risk).astype(np.float64)
    return {"age": age, "bmi": bmi, "glucose": glucose, "outcome": outcome}


def write_csv(table: Table, out_dir: str | Path) -> Path:
    """Write ``patients.csv`` (for ``DATA_DIR``)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "patients.csv"
    data = np.column_stack([table[c] for c in COLUMNS])
    np.savetxt(
        path, data, delimiter=",", header=",".join(COLUMNS), comments="", fmt="%.17g"
    )
    return path


def read_csv(data_dir: str | Path) -> Table:
    path = Path(data_dir) / "patients.csv"
    with open(path) as f:
        header = f.readline().strip().split(",")
    data = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
    return {c: data[:, header.index(c)] for c in COLUMNS}


def load_table(node_config: dict[str, object], seed: int = SEED) -> Table:
    """``DATA_DIR`` if set, else the generated partition of ``partition-id``."""
    data_dir = os.environ.get("DATA_DIR")
    if data_dir:
        return read_csv(data_dir)
    return generate_partition(int(node_config.get("partition-id", 0)), seed)  # type: ignore[call-overload]


def histogram(values: NDArray[np.float64], edges: list[float]) -> list[int]:
    """Counts per bin (numpy semantics: the last bin includes its right edge)."""
    counts, _ = np.histogram(values, bins=np.asarray(edges, dtype=np.float64))
    return [int(c) for c in counts]

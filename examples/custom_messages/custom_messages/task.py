"""Data and model of the example: synthetic tabular data, numpy logistic regression.

Everything is deterministic: the data comes from ``make_classification`` with a
fixed seed, and local training draws its mini-batches from a generator seeded by
``(seed, partition-id, server-round)``.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

SEED = 42
N_FEATURES = 12
N_SAMPLES = 2400
#: The first rows are the researcher's public test set; the rest is split
#: between the data owners (never seen by the researcher).
N_CENTRAL_TEST = 400
TEST_FRACTION = 0.2

Array = NDArray[np.float64]
Params = list[Array]


@dataclass(frozen=True)
class Partition:
    """One data owner's private data."""

    x_train: Array
    y_train: Array
    x_test: Array
    y_test: Array


def make_dataset(seed: int = SEED) -> tuple[Array, Array]:
    """The whole synthetic data set (features, 0/1 labels)."""
    from sklearn.datasets import make_classification

    x, y = make_classification(
        n_samples=N_SAMPLES,
        n_features=N_FEATURES,
        n_informative=6,
        n_redundant=2,
        flip_y=0.03,
        class_sep=1.0,
        n_clusters_per_class=1,
        random_state=seed,
    )
    return x.astype(np.float64), y.astype(np.float64)


def central_test_set(seed: int = SEED) -> tuple[Array, Array]:
    """The researcher's public test set."""
    x, y = make_dataset(seed)
    return x[:N_CENTRAL_TEST], y[:N_CENTRAL_TEST]


def partition_bounds(num_partitions: int, n: int) -> list[tuple[int, int]]:
    """Row ranges of the partitions; partition ``i`` gets a share ``(i + 1) / sum``."""
    weights = np.arange(1, num_partitions + 1, dtype=np.float64)
    cuts = np.floor(np.cumsum(weights) / weights.sum() * n).astype(int)
    starts = np.concatenate([[0], cuts[:-1]])
    return [(int(s), int(e)) for s, e in zip(starts, cuts, strict=True)]


def load_partition(
    partition_id: int, num_partitions: int, seed: int = SEED
) -> Partition:
    """Generate partition ``partition_id`` of ``num_partitions`` (unequal sizes)."""
    if not 0 <= partition_id < num_partitions:
        raise ValueError(f"partition-id {partition_id} not in [0, {num_partitions})")
    x, y = make_dataset(seed)
    x, y = x[N_CENTRAL_TEST:], y[N_CENTRAL_TEST:]
    start, end = partition_bounds(num_partitions, len(y))[partition_id]
    xp, yp = x[start:end], y[start:end]
    n_test = int(round(len(yp) * TEST_FRACTION))
    return Partition(xp[n_test:], yp[n_test:], xp[:n_test], yp[:n_test])


def write_partition_csv(part: Partition, out_dir: str | Path) -> None:
    """Write ``train.csv`` and ``test.csv`` (features ``f0..``, ``label``)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    header = ",".join([f"f{i}" for i in range(N_FEATURES)] + ["label"])
    for name, x, y in (
        ("train", part.x_train, part.y_train),
        ("test", part.x_test, part.y_test),
    ):
        table = np.column_stack([x, y])
        np.savetxt(
            out / f"{name}.csv",
            table,
            delimiter=",",
            header=header,
            comments="",
            fmt="%.17g",
        )


def read_partition_csv(data_dir: str | Path) -> Partition:
    """Read the ``train.csv``/``test.csv`` written by :func:`write_partition_csv`."""
    d = Path(data_dir)
    tables = [
        np.loadtxt(d / f"{name}.csv", delimiter=",", skiprows=1, ndmin=2)
        for name in ("train", "test")
    ]
    (tr, te) = tables
    return Partition(tr[:, :-1], tr[:, -1], te[:, :-1], te[:, -1])


def load_local_data(node_config: dict[str, object], seed: int = SEED) -> Partition:
    """``DATA_DIR`` (a data owner's private CSVs) if set, else a generated partition."""
    data_dir = os.environ.get("DATA_DIR")
    if data_dir:
        return read_partition_csv(data_dir)
    pid = int(node_config.get("partition-id", 0))  # type: ignore[call-overload]
    n = int(node_config.get("num-partitions", 1))  # type: ignore[call-overload]
    return load_partition(pid, n, seed)


# -- model ----------------------------------------------------------------------
def initial_params() -> Params:
    """Zero weights and bias."""
    return [np.zeros(N_FEATURES, dtype=np.float64), np.zeros(1, dtype=np.float64)]


def _sigmoid(z: Array) -> Array:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -30.0, 30.0)))


def predict_proba(params: Params, x: Array) -> Array:
    w, b = params
    return _sigmoid(x @ w + b[0])


def log_loss(params: Params, x: Array, y: Array) -> float:
    p = np.clip(predict_proba(params, x), 1e-12, 1 - 1e-12)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def accuracy(params: Params, x: Array, y: Array) -> float:
    return float(np.mean((predict_proba(params, x) >= 0.5) == (y == 1.0)))


def train(
    params: Params,
    x: Array,
    y: Array,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    rng: np.random.Generator,
) -> tuple[Params, list[float]]:
    """Mini-batch SGD on the log loss; returns new params and the per-epoch losses."""
    w, b = params[0].copy(), params[1].copy()
    losses: list[float] = []
    for _ in range(epochs):
        order = rng.permutation(len(y))
        for start in range(0, len(y), batch_size):
            idx = order[start : start + batch_size]
            err = _sigmoid(x[idx] @ w + b[0]) - y[idx]
            w -= lr * (x[idx].T @ err) / len(idx)
            b -= lr * np.array([err.mean()])
        losses.append(log_loss([w, b], x, y))
    return [w, b], losses


def batch_rng(seed: int, partition_id: int, server_round: int) -> np.random.Generator:
    """The generator of one data owner's mini-batches in one round."""
    return np.random.default_rng([seed, partition_id, server_round])


def checksum(params: Params) -> str:
    """sha256 of the float64 bytes of all parameters (first 16 hex digits)."""
    h = hashlib.sha256()
    for p in params:
        h.update(np.ascontiguousarray(p, dtype=np.float64).tobytes())
    return h.hexdigest()[:16]

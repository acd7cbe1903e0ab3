"""Data, DP-SGD and a simple privacy accountant for the DP-FedMed example.

The "segmentation" task is reduced to per-voxel binary classification (lesion
or not) on synthetic, imbalanced features, scored with the Dice coefficient.
Everything is deterministic: data from a fixed seed, mini-batches and DP noise
from generators seeded by ``(seed, partition-id, server-round)``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

SEED = 11
N_FEATURES = 10
N_SAMPLES = 1800
TEST_FRACTION = 0.2

Array = NDArray[np.float64]
Params = list[Array]


@dataclass(frozen=True)
class Partition:
    x_train: Array
    y_train: Array
    x_test: Array
    y_test: Array


def make_dataset(seed: int = SEED) -> tuple[Array, Array]:
    from sklearn.datasets import make_classification

    x, y = make_classification(
        n_samples=N_SAMPLES,
        n_features=N_FEATURES,
        n_informative=5,
        n_redundant=2,
        n_clusters_per_class=1,
        weights=[0.75],
        flip_y=0.02,
        class_sep=1.2,
        random_state=seed,
    )
    return x.astype(np.float64), y.astype(np.float64)


def load_partition(
    partition_id: int, num_partitions: int, seed: int = SEED
) -> Partition:
    """Partition ``i`` of ``n`` gets a share ``(i + 1) / sum`` of the rows."""
    if not 0 <= partition_id < num_partitions:
        raise ValueError(f"partition-id {partition_id} not in [0, {num_partitions})")
    x, y = make_dataset(seed)
    w = np.arange(1, num_partitions + 1, dtype=np.float64)
    cuts = np.concatenate([[0], np.floor(np.cumsum(w) / w.sum() * len(y)).astype(int)])
    xp, yp = (
        x[cuts[partition_id] : cuts[partition_id + 1]],
        y[cuts[partition_id] : cuts[partition_id + 1]],
    )
    n_test = int(round(len(yp) * TEST_FRACTION))
    return Partition(xp[n_test:], yp[n_test:], xp[:n_test], yp[:n_test])


def write_partition_csv(part: Partition, out_dir: str | Path) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    header = ",".join([f"f{i}" for i in range(N_FEATURES)] + ["label"])
    for name, x, y in (
        ("train", part.x_train, part.y_train),
        ("test", part.x_test, part.y_test),
    ):
        np.savetxt(
            out / f"{name}.csv",
            np.column_stack([x, y]),
            delimiter=",",
            header=header,
            comments="",
            fmt="%.17g",
        )


def read_partition_csv(data_dir: str | Path) -> Partition:
    d = Path(data_dir)
    tr, te = (
        np.loadtxt(d / f"{n}.csv", delimiter=",", skiprows=1, ndmin=2)
        for n in ("train", "test")
    )
    return Partition(tr[:, :-1], tr[:, -1], te[:, :-1], te[:, -1])


def load_local_data(node_config: dict[str, object], seed: int = SEED) -> Partition:
    """``DATA_DIR`` (``train.csv``/``test.csv``) if set, else a generated partition."""
    data_dir = os.environ.get("DATA_DIR")
    if data_dir:
        return read_partition_csv(data_dir)
    pid = int(node_config.get("partition-id", 0))  # type: ignore[call-overload]
    n = int(node_config.get("num-partitions", 1))  # type: ignore[call-overload]
    return load_partition(pid, n, seed)


# -- model and DP-SGD -------------------------------------------------------------
def initial_params() -> Params:
    return [np.zeros(N_FEATURES, dtype=np.float64), np.zeros(1, dtype=np.float64)]


def _sigmoid(z: Array) -> Array:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -30.0, 30.0)))


def predict_proba(params: Params, x: Array) -> Array:
    return _sigmoid(x @ params[0] + params[1][0])


def log_loss(params: Params, x: Array, y: Array) -> float:
    p = np.clip(predict_proba(params, x), 1e-12, 1 - 1e-12)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def dice(params: Params, x: Array, y: Array) -> float:
    """Dice coefficient ``2 TP / (2 TP + FP + FN)`` of the positive class."""
    pred = predict_proba(params, x) >= 0.5
    truth = y == 1.0
    tp = float(np.sum(pred & truth))
    denom = 2 * tp + float(np.sum(pred & ~truth)) + float(np.sum(~pred & truth))
    return 1.0 if denom == 0 else 2 * tp / denom


@dataclass(frozen=True)
class DPResult:
    params: Params
    loss: float
    steps: int
    sample_rate: float


def dp_sgd(
    params: Params,
    x: Array,
    y: Array,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    noise_multiplier: float,
    max_grad_norm: float,
    rng: np.random.Generator,
) -> DPResult:
    """DP-SGD: clip each example's gradient to ``max_grad_norm``, add Gaussian noise."""
    w, b = params[0].copy(), params[1].copy()
    n = len(y)
    steps = 0
    losses = []
    for _ in range(epochs):
        order = rng.permutation(n)
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            err = _sigmoid(x[idx] @ w + b[0]) - y[idx]
            grads = np.column_stack([x[idx] * err[:, None], err])  # per example
            norms = np.linalg.norm(grads, axis=1, keepdims=True)
            grads = grads / np.maximum(1.0, norms / max_grad_norm)
            noisy = grads.sum(axis=0) + rng.normal(
                0.0, noise_multiplier * max_grad_norm, size=grads.shape[1]
            )
            step = lr * noisy / batch_size
            w -= step[:-1]
            b -= step[-1:]
            steps += 1
        losses.append(log_loss([w, b], x, y))
    return DPResult([w, b], float(np.mean(losses)), steps, batch_size / n)


def sample_epsilon(
    sample_rate: float, steps: int, noise_multiplier: float, delta: float
) -> float:
    """A simple closed-form epsilon of ``steps`` subsampled Gaussian steps.

    ``q * sqrt(2 * steps * ln(1/delta)) / sigma`` (the moments-accountant bound
    without its constant). A stand-in for a real RDP accountant; deterministic.
    """
    if noise_multiplier <= 0:
        return math.inf
    return (
        sample_rate * math.sqrt(2.0 * steps * math.log(1.0 / delta)) / noise_multiplier
    )


def gaussian_epsilon(noise_multiplier: float, delta: float) -> float:
    """Epsilon of one Gaussian mechanism with sensitivity 1 (0 if there is no noise)."""
    if noise_multiplier <= 0:
        return 0.0
    return math.sqrt(2.0 * math.log(1.25 / delta)) / noise_multiplier

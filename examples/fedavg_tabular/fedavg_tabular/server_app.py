"""ServerApp: FedAvg over the data owners, evaluated on the researcher's test set."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from fedavg_tabular.task import (
    SEED,
    accuracy,
    central_test_set,
    checksum,
    initial_params,
    log_loss,
)

app = ServerApp()

RESULT_PREFIX = "SYFT_FLWR_RESULT"


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run FedAvg, save the final model, print a one-line JSON summary."""
    rc = context.run_config
    num_rounds = int(rc["num-server-rounds"])
    min_nodes = int(rc.get("min-nodes", 2))
    x_test, y_test = central_test_set(int(rc.get("seed", SEED)))

    def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        params = arrays.to_numpy_ndarrays()
        return MetricRecord(
            {
                "accuracy": accuracy(params, x_test, y_test),
                "loss": log_loss(params, x_test, y_test),
            }
        )

    strategy = FedAvg(
        fraction_train=1.0,
        fraction_evaluate=1.0,
        min_train_nodes=min_nodes,
        min_evaluate_nodes=min_nodes,
        min_available_nodes=min_nodes,
    )
    result = strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord(initial_params()),
        num_rounds=num_rounds,
        timeout=float(rc["round-timeout"]),
        train_config=ConfigRecord(
            {
                "local-epochs": int(rc["local-epochs"]),
                "learning-rate": float(rc["learning-rate"]),
                "batch-size": int(rc["batch-size"]),
            }
        ),
        evaluate_fn=evaluate_fn,
    )

    params = result.arrays.to_numpy_ndarrays()
    final = result.evaluate_metrics_serverapp[num_rounds]
    summary = {
        "example": "fedavg_tabular",
        "rounds": num_rounds,
        "accuracy": round(float(final["accuracy"]), 4),
        "loss": round(float(final["loss"]), 4),
        "weights_sha256": checksum(params),
    }
    context.state["final_model"] = result.arrays
    context.state["summary"] = ConfigRecord(dict(summary))
    out_dir = os.environ.get("OUTPUT_DIR")
    if out_dir:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        np.savez(Path(out_dir) / "final_model.npz", weights=params[0], bias=params[1])
    print(f"{RESULT_PREFIX} {json.dumps(summary, sort_keys=True)}", flush=True)

"""ServerApp: FedAvg (or FedMedian); prints HOSTILE_RESULT with the final model."""

import json

import numpy as np
from flwr.app import ArrayRecord, Context
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg, FedMedian

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg = context.run_config
    n = int(cfg["min-nodes"])
    kind = FedMedian if cfg["strategy"] == "median" else FedAvg
    strategy = kind(min_train_nodes=n, min_evaluate_nodes=n, min_available_nodes=n)
    result = strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord(
            [np.zeros(int(cfg["model-size"]), dtype=np.float32)]
        ),
        num_rounds=int(cfg["num-server-rounds"]),
        timeout=float(cfg["round-timeout"]),
    )
    final = result.arrays.to_numpy_ndarrays()[0]
    out = {
        "shape": list(final.shape),
        "dtype": str(final.dtype),
        "finite": bool(np.isfinite(final).all()),
        "min": float(final.min()),
        "max": float(final.max()),
    }
    print("HOSTILE_RESULT " + json.dumps(out), flush=True)

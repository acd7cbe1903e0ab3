"""ServerApp: FedAvg; prints a TOY_RESULT line with the final mean."""

import json

import numpy as np
from flwr.app import ArrayRecord, Context
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg = context.run_config
    n = int(cfg["min-nodes"])
    strategy = FedAvg(min_train_nodes=n, min_evaluate_nodes=n, min_available_nodes=n)
    result = strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord(
            [np.zeros(int(cfg["model-size"]), dtype=np.float32)]
        ),
        num_rounds=int(cfg["num-server-rounds"]),
        timeout=float(cfg["round-timeout"]),
    )
    final = float(result.arrays.to_numpy_ndarrays()[0].mean())
    print("TOY_RESULT " + json.dumps({"final_mean": final}), flush=True)

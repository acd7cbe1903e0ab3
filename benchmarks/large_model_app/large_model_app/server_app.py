"""ServerApp: FedAvg, train only; prints one ``BENCH_TIMINGS {json}`` line.

Federated evaluation is off (``fraction_evaluate=0``) so a round is exactly one
broadcast of the model to every node and one model-sized reply from each: the
case issue 10 is about. ``evaluate_fn`` runs once before round 1 and once after
each round, so it marks round boundaries; at each mark we also note the bytes
this process has written so far (``wchar`` of ``/proc/self/io``, Linux only).
"""

import json
import resource
import sys
import time

import numpy as np
from flwr.app import ArrayRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

app = ServerApp()


def _wchar() -> int:
    """Bytes passed to write() by this process (all threads); -1 if unknown."""
    try:
        with open("/proc/self/io") as f:
            for line in f:
                if line.startswith("wchar:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return -1


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg = context.run_config
    n = int(cfg["min-nodes"])
    marks: list[tuple[float, int]] = []

    def mark(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        marks.append((time.perf_counter(), _wchar()))
        return None

    strategy = FedAvg(fraction_evaluate=0.0, min_train_nodes=n, min_available_nodes=n)
    result = strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord(
            [np.zeros(int(cfg["model-size"]), dtype=np.float32)]
        ),
        num_rounds=int(cfg["num-server-rounds"]),
        timeout=float(cfg["round-timeout"]),
        evaluate_fn=mark,
    )
    final = float(result.arrays.to_numpy_ndarrays()[0][:1000].mean())
    rounds = list(zip(marks[:-1], marks[1:], strict=True))
    report = {
        "final_mean": final,
        "round_seconds": [b[0] - a[0] for a, b in rounds],
        "round_write_bytes": [b[1] - a[1] if a[1] >= 0 else -1 for a, b in rounds],
        "peak_rss_mb": _peak_rss_mb(),
    }
    print("BENCH_TIMINGS " + json.dumps(report), flush=True)

"""Legacy ServerApp: ``server_fn`` returns a FedAvg strategy and a ServerConfig."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context
from flwr.common import (
    FitIns,
    GetPropertiesIns,
    NDArrays,
    Parameters,
    Scalar,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.server import ServerApp, ServerAppComponents, ServerConfig
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import FedAvg

from legacy_numpy.task import (
    SEED,
    accuracy,
    central_test_set,
    checksum,
    initial_params,
    log_loss,
)

RESULT_PREFIX = "SYFT_FLWR_RESULT"


def weighted_average(metrics: list[tuple[int, dict[str, Scalar]]]) -> dict[str, Scalar]:
    """Average client metrics weighted by their number of examples."""
    total = sum(n for n, _ in metrics)
    keys = metrics[0][1].keys() if metrics else []
    return {
        k: sum(n * float(m[k]) for n, m in metrics) / total  # type: ignore[arg-type]
        for k in keys
    }


class TabularFedAvg(FedAvg):
    """FedAvg that asks each client for its properties once, and reports the result.

    Parameters
    ----------
    context:
        The ServerApp context: the final model and summary go to its ``state``.
    num_rounds, round_timeout:
        As in the ``ServerConfig``.
    **kwargs:
        Passed to ``flwr.server.strategy.FedAvg``.
    """

    def __init__(
        self, context: Context, num_rounds: int, round_timeout: float, **kwargs: object
    ) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.context = context
        self.num_rounds = num_rounds
        self.round_timeout = round_timeout
        self.properties: dict[str, dict[str, Scalar]] = {}

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        instructions = super().configure_fit(server_round, parameters, client_manager)
        if server_round == 1:
            # A `get_properties` message per client, before the first round.
            for proxy, _ in instructions:
                res = proxy.get_properties(
                    GetPropertiesIns(config={}), self.round_timeout, server_round
                )
                self.properties[proxy.cid] = dict(res.properties)
        return instructions

    def evaluate(
        self, server_round: int, parameters: Parameters
    ) -> tuple[float, dict[str, Scalar]] | None:
        out = super().evaluate(server_round, parameters)
        if server_round == self.num_rounds and out is not None:
            self._finish(parameters_to_ndarrays(parameters), out[1])
        return out

    def _finish(self, params: NDArrays, metrics: dict[str, Scalar]) -> None:
        summary = {
            "example": "legacy_numpy",
            "rounds": self.num_rounds,
            "accuracy": round(float(metrics["accuracy"]), 4),  # type: ignore[arg-type]
            "loss": round(float(metrics["loss"]), 4),  # type: ignore[arg-type]
            "weights_sha256": checksum(list(params)),
            "clients": len(self.properties),
        }
        props = sorted(self.properties.values(), key=lambda p: int(p["partition-id"]))  # type: ignore[call-overload]
        self.context.state["client_properties"] = ConfigRecord(
            {
                "partition-id": [int(p["partition-id"]) for p in props],  # type: ignore[call-overload]
                "num-train": [int(p["num-train"]) for p in props],  # type: ignore[call-overload]
            }
        )
        self.context.state["final_model"] = ArrayRecord(list(params))
        self.context.state["summary"] = ConfigRecord(dict(summary))
        out_dir = os.environ.get("OUTPUT_DIR")
        if out_dir:
            Path(out_dir).mkdir(parents=True, exist_ok=True)
            np.savez(
                Path(out_dir) / "final_model.npz", weights=params[0], bias=params[1]
            )
        print(f"{RESULT_PREFIX} {json.dumps(summary, sort_keys=True)}", flush=True)


def server_fn(context: Context) -> ServerAppComponents:
    """Build the strategy and the server config from the run config."""
    rc = context.run_config
    num_rounds = int(rc["num-server-rounds"])
    round_timeout = float(rc["round-timeout"])
    min_nodes = int(rc.get("min-nodes", 2))
    x_test, y_test = central_test_set(int(rc.get("seed", SEED)))

    def fit_config(server_round: int) -> dict[str, Scalar]:
        return {
            "server-round": server_round,
            "local-epochs": int(rc["local-epochs"]),
            "learning-rate": float(rc["learning-rate"]),
            "batch-size": int(rc["batch-size"]),
        }

    def central_evaluate(
        server_round: int, parameters: NDArrays, config: dict[str, Scalar]
    ) -> tuple[float, dict[str, Scalar]]:
        params = list(parameters)
        loss = log_loss(params, x_test, y_test)
        return loss, {"accuracy": accuracy(params, x_test, y_test), "loss": loss}

    strategy = TabularFedAvg(
        context,
        num_rounds,
        round_timeout,
        fraction_fit=1.0,
        fraction_evaluate=1.0,
        min_fit_clients=min_nodes,
        min_evaluate_clients=min_nodes,
        min_available_clients=min_nodes,
        initial_parameters=ndarrays_to_parameters(initial_params()),
        on_fit_config_fn=fit_config,
        evaluate_fn=central_evaluate,
        fit_metrics_aggregation_fn=weighted_average,
        evaluate_metrics_aggregation_fn=weighted_average,
    )
    return ServerAppComponents(
        strategy=strategy,
        config=ServerConfig(num_rounds=num_rounds, round_timeout=round_timeout),
    )


app = ServerApp(server_fn=server_fn)

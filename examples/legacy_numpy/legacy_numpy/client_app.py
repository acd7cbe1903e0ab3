"""Legacy ClientApp: a ``NumPyClient`` built by ``client_fn``."""

from __future__ import annotations

from flwr.client import Client, NumPyClient
from flwr.clientapp import ClientApp
from flwr.common import Context, NDArrays, Scalar

from legacy_numpy.task import (
    N_FEATURES,
    SEED,
    Partition,
    accuracy,
    batch_rng,
    initial_params,
    load_local_data,
    log_loss,
    train,
)


class TabularClient(NumPyClient):
    """Logistic regression on one data owner's partition."""

    def __init__(self, data: Partition, partition_id: int, seed: int) -> None:
        self.data = data
        self.partition_id = partition_id
        self.seed = seed

    def get_properties(self, config: dict[str, Scalar]) -> dict[str, Scalar]:
        return {
            "partition-id": self.partition_id,
            "num-train": len(self.data.y_train),
            "num-test": len(self.data.y_test),
            "num-features": N_FEATURES,
        }

    def get_parameters(self, config: dict[str, Scalar]) -> NDArrays:
        return initial_params()

    def fit(
        self, parameters: NDArrays, config: dict[str, Scalar]
    ) -> tuple[NDArrays, int, dict[str, Scalar]]:
        new_params, losses = train(
            list(parameters),
            self.data.x_train,
            self.data.y_train,
            epochs=int(config["local-epochs"]),
            lr=float(config["learning-rate"]),
            batch_size=int(config["batch-size"]),
            rng=batch_rng(self.seed, self.partition_id, int(config["server-round"])),
        )
        return new_params, len(self.data.y_train), {"train_loss": losses[-1]}

    def evaluate(
        self, parameters: NDArrays, config: dict[str, Scalar]
    ) -> tuple[float, int, dict[str, Scalar]]:
        params = list(parameters)
        loss = log_loss(params, self.data.x_test, self.data.y_test)
        acc = accuracy(params, self.data.x_test, self.data.y_test)
        return loss, len(self.data.y_test), {"eval_acc": acc}


def client_fn(context: Context) -> Client:
    """Build this data owner's client (``DATA_DIR`` or a generated partition)."""
    seed = int(context.run_config.get("seed", SEED))
    data = load_local_data(dict(context.node_config), seed)
    pid = int(context.node_config.get("partition-id", 0))
    return TabularClient(data, pid, seed).to_client()


app = ClientApp(client_fn=client_fn)

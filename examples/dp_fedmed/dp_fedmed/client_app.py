"""Legacy ClientApp: DP-SGD in ``fit``, Dice in ``evaluate``, schema checks on both."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
from flwr.app import ConfigRecord, Context
from flwr.client import Client, NumPyClient
from flwr.clientapp import ClientApp
from flwr.common import NDArrays, Scalar

from dp_fedmed.schema import (
    EVALUATE_CONFIG,
    fit_config_schema,
    schema_errors,
)
from dp_fedmed.task import (
    SEED,
    Partition,
    dice,
    dp_sgd,
    load_local_data,
    log_loss,
    sample_epsilon,
)

log = logging.getLogger("dp_fedmed")

#: Name of the data owner's checkpoint record in ``Context.state``.
CHECKPOINT = "dp_checkpoint"


class DPFedMedClient(NumPyClient):
    """One hospital: trains with DP-SGD and keeps a local checkpoint per round."""

    def __init__(self, data: Partition, context: Context) -> None:
        self.data = data
        self.ctx = context
        rc = context.run_config
        self.seed = int(rc.get("seed", SEED))
        self.partition_id = int(context.node_config.get("partition-id", 0))
        self.lr = float(rc.get("learning-rate", 0.2))
        self.batch_size = int(rc.get("batch-size", 32))
        self.max_grad_norm = float(rc.get("max-grad-norm", 1.0))
        self.delta = float(rc.get("target-delta", 1e-5))
        self.checkpoint_path = str(rc.get("checkpoint-path", "checkpoints/last.json"))

    # -- checkpoints (mid-training resume) -------------------------------------
    def _checkpoint_file(self, path: str) -> Path | None:
        """``$OUTPUT_DIR/node_<id>/<path>``: one folder per data owner, even if
        several share an ``OUTPUT_DIR`` (as in a one-process simulation)."""
        out = os.environ.get("OUTPUT_DIR")
        return Path(out) / f"node_{self.ctx.node_id}" / path if out else None

    def _save_checkpoint(self, server_round: int, steps_total: int) -> None:
        state = {
            "path": self.checkpoint_path,
            "server_round": server_round,
            "steps_total": steps_total,
        }
        self.ctx.state[CHECKPOINT] = ConfigRecord(dict(state))
        f = self._checkpoint_file(self.checkpoint_path)
        if f is not None:
            f.parent.mkdir(parents=True, exist_ok=True)
            tmp = f.with_name(f.name + ".tmp")
            tmp.write_text(json.dumps(state))
            os.replace(tmp, f)  # never a half-written checkpoint

    def _load_checkpoint(self, path: str) -> dict[str, object]:
        f = self._checkpoint_file(path)
        if f is not None and f.is_file():
            return dict(json.loads(f.read_text()))
        rec = self.ctx.state.config_records.get(CHECKPOINT)
        if rec is None or rec.get("path") != path:
            raise FileNotFoundError(f"no local checkpoint at {path!r} to resume from")
        return dict(rec)

    # -- Flower --------------------------------------------------------------------
    def fit(
        self, parameters: NDArrays, config: dict[str, Scalar]
    ) -> tuple[NDArrays, int, dict[str, Scalar]]:
        errors = schema_errors(config, fit_config_schema(config))
        if errors:
            log.error(
                "fit config does not match the DP-FedMed schema: %s", "; ".join(errors)
            )
        server_round = int(config["server_round"])
        steps_before = 0
        if config.get("resume_from_checkpoint") is True:
            ckpt = self._load_checkpoint(str(config["checkpoint_path"]))
            steps_before = int(ckpt["steps_total"])  # type: ignore[call-overload]
        sigma = float(config["noise_multiplier"])
        res = dp_sgd(
            list(parameters),
            self.data.x_train,
            self.data.y_train,
            epochs=int(config["local_epochs"]),
            lr=self.lr,
            batch_size=self.batch_size,
            noise_multiplier=sigma,
            max_grad_norm=self.max_grad_norm,
            rng=np.random.default_rng([self.seed, self.partition_id, server_round]),
        )
        self._save_checkpoint(server_round, steps_before + res.steps)
        metrics: dict[str, Scalar] = {
            "loss": float(res.loss),
            "epsilon": float(
                sample_epsilon(res.sample_rate, res.steps, sigma, self.delta)
            ),
            "delta": float(self.delta),
            "sample_rate": float(res.sample_rate),
            "steps": int(res.steps),
            "types_ok": int(not errors),
        }
        return res.params, len(self.data.y_train), metrics

    def evaluate(
        self, parameters: NDArrays, config: dict[str, Scalar]
    ) -> tuple[float, int, dict[str, Scalar]]:
        errors = schema_errors(config, EVALUATE_CONFIG)
        if errors:
            log.error(
                "evaluate config does not match the schema: %s", "; ".join(errors)
            )
        params = list(parameters)
        loss = log_loss(params, self.data.x_test, self.data.y_test)
        return (
            float(loss),
            len(self.data.y_test),
            {"dice": float(dice(params, self.data.x_test, self.data.y_test))},
        )


def client_fn(context: Context) -> Client:
    seed = int(context.run_config.get("seed", SEED))
    return DPFedMedClient(
        load_local_data(dict(context.node_config), seed), context
    ).to_client()


app = ClientApp(client_fn=client_fn)

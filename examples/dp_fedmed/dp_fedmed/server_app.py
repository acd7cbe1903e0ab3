"""Legacy ServerApp: a FedAvg that configures DP rounds and accounts for privacy."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.common import (
    EvaluateRes,
    FitIns,
    FitRes,
    Parameters,
    Scalar,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.server import ServerApp, ServerAppComponents, ServerConfig
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import FedAvg

from dp_fedmed.schema import (
    AGGREGATE_FIT_METRICS,
    EVALUATE_METRICS,
    FIT_METRICS,
    schema_errors,
)
from dp_fedmed.task import SEED, gaussian_epsilon, initial_params

log = logging.getLogger("dp_fedmed")

RESULT_PREFIX = "SYFT_FLWR_RESULT"


def run_nonce(seed: int, server_round: int) -> bytes:
    """8 deterministic bytes per round (the schema's ``bytes`` value)."""
    return hashlib.sha256(f"dp-fedmed/{seed}/{server_round}".encode()).digest()[:8]


class DPFedMedStrategy(FedAvg):
    """FedAvg with DP-FedMed's round config, privacy accounting and schema checks.

    Parameters
    ----------
    context:
        The ServerApp context; the privacy history and summary go to its state.
    num_rounds:
        Rounds of the run (the summary is written after the last one).
    noise_multiplier, local_epochs:
        Sent to the data owners each round.
    resume_round, checkpoint_path:
        From ``resume_round`` on (if > 0), the data owners resume from their
        local checkpoint at ``checkpoint_path``.
    user_noise_multiplier, user_clip_norm, delta:
        Server-side user-level DP: each client update is clipped to
        ``user_clip_norm`` and Gaussian noise is added to their average; 0
        turns it off.
    seed:
        Seeds the server-side noise and the per-round nonce.
    **kwargs:
        Passed to ``flwr.server.strategy.FedAvg``.
    """

    def __init__(
        self,
        context: Context,
        *,
        num_rounds: int,
        noise_multiplier: float,
        local_epochs: int,
        resume_round: int,
        checkpoint_path: str,
        user_noise_multiplier: float,
        user_clip_norm: float,
        delta: float,
        seed: int,
        **kwargs: object,
    ) -> None:
        super().__init__(
            on_fit_config_fn=self.fit_config,
            on_evaluate_config_fn=self.evaluate_config,
            **kwargs,  # type: ignore[arg-type]
        )
        self.context = context
        self.num_rounds = num_rounds
        self.noise_multiplier = float(noise_multiplier)
        self.local_epochs = int(local_epochs)
        self.resume_round = int(resume_round)
        self.checkpoint_path = checkpoint_path
        self.user_noise_multiplier = float(user_noise_multiplier)
        self.user_clip_norm = float(user_clip_norm)
        self.delta = float(delta)
        self.seed = int(seed)
        self._global: list[np.ndarray] | None = None
        self.history: dict[str, list[float]] = {k: [] for k in AGGREGATE_FIT_METRICS}
        self.client_epsilons: list[list[float]] = []
        self.schema_problems: list[str] = []
        self.fit_metric_types: dict[str, str] = {}
        self.types_ok: list[int] = []
        self.dice: list[float] = []

    # -- configuration ---------------------------------------------------------
    def fit_config(self, server_round: int) -> dict[str, Scalar]:
        """Exactly the DP-FedMed keys, plus ``run_nonce`` (bytes)."""
        config: dict[str, Scalar] = {
            "noise_multiplier": self.noise_multiplier,
            "server_round": server_round,
            "local_epochs": self.local_epochs,
            "resume_from_checkpoint": 0 < self.resume_round <= server_round,
            "run_nonce": run_nonce(self.seed, server_round),
        }
        if config["resume_from_checkpoint"]:
            config["checkpoint_path"] = self.checkpoint_path
        return config

    def evaluate_config(self, server_round: int) -> dict[str, Scalar]:
        return {"server_round": server_round}

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        self._global = parameters_to_ndarrays(parameters)
        return super().configure_fit(server_round, parameters, client_manager)

    # -- aggregation -------------------------------------------------------------
    def _check(
        self, where: str, metrics: dict[str, Scalar], schema: dict[str, type]
    ) -> None:
        for problem in schema_errors(metrics, schema):
            self.schema_problems.append(f"{where}: {problem}")
            log.error("%s: %s", where, problem)

    def _user_level(
        self, server_round: int, results: list[tuple[ClientProxy, FitRes]]
    ) -> list[np.ndarray]:
        """Average of the clipped client updates plus Gaussian noise."""
        assert self._global is not None
        deltas = []
        for _, res in results:
            new = parameters_to_ndarrays(res.parameters)
            d = [n - g for n, g in zip(new, self._global, strict=True)]
            norm = float(np.sqrt(sum(float(np.sum(x * x)) for x in d)))
            scale = min(1.0, self.user_clip_norm / norm) if norm > 0 else 1.0
            deltas.append([x * scale for x in d])
        k = len(deltas)
        rng = np.random.default_rng([self.seed, server_round])
        std = self.user_noise_multiplier * self.user_clip_norm / k
        return [
            g + sum(d[i] for d in deltas) / k + rng.normal(0.0, std, size=g.shape)
            for i, g in enumerate(self._global)
        ]

    def aggregate_fit(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, FitRes]],
        failures: list[tuple[ClientProxy, FitRes] | BaseException],
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        if not results:
            return None, {}
        epsilons = []
        for proxy, res in results:
            self._check(
                f"round {server_round} fit metrics of {proxy.cid}",
                res.metrics,
                FIT_METRICS,
            )
            self.fit_metric_types.update(
                {k: type(v).__name__ for k, v in res.metrics.items()}
            )
            self.types_ok.append(int(res.metrics.get("types_ok", 0)))  # type: ignore[arg-type]
            epsilons.append(float(res.metrics["epsilon"]))  # type: ignore[arg-type]
        if self.user_noise_multiplier > 0:
            parameters: Parameters | None = ndarrays_to_parameters(
                self._user_level(server_round, results)
            )
            user_eps = gaussian_epsilon(self.user_noise_multiplier, self.delta)
        else:
            parameters, _ = super().aggregate_fit(server_round, results, failures)
            user_eps = 0.0
        round_eps = float(np.mean(epsilons))
        h = self.history
        metrics: dict[str, Scalar] = {
            "round_sample_epsilon": round_eps,
            "cumulative_sample_epsilon": (h["cumulative_sample_epsilon"] or [0.0])[-1]
            + round_eps,
            "cumulative_user_epsilon": (h["cumulative_user_epsilon"] or [0.0])[-1]
            + user_eps,
        }
        self._check(
            f"round {server_round} aggregated fit metrics",
            metrics,
            AGGREGATE_FIT_METRICS,
        )
        for k, v in metrics.items():
            h[k].append(float(v))  # type: ignore[arg-type]
        self.client_epsilons.append(epsilons)
        return parameters, metrics

    def aggregate_evaluate(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, EvaluateRes]],
        failures: list[tuple[ClientProxy, EvaluateRes] | BaseException],
    ) -> tuple[float | None, dict[str, Scalar]]:
        for proxy, res in results:
            self._check(
                f"round {server_round} evaluate metrics of {proxy.cid}",
                res.metrics,
                EVALUATE_METRICS,
            )
        loss, metrics = super().aggregate_evaluate(server_round, results, failures)
        self.dice.append(float(metrics.get("dice", 0.0)))  # type: ignore[arg-type]
        if server_round == self.num_rounds:
            self._finish()
        return loss, metrics

    def _finish(self) -> None:
        h = self.history
        summary: dict[str, object] = {
            "example": "dp_fedmed",
            "rounds": self.num_rounds,
            "dice": round(self.dice[-1], 4),
            "cumulative_sample_epsilon": round(h["cumulative_sample_epsilon"][-1], 6),
            "cumulative_user_epsilon": round(h["cumulative_user_epsilon"][-1], 6),
            "types_ok": all(self.types_ok) and not self.schema_problems,
        }
        self.context.state["privacy"] = MetricRecord(
            {
                **{k: list(v) for k, v in h.items()},
                "dice": list(self.dice),
                "types_ok": list(self.types_ok),
            }
        )
        self.context.state["fit_metric_types"] = ConfigRecord(
            dict(self.fit_metric_types)
        )
        self.context.state["schema_problems"] = ConfigRecord(
            {"problems": list(self.schema_problems) or [""]}
        )
        if self._global is not None:
            self.context.state["last_global_model"] = ArrayRecord(list(self._global))
        out_dir = os.environ.get("OUTPUT_DIR")
        if out_dir:
            Path(out_dir).mkdir(parents=True, exist_ok=True)
            (Path(out_dir) / "privacy.json").write_text(json.dumps(h, indent=2))
        print(f"{RESULT_PREFIX} {json.dumps(summary, sort_keys=True)}", flush=True)


def weighted_dice(metrics: list[tuple[int, dict[str, Scalar]]]) -> dict[str, Scalar]:
    """Dice averaged over the data owners, weighted by their test-set sizes."""
    total = sum(n for n, _ in metrics)
    score = sum(n * float(m["dice"]) for n, m in metrics)  # type: ignore[arg-type]
    return {"dice": score / total if total else 0.0}


def server_fn(context: Context) -> ServerAppComponents:
    rc = context.run_config
    num_rounds = int(rc["num-server-rounds"])
    min_nodes = int(rc.get("min-nodes", 2))
    strategy = DPFedMedStrategy(
        context,
        num_rounds=num_rounds,
        noise_multiplier=float(rc["noise-multiplier"]),
        local_epochs=int(rc["local-epochs"]),
        resume_round=int(rc.get("resume-round", 0)),
        checkpoint_path=str(rc.get("checkpoint-path", "checkpoints/last.json")),
        user_noise_multiplier=float(rc.get("user-noise-multiplier", 0.0)),
        user_clip_norm=float(rc.get("user-clip-norm", 1.0)),
        delta=float(rc.get("target-delta", 1e-5)),
        seed=int(rc.get("seed", SEED)),
        fraction_fit=1.0,
        fraction_evaluate=1.0,
        min_fit_clients=min_nodes,
        min_evaluate_clients=min_nodes,
        min_available_clients=min_nodes,
        initial_parameters=ndarrays_to_parameters(initial_params()),
        evaluate_metrics_aggregation_fn=weighted_dice,
    )
    return ServerAppComponents(
        strategy=strategy,
        config=ServerConfig(
            num_rounds=num_rounds, round_timeout=float(rc["round-timeout"])
        ),
    )


app = ServerApp(server_fn=server_fn)

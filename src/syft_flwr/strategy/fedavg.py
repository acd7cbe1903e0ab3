"""``FedAvgWithModelSaving``: legacy FedAvg that checkpoints the global model each round."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from flwr.common import Parameters, parameters_to_ndarrays
from flwr.server.strategy import FedAvg

__all__ = ["FedAvgWithModelSaving"]

logger = logging.getLogger("syft_flwr.strategy")


class FedAvgWithModelSaving(FedAvg):
    """Legacy ``FedAvg`` that saves the global parameters after every round.

    Files are ``<save_path>/parameters_round_<n>.safetensors`` with keys
    ``layer_<i>`` (as upstream), or ``.npz`` when ``safetensors`` is not installed.
    Round 0 is the initial model.

    Parameters
    ----------
    save_path:
        Output folder (created if missing); usually under ``OUTPUT_DIR``.
    *args, **kwargs:
        Passed to ``flwr.server.strategy.FedAvg``.
    """

    def __init__(self, save_path: str | Path, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.save_path = Path(save_path)
        self.save_path.mkdir(parents=True, exist_ok=True)

    def _save(self, server_round: int, parameters: Parameters) -> Path:
        arrays = {
            f"layer_{i}": a for i, a in enumerate(parameters_to_ndarrays(parameters))
        }
        try:
            from safetensors.numpy import save_file
        except ImportError:
            out = self.save_path / f"parameters_round_{server_round}.npz"
            np.savez(out, **arrays)
        else:
            out = self.save_path / f"parameters_round_{server_round}.safetensors"
            save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(out))
        logger.info("saved the global model of round %d to %s", server_round, out)
        return out

    def evaluate(self, server_round: int, parameters: Parameters) -> Any:
        self._save(server_round, parameters)
        return super().evaluate(server_round, parameters)

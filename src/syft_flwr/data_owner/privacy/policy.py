"""The data owner's privacy policy for one dataset, read strictly from a TOML file.

Example (every key outside these is refused, with the file and key named)::

    clip_norm = 1.0            # L2 norm a model update is clipped to
    noise_multiplier = 1.1     # Gaussian noise std = noise_multiplier * sensitivity
    epsilon = 8.0              # total budget of the dataset, across runs and projects
    delta = 1e-5
    dataset = "clinic-a"       # optional; default: the name of DATA_DIR, else "default"
    sampling_rate = 1.0        # optional; the site takes part in a round with this probability
    per_project_epsilon = 4.0  # optional cap per project

    [analytics.sensitivity]   # metrics (and analytics arrays) a reply may carry
    num-examples = 1.0
    count = 1.0

The researcher never sets any of it.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from syft_flwr.config import load_toml
from syft_flwr.errors import ConfigError

__all__ = ["ENV_PRIVACY_POLICY", "PrivacyPolicy"]

#: Where the data owner's policy file is named when no ``--privacy`` is given.
ENV_PRIVACY_POLICY = "SYFT_FLWR_PRIVACY_POLICY"

_REQUIRED = ("clip_norm", "noise_multiplier", "epsilon", "delta")
_OPTIONAL = ("dataset", "sampling_rate", "per_project_epsilon", "analytics")
_DATASET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True, kw_only=True)
class PrivacyPolicy:
    """Site-enforced differential privacy for one dataset (the data owner's choice).

    Parameters
    ----------
    clip_norm : float
        L2 norm the whole model update (reply arrays minus request arrays) is
        clipped to; > 0.
    noise_multiplier : float
        Gaussian noise std, in units of the sensitivity (``clip_norm`` for an
        update, the declared sensitivity for a metric); > 0.
    epsilon, delta : float
        The dataset's total budget: no reply leaves once answering it would
        spend more than ``epsilon`` at ``delta``.
    dataset : str
        The budget's name (one budget per dataset, whatever the project).
    sampling_rate : float
        Probability that the site's real update is used in a round (else a
        zero update is noised and sent, indistinguishably); in (0, 1].
    per_project_epsilon : float or None
        The most one project (one approved project hash) may spend.
    sensitivities : mapping of str to float
        Declared L2 sensitivity of each metric or analytics array a reply may
        carry, by name; a name without one is refused, never sent.
    source : str
        Where the policy was read from (for messages).
    """

    clip_norm: float
    noise_multiplier: float
    epsilon: float
    delta: float
    dataset: str = "default"
    sampling_rate: float = 1.0
    per_project_epsilon: float | None = None
    sensitivities: Mapping[str, float] = field(default_factory=dict)
    source: str = "<arguments>"

    def __post_init__(self) -> None:
        where = self.source
        _positive(where, "clip_norm", self.clip_norm)
        _positive(where, "noise_multiplier", self.noise_multiplier)
        _positive(where, "epsilon", self.epsilon)
        if not 0 < self.delta < 1:
            raise ConfigError(f"{where}: delta must be in (0, 1), got {self.delta!r}")
        if not 0 < self.sampling_rate <= 1:
            raise ConfigError(
                f"{where}: sampling_rate must be in (0, 1], got {self.sampling_rate!r}"
            )
        if self.per_project_epsilon is not None:
            _positive(where, "per_project_epsilon", self.per_project_epsilon)
        if not _DATASET_NAME.match(self.dataset):
            raise ConfigError(
                f"{where}: dataset must be 1-64 letters, digits, '.', '_' or '-', "
                f"got {self.dataset!r}"
            )
        for name, value in self.sensitivities.items():
            _positive(where, f"analytics.sensitivity.{name}", value)

    @classmethod
    def load(cls, path: str | Path, *, data_dir: str | None = None) -> PrivacyPolicy:
        """Read the policy file ``path`` (see the module docstring for its keys).

        Raises
        ------
        ConfigError
            Not TOML, a required key missing, an unknown key, or a bad value
            (the file and the key are named).
        """
        p = Path(path).expanduser()
        raw = load_toml(p)
        where = str(p)
        unknown = sorted(set(raw) - set(_REQUIRED) - set(_OPTIONAL))
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}")
        missing = [k for k in _REQUIRED if k not in raw]
        if missing:
            raise ConfigError(f"{where}: missing required key(s) {', '.join(missing)}")
        nums = {k: _number(where, k, raw[k]) for k in _REQUIRED}
        cap = raw.get("per_project_epsilon")
        dataset = raw.get("dataset", _default_dataset(data_dir))
        if not isinstance(dataset, str):
            raise ConfigError(f"{where}: dataset must be a string")
        return cls(
            clip_norm=nums["clip_norm"],
            noise_multiplier=nums["noise_multiplier"],
            epsilon=nums["epsilon"],
            delta=nums["delta"],
            dataset=dataset,
            sampling_rate=_number(where, "sampling_rate", raw.get("sampling_rate", 1)),
            per_project_epsilon=None
            if cap is None
            else _number(where, "per_project_epsilon", cap),
            sensitivities=_sensitivities(where, raw.get("analytics", {})),
            source=where,
        )

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, *, path: str | Path | None = None
    ) -> PrivacyPolicy | None:
        """The policy of ``path``, else of ``SYFT_FLWR_PRIVACY_POLICY``; ``None`` if neither.

        Explicit wins over the environment. ``DATA_DIR`` names the default dataset.
        """
        env = os.environ if env is None else env
        chosen = path if path is not None else env.get(ENV_PRIVACY_POLICY) or None
        if chosen is None:
            return None
        return cls.load(chosen, data_dir=env.get("DATA_DIR"))

    def describe(self) -> str:
        """One line for logs and ``status``."""
        cap = (
            ""
            if self.per_project_epsilon is None
            else f", at most epsilon {self.per_project_epsilon:g} per project"
        )
        return (
            f"dataset {self.dataset!r}: updates clipped to L2 norm {self.clip_norm:g}, "
            f"Gaussian noise x{self.noise_multiplier:g}, sampling rate "
            f"{self.sampling_rate:g}, budget epsilon {self.epsilon:g} at delta "
            f"{self.delta:g}{cap} (policy {self.source})"
        )


def _positive(where: str, key: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ConfigError(f"{where}: {key} must be a number > 0, got {value!r}")


def _number(where: str, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{where}: {key} must be a number, got {value!r}")
    return float(value)


def _sensitivities(where: str, table: Any) -> dict[str, float]:
    if not isinstance(table, dict) or set(table) - {"sensitivity"}:
        raise ConfigError(
            f"{where}: [analytics] may only hold 'sensitivity' (a table of numbers)"
        )
    sens = table.get("sensitivity", {})
    if not isinstance(sens, dict):
        raise ConfigError(f"{where}: analytics.sensitivity must be a table")
    return {
        str(k): _number(where, f"analytics.sensitivity.{k}", v) for k, v in sens.items()
    }


def _default_dataset(data_dir: str | None) -> str:
    """The name of the resolved ``DATA_DIR`` (made safe), else ``"default"``."""
    if not data_dir:
        return "default"
    name = re.sub(r"[^A-Za-z0-9._-]", "_", Path(data_dir).resolve().name)[:64]
    return name.lstrip("._-") or "default"

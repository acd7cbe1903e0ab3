"""The DP-FedMed message schemas, as exact Python types.

``configure_fit`` config (server -> client), ``fit`` metrics (client -> server),
``configure_evaluate`` config and ``evaluate`` metrics. ``run_nonce`` (bytes) is
the one key added to the published schema: it proves ``bytes`` values survive
the transport.
"""

from __future__ import annotations

from collections.abc import Mapping

FIT_CONFIG: dict[str, type] = {
    "noise_multiplier": float,
    "server_round": int,
    "local_epochs": int,
    "resume_from_checkpoint": bool,
    "run_nonce": bytes,
}
#: Sent only when ``resume_from_checkpoint`` is True.
FIT_CONFIG_RESUME: dict[str, type] = {"checkpoint_path": str}
FIT_METRICS: dict[str, type] = {
    "loss": float,
    "epsilon": float,
    "delta": float,
    "sample_rate": float,
    "steps": int,
    "types_ok": int,
}
EVALUATE_CONFIG: dict[str, type] = {"server_round": int}
EVALUATE_METRICS: dict[str, type] = {"dice": float}
AGGREGATE_FIT_METRICS: dict[str, type] = {
    "round_sample_epsilon": float,
    "cumulative_sample_epsilon": float,
    "cumulative_user_epsilon": float,
}


def schema_errors(
    values: Mapping[str, object], schema: Mapping[str, type]
) -> list[str]:
    """What is wrong with ``values`` against ``schema``; exact types (bool is not int)."""
    errors = [f"missing {k!r}" for k in schema if k not in values]
    errors += [f"unexpected {k!r}" for k in values if k not in schema]
    errors += [
        f"{k!r} is {type(values[k]).__name__}, expected {t.__name__}"
        for k, t in schema.items()
        if k in values and type(values[k]) is not t
    ]
    return errors


def fit_config_schema(config: Mapping[str, object]) -> dict[str, type]:
    """The fit-config schema that applies to ``config`` (resume adds a key)."""
    if config.get("resume_from_checkpoint") is True:
        return {**FIT_CONFIG, **FIT_CONFIG_RESUME}
    return dict(FIT_CONFIG)

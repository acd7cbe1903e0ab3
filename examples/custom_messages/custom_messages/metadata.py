"""``TrainProcessMetadata``: sent from ClientApps to the ServerApp as JSON bytes.

JSON, not pickle: unpickling bytes from another party can run arbitrary code.
Decoding checks every field's type, so a malformed payload is rejected, not
half-used.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

#: ConfigRecord name and key of the payload in a reply.
RECORD = "train_metadata"
KEY = "meta"


@dataclass(frozen=True)
class TrainProcessMetadata:
    """Metadata about the training process."""

    training_time: float
    converged: bool
    training_losses: dict[str, float] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        """UTF-8 JSON of the fields."""
        return json.dumps(asdict(self), sort_keys=True).encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes) -> TrainProcessMetadata:
        """Decode :meth:`to_bytes` output.

        Raises
        ------
        ValueError
            Not JSON, or fields missing, extra or of the wrong type.
        """
        obj = json.loads(data.decode("utf-8"))
        if not isinstance(obj, dict) or set(obj) != {
            "training_time",
            "converged",
            "training_losses",
        }:
            raise ValueError(f"not a TrainProcessMetadata: {obj!r}")
        t, conv, losses = obj["training_time"], obj["converged"], obj["training_losses"]
        if isinstance(t, bool) or not isinstance(t, int | float):
            raise ValueError("training_time must be a number")
        if not isinstance(conv, bool):
            raise ValueError("converged must be a bool")
        if not isinstance(losses, dict) or not all(
            isinstance(k, str)
            and isinstance(v, int | float)
            and not isinstance(v, bool)
            for k, v in losses.items()
        ):
            raise ValueError("training_losses must map str to float")
        return cls(float(t), conv, {k: float(v) for k, v in losses.items()})

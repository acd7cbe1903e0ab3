"""What holds in a contained worker: the layers, as reported to the data owner."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LAYERS", "Enforced", "Layer", "off"]

#: The layers, in the order they are reported.
LAYERS: tuple[str, ...] = ("network", "processes", "files", "memory", "limits")


@dataclass(frozen=True)
class Layer:
    """One layer: whether it holds, and how (or why not), in a data owner's words."""

    name: str
    enforced: bool
    how: str


@dataclass(frozen=True)
class Enforced:
    """What holds in a worker (or, from :func:`probe`, on this machine)."""

    level: str
    layers: tuple[Layer, ...]

    @property
    def missing(self) -> tuple[Layer, ...]:
        """The layers that do not hold."""
        return tuple(layer for layer in self.layers if not layer.enforced)

    def summary(self) -> str:
        """One line for the audit trail and ``status``: ``"full"`` or what is off."""
        if self.level != "full":
            return self.level
        gone = [layer.name for layer in self.missing]
        return "full" if not gone else "full except " + ", ".join(gone)

    def to_json(self) -> dict[str, object]:
        """A JSON-ready form (the worker sends it to the data owner's process)."""
        return {
            "level": self.level,
            "layers": [
                {"name": x.name, "enforced": x.enforced, "how": x.how}
                for x in self.layers
            ],
        }

    @classmethod
    def from_json(cls, data: object) -> Enforced:
        """Parse :meth:`to_json`'s form strictly (it comes from the worker).

        Raises
        ------
        ValueError
            Not that form, or a layer is unknown or missing.
        """
        if not isinstance(data, dict) or not isinstance(data.get("layers"), list):
            raise ValueError("not a containment report")
        level = data.get("level")
        if level not in ("full", "none"):
            raise ValueError("containment report with an unknown level")
        layers: list[Layer] = []
        for item in data["layers"]:
            if not isinstance(item, dict):
                raise ValueError("containment report with a malformed layer")
            name, enforced, how = (
                item.get("name"),
                item.get("enforced"),
                item.get("how"),
            )
            if name not in LAYERS or not isinstance(enforced, bool):
                raise ValueError("containment report with an unknown layer")
            layers.append(Layer(name, enforced, str(how)[:300]))
        if sorted(x.name for x in layers) != sorted(LAYERS):
            raise ValueError("containment report without every layer")
        return cls(str(level), tuple(layers))


def off(level: str = "none") -> Enforced:
    """The report of a worker run without sandbox layers (the data owner's choice)."""
    how = "off: the data owner chose --containment none"
    return Enforced(level, tuple(Layer(name, False, how) for name in LAYERS))

"""Why replies of Flower's legacy ClientApps are refused under a privacy policy.

A ``client_fn`` + ``NumPyClient`` app answers in Flower's legacy layout:
``get_properties`` and ``get_parameters`` messages (free-form properties, e.g. a
site's number of examples, and initial weights trained who knows how), and
``fitres.*`` / ``evaluateres.*`` records whose metrics sit in a ``ConfigRecord``
(strings and bytes allowed) next to a free-text status message. None of that
can be noised to a declared sensitivity, and the legacy Server asks sites for
properties before any round, so a policy could only ever half-serve such an app.
The refusal therefore names the legacy API and what to use instead, so the data
owner and the researcher both know what to change.
"""

from __future__ import annotations

from flwr.app import Message

__all__ = ["legacy_refusal"]

#: Message types only Flower's legacy API sends.
_LEGACY_TYPES = ("get_properties", "get_parameters")
#: Record-name prefixes of the legacy reply layout.
_LEGACY_PREFIXES = ("fitres.", "evaluateres.", "getpropertiesres.", "getparametersres.")

_USE_INSTEAD = (
    "Under a privacy policy the ClientApp must use Flower's Message API "
    "(@app.train(), @app.evaluate(), @app.query(); see examples/fedavg_tabular), "
    "and the ServerApp must not ask sites for properties or initial parameters. "
    "Nothing of this reply was sent and nothing was charged."
)


def legacy_refusal(msg: Message, reply: Message) -> str | None:
    """Why ``reply`` (to ``msg``) is refused as a legacy reply; ``None`` if it is not one."""
    kind = msg.metadata.message_type
    if kind in _LEGACY_TYPES:
        return (
            f"replies to {kind!r} messages come from Flower's legacy API (client_fn "
            "with a NumPyClient) and carry free-form values no noise can make "
            f"private. {_USE_INSTEAD}"
        )
    names = [
        *reply.content.array_records,
        *reply.content.metric_records,
        *reply.content.config_records,
    ]
    legacy = sorted(n for n in names if n.startswith(_LEGACY_PREFIXES))
    if not legacy:
        return None
    return (
        f"the reply is in Flower's legacy layout (records {', '.join(legacy)}, from a "
        "client_fn with a NumPyClient): its metrics are a ConfigRecord and its status "
        f"is free text, which no noise can make private. {_USE_INSTEAD}"
    )

"""The only module that touches Flower internals.

Flower keeps some Message metadata read-only (``message_id``, ``run_id``,
``src_node_id``) and writes it through ``metadata.__dict__`` itself; since
1.39 instruction Messages also read ``TaskIdentity``. Every such access lives
here, so a Flower upgrade breaks in one place (and ``tests/test_flwr_compat.py``
says so loudly).
"""

from __future__ import annotations

from typing import Any

from flwr.app import Message
from flwr.common.constant import SUPERLINK_NODE_ID

try:  # flwr >= 1.32
    from flwr.supercore.run import Run
except ImportError:  # pragma: no cover - older Flower
    from flwr.common.typing import Run  # type: ignore[no-redef,attr-defined]

try:  # flwr >= 1.39
    from flwr.supercore.task_identity import TaskIdentity
except ImportError:  # pragma: no cover - older Flower
    TaskIdentity = None  # type: ignore[assignment,misc]

__all__ = [
    "AGGREGATOR_NODE_ID",
    "Run",
    "SYSTEM_MESSAGE_TYPE",
    "empty_run",
    "run_copy",
    "set_message_id",
    "set_reply_to",
    "set_flower_log_colors",
    "set_routing",
    "set_task_identity",
]

#: Node id of the researcher side; Flower reserves 1 for the SuperLink.
AGGREGATOR_NODE_ID: int = SUPERLINK_NODE_ID
SYSTEM_MESSAGE_TYPE = "system"


def empty_run(run_id: int) -> Run:
    """Return a bare ``Run`` for ``run_id``."""
    return Run.create_empty(run_id)


def run_copy(run: Run) -> Run:
    """Return a copy of ``run`` (Flower's grids hand out copies too)."""
    return Run(**vars(run))


def set_task_identity(run_id: int, node_id: int = AGGREGATOR_NODE_ID) -> None:
    """Set Flower's process-wide ``TaskIdentity`` so instruction Messages can be built.

    Flower sets it in its own ``flwr-serverapp`` process; a custom runner must set
    it before calling a ServerApp, or the first ``Message(...)`` raises.
    """
    if TaskIdentity is None:  # pragma: no cover
        return
    TaskIdentity.task_id = 1
    TaskIdentity.run_id = run_id
    TaskIdentity.node_id = node_id


def task_identity_run_id() -> int | None:
    """Return ``TaskIdentity.run_id`` or ``None`` when unset."""
    if TaskIdentity is None:  # pragma: no cover
        return None
    return TaskIdentity._run_id  # noqa: SLF001 - reading avoids its RuntimeError


def set_message_id(message: Message, message_id: str) -> None:
    """Set the read-only ``metadata.message_id`` (as Flower's own grids do)."""
    message.metadata.__dict__["_message_id"] = message_id


def set_reply_to(message: Message, message_id: str) -> None:
    """Point a stored reply at a re-sent request (read-only ``reply_to_message_id``).

    Used when a reply is answered again from a checkpoint or a data owner's
    reply cache: the content is the stored one, the request id is the new one.
    """
    message.metadata.__dict__["_reply_to_message_id"] = message_id


def set_routing(message: Message, *, run_id: int, src_node_id: int) -> None:
    """Set the read-only ``run_id`` and ``src_node_id`` of an outgoing message."""
    md: Any = message.metadata
    md.__dict__["_run_id"] = run_id
    md.__dict__["_src_node_id"] = src_node_id


def set_flower_log_colors(colored: bool) -> None:
    """Turn the colour codes of Flower's console log lines on or off."""
    try:
        from flwr.common.logger import update_console_handler
    except ImportError:  # pragma: no cover - older Flower
        return
    update_console_handler(colored=colored)

"""Moved to :mod:`syft_flwr._ids`; this name keeps old imports working.

Emails, Flower node ids and run ids: a base utility of all three homes, not a
public face, so it left the package root (issue 25). The old module name is an
alias of the new module (same object), so attributes, private helpers and
monkeypatching behave as before.
"""

import sys
from typing import TYPE_CHECKING

from syft_flwr import _ids as _moved

if TYPE_CHECKING:  # what type checkers see here (they do not follow the alias)
    from syft_flwr._ids import AGGREGATOR_NODE_ID as AGGREGATOR_NODE_ID
    from syft_flwr._ids import new_run_id as new_run_id
    from syft_flwr._ids import node_id_for as node_id_for
    from syft_flwr._ids import node_id_map as node_id_map
    from syft_flwr._ids import normalize_email as normalize_email

sys.modules[__name__] = _moved

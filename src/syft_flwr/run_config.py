"""Moved to :mod:`syft_flwr._run_config`; this name keeps old imports working.

Strict run config parsing: a base utility of the project, the CLI and
simulations, not a public face, so it left the package root (issue 25). The old
module name is an alias of the new module (same object), so attributes, private
helpers and monkeypatching behave as before.
"""

import sys
from typing import TYPE_CHECKING

from syft_flwr import _run_config as _moved

if TYPE_CHECKING:  # what type checkers see here (they do not follow the alias)
    from syft_flwr._run_config import check_counts as check_counts
    from syft_flwr._run_config import flatten as flatten
    from syft_flwr._run_config import parse_overrides as parse_overrides

sys.modules[__name__] = _moved

"""Moved to :mod:`syft_flwr._logs`; this name keeps old imports working.

Logging set-up: a base utility of the runners and the CLI, not a public face, so
it left the package root (issue 25). The old module name is an alias of the new
module (same object), so attributes, private helpers and monkeypatching behave
as before.
"""

import sys
from typing import TYPE_CHECKING

from syft_flwr import _logs as _moved

if TYPE_CHECKING:  # what type checkers see here (they do not follow the alias)
    from syft_flwr._logs import FORMAT as FORMAT
    from syft_flwr._logs import PrintableFormatter as PrintableFormatter
    from syft_flwr._logs import setup_logging as setup_logging
    from syft_flwr._logs import use_color as use_color

sys.modules[__name__] = _moved

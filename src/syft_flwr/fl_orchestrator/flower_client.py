"""Moved to :mod:`syft_flwr.data_owner.runner`; this name keeps old imports working.

The runner re-exports :class:`~syft_flwr.data_owner.handler.ClientAppHandler`.

The old module name is an alias of the new module (same object), so
attributes, private helpers and monkeypatching behave as before.
"""

import sys

from syft_flwr.data_owner import runner as _moved

sys.modules[__name__] = _moved

"""Moved to :mod:`syft_flwr.data_owner.loop`; this name keeps old imports working.

The old module name is an alias of the new module (same object), so
attributes, private helpers and monkeypatching behave as before.
"""

import sys

from syft_flwr.data_owner import loop as _moved

sys.modules[__name__] = _moved

"""Moved to :mod:`syft_flwr.researcher.journal_seal`; this name keeps old imports working.

The old module name is an alias of the new module (same object), so
attributes, private helpers and monkeypatching behave as before.
"""

import sys

from syft_flwr.researcher import journal_seal as _moved

sys.modules[__name__] = _moved

"""Moved to :mod:`syft_flwr.researcher.reply_check`; this name keeps old imports working.

The old module name is an alias of the new module (same object), so
attributes, private helpers and monkeypatching behave as before.
"""

import sys

from syft_flwr.researcher import reply_check as _moved

sys.modules[__name__] = _moved

"""Moved to :mod:`syft_flwr.data_owner.reply_cache`; this name keeps old imports working.

Kept replies are the data owner's (issue 25: one home for them). The old
module name is an alias of the new module (same object), so attributes,
private helpers and monkeypatching behave as before.
"""

import sys
from typing import TYPE_CHECKING

from syft_flwr.data_owner import reply_cache as _moved

if TYPE_CHECKING:  # what type checkers see here (they do not follow the alias)
    from syft_flwr.data_owner.reply_cache import (
        DEFAULT_CACHED_REPLIES as DEFAULT_CACHED_REPLIES,
    )
    from syft_flwr.data_owner.reply_cache import ReplyCache as ReplyCache

sys.modules[__name__] = _moved

"""Names of environment variables, as upstream syft-flwr's ``syft_flwr.consts``.

They are read in one place, :meth:`syft_flwr.config.Settings.from_env`.
"""

from syft_flwr.config import (
    ENV_CHUNK_SIZE,
    ENV_ENCRYPTION_ENABLED,
    ENV_LOG_LEVEL,
    ENV_MSG_TIMEOUT,
    ENV_POLL_INTERVAL,
    ENV_REVEAL_ERRORS,
)

#: Upstream's one constant: the variable that turns encryption off ("false").
SYFT_FLWR_ENCRYPTION_ENABLED = ENV_ENCRYPTION_ENABLED
SYFT_FLWR_MSG_TIMEOUT = ENV_MSG_TIMEOUT
SYFT_FLWR_POLL_INTERVAL = ENV_POLL_INTERVAL
SYFT_FLWR_CHUNK_SIZE = ENV_CHUNK_SIZE
SYFT_FLWR_LOG_LEVEL = ENV_LOG_LEVEL
SYFT_FLWR_REVEAL_ERRORS = ENV_REVEAL_ERRORS

__all__ = [
    "SYFT_FLWR_CHUNK_SIZE",
    "SYFT_FLWR_ENCRYPTION_ENABLED",
    "SYFT_FLWR_LOG_LEVEL",
    "SYFT_FLWR_MSG_TIMEOUT",
    "SYFT_FLWR_POLL_INTERVAL",
    "SYFT_FLWR_REVEAL_ERRORS",
]

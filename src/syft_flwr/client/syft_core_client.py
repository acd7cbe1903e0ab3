"""SyftBox identity: a wrapper over ``syft_core.Client``."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from syft_core import Client

from syft_flwr._ids import normalize_email
from syft_flwr.client.protocol import SyftFlwrClient
from syft_flwr.errors import ConfigError

if TYPE_CHECKING:
    from syft_flwr.transports.base import Transport

__all__ = ["SyftCoreClient"]


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.@+-]", "_", name)


def config_source(filepath: str | Path | None = None) -> tuple[Path, str]:
    """Which SyftBox config is used, and who chose it (for error messages).

    ``filepath`` if given, else ``SYFTBOX_CLIENT_CONFIG_PATH``, else
    ``~/.syftbox/config.json``.
    """
    if filepath:
        return Path(filepath).expanduser(), "the config path given"
    env = os.environ.get("SYFTBOX_CLIENT_CONFIG_PATH")
    if env:
        return Path(env).expanduser(), "set by SYFTBOX_CLIENT_CONFIG_PATH"
    return Path("~/.syftbox/config.json").expanduser(), "the default location"


class SyftCoreClient(SyftFlwrClient):
    """A SyftBox user, loaded from a SyftBox client config.

    Parameters
    ----------
    client:
        A loaded ``syft_core.Client``.
    """

    transport_name = "syftbox"

    def __init__(self, client: Client) -> None:
        self._client = client
        self._email = normalize_email(str(client.email))

    @classmethod
    def load(cls, filepath: str | Path | None = None) -> SyftCoreClient:
        """Load from ``filepath``, else ``SYFTBOX_CLIENT_CONFIG_PATH``, else ``~/.syftbox/config.json``.

        Raises
        ------
        ConfigError
            If no readable SyftBox config is found.
        """
        path, source = config_source(filepath)
        if not path.is_file():
            # syft_core would say "not found at 'None'": name what the user set.
            raise ConfigError(f"no SyftBox config at {path} ({source})")
        try:
            return cls(Client.load(path))
        except Exception as exc:  # syft_core wraps everything in ClientConfigException
            raise ConfigError(
                f"cannot read the SyftBox config {path} ({source}): {exc}"
            ) from exc

    @property
    def email(self) -> str:
        return self._email

    @property
    def config_path(self) -> Path | None:
        return Path(self._client.config_path)

    @property
    def data_dir(self) -> Path:
        return Path(self._client.config.data_dir)

    @property
    def server_url(self) -> str:
        return str(self._client.config.server_url)

    @property
    def datasites(self) -> Path:
        return Path(self._client.datasites)

    def state_dir(self, app_name: str) -> Path:
        # Outside datasites/, so it is never synced to anyone; per email because
        # several identities may share one data dir (local simulation).
        return (
            self.data_dir / ".syft_flwr" / "state" / _safe(self.email) / _safe(app_name)
        )

    def get_client(self) -> Client:
        return self._client

    def make_transport(self) -> Transport:
        from syft_flwr.transports.syftbox import SyftBoxTransport

        return SyftBoxTransport(self.datasites, self.email)

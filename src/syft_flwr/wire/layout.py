"""Where a message, its chunks and shared attachment groups live (transport keys).

A request from ``S`` to ``R`` for ``<app>``/``<endpoint>`` lives at::

    R/app_data/<app>/rpc/<endpoint>/S/<id>.request     (+ <id>.request.<n>.chunk)
    R/app_data/<app>/rpc/<endpoint>/S/<id>.response    (+ <id>.response.<n>.chunk)

with attachments next to it (``<id>.<kind>.a<k>.<nnnnnn>.chunk``); a shared
attachment group of ``S`` lives at ``S/app_data/<app>/blobs/<group>/``.
"""

from __future__ import annotations

from dataclasses import dataclass

from syft_flwr.transports.base import join_key
from syft_flwr.wire.blobs import chunk_file_name
from syft_flwr.wire.envelope import Kind, chunk_name, head_name
from syft_flwr.wire.message import Incoming

__all__ = ["Layout", "attachment_chunk_name", "message_files"]


def attachment_chunk_name(message_id: str, kind: Kind, part: int, index: int) -> str:
    """File name of chunk ``index`` of attachment ``part`` stored next to a message.

    ``<id>.<kind>.a<part>.<nnnnnn>.chunk``: it starts with ``<id>.<kind>.``, so
    deleting a message's files deletes its attachments too.
    """
    return chunk_file_name(f"{message_id}.{kind}.a{part}", index)


def message_files(message: Incoming) -> tuple[str, ...]:
    """Names of the files stored next to ``message``'s head: chunks, attachments.

    Taken from its head (chunk count) and its attachment references (shared
    attachments live elsewhere and are not named).
    """
    head = message.head
    names = [chunk_name(head.id, head.kind, i) for i in range(len(head.chunks))]
    for k, ref in enumerate(message.attachments):
        if ref.shared is None:
            names.extend(
                attachment_chunk_name(head.id, head.kind, k, i)
                for i in range(ref.count)
            )
    return tuple(names)


@dataclass(frozen=True)
class Layout:
    """The transport keys of one app's exchanges."""

    #: The app folder name under ``app_data`` (may contain ``/``, not at its ends).
    app_name: str

    def url(self, owner: str, endpoint: str) -> str:
        return f"syft://{owner}/app_data/{self.app_name}/rpc/{endpoint.strip('/')}"

    def folder(self, owner: str, endpoint: str, peer: str) -> str:
        """Key of the folder holding ``peer``'s exchanges with ``owner``."""
        return join_key(
            owner, "app_data", self.app_name, "rpc", endpoint.strip("/"), peer
        )

    def endpoint_prefix(self, owner: str, endpoint: str) -> str:
        return join_key(owner, "app_data", self.app_name, "rpc", endpoint.strip("/"))

    def head_key(
        self, owner: str, endpoint: str, peer: str, mid: str, kind: Kind
    ) -> str:
        return f"{self.folder(owner, endpoint, peer)}/{head_name(mid, kind)}"

    def shared_base(self, owner: str) -> str:
        """Key of the folder holding ``owner``'s shared blob groups for this app."""
        return join_key(owner, "app_data", self.app_name, "blobs")

    def shared_folder(self, owner: str, group: str) -> str:
        """Key of ``owner``'s shared blob folder ``group`` for this app."""
        return join_key(owner, "app_data", self.app_name, "blobs", group)

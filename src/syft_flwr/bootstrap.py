"""Upstream-compatible module path: ``from syft_flwr.bootstrap import bootstrap``."""

from syft_flwr.project import bootstrap

__all__ = ["bootstrap"]

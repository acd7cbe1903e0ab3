"""Strategies kept for apps written for the upstream syft-flwr."""

from syft_flwr.strategy.fedavg import FedAvgWithModelSaving

__all__ = ["FedAvgWithModelSaving"]

"""syft_flwr.cli."""

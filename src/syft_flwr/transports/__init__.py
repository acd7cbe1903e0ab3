"""syft_flwr.transports."""

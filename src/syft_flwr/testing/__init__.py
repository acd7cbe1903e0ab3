"""syft_flwr.testing."""

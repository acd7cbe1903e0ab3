"""Toy Flower app for syft_flwr tests."""

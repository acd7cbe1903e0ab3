"""Flower app with one hostile data owner, for syft_flwr's reply_check tests."""

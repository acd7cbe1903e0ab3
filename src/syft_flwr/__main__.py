"""``python -m syft_flwr``."""

from syft_flwr.cli import main

main()

"""``python -m syft_flwr.cli``."""

from syft_flwr.cli import main

main()

"""syft_flwr.fl_orchestrator."""

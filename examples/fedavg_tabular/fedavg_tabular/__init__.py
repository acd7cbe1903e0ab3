"""fedavg_tabular: FedAvg of a numpy logistic regression (Flower Message API)."""

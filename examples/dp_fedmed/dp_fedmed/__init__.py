"""dp_fedmed: the DP-FedMed message schemas on a small numpy model (legacy API)."""

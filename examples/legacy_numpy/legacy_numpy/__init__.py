"""legacy_numpy: the fedavg_tabular task as a legacy NumPyClient + Server/Strategy app."""

"""fed_analytics: federated statistics with Flower ``query`` messages."""

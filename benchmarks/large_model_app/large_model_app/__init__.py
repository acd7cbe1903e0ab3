"""FedAvg over one large float32 array, for the large-model benchmark."""

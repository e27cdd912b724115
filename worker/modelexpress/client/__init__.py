"""Client side of the ModelExpress server: receiving a model's files into this machine's cache."""

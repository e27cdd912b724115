"""The inference side of ModelExpress's RL weight transfer: engine adapters, one package per engine."""

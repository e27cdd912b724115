"""The trainer's side of ModelExpress's RL weight transfer."""

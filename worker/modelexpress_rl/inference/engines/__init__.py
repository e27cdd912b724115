"""Inference engines that take new weight versions through ModelExpress."""

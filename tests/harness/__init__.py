"""Test harness on a real Kubernetes control plane: process management, clients, and a node helper."""

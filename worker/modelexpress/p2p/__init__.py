"""Peer-to-peer weight transfer: manifests, pooled tensor memory, the NIXL engine, WorkerService, pull.

Framework-agnostic: it moves named tensors between processes; the vLLM adapter sits on top.
"""

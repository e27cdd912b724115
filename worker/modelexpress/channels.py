"""Channels to a worker's WorkerService: TLS when a CA is given, else plaintext, the same for every caller.

`MX_WORKER_TLS_CA_FILE` (PEM) makes targets, artifact fetches and the operator dial WorkerServices
over TLS and verify them against that CA. Workers are dialled by pod IP, so the certificate is
checked for the name `MX_WORKER_TLS_SERVER_NAME` (`modelexpress-worker`), which every worker's
certificate carries, instead of the IP. Read when a channel is opened (the files may be rotated).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

from modelexpress import WORKER_TLS_SERVER_NAME

MESSAGE_LIMIT = 64 << 20


def _tls() -> tuple[grpc.ChannelCredentials, list[tuple[str, Any]]] | None:
    ca_file = os.environ.get("MX_WORKER_TLS_CA_FILE")
    if not ca_file:
        return None
    credentials = grpc.ssl_channel_credentials(root_certificates=Path(ca_file).read_bytes())
    name = os.environ.get("MX_WORKER_TLS_SERVER_NAME") or WORKER_TLS_SERVER_NAME
    return credentials, [("grpc.ssl_target_name_override", name), ("grpc.default_authority", name)]


def worker_channel(endpoint: str) -> grpc.Channel:
    """A channel to the WorkerService at `endpoint` (host:port)."""
    options: list[tuple[str, Any]] = [("grpc.max_receive_message_length", MESSAGE_LIMIT)]
    tls = _tls()
    if tls is None:
        return grpc.insecure_channel(endpoint, options=options)
    return grpc.secure_channel(endpoint, tls[0], options=options + tls[1])


def worker_aio_channel(endpoint: str) -> grpc.aio.Channel:
    """The same, for asyncio callers (the operator)."""
    tls = _tls()
    if tls is None:
        return grpc.aio.insecure_channel(endpoint)
    return grpc.aio.secure_channel(endpoint, tls[0], options=tls[1])

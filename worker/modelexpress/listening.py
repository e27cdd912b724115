"""Binding a gRPC server's port exclusively, with an error that names the address and the fix."""

from __future__ import annotations

from collections.abc import Callable

from modelexpress.errors import UserError


class PortUnavailableError(UserError, OSError):
    """The address cannot be listened on; the message names it and the fix (the CLI prints it as one line)."""


def bind_port(add_port: Callable[[], int], address: str, what: str) -> int:
    """The port `add_port()` bound (gRPC's add_*_port on a server made with `grpc.so_reuseport` 0); a port
    in use, or an address that is not this machine's, raises PortUnavailableError naming both."""
    try:
        port = add_port()
    except RuntimeError:  # grpcio raises where older releases returned 0
        port = 0
    if port == 0:
        raise PortUnavailableError(
            f"cannot listen on {address} for {what}: the port is in use (another process serves it) or the "
            "address is not one of this machine's; choose another port or host"
        )
    return port

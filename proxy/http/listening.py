"""The listening socket, bound before anything else starts, with an error a person can act on.

uvicorn binds its own socket and, when the port is taken, logs a bare
``[Errno 98] error while attempting to bind on address ...: address already in use`` and exits
1. Binding here first (as uvicorn would: ``SO_REUSEADDR``, inheritable for the workers) turns
that into one line saying which option moves the server elsewhere.
"""

from __future__ import annotations

import errno
import socket

from proxy.usage import UsageError

__all__ = ["bind_listening_socket"]


def bind_listening_socket(host: str, port: int, *, to_change: str) -> socket.socket:
    """A TCP socket bound to ``host:port`` (not yet listening), for uvicorn to serve on.

    ``to_change`` names how the user picks another port or address (``--port N or
    BASGUARD_PORT``), for the error.

    Raises
    ------
    UsageError
        The port is taken, needs privileges, or the address is not this machine's.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family=family, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UsageError(_bind_failure(host, port, exc, to_change)) from None
    sock.set_inheritable(True)  # the worker processes serve on it too
    return sock


def _bind_failure(host: str, port: int, exc: OSError, to_change: str) -> str:
    where = f"{host}:{port}"
    if exc.errno == errno.EADDRINUSE:
        return (f"port {port} is already in use on {host} (another basguard, or another "
                f"server: `ss -ltnp 'sport = :{port}'` names it); choose another port with "
                f"{to_change}")
    if exc.errno == errno.EACCES:
        return (f"no permission to listen on {where} (ports below 1024 need privileges); "
                f"choose another port with {to_change}")
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"cannot listen on {where}: {host} is not an address of this machine"
    return f"cannot listen on {where}: {exc.strerror or exc}"

"""HTTP/1.1 spoken over a plain socket, for what no client library sends: torn heads, slow
bodies, a server's answer read until it closes."""

from __future__ import annotations

import json
import socket
from typing import Any

__all__ = ["envelope", "read_until_closed"]


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (or resets) the connection."""
    received = b""
    while True:
        try:
            piece = sock.recv(65536)
        except ConnectionResetError:
            return received
        if not piece:
            return received
        received += piece


def envelope(response: bytes) -> tuple[int, dict[str, Any]]:
    """The status and the OpenAI error envelope's ``error`` of a raw error response."""
    head, _, body = response.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    assert b"content-type: application/json" in head.lower(), response
    document = json.loads(body)
    assert set(document["error"]) == {"message", "type", "param", "code"}
    return status, document["error"]

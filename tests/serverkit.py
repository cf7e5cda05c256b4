"""Helpers shared by the reference server's tests: raw HTTP on a socket, and a failing engine."""

from __future__ import annotations

import socket
from collections.abc import Iterator

from aivvm_magic.server import ChatRequest, Engine, ServerHandle

TIMEOUT = 10  # seconds, for every client call


def raw_exchange(srv: ServerHandle, request: bytes) -> bytes:
    """Send raw bytes on a fresh connection and read until the server closes it."""
    with socket.create_connection((srv.host, srv.port), timeout=TIMEOUT) as sock:
        sock.sendall(request)
        received = b""
        while data := sock.recv(65536):
            received += data
    return received


def split_response(raw: bytes) -> tuple[str, dict[str, str], bytes]:
    """Status line, lower-cased headers and body of a raw HTTP response."""
    head, _, payload = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return lines[0], headers, payload


def decode_chunked(payload: bytes) -> tuple[list[bytes], bool]:
    """Split a chunked body into its chunks; also say whether the terminator was there."""
    chunks = []
    while payload:
        size_line, _, payload = payload.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return chunks, payload == b"\r\n"
        chunks.append(payload[:size])
        assert payload[size : size + 2] == b"\r\n"
        payload = payload[size + 2 :]
    return chunks, False


class FailingEngine(Engine):
    """Fails after ``after`` pieces."""

    name = "failing"

    def __init__(self, after: int) -> None:
        self.after = after

    def generate(self, request: ChatRequest) -> Iterator[str]:
        for index in range(self.after):
            yield f"piece{index} "
        raise RuntimeError("the model fell over")

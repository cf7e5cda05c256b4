"""A bare HTTP server for benchmarks: answers any POST with a body written in timed pieces.

Run as a separate process (``python bench/chunkserver.py``; it prints ``PORT <n>``) so that the
client being measured does not share a GIL with it. Each request picks its behaviour from the
query string:

* ``framing``: ``chunked``, ``length`` or ``close``;
* ``mode=stamps&count=N&interval=S``: N pieces, one every S seconds, each carrying the
  ``time.monotonic_ns()`` of its write as ``<ns>|`` padded to a fixed size, so the reader can
  compute write-to-read latency on the same clock (without a query, ``$AIVVM_CHUNKS`` may
  give ``N,S``: for a client that cannot add one, such as the ``%%aivvm`` magic);
* ``mode=bulk&size=BYTES``: BYTES of UTF-8 text with multi-byte characters, written as fast as
  the socket takes them.
"""

from __future__ import annotations

import os
import socket
import socketserver
import sys
import time
from urllib.parse import parse_qs, urlsplit

STAMP_SIZE = 64
DEFAULT_STAMPS = (os.environ.get("AIVVM_CHUNKS") or "50,0.02").split(",")
BULK_PIECE = ("Grüße, 世界! Ünïcödé ✓ " * 2000).encode()  # about 56 KB, multi-byte


def stamp() -> bytes:
    """One timed piece: the write time in nanoseconds, then padding, ending in a newline."""
    head = f"{time.monotonic_ns()}|".encode()
    return head + b"." * (STAMP_SIZE - len(head) - 1) + b"\n"


class Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while True:
            line = self.rfile.readline()
            if not line:
                return
            target = line.split()[1].decode()
            length = 0
            keep_alive = True
            while True:
                header = self.rfile.readline()
                if header in (b"\r\n", b"\n", b""):
                    break
                name, _, value = header.decode().partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
                if name.strip().lower() == "connection" and "close" in value.lower():
                    keep_alive = False
            self.rfile.read(length)
            query = {k: v[0] for k, v in parse_qs(urlsplit(target).query).items()}
            if not self.respond(query) or not keep_alive:
                return

    def respond(self, q: dict[str, str]) -> bool:
        framing = q.get("framing", "chunked")
        if q.get("mode", "stamps") == "stamps":
            count = int(q.get("count", DEFAULT_STAMPS[0]))
            interval = float(q.get("interval", DEFAULT_STAMPS[1]))
            total = count * STAMP_SIZE
            pieces = (stamp for _ in range(count))
        else:
            total = int(q.get("size", str(50 * 1024 * 1024)))
            count = -(-total // len(BULK_PIECE))
            interval = 0.0
            pieces = (BULK_PIECE[: total - i * len(BULK_PIECE)] for i in range(count))
        headers = ["HTTP/1.1 200 OK", "Content-Type: text/plain; charset=utf-8"]
        if framing == "chunked":
            headers.append("Transfer-Encoding: chunked")
        elif framing == "length":
            headers.append(f"Content-Length: {total}")
        else:
            headers.append("Connection: close")
        out = self.connection
        out.sendall(("\r\n".join(headers) + "\r\n\r\n").encode())
        for i, make in enumerate(pieces):
            if i and interval:
                time.sleep(interval)
            data = make() if callable(make) else make
            if framing == "chunked":
                data = b"%x\r\n%s\r\n" % (len(data), data)
            out.sendall(data)
        if framing == "chunked":
            out.sendall(b"0\r\n\r\n")
        return framing != "close"


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def main() -> None:
    with Server(("127.0.0.1", 0), Handler) as server:
        print(f"PORT {server.server_address[1]}", flush=True)
        server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())

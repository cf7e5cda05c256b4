"""Pooled HTTP connections whose responses read the socket in large gulps.

``http.client`` reads a response through a ``BufferedReader`` of 8 KB. A fast reply comes in
chunks of tens of kilobytes, so each chunk took two or three socket reads: one to fill the
buffer for the chunk-size line, one to hand out what that read brought, one for the rest. With a
buffer as large as the largest read we hand on (``READ_AHEAD``), one socket read usually brings a
whole chunk, and more. It costs no latency: a socket read returns whatever has arrived, never
waiting to fill the buffer.

The classes plug into the public hooks of each library: ``HTTPConnection.response_class``
(http.client), ``ConnectionCls`` and ``PoolManager.pool_classes_by_scheme`` (urllib3),
``HTTPAdapter.init_poolmanager`` (requests).
"""

from __future__ import annotations

import http.client
import socket
from typing import Any

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

#: Bytes a response may read from its socket at once.
READ_AHEAD = 256 * 1024


class ReadAheadResponse(http.client.HTTPResponse):
    """An ``http.client`` response that reads its socket through a ``READ_AHEAD`` buffer."""

    def __init__(
        self,
        sock: socket.socket,
        debuglevel: int = 0,
        method: str | None = None,
        url: str | None = None,
    ) -> None:
        super().__init__(sock, debuglevel, method, url)
        # Nothing has been read yet (the status line is read later, by begin()), so the small
        # reader can go; closing it gives back its hold on the socket.
        small = self.fp
        self.fp = sock.makefile("rb", buffering=READ_AHEAD)
        small.close()


class ReadAheadHTTPConnection(HTTPConnection):
    response_class = ReadAheadResponse


class ReadAheadHTTPSConnection(HTTPSConnection):
    response_class = ReadAheadResponse


class ReadAheadHTTPConnectionPool(HTTPConnectionPool):
    ConnectionCls = ReadAheadHTTPConnection


class ReadAheadHTTPSConnectionPool(HTTPSConnectionPool):
    ConnectionCls = ReadAheadHTTPSConnection


class ReadAheadAdapter(HTTPAdapter):
    """A requests adapter whose direct connections (not proxied ones) read ahead."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": ReadAheadHTTPConnectionPool,
            "https": ReadAheadHTTPSConnectionPool,
        }

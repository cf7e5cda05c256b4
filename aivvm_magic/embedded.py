"""The reference server run inside the kernel when no base URL is configured.

Started lazily on first use, on 127.0.0.1 with an ephemeral port, and reached through the same
HTTP path as any other server, so the embedded default exercises exactly what a remote
deployment would. One server per process and engine; closed at interpreter exit.
"""

from __future__ import annotations

import atexit
import threading
from typing import Any

_lock = threading.Lock()
_servers: dict[tuple[str, tuple[tuple[str, Any], ...]], Any] = {}


def default_engine() -> str:
    """The engine the embedded server runs when none is configured."""
    return "echo"


def embedded_server(engine: str = "", **options: Any) -> Any:
    """The running embedded server for ``engine`` (started on first call)."""
    from .server import start_server

    name = engine or default_engine()
    key = (name, tuple(sorted(options.items())))
    with _lock:
        server = _servers.get(key)
        if server is None:
            server = start_server(engine=name, **options)
            _servers[key] = server
        return server


def describe(server: Any) -> str:
    """A plain description for status lines, e.g. ``embedded server, echo engine``."""
    return f"embedded server, {server.engine.name} engine"


def close_all() -> None:
    """Stop every embedded server (at exit, and in tests)."""
    with _lock:
        servers = list(_servers.values())
        _servers.clear()
    for server in servers:
        server.close()


atexit.register(close_all)

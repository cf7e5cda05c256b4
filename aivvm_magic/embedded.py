"""The reference server run inside the kernel when no base URL is configured.

Started lazily on first use, on 127.0.0.1 with an ephemeral port, and reached through the same
HTTP path as any other server, so the embedded default exercises exactly what a remote
deployment would. One server per process, engine and set of engine options; closed at
interpreter exit.

The default engine is ``local`` (a small GGUF model, see :mod:`aivvm_magic.server.local`) when
llama-cpp-python is installed and a model file can be found, and ``echo`` otherwise. Neither
check imports llama-cpp-python.
"""

from __future__ import annotations

import atexit
import os
import threading
from typing import Any

# The variable naming the local engine's model; spelled out so that no server module loads.
_MODEL_ENV = "AIVVM_LOCAL_MODEL"

__all__ = [
    "answered_by",
    "close_all",
    "default_engine",
    "describe",
    "embedded_server",
    "local_available",
    "local_unavailable_reason",
]

_lock = threading.Lock()
_ServerKey = tuple[str, tuple[tuple[str, Any], ...]]
_servers: dict[_ServerKey, Any] = {}
# The server each request without an engine got, by its options and $AIVVM_LOCAL_MODEL:
# choosing the default looks for the model file among installed packages, which every cell
# would otherwise repeat.
_defaults: dict[tuple[_ServerKey, str], _ServerKey] = {}


def local_unavailable_reason(model_path: str | os.PathLike[str] | None = None) -> str | None:
    """Why the ``local`` engine cannot run here, in one line; None when it can.

    The model is ``model_path`` if given, else ``$AIVVM_LOCAL_MODEL``, else the bundled
    SmolLM2. One that was asked for (either way) must exist: a requested model that is missing
    makes the local engine unavailable rather than quietly replaced.
    """
    # Imported here, like the server itself, so loading the extension stays cheap.
    from .server.local_model import ModelNotFound, find_model, llama_cpp_installed

    if not llama_cpp_installed():
        return 'llama-cpp-python is not installed (pip install "aivvm-magic[local]")'
    try:
        find_model(model_path)
    except ModelNotFound as error:
        return str(error)
    return None


def local_available(model_path: str | os.PathLike[str] | None = None) -> bool:
    """Whether the ``local`` engine can run: llama-cpp-python and a model file are both here."""
    return local_unavailable_reason(model_path) is None


def default_engine(model_path: str | os.PathLike[str] | None = None) -> str:
    """The engine the embedded server runs when none is configured: ``local`` or ``echo``.

    ``model_path`` is the model the local engine would be given, if one is configured.
    """
    return "local" if local_available(model_path) else "echo"


def embedded_server(engine: str = "", **options: Any) -> Any:
    """The running embedded server for ``engine`` and its ``options`` (started on first call).

    ``options`` go to the engine, e.g. ``embedded_server("local", model_path="/m/x.gguf")``.
    With no ``engine``, a ``model_path`` option means the local engine: a model asked for in
    the call is loaded or fails with a clear error, never swapped for the echo engine.
    """
    from .server import start_server

    requested = ((engine, tuple(sorted(options.items()))), os.environ.get(_MODEL_ENV, ""))
    with _lock:
        key = _defaults.get(requested) if not engine else requested[0]
        if key is None:
            name = "local" if options.get("model_path") else default_engine()
            key = _defaults[requested] = (name, requested[0][1])
        server = _servers.get(key)
        if server is None:
            server = start_server(engine=key[0], **options)
            _servers[key] = server
        return server


def describe(server: Any) -> str:
    """A plain description for status lines.

    E.g. ``embedded server, local engine (SmolLM2-135M-Instruct.Q4_1.gguf, 94 MB)`` or
    ``embedded server, echo engine``. When ``$AIVVM_LOCAL_MODEL`` asked for a model that cannot
    be used, an echo server says why.
    """
    from .server.local_model import MODEL_ENV

    engine = server.engine
    text = f"embedded server, {engine.name} engine"
    info = engine.describe()
    if "model" in info and "model_mb" in info:
        text += f" ({info['model']}, {info['model_mb']} MB)"
    elif engine.name == "echo" and os.environ.get(MODEL_ENV):
        reason = local_unavailable_reason()
        if reason:
            text += f" (local engine unavailable: {reason})"
    return text


def answered_by(url: str) -> str | None:
    """What answers at ``url`` (a model's name, or ``echo engine``) when it is an embedded
    server of this process; None for any other server."""
    with _lock:
        servers = list(_servers.values())
    for server in servers:
        if url.rstrip("/").removesuffix("/v1") == server.url.rstrip("/"):
            return str(server.engine.model_name)
    return None


def close_all() -> None:
    """Stop every embedded server (at exit, and in tests)."""
    with _lock:
        servers = list(_servers.values())
        _servers.clear()
        _defaults.clear()
    for server in servers:
        server.close()


atexit.register(close_all)

"""The reference Aivvm server: the chatbot-ui legacy ``/api/chat`` API on this machine.

The public Aivvm site is long gone, so tests, demos and notebooks talk to this server
instead. It speaks the wire protocol of :mod:`aivvm_magic.protocol` exactly, and the replies
come from an engine (:mod:`aivvm_magic.server.engines`): ``echo`` repeats the last user
message, which makes every reply predictable.

The modules, from the wire down: :mod:`.handler` (HTTP plumbing: connections, routing to an
API, bodies, answers), :mod:`.aivvm_api` and :mod:`.openai_api` (the two :class:`ChatAPI`
the server speaks, on the base in :mod:`.chat_api`), :mod:`.streaming` (the engine loop and
reply framing), :mod:`.exchange` (what the APIs and the loop use of a request), and
:mod:`.engine_base`, :mod:`.engines` and :mod:`.local` (what an engine is, the registry with
``echo``, and ``local``).

It uses the standard library only and imports neither IPython nor ipywidgets.

Examples
--------
In [1]: from aivvm_magic.server import start_server

In [2]: with start_server(delay=0.05) as srv:
   ...:     print(srv.url)
http://127.0.0.1:41235

From a shell: ``python -m aivvm_magic.server --port 8000``.

Two modes. ``strict``, the default, checks every request against the protocol and answers a
client's mistake with a 400 that says what it is; it also speaks OpenAI's API under ``/v1``.
``chatbot-ui`` answers as a deployed chatbot-ui server does (:mod:`.chatbot_ui_api`): nothing
checked, every failure a 500 with the reason in its status line, replies capped at 1,000
tokens. ``start_server(mode="chatbot-ui")``, or ``--mode chatbot-ui`` on the command line.
"""

from __future__ import annotations

import collections
import inspect
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

from .aivvm_api import BadRequest, parse_chat_request
from .chat_api import ChatAPI, redact_body
from .chatbot_ui_api import ChatbotUIAPI
from .engine_base import ChatRequest, Engine
from .engines import ENGINES, EchoEngine, make_engine, register_engine
from .handler import ChatRequestHandler, ChatServer, ServerStats

__all__ = [
    "ENGINES",
    "BadRequest",
    "ChatAPI",
    "ChatRequest",
    "ChatRequestHandler",
    "ChatServer",
    "ChatbotUIAPI",
    "EchoEngine",
    "Engine",
    "MODES",
    "ServerHandle",
    "ServerStats",
    "make_engine",
    "parse_chat_request",
    "redact_body",
    "register_engine",
    "start_server",
]

# How often the serving loop checks for shutdown; small, so close() returns promptly.
_POLL_INTERVAL = 0.05

#: The server's modes: ``strict`` (the Aivvm API with every request checked, and OpenAI's
#: under ``/v1``) and ``chatbot-ui`` (a deployed chatbot-ui server, as a client sees it).
MODES = ("strict", "chatbot-ui")


def _apis(mode: str) -> list[ChatAPI] | None:
    """The chat APIs a server in ``mode`` speaks (None: the plumbing's default, strict)."""
    if mode == "strict":
        return None
    if mode == "chatbot-ui":
        return [ChatbotUIAPI()]
    raise ValueError(f"unknown mode {mode!r}; choose one of: {', '.join(MODES)}")


class ServerHandle:
    """A running reference server: its address, engine and what it has seen.

    Returned by :func:`start_server`. ``close()`` stops it; so does leaving a ``with`` block.
    """

    def __init__(
        self, server: ChatServer, thread: threading.Thread, owns_engine: bool, mode: str = "strict"
    ) -> None:
        self._server = server
        #: How the server answers: ``strict`` or ``chatbot-ui`` (see :data:`MODES`).
        self.mode = mode
        self._thread = thread
        self._owns_engine = owns_engine
        self._close_lock = threading.Lock()
        self._closed = False
        address = server.server_address
        self.host: str = address[0]
        self.port: int = address[1]
        host = f"[{self.host}]" if ":" in self.host else self.host
        #: The base URL to give a client, e.g. ``http://127.0.0.1:54321``.
        self.url: str = f"http://{host}:{self.port}"

    @property
    def engine(self) -> Engine:
        """The engine that answers every chat request."""
        return self._server.engine

    @property
    def requests(self) -> collections.deque[dict[str, Any]]:
        """The last 1000 ``/api/chat`` bodies received, with the key redacted, newest last.

        ``key`` is ``""`` if the client sent an empty key and ``"<redacted>"`` otherwise.
        """
        return self._server.requests

    @property
    def stats(self) -> ServerStats:
        """Counters: connections, started, completed, disconnected, aborted, failed, rejected."""
        return self._server.stats

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called."""
        return self._closed

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
        """Poll ``predicate`` until true or ``timeout`` seconds pass; return its last value."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() >= deadline:
                return bool(predicate())
            time.sleep(0.01)
        return True

    def close(self) -> None:
        """Stop serving, end open streams and connections, and close the listening socket.

        Safe to call more than once.
        """
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        server = self._server
        # Streams check this flag between chunks; shutting the sockets wakes anything blocked.
        server.closing.set()
        server.shutdown()
        server.close_connections()
        server.server_close()
        self._thread.join(timeout=5)
        if self._owns_engine:
            server.engine.close()

    def __enter__(self) -> ServerHandle:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = " closed" if self._closed else ""
        mode = f" mode={self.mode!r}" if self.mode != "strict" else ""
        return f"<ServerHandle url={self.url!r} engine={self.engine.name!r}{mode}{state}>"


def _accepts(factory: Callable[..., Any], option: str) -> bool:
    """Whether ``factory`` can be called with the keyword argument ``option``."""
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(
        p.kind is inspect.Parameter.VAR_KEYWORD
        or (p.name == option and p.kind is not inspect.Parameter.POSITIONAL_ONLY)
        for p in parameters
    )


def start_server(
    engine: str | Engine = "echo",
    host: str = "127.0.0.1",
    port: int = 0,
    delay: float = 0.0,
    api_key: str | None = None,
    log: Callable[[str], None] | None = None,
    mode: str = "strict",
    **engine_options: Any,
) -> ServerHandle:
    """Start a reference server on a daemon thread; return once it is listening.

    ``engine`` is a registered engine name (built with ``engine_options``, plus ``delay``
    when the engine's factory takes one; other engines ignore it) or a ready :class:`Engine`,
    which takes neither. ``port=0`` picks a free port; the
    handle's ``url`` has the real one. With ``api_key`` set, a chat request whose ``key``
    differs is answered 401; without it any key is accepted. ``log``, if given, receives one
    line per request (method, path, status) and one per engine or internal error; bodies and
    keys are never logged. ``mode`` is ``strict`` or ``chatbot-ui`` (:data:`MODES`); in
    ``chatbot-ui`` mode a wrong ``api_key`` is that mode's 500, and an empty key is the
    server's own, as a deployment takes it.
    """
    apis = _apis(mode)
    if isinstance(engine, Engine):
        if engine_options or delay:
            raise ValueError("delay and engine options apply only when an engine is named")
        instance, owns_engine = engine, False
    else:
        factory = ENGINES.get(engine)
        options = dict(engine_options)
        # ``delay`` is a knob of test engines; one that streams at its own pace ignores it,
        # so callers can pass it whatever engine is configured.
        if factory is not None and _accepts(factory, "delay"):
            options["delay"] = delay
        instance, owns_engine = make_engine(engine, **options), True

    try:
        server = ChatServer((host, port), instance, api_key=api_key, log=log, apis=apis)
    except BaseException:
        if owns_engine:
            instance.close()
        raise
    # The socket is bound and listening once the server exists, so a client may connect as
    # soon as this function returns, even before the thread below is scheduled.
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": _POLL_INTERVAL},
        name=f"aivvm-server-{server.server_address[1]}",
        daemon=True,
    )
    thread.start()
    return ServerHandle(server, thread, owns_engine, mode)

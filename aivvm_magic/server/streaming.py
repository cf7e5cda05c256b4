"""Streaming a reply: the engine loop, and the framings and writers that carry its pieces.

One loop, :func:`run_engine`, serves every API: it pulls the engine's first piece before
committing to a 200, hands each piece to a :class:`Reply`, and closes the engine's generator
in ``finally``, so an engine stops as soon as its reader leaves or the server closes. An API
says how its pieces look on the wire with a :class:`ReplyFraming` (bare text for the Aivvm
API, server-sent events for OpenAI's); :class:`StreamedReply` writes them as chunked HTTP
through a :class:`FrameWriter`, and :class:`GatheredReply` answers one document at the end.

This module knows HTTP framing and sockets, not routes, bodies or errors: it works on an
:class:`~aivvm_magic.server.exchange.Exchange` and asks the API, through ``refuse``, for the
500 of an engine that fails before its reply begins.
"""

from __future__ import annotations

import queue
import re
import select
import socket
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from http import HTTPStatus
from typing import Any, Protocol

from .engine_base import FINISH_REASONS, ChatRequest
from .exchange import Exchange

__all__ = [
    "FrameWriter",
    "GatheredReply",
    "Reply",
    "ReplyDocument",
    "ReplyFraming",
    "StreamedReply",
    "peer_closed",
    "run_engine",
    "utf8",
]

# JSON may carry lone surrogates (escapes like \ud800), which have no UTF-8 form; like a
# JavaScript server, the reply shows each as U+FFFD rather than failing mid-stream.
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def utf8(text: str) -> bytes:
    """``text`` as UTF-8, each lone surrogate replaced by U+FFFD."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return _LONE_SURROGATE.sub("\ufffd", text).encode("utf-8")


def peer_closed(connection: socket.socket) -> bool:
    """Whether the client has closed its end, checked without waiting or consuming input."""
    try:
        # poll, unlike select, has no limit on descriptor numbers.
        if hasattr(select, "poll"):
            poller = select.poll()
            poller.register(connection, select.POLLIN)
            readable = bool(poller.poll(0))
        else:
            readable = bool(select.select([connection], [], [], 0)[0])
        # Readable with nothing to read is end of file; data (a pipelined request) stays unread.
        return readable and connection.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


class ReplyFraming(Protocol):
    """How a route wraps a reply it streams; the engine loop is the same for every route."""

    #: The ``Content-Type`` of the streamed body; None to send none.
    content_type: str | None

    def opening(self) -> str:
        """Text sent once the reply starts, before the first piece; ``""`` for none."""

    def piece(self, text: str) -> str:
        """The text that carries one piece of the reply."""

    def closing(self, finish_reason: str = "stop") -> str:
        """Text sent after the last piece; ``finish_reason`` is how the engine ended."""

    def failure(self) -> str | None:
        """Text sent when the engine fails mid-reply; None to cut the body short instead."""


class ReplyDocument(Protocol):
    """How a route answers a reply it does not stream: one document once the reply is whole."""

    def add(self, text: str) -> None:
        """Remember one piece of the reply."""

    def whole(self, finish_reason: str = "stop") -> Any:
        """The JSON document of the whole reply; ``finish_reason`` is how the engine ended."""


class _EnginePieces:
    """An engine's pieces, one ``next()`` at a time, and the finish reason it returned.

    An engine's ``generate`` may end with ``return "length"`` when it stopped at its token
    budget; anything else counts as ``"stop"``.
    """

    def __init__(self, generator: Iterator[str]) -> None:
        self._generator = generator
        self.finish_reason = "stop"

    def next(self) -> str | None:
        """The next piece, or None at the end."""
        try:
            return next(self._generator)
        except StopIteration as done:
            if done.value in FINISH_REASONS:
                self.finish_reason = done.value
            return None


class Reply(ABC):
    """Where the engine loop puts a reply's pieces: the client, now or once it is whole."""

    def __init__(self, handler: Exchange, refuse: Callable[[], None]) -> None:
        self.handler = handler
        #: Answers the route's 500, for an engine failure before anything was sent.
        self.refuse = refuse

    @abstractmethod
    def begin(self) -> None:
        """The engine produced its first piece: the reply starts."""

    @abstractmethod
    def piece(self, text: str) -> None:
        """One non-empty piece; raises OSError when the client has gone away."""

    @abstractmethod
    def end(self, finish_reason: str = "stop") -> None:
        """The engine finished (``stop``, or ``length`` at its token budget): complete the
        answer."""

    @abstractmethod
    def fail(self) -> None:
        """The engine failed after :meth:`begin`: end the answer so that the failure shows."""

    def release(self) -> None:  # noqa: B027 - optional hook, nothing to do by default
        """However the reply ended, free what it holds (called last, once)."""


class FrameWriter:
    """Sends a streamed reply's bytes from a thread of its own, all that queued up at once.

    The socket has Nagle's algorithm off, so every write leaves at once: a slow engine's
    tokens reach the client without delay. A fast engine can yield thousands of pieces a
    second, though, and a syscall and a packet for each would cost the reader as much as the
    server (more when both share a process and its GIL). So while one write is under way the
    next pieces queue up, and the following write sends them all together, still framed one
    by one: what the engine is doing sets the batching, never a timer.

    At most ``MAX_QUEUED`` bytes wait in the queue: beyond that the engine waits too, so a
    client that stops reading holds the server's memory (and the local model) no more than a
    blocking write would.
    """

    MAX_QUEUED = 1 << 20

    def __init__(self, wfile: Any) -> None:
        self._wfile = wfile
        self._queue: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._error: OSError | None = None
        # Each counter has one writer thread, so neither needs a lock.
        self._queued = 0
        self._written = 0
        self._room = threading.Event()
        self._thread = threading.Thread(target=self._run, name="aivvm-reply-writer", daemon=True)
        self._thread.start()

    def write(self, data: bytes) -> None:
        """Queue ``data``; raises the OSError of an earlier write (the client has gone)."""
        if self._error is not None:
            raise self._error
        self._queued += len(data)
        self._queue.put(data)
        while self._queued - self._written > self.MAX_QUEUED and self._error is None:
            self._room.clear()
            # Checked again after clearing: the writer may have made room meanwhile.
            if self._queued - self._written > self.MAX_QUEUED and self._error is None:
                self._room.wait()
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        """Wait until everything queued is written; raise the OSError if that failed."""
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while batch[-1] is not None:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            done = batch[-1] is None
            data = b"".join(batch[:-1] if done else batch)  # type: ignore[arg-type]
            try:
                if data:
                    self._wfile.write(data)
            except OSError as error:
                self._error = error
                return
            finally:
                self._written += len(data)
                self._room.set()
            if done:
                return


class StreamedReply(Reply):
    """Writes each piece to the client as soon as the engine yields it, framed by ``framing``."""

    def __init__(
        self, handler: Exchange, framing: ReplyFraming, refuse: Callable[[], None]
    ) -> None:
        super().__init__(handler, refuse)
        self.framing = framing
        self._writer: FrameWriter | None = None
        # HTTP/1.0 clients do not know chunked framing; for them the end of the body is the
        # end of the connection, which both APIs allow.
        self.chunked = handler.request_version != "HTTP/1.0"

    def begin(self) -> None:
        handler = self.handler
        handler.send_response(HTTPStatus.OK)
        if self.framing.content_type is not None:
            handler.send_header("Content-Type", self.framing.content_type)
        handler.send_header("Cache-Control", "no-cache")
        for name, value in getattr(self.framing, "headers", {}).items():
            handler.send_header(name, value)
        if self.chunked:
            handler.send_header("Transfer-Encoding", "chunked")
        else:
            handler.send_header("Connection", "close")
            handler.close_connection = True
        handler.end_headers()
        self._writer = FrameWriter(handler.wfile)
        self._write(self.framing.opening())

    def piece(self, text: str) -> None:
        self._write(self.framing.piece(text))

    def end(self, finish_reason: str = "stop") -> None:
        self._write(self.framing.closing(finish_reason))
        self._terminate()

    def fail(self) -> None:
        text = self.framing.failure()
        if text is not None:
            # An in-band error ends a well-framed body, so clients read the error itself
            # rather than a transport error; the route's framing marks the reply as cut.
            self._write(text)
            self._terminate()

    def release(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            try:
                writer.close()
            except OSError:
                pass  # The reply already ended as disconnected.

    def _write(self, text: str) -> None:
        if not text:
            return  # A zero-length chunk would end the body.
        data = utf8(text)
        assert self._writer is not None
        self._writer.write(b"%X\r\n%s\r\n" % (len(data), data) if self.chunked else data)

    def _terminate(self) -> None:
        assert self._writer is not None
        if self.chunked:
            self._writer.write(b"0\r\n\r\n")
        # The answer is over once it is on the wire: the next request on this connection
        # must not overtake it, and the stats must not count it done before then.
        writer, self._writer = self._writer, None
        writer.close()


class GatheredReply(Reply):
    """Gathers the pieces and answers one document (``chat.completion``) once they are all in."""

    def __init__(
        self,
        handler: Exchange,
        document: ReplyDocument,
        refuse: Callable[[], None],
    ) -> None:
        super().__init__(handler, refuse)
        self.document = document

    def begin(self) -> None:
        pass  # Nothing goes out until the reply is whole.

    def piece(self, text: str) -> None:
        # Nothing is written until the end, so a write cannot reveal a vanished client; look
        # at the socket instead, so that the engine stops working for nobody.
        if peer_closed(self.handler.connection):
            raise ConnectionAbortedError("the client closed the connection")
        self.document.add(text)

    def end(self, finish_reason: str = "stop") -> None:
        self.handler.send_json(self.document.whole(finish_reason))

    def fail(self) -> None:
        self.refuse()  # Nothing was sent yet, so the failure can still be a plain 500.


def run_engine(handler: Exchange, request: ChatRequest, reply: Reply) -> None:
    """Run the engine on ``request`` and hand its pieces to ``reply``; used by every API.

    Updates ``server.stats``. The engine's generator is closed however the reply ends, so
    an engine stops working as soon as its reader is gone or the server is closing.
    """
    server = handler.server
    stats = server.stats
    # Pull the first chunk before committing to a 200, so an engine that fails at once
    # (a model that will not load, say) is a plain 500 the client can report.
    try:
        generator = iter(server.engine.generate(request))
        pieces = _EnginePieces(generator)
        first = pieces.next()
    except Exception as error:
        _engine_failed(handler, error)
        stats.increment("failed")
        reply.refuse()
        return
    try:
        stats.increment("started")
        outcome = _pump(handler, first, pieces, reply)
        stats.increment(outcome)
        if outcome != "completed":
            # The client cannot tell where this reply ends, so the connection is over.
            handler.close_connection = True
    finally:
        try:
            close = getattr(generator, "close", None)
            if close is not None:
                close()
        finally:
            # Even when the engine's own clean-up fails: else its writer waits forever.
            reply.release()


def _pump(handler: Exchange, first: str | None, pieces: _EnginePieces, reply: Reply) -> str:
    """Move pieces to ``reply``; return the stats counter that names how the reply ended."""
    try:
        reply.begin()
        chunk = first
        while chunk is not None:
            if handler.server.closing.is_set():
                return "aborted"
            if chunk:
                reply.piece(chunk)
            try:
                chunk = pieces.next()
            except Exception as error:
                _engine_failed(handler, error)
                try:
                    reply.fail()
                except OSError:
                    pass  # The client left too; the engine's failure is what happened.
                return "failed"
        reply.end(pieces.finish_reason)
        return "completed"
    except OSError:
        # BrokenPipeError, ConnectionResetError and friends: the reader is gone (or the
        # server shut the socket while closing). The caller closes the generator.
        return "aborted" if handler.server.closing.is_set() else "disconnected"


def _engine_failed(handler: Exchange, error: Exception) -> None:
    log = handler.server.log
    if log is not None:
        log(f"engine error: {type(error).__name__}: {error}")

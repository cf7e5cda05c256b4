"""The lazy streaming reply a provider returns for ``stream=True``."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from types import TracebackType
from typing import Any

from ..protocol import near_token_cap
from ..reply_buffer import ReplyBuffer
from ..token_usage import TokenUsage
from .errors import EmptyReply, IncompleteReply


class StreamControl:
    """Lets another thread stop a stream that is blocked reading from the network.

    Closing a socket does not wake a thread blocked in ``recv`` on it; shutting it down does.
    The provider attaches its response here as soon as it has one.
    """

    def __init__(self) -> None:
        self.stopped = threading.Event()
        #: How the server said the reply ended (OpenAI's ``finish_reason``: ``"stop"``,
        #: ``"length"``, ...); None when its protocol does not say, as Aivvm's does not.
        self.finish_reason: str | None = None
        #: The tokens the server says the request and its reply took; None when it does not
        #: say (the Aivvm protocol never does).
        self.usage: TokenUsage | None = None
        #: What the server says answers (its ``X-Aivvm-Model`` header); None if it does not.
        self.answered_by: str | None = None
        #: Where the server says the reply's ending can be read once the body is over (its
        #: ``X-Aivvm-Reply-End`` header, an extension of our reference server); else None.
        self.ending_url: str | None = None
        self._lock = threading.Lock()
        self._response: Any = None

    def attach(self, response: Any) -> None:
        """Remember ``response``; shut it down at once if a stop came first."""
        with self._lock:
            self._response = response
        if self.stopped.is_set():
            self._shutdown()

    def stop(self) -> None:
        """Make the blocked read return now; the reading thread raises ``IncompleteReply``."""
        self.stopped.set()
        self._shutdown()

    def _shutdown(self) -> None:
        with self._lock:
            response = self._response
        if response is not None:
            try:
                response.raw.shutdown()
            except (OSError, AttributeError):
                pass


class StreamingReply(Iterator[str]):
    """An iterator of text chunks that remembers what it has yielded and whether it finished.

    What it yields is kept in its :attr:`buffer`, a
    :class:`~aivvm_magic.reply_buffer.ReplyBuffer` that may be handed in, so that the views of
    the reply read the one copy of its text. Nothing is sent until the first ``next()``.
    ``close()`` (or leaving a ``with`` block, or a ``break`` followed by garbage collection)
    closes the HTTP stream at once. If the stream is cut short, the :class:`IncompleteReply`
    raised carries the text received so far.

    Examples
    --------
    ::

        In [1]: reply = Aivvm.create_completion("", [{"role": "user", "content": "Hi"}], True)
        In [2]: for chunk in reply:
           ...:     print(chunk, end="")
        In [3]: reply.complete, reply.text()
    """

    def __init__(
        self,
        chunks: Iterator[str],
        control: StreamControl | None = None,
        buffer: ReplyBuffer | None = None,
    ) -> None:
        self._chunks = chunks
        self.control = control or StreamControl()
        #: The text received so far.
        self.buffer = buffer if buffer is not None else ReplyBuffer()
        self._keep = self.buffer.append
        self._chunks_before = self.buffer.chunks
        self.complete = False
        self.closed = False
        #: Why a body with no text is no reply, for a protocol where it never is one (the
        #: stream then ends in :class:`EmptyReply`); None where an empty reply is a reply.
        self.empty_reply: str | None = None
        #: The most tokens the server lets a reply have, where it caps them unasked.
        self.token_cap: int | None = None

    def __iter__(self) -> StreamingReply:
        return self

    def __next__(self) -> str:
        if self.closed:
            raise StopIteration
        try:
            chunk = next(self._chunks)
        except StopIteration:
            self.closed = True
            if self.empty_reply is not None and self.buffer.chunks == self._chunks_before:
                raise EmptyReply(self.empty_reply) from None
            self.complete = True
            raise
        except IncompleteReply as exc:
            self.closed = True
            exc.partial = self.partial
            raise
        except BaseException:
            self.close()
            raise
        self._keep(chunk)
        return chunk

    @property
    def finish_reason(self) -> str | None:
        """How the server said the reply ended (``"length"``: cut at the model's token limit);
        None when it did not say."""
        return self.control.finish_reason

    @property
    def usage(self) -> TokenUsage | None:
        """The tokens the server counted, where it says (an OpenAI stream's last chunk)."""
        return self.control.usage

    @property
    def answered_by(self) -> str | None:
        """What the server says answers (a model's name), where it says; else None."""
        return self.control.answered_by

    @property
    def near_cap(self) -> bool:
        """Whether the complete reply is about :attr:`token_cap` tokens long: the server may
        have stopped it there, though it did not say (a rough count, see
        :func:`~aivvm_magic.protocol.near_token_cap`)."""
        return (
            self.complete
            and self.token_cap is not None
            and near_token_cap(self.partial, self.token_cap)
        )

    @property
    def partial(self) -> str:
        """The text received so far (all of it once ``complete``)."""
        return self.buffer.text()

    def text(self) -> str:
        """Read the rest of the stream and return the whole reply."""
        for _ in self:
            pass
        return self.partial

    def stop(self) -> None:
        """From any thread: end the stream now; the reader gets ``IncompleteReply("stopped")``."""
        self.control.stop()

    def close(self) -> None:
        """Stop reading and release the connection now (from the reading thread)."""
        if not self.closed:
            self.closed = True
            self._chunks.close()  # type: ignore[attr-defined]

    def __enter__(self) -> StreamingReply:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "complete" if self.complete else ("closed" if self.closed else "streaming")
        return f"<StreamingReply {state}, {len(self.partial):,} characters>"

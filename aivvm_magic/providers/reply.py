"""The lazy streaming reply a provider returns for ``stream=True``."""

from __future__ import annotations

from collections.abc import Iterator
from types import TracebackType

from .errors import IncompleteReply


class StreamingReply(Iterator[str]):
    """An iterator of text chunks that remembers what it has yielded and whether it finished.

    Nothing is sent until the first ``next()``. ``close()`` (or leaving a ``with`` block, or a
    ``break`` followed by garbage collection) closes the HTTP stream at once. If the stream is
    cut short, the :class:`IncompleteReply` raised carries the text received so far.

    Examples
    --------
    ::

        In [1]: reply = Aivvm.create_completion("", [{"role": "user", "content": "Hi"}], True)
        In [2]: for chunk in reply:
           ...:     print(chunk, end="")
        In [3]: reply.complete, reply.text()
    """

    def __init__(self, chunks: Iterator[str]) -> None:
        self._chunks = chunks
        self._parts: list[str] = []
        self.complete = False
        self.closed = False

    def __iter__(self) -> StreamingReply:
        return self

    def __next__(self) -> str:
        if self.closed:
            raise StopIteration
        try:
            chunk = next(self._chunks)
        except StopIteration:
            self.complete = True
            self.closed = True
            raise
        except IncompleteReply as exc:
            self.closed = True
            exc.partial = self.partial
            raise
        except BaseException:
            self.close()
            raise
        self._parts.append(chunk)
        return chunk

    @property
    def partial(self) -> str:
        """The text received so far (all of it once ``complete``)."""
        if len(self._parts) > 1:
            self._parts[:] = ["".join(self._parts)]
        return self._parts[0] if self._parts else ""

    def text(self) -> str:
        """Read the rest of the stream and return the whole reply."""
        for _ in self:
            pass
        return self.partial

    def close(self) -> None:
        """Stop reading and release the connection now."""
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

"""Server-sent events from text chunks: the text-to-events step of the streaming ladder.

An event's lines can be split across network reads anywhere, even inside ``data:`` or between
``\\r`` and ``\\n``; the parser keeps the unfinished line and yields each event once the blank
line that ends it has arrived. Only the ``data`` field matters to the chat APIs, so events are
yielded as their data (several ``data:`` lines joined by newlines).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator


class SSEParser:
    """Feed text with ``feed``; it returns the data of every event completed by that text."""

    def __init__(self) -> None:
        self._pending = ""
        self._data: list[str] = []
        self._has_data = False

    def feed(self, text: str) -> list[str]:
        """The data of each event ``text`` completes, in order."""
        events: list[str] = []
        buffer = self._pending + text
        start = 0
        while True:
            end = _line_end(buffer, start)
            if end is None:
                break
            line_end, next_start = end
            self._line(buffer[start:line_end], events)
            start = next_start
        self._pending = buffer[start:]
        return events

    def close(self) -> list[str]:
        """The event a final lone ``\r`` completes, if any; an unterminated event is dropped."""
        # The spec drops an event not ended by a blank line; a caller checking for a final
        # marker (OpenAI's [DONE]) then sees the stream as cut short, which it is.
        events: list[str] = []
        if self._pending.endswith("\r"):
            self._line(self._pending[:-1], events)
        self._pending = ""
        self._data = []
        self._has_data = False
        return events

    def _line(self, line: str, events: list[str]) -> None:
        if not line:
            if self._has_data:
                events.append("\n".join(self._data))
            self._data = []
            self._has_data = False
            return
        if line.startswith(":"):
            return  # a comment (servers send them as keep-alives)
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
            self._has_data = True


def _line_end(buffer: str, start: int) -> tuple[int, int] | None:
    # Lines end in \n, \r\n or a lone \r. A \r at the very end of the buffer might be the
    # first half of \r\n, so it waits for more text.
    cr = buffer.find("\r", start)
    lf = buffer.find("\n", start)
    if lf != -1 and (cr == -1 or lf < cr):
        return lf, lf + 1
    if cr == -1:
        return None
    if cr + 1 < len(buffer):
        return cr, cr + (2 if buffer[cr + 1] == "\n" else 1)
    return None


def iter_events(chunks: Iterable[str]) -> Iterator[str]:
    """The data of each complete event in a stream of text chunks."""
    parser = SSEParser()
    for text in chunks:
        yield from parser.feed(text)
    yield from parser.close()

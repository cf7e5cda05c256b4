"""The text of one reply as it arrives, held once: :class:`ReplyBuffer`.

The reply that reads the stream appends to it; the conversation's pending turn and every view
of the reply (a cell's live output, each chat panel) read from the same buffer. A reply can
bring tens of thousands of chunks a second, so appending is the bare ``list.append`` of its
chunk list, with no lock and no call of ours. Readers join what is new under a lock and keep
the joined text, dropping the chunks they joined: the text is held once, plus the chunks that
no reader has asked for yet.

Standard library only: the provider core and the conversation layer both use it.
"""

from __future__ import annotations

import threading

__all__ = ["ReplyBuffer"]


class ReplyBuffer:
    """A reply's text: one thread appends chunks, any thread reads.

    Examples
    --------
    ::

        In [1]: buffer = ReplyBuffer()
        In [2]: buffer.append("Hel"); buffer.append("lo")
        In [3]: buffer.text(), buffer.chunks
        Out[3]: ('Hello', 2)
    """

    __slots__ = ("_dropped", "_lock", "_parts", "_text", "answered_by", "append")

    def __init__(self) -> None:
        self._parts: list[str] = []
        #: Adds the next chunk (a ``str``); for the one thread that reads the stream.
        self.append = self._parts.append
        self._lock = threading.Lock()
        self._text = ""
        self._dropped = 0
        #: What wrote the reply, when the server says (a model's name); ``""`` until then.
        self.answered_by = ""

    @property
    def chunks(self) -> int:
        """How many chunks have arrived: a cheap way to see whether the reply grew."""
        return self._dropped + len(self._parts)

    def text(self) -> str:
        """The reply so far."""
        with self._lock:
            parts = self._parts
            count = len(parts)
            if count:
                # Counted before the chunks go: a reader racing this one sees too many chunks
                # for a moment (and redraws once more), never too few (and misses text).
                self._dropped += count
                self._text += "".join(parts[:count])
                # Only the chunks joined: the writer may have appended more meanwhile.
                del parts[:count]
            return self._text

    def __len__(self) -> int:
        """The characters of the reply so far."""
        return len(self.text())

    def __repr__(self) -> str:
        return f"<ReplyBuffer {self.chunks:,} chunks>"

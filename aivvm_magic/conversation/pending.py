"""A reply on its way into a conversation: :class:`PendingReply`."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from .files import type_name
from .turn import Turn, utc_now

if TYPE_CHECKING:
    from .history import Conversation

__all__ = ["PendingReply"]


class PendingReply:
    """A reply streaming into a conversation; :meth:`Conversation.streaming` hands one out.

    :meth:`add` each chunk as it arrives (listeners see it at once), then :meth:`record` the
    turn, as complete or as partial. Leaving the ``with`` block without recording tells the
    listeners the turn failed and records nothing.
    """

    def __init__(
        self, conversation: Conversation, prompt: str, source: str, cell_id: str | None
    ) -> None:
        self.conversation = conversation
        self.prompt = prompt
        self.source = source
        self.cell_id = cell_id
        #: When the turn began, as an ISO-8601 UTC time.
        self.started = utc_now()
        self._clock = time.monotonic()
        self._parts: list[str] = []
        #: The recorded turn, once :meth:`record` was called.
        self.turn: Turn | None = None

    @property
    def text(self) -> str:
        """The reply text received so far (safe to read from another thread)."""
        # Never rewrites the list: another thread may be appending to it right now.
        return "".join(self._parts[:])

    @property
    def chunks(self) -> int:
        """How many chunks have arrived: a cheap way to see whether the reply grew."""
        return len(self._parts)

    @property
    def elapsed(self) -> float:
        """Seconds since the turn began."""
        return time.monotonic() - self._clock

    @property
    def recorded(self) -> bool:
        """Whether :meth:`record` was called."""
        return self.turn is not None

    def add(self, chunk: str) -> None:
        """Append ``chunk`` to the reply and tell the listeners."""
        if self.turn is not None:
            raise RuntimeError("this reply was already recorded")
        if not isinstance(chunk, str):
            raise TypeError(f"a reply chunk must be a str, not {type_name(chunk)}")
        if chunk:
            self._parts.append(chunk)
            # Every chunk passes here: with nobody listening for chunks, not even a call.
            if self.conversation._chunk_listeners:
                self.conversation.emit_chunk(chunk)

    @property
    def sink(self) -> Callable[[str], None]:
        """The cheapest callable that adds a chunk already known to be a ``str``.

        While anyone listens for chunks it is :meth:`add`, which tells them of each one;
        otherwise the bare ``append`` of the reply's parts, since a fast reply brings tens of
        thousands.
        """
        if self.conversation._chunk_listeners:
            return self.add
        if self.turn is not None:
            raise RuntimeError("this reply was already recorded")
        return self._parts.append

    def record(
        self,
        *,
        model: str,
        temperature: float,
        system: str,
        complete: bool = True,
        error: str | None = None,
    ) -> Turn:
        """Record the reply received so far as a turn (partial unless ``complete``)."""
        if self.turn is not None:
            raise RuntimeError("this reply was already recorded")
        turn = Turn(
            prompt=self.prompt,
            reply=self.text,
            model=model,
            temperature=temperature,
            system=system,
            started=self.started,
            duration=round(time.monotonic() - self._clock, 3),
            complete=complete,
            source=self.source,
            cell_id=self.cell_id,
            error=error,
        )
        # Recorded before the listeners hear of it, so that they see ``recorded`` is true.
        self.turn = turn
        self.conversation.record(turn)
        return turn

    def __repr__(self) -> str:
        state = "recorded" if self.recorded else "streaming"
        return f"<PendingReply {state}, {len(self.text):,} characters>"

"""A reply on its way into a conversation: :class:`PendingReply`."""

from __future__ import annotations

import time
from collections.abc import Callable

from ..reply_buffer import ReplyBuffer
from ..token_usage import TokenUsage
from .files import type_name
from .turn import Turn, utc_now

__all__ = ["PendingReply"]


class PendingReply:
    """A reply streaming into a conversation; :meth:`Conversation.streaming` hands one out.

    Its text is a :class:`~aivvm_magic.reply_buffer.ReplyBuffer`, the same one the provider's
    reply appends to and every view of the reply reads: chunks are not announced one by one,
    views look at the buffer when they draw. :meth:`record` then makes the turn, as complete or
    as partial. Leaving the ``with`` block without recording tells the listeners the turn failed
    and records nothing.
    """

    def __init__(
        self,
        record: Callable[[Turn], None],
        prompt: str,
        source: str,
        cell_id: str | None,
        buffer: ReplyBuffer | None = None,
        text_started: Callable[[], None] | None = None,
    ) -> None:
        self._record = record
        self._text_started = text_started
        self.prompt = prompt
        self.source = source
        self.cell_id = cell_id
        #: The reply's text as it arrives.
        self.buffer = buffer if buffer is not None else ReplyBuffer()
        #: When the turn began, as an ISO-8601 UTC time.
        self.started = utc_now()
        self._clock = time.monotonic()
        #: The recorded turn, once :meth:`record` was called.
        self.turn: Turn | None = None

    @property
    def text(self) -> str:
        """The reply text received so far (safe to read from any thread)."""
        return self.buffer.text()

    @property
    def chunks(self) -> int:
        """How many chunks have arrived: a cheap way to see whether the reply grew."""
        return self.buffer.chunks

    @property
    def elapsed(self) -> float:
        """Seconds since the turn began."""
        return time.monotonic() - self._clock

    @property
    def recorded(self) -> bool:
        """Whether :meth:`record` was called."""
        return self.turn is not None

    def text_started(self) -> None:
        """Say that the reply's first text arrived (the listeners hear ``"text_started"``),
        so that the views show it at once rather than at their next look."""
        if self._text_started is not None:
            self._text_started()

    def add(self, chunk: str) -> None:
        """Append ``chunk`` to the reply (a provider's reply appends to :attr:`buffer` itself)."""
        if self.turn is not None:
            raise RuntimeError("this reply was already recorded")
        if not isinstance(chunk, str):
            raise TypeError(f"a reply chunk must be a str, not {type_name(chunk)}")
        if chunk:
            self.buffer.append(chunk)

    def record(
        self,
        *,
        model: str,
        temperature: float,
        system: str,
        complete: bool = True,
        error: str | None = None,
        provider: str | None = None,
        finish_reason: str | None = None,
        usage: TokenUsage | None = None,
    ) -> Turn:
        """Record the reply received so far as a turn (partial unless ``complete``), with how
        it was asked and how it ended, where known."""
        if self.turn is not None:
            raise RuntimeError("this reply was already recorded")
        turn = Turn(
            prompt=self.prompt,
            reply=self.buffer.text(),
            model=model,
            temperature=temperature,
            system=system,
            started=self.started,
            duration=round(time.monotonic() - self._clock, 3),
            complete=complete,
            source=self.source,
            cell_id=self.cell_id,
            error=error,
            provider=provider,
            finish_reason=finish_reason,
            prompt_tokens=usage.prompt_tokens if usage is not None else None,
            completion_tokens=usage.completion_tokens if usage is not None else None,
        )
        # Recorded before the listeners hear of it, so that they see ``recorded`` is true.
        self.turn = turn
        self._record(turn)
        return turn

    def __repr__(self) -> str:
        state = "recorded" if self.recorded else "streaming"
        return f"<PendingReply {state}, {self.chunks:,} chunks>"

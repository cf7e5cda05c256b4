"""What an engine is: the :class:`ChatRequest` it is given and the :class:`Engine` it subclasses.

Every part of the server meets here: each API turns its requests into a :class:`ChatRequest`,
the engine loop (:mod:`.streaming`) hands it to an :class:`Engine` and reads the pieces back,
and each engine module (:mod:`.engines` for ``echo``, :mod:`.local`) subclasses the base. No
engine lives in this module and it imports none, so an engine module and the registry
(:mod:`.engines`) can both import it without importing each other.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

__all__ = ["FINISH_REASONS", "ChatRequest", "Engine", "Finish"]


@dataclass(frozen=True)
class ChatRequest:
    """A validated chat request, as an engine sees it.

    It comes from ``POST /api/chat`` or ``POST /v1/chat/completions``. The API key is
    deliberately not a field: an engine has no use for it, and leaving it out means no repr,
    log line or traceback that shows a request can show the key.
    """

    #: An id of the Aivvm ``models`` table on ``/api/chat``; any non-empty id on ``/v1``.
    model_id: str
    #: The conversation, each item ``{"role": "user" | "assistant", "content": str}``.
    messages: list[dict[str, str]]
    #: The system message (the wire field ``prompt``).
    prompt: str
    temperature: float
    #: The most tokens the client wants in the reply; None when it did not say (``/api/chat``
    #: has no such field). The echo engine counts a word as a token.
    max_tokens: int | None = None
    #: Texts that end the reply where they would first appear, without them (``/v1`` only).
    stop: tuple[str, ...] = ()

    def last_user_message(self) -> str | None:
        """The content of the last message whose role is ``user``, or None if there is none."""
        for message in reversed(self.messages):
            if message["role"] == "user":
                return message["content"]
        return None


#: How a reply can end, as the ``/v1`` route's ``finish_reason`` says it.
FINISH_REASONS = ("stop", "length")


class Finish(str):
    """How an engine's reply ended (``"stop"`` or ``"length"``), with the tokens it counted.

    It is the finish reason itself, a ``str``, so the engine loop hands it on unchanged to
    whatever frames the reply; the ``/v1`` route reads its counts for the ``usage`` it reports.
    A count the engine does not make is None, and the route then estimates it.

    Examples
    --------
    ::

        In [1]: finish = Finish("stop", prompt_tokens=12, completion_tokens=5)
        In [2]: finish == "stop", finish.completion_tokens
        Out[2]: (True, 5)
    """

    prompt_tokens: int | None
    completion_tokens: int | None

    def __new__(
        cls,
        reason: str,
        *,
        prompt_tokens: int | None = None,
        completion_tokens: int | None = None,
    ) -> Finish:
        finish = super().__new__(cls, reason)
        finish.prompt_tokens = prompt_tokens
        finish.completion_tokens = completion_tokens
        return finish


class Engine(ABC):
    """Base class of the engines that generate replies.

    One engine instance serves every request and every model id, from many threads at once,
    so :meth:`generate` must not keep per-request state on ``self`` (or must lock it).
    """

    #: The name the engine is registered under, shown by ``/api/health``.
    name: str = "engine"

    def describe(self) -> dict[str, Any]:
        """JSON-serialisable facts about this engine, for ``/api/health``."""
        return {"engine": self.name}

    def served_by(self) -> str:
        """A short, honest text saying what really answers, for each ``/api/models`` entry."""
        return f"{self.name} engine"

    @property
    def model_name(self) -> str:
        """What answers, in a few words (a model's name, else the engine's), for status lines:
        ``/api/models`` entries and each reply's ``X-Aivvm-Model`` header carry it."""
        return f"{self.name} engine"

    @abstractmethod
    def generate(self, request: ChatRequest) -> Iterator[str]:
        """Yield the reply to ``request`` as text chunks, in order.

        A generator may ``return "length"`` when it stopped at the token budget
        (``max_tokens``) rather than at the reply's natural end; the ``/v1`` route reports it
        as the ``finish_reason``. Anything else it returns counts as ``"stop"``. Returning a
        :class:`Finish` also tells the route how many tokens the request and the reply took.
        """

    def close(self) -> None:  # noqa: B027 - an optional hook; most engines hold nothing
        """Release what the engine holds (a loaded model, say); the default holds nothing."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"

"""Engines: what writes the replies the reference server streams back.

An engine turns one validated chat request into a generator of text chunks. The server writes
each chunk to the client as soon as the generator yields it, and closes the generator when the
client goes away, so an engine stops working for a reader who is no longer there.

Engines are looked up by name in :data:`ENGINES`. The registry is open: a module that provides
another engine calls :func:`register_engine` when it is imported.
"""

from __future__ import annotations

import re
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ENGINES",
    "ChatRequest",
    "EchoEngine",
    "Engine",
    "make_engine",
    "register_engine",
    "split_words",
]


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

    @abstractmethod
    def generate(self, request: ChatRequest) -> Iterator[str]:
        """Yield the reply to ``request`` as text chunks, in order.

        A generator may ``return "length"`` when it stopped at the token budget
        (``max_tokens``) rather than at the reply's natural end; the ``/v1`` route reports it
        as the ``finish_reason``. Anything else it returns counts as ``"stop"``.
        """

    def close(self) -> None:  # noqa: B027 - an optional hook; most engines hold nothing
        """Release what the engine holds (a loaded model, say); the default holds nothing."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


# Each piece is a run of non-space characters with the spaces after it, or, only at the very
# start, a run of spaces. Every character is either \s or \S, so the pieces always join back
# to exactly the original text.
_WORD_PIECES = re.compile(r"\S+\s*|\s+")


def split_words(text: str) -> list[str]:
    """Split ``text`` into word-sized pieces that concatenate back to exactly ``text``."""
    return _WORD_PIECES.findall(text)


class EchoEngine(Engine):
    """Repeats the last user message verbatim, a word at a time.

    Deterministic, so tests can assert on the exact reply; ``delay`` seconds between chunks
    makes streaming observable.
    """

    name = "echo"

    def __init__(self, delay: float = 0.0) -> None:
        if delay < 0:
            raise ValueError(f"delay must be 0 or more seconds, not {delay!r}")
        self.delay = float(delay)

    def describe(self) -> dict[str, Any]:
        """The engine name and its delay between chunks."""
        return {"engine": self.name, "delay": self.delay}

    def served_by(self) -> str:
        """Says plainly that no model is involved."""
        return "echo engine (repeats your last message)"

    def generate(self, request: ChatRequest) -> Generator[str, None, str]:
        """Yield the last user message in word-sized pieces, ``delay`` seconds apart.

        The echo ends before the first of ``request.stop`` it contains, and after
        ``request.max_tokens`` pieces (returning ``"length"``).
        """
        text = request.last_user_message() or ""
        cut = min((i for i in (text.find(s) for s in request.stop if s) if i >= 0), default=-1)
        if cut >= 0:
            text = text[:cut]
        pieces = split_words(text)
        budget = request.max_tokens
        for index, piece in enumerate(pieces):
            if budget is not None and index == budget:
                return "length"
            # Sleeping before a piece rather than after it means a closed generator (closing
            # happens at a yield) never sleeps again, and the first piece goes out at once.
            if index and self.delay:
                time.sleep(self.delay)
            yield piece
        return "stop"

    def __repr__(self) -> str:
        return f"EchoEngine(delay={self.delay!r})"


#: Engine name -> a factory that takes the engine's options as keyword arguments.
ENGINES: dict[str, Callable[..., Engine]] = {}


def register_engine(name: str, factory: Callable[..., Engine]) -> None:
    """Make ``factory`` available as engine ``name``, replacing any engine of that name.

    ``factory`` is called with the engine's options as keyword arguments; it may import heavy
    dependencies itself, so registering costs nothing until the engine is used.
    """
    if not name or not isinstance(name, str):
        raise ValueError(f"an engine name must be a non-empty string, not {name!r}")
    ENGINES[name] = factory


def make_engine(name: str, **options: Any) -> Engine:
    """Build the engine registered as ``name`` with ``options``; unknown names are a ValueError."""
    try:
        factory = ENGINES[name]
    except KeyError:
        known = ", ".join(sorted(ENGINES)) or "(none)"
        raise ValueError(f"unknown engine {name!r}; known engines: {known}") from None
    return factory(**options)


register_engine(EchoEngine.name, EchoEngine)


def _local_engine(**options: Any) -> Engine:
    """Build the ``local`` engine (:mod:`aivvm_magic.server.local`); llama_cpp loads only now."""
    # It streams at the model's pace, so the test engines' ``delay`` knob does not apply.
    options.pop("delay", None)
    from .local import LocalEngine

    return LocalEngine(**options)


register_engine("local", _local_engine)

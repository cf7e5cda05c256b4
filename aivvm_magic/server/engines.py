"""Engines: what writes the replies the reference server streams back, by name.

An engine turns one validated chat request into a generator of text chunks (the contract is
in :mod:`.engine_base`). The server writes each chunk to the client as soon as the generator
yields it, and closes the generator when the client goes away, so an engine stops working for
a reader who is no longer there.

Engines are looked up by name in :data:`ENGINES`. The registry is open: a module that provides
another engine calls :func:`register_engine` when it is imported. An engine with heavy
dependencies registers a :class:`LazyFactory` instead, a ``"module:attribute"`` reference
imported on the first build: that is how ``local`` is known here, so this module never
imports :mod:`.local` (which imports :mod:`.engine_base`, not this registry), and llama_cpp
loads only when a local engine is built.
"""

from __future__ import annotations

import importlib
import re
import time
from collections.abc import Callable, Generator
from typing import Any

from .engine_base import ChatRequest, Engine, Finish

__all__ = [
    "ENGINES",
    "ChatRequest",
    "EchoEngine",
    "Engine",
    "LazyFactory",
    "make_engine",
    "register_engine",
    "split_words",
]


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
    makes streaming observable. ``repeat`` times the message makes a long reply from a short
    one, for benchmarks: a client keeps its input within the model's limit.
    """

    name = "echo"

    def __init__(self, delay: float = 0.0, repeat: int | str = 1) -> None:
        if delay < 0:
            raise ValueError(f"delay must be 0 or more seconds, not {delay!r}")
        self.delay = float(delay)
        # From the command line (``-o repeat=200``) it arrives as a string.
        try:
            self.repeat = int(repeat)
        except ValueError:
            self.repeat = 0
        if self.repeat < 1:
            raise ValueError(f"repeat must be a whole number of 1 or more, not {repeat!r}")

    def describe(self) -> dict[str, Any]:
        """The engine name, its delay between chunks, and how often it repeats a message when
        more than once."""
        info: dict[str, Any] = {"engine": self.name, "delay": self.delay}
        if self.repeat != 1:
            info["repeat"] = self.repeat
        return info

    def served_by(self) -> str:
        """Says plainly that no model is involved."""
        return "echo engine (repeats your last message)"

    @property
    def model_name(self) -> str:
        """``echo engine``: no model answers."""
        return "echo engine"

    def generate(self, request: ChatRequest) -> Generator[str, None, Finish]:
        """Yield the last user message in word-sized pieces, ``delay`` seconds apart.

        The echo ends before the first of ``request.stop`` it contains, and after
        ``request.max_tokens`` pieces (returning ``"length"``). It counts a word-sized piece as
        a token, in the reply as in the request (the system message and every message).
        """
        text = (request.last_user_message() or "") * self.repeat
        cut = min((i for i in (text.find(s) for s in request.stop if s) if i >= 0), default=-1)
        if cut >= 0:
            text = text[:cut]
        pieces = split_words(text)
        prompt_tokens = sum(
            len(split_words(part))
            for part in (request.prompt, *(m["content"] for m in request.messages))
        )
        budget = request.max_tokens
        for index, piece in enumerate(pieces):
            if budget is not None and index == budget:
                return Finish("length", prompt_tokens=prompt_tokens, completion_tokens=index)
            # Sleeping before a piece rather than after it means a closed generator (closing
            # happens at a yield) never sleeps again, and the first piece goes out at once.
            if index and self.delay:
                time.sleep(self.delay)
            yield piece
        return Finish("stop", prompt_tokens=prompt_tokens, completion_tokens=len(pieces))

    def __repr__(self) -> str:
        repeat = f", repeat={self.repeat}" if self.repeat != 1 else ""
        return f"EchoEngine(delay={self.delay!r}{repeat})"


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


class LazyFactory:
    """An engine factory named by ``"module:attribute"``, imported when an engine is first built.

    Registering one costs no import, so the registry does not depend on the engine's module
    (nor on what that module imports). ``ignored_options`` are dropped before the call: options
    that the server passes to every engine and this one has no use for.
    """

    def __init__(self, reference: str, ignored_options: tuple[str, ...] = ()) -> None:
        module, sep, attribute = reference.partition(":")
        if not (module and sep and attribute):
            raise ValueError(f"expected 'module:attribute', not {reference!r}")
        self.reference = reference
        self.ignored_options = ignored_options

    def resolve(self) -> Callable[..., Engine]:
        """The factory itself, its module imported if nothing imported it yet."""
        module, _, attribute = self.reference.partition(":")
        return getattr(importlib.import_module(module), attribute)

    def __call__(self, **options: Any) -> Engine:
        for name in self.ignored_options:
            options.pop(name, None)
        return self.resolve()(**options)

    def __repr__(self) -> str:
        return f"LazyFactory({self.reference!r})"


# It streams at the model's pace, so the test engines' ``delay`` knob does not apply.
register_engine("local", LazyFactory("aivvm_magic.server.local:LocalEngine", ("delay",)))

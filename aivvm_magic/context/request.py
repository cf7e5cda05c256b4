"""The last request the magic built, kept so that ``%aivvm last`` can show exactly what was
sent and how big it was."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["SentRequest"]


def _chars(count: int) -> str:
    return f"{count:,} character{'' if count == 1 else 's'}"


@dataclass(frozen=True)
class SentRequest:
    """A request as the magic built it: where it went, its system message and messages (the
    newest the question, with any context), never the key."""

    model: str
    target: str
    chat: str
    system: str
    messages: list[dict[str, str]]
    #: The model's input limit, in characters.
    max_chars: int
    #: What the newest message is made of: ``(label, characters)`` for each piece of context.
    parts: Sequence[tuple[str, int]] = field(default_factory=tuple)

    @property
    def size(self) -> int:
        """The characters the request's input counts: the system message and every message."""
        return len(self.system) + sum(len(m["content"]) for m in self.messages)

    def report(self, contents: bool = True) -> str:
        """What ``%aivvm last`` prints: a summary, then each message under a line with its
        role and size (with ``contents``), then what the question carried."""
        count = len(self.messages)
        lines = [
            f"Sent to {self.model} at {self.target}, conversation {self.chat!r}: the system "
            f"message and {count} message{'' if count == 1 else 's'}, {_chars(self.size)} "
            f"(the model takes {self.max_chars:,}).",
        ]
        entries = [("system", self.system)] + [(m["role"], m["content"]) for m in self.messages]
        for role, content in entries:
            lines.append(f"--- {role} · {_chars(len(content))} ---")
            if contents:
                lines.append(content)
        if self.parts and self.messages:
            question = len(self.messages[-1]["content"])
            pieces = "; ".join(f"{label}, {_chars(size)}" for label, size in self.parts)
            lines.append(f"The last message ({_chars(question)}) carries: {pieces}.")
        return "\n".join(lines)

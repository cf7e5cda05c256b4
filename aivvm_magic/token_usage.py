"""How many tokens a reply cost, where the server says: :class:`TokenUsage`.

An OpenAI-compatible server reports it at the end of a stream it was asked to count
(``stream_options.include_usage``); the Aivvm protocol has no such field, so there it stays
unknown. Either count may be missing on its own (a server that counts only the reply), and
what is not known is never guessed.

Standard library only: the provider core reads it, the conversation keeps it, and the status
line, ``%aivvm history`` and a reply's provenance show it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["TokenUsage"]


def _count(value: Any) -> int | None:
    # bool is an int subclass, and a count of ``true`` tokens is no count.
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


@dataclass(frozen=True)
class TokenUsage:
    """The tokens of a request's input (``prompt_tokens``) and of its reply
    (``completion_tokens``); None where the server did not say.

    Examples
    --------
    ::

        In [1]: usage = TokenUsage.from_openai({"prompt_tokens": 12, "completion_tokens": 5})
        In [2]: usage.summary()
        Out[2]: 'tokens: 12 in, 5 out'
    """

    prompt_tokens: int | None = None
    completion_tokens: int | None = None

    @classmethod
    def from_openai(cls, data: Any) -> TokenUsage | None:
        """The counts of an OpenAI ``usage`` object; None when it holds neither (a server
        that sends ``"usage": null`` in every chunk, or counts that are not counts)."""
        if not isinstance(data, Mapping):
            return None
        usage = cls(_count(data.get("prompt_tokens")), _count(data.get("completion_tokens")))
        return usage if usage.known else None

    @property
    def known(self) -> bool:
        """Whether either count is known."""
        return self.prompt_tokens is not None or self.completion_tokens is not None

    @property
    def total_tokens(self) -> int | None:
        """Both counts added up, when both are known."""
        if self.prompt_tokens is None or self.completion_tokens is None:
            return None
        return self.prompt_tokens + self.completion_tokens

    def to_dict(self) -> dict[str, int | None]:
        """The counts under OpenAI's names, ``total_tokens`` included (None where unknown)."""
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }

    def summary(self) -> str:
        """A few words for a status line: ``tokens: 12 in, 5 out`` (a count not known is
        left out); ``""`` when neither is known."""
        parts = []
        if self.prompt_tokens is not None:
            parts.append(f"{self.prompt_tokens:,} in")
        if self.completion_tokens is not None:
            parts.append(f"{self.completion_tokens:,} out")
        return f"tokens: {', '.join(parts)}" if parts else ""

"""The provider interface shared by every chat backend, in gpt4free's shape."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any, ClassVar

#: A conversation as sent to a provider: ``[{"role": "user", "content": "..."}, ...]``.
Messages = list[dict[str, str]]

#: What a streaming completion yields: text chunks, in order, as they arrive.
CreateResult = Iterator[str]


class AbstractProvider(ABC):
    """A chat backend: class attributes describe it, ``create_completion`` talks to it."""

    url: ClassVar[str]
    #: Whether the endpoint is known to answer. Providers make it checkable with ``check()``.
    working: ClassVar[bool] = False
    supports_stream: ClassVar[bool] = False
    supports_gpt_35_turbo: ClassVar[bool] = False
    supports_gpt_4: ClassVar[bool] = False

    @classmethod
    @abstractmethod
    def create_completion(
        cls, model: str, messages: Messages, stream: bool, **kwargs: Any
    ) -> CreateResult | str:
        """Ask ``model`` to continue ``messages``: text chunks when ``stream``, else one str."""

    @classmethod
    def validate_model(cls, model: str, base_url: str | None = None, key: str | None = None) -> str:
        """The model id to send for ``model`` to the server at ``base_url``; a ValueError
        saying what is allowed if none."""
        return model

    @classmethod
    def max_input_chars(cls, model: str) -> int:
        """How many characters of input (system message and messages) ``model`` accepts."""
        return 12_000

    @classmethod
    def params(cls) -> str:
        """A one-line description of what the provider supports, as gpt4free prints it."""
        flags = [
            name
            for name in ("supports_stream", "supports_gpt_35_turbo", "supports_gpt_4")
            if getattr(cls, name)
        ]
        return f"{cls.__name__} ({cls.url}): {', '.join(flags) or 'no features'}"


def wire_message(message: dict[str, str]) -> dict[str, str]:
    """A message as the chat APIs take it: only ``role`` and ``content``, so that extra keys
    a caller keeps (ids, metadata) stay on this side."""
    return {"role": message["role"], "content": message["content"]}

"""The provider core: chat backends that turn messages into streamed text.

Imports neither IPython nor ipywidgets, so it can be used (and tested) on its own.
"""

from __future__ import annotations

from ..request_options import RequestOptions
from .aivvm import Aivvm, models
from .base import AbstractProvider, CreateResult, Messages
from .errors import (
    APIError,
    ConnectError,
    EmptyReply,
    IncompleteReply,
    ProviderError,
    RedirectRefused,
    ReplyTimeout,
)
from .http_chat import HTTPChatProvider, ModelList
from .openai import OpenAICompatible, StreamError
from .reply import StreamingReply

__all__ = [
    "APIError",
    "AbstractProvider",
    "Aivvm",
    "ConnectError",
    "CreateResult",
    "EmptyReply",
    "HTTPChatProvider",
    "IncompleteReply",
    "Messages",
    "ModelList",
    "OpenAICompatible",
    "PROVIDERS",
    "ProviderError",
    "RedirectRefused",
    "ReplyTimeout",
    "RequestOptions",
    "StreamError",
    "StreamingReply",
    "get_provider",
    "models",
]

#: Providers by the name users type (``%%aivvm -p NAME``).
PROVIDERS: dict[str, type[AbstractProvider]] = {"aivvm": Aivvm, "openai": OpenAICompatible}


def get_provider(name: str) -> type[AbstractProvider]:
    """The provider class called ``name``; a ValueError naming the known ones otherwise."""
    try:
        return PROVIDERS[name.lower()]
    except KeyError:
        raise ValueError(
            f"Unknown provider {name!r}; choose one of: {', '.join(PROVIDERS)}"
        ) from None

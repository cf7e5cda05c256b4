"""Facts of the Aivvm (chatbot-ui legacy) wire protocol, shared by the client and the server.

Nothing here does I/O: the provider core and the reference server both read these tables, so
the two sides cannot drift apart. See ``PROTOCOL.md`` in the design documents.
"""

from __future__ import annotations

import re
from typing import TypedDict


class ModelInfo(TypedDict):
    id: str
    name: str


#: Model id -> the ``{"id", "name"}`` object sent as the request's ``model`` field.
models: dict[str, ModelInfo] = {
    "gpt-3.5-turbo": {"id": "gpt-3.5-turbo", "name": "GPT-3.5"},
    "gpt-3.5-turbo-0613": {"id": "gpt-3.5-turbo-0613", "name": "GPT-3.5-0613"},
    "gpt-3.5-turbo-16k": {"id": "gpt-3.5-turbo-16k", "name": "GPT-3.5-16K"},
    "gpt-3.5-turbo-16k-0613": {"id": "gpt-3.5-turbo-16k-0613", "name": "GPT-3.5-16K-0613"},
    "gpt-4": {"id": "gpt-4", "name": "GPT-4"},
    "gpt-4-0613": {"id": "gpt-4-0613", "name": "GPT-4-0613"},
    "gpt-4-32k": {"id": "gpt-4-32k", "name": "GPT-4-32K"},
    "gpt-4-32k-0613": {"id": "gpt-4-32k-0613", "name": "GPT-4-32K-0613"},
}

DEFAULT_MODEL = "gpt-3.5-turbo"

DEFAULT_SYSTEM_MESSAGE = (
    "You are ChatGPT, a large language model trained by OpenAI. "
    "Follow the user's instructions carefully. Respond using markdown."
)

DEFAULT_TEMPERATURE = 0.7

#: The body fields of ``POST /api/chat``: exactly these five.
CHAT_FIELDS = ("model", "messages", "key", "prompt", "temperature")

CHAT_PATH = "/api/chat"
MODELS_PATH = "/api/models"

# chatbot-ui's own input limits (its models' ``maxLength``), in characters, by model family.
# Checked longest prefix first, so "gpt-4-32k" is not taken for "gpt-4". Azure's name for
# GPT-3.5 is "gpt-35-turbo".
_INPUT_CHAR_LIMITS = (
    ("gpt-4-32k", 96_000),
    ("gpt-4", 24_000),
    ("gpt-3.5-turbo", 12_000),
    ("gpt-35-turbo", 12_000),
)

# -- what a chatbot-ui (legacy) server itself does (``CHATBOT-UI.md``) --------------------------

#: The ``max_tokens`` a chatbot-ui server puts in every upstream request: no reply is longer.
REPLY_TOKEN_CAP = 1000

#: The temperature a chatbot-ui server uses when a request has none (its default, not ours).
SERVER_DEFAULT_TEMPERATURE = 1.0

#: The models a chatbot-ui server knows, id -> name: ``/api/models`` lists only these.
SERVER_MODELS: dict[str, str] = {
    "gpt-3.5-turbo": "GPT-3.5",
    "gpt-35-turbo": "GPT-3.5",
    "gpt-4": "GPT-4",
    "gpt-4-32k": "GPT-4-32K",
}

# A word (a run of letters, digits or underscores) or one other visible character: close to
# how a BPE tokenizer cuts English prose and code, with no tokenizer at hand.
_TOKEN = re.compile(r"\w+|[^\w\s]")


def approx_tokens(text: str) -> int:
    """Roughly how many tokens ``text`` is: its words plus its punctuation marks."""
    return sum(1 for _ in _TOKEN.finditer(text))


def near_token_cap(text: str, cap: int = REPLY_TOKEN_CAP) -> bool:
    """Whether a reply of ``text`` is about ``cap`` tokens long, so it may have stopped there.

    English runs about 0.85 of these estimated tokens to a real one, and a server that counts
    words (the echo engine) one to one, so from three quarters of the cap to a tenth over it
    the reply is "about the cap".
    """
    # A token is at least one character: a shorter reply cannot be near the cap, and a far
    # longer one is not worth counting (no text a thousand tokens long is 50 times as many
    # characters).
    if not cap * 0.75 <= len(text) <= cap * 50:
        return False
    return cap * 0.75 <= approx_tokens(text) <= cap * 1.1


def input_char_limit(model_id: str) -> int:
    """The most characters of input (system message plus messages) ``model_id`` accepts."""
    for prefix, limit in _INPUT_CHAR_LIMITS:
        if model_id.startswith(prefix):
            return limit
    return _INPUT_CHAR_LIMITS[-1][1]


def resolve_model(model: str | None) -> ModelInfo:
    """The model object for ``model``; empty means the default. Unknown ids are a ValueError."""
    model_id = model or DEFAULT_MODEL
    try:
        return models[model_id]
    except KeyError:
        raise ValueError(
            f"Model {model_id!r} is not supported by Aivvm; choose one of: {', '.join(models)}"
        ) from None

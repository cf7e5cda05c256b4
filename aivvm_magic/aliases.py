"""Aliases: one name for a provider, a model and an endpoint together.

An alias is usable wherever a model id is: ``%%aivvm -m local``, ``%config AivvmMagics.model =
"local"``, the chat panel's model list. It is configured like any setting, as a dict of dicts
(``%config``, ``ipython_config.py``) or with ``%aivvm alias``::

    c.AivvmMagics.aliases = {
        "local": {"provider": "openai", "model": "smollm2",
                  "base_url": "http://127.0.0.1:8000/v1"},
        "groq": {"provider": "openai", "model": "llama-3.1-8b-instant",
                 "base_url": "https://api.groq.com/openai/v1", "key_from": "env:GROQ_API_KEY"},
    }

Why this shape: the configuration is plain data that ``%config AivvmMagics`` can print and a
config file can hold, so it never holds a key. ``key_from`` says where the key is: an
environment variable (``env:NAME``, read at each request) or one of the key settings
(``api_key``, ``openai_api_key``). An alias with its own ``base_url`` sends only the key it
names, or none: a key set for one service never goes to another because an alias pointed a
provider elsewhere. An alias without a ``base_url`` goes where the session's requests go,
with the provider's own key. A field left out (``provider``, ``base_url``) is the session's.

Standard library only: the settings check aliases when they are set, the session resolves
them for each request.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

__all__ = ["ALIAS_FIELDS", "KEY_SETTINGS", "Alias", "parse_aliases"]

#: The fields of an alias; ``model`` is required.
ALIAS_FIELDS = ("provider", "model", "base_url", "key_from")
#: The settings that hold keys, which ``key_from`` may name.
KEY_SETTINGS = ("api_key", "openai_api_key")

_ENV_REFERENCE = re.compile(r"env:([A-Za-z_][A-Za-z0-9_]*)")


@dataclass(frozen=True)
class Alias:
    """A name for a ``provider``, ``model`` and ``base_url`` together, with where its key is
    (``key_from``); ``""`` for a field the session's settings fill in.

    Examples
    --------
    ::

        In [1]: alias = Alias.from_config("local", {"provider": "openai", "model": "smollm2",
           ...:                           "base_url": "http://127.0.0.1:8000/v1"})
        In [2]: alias.describe()
        Out[2]: 'openai · smollm2 · http://127.0.0.1:8000/v1 · key: none'
    """

    name: str
    model: str
    provider: str = ""
    base_url: str = ""
    key_from: str = ""

    @classmethod
    def from_config(cls, name: Any, entry: Any) -> Alias:
        """The alias ``name`` as configured by ``entry``; a ValueError saying what is wrong.

        No message repeats a value: a value in the wrong place may be a key.
        """
        if not isinstance(name, str) or not name or name.split() != [name]:
            raise ValueError("an alias name must be a word: no spaces, not empty")
        if not isinstance(entry, Mapping):
            raise ValueError(f"alias {name!r} must be a dict of {', '.join(ALIAS_FIELDS)}")
        unknown = sorted(str(key) for key in entry if key not in ALIAS_FIELDS)
        if unknown:
            raise ValueError(
                f"alias {name!r} has unknown field(s) {', '.join(map(repr, unknown))}; an alias "
                f"has {', '.join(ALIAS_FIELDS)} (key_from names where the key is)"
            )
        for field in ALIAS_FIELDS:
            if not isinstance(entry.get(field, ""), str):
                raise ValueError(f"alias {name!r}: {field} must be a string")
        model = entry.get("model", "").strip()
        if not model:
            raise ValueError(f"alias {name!r} needs a model")
        base_url = entry.get("base_url", "").strip().rstrip("/")
        if base_url:
            parts = urlsplit(base_url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError(f"alias {name!r}: base_url must be an http:// or https:// URL")
            if parts.username is not None or parts.password is not None or parts.query:
                # Where keys hide in a URL; the request paths go after the base URL anyway.
                raise ValueError(
                    f"alias {name!r}: base_url must carry no user name, password or query; "
                    "name the key with key_from"
                )
            base_url = base_url.split("#", 1)[0].rstrip("/")
        key_from = entry.get("key_from", "").strip()
        if key_from and key_from not in KEY_SETTINGS and not _ENV_REFERENCE.fullmatch(key_from):
            raise ValueError(
                f"alias {name!r}: key_from names where the key is (env:NAME, "
                f"{' or '.join(KEY_SETTINGS)}); an alias never holds a key itself"
            )
        return cls(
            name=name,
            model=model,
            provider=entry.get("provider", "").strip().lower(),
            base_url=base_url,
            key_from=key_from,
        )

    def to_config(self) -> dict[str, str]:
        """The alias as configured: its fields that are set."""
        return {field: getattr(self, field) for field in ALIAS_FIELDS if getattr(self, field)}

    @property
    def key_env(self) -> str | None:
        """The environment variable ``key_from`` names, if it names one."""
        match = _ENV_REFERENCE.fullmatch(self.key_from)
        return match.group(1) if match else None

    def key_source(self) -> str:
        """Where the alias's key comes from, in a few words (never the key)."""
        if self.key_env:
            return f"${self.key_env}"
        if self.key_from:
            return f"AivvmMagics.{self.key_from}"
        return "none" if self.base_url else "the provider's"

    def describe(self) -> str:
        """One line: provider, model, endpoint and where the key comes from."""
        parts = [
            self.provider or "(the session's provider)",
            self.model,
            self.base_url or "(the session's server)",
            f"key: {self.key_source()}",
        ]
        return " · ".join(parts)


def parse_aliases(config: Any) -> dict[str, Alias]:
    """The aliases of a configured dict, by name; a ValueError naming the first bad one."""
    if not isinstance(config, Mapping):
        raise ValueError("aliases must be a dict of {name: {provider, model, base_url}}")
    return {name: Alias.from_config(name, entry) for name, entry in config.items()}

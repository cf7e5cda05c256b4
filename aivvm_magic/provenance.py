"""Where a reply came from: the provenance a cell's saved output carries.

Every ``%%aivvm`` reply leaves its final output with ``metadata={"aivvm": {...}}``: which
model and provider answered, at which target, at what temperature, when, for how long, how
many characters and (where the server counted them) tokens, how the server said the reply
ended, and whether it is complete. Jupyter keeps an output's metadata in the saved notebook,
so a notebook read months later still says what wrote each reply. The key never goes in: the
dict is built from named fields only, none of which holds it, and a target URL loses any user
name, password, query or fragment, where a key could hide.

Examples
--------
A saved output's ``metadata``::

    {"aivvm": {"model": "gpt-4", "provider": "openai", "alias": null,
               "target": "http://127.0.0.1:8000/v1", "temperature": 0.2,
               "started": "2024-05-01T10:00:00.123+00:00", "duration": 0.42,
               "characters": 118, "usage": {"prompt_tokens": 31, "completion_tokens": 25,
               "total_tokens": 56}, "finish_reason": "stop", "complete": true, "error": null,
               "format": "markdown"}}
"""

from __future__ import annotations

from typing import Any

from .secret_types import public_url
from .turns import TurnOutcome, TurnSettings

__all__ = ["PROVENANCE_KEY", "reply_provenance"]

#: The key of a reply's provenance in its output's ``metadata``.
PROVENANCE_KEY = "aivvm"


def reply_provenance(
    outcome: TurnOutcome, settings: TurnSettings, *, target: str, fmt: str
) -> dict[str, Any]:
    """The output ``metadata`` of a reply: ``{"aivvm": {...}}`` (see the module docstring).

    ``target`` is where the request went, as the status line says it; ``fmt`` the display
    format. A count or a finish reason the server did not give is None.
    """
    usage = outcome.usage
    return {
        PROVENANCE_KEY: {
            "model": settings.model,
            "provider": settings.provider,
            "alias": settings.alias or None,
            "target": public_url(target),
            "temperature": settings.temperature,
            "started": outcome.started,
            "duration": outcome.duration,
            "characters": len(outcome.text),
            "usage": usage.to_dict() if usage is not None else None,
            "finish_reason": outcome.finish_reason,
            "complete": outcome.complete,
            "error": outcome.note or None,
            "format": fmt,
        }
    }

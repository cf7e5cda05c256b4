"""One exchange of a conversation: the :class:`Turn` record, checked on construction.

A turn is immutable and every field is validated when it is made, so any turn that exists can
be exported and read back. The standard library and :mod:`aivvm_magic.token_usage` only.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from ..token_usage import TokenUsage
from .files import VERSION, ConversationFormatError, type_name

__all__ = ["SOURCES", "Turn", "utc_now"]

#: Where a turn was asked from.
SOURCES = ("cell", "panel")


def utc_now() -> str:
    """Now, as the ISO-8601 UTC time a turn's ``started`` field holds."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _require_str(name: str, value: object, *, optional: bool = False) -> None:
    if isinstance(value, str):
        # JSON's \ud800 escapes decode to lone surrogates, which no UTF-8 request body or
        # export can hold: refuse them here, before they poison a conversation.
        if not value.isascii() and _LONE_SURROGATE.search(value):
            raise ValueError(f"field {name!r} holds a lone surrogate, which is not valid text")
        return
    if optional and value is None:
        return
    expected = "a string or null" if optional else "a string"
    raise TypeError(f"field {name!r} must be {expected}, not {type_name(value)}")


def _require_number(name: str, value: object) -> float:
    # bool is an int subclass, but ``true`` is never a meaningful temperature or duration.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"field {name!r} must be a number, not {type_name(value)}")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise ValueError(f"field {name!r} must be a finite number, not {value!r}")
    return number


def _require_count(name: str, value: object) -> None:
    if value is None or (type(value) is int and value >= 0):
        return
    if type(value) is int:
        raise ValueError(f"field {name!r} must not be negative, not {value!r}")
    raise TypeError(f"field {name!r} must be a whole number or null, not {type_name(value)}")


def _parse_utc_offset_time(text: str) -> datetime:
    # Python 3.10's fromisoformat does not know the "Z" suffix other tools write.
    parsed = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    if parsed.tzinfo is None:
        raise ValueError("no timezone")
    return parsed


@dataclass(frozen=True, kw_only=True)
class Turn:
    """One exchange: the prompt as sent, the reply as received, and how it was made.

    ``complete`` is False for a *partial* turn, whose reply was cut short (interrupted, timed
    out, or the connection dropped mid-stream); ``error`` then says why in a few words. A
    partial turn still goes into the history, because the model did say that text.

    Fields are checked on construction (a ``TypeError`` or ``ValueError`` names the field), so
    every turn that exists can be exported and loaded back. Turns are immutable.

    Examples
    --------
    ::

        In [1]: turn = Turn(prompt="Hi", reply="Hello!", model="gpt-3.5-turbo",
           ...:             temperature=0.7, system="", started="2024-05-01T10:00:00+00:00",
           ...:             duration=1.2, complete=True, source="cell", cell_id="c1")
        In [2]: Turn.from_dict(turn.to_dict()) == turn
        Out[2]: True
    """

    prompt: str
    reply: str
    model: str
    temperature: float
    system: str
    #: ISO-8601 time with a timezone, e.g. ``2024-05-01T10:00:00.123+00:00``.
    started: str
    #: Seconds from sending the request to the end of the reply.
    duration: float
    complete: bool
    #: ``"cell"`` or ``"panel"``.
    source: str
    #: The notebook cell that asked, so re-running it replaces its turn.
    cell_id: str | None = None
    #: Why the reply is incomplete, in a few words; None for a complete turn.
    error: str | None = None
    #: The provider that asked (``"aivvm"``, ``"openai"``); None in turns recorded before
    #: turns said (export format version 1).
    provider: str | None = None
    #: How the server said the reply ended (``"stop"``, ``"length"``); None where it did not
    #: say.
    finish_reason: str | None = None
    #: The tokens of the request and of the reply, as the server counted them; None where it
    #: did not say.
    prompt_tokens: int | None = None
    completion_tokens: int | None = None

    def __post_init__(self) -> None:
        for name in ("prompt", "reply", "model", "system", "started", "source"):
            _require_str(name, getattr(self, name))
        for name in ("cell_id", "error", "provider", "finish_reason"):
            _require_str(name, getattr(self, name), optional=True)
        for name in ("prompt_tokens", "completion_tokens"):
            _require_count(name, getattr(self, name))
        for name in ("temperature", "duration"):
            value = getattr(self, name)
            if type(value) is not float or not math.isfinite(value):
                # Frozen: normalise through object.__setattr__, so 1 is stored as 1.0.
                object.__setattr__(self, name, _require_number(name, value))
        if self.duration < 0:
            raise ValueError(f"field 'duration' must not be negative, not {self.duration!r}")
        if not isinstance(self.complete, bool):
            raise TypeError(
                f"field 'complete' must be true or false, not {type_name(self.complete)}"
            )
        if self.source not in SOURCES:
            raise ValueError(f"field 'source' must be 'cell' or 'panel', not {self.source!r}")
        if self.cell_id == "":
            raise ValueError("field 'cell_id' must be a non-empty string or null")
        try:
            _parse_utc_offset_time(self.started)
        except ValueError:
            raise ValueError(
                f"field 'started' must be an ISO-8601 time with a timezone, not {self.started!r}"
            ) from None

    def to_dict(self) -> dict[str, Any]:
        """The turn as a JSON-ready dict, one key per field."""
        return {
            "prompt": self.prompt,
            "reply": self.reply,
            "model": self.model,
            "temperature": self.temperature,
            "system": self.system,
            "started": self.started,
            "duration": self.duration,
            "complete": self.complete,
            "source": self.source,
            "cell_id": self.cell_id,
            "error": self.error,
            "provider": self.provider,
            "finish_reason": self.finish_reason,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
        }

    @property
    def usage(self) -> TokenUsage:
        """The turn's token counts (either may be None)."""
        return TokenUsage(self.prompt_tokens, self.completion_tokens)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], version: int = VERSION) -> Turn:
        """The turn ``data`` describes, as export format ``version`` writes it;
        :class:`ConversationFormatError` if it is not valid.

        ``cell_id``, ``error`` and the fields version 2 added may be missing (they default to
        None); every other field is required and unknown keys are refused (a version 1 turn
        knows none of version 2's), so a typo cannot silently lose information.
        """
        if not isinstance(data, Mapping):
            raise ConversationFormatError(f"a turn must be an object, not {type_name(data)}")
        missing = [name for name in _REQUIRED_TURN_FIELDS if name not in data]
        if missing:
            raise ConversationFormatError(f"turn is missing {', '.join(map(repr, missing))}")
        known = _TURN_FIELD_NAMES if version >= 2 else _TURN_FIELD_NAMES - _VERSION_2_FIELDS
        unknown = [key for key in data if key not in known]
        if unknown:
            raise ConversationFormatError(
                f"turn has unknown key(s) {', '.join(map(repr, unknown))}"
            )
        try:
            return cls(**data)
        except (TypeError, ValueError) as exc:
            raise ConversationFormatError(str(exc)) from None


_TURN_FIELDS = dataclasses.fields(Turn)
_TURN_FIELD_NAMES = frozenset(field.name for field in _TURN_FIELDS)
_VERSION_2_FIELDS = frozenset({"provider", "finish_reason", "prompt_tokens", "completion_tokens"})
_REQUIRED_TURN_FIELDS = tuple(
    field.name for field in _TURN_FIELDS if field.default is dataclasses.MISSING
)

"""Put notebook variables into prompt text: ``{name}``, ``{In[3]}`` and ``{Out[3]}``.

Prompts are full of braces that are not meant for us: JSON, code, templates. So only the
narrowest forms are replaced, and only when they resolve; everything else stays exactly as
written. Nothing is ever evaluated: there is no ``eval``, no ``str.format``, no attribute
access and no call other than turning a value that is actually referenced into text.

That text is bounded (:func:`aivvm_magic.context.describe`): a short value reads as its
``str()``, a long one is cut with a marker, and a DataFrame or an array is described (shape,
dtypes, a few values), so that ``{df}`` never sends a 10 MB repr.

Imports only the standard library, so it can be used and tested without IPython.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import NamedTuple

from .context import describe

__all__ = ["Interpolation", "interpolate", "interpolate_with_report"]

# A reference is "{name}", "{In[n]}" or "{Out[n]}" with nothing else inside, and not part of a
# doubled brace: "{{name}}" is how templates (Mustache, Jinja, str.format escapes) spell
# literal braces, so it is left alone. The name group is a loose pre-filter; the real test is
# str.isidentifier(), which knows Python's rules for non-ASCII names.
_REFERENCE = re.compile(
    r"(?<!\{)\{(?:(?P<history>In|Out)\[(?P<index>0|-?[1-9][0-9]*)\]|(?P<name>[^\W\d]\w*))\}(?!\})"
)

_MISSING = object()


class Interpolation(NamedTuple):
    """The text with references replaced, and which references were replaced."""

    text: str
    #: Each replaced reference once, as written without braces (``"x"``, ``"In[3]"``), in the
    #: order of first appearance.
    names: list[str]


def _is_dunder(name: str) -> bool:
    # "__builtins__", "__import__" and friends; IPython's "_", "__" and "___" (the last three
    # outputs) are all underscores, not dunders, and stay usable.
    return len(name) > 4 and name.startswith("__") and name.endswith("__") and name.strip("_") != ""


def _lookup(match: re.Match[str], namespace: Mapping[str, object]) -> object:
    name = match.group("name")
    if name is not None:
        if not name.isidentifier() or _is_dunder(name):
            return _MISSING
        return namespace.get(name, _MISSING)
    history = namespace.get(match.group("history"), _MISSING)
    index = int(match.group("index"))
    # Call the built-in lookups directly, so a user's own In/Out object with a __getitem__
    # of its own runs no code; IPython's In is a list and its Out a dict.
    if match.group("history") == "In":
        for kind in (list, tuple):
            if isinstance(history, kind):
                try:
                    return kind.__getitem__(history, index)
                except IndexError:
                    return _MISSING
        return _MISSING
    if isinstance(history, dict) and dict.__contains__(history, index):
        return dict.__getitem__(history, index)
    return _MISSING


def interpolate_with_report(
    text: str, namespace: Mapping[str, object], convert: Callable[[object], str] = describe
) -> Interpolation:
    """Replace ``{name}``, ``{In[n]}`` and ``{Out[n]}`` in ``text``; report which were.

    ``{name}`` becomes ``convert(namespace[name])`` when ``name`` is a Python identifier in
    ``namespace`` (names starting with ``_`` are fine; dunder names such as ``__builtins__``
    are not). ``{In[n]}`` and ``{Out[n]}`` become entries of IPython's input list and output
    dict; ``In`` also takes negative indexes, ``{In[-1]}`` being the cell now running.
    ``convert`` is :func:`~aivvm_magic.context.describe` unless given: ``str()`` for what
    is short, a bounded description for what is not.

    Everything else is left exactly as written: undefined names, attribute access, indexing,
    calls, format specs and conversions (``{x.y}``, ``{x[0]}``, ``{f()}``, ``{x!r}``,
    ``{x:>5}``), doubled braces (``{{x}}``), ``{}`` and unbalanced braces. So is a reference
    whose conversion raises. Each value is converted at most once per call.

    Examples
    --------
    ::

        In [1]: topic = "tides"
        In [2]: interpolate_with_report('Explain {topic} as JSON: {"topic": "..."}', globals())
        Out[2]: Interpolation(text='Explain tides as JSON: {"topic": "..."}', names=['topic'])
    """
    if "{" not in text:
        return Interpolation(text, [])  # most cells: no need to run the pattern over them
    converted: dict[str, str | None] = {}
    names: list[str] = []

    def replace(match: re.Match[str]) -> str:
        reference = match.group(0)[1:-1]
        if reference not in converted:
            value = _lookup(match, namespace)
            text_value: str | None = None
            if value is not _MISSING:
                try:
                    text_value = convert(value)
                except Exception:
                    # A value that cannot be shown is not worth failing the whole cell over;
                    # the reference stays visible, so the user can see it was not replaced.
                    text_value = None
            converted[reference] = text_value
            if text_value is not None:
                names.append(reference)
        replacement = converted[reference]
        return match.group(0) if replacement is None else replacement

    return Interpolation(_REFERENCE.sub(replace, text), names)


def interpolate(
    text: str, namespace: Mapping[str, object], convert: Callable[[object], str] = describe
) -> str:
    """``text`` with its references replaced; see :func:`interpolate_with_report`."""
    return interpolate_with_report(text, namespace, convert).text

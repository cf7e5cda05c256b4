"""A notebook value as text of bounded size: what ``{name}`` becomes in a prompt.

Small values read as they always have: a string is itself, a number or a short list is its
``str()``. A value too big for the budget is described instead of printed, and the work done
is bounded by the budget, not by the value: a 10 MB string is sliced, never copied whole; a
list of a million items is walked only as far as the budget goes; a numpy array gives its
shape, its dtype and a few values; a pandas DataFrame its shape, its columns' dtypes and its
first rows as a markdown table. Every cut says so with a marker.

pandas and numpy are never imported here: a value is one of theirs only if the notebook has
imported them already (``sys.modules``), so ``%load_ext`` stays light and neither is needed.
"""

from __future__ import annotations

import sys
from typing import Any

from .bounds import cut

__all__ = ["DEFAULT_LIMIT", "describe", "describe_safely"]

#: The budget of a reference when none is configured (``AivvmMagics.reference_chars``).
DEFAULT_LIMIT = 4_000

#: The first rows a DataFrame or Series shows, and the most columns a table has.
TABLE_ROWS = 5
TABLE_COLUMNS = 20
#: The longest a table cell gets.
CELL_CHARS = 40
#: How many values an array shows at each end of each axis.
EDGE_ITEMS = 3
#: Containers nested deeper than this show as an ellipsis.
MAX_DEPTH = 20


def describe(value: object, limit: int = DEFAULT_LIMIT) -> str:
    """``value`` as text of at most ``limit`` characters.

    A ``str`` is itself and anything else its ``str()``, when that fits; longer ones are cut
    with a marker (a string keeps its start and its end). Lists, tuples, dicts and sets are
    written as ``repr`` writes them, item by item until the budget is spent, then
    ``… N more items``. A numpy array is ``array of shape (…), dtype …:`` and its values,
    summarised; a pandas DataFrame or Series its shape, dtypes and first rows as a markdown
    table. What ``str()`` (or pandas, or numpy) raises is raised: :func:`describe_safely`
    writes a placeholder instead.

    Examples
    --------
    ::

        In [1]: describe("tides")
        Out[1]: 'tides'
        In [2]: describe(list(range(1_000_000)), 60)
        Out[2]: '[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, … 999,989 more items]'
    """
    limit = max(limit, 1)
    return cut(_describe(value, limit), limit)


def describe_safely(value: object, limit: int = DEFAULT_LIMIT) -> str:
    """:func:`describe`, or ``<TypeName: could not be shown>`` when that raises: for the
    values a traceback or a cell's result shows, where one bad ``__str__`` must not cost
    the rest."""
    try:
        return describe(value, limit)
    except Exception:
        return cut(f"<{type(value).__name__}: could not be shown>", max(limit, 1))


def _describe(value: object, limit: int) -> str:
    if isinstance(value, str):
        return value
    kind = type(value)
    if kind in _CONTAINERS or kind is bytes or kind is bytearray:
        return _bounded_repr(value, limit, 0, set())
    pandas = sys.modules.get("pandas")
    if pandas is not None:
        if isinstance(value, pandas.DataFrame):
            return _frame(value, limit)
        if isinstance(value, pandas.Series):
            return _series(value, limit)
    numpy = sys.modules.get("numpy")
    if numpy is not None and isinstance(value, numpy.ndarray):
        return _array(value, limit, numpy)
    # Anything else is what str() makes of it; its size is the object's business.
    return str(value)


# -- builtin containers -----------------------------------------------------------------------

_CONTAINERS = (list, tuple, dict, set, frozenset)
_OPEN = {list: "[", tuple: "(", dict: "{", set: "{", frozenset: "frozenset({"}
_CLOSE = {list: "]", tuple: ")", dict: "}", set: "}", frozenset: "})"}
_EMPTY = {list: "[]", tuple: "()", dict: "{}", set: "set()", frozenset: "frozenset()"}


def _bounded_repr(value: Any, limit: int, depth: int, seen: set[int]) -> str:
    """``repr(value)`` when it fits ``limit``, built item by item so that the work stops
    with the budget; scalars and other objects use their own ``repr``, cut."""
    kind = type(value)
    if kind is str:
        return repr(value) if len(value) <= limit else repr(cut(value, max(limit - 2, 1)))
    if kind is bytes or kind is bytearray:
        head = bytes(value[:limit])
        text = repr(head) if kind is bytes else f"bytearray({head!r})"
        if len(value) <= limit and len(text) <= limit:
            return text
        suffix = f"… {len(value):,} bytes in all"
        return text[: max(limit - len(suffix), 0)] + suffix
    if kind not in _CONTAINERS:
        return cut(repr(value), limit)
    if not value:
        return _EMPTY[kind]
    if id(value) in seen or depth >= MAX_DEPTH:
        return _OPEN[kind] + "..." + _CLOSE[kind]
    seen = seen | {id(value)}
    opening, closing = _OPEN[kind], _CLOSE[kind]
    # Items are written while they fit the whole room; if they all do, that is the repr.
    # If not, the list ends at the last item that leaves room for "… N more items".
    room = limit - len(opening) - len(closing)
    reserved = room - len(f", … {len(value):,} more items")
    parts: list[str] = []
    fit_with_marker = 0
    used = 0
    items = value.items() if kind is dict else value
    for item in items:
        if kind is dict:
            key, val = item
            key_text = _bounded_repr(key, max(room - used, 1), depth + 1, seen)
            val_text = _bounded_repr(val, max(room - used - len(key_text) - 2, 1), depth + 1, seen)
            part = f"{key_text}: {val_text}"
        else:
            part = _bounded_repr(item, max(room - used, 1), depth + 1, seen)
        used += len(part) + (2 if parts else 0)
        if used > room:
            break
        parts.append(part)
        if used <= reserved:
            fit_with_marker = len(parts)
    if len(parts) == len(value):
        body = ", ".join(parts)
        if kind is tuple and len(parts) == 1:
            body += ","
    else:
        parts = parts[:fit_with_marker]
        more = len(value) - len(parts)
        body = ", ".join([*parts, f"… {more:,} more item{'' if more == 1 else 's'}"])
    return opening + body + closing


# -- numpy ------------------------------------------------------------------------------------


def _array(array: Any, limit: int, numpy: Any) -> str:
    head = f"array of shape {tuple(array.shape)}, dtype {array.dtype}"
    if array.size == 0:
        return head + ", empty"
    if array.ndim > 2:
        # array2string keeps 2 × EDGE_ITEMS along every axis, which grows with the number
        # of axes: past two, a few values from the start of the flattened array say enough.
        count = min(array.size, 4 * EDGE_ITEMS)
        first = [array.flat[i] for i in range(count)]
        values = numpy.array2string(numpy.array(first, dtype=array.dtype), separator=", ")
        more = array.size - count
        suffix = f" … {more:,} more values" if more else ""
        return f"{head}; the first values (flattened): {values}{suffix}"
    values = numpy.array2string(
        array, threshold=4 * EDGE_ITEMS, edgeitems=EDGE_ITEMS, max_line_width=100
    )
    return f"{head}:\n{values}"


# -- pandas -----------------------------------------------------------------------------------


def _table_cell(value: object) -> str:
    try:
        text = str(value)
    except Exception:
        text = f"<{type(value).__name__}>"
    text = " ".join(text[: CELL_CHARS * 2].split())
    return cut(text, CELL_CHARS).replace("|", "\\|")


def _count(count: int, what: str) -> str:
    return f"{count:,} {what}{'' if count == 1 else 's'}"


def _rows_heading(shown: int, total: int) -> str:
    if shown == total:
        return "rows:"
    return "first row:" if shown == 1 else f"first {shown} rows:"


def _table(header: list[str], rows: list[list[str]], limit: int) -> tuple[str, int]:
    """A markdown table with as many of ``rows`` as fit ``limit``; and how many did."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    used = sum(len(line) + 1 for line in lines)
    shown = 0
    for row in rows:
        line = "| " + " | ".join(row) + " |"
        if used + len(line) + 1 > limit:
            break
        lines.append(line)
        used += len(line) + 1
        shown += 1
    return "\n".join(lines), shown


def _first_rows(frame: Any, columns: int, limit: int) -> tuple[str, int]:
    head = frame.iloc[:TABLE_ROWS, :columns]
    header = [""] + [_table_cell(name) for name in head.columns]
    rows = [
        [_table_cell(head.index[i])] + [_table_cell(head.iat[i, j]) for j in range(columns)]
        for i in range(len(head))
    ]
    return _table(header, rows, limit)


def _frame(frame: Any, limit: int) -> str:
    rows, columns = frame.shape
    shown_columns = min(columns, TABLE_COLUMNS)
    lines = [f"pandas DataFrame, {_count(rows, 'row')} × {_count(columns, 'column')}"]
    dtypes = frame.dtypes.iloc[:shown_columns]
    listed = ", ".join(f"{_table_cell(name)} {dtype}" for name, dtype in dtypes.items())
    if columns > shown_columns:
        listed += f", … {columns - shown_columns:,} more columns"
    lines.append(f"columns: {listed}" if columns else "no columns")
    if rows and columns:
        room = limit - sum(len(line) + 1 for line in lines) - 40
        table, shown = _first_rows(frame, shown_columns, room)
        if shown:
            lines.extend([_rows_heading(shown, rows), table])
    return "\n".join(lines)


def _series(series: Any, limit: int) -> str:
    name = "" if series.name is None else f" {cut(repr(series.name), CELL_CHARS)}"
    lines = [f"pandas Series{name}, {_count(len(series), 'row')}, dtype {series.dtype}"]
    if len(series):
        head = series.iloc[:TABLE_ROWS]
        rows = [[_table_cell(index), _table_cell(value)] for index, value in head.items()]
        header = ["", _table_cell(series.name if series.name is not None else "value")]
        table, shown = _table(header, rows, limit - len(lines[0]) - 40)
        if shown:
            lines.extend([_rows_heading(shown, len(series)), table])
    return "\n".join(lines)

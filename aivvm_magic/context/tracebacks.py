"""An exception as bounded text for a prompt: what was raised, where, and with what values.

The text reads like a Python traceback, made for a model rather than a terminal: the error
first, then the failing cell's code, then the frames in call order with the user's own code
(cells, and files outside the standard library and site-packages) kept before library code
when something has to go, then the values of the names on the line that failed. Frames that
IPython runs a cell in are left out, runs of frames that did not fit become one marker line,
and library paths are shown from the package down (``pandas/core/frame.py``).
"""

from __future__ import annotations

import functools
import keyword
import linecache
import os
import re
import traceback
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .bounds import cut, excerpt_lines
from .values import describe_safely

__all__ = ["describe_error"]

#: A cell's name from a code object's file name (``"In[3]"``), or None if it is no cell.
CellLabel = Callable[[str], "str | None"]

#: The most names whose values the failing line shows, and the budget of each.
MAX_VALUES = 6
VALUE_CHARS = 300
#: The most exceptions of a chain (``raise … from``, or raised while handling another) named.
MAX_CHAIN = 3

# The kinds of value not worth showing on the failing line: code, not data.
_CODE_TYPES = (
    types.ModuleType,
    types.FunctionType,
    types.BuiltinFunctionType,
    types.MethodType,
    type,
)


def _no_cells(filename: str) -> str | None:
    return None


@dataclass
class _Frame:
    where: str
    line: str
    lineno: int
    user: bool
    package: str
    frame: types.FrameType
    cell: str | None = None
    keep: float = 0.0


def describe_error(
    exc: BaseException,
    limit: int,
    *,
    cell_label: CellLabel = _no_cells,
    code: str | None = None,
    code_label: str = "",
) -> str:
    """``exc`` as text of at most ``limit`` characters: its type and message, the cell's
    ``code`` (``code_label`` says which cell, e.g. ``"In[7]"``), the traceback and the
    values on the line that failed.

    ``cell_label(filename)`` names the notebook's cells (``In[3]``, shown as IPython shows
    them: ``Cell In[3]``); frames before the first cell's are IPython's own and are left out.
    The message gets at most a quarter of the budget and the code a third; the frames take
    what is left, the user's own first.

    Examples
    --------
    ::

        In [1]: try:
           ...:     1 / 0
           ...: except ZeroDivisionError as exc:
           ...:     print(describe_error(exc, 2_000))
        ZeroDivisionError: division by zero
        …
    """
    frames = _frames(exc, cell_label)
    message = cut(_exception_only(exc, cell_label), max(limit // 4, 80))
    chain = _chain(exc, cell_label)
    sections = [f"{message}\n{chain}" if chain else message]
    if code is not None and code.strip():
        around = _failing_line_in(code_label, frames, exc, cell_label)
        budget = max(limit // 3 - 40, 80)
        excerpt = excerpt_lines(code.strip("\n"), budget, around=around)
        sections.append(
            f"The cell that failed ({code_label or 'code'}):\n```python\n{excerpt}\n```"
        )
    used = sum(len(s) + 2 for s in sections)
    values = _values(frames)
    if values:
        values = cut(values, max((limit - used) // 3, 0))
        used += len(values) + 2
    trace = _trace(frames, limit - used - 2)
    if trace:
        sections.append(trace)
    if values:
        sections.append(values)
    return cut("\n\n".join(sections), limit)


# -- the exception --------------------------------------------------------------------------


def _exception_only(exc: BaseException, cell_label: CellLabel) -> str:
    lines = traceback.format_exception_only(type(exc), exc)
    text = "".join(lines).rstrip("\n")
    if isinstance(exc, SyntaxError) and exc.filename:
        # "File "<ipython-input-3-…>", line 1" and the like become "Cell In[3], line 1".
        label = cell_label(exc.filename)
        if label is not None:
            text = text.replace(f'File "{exc.filename}"', f"Cell {label}", 1)
            text = text.replace(f"({exc.filename}, ", f"(Cell {label}, ")
    return text.strip()


def _chain(exc: BaseException, cell_label: CellLabel) -> str:
    lines: list[str] = []
    seen = {id(exc)}
    current: BaseException | None = exc
    while current is not None and len(lines) < MAX_CHAIN:
        if current.__cause__ is not None:
            how, current = "It was raised from", current.__cause__
        elif current.__context__ is not None and not current.__suppress_context__:
            how, current = "It was raised while handling", current.__context__
        else:
            break
        if id(current) in seen:
            break
        seen.add(id(current))
        first = _exception_only(current, cell_label).splitlines()[-1]
        lines.append(f"{how}: {cut(first, 200)}")
        how = "which was raised"
    return "\n".join(lines)


# -- the frames ---------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _library_roots() -> tuple[str, ...]:
    import site
    import sysconfig

    paths = {sysconfig.get_paths().get(k) for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    try:
        paths.update(site.getsitepackages())
        paths.add(site.getusersitepackages())
    except AttributeError:  # a virtualenv's old site.py has neither
        pass
    roots = {os.path.join(os.path.realpath(p), "") for p in paths if p}
    return tuple(sorted(roots, key=len, reverse=True))


def _place(filename: str) -> tuple[bool, str, str]:
    """Whether ``filename`` is the user's own, how to show it, and its top package."""
    if filename.startswith("<"):
        return False, filename, filename.strip("<>").split(" ")[-1].split(".")[0]
    path = os.path.realpath(filename)
    for root in _library_roots():
        if path.startswith(root):
            shown = path[len(root) :]
            return False, shown, shown.split(os.sep)[0].removesuffix(".py")
    for marker in ("site-packages", "dist-packages"):
        if f"{os.sep}{marker}{os.sep}" in path:
            shown = path.split(f"{os.sep}{marker}{os.sep}", 1)[1]
            return False, shown, shown.split(os.sep)[0].removesuffix(".py")
    try:
        relative = os.path.relpath(path)
    except ValueError:  # another drive, on Windows
        relative = path
    return True, (path if relative.startswith("..") else relative), ""


def _frames(exc: BaseException, cell_label: CellLabel) -> list[_Frame]:
    if isinstance(exc, SyntaxError) and exc.filename and cell_label(exc.filename) is not None:
        # A cell that did not compile: its traceback is IPython compiling it, nothing more.
        return []
    found: list[_Frame] = []
    for frame, lineno in traceback.walk_tb(exc.__traceback__):
        filename = frame.f_code.co_filename
        label = cell_label(filename)
        if label is not None:
            user, shown, package = True, f"Cell {label}", ""
        else:
            user, shown, package = _place(filename)
            shown = f'File "{shown}"'
        line = linecache.getline(filename, lineno, frame.f_globals).strip()
        where = f"{shown}, line {lineno}, in {frame.f_code.co_name}"
        found.append(_Frame(where, line, lineno, user, package, frame, label))
    first_cell = next((i for i, f in enumerate(found) if f.cell is not None), None)
    # What runs a cell (IPython's run_code) is no business of the user's or the model's.
    return found[first_cell:] if first_cell is not None else found


def _failing_line_in(
    code_label: str, frames: list[_Frame], exc: BaseException, cell_label: CellLabel
) -> int | None:
    if isinstance(exc, SyntaxError) and exc.filename and cell_label(exc.filename) is not None:
        return exc.lineno
    for frame in reversed(frames):
        if code_label and frame.cell == code_label:
            return frame.lineno
    return None


def _render(frame: _Frame) -> str:
    return f"  {frame.where}\n    {frame.line}" if frame.line else f"  {frame.where}"


def _gap_line(skipped: list[_Frame]) -> str:
    packages = sorted({f.package for f in skipped if not f.user and f.package})
    where = (
        f" (in {', '.join(packages[:4])}{', …' if len(packages) > 4 else ''})" if packages else ""
    )
    count = len(skipped)
    return f"  [… {count:,} frame{'' if count == 1 else 's'} left out{where} …]"


def _trace(frames: list[_Frame], limit: int) -> str:
    """The frames in call order, within ``limit``: the innermost of the user's frames first,
    then the outermost (the cell that ran), then where the error was raised, then the user's
    other frames nearest the error, and library frames last."""
    if not frames:
        return ""
    head = "Traceback (most recent call last):"
    user = [i for i, f in enumerate(frames) if f.user]
    innermost_user = user[-1] if user else len(frames) - 1
    for i, frame in enumerate(frames):
        distance = abs(innermost_user - i)
        frame.keep = (3 + distance) if frame.user else (100 + distance)
    if user:
        frames[user[0]].keep = 1
        frames[innermost_user].keep = 0
    frames[-1].keep = min(frames[-1].keep, 2)
    room = limit - len(head) - 1
    longest_gap = len(_gap_line(frames)) + 1
    chosen: set[int] = set()
    used = 0
    for i in sorted(range(len(frames)), key=lambda i: frames[i].keep):
        # Each frame kept may split a run of left-out frames in two: one more marker line.
        cost = len(_render(frames[i])) + 1 + longest_gap
        if used + cost > room:
            continue
        chosen.add(i)
        used += cost
    if not chosen:
        return ""
    lines = [head]
    skipped: list[_Frame] = []
    for i, frame in enumerate(frames):
        if i in chosen:
            if skipped:
                lines.append(_gap_line(skipped))
                skipped = []
            lines.append(_render(frame))
        else:
            skipped.append(frame)
    if skipped:
        lines.append(_gap_line(skipped))
    return "\n".join(lines)


# -- the values on the failing line ------------------------------------------------------------

_NAME = re.compile(r"(?<![\w.])[^\W\d]\w*")


def _values(frames: list[_Frame]) -> str:
    """The names the innermost user frame's failing line reads, with their values."""
    frame = next((f for f in reversed(frames) if f.user and f.line), None)
    if frame is None:
        return ""
    names: list[str] = []
    for name in _NAME.findall(frame.line):
        if keyword.iskeyword(name) or name in names:
            continue
        names.append(name)
    shown: list[str] = []
    local_names: dict[str, Any] = frame.frame.f_locals
    global_names: dict[str, Any] = frame.frame.f_globals
    for name in names:
        if len(shown) >= MAX_VALUES:
            break
        if name in local_names:
            value = local_names[name]
        elif name in global_names:
            value = global_names[name]
        else:
            continue  # a builtin, or a name the line would have defined
        if isinstance(value, _CODE_TYPES) or name.startswith("__"):
            continue
        # A string is quoted, as Python shows it, so that "1" cannot pass for 1.
        text = repr(cut(value, VALUE_CHARS)) if isinstance(value, str) else None
        text = cut(text or describe_safely(value, VALUE_CHARS), VALUE_CHARS)
        text = text.replace("\n", "\n    ")
        shown.append(f"  {name} = {text}")
    if not shown:
        return ""
    place = frame.where.rsplit(", in ", 1)[0]
    return f"Values on the failing line ({place}):\n" + "\n".join(shown)

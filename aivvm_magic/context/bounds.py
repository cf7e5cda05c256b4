"""Text cut to a budget in characters, with a marker saying what was left out.

Everything the notebook adds to a prompt goes through here, so that a 10 MB string, a cell
of ten thousand lines or a message the length of a page all come out no longer than their
budget, and the model (and the user reading ``%aivvm last``) can see that something was cut.
"""

from __future__ import annotations

__all__ = ["cut", "excerpt_lines"]

#: How much of a cut text its end keeps (the rest goes to its start): the end of a log or a
#: traceback often matters as much as its start.
TAIL_SHARE = 1 / 3

#: How far a cut moves to fall between words (see :func:`cut`).
WORD_REACH = 64


def _marker(left_out: int, total: int, unit: str) -> str:
    return f" [… {left_out:,} of {total:,} {unit} left out …] "


def cut(text: str, limit: int, unit: str = "characters") -> str:
    """``text`` when it is at most ``limit`` characters long; else its start and its end
    around a marker that says how much was left out, the whole at most ``limit`` long.

    Examples
    --------
    ::

        In [1]: cut("abcdefghij" * 10, 60)
        Out[1]: 'abcdefghijabcdef [… 77 of 100 characters left out …] defghij'
    """
    total = len(text)
    if total <= limit:
        return text
    left_out = total - limit
    # The marker's length depends on the number it holds: settle it (two rounds at most).
    for _ in range(4):
        keep = limit - len(_marker(left_out, total, unit))
        if keep < 2:
            return text[: max(limit - 1, 0)] + "…" if limit > 0 else ""
        if total - keep == left_out:
            break
        left_out = total - keep
    tail = int(keep * TAIL_SHARE)
    head_end, tail_start = _at_space(text, keep - tail, -1), _at_space(text, total - tail, 1)
    aligned = text[:head_end] + _marker(tail_start - head_end, total, unit) + text[tail_start:]
    if len(aligned) <= limit:
        return aligned
    # The longer number in the marker took more than the alignment gave back.
    return text[: keep - tail] + _marker(left_out, total, unit) + text[total - tail :]


def _at_space(text: str, index: int, direction: int) -> int:
    """``index`` moved, by at most :data:`WORD_REACH` characters, into the room a cut may
    take (back for the end of the start, on for the start of the end) so that it falls at
    whitespace: a cut never halves a word, a number or a key of that length."""
    for step in range(WORD_REACH + 1):
        at = index + direction * step
        if at <= 0 or at >= len(text):
            break
        if text[at - 1].isspace() or text[at].isspace():
            return at
    return index


def _gap(count: int) -> str:
    return f"[… {count:,} line{'' if count == 1 else 's'} left out …]"


def excerpt_lines(text: str, limit: int, around: int | None = None) -> str:
    """``text`` when it fits ``limit``; else whole lines of it, with a marker line for each
    run of lines left out, at most ``limit`` characters in all.

    ``around`` (a 1-based line number, such as the line an error was raised on) keeps the
    lines nearest it; without it the first lines are kept, and the last ones with a third of
    the room. A single line longer than half the budget is itself cut (:func:`cut`).
    """
    if len(text) <= limit:
        return text
    lines = [cut(line, max(limit // 2, 1)) for line in text.split("\n")]
    count = len(lines)
    # Room for two marker lines (one above, one below the kept lines), whatever they say.
    room = limit - 2 * (len(_gap(count)) + 1)
    if room <= 0:
        return cut(text, limit)
    if around is not None and 1 <= around <= count:
        order = _nearest_first(around - 1, count)
    else:
        order = _head_then_tail(count)
    kept: set[int] = set()
    used = 0
    for index in order:
        cost = len(lines[index]) + 1
        if used + cost > room:
            break
        kept.add(index)
        used += cost
    out: list[str] = []
    skipped = 0
    for index, line in enumerate(lines):
        if index in kept:
            if skipped:
                out.append(_gap(skipped))
                skipped = 0
            out.append(line)
        else:
            skipped += 1
    if skipped:
        out.append(_gap(skipped))
    return "\n".join(out)


def _nearest_first(center: int, count: int) -> list[int]:
    # The line itself, then one above and one below in turn: a contiguous window.
    order = [center]
    for step in range(1, count):
        for index in (center - step, center + step):
            if 0 <= index < count:
                order.append(index)
    return order


def _head_then_tail(count: int) -> list[int]:
    # Two lines from the start for each line from the end: two contiguous blocks.
    head, tail, order = 0, count - 1, []
    while head <= tail:
        for _ in range(2):
            if head <= tail:
                order.append(head)
                head += 1
        if head <= tail:
            order.append(tail)
            tail -= 1
    return order

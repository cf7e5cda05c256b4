"""How much of a conversation fits a model's input: one rule for the conversation and the
provider, so that what a turn sends and what a direct call sends are trimmed alike.

The input of a request is its system message and its messages, counted in characters (the
``maxLength`` of chatbot-ui's models, :func:`~aivvm_magic.protocol.input_char_limit`). The
newest message is the one being asked and always goes; older ones go oldest first until the
rest fits, the system message kept. Standard library only: the conversation layer and the
provider core both use it.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["fit_input", "newest_that_fit"]


def newest_that_fit(costs: Iterable[int], budget: int | None, most: int | None = None) -> int:
    """How many items fit in ``budget`` characters together, ``costs`` given newest first.

    Counting stops at the first item that does not fit (a gap in the history would be worse
    than a shorter one), and after ``most`` items. ``budget`` None: no limit.
    """
    kept = used = 0
    for cost in costs:
        if most is not None and kept >= most:
            break
        if budget is not None and used + cost > budget:
            break
        used += cost
        kept += 1
    return kept


def fit_input(
    messages: list[dict[str, str]], system: str, max_chars: int, model: str = ""
) -> list[dict[str, str]]:
    """``messages`` trimmed to fit ``max_chars`` with ``system``, as chatbot-ui's UI does.

    Empty assistant messages go first: a reply that never came has nothing to tell the model.
    Then the oldest messages go until the rest fits, and an assistant message left first
    (its question gone) goes too. The newest message alone over the budget is a ValueError,
    raised before anything is sent, that says by how much.
    """
    sendable = [m for m in messages if m["content"] or m["role"] != "assistant"]
    if not sendable:
        return sendable
    *history, last = sendable
    base = len(system) + len(last["content"])
    if base > max_chars:
        over = base - max_chars
        raise ValueError(
            f"The message is {len(last['content']):,} characters, and "
            f"{model or 'the model'} takes at most {max_chars:,} characters of input "
            f"(the system message's {len(system):,} included); shorten it by "
            f"{over:,} character{'' if over == 1 else 's'} or more"
        )
    kept = newest_that_fit((len(m["content"]) for m in reversed(history)), max_chars - base)
    fitted = history[len(history) - kept :]
    while fitted and fitted[0]["role"] == "assistant":
        fitted = fitted[1:]
    return [*fitted, last]

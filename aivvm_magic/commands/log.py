"""``%aivvm log`` and ``%aivvm resume``: the history database, read and continued.

Every turn of every session is logged (``AivvmMagics.history``); ``log`` shows the last turns,
one logged conversation, the conversations, or the turns that match a search, and ``resume``
loads a logged conversation back, after a restart, to go on with it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from IPython.core.magic_arguments import argument, magic_arguments

from ..conversation.database import HistoryDatabase, HistoryUnavailable, LoggedTurn, SearchHit
from ..errors import AivvmError
from . import command

_T = TypeVar("_T")

#: The longest a prompt or a reply is shown in a list of turns.
SHOWN_CHARS = 160


def shorten(text: str, limit: int = SHOWN_CHARS) -> str:
    """``text`` on one line, cut to ``limit`` characters with an ellipsis."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _read(database: HistoryDatabase, query: Callable[[HistoryDatabase], _T]) -> _T:
    try:
        return query(database)
    except HistoryUnavailable as exc:
        raise AivvmError(f"The history database cannot be read: {exc}") from None


def turn_heading(logged: LoggedTurn) -> str:
    """``#3 'default', turn 2 · <started> · <model> · cell``, and whether it was replaced."""
    turn = logged.turn
    parts = [
        f"#{logged.conversation_id} {logged.name!r}, turn {logged.position + 1}",
        turn.started,
        turn.model,
        turn.source,
    ]
    if not turn.complete:
        parts.append(f"incomplete: {turn.error or 'cut short'}")
    if logged.replaced:
        parts.append("replaced by a re-run")
    return " · ".join(parts)


def turns_listing(found: Sequence[LoggedTurn | SearchHit]) -> str:
    """Turns (or search hits, with their matching parts) as a heading and two short lines
    each."""
    blocks = []
    for item in found:
        if isinstance(item, SearchHit):
            logged, prompt, reply = item.logged, item.prompt, item.reply
        else:
            logged, prompt, reply = item, item.turn.prompt, item.turn.reply
        blocks.append(
            f"{turn_heading(logged)}\n  You: {shorten(prompt)}\n  Assistant: {shorten(reply)}"
        )
    return "\n".join(blocks)


@command("log", "The history: the last turns, a past conversation, or a search.")
@magic_arguments()
@argument("id", nargs="?", type=int, help="A logged conversation's number: all its turns, in full.")
@argument("-n", "--count", type=int, default=10, help="How many turns to show (default 10).")
@argument("-s", "--search", nargs="+", metavar="WORD", help="The turns holding every WORD.")
@argument("-l", "--list", action="store_true", help="The logged conversations, latest first.")
def log(magics: Any, args: Any) -> None:
    """Show the history database: the last turns logged (``-n``), every turn of one logged
    conversation (``ID``), the conversations (``--list``), or the turns that hold every word
    given to ``--search`` (best matches first; ``reply`` also finds ``replies``)."""
    from ..rendering.transcript import turns_text

    if args.count < 1:
        raise AivvmError("-n/--count must be at least 1")
    history = magics.session.history
    if not history.exists():
        if args.id is not None:
            raise AivvmError(f"No conversation {args.id} in the history (none yet)")
        print(f"The history is empty ({history.path()}).")
        return
    database = history.database()
    if args.search:
        words = " ".join(args.search)
        hits = _read(database, lambda db: db.search(words, limit=args.count))
        if not hits:
            print(f"No logged turn holds {words!r}.")
            return
        print(turns_listing(hits))
    elif args.list:
        found = _read(database, lambda db: db.conversations(limit=args.count))
        print(f"Conversations in {database.path}, the latest first:")
        for c in found:
            first = shorten(c.first_prompt, 60)
            turns = f"{c.turns} turn" + ("" if c.turns == 1 else "s")
            print(f"  #{c.id:<5} {c.name!r}, {turns}, {c.updated}: {first}")
        if not found:
            print("  (none yet)")
    elif args.id is not None:
        try:
            logged, turns = _read(database, lambda db: db.conversation(args.id))
        except KeyError:
            raise AivvmError(
                f"No conversation {args.id} in the history ({database.path})"
            ) from None
        print(
            f"#{logged.id} {logged.name!r}, {len(turns)} turns, {logged.created} to "
            f"{logged.updated}; %aivvm resume {logged.id} continues it.\n"
        )
        print(turns_text(turns), end="")
    else:
        recent = _read(database, lambda db: db.recent(limit=args.count))
        if not recent:
            print(f"The history is empty ({database.path}).")
            return
        print(turns_listing(recent))


@command("resume", "Continue a logged conversation (after a restart, say).")
@magic_arguments()
@argument("id", type=int, help="The logged conversation's number (%%aivvm log shows it).")
@argument(
    "-c",
    "--chat",
    help="The conversation to load it into (default: the name it was logged under).",
)
def resume(magics: Any, args: Any) -> None:
    """Load a logged conversation's turns into a conversation of this session (replacing what
    it held, which is logged too), so the next cells and panels continue it; its new turns are
    logged under the same number."""
    conversation = magics.session.resume(args.id, args.chat)
    print(
        f"Resumed #{args.id} into {conversation.name!r} ({len(conversation)} turns); "
        f"%%aivvm -c {conversation.name} continues it."
    )

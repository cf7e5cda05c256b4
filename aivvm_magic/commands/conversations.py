"""``%aivvm history``, ``reset``, ``export`` and ``import``: one conversation at a time."""

from __future__ import annotations

from typing import Any

from IPython.core.magic_arguments import argument, magic_arguments

from ..errors import AivvmError, one_line
from . import chat_option, command

_path = argument("path", help="The file: .json or .md.")


@command("history", "The conversation's turns, numbered.")
@magic_arguments()
@chat_option
def history(magics: Any, args: Any) -> None:
    """Print the conversation's turns, numbered, with each turn's model and start time."""
    from ..rendering.transcript import turns_text

    conversation = magics.chats.get(args.chat)
    if not len(conversation):
        print(f"Conversation {args.chat!r} is empty.")
        return
    print(turns_text(conversation.turns), end="")


@command("reset", "Forget every turn of the conversation.")
@magic_arguments()
@chat_option
def reset(magics: Any, args: Any) -> None:
    """Forget every turn of the conversation."""
    conversation = magics.chats.get(args.chat)
    count = len(conversation)
    conversation.reset()
    print(f"Conversation {args.chat!r} reset ({count} turns removed).")


@command("export", "Write the conversation to a .json or .md file.")
@magic_arguments()
@_path
@chat_option
def export(magics: Any, args: Any) -> None:
    """Write the conversation to a ``.json`` or ``.md`` file that ``import`` reads back."""
    conversation = magics.chats.get(args.chat)
    try:
        conversation.export(args.path)
    except (ValueError, OSError) as exc:
        raise AivvmError(f"Could not export to {args.path}: {one_line(exc)}") from None
    print(f"Exported {len(conversation)} turns of {args.chat!r} to {args.path}")


@command("import", "Replace the conversation with a .json or .md export.")
@magic_arguments()
@_path
@chat_option
def import_(magics: Any, args: Any) -> None:
    """Replace the conversation with the turns of a ``.json`` or ``.md`` export; a file that
    is not one changes nothing."""
    from ..conversation import Conversation

    try:
        loaded = Conversation.load(args.path)
    except (ValueError, OSError) as exc:
        raise AivvmError(one_line(exc)) from None
    conversation = magics.chats.get(args.chat)
    conversation.replace_with(loaded)
    print(f"Imported {len(loaded)} turns into {args.chat!r} from {args.path}")

"""``%aivvm panel``: a chat panel on a conversation."""

from __future__ import annotations

from typing import Any

from IPython.core.magic_arguments import magic_arguments

from . import chat_option, command


@command("panel", "A chat panel on the conversation, beside the cells.")
@magic_arguments()
@chat_option
def panel(magics: Any, args: Any) -> None:
    """Show a chat panel on the conversation."""
    from ..panel import ChatPanel

    # Shown with a display id (not returned as Out[]), so its static transcript can be
    # updated as the conversation grows.
    ChatPanel(chat=args.chat, session=magics.session).display()

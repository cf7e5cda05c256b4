"""Conversations: the chat history that notebook cells and chat panels share.

A :class:`Conversation` holds :class:`Turn` records (one prompt and the reply to it). It builds
the message list for the next request, trimmed to a character budget; tells its views (panels,
cells) what happens through :meth:`Conversation.subscribe`; lets only one reply stream into it
at a time (:meth:`Conversation.streaming`); and exports to, and loads from, JSON and Markdown
files that round-trip exactly.

This package is the *conversation* layer: it knows messages, roles and history, and nothing
about HTTP, IPython or widgets, so it imports only the standard library. Its modules:

- :mod:`.turn`: the :class:`Turn` record, checked on construction;
- :mod:`.events`: :class:`ConversationEvent` and the :class:`Listeners` registry;
- :mod:`.pending`: :class:`PendingReply`, a reply on its way in;
- :mod:`.history`: :class:`Conversation` itself;
- :mod:`.store`: :class:`ConversationStore`, a session's conversations by name;
- :mod:`.files`: the JSON and Markdown export formats, on plain data.
"""

from __future__ import annotations

from .events import EVENT_KINDS, ConversationEvent, Listeners, log_listener_error
from .files import FORMAT, VERSION, ConversationFormatError
from .history import Conversation, ConversationBusy, FittedMessages, Messages
from .pending import PendingReply
from .store import ConversationStore
from .turn import SOURCES, Turn

__all__ = [
    "EVENT_KINDS",
    "FORMAT",
    "SOURCES",
    "VERSION",
    "Conversation",
    "ConversationBusy",
    "ConversationEvent",
    "ConversationFormatError",
    "ConversationStore",
    "FittedMessages",
    "Listeners",
    "Messages",
    "PendingReply",
    "Turn",
    "log_listener_error",
]

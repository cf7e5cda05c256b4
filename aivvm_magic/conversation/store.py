"""The conversations of a session, by name: :class:`ConversationStore`."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator

from .history import Conversation

__all__ = ["ConversationStore"]


class ConversationStore:
    """Named conversations, made on first use; one store serves a whole IPython session.

    The magic and every chat panel of a session look conversations up here by name, so a
    panel and a cell that name the same conversation share its history. Thread-safe.

    Examples
    --------
    ::

        In [1]: store = ConversationStore()
        In [2]: store.get("default") is store.get("default")
        Out[2]: True
        In [3]: store.names()
        Out[3]: ['default']
    """

    def __init__(
        self,
        conversations: Iterable[Conversation] = (),
        *,
        made: Callable[[Conversation], object] | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._conversations: dict[str, Conversation] = {c.name: c for c in conversations}
        #: Called with each conversation the store makes, before anyone can use it (the
        #: session's history log subscribes there); it must not use the store.
        self._made = made

    def get(self, name: str = "default") -> Conversation:
        """The conversation called ``name``, made empty if there is none yet."""
        with self._lock:
            conversation = self._conversations.get(name)
            if conversation is None:
                conversation = self._conversations[name] = Conversation(name)
                if self._made is not None:
                    self._made(conversation)
            return conversation

    def __getitem__(self, name: str) -> Conversation:
        with self._lock:
            try:
                return self._conversations[name]
            except KeyError:
                raise KeyError(f"no conversation named {name!r}") from None

    def __contains__(self, name: object) -> bool:
        with self._lock:
            return name in self._conversations

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        with self._lock:
            return len(self._conversations)

    def names(self) -> list[str]:
        """The names of the conversations, oldest first."""
        with self._lock:
            return list(self._conversations)

    def remove(self, name: str) -> Conversation:
        """Forget the conversation called ``name`` and return it; KeyError if there is none."""
        with self._lock:
            try:
                return self._conversations.pop(name)
            except KeyError:
                raise KeyError(f"no conversation named {name!r}") from None

    def __repr__(self) -> str:
        return f"<ConversationStore {self.names()!r}>"

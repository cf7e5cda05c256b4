"""A session: what the cells and panels of one IPython session share.

The :class:`Session` holds the conversations (by name), says where requests go (a configured
server, the embedded one started on first use, or a record of replies), builds each request's
settings from the session's :class:`~aivvm_magic.settings.Settings`, and owns the one render
loop that draws every live view (cells and panels), the one worker that makes the session's
background lookups, and the history database every turn is logged to. The magics own one; a
chat panel is handed it and never imports the magics.

Examples
--------
::

    In [1]: from aivvm_magic.session import Session
    In [2]: from aivvm_magic.settings import Settings
    In [3]: session = Session(Settings(base_url="http://127.0.0.1:8000"))
    In [4]: session.target().brief
    Out[4]: '127.0.0.1:8000'
    In [5]: session.request_settings(model="gpt-4").model
    Out[5]: 'gpt-4'
"""

from __future__ import annotations

import os
import weakref
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, NamedTuple

from . import embedded
from .aliases import Alias, parse_aliases
from .conversation import Conversation, ConversationStore
from .conversation.database import HistoryUnavailable
from .errors import AivvmError, one_line
from .rendering.loop import RenderLoop
from .secret_types import hidden, public_url
from .session_history import SessionHistory
from .settings import Settings
from .worker import Worker

if TYPE_CHECKING:
    from .replay import Replay
    from .turns import TurnSettings

__all__ = ["Session"]


class Session:
    """The conversations, the request target and the request settings of one session."""

    def __init__(self, settings: Settings) -> None:
        #: Where every default comes from; the magics instance in a notebook.
        self.settings = settings
        #: The history database, and the log that writes every turn of :attr:`chats` to it.
        self.history = SessionHistory(settings)
        #: The conversations, by name; cells and panels that name one share it.
        self.chats = ConversationStore(made=self.history.follow)
        #: Draws every live view of the session on one thread, started with the first view.
        self.render_loop = RenderLoop()
        # Lookups that may take seconds (a server's model list) run here, not in a cell.
        self._lookups = Worker("aivvm-lookups")
        # The record the replay settings name, kept while they name it.
        self._replay: Replay | None = None
        self._finalizer = weakref.finalize(
            self, _close, self.render_loop, self._lookups, self.history
        )

    def submit(self, function: Any, *args: Any) -> Future[Any]:
        """Run ``function(*args)`` on the session's lookup worker; its future."""
        return self._lookups.submit(function, *args)

    def close(self) -> None:
        """Stop the session's threads (when the extension is unloaded)."""
        self._finalizer()

    def target(self, base_url: str | None = None, provider: str = "") -> Target:
        """Where requests go: the base URL to use, described in full and in brief.

        ``base_url`` overrides the configured one; with neither, the embedded server (started
        now if it is not running) answers, under ``/v1`` for the ``openai`` provider. When a
        record replays the replies, the description says so, and no server is started.
        """
        settings = self.settings
        url = (base_url or settings.base_url).rstrip("/")
        replay = self.replay()
        # In replay mode the record answers, whatever server is configured: none is started.
        replaying = replay.describe() if replay is not None and replay.mode == "replay" else ""
        if replaying:
            return Target(url, replaying, replaying)
        if url:
            # Described without user info or query: the description is shown and saved.
            return Target(url, public_url(url), brief_url(url))
        options = {"model_path": settings.local_model_path} if settings.local_model_path else {}
        if settings.embedded_engine == "echo":
            options = {}
        try:
            server = embedded.embedded_server(settings.embedded_engine, **options)
        except (ImportError, OSError, ValueError) as exc:
            # A missing model file or llama-cpp-python: say so in one line, not a traceback.
            raise AivvmError(f"The embedded server could not start: {one_line(exc)}") from None
        # The reference server speaks both protocols; OpenAI clients live under /v1.
        suffix = "/v1" if (provider or settings.provider) == "openai" else ""
        return Target(server.url + suffix, embedded.describe(server), "embedded server")

    def aliases(self) -> dict[str, Alias]:
        """The configured aliases (``AivvmMagics.aliases``), by name."""
        return parse_aliases(self.settings.aliases)

    def request_settings(self, **overrides: Any) -> TurnSettings:
        """The settings of one request: the session's, with ``overrides`` that are not None.

        A model that is an alias brings its provider, model and endpoint (and says where its
        key is); a provider or base URL given that the alias sets otherwise is a ValueError.
        The key is the one for the request's provider, so that a key for one service never
        goes to another.
        """
        from .turns import TurnSettings

        settings = self.settings
        values: dict[str, Any] = {
            "model": settings.model,
            "temperature": settings.temperature,
            "system": settings.system_message,
            "base_url": settings.base_url,
            "provider": settings.provider,
            "connect_timeout": settings.connect_timeout,
            "read_timeout": settings.read_timeout,
            "retries": settings.retries,
            "history_limit": settings.history_limit,
        }
        given = {k: v for k, v in overrides.items() if v is not None}
        values.update(given)
        alias = self.aliases().get(values["model"])
        if alias is not None:
            values.update(self._alias_values(alias, given))
        values.setdefault("key", settings.key_for(values["provider"]))
        values.setdefault("replay", self.replay())
        return TurnSettings(**values)

    def replay(self) -> Replay | None:
        """The record that answers requests or records their replies, as ``replay_path`` and
        ``replay_mode`` say; None when there is none, or the mode is ``off``.

        A relative path is the kernel's working directory's (the notebook's folder).
        """
        settings = self.settings
        if not settings.replay_path or settings.replay_mode == "off":
            return None
        from .replay import Replay, ReplayRecord

        path = os.path.abspath(os.path.expanduser(settings.replay_path))
        replay = self._replay
        if replay is None or str(replay.record.path) != path or replay.mode != settings.replay_mode:
            replay = self._replay = Replay(ReplayRecord(path), settings.replay_mode)
        return replay

    def resume(self, conversation_id: int, chat: str | None = None) -> Conversation:
        """Load logged conversation ``conversation_id`` into conversation ``chat`` (by default
        the name it was logged under) and log its next turns under the same id.

        What ``chat`` held is replaced (it is in the history too). :class:`AivvmError` (one
        line) when the history cannot be read, has no such conversation, or ``chat`` is busy.
        """
        if not self.history.exists():
            raise AivvmError(f"No conversation {conversation_id} in the history (none yet)")
        database = self.history.database()
        try:
            logged, turns = database.conversation(conversation_id)
        except KeyError:
            raise AivvmError(
                f"No conversation {conversation_id} in the history ({database.path})"
            ) from None
        except HistoryUnavailable as exc:
            raise AivvmError(f"The history database cannot be read: {exc}") from None
        conversation = self.chats.get(chat or logged.name)
        if conversation.busy:
            raise AivvmError(
                f"Conversation {conversation.name!r} is busy with a reply; resume it when the "
                "reply ends"
            )
        conversation.replace_with(Conversation.from_turns(conversation.name, turns, logged.system))
        self.history.log.bind(conversation, logged.id, database)
        return conversation

    def _alias_values(self, alias: Alias, given: dict[str, Any]) -> dict[str, Any]:
        """What ``alias`` sets of a request's settings: its model, name, and what it names of
        provider, endpoint and key."""
        values: dict[str, Any] = {"model": alias.model, "alias": alias.name}
        for field in ("provider", "base_url"):
            mine = getattr(alias, field)
            if not mine:
                continue
            if given.get(field) not in (None, mine):
                what = "provider" if field == "provider" else "base URL"
                raise ValueError(
                    f"{alias.name!r} is an alias with its own {what} ({mine}); give no other "
                    "with it, or use a model id"
                )
            values[field] = mine
        if alias.key_env:
            values["key"] = hidden(os.environ.get(alias.key_env, ""))
        elif alias.key_from:
            values["key"] = getattr(self.settings, alias.key_from)
        elif alias.base_url:
            # An endpoint of its own gets no key it did not name.
            values["key"] = hidden("")
        return values

    def __repr__(self) -> str:
        return f"<Session {self.chats.names()!r}>"


class Target(NamedTuple):
    """Where a session's requests go (:meth:`Session.target`)."""

    #: The base URL requests go to; in replay mode, the configured one (maybe ``""``).
    url: str
    #: In full, for ``%aivvm status`` and a reply's provenance: a URL without user info or
    #: query, ``embedded server, echo engine``, ``replay of record.json``.
    described: str
    #: In the few words of a status line: ``127.0.0.1:8000``, ``embedded server``.
    brief: str


def brief_url(url: str) -> str:
    """A base URL as status lines give it: its host, port and path, without the scheme (nor
    user info or query, where a key could be)."""
    return public_url(url).split("://", 1)[-1]


def _close(loop: RenderLoop, lookups: Worker, history: SessionHistory) -> None:
    loop.close()
    lookups.shutdown()
    history.close()

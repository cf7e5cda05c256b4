"""Stand-ins for a chatbot-ui deployment, shared by the tests that talk to one.

The reference server in chatbot-ui mode does what the deployed server does by design; the
fault server's :func:`relayed` is its answer to an upstream error, byte for byte.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from aivvm_magic.magics import magics_for
from aivvm_magic.server import ServerHandle, start_server
from tests.faultserver import Reply

#: The only key the deployment's upstream takes (an empty key is the server's own).
KEY = "sk-deployment-right-91c7"


def serve_deployment() -> Iterator[ServerHandle]:
    """For a fixture: the reference server in chatbot-ui mode, whose upstream takes only
    ``KEY``, until the fixture ends."""
    with start_server(mode="chatbot-ui", api_key=KEY) as server:
        yield server


def relayed(message: str, status: int = 500) -> Reply:
    """chatbot-ui's answer to an upstream error: ``message`` as the reason phrase, body Error."""
    return Reply(
        status,
        b"Error",
        framing="chunked",
        reason=message,
        headers={"Content-Type": "text/plain;charset=UTF-8"},
    )


@contextlib.contextmanager
def open_panel(shell: Any, chat: str, base_url: str, **settings: Any) -> Iterator[Any]:
    """A chat panel on ``chat`` talking to ``base_url`` (with the magics' ``settings``), its
    model list loaded; closed at the end."""
    from aivvm_magic import ChatPanel

    magics = magics_for(shell)
    magics.base_url = base_url
    for name, value in settings.items():
        setattr(magics, name, value)
    panel = ChatPanel(chat, magics=magics)
    try:
        panel.models_loaded.result(timeout=10)
        yield panel
    finally:
        panel.close()

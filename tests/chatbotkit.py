"""Stand-ins for a chatbot-ui deployment, shared by the tests that talk to one.

The reference server in chatbot-ui mode does what the deployed server does by design; the
fault server's :func:`relayed` is its answer to an upstream error, byte for byte.
"""

from __future__ import annotations

from collections.abc import Iterator

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

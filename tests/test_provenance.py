"""Each reply's provenance, through a real ``InteractiveShell``: the output's metadata, the
status line's tokens, the turn's record, and never the key.

The cells run in widget mode without streaming, so the final bundle is published with
``display`` as in a kernel and ``capture_output`` sees it with its metadata;
``tests/test_kernel_provenance.py`` runs the streamed path in a real kernel.
"""

from __future__ import annotations

import json
import re
from datetime import datetime

import pytest
from IPython.utils.capture import capture_output

from aivvm_magic.errors import AivvmError
from aivvm_magic.magics import magics_for
from aivvm_magic.provenance import public_target
from aivvm_magic.server import start_server
from tests.conftest import CANARY
from tests.faultserver import Reply, openai_sse
from tests.test_secrets import assert_absent

KEYS = {
    "model",
    "provider",
    "alias",
    "target",
    "temperature",
    "started",
    "duration",
    "characters",
    "usage",
    "finish_reason",
    "complete",
    "error",
    "format",
}


@pytest.fixture
def widget_shell(ip):
    """The ``ip`` shell, its replies shown as a kernel shows them."""
    magics_for(ip).display_mode = "widget"
    return ip


def run(ip, line: str, cell: str):
    """Run a ``%%aivvm`` cell; its last output (the final bundle) and the error it raised."""
    error = None
    with capture_output() as captured:
        try:
            ip.run_cell_magic("aivvm", f"--no-stream {line}", cell)
        except AivvmError as exc:
            error = exc
    return captured.outputs[-1], error


def last_turn(ip, chat: str = "default"):
    return magics_for(ip).chats.get(chat).last_turn


def test_an_openai_reply_carries_everything_and_its_tokens(widget_shell, reference):
    output, error = run(
        widget_shell, f"-p openai --base-url {reference.url}/v1 -m gpt-4 -t 0.2", "a b c"
    )
    assert error is None
    provenance = output.metadata["aivvm"]
    assert set(provenance) == KEYS
    turn = last_turn(widget_shell)
    words = len(turn.system.split()) + 3  # the echo engine counts words
    assert provenance == {
        "model": "gpt-4",
        "provider": "openai",
        "alias": None,
        "target": f"{reference.url}/v1",
        "temperature": 0.2,
        "started": turn.started,
        "duration": turn.duration,
        "characters": 5,
        "usage": {"prompt_tokens": words, "completion_tokens": 3, "total_tokens": words + 3},
        "finish_reason": "stop",
        "complete": True,
        "error": None,
        "format": "markdown",
    }
    datetime.fromisoformat(provenance["started"])
    assert f"5 chars · tokens: {words} in, 3 out</small>" in output.data["text/html"]
    assert (turn.provider, turn.finish_reason) == ("openai", "stop")
    assert (turn.prompt_tokens, turn.completion_tokens) == (words, 3)


def test_an_aivvm_reply_says_what_it_cannot_know(widget_shell, reference):
    output, _ = run(widget_shell, "", "Hello")
    provenance = output.metadata["aivvm"]
    assert provenance["provider"] == "aivvm" and provenance["model"] == "gpt-3.5-turbo"
    assert provenance["usage"] is None and provenance["finish_reason"] is None
    assert provenance["target"] == reference.url and provenance["complete"] is True
    assert "tokens" not in output.data["text/html"]
    assert last_turn(widget_shell).usage.summary() == ""


def test_a_reply_cut_short_says_so(widget_shell, fault):
    fault.enqueue(Reply(chunks=[openai_sse("half ", "a reply", done=False)]))
    output, error = run(widget_shell, f"-p openai -m m --base-url {fault.url}", "Hi")
    assert "without [DONE]" in str(error)
    provenance = output.metadata["aivvm"]
    assert provenance["complete"] is False and "without [DONE]" in provenance["error"]
    assert provenance["characters"] == len("half a reply") and provenance["usage"] is None
    assert not last_turn(widget_shell).complete


def test_a_one_off_question_has_provenance_too(widget_shell, reference):
    output, _ = run(
        widget_shell, f"--no-history -p openai --base-url {reference.url}/v1 -m x", "one"
    )
    provenance = output.metadata["aivvm"]
    assert provenance["usage"]["completion_tokens"] == 1
    assert provenance["duration"] >= 0 and re.match(r"\d{4}-", provenance["started"])
    assert last_turn(widget_shell) is None


def test_the_key_never_goes_into_the_provenance(widget_shell):
    with start_server(engine="echo", api_key=CANARY) as server:
        magics_for(widget_shell).openai_api_key = CANARY
        output, error = run(widget_shell, f"-p openai -m m --base-url {server.url}/v1", "hi")
        assert error is None  # the key was sent, and right
    assert output.metadata["aivvm"]["target"] == f"{server.url}/v1"
    assert_absent("the provenance", json.dumps(output.metadata))
    assert_absent("the output", json.dumps(output.data))


def test_a_target_url_loses_the_credentials_it_carries(widget_shell, reference):
    host = reference.url.removeprefix("http://")
    output, error = run(widget_shell, f"--base-url http://me:{CANARY}@{host}", "hi")
    assert error is None
    assert output.metadata["aivvm"]["target"] == reference.url
    assert_absent("the provenance", json.dumps(output.metadata))
    assert_absent("the output", json.dumps(output.data))


@pytest.mark.parametrize(
    ("target", "shown"),
    [
        ("embedded server, echo engine", "embedded server, echo engine"),
        ("http://127.0.0.1:8000/", "http://127.0.0.1:8000"),
        ("https://u:p@example.com:8443/v1?key=k#f", "https://example.com:8443/v1"),
        ("http://[::1]:9/v1", "http://[::1]:9/v1"),
    ],
)
def test_a_public_target_has_no_credentials(target, shown):
    assert public_target(target) == shown

"""Each reply's provenance, through a real ``InteractiveShell``: the output's metadata, the
status line's tokens, the turn's record, and never the key.

Each cell's final output is taken as a kernel would publish it (``tests/outputkit.py``);
``tests/test_kernel_provenance.py`` runs the streamed path in a real kernel.
"""

from __future__ import annotations

import json
import re
from datetime import datetime

from aivvm_magic.magics import magics_for
from aivvm_magic.server import start_server
from tests.conftest import CANARY
from tests.faultserver import Reply, openai_sse
from tests.outputkit import final_output
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


def last_turn(ip, chat: str = "default"):
    return magics_for(ip).chats.get(chat).last_turn


def test_an_openai_reply_carries_everything_and_its_tokens(ip, reference):
    output, error = final_output(
        ip, f"-p openai --base-url {reference.url}/v1 -m gpt-4 -t 0.2", "a b c"
    )
    assert error is None
    provenance = output.metadata["aivvm"]
    assert set(provenance) == KEYS
    turn = last_turn(ip)
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


def test_an_aivvm_reply_says_what_it_cannot_know(ip, reference, fault):
    output, _ = final_output(ip, "", "Hello")
    provenance = output.metadata["aivvm"]
    assert provenance["provider"] == "aivvm" and provenance["model"] == "gpt-3.5-turbo"
    # The protocol counts no tokens; how the reply ended, the reference server says (its
    # X-Aivvm-Reply-End extension) and a server without that extension does not.
    assert provenance["usage"] is None and provenance["finish_reason"] == "stop"
    assert provenance["target"] == reference.url and provenance["complete"] is True
    elsewhere, _ = final_output(ip, f"--base-url {fault.url}", "Hello")
    assert elsewhere.metadata["aivvm"]["finish_reason"] is None
    assert "tokens" not in output.data["text/html"]
    assert last_turn(ip).usage.summary() == ""


def test_a_reply_cut_short_says_so(ip, fault):
    fault.enqueue(Reply(chunks=[openai_sse("half ", "a reply", done=False)]))
    output, error = final_output(ip, f"-p openai -m m --base-url {fault.url}", "Hi")
    assert "without [DONE]" in str(error)
    provenance = output.metadata["aivvm"]
    assert provenance["complete"] is False and "without [DONE]" in provenance["error"]
    assert provenance["characters"] == len("half a reply") and provenance["usage"] is None
    assert not last_turn(ip).complete


def test_a_one_off_question_has_provenance_too(ip, reference):
    output, _ = final_output(
        ip, f"--no-history -p openai --base-url {reference.url}/v1 -m x", "one"
    )
    provenance = output.metadata["aivvm"]
    assert provenance["usage"]["completion_tokens"] == 1
    assert provenance["duration"] >= 0 and re.match(r"\d{4}-", provenance["started"])
    assert last_turn(ip) is None


def test_the_key_never_goes_into_the_provenance(ip):
    with start_server(engine="echo", api_key=CANARY) as server:
        magics_for(ip).openai_api_key = CANARY
        output, error = final_output(ip, f"-p openai -m m --base-url {server.url}/v1", "hi")
        assert error is None  # the key was sent, and right
    assert output.metadata["aivvm"]["target"] == f"{server.url}/v1"
    assert_absent("the provenance", json.dumps(output.metadata))
    assert_absent("the output", json.dumps(output.data))


def test_a_target_url_loses_the_credentials_it_carries(ip, reference):
    host = reference.url.removeprefix("http://")
    output, error = final_output(ip, f"--base-url http://me:{CANARY}@{host}", "hi")
    assert error is None
    assert output.metadata["aivvm"]["target"] == reference.url
    assert_absent("the provenance", json.dumps(output.metadata))
    assert_absent("the output", json.dumps(output.data))

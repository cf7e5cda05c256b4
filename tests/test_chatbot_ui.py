"""The client against what a chatbot-ui deployment really does: its errors and its retries.

Two stand-ins for a deployment, both on 127.0.0.1: the reference server in chatbot-ui mode
(what the deployed server does by design), and the fault server (what it does by accident,
or byte for byte: a reason phrase of any kind).
"""

from __future__ import annotations

import html
import json
import logging
import time
from collections.abc import Iterator

import pytest
from IPython.core.error import UsageError

from aivvm_magic.errors import AivvmError
from aivvm_magic.magics import magics_for
from aivvm_magic.protocol import SERVER_MODELS, models
from aivvm_magic.providers import Aivvm, APIError
from aivvm_magic.providers.answers import error_reason, retryable, server_message
from aivvm_magic.providers.transport import RetryPolicy
from aivvm_magic.server import ServerHandle, start_server
from aivvm_magic.session import brief_url
from tests.chatbotkit import KEY, open_panel, relayed, serve_deployment
from tests.conftest import CANARY
from tests.faultserver import (
    FaultServer,
    Raw,
    Reply,
    closed_port,
    json_error,
    rate_limited,
    server_error,
)

pytestmark = pytest.mark.timeout(60)

HELLO = [{"role": "user", "content": "Hello there"}]
WRONG_KEY = "Incorrect API key provided."
BAD_TEMPERATURE = "'temperature' must be a number between 0 and 2"


@pytest.fixture(scope="module")
def deployment() -> Iterator[ServerHandle]:
    yield from serve_deployment()


# -- 1. the reason is the server's ---------------------------------------------------------------


def test_a_wrong_key_reads_as_the_servers_message(deployment):
    before = len(deployment.requests)
    started = time.monotonic()
    with pytest.raises(APIError) as info:
        Aivvm.create_completion("", HELLO, False, base_url=deployment.url, key="sk-wrong")
    elapsed = time.monotonic() - started
    assert str(info.value) == f"HTTP 500 from {deployment.url}/api/chat: {WRONG_KEY}"
    assert info.value.reason == WRONG_KEY and info.value.status_code == 500
    # 2. Not retried: one request, and the error at once (the default allows 2 retries).
    assert len(deployment.requests) == before + 1
    assert elapsed < 0.5


def test_a_bad_temperature_reads_as_the_servers_message(deployment):
    before = len(deployment.requests)
    with pytest.raises(APIError) as info:
        Aivvm.create_completion("", HELLO, False, base_url=deployment.url, temperature=3)
    assert str(info.value) == f"HTTP 500 from {deployment.url}/api/chat: {BAD_TEMPERATURE}"
    assert len(deployment.requests) == before + 1


def test_the_right_key_and_the_servers_own_are_served(deployment):
    assert Aivvm.create_completion("", HELLO, False, base_url=deployment.url, key=KEY) == (
        "Hello there"
    )
    assert Aivvm.create_completion("", HELLO, False, base_url=deployment.url, key="") == (
        "Hello there"
    )


def test_a_reason_phrase_from_the_fault_server_is_the_message(fault: FaultServer):
    fault.enqueue(relayed(WRONG_KEY))
    with pytest.raises(APIError) as info:
        Aivvm.create_completion("", HELLO, False, base_url=fault.url, retries=2)
    assert str(info.value) == f"HTTP 500 from {fault.url}/api/chat: {WRONG_KEY}"
    assert len(fault.requests) == 1


def test_a_reason_phrase_written_in_utf8_reads_whole(fault: FaultServer):
    phrase = "Clé d'API incorrecte ✗".encode()
    fault.enqueue(Raw(b"HTTP/1.1 500 " + phrase + b"\r\nContent-Length: 5\r\n\r\nError"))
    with pytest.raises(APIError) as info:
        Aivvm.create_completion("", HELLO, False, base_url=fault.url, retries=0)
    assert info.value.reason == "Clé d'API incorrecte ✗"


def test_the_standard_phrase_leaves_the_body_to_say_why(fault: FaultServer):
    fault.enqueue(server_error(), json_error(401, {"error": {"message": "Invalid key"}}))
    with pytest.raises(APIError) as info:
        Aivvm.create_completion("", HELLO, False, base_url=fault.url, retries=0)
    assert info.value.reason == "Error"
    with pytest.raises(APIError) as info:
        Aivvm.create_completion("", HELLO, False, base_url=fault.url, retries=0)
    assert info.value.reason == "Invalid key"


def test_a_phrase_and_a_body_that_both_say_something_are_both_shown(fault: FaultServer):
    fault.enqueue(Reply(502, b"upstream connect error", reason="Gateway trouble"))
    with pytest.raises(APIError) as info:
        Aivvm.create_completion("", HELLO, False, base_url=fault.url, retries=0)
    assert info.value.reason == "Gateway trouble (upstream connect error)"


def test_the_key_in_a_reason_phrase_is_blanked(fault: FaultServer):
    fault.enqueue(relayed(f"Incorrect API key provided: {CANARY}"))
    with pytest.raises(APIError) as info:
        Aivvm.create_completion("", HELLO, False, base_url=fault.url, key=CANARY)
    assert CANARY not in str(info.value) and CANARY not in repr(info.value.args)
    assert info.value.reason == "Incorrect API key provided: <redacted>"


def test_reading_a_phrase():
    assert server_message(500, "Internal Server Error") == ""
    assert server_message(500, "Error") == ""
    assert server_message(404, "not found") == ""
    assert server_message(500, "  Incorrect API key\tprovided. ") == "Incorrect API key provided."
    assert error_reason(500, "Internal Server Error", "Error") == "Error"
    assert error_reason(500, WRONG_KEY, "Error") == WRONG_KEY
    assert error_reason(500, WRONG_KEY, "") == WRONG_KEY


# -- 2. what is retried, and for how long --------------------------------------------------------


@pytest.mark.parametrize(
    ("phrase", "retried"),
    [
        ("Internal Server Error", True),
        ("", True),
        (WRONG_KEY, False),
        (BAD_TEMPERATURE, False),
        ("The model `gpt-5` does not exist", False),
        ("You exceeded your current quota, please check your plan and billing details.", False),
        ("That model is currently overloaded with other requests.", True),
        ("Rate limit reached for gpt-4 on tokens per min. Please try again in 20s.", True),
        ("The server had an error while processing your request. Sorry about that!", True),
    ],
)
def test_a_500_carrying_an_upstreams_refusal_is_not_retried(fault, phrase, retried):
    assert retryable(500, phrase) is retried
    fault.enqueue(*(relayed(phrase) for _ in range(3)))
    with pytest.raises(APIError):
        Aivvm.create_completion("", HELLO, False, base_url=fault.url, retries=2, backoff=0.01)
    assert len(fault.requests) == (3 if retried else 1)


def test_other_statuses_keep_their_rules():
    assert retryable(503, "Service Unavailable") and retryable(502, WRONG_KEY)
    assert not retryable(400, "Bad Request") and not retryable(401, WRONG_KEY)


def test_the_retry_budget_bounds_the_time_to_the_error(fault: FaultServer):
    fault.enqueue(rate_limited(1), rate_limited(1), rate_limited(1))
    waits: list[float] = []
    started = time.monotonic()
    with pytest.raises(APIError) as info:
        Aivvm.create_completion(
            "",
            HELLO,
            False,
            base_url=fault.url,
            retries=2,
            retry_budget=1.5,
            on_retry=lambda n, wait, why: waits.append(wait),
        )
    # One retry fits the 1.5 s budget; a second would start 2 s after the first attempt.
    assert info.value.status_code == 429 and waits == [1.0]
    assert len(fault.requests) == 2
    assert 1.0 <= time.monotonic() - started < 1.5


def test_the_retry_policy_gives_up_past_its_budget():
    policy = RetryPolicy(retries=5, backoff=1.0, max_wait=20.0, budget=3.0)
    assert policy.delay(1, None, elapsed=0.0) is not None
    assert policy.delay(1, 2.0, elapsed=0.5) == 2.0
    assert policy.delay(1, 2.0, elapsed=1.5) is None
    # The third step waits 2 to 4 s (jittered): after 1.5 s any of those ends past the budget.
    assert policy.delay(3, None, elapsed=1.5) is None
    assert RetryPolicy(2, 0.5, 20.0).budget == 30.0


# -- in a cell and in the panel --------------------------------------------------------------


def test_a_wrong_key_in_a_cell_is_one_line_at_once(ip, deployment, capsys):
    magics = magics_for(ip)
    magics.retries = 2
    magics.api_key = "sk-wrong"
    started = time.monotonic()
    with pytest.raises(AivvmError) as info:
        ip.run_cell_magic("aivvm", f"-c wrongkey --base-url {deployment.url}", "Hello")
    assert str(info.value) == f"HTTP 500 from {deployment.url}/api/chat: {WRONG_KEY}"
    assert time.monotonic() - started < 0.5
    out = capsys.readouterr().out
    # The reason is the error line's, said once; the status line only says that it failed.
    assert f"failed · gpt-3.5-turbo · {brief_url(deployment.url)}" in out
    assert WRONG_KEY not in out
    assert len(magics.chats.get("wrongkey")) == 0


def test_a_bad_temperature_in_the_panel_says_what_the_server_said(ip, deployment):
    with open_panel(ip, "paneltemp", deployment.url) as panel:
        # The slider stops at 2; a temperature over it comes from the settings of a request.
        panel.temperature_slider.max = 5.0
        panel.temperature_slider.value = 3.0
        assert panel.send("Hello") == ""
        assert BAD_TEMPERATURE in html.unescape(panel.status.value)
        assert panel.last_outcome is not None and panel.last_outcome.turn is None


# -- 3. the models, and whose list they are ------------------------------------------------------


def test_models_are_asked_for_once_by_post_with_the_key():
    log: list[str] = []
    with start_server(mode="chatbot-ui", api_key=KEY, log=log.append) as server:
        found = Aivvm.list_models(server.url, key=KEY)
        assert Aivvm.check(server.url) is True
    Aivvm.working = False
    assert not found.builtin and found.reason == ""
    assert found == [
        {"id": "gpt-3.5-turbo", "name": "GPT-3.5"},
        {"id": "gpt-35-turbo", "name": "GPT-3.5"},
        {"id": "gpt-4", "name": "GPT-4"},
        {"id": "gpt-4-32k", "name": "GPT-4-32K"},
    ]
    # No GET first (a 500, and a stack trace in a real deployment's log).
    assert log == ["POST /api/models 200", "POST /api/models 200"]


def test_a_list_the_server_would_not_give_is_the_built_in_one_and_says_why(deployment):
    found = Aivvm.list_models(deployment.url, key="sk-wrong")
    assert found.builtin and found == [dict(m) for m in models.values()]
    assert found.reason == f"HTTP 500 from {deployment.url}/api/models: {WRONG_KEY}"


def test_an_upstream_that_is_down_gives_the_built_in_list_and_says_why(fault: FaultServer):
    fault.enqueue(server_error())
    found = Aivvm.list_models(fault.url)
    assert found.builtin and found.reason == f"HTTP 500 from {fault.url}/api/models: Error"
    assert len(fault.requests) == 1 and fault.requests[0].method == "POST"


def test_aivvm_models_says_when_the_list_is_the_built_in_one(ip, deployment, capsys):
    magics = magics_for(ip)
    magics.base_url = deployment.url
    magics.api_key = "sk-wrong"
    ip.run_line_magic("aivvm", "models")
    lines = capsys.readouterr().out.splitlines()
    assert lines[:2] == [
        f"{deployment.url} did not list its models: "
        f"HTTP 500 from {deployment.url}/api/models: {WRONG_KEY}",
        "The built-in table:",
    ]
    assert [line.split()[0] for line in lines[2:]] == list(models)
    magics.api_key = KEY
    ip.run_line_magic("aivvm", "models")
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"Models at {deployment.url}:"
    assert [line.split()[0] for line in lines[1:]] == list(SERVER_MODELS)


def test_the_panel_says_when_its_model_list_is_the_built_in_one(ip, deployment):
    with open_panel(ip, "panelmodels", deployment.url, api_key="sk-wrong") as panel:
        assert panel.models_loaded.result() == list(models)
        status = html.unescape(panel.status.value)
    assert f"built-in model list: HTTP 500 from {deployment.url}/api/models" in status
    assert WRONG_KEY in status and "⚠" in status


# -- 5. the ids the server lists are models too ---------------------------------------------------


def test_an_id_the_server_lists_is_sent_as_the_server_names_it():
    log: list[str] = []
    with start_server(mode="chatbot-ui", log=log.append) as server:
        for _ in range(2):
            reply = Aivvm.create_completion("gpt-35-turbo", HELLO, False, base_url=server.url)
            assert reply == "Hello there"
        assert server.requests[-1]["model"] == {"id": "gpt-35-turbo", "name": "GPT-3.5"}
    # The list was asked for once; the second request knew the id.
    assert log == ["POST /api/models 200", "POST /api/chat 200", "POST /api/chat 200"]


def test_an_id_nobody_knows_is_a_value_error_naming_every_id(deployment):
    with pytest.raises(ValueError) as info:
        Aivvm.create_completion("gpt-9", HELLO, True, base_url=deployment.url)
    message = str(info.value)
    assert message.startswith("Model 'gpt-9' is not supported by Aivvm; choose one of: ")
    assert all(model_id in message for model_id in models)
    assert message.endswith(f", or one {deployment.url} lists: gpt-35-turbo")


def test_an_id_outside_the_table_where_the_server_cannot_list_says_why(reference):
    # The strict reference server lists the table only.
    with pytest.raises(ValueError, match="gpt-35-turbo"):
        Aivvm.validate_model("gpt-35-turbo", reference.url)
    with pytest.raises(ValueError) as info:
        Aivvm.validate_model("gpt-35-turbo", closed_port())
    assert "Could not connect to" in str(info.value)


def test_a_cell_takes_an_id_the_server_lists(ip, deployment, capsys):
    ip.run_cell_magic("aivvm", f"-m gpt-35-turbo -c azure --base-url {deployment.url}", "Hi")
    assert capsys.readouterr().out == "Hi\n"
    assert magics_for(ip).chats.get("azure").turns[-1].model == "gpt-35-turbo"
    with pytest.raises(UsageError, match="'gpt-9' is not supported"):
        ip.run_cell_magic("aivvm", f"-m gpt-9 --base-url {deployment.url}", "Hi")


# -- the key, in what a deployment says back ------------------------------------------------------


def test_a_key_a_deployment_quotes_back_appears_nowhere(ip, fault, capsys, caplog, tmp_path):
    caplog.set_level(logging.DEBUG)
    magics = magics_for(ip)
    magics.base_url = fault.url
    magics.api_key = CANARY
    quoted = f"Incorrect API key provided: {CANARY}"
    listing_refused = Reply(
        500,
        json.dumps({"error": {"message": quoted}}).encode(),
        reason=quoted,
        headers={"Content-Type": "application/json"},
    )
    fault.enqueue(relayed(quoted))
    with pytest.raises(AivvmError) as info:
        ip.run_cell_magic("aivvm", "-c canary", "Hello")
    fault.enqueue(listing_refused)
    ip.run_line_magic("aivvm", "models")
    fault.enqueue(listing_refused)
    with pytest.raises(UsageError) as usage:
        ip.run_cell_magic("aivvm", "-m gpt-35-turbo -c canary", "Hello")
    fault.enqueue(listing_refused, relayed(quoted))
    with open_panel(ip, "canary", fault.url) as panel:
        status = panel.status.value
        panel.send("Hello")
        status += panel.status.value
    ip.run_line_magic("aivvm", f"export {tmp_path / 'canary.json'} -c canary")
    assert all(r.json.get("key") == CANARY for r in fault.requests)  # it was sent
    seen = "\n".join(
        [
            str(info.value),
            str(usage.value),
            capsys.readouterr().out,
            caplog.text,
            status,
            (tmp_path / "canary.json").read_text(),
        ]
    )
    assert "<redacted>" in seen
    for form in (CANARY, CANARY[len("sk-canary-") :], CANARY[::-1]):
        assert form not in seen

"""Explaining the last error: the error as bounded text (the user's frames first), ``%aivvm
explain`` and ``%%aivvm --error`` in a real shell against the reference server, ``%aivvm
last``, and a canary key that must never reach the server."""

from __future__ import annotations

import json
import sys
import time

import pytest
from IPython.core.error import UsageError

from aivvm_magic.commands.context import EXPLAIN_QUESTION
from aivvm_magic.context import describe_error
from aivvm_magic.errors import AivvmError
from aivvm_magic.magics import magics_for
from tests.conftest import CANARY
from tests.test_secrets import forms


def raised(function, *args):
    try:
        function(*args)
    except Exception as exc:  # noqa: BLE001 - the exception is the subject
        return exc
    raise AssertionError("nothing was raised")


def divide(a, b):
    return a / b


def parse_deep(depth, text):
    if depth:
        return parse_deep(depth - 1, text)
    return json.loads(text)


# -- the error as text --------------------------------------------------------------------------


def test_the_error_reads_as_a_traceback_with_the_values_on_the_failing_line():
    exc = raised(divide, 1, 0)
    text = describe_error(exc, 2_000)
    assert text.startswith("ZeroDivisionError: division by zero\n\nTraceback")
    assert 'test_context_errors.py", line ' in text and "in divide\n    return a / b" in text
    assert text.endswith(
        'Values on the failing line (File "tests/test_context_errors.py", '
        f"line {divide.__code__.co_firstlineno + 1}):\n  a = 1\n  b = 0"
    )


def test_library_frames_show_from_the_package_down():
    exc = raised(json.loads, "{bad")
    text = describe_error(exc, 2_000)
    assert text.startswith("json.decoder.JSONDecodeError: Expecting property name")
    assert 'File "json/decoder.py", line' in text
    assert sys.prefix not in text and sys.base_prefix not in text


def test_the_user_s_frames_are_kept_first_when_the_budget_is_small():
    exc = raised(parse_deep, 30, "{bad")
    text = describe_error(exc, 900)
    assert len(text) <= 900
    frames = [line for line in text.splitlines() if line.startswith("  File ")]
    # The outermost and innermost of the user's frames, then where the error was raised.
    assert "in raised" in frames[0]
    assert "in parse_deep" in frames[1] and "json/decoder.py" in frames[-1]
    assert "frames left out" in text
    assert text.count("in parse_deep") < 31


def test_a_huge_message_is_cut_in_bounded_time():
    exc = ValueError("y" * 10_000_000)
    started = time.perf_counter()
    text = describe_error(exc, 4_000)
    assert time.perf_counter() - started < 0.5
    assert len(text) <= 4_000 and "characters left out" in text


def test_a_syntax_error_names_its_cell_and_points_at_the_spot():
    exc = raised(compile, "x = (1 +\n", "<cell-7>", "exec")
    text = describe_error(exc, 1_000, cell_label=lambda f: "In[7]" if f == "<cell-7>" else None)
    # Its traceback is the compiler's, not the user's: the error says all there is.
    assert text == "Cell In[7], line 1\n    x = (1 +\n        ^\nSyntaxError: '(' was never closed"


def test_a_chained_error_names_what_it_was_raised_from():
    def lookup():
        try:
            {}["missing"]
        except KeyError as exc:
            raise RuntimeError("no such setting") from exc

    text = describe_error(raised(lookup), 2_000)
    assert text.startswith("RuntimeError: no such setting\nIt was raised from: KeyError: 'missing'")


def test_the_failing_cell_s_code_goes_with_the_error_cut_around_the_failing_line():
    code = "\n".join(f"step_{i} = {i}" for i in range(2_000)) + "\nboom()"
    exc = raised(divide, 1, 0)
    text = describe_error(exc, 1_200, code=code, code_label="In[4]")
    assert len(text) <= 1_200
    assert "The cell that failed (In[4]):\n```python\n" in text
    assert "lines left out" in text


# -- in a shell ----------------------------------------------------------------------------------


def run(ip, code: str):
    return ip.run_cell(code, store_history=True)


def last_prompt(server) -> str:
    return server.requests[-1]["messages"][-1]["content"]


def test_explain_without_an_error_says_so_and_sends_nothing(ip, reference):
    before = len(reference.requests)
    with pytest.raises(UsageError, match="No error to explain"):
        ip.run_line_magic("aivvm", "explain")
    with pytest.raises(UsageError, match="No error to explain"):
        ip.run_cell_magic("aivvm", "--error", "Why?")
    assert len(reference.requests) == before


def test_explain_sends_the_error_traceback_and_cell_and_streams_the_reply(ip, reference, capsys):
    run(ip, "def aivvm_test_ratio(a, b):\n    return a / b\n")
    failing = run(ip, "aivvm_test_n = 0\naivvm_test_ratio(1, aivvm_test_n)")
    number = failing.execution_count
    capsys.readouterr()
    ip.run_line_magic("aivvm", "explain")
    prompt = last_prompt(reference)
    assert prompt.startswith("Explain the last error in my notebook: what went wrong, and how")
    assert f"The last error in the notebook, from In[{number}]:\nZeroDivisionError" in prompt
    assert "```python\naivvm_test_n = 0\naivvm_test_ratio(1, aivvm_test_n)\n```" in prompt
    assert f"Cell In[{number}], line 2, in <module>" in prompt
    assert f"Cell In[{number - 1}], line 2, in aivvm_test_ratio\n    return a / b" in prompt
    assert "  a = 1\n  b = 0" in prompt
    assert "interactiveshell.py" not in prompt  # IPython's own frames are left out
    # The echo engine answers with the prompt: it streamed into the cell like any reply,
    # and joined the conversation.
    assert "ZeroDivisionError" in capsys.readouterr().out
    assert magics_for(ip).chats.get("default").last_turn.prompt == prompt


def test_error_adds_the_last_error_to_the_user_s_own_question(ip, reference):
    run(ip, "{}['aivvm_test_missing']")
    ip.run_cell_magic("aivvm", "--error -c debugging", "Which key is missing?")
    prompt = last_prompt(reference)
    assert prompt.startswith("Which key is missing?\n\nThe last error in the notebook, from In[")
    assert "KeyError: 'aivvm_test_missing'" in prompt
    assert len(magics_for(ip).chats.get("debugging")) == 1


def test_explain_takes_a_question_model_and_conversation(ip, reference):
    run(ip, "int('aivvm')")
    ip.run_line_magic("aivvm", 'explain why not a number? -m gpt-4 -c "my chat"')
    seen = reference.requests[-1]
    assert seen["model"]["id"] == "gpt-4"
    assert seen["messages"][-1]["content"].startswith("why not a number?\n\nThe last error")
    assert len(magics_for(ip).chats.get("my chat")) == 1


def test_our_own_failing_cells_are_not_the_error_to_explain(ip, reference):
    run(ip, "aivvm_test_undefined_name")
    run(ip, "%%aivvm -t 9\nhello")  # a usage error of ours
    run(ip, "%aivvm explain --bogus")  # and another
    ip.run_line_magic("aivvm", "explain")
    assert "NameError: name 'aivvm_test_undefined_name' is not defined" in last_prompt(reference)


def test_an_error_from_before_the_extension_was_loaded_is_found(ip, reference):
    ip.run_line_magic("unload_ext", "aivvm_magic")
    failing = run(ip, "aivvm_test_before = 1\naivvm_test_before.missing")
    ip.run_line_magic("load_ext", "aivvm_magic")
    magics = magics_for(ip)
    magics.base_url, magics.display_mode, magics.retries = reference.url, "text", 0
    ip.run_line_magic("aivvm", "explain")
    prompt = last_prompt(reference)
    assert "AttributeError: 'int' object has no attribute 'missing'" in prompt
    assert f"(In[{failing.execution_count}]):\n```python\naivvm_test_before = 1\n" in prompt


def test_unloading_removes_the_hook_that_records_failures(ip):
    notebook = magics_for(ip).notebook
    assert notebook.post_run_cell in ip.events.callbacks["post_run_cell"]
    ip.run_line_magic("unload_ext", "aivvm_magic")
    assert notebook.post_run_cell not in ip.events.callbacks["post_run_cell"]
    ip.run_line_magic("load_ext", "aivvm_magic")


def test_no_key_ever_leaves_in_an_explain_request(ip, reference, monkeypatch):
    """A canary key in the configuration, an environment variable, a local variable and the
    exception's message: the request carries the error, and none of them."""
    configured = "cfgkey-91d3a7f0c2e4"
    from_env = "envtok-q8w7e6r5t4z"
    monkeypatch.setenv("AIVVM_TEST_SERVICE_TOKEN", from_env)
    ip.run_line_magic("config", f"AivvmMagics.api_key = {configured!r}")
    run(
        ip,
        "import os\n"
        "def aivvm_test_connect(url):\n"
        f"    key = {CANARY!r}\n"
        "    token = os.environ['AIVVM_TEST_SERVICE_TOKEN']\n"
        f"    raise ConnectionError(f'{{url}} refused {{key}}, {{token}} and {configured}')\n",
    )
    run(ip, "aivvm_test_connect('https://api.example')")
    ip.run_line_magic("aivvm", "explain --cells 2 --outputs")
    ip.run_cell_magic("aivvm", "--error", "And {aivvm_test_connect}?")
    sent = json.dumps([r["messages"] for r in list(reference.requests)[-2:]])
    assert "ConnectionError: https://api.example refused [redacted], [redacted] and " in sent
    for secret in (CANARY, configured, from_env):
        for form in forms(secret)[:3]:
            assert form not in sent, f"{secret} reached the server as {form!r}"
    shown = magics_for(ip).notebook.last_request.report()
    assert all(secret not in shown for secret in (CANARY, configured, from_env))


# -- what was sent ------------------------------------------------------------------------------


def test_last_shows_the_exact_messages_and_their_sizes(ip, reference, capsys):
    ip.run_line_magic("aivvm", "last")
    assert capsys.readouterr().out == "No request yet: run a %%aivvm cell first.\n"
    ip.run_cell_magic("aivvm", '-s "Be brief."', "First question")
    run(ip, "1 / 0")
    ip.run_line_magic("aivvm", "explain")
    capsys.readouterr()
    ip.run_line_magic("aivvm", "last")
    out = capsys.readouterr().out
    sent = reference.requests[-1]["messages"]
    question = sent[-1]["content"]
    assert out.startswith(
        f"Sent to gpt-3.5-turbo at {reference.url}, conversation 'default': the system message "
        f"and 3 messages, "
    )
    assert "--- user · 14 characters ---\nFirst question\n--- assistant · 14 characters ---" in out
    assert f"--- user · {len(question):,} characters ---\n{question}\n" in out
    context = len(question) - len(EXPLAIN_QUESTION + "\n\n")
    assert out.endswith(f"carries: the last error, {context:,} characters.\n")
    ip.run_line_magic("aivvm", "last --sizes")
    sizes = capsys.readouterr().out
    assert question not in sizes and f"--- user · {len(question):,} characters ---" in sizes


def test_a_context_too_big_for_the_model_is_cut_to_fit_with_a_marker(ip, reference):
    ip.run_line_magic("config", "AivvmMagics.error_context_chars = 50000")
    run(ip, "raise ValueError('z ' * 100_000)")
    question = "q" * 11_000  # GPT-3.5 takes 12,000 characters, the system message included
    ip.run_cell_magic("aivvm", "--error --no-history", question)
    sent = last_prompt(reference)
    assert sent.startswith(question + "\n\nThe last error") and len(sent) <= 12_000
    assert sent.endswith("[… cut to fit the model's input …]")


def test_a_question_too_big_by_itself_still_fails_as_before(ip, reference):
    run(ip, "1 / 0")
    before = len(reference.requests)
    with pytest.raises(AivvmError, match="takes at most 12,000 characters"):
        ip.run_cell_magic("aivvm", "--error --no-history", "q" * 12_500)
    assert len(reference.requests) == before


def test_help_lists_the_context_options_and_commands(ip):
    doc = ip.find_cell_magic("aivvm").__doc__
    assert all(option in doc for option in ("--error", "--cells", "--outputs"))
    commands = ip.find_line_magic("aivvm").__doc__
    assert (
        "explain   Explain the last error" in commands and "last      The last request" in commands
    )

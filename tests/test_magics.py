"""``%%aivvm`` and ``%aivvm`` in a real InteractiveShell against real servers on 127.0.0.1, and
against the fake provider where what a cell records and sends is the subject, not HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from IPython.core.error import UsageError

from aivvm_magic.conversation import Conversation
from aivvm_magic.magics import AivvmError, first_code_block, magics_for
from aivvm_magic.providers import IncompleteReply
from tests.conftest import CANARY
from tests.faultserver import Reply, closed_port, server_error


def chat(ip, name="default") -> Conversation:
    return magics_for(ip).chats.get(name)


def sent_messages(server) -> list[dict]:
    """The messages of the last request ``server`` (or the fake provider) was asked."""
    return server.requests[-1]["messages"]


@pytest.fixture
def fake_cells(ip, fake):
    """Cells answered by the fake provider, in this process: for what a cell records and
    sends, where HTTP is not the subject."""
    ip.run_line_magic("config", 'AivvmMagics.provider = "fake"')
    return fake


# -- loading and options ----------------------------------------------------------------------


def test_load_registers_and_unload_removes(shell, reference):
    shell.run_line_magic("load_ext", "aivvm_magic")
    assert shell.find_cell_magic("aivvm") and shell.find_line_magic("aivvm")
    first = magics_for(shell)
    assert first in shell.configurables
    shell.run_line_magic("unload_ext", "aivvm_magic")
    assert shell.find_cell_magic("aivvm") is None and shell.find_line_magic("aivvm") is None
    assert magics_for(shell) is None
    assert first not in shell.configurables


def test_after_a_reload_config_reaches_one_instance_only(shell, reference):
    """An unloaded instance left among the shell's configurables would take every %config
    line as well as the live one."""
    shell.run_line_magic("load_ext", "aivvm_magic")
    shell.run_line_magic("unload_ext", "aivvm_magic")
    shell.run_line_magic("load_ext", "aivvm_magic")
    try:
        live = magics_for(shell)
        shell.run_line_magic("config", 'AivvmMagics.model = "gpt-4"')
        instances = [c for c in shell.configurables if type(c).__name__ == "AivvmMagics"]
        assert instances == [live] and live.model == "gpt-4"
    finally:
        shell.run_line_magic("unload_ext", "aivvm_magic")
        shell.config.pop("AivvmMagics", None)


def test_help_lists_every_option(ip):
    doc = ip.find_cell_magic("aivvm").__doc__
    for option in (
        "--model",
        "--temperature",
        "--system",
        "--chat",
        "--new",
        "--no-history",
        "--output",
        "--no-stream",
        "--base-url",
        "--format",
        "--no-interpolate",
    ):
        assert option in doc
    line_doc = ip.find_line_magic("aivvm").__doc__
    for command in ("status", "models", "reset", "history", "export", "import", "panel"):
        assert command in line_doc


@pytest.mark.parametrize(
    "line",
    ["--bogus", "-t abc", "-t 3", "-m gpt-9", "-f pdf", "-o 1x", "extra words"],
)
def test_bad_options_raise_a_one_line_usage_error(ip, reference, line):
    before = len(reference.requests)
    with pytest.raises(UsageError) as info:
        ip.run_cell_magic("aivvm", line, "hello")
    assert "\n" not in str(info.value).strip()
    assert len(reference.requests) == before


def test_empty_cell_is_a_usage_error(ip):
    with pytest.raises(UsageError, match="empty"):
        ip.run_cell_magic("aivvm", "", "\n  \n")


def test_reply_is_printed_and_stored_with_output(ip, capsys):
    ip.run_cell_magic("aivvm", "-o aivvm_test_answer", "Hello, model")
    assert ip.user_ns["aivvm_test_answer"] == "Hello, model"
    assert type(ip.user_ns["aivvm_test_answer"]) is str
    assert "Hello, model" in capsys.readouterr().out


def test_options_reach_the_server(ip, reference):
    ip.run_cell_magic("aivvm", '-m gpt-4 -t 0.2 -s "Be terse, please."', "Hi")
    seen = reference.requests[-1]
    assert seen["model"]["id"] == "gpt-4" and seen["temperature"] == 0.2
    assert seen["prompt"] == "Be terse, please."


def test_config_traitlets_are_the_defaults(ip, reference):
    ip.run_line_magic("config", 'AivvmMagics.model = "gpt-4-32k"')
    ip.run_line_magic("config", "AivvmMagics.temperature = 1.5")
    ip.run_line_magic("config", 'AivvmMagics.system_message = "Sys"')
    ip.run_cell_magic("aivvm", "", "Hi")
    seen = reference.requests[-1]
    assert (seen["model"]["id"], seen["temperature"], seen["prompt"]) == ("gpt-4-32k", 1.5, "Sys")


def test_environment_seeds_the_defaults(reference):
    code = (
        "from IPython.testing.globalipapp import start_ipython\n"
        "ip = start_ipython(); ip.run_line_magic('load_ext', 'aivvm_magic')\n"
        "from aivvm_magic.magics import magics_for\n"
        "m = magics_for(ip); print(m.model, m.base_url, str(m.api_key) == 'k-123')\n"
    )
    env = dict(os.environ, AIVVM_MODEL="gpt-4", AIVVM_BASE_URL=reference.url, AIVVM_API_KEY="k-123")
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.stdout.split() == ["gpt-4", reference.url, "True"], out.stderr


# -- memory across cells ----------------------------------------------------------------------


def test_each_cell_sends_the_conversation_so_far(ip, fake_cells):
    ip.run_cell_magic("aivvm", "", "first question")
    ip.run_cell_magic("aivvm", "", "second question")
    assert sent_messages(fake_cells) == [
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "first question"},
        {"role": "user", "content": "second question"},
    ]
    turns = chat(ip).turns
    assert [t.prompt for t in turns] == ["first question", "second question"]
    assert all(t.complete and t.source == "cell" and t.model == "gpt-3.5-turbo" for t in turns)


def test_rerunning_a_cell_replaces_its_turn_and_what_followed(ip, fake_cells):
    ip.run_cell("%%aivvm\none", cell_id="cell-1")
    ip.run_cell("%%aivvm\ntwo", cell_id="cell-2")
    ip.run_cell("%%aivvm\nthree", cell_id="cell-3")
    ip.run_cell("%%aivvm\ntwo, edited", cell_id="cell-2")
    assert [t.prompt for t in chat(ip).turns] == ["one", "two, edited"]
    assert [m["content"] for m in sent_messages(fake_cells)] == ["one", "one", "two, edited"]


@pytest.mark.usefixtures("fake_cells")
def test_several_questions_from_one_cell_are_all_kept(ip):
    loop = (
        "for q in ['first', 'second', 'third']:\n    get_ipython().run_cell_magic('aivvm', '', q)"
    )
    conversation = magics_for(ip).chats.get("default")
    assert ip.run_cell("%%aivvm\nbefore", cell_id="cell-0").success
    assert ip.run_cell(loop, cell_id="loop-cell").success
    assert [t.prompt for t in conversation.turns] == ["before", "first", "second", "third"]
    # Running the cell again replaces all it asked, and keeps what came before it.
    assert ip.run_cell(loop.replace("'third'", "'fourth'"), cell_id="loop-cell").success
    assert [t.prompt for t in conversation.turns] == ["before", "first", "second", "fourth"]


def test_named_chats_new_and_no_history(ip, fake_cells):
    ip.run_cell_magic("aivvm", "-c alpha", "a1")
    ip.run_cell_magic("aivvm", "-c beta", "b1")
    ip.run_cell_magic("aivvm", "-c alpha", "a2")
    assert [m["content"] for m in sent_messages(fake_cells)] == ["a1", "a1", "a2"]
    ip.run_cell_magic("aivvm", "-c alpha --no-history", "one-off")
    assert sent_messages(fake_cells) == [{"role": "user", "content": "one-off"}]
    assert len(chat(ip, "alpha")) == 2
    ip.run_cell_magic("aivvm", "-c alpha --new", "fresh")
    assert sent_messages(fake_cells) == [{"role": "user", "content": "fresh"}]
    assert [t.prompt for t in chat(ip, "alpha").turns] == ["fresh"]
    assert [t.prompt for t in chat(ip, "beta").turns] == ["b1"]


def test_history_is_trimmed_to_the_context_oldest_first(ip, reference):
    magics = magics_for(ip)
    magics.system_message = "S" * 1000
    for i in range(4):
        ip.run_cell_magic("aivvm", "", f"{i}" * 2500)
    # gpt-3.5-turbo: 12,000 characters. System 1,000 + new prompt 2,500 leaves room for one
    # earlier turn (5,000), not two (10,000).
    messages = sent_messages(reference)
    assert [m["content"][0] for m in messages] == ["2", "2", "3"]
    assert reference.requests[-1]["prompt"] == "S" * 1000
    assert len(chat(ip)) == 4  # trimming what is sent never deletes history


def test_history_limit_traitlet(ip, fake_cells):
    magics_for(ip).history_limit = 1
    for word in ("a", "b", "c"):
        ip.run_cell_magic("aivvm", "", word)
    assert [m["content"] for m in sent_messages(fake_cells)] == ["b", "b", "c"]


# -- interpolation ----------------------------------------------------------------------------


def test_interpolation_of_names_and_in_out(ip, reference):
    ip.user_ns["aivvm_test_topic"] = "generators"
    ip.run_cell("40 + 2", store_history=True)
    count = ip.execution_count - 1
    ip.run_cell_magic(
        "aivvm", "", f'About {{aivvm_test_topic}}: {{Out[{count}]}} {{"json": 1}} {{undefined_x}}'
    )
    assert sent_messages(reference)[-1]["content"] == (
        'About generators: 42 {"json": 1} {undefined_x}'
    )
    ip.run_cell_magic("aivvm", "--no-interpolate", "raw {aivvm_test_topic}")
    assert sent_messages(reference)[-1]["content"] == "raw {aivvm_test_topic}"


def test_interpolation_never_evaluates(ip, reference):
    ip.user_ns["aivvm_test_flag"] = []
    text = "{aivvm_test_flag.append(1)} {__import__('os')}"
    ip.run_cell_magic("aivvm", "", text)
    assert ip.user_ns["aivvm_test_flag"] == []
    assert sent_messages(reference)[-1]["content"] == text


# -- formats ----------------------------------------------------------------------------------


def test_format_code_puts_the_first_code_block_in_the_next_cell(ip):
    reply = "Here:\n```python\ndef rev(xs):\n    return xs[::-1]\n```\nand ```js\nx\n```"
    ip.rl_next_input = None
    ip.run_cell_magic("aivvm", "--format code", reply)
    assert ip.rl_next_input == "def rev(xs):\n    return xs[::-1]"
    assert first_code_block("no code here") is None


def test_format_code_without_a_code_block_says_so(ip, capsys):
    ip.rl_next_input = None
    ip.run_cell_magic("aivvm", "--format code", "only prose here")
    assert ip.rl_next_input is None
    assert "no code block to put in a new cell" in capsys.readouterr().out


def test_the_cell_magics_help_reads_as_plain_text(ip):
    from aivvm_magic.magics import AivvmMagics

    for doc, usage in (
        (AivvmMagics.aivvm.__doc__, "%%aivvm ["),
        (AivvmMagics.aivvm_line.__doc__, ""),
    ):
        assert "::" not in doc.replace("[::-1]", "")
        assert doc.startswith(usage)
    ip.run_line_magic("aivvm", "status -h")


def test_no_stream_shows_the_reply_once(ip, capsys):
    ip.run_cell_magic("aivvm", "--no-stream -o aivvm_test_x", "whole at once")
    assert capsys.readouterr().out.count("whole at once") == 1


# -- errors -----------------------------------------------------------------------------------


def test_http_error_fails_the_cell_with_a_short_message_and_records_nothing(ip, fault):
    ip.run_cell_magic("aivvm", "", "kept")
    fault.enqueue(server_error())
    with pytest.raises(AivvmError) as info:
        ip.run_cell_magic("aivvm", f"--base-url {fault.url}", "fails")
    assert str(info.value) == f"HTTP 500 from {fault.url}/api/chat: Error"
    assert info.value._render_traceback_() == [f"AivvmError: {info.value}"]
    assert [t.prompt for t in chat(ip).turns] == ["kept"]


def test_an_error_is_said_once_by_the_error_line(ip, fault, capsys):
    fault.enqueue(server_error())
    with pytest.raises(AivvmError) as info:
        ip.run_cell_magic("aivvm", f"--base-url {fault.url}", "fails")
    status = capsys.readouterr().out
    # The status line says that nothing came; the error's line says why, and only it.
    assert status.startswith("[failed · ") and "HTTP 500" not in status
    assert "HTTP 500" in info.value._render_traceback_()[0]


def test_truncated_reply_is_kept_as_a_marked_partial_turn(ip, fake_cells, capsys):
    cut = IncompleteReply("the connection closed before the end of the reply", "")
    fake_cells.script("half ", error=cut)
    with pytest.raises(AivvmError, match="cut short"):
        ip.run_cell_magic("aivvm", "-o aivvm_test_p", "go")
    (turn,) = chat(ip).turns
    assert (turn.reply, turn.complete) == ("half ", False)
    assert "cut short" in turn.error
    assert ip.user_ns["aivvm_test_p"] == "half "
    out = capsys.readouterr().out
    assert "half " in out and "incomplete" in out
    # The next cell works and sees the partial turn.
    ip.run_cell_magic("aivvm", "", "next")
    assert [m["content"] for m in sent_messages(fake_cells)] == ["go", "half ", "next"]


def test_connection_refused_in_a_cell(ip):
    url = closed_port()
    with pytest.raises(AivvmError, match="connection refused"):
        ip.run_cell_magic("aivvm", f"--base-url {url}", "anyone?")
    assert len(chat(ip)) == 0


def test_failed_cell_stops_run_cell_with_an_error(ip, fault):
    fault.enqueue(Reply(503, b"Service Unavailable"))
    result = ip.run_cell(f"%%aivvm --base-url {fault.url}\nhello")
    assert isinstance(result.error_in_exec, AivvmError)


def test_key_never_appears_in_outputs_or_errors(ip, fault, capsys):
    magics_for(ip).api_key = CANARY
    fault.enqueue(Reply(401, f"bad key {CANARY}".encode()))
    with pytest.raises(AivvmError) as info:
        ip.run_cell_magic("aivvm", f"--base-url {fault.url}", "hi")
    assert CANARY not in str(info.value)
    ip.run_cell_magic("aivvm", f"--base-url {fault.url}", "hi")
    assert fault.requests[-1].json["key"] == CANARY  # it is sent ...
    ip.run_line_magic("aivvm", "status")
    ip.run_line_magic("config", "AivvmMagics")
    out = capsys.readouterr()
    assert CANARY not in out.out + out.err  # ... and never shown
    assert "API key:      set" in out.out
    assert CANARY not in repr(magics_for(ip).settings())


# -- %aivvm -----------------------------------------------------------------------------------


def test_status_says_plainly_when_it_is_the_embedded_echo_server(ip, capsys):
    magics_for(ip).base_url = ""
    magics_for(ip).embedded_engine = "echo"
    ip.run_cell_magic("aivvm", "", "hi")
    ip.run_line_magic("aivvm", "status")
    out = capsys.readouterr().out
    assert "embedded server, echo engine" in out
    assert "Model:        gpt-3.5-turbo, answered by echo engine" in out
    assert "Conversation: default, 1 turns" in out


def test_models_reset_and_history(ip, capsys):
    ip.run_line_magic("aivvm", "models")
    assert "gpt-4-32k-0613" in capsys.readouterr().out
    ip.run_cell_magic("aivvm", "", "remember me")
    ip.run_line_magic("aivvm", "history")
    assert "remember me" in capsys.readouterr().out
    ip.run_line_magic("aivvm", "reset")
    assert len(chat(ip)) == 0


@pytest.mark.parametrize("suffix", [".json", ".md"])
def test_export_and_import_round_trip(ip, tmp_path, suffix):
    ip.run_cell_magic("aivvm", "-c src", "line one\n# not a heading")
    ip.run_cell_magic("aivvm", "-c src", "```\ncode\n```")
    path = tmp_path / f"chat{suffix}"
    ip.run_line_magic("aivvm", f"export {path} -c src")
    ip.run_line_magic("aivvm", f"import {path} -c copy")
    assert chat(ip, "copy").to_dict()["turns"] == chat(ip, "src").to_dict()["turns"]


def test_import_of_a_corrupt_file_changes_nothing(ip, tmp_path):
    ip.run_cell_magic("aivvm", "", "precious")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"cells": []}))
    with pytest.raises(AivvmError) as info:
        ip.run_line_magic("aivvm", f"import {bad}")
    assert "bad.json" in str(info.value)
    assert [t.prompt for t in chat(ip).turns] == ["precious"]


def test_export_needs_a_known_extension(ip, tmp_path):
    with pytest.raises(AivvmError, match="json"):
        ip.run_line_magic("aivvm", f"export {tmp_path / 'x.txt'}")
    with pytest.raises(UsageError):
        ip.run_line_magic("aivvm", "export")
    with pytest.raises(UsageError):
        ip.run_line_magic("aivvm", "frobnicate")


def test_magics_are_in_a_terminal_printed_as_they_arrive(reference):
    """Terminal IPython: chunks reach stdout as they arrive, before the reply is complete."""
    code = (
        "import sys, time\n"
        "from IPython.testing.globalipapp import start_ipython\n"
        "from aivvm_magic.server import start_server\n"
        "ip = start_ipython(); ip.run_line_magic('load_ext', 'aivvm_magic')\n"
        "srv = start_server(delay=0.3)\n"
        "ip.run_line_magic('config', f'AivvmMagics.base_url = {srv.url!r}')\n"
        "ip.run_cell_magic('aivvm', '', 'one two three')\n"
    )
    proc = subprocess.Popen([sys.executable, "-u", "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    import time

    started = time.monotonic()
    first = proc.stdout.read(4)
    first_at = time.monotonic() - started
    rest = proc.stdout.read()
    total = time.monotonic() - started
    proc.wait(30)
    assert first == "one " and (first + rest).startswith("one two three")
    assert total - first_at >= 0.5  # the rest came later: it was streamed, not buffered


def test_each_command_has_its_own_options_and_help(ip, capsys):
    from aivvm_magic.commands import COMMANDS

    for name in COMMANDS:
        ip.run_line_magic("aivvm", f"{name} -h")
        shown = capsys.readouterr().out
        assert shown.startswith(f"%aivvm {name}") and "::" not in shown
    with pytest.raises(UsageError, match="one of: status, models"):
        ip.run_line_magic("aivvm", "frobnicate")
    with pytest.raises(UsageError, match="export: .*path"):
        ip.run_line_magic("aivvm", "export -c default")
    with pytest.raises(UsageError, match="unrecognized arguments"):
        ip.run_line_magic("aivvm", "status notes.json")


def test_load_ext_leaves_the_heavy_modules_for_the_first_reply():
    # %load_ext is on every notebook's first line: what only a reply needs (HTTP, markdown,
    # sanitising, highlighting, widgets, the local model) is imported when a reply needs it.
    code = (
        "import sys\n"
        "from IPython.testing.globalipapp import start_ipython\n"
        "ip = start_ipython()\n"
        "before = set(sys.modules)\n"
        "ip.run_line_magic('load_ext', 'aivvm_magic')\n"
        "assert 'aivvm_magic.magics' in sys.modules\n"
        "heavy = ('requests', 'markdown_it', 'nh3', 'pygments', 'ipywidgets', 'anywidget',"
        " 'llama_cpp')\n"
        "print(sorted({m.split('.')[0] for m in set(sys.modules) - before} & set(heavy)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stdout

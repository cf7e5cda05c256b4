"""Recorded replies: requests recorded from a real server, then answered from the record with
no server at all, through a real ``InteractiveShell``, the panel, and a real kernel."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from aivvm_magic import ChatPanel, embedded
from aivvm_magic.magics import AivvmError, magics_for
from aivvm_magic.replay import ReplayRecord, Request
from aivvm_magic.server import start_server
from tests.faultserver import Reply, Truncated, closed_port, openai_sse


@pytest.fixture
def record_path(ip, tmp_path: Path) -> Path:
    return tmp_path / "notebook.replay.jsonl"


def configure(ip, path: Path, mode: str, base_url: str | None = None) -> None:
    magics = magics_for(ip)
    magics.replay_path = str(path)
    magics.replay_mode = mode
    if base_url is not None:
        magics.base_url = base_url


def entries(path: Path) -> list[dict]:
    header, *lines = path.read_text(encoding="utf-8").splitlines()
    assert json.loads(header) == {"format": "aivvm-replay", "version": 1}
    return [json.loads(line) for line in lines]


def run_cells(ip) -> list[str]:
    """A small notebook: three turns of one conversation, one one-off, one other chat."""
    replies = []
    for line, text in [
        ("", "What is a generator?"),
        ("-t 0.2", "Shorter, please."),
        ("-s 'Answer in French.'", "And a coroutine?"),
        ("--no-history -o aivvm_test_once", "Something on its own."),
        ("-c other -m gpt-4", "What is a generator?"),
    ]:
        ip.run_cell_magic("aivvm", line, text)
        replies.append(magics_for(ip).chats.get("other" if "-c" in line else "default"))
    return [t.reply for c in {id(c): c for c in replies}.values() for t in c.turns]


def test_a_recorded_notebook_replays_exactly_with_no_server(ip, record_path, reference, capsys):
    configure(ip, record_path, "record")
    recorded = run_cells(ip)
    recorded_once = ip.user_ns["aivvm_test_once"]
    recorded_requests = len(reference.requests)
    recorded_output = capsys.readouterr().out
    assert len(entries(record_path)) == 5

    # A new session (as after a restart), every server gone: nothing answers on this port.
    ip.run_line_magic("unload_ext", "aivvm_magic")
    ip.run_line_magic("load_ext", "aivvm_magic")
    magics_for(ip).display_mode = "text"
    configure(ip, record_path, "replay", base_url=closed_port())
    assert run_cells(ip) == recorded
    assert ip.user_ns["aivvm_test_once"] == recorded_once
    assert capsys.readouterr().out == recorded_output
    assert len(reference.requests) == recorded_requests
    assert len(entries(record_path)) == 5  # replaying writes nothing


def test_replay_with_no_base_url_starts_no_server(ip, record_path, reference):
    configure(ip, record_path, "record")
    ip.run_cell_magic("aivvm", "", "Hello")
    configure(ip, record_path, "replay", base_url="")
    before = set(embedded._servers)
    ip.run_cell_magic("aivvm", "--new", "Hello")
    assert set(embedded._servers) == before
    assert magics_for(ip).target()[:2] == ("", "replay of notebook.replay.jsonl")
    assert magics_for(ip).target(reference.url)[:2] == (
        reference.url,
        "replay of notebook.replay.jsonl",
    )
    assert magics_for(ip).chats.get("default").last_turn.reply == "Hello"


def test_status_and_models_say_the_record_answers(ip, record_path, capsys):
    configure(ip, record_path, "replay", base_url="")
    ip.run_line_magic("aivvm", "status")
    assert (
        capsys.readouterr().out.splitlines()[0] == "Target:       replay of notebook.replay.jsonl"
    )
    ip.run_line_magic("aivvm", "models")
    assert capsys.readouterr().out == (
        "No server to ask: replies come from the replay of notebook.replay.jsonl.\n"
    )


def test_a_request_that_is_not_recorded_fails_in_one_line_saying_how(
    ip, record_path, reference, capsys
):
    configure(ip, record_path, "record")
    ip.run_cell_magic("aivvm", "", "Recorded")
    configure(ip, record_path, "replay", base_url=closed_port())
    with pytest.raises(AivvmError) as caught:
        ip.run_cell_magic("aivvm", "", "Never recorded, a long question that goes on and on")
    message = str(caught.value)
    assert message == (
        "no recorded reply to this request in notebook.replay.jsonl (gpt-3.5-turbo, 3 "
        "messages, the last 'Never recorded, a long question that go…'); record it with "
        '%config AivvmMagics.replay_mode = "record" (or AIVVM_REPLAY_MODE=record)'
    )
    # Nothing was recorded into the conversation or the file.
    assert [t.prompt for t in magics_for(ip).chats.get("default").turns] == ["Recorded"]
    assert len(entries(record_path)) == 1
    with pytest.raises(AivvmError, match="no recorded reply"):
        ip.run_cell_magic("aivvm", "-t 1.5 --new", "Recorded")  # another temperature


def test_what_makes_a_request_the_same(ip, record_path, reference, tmp_path):
    messages = [{"role": "user", "content": "Hi"}]
    key = Request("aivvm", "gpt-4", messages, "system", 0.5).key()
    assert key == Request("AIVVM", "gpt-4", [{**messages[0], "id": "x"}], "system", 0.5).key()
    for other in [
        Request("openai", "gpt-4", messages, "system", 0.5),
        Request("aivvm", "gpt-3.5-turbo", messages, "system", 0.5),
        Request("aivvm", "gpt-4", messages, "another system", 0.5),
        Request("aivvm", "gpt-4", messages, "system", 0.6),
        Request("aivvm", "gpt-4", [{"role": "system", "content": "Hi"}], "system", 0.5),
        Request("aivvm", "gpt-4", [*messages, *messages], "system", 0.5),
    ]:
        assert other.key() != key
    # Where it went and the key it carried are not part of it: recorded with one server and
    # key, replayed with none.
    with start_server(engine="echo", api_key="key-one") as keyed:
        magics = magics_for(ip)
        magics.api_key = "key-one"
        configure(ip, record_path, "record", base_url=keyed.url)
        ip.run_cell_magic("aivvm", "", "Same request")
    magics.api_key = "another-key"
    configure(ip, record_path, "replay", base_url=closed_port())
    ip.run_cell_magic("aivvm", "--new", "Same request")
    assert magics.chats.get("default").last_turn.reply == "Same request"


def test_the_record_file_is_one_request_a_line_and_a_new_reply_replaces_the_old(
    ip, record_path, fault
):
    configure(ip, record_path, "record", base_url=fault.url)
    fault.enqueue(Reply(200, b"first answer"), Reply(200, b"second answer"))
    ip.run_cell_magic("aivvm", "-t 0", "Question")
    ip.run_cell_magic("aivvm", "-t 0 --new", "Question")
    (entry,) = entries(record_path)
    assert entry == {
        "provider": "aivvm",
        "model": "gpt-3.5-turbo",
        "temperature": 0.0,
        "system": magics_for(ip).system_message,
        "messages": [{"role": "user", "content": "Question"}],
        "reply": "second answer",
        "finish_reason": None,
    }
    assert list(entry) == list(json.loads(record_path.read_text().splitlines()[1]))


def test_a_reply_cut_short_is_not_recorded(ip, record_path, fault):
    configure(ip, record_path, "record", base_url=fault.url)
    fault.enqueue(Truncated(chunks=[b"half ", b"a reply"], after=6, framing="chunked"))
    with pytest.raises(AivvmError, match="cut short"):
        ip.run_cell_magic("aivvm", "", "Cut me short")
    assert not record_path.exists()
    assert len(ReplayRecord(record_path)) == 0


def test_the_finish_reason_is_replayed(ip, record_path, fault):
    from aivvm_magic.turns import TOKEN_LIMIT_NOTE, TurnRunner

    fault.enqueue(Reply(200, openai_sse("cut at the ", "limit", finish_reason="length")))
    configure(ip, record_path, "record", base_url=fault.url + "/v1")
    ip.run_cell_magic("aivvm", "-p openai --no-history", "Go on")
    assert entries(record_path)[0]["finish_reason"] == "length"
    configure(ip, record_path, "replay", base_url=closed_port())
    settings = magics_for(ip).settings(provider="openai")
    outcome = TurnRunner(magics_for(ip).chats.get(), "Go on", settings, record=False).run()
    assert (outcome.complete, outcome.text) == (True, "cut at the limit")
    assert outcome.status_note == TOKEN_LIMIT_NOTE


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "the file is empty"),
        (b'{"format": "something else", "version": 1}\n', "line 1: not an aivvm replay record"),
        (
            b'{"format": "aivvm-replay", "version": 1}\n{"provider": "aivvm"}\n',
            "line 2: not an aivvm replay record (an entry needs exactly the keys",
        ),
        (b'{"format": "aivvm-replay", "version": 1}\n{not json\n', "line 2: not an aivvm"),
        (b"\xff\xfe binary", "cannot be read"),
    ],
    ids=["empty", "foreign", "incomplete-entry", "not-json", "binary"],
)
def test_a_bad_record_file_is_one_line_naming_it(ip, record_path, content, expected):
    record_path.write_bytes(content)
    configure(ip, record_path, "replay", base_url=closed_port())
    with pytest.raises(AivvmError) as caught:
        ip.run_cell_magic("aivvm", "", "Anything")
    assert str(record_path) in str(caught.value) and expected in str(caught.value)
    assert "\n" not in str(caught.value)
    assert record_path.read_bytes() == content


def test_the_panel_replays_too(ip, record_path, reference):
    configure(ip, record_path, "record")
    ip.run_cell_magic("aivvm", "", "From a cell")
    panel = ChatPanel("default", magics=magics_for(ip))
    try:
        assert panel.send("From the panel") == "From the panel"
        configure(ip, record_path, "replay", base_url="")
        panel.reset()
        ip.run_cell_magic("aivvm", "", "From a cell")
        assert panel.send("From the panel") == "From the panel"
        assert panel.send("Not recorded") == ""
        assert "no recorded reply" in panel.status.value
        assert panel.refresh_models() == []  # no server to ask, and none asked
        # The built-in list, each entry a (label, id) pair.
        assert "gpt-4" in [value for _label, value in panel.model_picker.options]
    finally:
        panel.close()


def test_off_ignores_the_record_and_the_environment_sets_the_default(
    shell, reference, record_path, monkeypatch
):
    record_path.write_text("not a record at all")
    monkeypatch.setenv("AIVVM_REPLAY_MODE", "off")
    shell.run_line_magic("load_ext", "aivvm_magic")
    try:
        magics = magics_for(shell)
        magics.base_url, magics.display_mode = reference.url, "text"
        magics.replay_path = str(record_path)
        assert magics.replay_mode == "off"
        shell.run_cell_magic("aivvm", "", "Live, whatever the record holds")
        assert magics.chats.get("default").last_turn.reply == "Live, whatever the record holds"
        shell.run_line_magic("config", 'AivvmMagics.replay_mode = "replay"')  # config wins
        with pytest.raises(AivvmError, match="not an aivvm replay record"):
            shell.run_cell_magic("aivvm", "", "From the record")
    finally:
        shell.run_line_magic("unload_ext", "aivvm_magic")
        shell.config.pop("AivvmMagics", None)


def test_the_demo_runs_the_model_live_not_from_the_record(reference, tmp_path, monkeypatch):
    """``make demo`` runs notebook 04, which replays a record; the demo must ask the model."""
    from aivvm_magic import demo

    monkeypatch.setenv("AIVVM_REPLAY_MODE", "replay")
    (tmp_path / "empty.replay.jsonl").write_text('{"format": "aivvm-replay", "version": 1}\n')
    notebook = tmp_path / "demo.ipynb"
    nbformat.write(
        nbformat.v4.new_notebook(
            cells=[
                nbformat.v4.new_code_cell(
                    "%load_ext aivvm_magic\n"
                    f"%config AivvmMagics.base_url = {reference.url!r}\n"
                    '%config AivvmMagics.replay_path = "empty.replay.jsonl"'
                ),
                nbformat.v4.new_code_cell("%%aivvm\nAnswered live"),
            ]
        ),
        notebook,
    )
    saved = demo.run_notebook(notebook, tmp_path / "out")
    outputs = nbformat.read(saved, as_version=4).cells[1].outputs
    assert not [o for o in outputs if o.output_type == "error"], outputs
    assert "Answered live" in json.dumps(outputs)
    assert any(r["messages"][-1]["content"] == "Answered live" for r in reference.requests)

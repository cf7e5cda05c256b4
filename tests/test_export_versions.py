"""Export format version 2 (each turn's provider, finish reason and tokens), and version 1
files, which still load: in both formats, through ``%aivvm export``/``import`` in a real shell.
"""

from __future__ import annotations

import json

import pytest

from aivvm_magic.conversation import Conversation, ConversationFormatError, Turn, files
from aivvm_magic.errors import AivvmError
from aivvm_magic.magics import magics_for
from tests.conftest import make_turn

VERSION_2_FIELDS = ("provider", "finish_reason", "prompt_tokens", "completion_tokens")


def counted() -> Turn:
    return make_turn(
        provider="openai", finish_reason="length", prompt_tokens=12, completion_tokens=5
    )


def version_1(turns: list[Turn], name: str = "old") -> dict:
    """A conversation as version 1 wrote it: no provider, finish reason or tokens."""
    return {
        "format": files.FORMAT,
        "version": 1,
        "name": name,
        "system": None,
        "turns": [
            {k: v for k, v in turn.to_dict().items() if k not in VERSION_2_FIELDS} for turn in turns
        ],
    }


@pytest.mark.parametrize("suffix", [".json", ".md"])
def test_version_2_round_trips_the_new_fields(tmp_path, suffix):
    conversation = Conversation("now")
    conversation.record(counted())
    conversation.record(make_turn(prompt="from aivvm", provider="aivvm"))
    path = tmp_path / f"chat{suffix}"
    conversation.export(path)
    loaded = Conversation.load(path)
    assert loaded.to_dict() == conversation.to_dict()
    assert loaded.to_dict()["version"] == 2
    first = loaded.turns[0]
    assert (first.provider, first.finish_reason) == ("openai", "length")
    assert first.usage.summary() == "tokens: 12 in, 5 out"
    assert loaded.turns[1].usage.summary() == ""


def test_the_markdown_summary_names_provider_and_tokens(tmp_path):
    conversation = Conversation("now")
    conversation.record(counted())
    conversation.export(tmp_path / "chat.md")
    text = (tmp_path / "chat.md").read_text()
    assert "Model: gpt-3.5-turbo via openai · temperature 0.7" in text
    assert "· tokens: 12 in, 5 out" in text


@pytest.mark.parametrize("suffix", [".json", ".md"])
def test_version_1_files_still_load_and_export_as_version_2(tmp_path, suffix):
    old = tmp_path / f"old{suffix}"
    data = version_1([counted(), make_turn(prompt="second", complete=False, error="cut")])
    if suffix == ".json":
        old.write_text(json.dumps(data))
    else:
        files.write_markdown(old, data)
    assert '"provider"' not in old.read_text()
    loaded = Conversation.load(old)
    for turn in loaded.turns:
        assert all(getattr(turn, field) is None for field in VERSION_2_FIELDS)
    assert [t.prompt for t in loaded.turns] == ["What is 2 + 2?", "second"]
    assert loaded.turns[1].error == "cut"
    new = tmp_path / f"new{suffix}"
    loaded.export(new)
    again = Conversation.load(new)
    assert again.to_dict() == loaded.to_dict() and again.to_dict()["version"] == 2


def test_a_version_1_turn_with_a_version_2_field_is_refused(tmp_path):
    data = version_1([make_turn()])
    data["turns"][0]["provider"] = "openai"
    path = tmp_path / "odd.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ConversationFormatError, match="unknown key.*'provider'"):
        Conversation.load(path)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("prompt_tokens", "12", "must be a whole number or null, not str"),
        ("completion_tokens", -1, "must not be negative"),
        ("completion_tokens", True, "must be a whole number or null, not bool"),
        ("provider", 3, "field 'provider' must be a string or null"),
        ("finish_reason", [], "field 'finish_reason' must be a string or null"),
    ],
)
def test_bad_new_fields_are_refused_by_name(field, value, message):
    data = {**counted().to_dict(), field: value}
    with pytest.raises(ConversationFormatError, match=message):
        Turn.from_dict(data)


def test_history_export_and_import_through_the_shell(ip, reference, fault, tmp_path, capsys):
    ip.run_cell_magic("aivvm", f"-p openai --base-url {reference.url}/v1 -m gpt-4", "one two")
    # An Aivvm server that does not say how its replies end (as chatbot-ui does not).
    ip.run_cell_magic("aivvm", f"--base-url {fault.url}", "three")
    ip.run_line_magic("aivvm", "history")
    shown = capsys.readouterr().out
    turn = magics_for(ip).chats.get("default").turns[0]
    assert f"[1] Assistant (tokens: {turn.prompt_tokens} in, 2 out):\none two" in shown
    assert "[2] Assistant:\nthree" in shown
    ip.run_line_magic("aivvm", f"export {tmp_path}/chat.json")
    data = json.loads((tmp_path / "chat.json").read_text())
    assert data["version"] == 2
    assert [t["provider"] for t in data["turns"]] == ["openai", "aivvm"]
    assert [t["finish_reason"] for t in data["turns"]] == ["stop", None]
    old = tmp_path / "old.json"
    old.write_text(json.dumps(version_1([make_turn(prompt="from before")])))
    ip.run_line_magic("aivvm", f"import {old} -c restored")
    ip.run_line_magic("aivvm", "history -c restored")
    assert "[1] You (gpt-3.5-turbo, 2024-05-01T10:00:00.000+00:00):\nfrom before" in (
        capsys.readouterr().out
    )
    newer = tmp_path / "newer.json"
    newer.write_text(json.dumps({**data, "version": 3}))
    with pytest.raises(AivvmError, match="unsupported version 3; .* reads versions 1 and 2"):
        ip.run_line_magic("aivvm", f"import {newer}")

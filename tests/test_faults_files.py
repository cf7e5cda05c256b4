"""Faults of the files a conversation is written to and read from: an export cut short by a
crash or a full disk leaves the old file, and a corrupt or foreign import changes nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from IPython.core.interactiveshell import InteractiveShell

from aivvm_magic.conversation import Conversation
from aivvm_magic.magics import AivvmError, magics_for
from tests.conftest import make_turn

ROOT = Path(__file__).resolve().parents[1]


def _big_conversation_script(path: Path, marker: str) -> str:
    return textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        from aivvm_magic.conversation import Conversation, Turn
        conversation = Conversation("crash")
        for index in range(4000):
            conversation.record(Turn(
                prompt={marker!r} + str(index), reply="y" * 2000, model="m", temperature=0.0,
                system="", started="2024-05-01T10:00:00+00:00", duration=0.0, complete=True,
                source="cell"))
        print("writing", flush=True)
        while True:
            conversation.export({str(path)!r})
        """
    )


@pytest.mark.parametrize("suffix", [".json", ".md"])
def test_a_crash_mid_export_leaves_the_old_file(tmp_path: Path, suffix: str):
    """SIGKILL a process while it writes an 8 MB export, again and again.

    Whenever it dies, the file is the old export or a whole new one, never a mixture; a
    temporary file may be left behind (nothing can clean up after SIGKILL), and the test
    insists that at least one kill did land mid-write.
    """
    path = tmp_path / f"chat{suffix}"
    old = Conversation("old")
    old.record(make_turn(prompt="the old file", reply="kept"))
    old.export(path)
    old_bytes = path.read_bytes()
    killed_mid_write = 0
    for attempt in range(6):
        process = subprocess.Popen(
            [sys.executable, "-c", _big_conversation_script(path, f"new {attempt} ")],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert process.stdout is not None
            assert process.stdout.readline() == "writing\n"
            # Kill at a different point of the (repeated) write each time.
            time.sleep(0.05 + 0.07 * attempt)
            process.send_signal(signal.SIGKILL)
        finally:
            process.wait(10)
        assert process.returncode == -signal.SIGKILL
        leftovers = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
        killed_mid_write += bool(leftovers)
        for leftover in leftovers:
            leftover.unlink()
        loaded = Conversation.load(path)
        content = path.read_bytes()
        if content != old_bytes:
            # A whole new export, from this process (it was replaced in one step).
            assert loaded.name == "crash" and len(loaded) == 4000
            assert loaded.turns[0].prompt == f"new {attempt} 0"
        old_bytes = content
    assert killed_mid_write >= 1, "no kill landed while a temporary file was being written"


NOTEBOOK = json.dumps({"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": []})


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("chat.json", b"", "the file is empty"),
        ("chat.json", b'{"format": "aivvm-conversation", "version": 1, "na', "not valid JSON"),
        ("chat.json", NOTEBOOK.encode(), "a Jupyter notebook"),
        ("chat.json", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff", "not UTF-8 text"),
        ("chat.json", b'{"format": "aivvm-conversation", "version": 9}', "unsupported version"),
        ("chat.md", b"# Just some notes\n\nNo markers here.\n", "no aivvm:conversation marker"),
        ("chat.txt", b"{}", "use .json or .md"),
        ("missing.json", None, "No such file"),
        ("a-directory.json", "dir", "Is a directory"),
    ],
)
def test_importing_a_corrupt_or_foreign_file_in_a_cell_changes_nothing(
    ip: InteractiveShell, tmp_path: Path, name: str, content: Any, reason: str
):
    ip.run_cell("%%aivvm\nprecious", cell_id="keep-me")
    conversation = magics_for(ip).chats.get("default")
    before = conversation.to_dict()
    path = tmp_path / name
    if content == "dir":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(AivvmError) as info:
        ip.run_line_magic("aivvm", f"import {path}")
    message = str(info.value)
    assert reason in message and "\n" not in message and len(message) < 300
    assert conversation.to_dict() == before
    # Still the same conversation, in use: a re-run of its cell replaces its turn.
    ip.run_cell("%%aivvm\nprecious, again", cell_id="keep-me")
    assert [t.prompt for t in conversation.turns] == ["precious, again"]


def test_an_export_that_fails_midway_in_a_cell_keeps_the_old_file(tmp_path: Path):
    """The disk fills up mid-export (a file size limit makes the kernel refuse with EFBIG).

    Run in a child IPython, as the limit applies to every file the process writes.
    """
    big, target = tmp_path / "big.json", tmp_path / "chat.md"
    conversation = Conversation("big")
    for index in range(50):
        conversation.record(make_turn(prompt=f"question {index}", reply="y" * 5000))
    conversation.export(big)
    target.write_bytes(b"the old file\n")
    script = textwrap.dedent(
        f"""
        import resource, signal, sys
        sys.path.insert(0, {str(ROOT)!r})
        from IPython.testing.globalipapp import start_ipython
        ip = start_ipython()
        ip.run_line_magic("load_ext", "aivvm_magic")
        ip.run_line_magic("aivvm", "import {big}")
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (65536, resource.RLIM_INFINITY))
        try:
            ip.run_line_magic("aivvm", "export {target}")
        except Exception as exc:
            print(type(exc).__name__ + ": " + str(exc))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    line = result.stdout.strip().splitlines()[-1]
    assert line.startswith(f"AivvmError: Could not export to {target}: ")
    assert "File too large" in line and len(line) < 300
    assert target.read_bytes() == b"the old file\n"
    assert sorted(os.listdir(tmp_path)) == ["big.json", "chat.md"]


def _turn_json(**changes: Any) -> str:
    turn = {
        "prompt": "hi",
        "reply": "hello",
        "model": "gpt-3.5-turbo",
        "temperature": 0.7,
        "system": "",
        "started": "2024-05-01T10:00:00+00:00",
        "duration": 0.1,
        "complete": True,
        "source": "cell",
    }
    turn.update(changes)
    return json.dumps(turn)


@pytest.mark.parametrize("suffix", [".json", ".md"])
def test_a_file_with_lone_surrogates_is_refused_on_import(ip, tmp_path: Path, suffix: str):
    """Valid JSON, invalid text: a ``\\ud800`` escape decodes to a lone surrogate, which no
    UTF-8 request body or export can hold. It must be refused at the door, not poison the
    conversation."""
    ip.run_cell_magic("aivvm", "", "precious")
    conversation = magics_for(ip).chats.get("default")
    before = conversation.to_dict()
    path = tmp_path / f"poisoned{suffix}"
    if suffix == ".json":
        poisoned = _turn_json(reply="bad \\ud800 text").replace("\\\\ud800", "\\ud800")
        path.write_text(
            '{"format": "aivvm-conversation", "version": 1, "name": "p", "system": null, '
            f'"turns": [{poisoned}]}}'
        )
    else:
        # Markdown texts are plain UTF-8; the metadata in the markers is JSON, with escapes.
        Conversation.from_dict(
            {
                "format": "aivvm-conversation",
                "version": 1,
                "name": "p",
                "system": None,
                "turns": [json.loads(_turn_json(model="MODEL"))],
            }
        ).export(path)
        path.write_text(path.read_text().replace('"MODEL"', '"gpt \\ud800"'))
    assert "\\ud800" in path.read_text()
    with pytest.raises(AivvmError) as info:
        ip.run_line_magic("aivvm", f"import {path}")
    assert "surrogate" in str(info.value) and "\n" not in str(info.value)
    assert conversation.to_dict() == before

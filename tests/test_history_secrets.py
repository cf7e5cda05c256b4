"""Nothing secret is stored: a canary key through successes, failures (several of which put
the key in front of the client), the panel, both providers, exports, recording and replaying,
then a search of the bytes of every file written: the history database with its WAL and
shared-memory files (while open, and after closing), the record of replies, the exports."""

from __future__ import annotations

from pathlib import Path

import pytest

from aivvm_magic import ChatPanel
from aivvm_magic.magics import AivvmError, magics_for
from aivvm_magic.server import start_server
from tests.conftest import CANARY
from tests.faultserver import (
    FaultServer,
    Redirect,
    Reply,
    Truncated,
    json_error,
    server_error,
)
from tests.test_secrets import assert_absent


def file_bytes(directory: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir())}


def assert_nowhere(files: dict[str, bytes]) -> None:
    for name, data in files.items():
        # latin-1 maps every byte to one character, so the search sees the raw bytes.
        assert_absent(name, data.decode("latin-1"))


def test_the_key_is_in_no_file_the_history_or_the_replay_writes(ip, tmp_path: Path, capsys):
    files = tmp_path / "files"
    files.mkdir()
    magics = magics_for(ip)
    magics.history_path = str(files / "history.db")
    magics.replay_path = str(files / "replies.jsonl")
    magics.replay_mode = "record"
    magics.api_key = CANARY
    magics.openai_api_key = CANARY
    with start_server(engine="echo", api_key=CANARY) as keyed, FaultServer() as fault:
        magics.base_url = keyed.url
        other_host = fault.url.replace("127.0.0.1", "localhost")
        fault.enqueue(
            Reply(401, f"Invalid API key: {CANARY}".encode()),
            json_error(401, {"error": {"message": f"Incorrect API key provided: {CANARY}"}}),
            server_error(f"Error while using key {CANARY}".encode()),
            Truncated(chunks=[f"partial {CANARY[:3]}".encode(), b" reply"], after=12),
            Redirect(f"{other_host}/collect?key={CANARY}"),
            Reply(403, f"<html><title>Blocked {CANARY}</title></html>".encode()),
        )
        ip.run_cell_magic("aivvm", "", "Hello, with the key sent")
        ip.run_cell_magic("aivvm", f"-p openai --base-url {keyed.url}/v1", "And through OpenAI")
        for _ in range(5):
            with pytest.raises(AivvmError):
                ip.run_cell_magic("aivvm", f"--base-url {fault.url}", "meets a fault")
        panel = ChatPanel("default", magics=magics)
        try:
            assert panel.send("from the panel") == "from the panel"
            magics.base_url = fault.url
            assert panel.send("the panel meets an echoed key") == ""
            magics.base_url = keyed.url
        finally:
            panel.close()
        assert keyed.stats.rejected == 0 and keyed.stats.completed >= 3  # the key was sent
        assert all(r.json["key"] == CANARY for r in fault.requests if r.path == "/api/chat")
        ip.run_line_magic("aivvm", f"export {files / 'chat.json'}")
        ip.run_line_magic("aivvm", f"export {files / 'chat.md'}")
        # Replayed from the record, after a reset, as a notebook re-run would be.
        magics.replay_mode = "replay"
        ip.run_line_magic("aivvm", "reset")
        ip.run_cell_magic("aivvm", "", "Hello, with the key sent")
        ip.run_line_magic("aivvm", "log -n 50")
        ip.run_line_magic("aivvm", "log --search key")
        ip.run_line_magic("aivvm", "log 1")

    # It all happened: turns logged (a partial one among them), replies recorded.
    database = magics.session.history.database()
    logged = database.recent(limit=50)
    assert len(logged) >= 5 and any(not t.turn.complete for t in logged)
    assert {"history.db", "history.db-wal", "replies.jsonl", "chat.json", "chat.md"} <= set(
        file_bytes(files)
    )
    assert_nowhere(file_bytes(files))
    assert_absent("what the commands printed", capsys.readouterr().out)
    # Closed, the WAL is checkpointed into the database file: search it again.
    magics.session.close()
    assert "history.db-wal" not in file_bytes(files)
    assert_nowhere(file_bytes(files))

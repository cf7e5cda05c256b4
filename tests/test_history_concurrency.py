"""Several kernels write one history database at once and none loses a turn: two real
processes, started on the same instant against a file that does not exist yet (so they also
create and migrate it together), each record 500 turns through a conversation the history
log follows, as a session's cells do."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from aivvm_magic.conversation.database import MIGRATIONS

ROOT = Path(__file__).resolve().parents[1]

WRITER = r"""
import json, os, sys, time
from aivvm_magic.conversation import ConversationStore, Turn
from aivvm_magic.conversation.database import HistoryDatabase
from aivvm_magic.conversation.turn_log import TurnLog

path, name, count, start_at = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
other = sys.argv[5]
warnings = []

def meet(n):
    # Every 100 turns each writer waits for the other, so that they write side by side
    # however the machine schedules them.
    open(f"{path}.{name}.{n}", "w").close()
    while not os.path.exists(f"{path}.{other}.{n}"):
        time.sleep(0.001)

while time.time() < start_at:
    time.sleep(0.001)
database = HistoryDatabase(path)
log = TurnLog(lambda: database, warn=warnings.append)
conversation = ConversationStore(made=log.follow).get(name)
for n in range(count):
    if n % 100 == 0:
        meet(n)
    conversation.record(Turn(
        prompt=f"{name} asks {n}", reply=f"{name} hears {n}", model="m", temperature=0.0,
        system="", started="2024-05-01T10:00:00+00:00", duration=0.0, complete=True,
        source="cell", cell_id=None,
    ))
print(json.dumps({"id": log.logged_id(conversation), "warnings": warnings}))
"""


def test_two_processes_writing_500_turns_each_at_once_lose_none(tmp_path: Path):
    path = tmp_path / "new" / "history.db"
    count = 500
    start_at = time.time() + 1.5  # both interpreters are up and waiting by then
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), name, str(count), str(start_at), other],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=ROOT,
        )
        for name, other in (("kernel-a", "kernel-b"), ("kernel-b", "kernel-a"))
    ]
    results = []
    for writer in writers:
        out, err = writer.communicate(timeout=240)
        assert writer.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert [r["warnings"] for r in results] == [[], []]

    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert connection.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        assert connection.execute("SELECT count(*) FROM turns").fetchone()[0] == 2 * count
        for result, name in zip(results, ("kernel-a", "kernel-b"), strict=True):
            turns = connection.execute(
                "SELECT position, prompt, reply FROM turns "
                "WHERE conversation_id = ? AND replaced IS NULL ORDER BY position",
                (result["id"],),
            ).fetchall()
            assert turns == [(n, f"{name} asks {n}", f"{name} hears {n}") for n in range(count)]

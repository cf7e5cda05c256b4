"""``%%aivvm`` in a real ``InteractiveShell`` meets each fault of :data:`tests.faults.FAULTS`:
the one-line error, the partial reply shown and kept, the conversation untouched otherwise,
the next cell working."""

from __future__ import annotations

import time

import pytest
from IPython.core.interactiveshell import InteractiveShell

from aivvm_magic.magics import AivvmError, magics_for
from tests.faults import CELL_FAULTS, KEY, Fault, expected_cell_message
from tests.faultserver import FaultServer, Reply, closed_port, rate_limited


@pytest.mark.parametrize("case", CELL_FAULTS, ids=lambda case: case.id)
def test_each_fault_in_a_cell(ip: InteractiveShell, fault: FaultServer, case: Fault, capsys):
    magics = magics_for(ip)
    magics.api_key = KEY
    magics.read_timeout = case.options.get("read_timeout", 10.0)
    conversation = magics.chats.get("default")
    ip.run_cell("%%aivvm\nbefore the fault", cell_id="cell-1")
    ip.run_cell("%%aivvm\nstill before", cell_id="cell-2")
    before = conversation.to_dict()["turns"]
    fault.enqueue(*case.behaviours(fault))

    result = ip.run_cell(
        f"%%aivvm --base-url {fault.url} -o aivvm_test_out\nthe faulty question",
        cell_id="cell-3",
    )
    error = result.error_in_exec
    assert isinstance(error, AivvmError)
    message = str(error)
    assert expected_cell_message(case, fault.url + "/api/chat") in message
    assert "\n" not in message and len(message) < 300
    assert error._render_traceback_() == [f"AivvmError: {message}"]

    # The conversation is as it was, plus at most one partial turn, marked.
    turns = conversation.to_dict()["turns"]
    assert turns[: len(before)] == before
    added = turns[len(before) :]
    out = capsys.readouterr()
    if case.partial:
        assert len(added) == 1
        turn = added[0]
        assert (turn["prompt"], turn["reply"]) == ("the faulty question", case.partial)
        assert turn["complete"] is False and turn["error"] == message
        assert ip.user_ns["aivvm_test_out"] == case.partial
        assert case.partial in out.out and "[incomplete · " in out.out
    else:
        assert added == []
        assert "aivvm_test_out" not in ip.user_ns
        assert "[failed · " in out.out
    assert KEY not in out.out + out.err + message

    # The next cell works, and what it sends is the history with the partial turn in it.
    assert ip.run_cell(f"%%aivvm --base-url {fault.url}\nand after it", cell_id="cell-4").success
    sent = [m["content"] for m in fault.requests[-1].json["messages"]]
    kept = ["before the fault", "before the fault", "still before", "still before"]
    if case.partial:
        kept += ["the faulty question", case.partial]
    assert sent == [*kept, "and after it"]
    assert conversation.last_turn.complete and conversation.last_turn.reply == "and after it"
    assert len(conversation) == len(turns) + 1


def test_a_retry_in_a_cell_is_shown_and_the_reply_completes(ip, fault, capsys):
    magics_for(ip).retries = 2
    fault.enqueue(Reply(503, b"Service Unavailable"), rate_limited(0))
    ip.run_cell_magic("aivvm", f"--base-url {fault.url}", "patience")
    out = capsys.readouterr().out
    assert "[HTTP 503; retry 1 in " in out and "[HTTP 429; retry 2 in 0.0 s]" in out
    assert out.rstrip().endswith("patience")
    assert len(fault.requests) == 3
    assert magics_for(ip).chats.get("default").last_turn.complete


def test_a_refused_connection_in_a_cell_changes_nothing(ip, capsys):
    ip.run_cell_magic("aivvm", "", "kept")
    url = closed_port()
    with pytest.raises(AivvmError, match="connection refused"):
        ip.run_cell_magic("aivvm", f"--base-url {url}", "lost")
    assert [t.prompt for t in magics_for(ip).chats.get("default").turns] == ["kept"]
    assert "[failed · " in capsys.readouterr().out
    ip.run_cell_magic("aivvm", "", "works again")
    assert [t.prompt for t in magics_for(ip).chats.get("default").turns] == ["kept", "works again"]


def test_a_connect_timeout_in_a_cell(ip, unresponsive):
    magics_for(ip).connect_timeout = 0.5
    started = time.monotonic()
    with pytest.raises(AivvmError, match="timed out while connecting"):
        ip.run_cell_magic("aivvm", f"--base-url {unresponsive}", "anyone?")
    assert 0.45 <= time.monotonic() - started <= 1.5
    assert len(magics_for(ip).chats.get("default")) == 0

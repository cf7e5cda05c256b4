"""The chat panel meets each fault of :data:`tests.faults.FAULTS`: the status line, the
transcript, the partial turn kept, and the next message working."""

from __future__ import annotations

import html
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from IPython.core.interactiveshell import InteractiveShell

from aivvm_magic.magics import magics_for
from tests.faults import CELL_FAULTS, KEY, Fault, expected_cell_message
from tests.faultserver import FaultServer


def wait_for_background_threads(name: str, timeout: float = 10) -> None:
    """Wait for the panel's threads called ``name`` (its model-list fetch) to finish."""
    for thread in [t for t in threading.enumerate() if t.name == name]:
        thread.join(timeout)
        assert not thread.is_alive(), f"{name} still running"


@pytest.fixture
def panel(ip: InteractiveShell, fault: FaultServer) -> Iterator[Any]:
    """A chat panel on the default conversation, sending to the fault server."""
    from aivvm_magic.panel import ChatPanel

    magics = magics_for(ip)
    magics.api_key = KEY
    made = ChatPanel("default", magics=magics)
    # The panel asks the (reference) server for its models in the background; that request
    # must not take a fault queued for the chat request.
    wait_for_background_threads("aivvm-panel-models")
    magics.base_url = fault.url
    try:
        yield made
    finally:
        made.stop()
        made.close()


def status_line(panel: Any) -> str:
    """The panel's status line as the user reads it."""
    text = re.sub(r"<[^>]+>", "", panel.status.value)
    return html.unescape(text)


@pytest.mark.parametrize("case", CELL_FAULTS, ids=lambda case: case.id)
def test_each_fault_in_the_panel(ip, fault: FaultServer, panel: Any, case: Fault):
    magics_for(ip).read_timeout = case.options.get("read_timeout", 10.0)
    conversation = panel.conversation
    assert panel.send("before the fault") == "before the fault"
    before = conversation.to_dict()["turns"]
    fault.enqueue(*case.behaviours(fault))

    assert panel.send("the faulty question") == case.partial
    message = expected_cell_message(case, fault.url + "/api/chat")
    status = status_line(panel)
    assert "\n" not in status and KEY not in status + panel.transcript.value
    turns = conversation.to_dict()["turns"]
    assert turns[: len(before)] == before
    added = turns[len(before) :]
    if case.partial:
        # Said once: the partial turn is marked in the transcript, the status line says
        # only how long it took and how much arrived.
        assert "⚠" not in status and message not in status, status
        assert [(t["prompt"], t["reply"], t["complete"]) for t in added] == [
            ("the faulty question", case.partial, False)
        ]
        assert added[0]["source"] == "panel" and added[0]["error"] == message
        transcript = html.unescape(panel.transcript.value)
        assert transcript.count(f"⚠ incomplete: {message}") == 1
        assert case.partial.strip().split()[0] in transcript
    else:
        assert status.startswith("⚠ failed · ") and message in status, status
        assert added == []
    assert panel.stop_button.disabled

    # The next message works, and carries the partial turn in its history.
    assert panel.send("and after it") == "and after it"
    sent = [m["content"] for m in fault.requests[-1].json["messages"]]
    kept = ["before the fault", "before the fault"]
    if case.partial:
        kept += ["the faulty question", case.partial]
    assert sent == [*kept, "and after it"]
    assert "⚠" not in status_line(panel)
    assert len(conversation) == len(turns) + 1


def test_a_connect_timeout_in_the_panel(ip, panel: Any, unresponsive: str):
    magics = magics_for(ip)
    magics.base_url = unresponsive
    magics.connect_timeout = 0.5
    started = time.monotonic()
    assert panel.send("anyone?") == ""
    assert 0.45 <= time.monotonic() - started <= 1.5
    assert "timed out while connecting" in status_line(panel)
    assert len(panel.conversation) == 0

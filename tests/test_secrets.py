"""The API key never leaves the request: a canary key through a whole notebook run.

A notebook that succeeds, fails in every way a server can make it fail (several of which put
the key in front of the client: an error body that echoes it, a redirect that asks for it),
streams from the chat panel, prints the settings and exports the conversation is executed by
nbclient with widget state stored, as ``jupyter nbconvert --execute`` would. The key reaches
the kernel through the environment only, and is sent (the servers check), yet it must appear
nowhere in the saved ``.ipynb`` (outputs, widget state, metadata), in the exported files or
in any log: the kernel's Python logging at DEBUG, the reference server's access log and this
process's logging.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from aivvm_magic.server import ServerHandle, start_server
from tests.conftest import CANARY
from tests.faultserver import (
    FaultServer,
    Redirect,
    Reply,
    Stall,
    Truncated,
    json_error,
    server_error,
)
from tests.kernel import Kernel

WIDGET_STATE = "application/vnd.jupyter.widget-state+json"


def forms(secret: str) -> list[str]:
    """The key as it could be written down: whole, its distinctive tail, JSON, base64."""
    return [
        secret,
        secret[len("sk-canary-") :],
        json.dumps(secret),
        base64.b64encode(secret.encode()).decode(),
        secret[::-1],
    ]


def assert_absent(where: str, text: str) -> None:
    found = [form for form in forms(CANARY) if form in text]
    assert not found, f"the key appears in {where} as {found}"


@pytest.fixture
def servers() -> Iterator[tuple[ServerHandle, FaultServer, list[str]]]:
    log: list[str] = []
    # The reference server refuses any other key, so a success proves the key was sent.
    with start_server(engine="echo", api_key=CANARY, log=log.append) as reference:
        with FaultServer() as fault:
            yield reference, fault, log


def cells(reference: str, fault: str, tmp: Path) -> tuple[list[tuple[str, bool]], str]:
    """The notebook as (source, whether the cell should raise), and another origin."""
    other_host = fault.replace("127.0.0.1", "localhost")
    return [
        (
            "import logging, os\n"
            f"logging.basicConfig(filename={str(tmp / 'kernel.log')!r}, level=logging.DEBUG, "
            "force=True)\n"
            "%load_ext aivvm_magic\n"
            f"%config AivvmMagics.base_url = {reference!r}\n"
            "%config AivvmMagics.retries = 0\n"
            "%config AivvmMagics.read_timeout = 1.0\n"
            "from aivvm_magic.magics import magics_for\n"
            "aivvm = magics_for(get_ipython())\n"
            "assert aivvm.api_key, 'the key should come from $AIVVM_API_KEY'",
            False,
        ),
        ("%%aivvm\nHello from the secrets notebook", False),
        ("%aivvm status", False),
        ("%config AivvmMagics", False),
        ("print(aivvm.settings()); aivvm.settings()", False),
        ("%aivvm models", False),
        # Each of these meets the next fault the FaultServer has queued.
        (f"%%aivvm --base-url {fault}\nthe server echoes the key in a 401", True),
        (f"%%aivvm --base-url {fault}\nthe server echoes the key in JSON", True),
        (f"%%aivvm --base-url {fault}\nthe server fails", True),
        (f"%%aivvm --base-url {fault}\nthe reply is cut short", True),
        (f"%%aivvm --base-url {fault}\na redirect asks for the key elsewhere", True),
        (f"%%aivvm --base-url {fault}\nthe server says nothing", True),
        ("%%aivvm --base-url http://127.0.0.1:9\nnobody listens", True),
        # Verbose tracebacks show local variables: the cell's error must still be one line.
        ("%xmode Verbose", False),
        (f"%%aivvm --base-url {fault}\nthe server fails again", True),
        ("%xmode Context", False),
        (
            "from aivvm_magic import ChatPanel\n"
            "panel = ChatPanel('default', magics=aivvm)\n"
            "panel.display()\n"
            "print(panel.send('from the panel'))",
            False,
        ),
        (
            f"aivvm.base_url = {fault!r}\n"
            "print(repr(panel.send('the panel meets an echoed key')))\n"
            f"aivvm.base_url = {reference!r}\n"
            "print(panel.status.value)",
            False,
        ),
        ("%aivvm history", False),
        (f"%aivvm export {tmp / 'chat.json'}", False),
        (f"%aivvm export {tmp / 'chat.md'}", False),
        (f"print(panel.export({str(tmp / 'panel.md')!r}, 'markdown'))", False),
        (
            "import ipywidgets\n"
            "ipywidgets.Text(value='a widget of our own, stored with the notebook')",
            False,
        ),
    ], other_host


def queue_faults(fault: FaultServer, other_host: str) -> None:
    fault.enqueue(
        Reply(401, f"Invalid API key: {CANARY}".encode()),
        json_error(401, {"error": {"message": f"Incorrect API key provided: {CANARY}"}}),
        server_error(f"Error while using key {CANARY}".encode()),
        Truncated(chunks=[b"a partial ", b"reply"], after=10, framing="chunked"),
        Redirect(f"{other_host}/collect?key={CANARY}"),
        Stall(5, before_headers=True),
        server_error(),
        # The panel's message.
        Reply(403, f"<html><head><title>Blocked {CANARY}</title></head></html>".encode()),
    )


def test_the_key_appears_nowhere_after_a_whole_notebook_run(
    servers, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    reference, fault, server_log = servers
    source, other_host = cells(reference.url, fault.url, tmp_path)
    queue_faults(fault, other_host)
    nb = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell(
                text, metadata={"tags": ["raises-exception"]} if fails else {}
            )
            for text, fails in source
        ]
    )
    # The kernel inherits this; the notebook never spells the key.
    monkeypatch.setenv("AIVVM_API_KEY", CANARY)
    caplog.set_level(logging.DEBUG)
    client = NotebookClient(
        nb,
        timeout=60,
        kernel_name="python3",
        store_widget_state=True,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()
    path = tmp_path / "secrets.ipynb"
    nbformat.write(nb, path)

    # It ran as intended: the errors are the ones expected, and the key was really sent.
    for cell, (_text, fails) in zip(nb.cells, source, strict=True):
        errors = [o for o in cell.outputs if o.output_type == "error"]
        assert bool(errors) == fails, (cell.source, errors)
        assert all(o.ename == "AivvmError" and len(o.traceback) == 1 for o in errors)
    assert reference.stats.rejected == 0 and reference.stats.completed >= 2
    assert fault.pending == 0
    assert all(r.json["key"] == CANARY for r in fault.requests if r.path == "/api/chat")
    assert nb.metadata.widgets[WIDGET_STATE]["state"], "widget state was not stored"
    panel_output = "".join(o.get("text", "") for o in nb.cells[17].outputs)
    assert "Blocked &lt;redacted&gt;" in panel_output or "Blocked <redacted>" in panel_output

    # And the key is nowhere.
    assert_absent("the saved notebook", path.read_text(encoding="utf-8"))
    for name in ("chat.json", "chat.md", "panel.md"):
        assert_absent(name, (tmp_path / name).read_text(encoding="utf-8"))
    kernel_log = (tmp_path / "kernel.log").read_text(encoding="utf-8")
    assert "POST /api/chat" in kernel_log  # urllib3 logged the requests
    assert_absent("the kernel's log", kernel_log)
    assert server_log and any("/api/chat" in line for line in server_log)
    assert_absent("the reference server's log", "\n".join(server_log))
    assert_absent("this process's log", caplog.text)


def test_a_verbose_traceback_from_the_python_api_does_not_show_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    with FaultServer() as fault:
        fault.enqueue(server_error(), server_error())
        call = (
            "Aivvm.create_completion('', [{'role': 'user', 'content': 'hi'}], False, "
            f"base_url={fault.url!r}, retries=0)"
        )
        nb = nbformat.v4.new_notebook(
            cells=[
                nbformat.v4.new_code_cell("from aivvm_magic import Aivvm"),
                nbformat.v4.new_code_cell(call, metadata={"tags": ["raises-exception"]}),
                nbformat.v4.new_code_cell("%xmode Verbose"),
                nbformat.v4.new_code_cell(call, metadata={"tags": ["raises-exception"]}),
            ]
        )
        monkeypatch.setenv("AIVVM_API_KEY", CANARY)
        NotebookClient(nb, timeout=60, kernel_name="python3").execute()
        assert all(r.json["key"] == CANARY for r in fault.requests)
    errors = [o for cell in nb.cells for o in cell.outputs if o.output_type == "error"]
    assert [o.ename for o in errors] == ["APIError", "APIError"]
    # The default (Context) traceback is clean; the Verbose one must be too.
    assert_absent("a Context traceback", "\n".join(errors[0].traceback))
    assert_absent("a Verbose traceback", "\n".join(errors[1].traceback))


def test_a_verbose_traceback_of_an_interrupted_cell_does_not_show_the_key(
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.setenv("AIVVM_API_KEY", CANARY)
    with start_server(engine="echo", delay=0.2, api_key=CANARY) as reference:
        kernel = Kernel()
        try:
            setup = kernel.execute(
                f"%load_ext aivvm_magic\n%config AivvmMagics.base_url = {reference.url!r}\n"
                "%xmode Verbose"
            )
            assert setup.status == "ok", setup.reply
            interrupted = threading.Event()

            def interrupt_once_streaming(message: dict) -> None:
                if message["msg_type"] == "comm_msg" and "part2" in json.dumps(message["content"]):
                    if not interrupted.is_set():
                        interrupted.set()
                        kernel.interrupt()

            run = kernel.execute(
                "%%aivvm\n" + " ".join(f"part{n}" for n in range(40)),
                on_message=interrupt_once_streaming,
            )
        finally:
            kernel.close()
    assert run.reply["content"]["ename"] == "ReplyInterrupted"  # a KeyboardInterrupt
    (error,) = run.of_type("error")
    assert_absent("a Verbose KeyboardInterrupt traceback", "\n".join(error["content"]["traceback"]))

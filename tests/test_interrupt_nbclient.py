"""A kernel interrupt in the middle of a streaming reply, through nbclient as a notebook runs.

``test_kernel.py`` interrupts from a raw jupyter_client; here the notebook is executed by
nbclient, the way ``jupyter nbconvert --execute`` and papermill run notebooks, and the
interrupt is sent through nbclient's own kernel manager at a moment the server chooses: once
it has streamed a few chunks. The notebook nbclient leaves behind is then read as a user
would: the interrupted cell shows the partial reply, marked; the next cells show that the
partial turn was kept and that a new reply works.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from jupyter_core.utils import ensure_async
from nbclient import NotebookClient

from aivvm_magic.server import ChatRequest, EchoEngine, ServerHandle, start_server

WORDS = [f"part{n}" for n in range(60)]
#: Chunks the server has written (and the client received) when the interrupt is sent.
INTERRUPT_AFTER = 5


class CountingEcho(EchoEngine):
    """The echo engine, counting the pieces it produced and noting when it was closed."""

    def __init__(self, delay: float) -> None:
        super().__init__(delay)
        self.pieces = 0
        self.closed = threading.Event()

    def generate(self, request: ChatRequest) -> Iterator[str]:
        try:
            for piece in super().generate(request):
                self.pieces += 1
                yield piece
        except GeneratorExit:
            # The server closes the generator when the client has gone away.
            self.closed.set()
            raise


@pytest.fixture
def server() -> Iterator[tuple[ServerHandle, CountingEcho]]:
    engine = CountingEcho(delay=0.1)
    with start_server(engine=engine) as handle:
        yield handle, engine


def notebook(url: str) -> nbformat.NotebookNode:
    setup = (
        "%load_ext aivvm_magic\n"
        f"%config AivvmMagics.base_url = {url!r}\n"
        "from aivvm_magic.magics import magics_for\n"
        "aivvm = magics_for(get_ipython())"
    )
    interrupted = nbformat.v4.new_code_cell(
        "%%aivvm -c interrupted\n" + " ".join(WORDS), metadata={"tags": ["raises-exception"]}
    )
    check = (
        "t = aivvm.chats.get('interrupted').last_turn\nprint(t.complete, t.error, repr(t.reply))"
    )
    return nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell(setup),
            interrupted,
            nbformat.v4.new_code_cell(check),
            nbformat.v4.new_code_cell("%%aivvm -c interrupted\nand the next cell works"),
        ]
    )


def test_an_interrupt_mid_stream_through_nbclient(server, tmp_path: Path):
    handle, engine = server
    nb = notebook(handle.url)
    sent_at: list[int] = []
    failures: list[BaseException] = []
    tasks: list[asyncio.Task[None]] = []

    async def interrupt_once_streaming(client: NotebookClient) -> None:
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 30
            # The engine makes a piece only once the server has written the one before, and
            # waits 0.1 s first: by the time it makes one more, the client has the fifth.
            while engine.pieces <= INTERRUPT_AFTER:
                if loop.time() > deadline:
                    raise TimeoutError("the server never streamed the reply")
                await asyncio.sleep(0.005)
            sent_at.append(engine.pieces)
            await ensure_async(client.km.interrupt_kernel())
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            failures.append(exc)

    def on_cell_complete(cell: nbformat.NotebookNode, cell_index: int) -> None:
        # Called once the execute request is sent; the interrupter runs on nbclient's loop
        # while nbclient waits for the cell's reply.
        if cell_index == 1:
            tasks.append(asyncio.ensure_future(interrupt_once_streaming(client)))

    client = NotebookClient(
        nb,
        timeout=60,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
        on_cell_complete=on_cell_complete,
    )
    client.execute()
    assert failures == [] and sent_at and all(task.done() for task in tasks)

    # The interrupted cell: one line for the interrupt (a KeyboardInterrupt, so the run
    # stopped there), and the partial reply shown and marked, the reason said once.
    cell = nb.cells[1]
    errors = [o for o in cell.outputs if o.output_type == "error"]
    assert [o.ename for o in errors] == ["ReplyInterrupted"]
    (shown,) = [o for o in cell.outputs if o.output_type == "display_data"]
    assert "application/vnd.jupyter.widget-view+json" not in shown.data
    text, _, status = shown.data["text/plain"].rpartition("\n")
    assert errors[0].traceback == [f"interrupted · partial reply kept ({len(text):,} chars)"]
    words = text.split()
    assert INTERRUPT_AFTER <= len(words) < len(WORDS), text
    assert words == WORDS[: len(words)]
    assert status.startswith("[incomplete · ") and status.endswith(" chars]")
    assert "interrupted" not in status
    assert text in shown.data["text/html"] or words[-1] in shown.data["text/html"]

    # The server saw the client go away, and stopped generating.
    assert handle.wait_for(lambda: handle.stats.disconnected == 1, timeout=5)
    assert engine.closed.wait(5) and engine.pieces < len(WORDS)
    # Only the last cell's reply (counted once its end is written: wait for it).
    assert handle.wait_for(lambda: handle.stats.completed == 1, timeout=5)

    # The partial turn was kept as what was shown, and the next cell works and sends it.
    (printed,) = [o for o in nb.cells[2].outputs if o.output_type == "stream"]
    assert printed.text == f"False interrupted {text!r}\n"
    final = [o for o in nb.cells[3].outputs if o.output_type == "display_data"]
    assert final[-1].data["text/plain"] == "and the next cell works"
    assert [m["content"] for m in handle.requests[-1]["messages"]] == [
        " ".join(WORDS),
        text,
        "and the next cell works",
    ]

    # Saved and read back, the notebook still shows the partial reply, marked.
    path = tmp_path / "interrupted.ipynb"
    nbformat.write(nb, path)
    saved = nbformat.read(path, as_version=4)
    assert saved.cells[1].outputs == cell.outputs
    (kept,) = [o for o in saved.cells[1].outputs if o.output_type == "display_data"]
    assert kept.data["text/plain"].startswith(text) and kept.data["text/plain"].endswith(" chars]")

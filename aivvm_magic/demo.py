"""The demo: run a tutorial notebook end to end against the embedded model, showing the replies
as they stream.

``python -m aivvm_magic.demo [NOTEBOOK] [--output DIR]`` executes the notebook in a real
kernel (nbclient), as Jupyter would, prints each cell and each reply as it streams in, and
saves the executed notebook. With no base URL configured, ``%%aivvm`` runs the embedded
reference server with the local model (SmolLM2-135M through llama.cpp) when the ``local``
extra is installed, else with the echo engine; the demo says which.

The model answers live even where the notebook replays a record of replies (notebook 04 does,
so that its tests compare real replies exactly): the demo runs the kernel with
``AIVVM_REPLAY_MODE=off``. ``AIVVM_REPLAY_MODE=record python -m aivvm_magic.demo`` records the
replies afresh instead, into the record beside the notebook.

``python -m aivvm_magic.demo --terminal`` is the smaller demo without Jupyter: the reference
server and the Aivvm client streaming one reply in this terminal.
"""

from __future__ import annotations

import argparse
import html
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

DEFAULT_NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "04-local-model.ipynb"
_TAGS = re.compile(r"<[^>]+>")
_REPLY = re.compile(r'<div class="aivvm-reply">(.*?)</div><div class="aivvm-status">', re.S)


def _plain(fragment: str) -> str:
    return html.unescape(_TAGS.sub("", fragment))


def kernel_environment() -> dict[str, str]:
    """The kernel's environment: this one, with a notebook's record of replies left alone
    (``AIVVM_REPLAY_MODE=off``) unless the environment asks to ``record`` it."""
    env = dict(os.environ)
    if env.get("AIVVM_REPLAY_MODE", "").strip().lower() != "record":
        env["AIVVM_REPLAY_MODE"] = "off"
    return env


def run_notebook(path: Path, output_dir: Path) -> Path:
    """Execute ``path`` with nbclient, echoing cells and streaming replies; return the copy."""
    import nbformat
    from nbclient import NotebookClient

    class EchoingClient(NotebookClient):
        """Prints what a person would watch in JupyterLab: cells, outputs, growing replies."""

        shown = ""

        async def async_execute_cell(self, cell: Any, cell_index: int, **kwargs: Any) -> Any:
            if cell.cell_type == "code":
                source = "\n".join(f"  {line}" for line in cell.source.splitlines())
                print(f"\n\033[1mIn [{cell_index}]:\033[0m\n{source}", flush=True)
            self.shown = ""
            result = await super().async_execute_cell(cell, cell_index, **kwargs)
            for out in cell.get("outputs", []):
                text = out.get("text") or out.get("data", {}).get("text/plain", "")
                if out.get("output_type") == "error":
                    text = f"{out['ename']}: {out['evalue']}"
                if text and not (self.shown and text.startswith(self.shown)):
                    print(f"  {text.rstrip()}".replace("\n", "\n  "), flush=True)
                elif self.shown:
                    rest = text[len(self.shown) :].strip()
                    print(f"\n  [{rest.strip('[]')}]" if rest else "", flush=True)
            return result

        def handle_comm_msg(self, outs: Any, msg: dict[str, Any], cell_index: int) -> None:
            super().handle_comm_msg(outs, msg, cell_index)
            value = msg["content"].get("data", {}).get("state", {}).get("value")
            match = _REPLY.search(value) if isinstance(value, str) else None
            if match is None:
                return
            text = _plain(match.group(1)).strip()
            if not self.shown:
                print("  ", end="")
            if text.startswith(self.shown):
                # Print only what is new since the last update: the reply streaming in.
                print(text[len(self.shown) :].replace("\n", "\n  "), end="", flush=True)
                self.shown = text

    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = []
    # The kernel runs in the notebook's folder, as in Jupyter: relative paths are its.
    client = EchoingClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.resolve().parent)}},
    )
    started = time.perf_counter()
    client.execute(env=kernel_environment())
    output_dir.mkdir(parents=True, exist_ok=True)
    target = output_dir / path.name
    nbformat.write(notebook, target)
    print(f"\nExecuted {path.name} in {time.perf_counter() - started:.1f} s; saved to {target}")
    return target


def run_terminal(message: str, engine: str) -> None:
    """Start the reference server and stream one reply from the Aivvm client, here."""
    from .providers import Aivvm
    from .server import start_server

    with start_server(engine=engine, delay=0.05 if engine == "echo" else 0.0) as server:
        print(f"Reference server: {server.url} ({server.engine.served_by()})")
        print(f"You: {message}\nAssistant: ", end="", flush=True)
        started = time.perf_counter()
        first = None
        for chunk in Aivvm.create_completion(
            "", [{"role": "user", "content": message}], True, base_url=server.url
        ):
            first = first or time.perf_counter() - started
            print(chunk, end="", flush=True)
        print(
            f"\n[first chunk after {first or 0:.2f} s; done in "
            f"{time.perf_counter() - started:.2f} s]"
        )


def main(argv: list[str] | None = None) -> int:
    """Run the demo; returns the exit status."""
    from .embedded import default_engine

    parser = argparse.ArgumentParser(
        prog="python -m aivvm_magic.demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("notebook", nargs="?", type=Path, default=DEFAULT_NOTEBOOK)
    parser.add_argument("--output", type=Path, default=Path("demo-output"))
    parser.add_argument("--terminal", action="store_true", help="no Jupyter: one reply here")
    parser.add_argument("--message", default="What is the capital of France? One sentence.")
    args = parser.parse_args(argv)
    engine = default_engine()
    print(
        f"The embedded server will run the {engine} engine"
        + ("" if engine == "local" else " (install the local extra for a real model)")
        + "; it answers live, not from the notebook's record of replies."
    )
    if args.terminal:
        run_terminal(args.message, engine)
        return 0
    run_notebook(args.notebook, args.output)
    print(
        "\nTo open the tutorials yourself: .venv/bin/jupyter lab notebooks/\n"
        "(01 quickstart, 02 conversations and the panel, 03 configuration and errors, "
        "04 the local model, 05 the history and recorded replies)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

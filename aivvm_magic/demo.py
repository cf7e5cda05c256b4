"""The terminal demo: start the reference server and stream a reply from the Aivvm client.

``python -m aivvm_magic.demo [--engine NAME] [--delay SECONDS] [MESSAGE]``
"""

from __future__ import annotations

import argparse
import sys
import time

from .providers import Aivvm
from .server import start_server

DEFAULT_MESSAGE = "Hello from aivvm_magic! This reply streams in word by word, as it arrives."


def main(argv: list[str] | None = None) -> int:
    """Run the demo; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m aivvm_magic.demo", description=__doc__)
    parser.add_argument("message", nargs="?", default=DEFAULT_MESSAGE)
    parser.add_argument("--engine", default="echo", help="server engine (default: echo)")
    parser.add_argument("--delay", type=float, default=0.08, help="seconds between chunks")
    args = parser.parse_args(argv)

    with start_server(engine=args.engine, delay=args.delay) as server:
        print(f"Reference server: {server.url} ({server.engine.served_by()})")
        print(f"You: {args.message}")
        print("Assistant: ", end="", flush=True)
        started = time.perf_counter()
        first = None
        chunks = 0
        reply = Aivvm.create_completion(
            "gpt-3.5-turbo", [{"role": "user", "content": args.message}], True,
            base_url=server.url,
        )
        for chunk in reply:
            first = first or time.perf_counter() - started
            chunks += 1
            print(chunk, end="", flush=True)
        total = time.perf_counter() - started
        print(f"\n\n[{chunks} chunks; first after {first or 0:.3f} s; done in {total:.2f} s]")
    return 0


if __name__ == "__main__":
    sys.exit(main())

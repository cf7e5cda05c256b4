"""``%aivvm explain`` and ``%aivvm last``: ask about the last error, and see what was sent."""

from __future__ import annotations

from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic_arguments import argument, magic_arguments

from . import chat_option, command

#: What ``%aivvm explain`` asks when it is given no question of its own.
EXPLAIN_QUESTION = "Explain the last error in my notebook: what went wrong, and how do I fix it?"


def _option(flag: str, value: str) -> str:
    """``flag value`` as ``%%aivvm`` reads it back: quoted when it holds spaces."""
    if len(value) >= 2 and value[0] == value[-1] in "\"'":
        value = value[1:-1]
    if value and not any(c.isspace() or c in "\"'" for c in value):
        return f"{flag} {value}"
    for quote in "\"'":
        if quote not in value:
            return f"{flag} {quote}{value}{quote}"
    raise UsageError(f"{flag} cannot hold both kinds of quote: {value}")


@command("explain", "Explain the last error (its traceback and cell go with the question).")
@magic_arguments()
@argument(
    "question", nargs="*", help="Your own question (default: what went wrong, and how to fix it)."
)
@chat_option
@argument("-m", "--model", help="Model id (default: AivvmMagics.model).")
@argument("--cells", type=int, default=0, metavar="N", help="Add the N code cells run before.")
@argument("--outputs", action="store_true", help="With --cells: add their results too.")
def explain(magics: Any, args: Any) -> None:
    """Ask the model about the last error, as ``%%aivvm --error`` would: the error's type,
    message and traceback and the failing cell's code go with the question (scrubbed of
    keys, within ``AivvmMagics.error_context_chars``), and the reply streams into the cell
    and joins the conversation. Without an error yet, a ``UsageError`` says so."""
    line = ["--error", _option("-c", args.chat)]
    if args.model:
        line.append(_option("-m", args.model))
    if args.cells:
        line.append(f"--cells {args.cells}")
    if args.outputs:
        line.append("--outputs")
    magics.aivvm(" ".join(line), " ".join(args.question) or EXPLAIN_QUESTION)


@command("last", "The last request a cell built: its messages and their sizes.")
@magic_arguments()
@argument("--sizes", action="store_true", help="Only the sizes, not the messages.")
def last(magics: Any, args: Any) -> None:
    """Print the last request a ``%%aivvm`` cell (or ``%aivvm explain``) built, exactly as it
    went: the system message and every message, each under a line with its role and size in
    characters, and what context the question carried. Never the key."""
    request = magics.notebook.last_request
    if request is None:
        print("No request yet: run a %%aivvm cell first.")
        return
    print(request.report(contents=not args.sizes))

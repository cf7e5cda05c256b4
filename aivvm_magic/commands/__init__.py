"""The ``%aivvm`` subcommands: each a function with its own options, found by name.

``%aivvm NAME [options]`` runs the command registered as ``NAME`` with the rest of the line,
parsed by the command's own ``magic_arguments`` (so ``-c/--chat`` and a file path belong to
the commands that take them, and a new command adds its own options without touching the
others). A module of this package registers its commands with :func:`command` when imported;
:data:`COMMANDS` is filled by importing them all below.

Examples
--------
::

    @command("reset", "Forget every turn of a conversation.")
    @magic_arguments()
    @chat_option
    def reset(magics, args):
        ...
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic_arguments import argument, parse_argstring

__all__ = [
    "COMMANDS",
    "Command",
    "chat_option",
    "command",
    "parse",
    "readable_help",
    "run",
    "usage",
]


@dataclass(frozen=True)
class Command:
    """A ``%aivvm`` subcommand: its name, a one-line summary, and the function that runs it."""

    name: str
    summary: str
    function: Callable[[Any, Any], Any]


#: The subcommands by name, in the order ``%aivvm?`` lists them.
COMMANDS: dict[str, Command] = {}


def command(name: str, summary: str) -> Callable[[Callable[[Any, Any], Any]], Callable]:
    """Register the decorated ``function(magics, args)`` as ``%aivvm name``."""

    def register(function: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
        COMMANDS[name] = Command(name, summary, function)
        return function

    return register


#: The ``-c/--chat`` option of the commands that act on one conversation.
chat_option = argument("-c", "--chat", default="default", help="Named conversation.")


def parse(function: Callable[..., Any], line: str, *quoted: str) -> Any:
    """``parse_argstring`` for ``function``'s options: an unclosed quote is a usage error, and
    the values of ``quoted`` options lose one pair of quotes around them."""
    try:
        args = parse_argstring(function, line)
    except ValueError as exc:  # shlex: "No closing quotation"
        raise UsageError(f"Could not read the options: {exc}") from None
    # parse_argstring splits like a non-POSIX shell, which keeps the quotes around a quoted
    # value (-s "Be brief." arrives as '"Be brief."'); take one matching pair off.
    for name in quoted:
        value = getattr(args, name, None)
        if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] in "\"'":
            setattr(args, name, value[1:-1])
    chat = getattr(args, "chat", None)
    if chat is not None and not chat.strip():
        raise UsageError("-c/--chat needs a conversation name")
    return args


def readable_help(doc: str, name: str, invoked_as: str) -> str:
    """``doc`` as a user reads it (``%%aivvm?``, ``%aivvm reset -h``): without the
    reStructuredText ``::`` lines that mark literal blocks, and with the usage line naming the
    magic as it is typed (``invoked_as``) rather than as the function ``name``."""
    lines = [line for line in doc.splitlines() if line.strip() != "::"]
    text = "\n".join(lines).strip()
    # magic_arguments writes the usage line as "%" and the function's name.
    return text.replace(f"%{name} ", f"{invoked_as} ", 1).replace(
        f"%{name}\n", invoked_as + "\n", 1
    )


def usage() -> str:
    """The list of subcommands, one a line, for ``%aivvm?`` and a mistyped name."""
    return "\n".join(f"  {c.name:<9} {c.summary}" for c in COMMANDS.values())


def run(magics: Any, line: str) -> Any:
    """Run the ``%aivvm`` line ``line``: a subcommand name and its options."""
    name, _, rest = line.strip().partition(" ")
    found = COMMANDS.get(name)
    if found is None:
        what = f"unknown command {name!r}" if name else "a command is needed"
        raise UsageError(f"%aivvm: {what}; one of: {', '.join(COMMANDS)}")
    if rest.strip() in ("-h", "--help"):
        help_text = found.function.parser.format_help()
        print(readable_help(help_text, found.function.__name__, f"%aivvm {name}"))
        return None
    try:
        args = parse(found.function, rest, "path", "chat")
    except UsageError as exc:
        raise UsageError(f"%aivvm {name}: {exc}") from None
    return found.function(magics, args)


# Importing the modules registers their commands, in this order.
from . import server, conversations, log, alias, views, context  # noqa: E402, F401, I001

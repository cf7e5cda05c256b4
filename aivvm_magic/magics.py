"""The ``%%aivvm`` cell magic and the ``%aivvm`` line magic.

This module wires the layers together: options (``magic_arguments``) -> conversation ->
provider -> streaming display. It knows nothing of the wire protocol.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments
from traitlets import CaselessStrEnum

from . import commands
from .conversation import ConversationBusy, ConversationStore
from .errors import AivvmError, ReplyInterrupted
from .interpolation import interpolate
from .notebook_context import NotebookContext
from .session import Session, Target
from .settings import Settings

if TYPE_CHECKING:
    from .turns import TurnSettings

# The provider (requests), the renderer (markdown, nh3) and the widgets are imported inside the
# methods that use them, so that ``%load_ext aivvm_magic`` adds little to kernel start-up.

#: The display formats (:mod:`aivvm_magic.rendering.formats` renders the last three).
FORMATS = ("markdown", "text", "code", "html", "math", "json")


_CODE_BLOCK = re.compile(r"^(`{3,}|~{3,})[^\n]*\n(.*?)^\1[ \t]*$", re.DOTALL | re.MULTILINE)


def first_code_block(text: str) -> str | None:
    """The body of the first fenced code block in ``text``, or None."""
    match = _CODE_BLOCK.search(text)
    return match.group(2).rstrip("\n") if match else None


def json_value(text: str) -> tuple[Any, str]:
    """The value of a ``-f json`` reply (what ``-o VAR`` receives) and ``""``; or None and why
    the reply is not JSON."""
    from .rendering.formats import NotJSON, parse_json_reply

    try:
        return parse_json_reply(text), ""
    except NotJSON as exc:
        return None, str(exc)


@magics_class
class AivvmMagics(Magics, Settings):
    """Chat with a language model from notebook cells.

    Defaults are configurable (the traitlets of :class:`~aivvm_magic.settings.Settings`):
    ``%config AivvmMagics.model = "gpt-4"`` or in ``ipython_config.py``
    (``c.AivvmMagics.temperature = 0.2``). ``AIVVM_BASE_URL``, ``AIVVM_MODEL`` and
    ``AIVVM_API_KEY`` seed them.
    """

    display_mode = CaselessStrEnum(
        ["auto", "widget", "text"],
        default_value="auto",
        help="auto: a live widget in a kernel, printed chunks in a terminal.",
    ).tag(config=True)

    def __init__(self, shell: Any = None, **kwargs: Any) -> None:
        super().__init__(shell=shell, **kwargs)
        #: What this session's cells and panels share; its settings are these traitlets.
        self.session = Session(self)
        #: The notebook's last error and earlier cells, and the last request a cell built.
        self.notebook = NotebookContext(self.shell)
        self.cell_id: str | None = None
        # Conversations the running cell has already asked: a cell that asks several times
        # (a loop) ties only its first turn in each conversation to its id, so that its turns
        # do not replace each other, and a re-run still replaces them all.
        self._cell_chats: set[str] = set()

    @property
    def chats(self) -> ConversationStore:
        """The session's conversations, by name."""
        return self.session.chats

    def target(self, base_url: str | None = None, provider: str = "") -> Target:
        """Where requests go: the base URL, described in full and for status lines."""
        return self.session.target(base_url, provider)

    def _pre_run_cell(self, info: Any) -> None:
        # Jupyter sends the cell's id with the execute request; it is how a re-run cell
        # finds (and replaces) its earlier turn.
        self.cell_id = getattr(info, "cell_id", None)
        self._cell_chats = set()

    def _cell_id_for(self, chat: str) -> str | None:
        if chat in self._cell_chats:
            return None
        self._cell_chats.add(chat)
        return self.cell_id

    def _use_widgets(self) -> bool:
        if self.display_mode != "auto":
            return self.display_mode == "widget"
        return getattr(self.shell, "kernel", None) is not None

    # -- %%aivvm ------------------------------------------------------------------------

    @magic_arguments()
    @argument("-p", "--provider", help="Provider: aivvm (default) or openai.")
    @argument("-m", "--model", help="Model id or alias (default: AivvmMagics.model).")
    @argument("-t", "--temperature", type=float, help="Sampling temperature, 0 to 2.")
    @argument("-s", "--system", help="System message for this cell (quote it).")
    @argument("-c", "--chat", default="default", help="Named conversation to use.")
    @argument("--new", action="store_true", help="Start the conversation afresh.")
    @argument(
        "--no-history", action="store_true", help="A one-off question: no history, not recorded."
    )
    @argument(
        "-o", "--output", metavar="VAR", help="Also store the reply (a str; -f json: its value)."
    )
    @argument("--no-stream", action="store_true", help="Show the reply only when complete.")
    @argument("--base-url", metavar="URL", help="Server for this cell.")
    @argument(
        "-f",
        "--format",
        choices=FORMATS,
        default="markdown",
        help="markdown (default), text, code (the first code block goes into a new cell), "
        "html (sanitised), math (LaTeX), or json (validated; -o gets the parsed value).",
    )
    @argument("--no-interpolate", action="store_true", help="Send {name} references as written.")
    @argument(
        "--error", action="store_true", help="Add the last error (and its cell) to the question."
    )
    @argument(
        "--cells", type=int, default=0, metavar="N", help="Add the N code cells run before this."
    )
    @argument("--outputs", action="store_true", help="With --cells: add their results too.")
    @cell_magic
    def aivvm(self, line: str, cell: str) -> None:
        """Send the cell to the model and stream the reply below it.

        The conversation so far (``-c NAME``, or the default one) goes with the cell, and the
        reply joins it; re-running a cell replaces its earlier turn. ``{name}`` in the cell is
        replaced by that variable's value, ``{In[3]}``/``{Out[3]}`` by that input/output, each
        within ``AivvmMagics.reference_chars``. ``--error`` adds the last error and
        ``--cells N`` the cells run before, scrubbed of keys; ``%aivvm last`` shows what went.

        Examples
        --------
        ::

            In [1]: %load_ext aivvm_magic
            In [2]: %%aivvm -m gpt-4 -t 0.2
               ...: Explain {topic} in two sentences.
            In [3]: %%aivvm -c review -o answer --format code
               ...: Write a function that reverses a list.
            In [4]: %%aivvm --cells 2 --outputs
               ...: Why does the cell above give {result}?
        """
        from .providers import get_provider

        args = commands.parse(
            self.aivvm, line, "model", "system", "chat", "output", "base_url", "provider"
        )
        if args.base_url:
            from .providers.transport import normalise_base_url

            try:
                normalise_base_url(args.base_url)
            except ValueError as exc:
                raise UsageError(str(exc)) from None
        temperature = self.temperature if args.temperature is None else args.temperature
        if not 0.0 <= temperature <= 2.0:
            raise UsageError(f"Temperature must be between 0 and 2, not {temperature:g}")
        if args.output and not args.output.isidentifier():
            raise UsageError(f"-o needs a Python variable name, not {args.output!r}")
        prompt = cell.strip("\n")
        if not prompt.strip():
            raise UsageError("The cell is empty: write your message below %%aivvm")
        self.notebook.check_options(args)
        scrub = self.notebook.scrubber(self)
        if not args.no_interpolate:
            prompt = interpolate(prompt, self.shell.user_ns, self.notebook.value_text(self, scrub))
        try:
            # A model that is an alias brings its provider and endpoint.
            settings = self.settings(
                model=args.model,
                temperature=temperature,
                system=args.system,
                base_url=args.base_url,
                provider=args.provider,
            )
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        target = self.target(settings.base_url or None, settings.provider)
        base_url = target.url
        try:
            # An id outside the table may be one the server lists; it is asked then.
            model = get_provider(settings.provider).validate_model(
                settings.model, base_url, settings.key
            )
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        settings = replace(settings, model=model, base_url=base_url)
        prompt, parts = self.notebook.add_context(
            prompt, settings, self, scrub, error=args.error, cells=args.cells, outputs=args.outputs
        )
        self.ask(
            prompt,
            settings,
            chat=args.chat,
            target=target,
            new=args.new,
            record=not args.no_history,
            output=args.output,
            stream=not args.no_stream,
            fmt=args.format,
            parts=parts,
        )

    def settings(self, **overrides: Any) -> TurnSettings:
        """The request settings from the traitlets, with per-cell ``overrides``."""
        return self.session.request_settings(**overrides)

    def ask(
        self,
        prompt: str,
        settings: TurnSettings,
        *,
        target: Target,
        chat: str = "default",
        new: bool = False,
        record: bool = True,
        output: str | None = None,
        stream: bool = True,
        fmt: str = "markdown",
        parts: Sequence[tuple[str, int]] = (),
    ) -> str:
        """Run one turn on conversation ``chat``, show it live, and return the reply text.

        The request is kept for ``%aivvm last``, with ``parts``: what context the prompt
        carries, ``(label, characters)`` each. The final output carries the reply's provenance
        in its metadata.

        Raises :class:`AivvmError` (one short line) when the reply failed or was cut short,
        after showing and recording what did arrive, or when a ``json`` reply is not JSON; an
        interrupt is :class:`~aivvm_magic.errors.ReplyInterrupted` (a ``KeyboardInterrupt`` of
        one line).
        """
        from .provenance import reply_provenance
        from .rendering.display import StreamingDisplay
        from .turns import TurnRunner

        mode = "widget" if self._use_widgets() else "text"
        display = StreamingDisplay(
            model=settings.model,
            # The status line names the target in a few words; the provenance in full.
            target=target.brief,
            fmt=fmt,
            mode=mode,
            loop=self.session.render_loop,
        )
        runner = TurnRunner(
            self.chats.get(chat),
            prompt,
            settings,
            source="cell",
            cell_id=self._cell_id_for(chat) if record else None,
            record=record,
            new=new,
            busy_timeout=self.busy_timeout,
        )
        if stream:
            display.start(runner.buffer)
        try:
            outcome = runner.run(
                # A widget reads the reply's buffer; a terminal prints each chunk.
                on_chunk=display.append if stream and mode == "text" else None,
                on_retry=lambda n, wait, why: display.notice(f"{why}; retry {n} in {wait:.1f} s"),
                on_text=display.text_started,
            )
        except ConversationBusy as exc:
            # The reason is the error's line; the status line only says nothing came.
            display.finish(complete=False) if stream else None
            raise AivvmError(str(exc)) from None
        self.notebook.record(
            settings, runner.messages, chat=chat, target=target.described, parts=parts
        )
        if not stream:
            display.start(runner.buffer, live=False)
            display.append(outcome.text)
        value, not_value = outcome.text, ""
        if fmt == "json" and outcome.complete:
            value, not_value = json_value(outcome.text)
        code = first_code_block(outcome.text) if fmt == "code" and outcome.complete else None
        note = not_value or outcome.status_note
        if outcome.error is not None:
            # Said once, by the error line under the reply, not by its status line too.
            note = ""
        elif fmt == "code" and outcome.complete and code is None:
            note = "no code block to put in a new cell"
        display.finish(
            complete=outcome.complete,
            note=note,
            usage=outcome.usage,
            metadata=reply_provenance(outcome, settings, target=target.described, fmt=fmt),
        )
        # Part of a JSON reply has no value; part of any other is still text.
        if output and outcome.text and not not_value and (outcome.complete or fmt != "json"):
            self.shell.user_ns[output] = value
        if isinstance(outcome.error, KeyboardInterrupt):
            kept = len(outcome.text)
            raise ReplyInterrupted(
                f"partial reply kept ({kept:,} chars)" if kept else "no reply arrived"
            ) from None
        if outcome.error is not None:
            if isinstance(outcome.error, Exception):
                raise AivvmError(outcome.note) from None
            raise outcome.error
        if not_value:
            kept = f"; {output} was not set" if output else ""
            raise AivvmError(f"{not_value}{kept}")
        if code is not None:
            self.shell.set_next_input(code, replace=False)
        return outcome.text

    # -- %aivvm -------------------------------------------------------------------------

    @line_magic("aivvm")
    def aivvm_line(self, line: str) -> Any:
        """Inspect and manage conversations: ``%aivvm COMMAND [options]``.

        Each command takes ``-c NAME`` for a named conversation where that makes sense;
        ``%aivvm COMMAND -h`` shows a command's options. The commands:

        {commands}

        Examples
        --------
        ::

            In [1]: %aivvm status
            In [2]: %aivvm export notes.md -c research
            In [3]: %aivvm import notes.json
            In [4]: %aivvm reset
        """
        return commands.run(self, line)


AivvmMagics.aivvm_line.__doc__ = commands.readable_help(
    (AivvmMagics.aivvm_line.__doc__ or "").replace(
        "{commands}", commands.usage().replace("\n", "\n        ")
    ),
    "aivvm_line",
    "%aivvm",
)
# What %%aivvm? shows: magic_arguments' help, read as plain text.
AivvmMagics.aivvm.__doc__ = commands.readable_help(
    AivvmMagics.aivvm.__doc__ or "", "aivvm", "%%aivvm"
)


def load_ipython_extension(ipython: Any) -> None:
    """Register the magics (and the hooks that tell them each cell's id and failure)."""
    if magics_for(ipython) is not None:
        return
    # Magics.__init__ also puts the instance in ipython.configurables, so %config reaches it.
    magics = AivvmMagics(shell=ipython)
    ipython.register_magics(magics)
    ipython.events.register("pre_run_cell", magics._pre_run_cell)
    ipython.events.register("post_run_cell", magics.notebook.post_run_cell)


def unload_ipython_extension(ipython: Any) -> None:
    """Undo :func:`load_ipython_extension`: the magics, the hooks, the configurable."""
    magics = magics_for(ipython)
    if magics is None:
        return
    ipython.events.unregister("pre_run_cell", magics._pre_run_cell)
    ipython.events.unregister("post_run_cell", magics.notebook.post_run_cell)
    magics.session.close()
    widgets = sys.modules.get("aivvm_magic.rendering.widgets")
    if widgets is not None:
        widgets.widget_pool.close()
    registry = ipython.magics_manager.magics
    for kind in ("cell", "line"):
        if getattr(registry[kind].get("aivvm"), "__self__", None) is magics:
            del registry[kind]["aivvm"]
    del ipython.magics_manager.registry[type(magics).__name__]
    # Left there, an unloaded instance would still take every %config AivvmMagics line.
    ipython.configurables[:] = [c for c in ipython.configurables if c is not magics]


def magics_for(ipython: Any) -> AivvmMagics | None:
    """The loaded magics instance of ``ipython``, found where IPython keeps it."""
    found = ipython.magics_manager.registry.get(AivvmMagics.__name__)
    return found if isinstance(found, AivvmMagics) else None

"""What the notebook lends a prompt, gathered from the shell: its last error, the cells that
ran before, its variables as bounded text, all scrubbed of keys; and the last request the
magic built, for ``%aivvm last``.

:class:`NotebookContext` is the magics' link to the shell for this. IPython's
``post_run_cell`` event (registered by ``load_ipython_extension``, removed at unload) tells it
of each cell that ran: its code, its result, and the error it raised, if any. It hands what it
has to the pure functions of :mod:`aivvm_magic.context`, which bound and describe it.
"""

from __future__ import annotations

import re
import sys
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from IPython.core.error import UsageError

from .context import (
    CellRecord,
    Scrubber,
    SentRequest,
    cells_section,
    cut,
    describe,
    describe_error,
    describe_safely,
)
from .context.prompt import PartMaker, add_context, build_parts
from .errors import AivvmError, one_line

if TYPE_CHECKING:
    from .settings import Settings
    from .turns import TurnSettings

__all__ = ["Failure", "NotebookContext", "NO_ERROR"]

NO_ERROR = (
    "No error to explain: no cell has failed in this session yet (run the cell that fails, "
    "then %aivvm explain)"
)

#: How many cells are remembered for --cells: their code, result and error. (Out[] keeps
#: every result anyway; this keeps few, and also where a frontend keeps no history.)
REMEMBERED_CELLS = 50


class CellRun(NamedTuple):
    """A code cell that ran: its number, its code, its result and its error in one line."""

    number: int | None
    code: str
    result: object
    error: str | None


def error_line(exc: BaseException) -> str:
    """``TypeName: message`` on one short line."""
    message, name = one_line(exc), type(exc).__name__
    return message if message == name else f"{name}: {message}"


class Failure(NamedTuple):
    """A cell that failed: its exception, its code, and its number (None if not counted)."""

    exc: BaseException
    code: str | None
    number: int | None

    @property
    def label(self) -> str:
        return f"In[{self.number}]" if self.number is not None else "the cell"


def is_aivvm_cell(code: str) -> bool:
    """Whether ``code`` is one of ours (``%%aivvm``, ``%aivvm …``): not the user's code, and
    not an error to explain."""
    lines = [line.strip() for line in code.strip().splitlines() if line.strip()]
    return bool(lines) and (
        lines[0].startswith("%%aivvm") or all(line.startswith("%aivvm") for line in lines)
    )


class NotebookContext:
    """The shell's cells and errors, as the context of a prompt."""

    def __init__(self, shell: Any) -> None:
        self.shell = shell
        #: The last cell that failed, other than our own cells.
        self.last_failure: Failure | None = None
        #: The last request a cell built: ``%aivvm last`` shows it.
        self.last_request: SentRequest | None = None
        # The last code cells that ran, newest last, for --cells.
        self._cells: deque[CellRun] = deque(maxlen=REMEMBERED_CELLS)
        # The last error of one of our own cells, which sys.last_value may still hold.
        self._own_error: BaseException | None = None

    # -- recording -------------------------------------------------------------------------

    def post_run_cell(self, result: Any) -> None:
        """IPython's ``post_run_cell`` event: remember the code cell that ran, and whether
        it failed. Our own cells are neither context nor errors to explain."""
        exc = result.error_in_exec or result.error_before_exec
        code = getattr(getattr(result, "info", None), "raw_cell", None) or ""
        if is_aivvm_cell(code):
            self._own_error = exc or self._own_error
            return
        number = result.execution_count
        if code.strip():
            error = error_line(exc) if exc is not None else None
            self._cells.append(CellRun(number, code.strip("\n"), result.result, error))
        if exc is not None:
            self.last_failure = Failure(exc, code or None, number)

    def record(
        self,
        settings: TurnSettings,
        messages: list[dict[str, str]],
        *,
        chat: str,
        target: str,
        parts: Sequence[tuple[str, int]] = (),
    ) -> None:
        """Keep the request just built, for ``%aivvm last``."""
        self.last_request = SentRequest(
            model=settings.model,
            target=target or settings.base_url,
            chat=chat,
            system=settings.system,
            messages=[dict(m) for m in messages],
            max_chars=_input_limit(settings),
            parts=tuple(parts),
        )

    # -- reading the shell -----------------------------------------------------------------

    def cell_label(self, filename: str) -> str | None:
        """The cell a code object's ``filename`` is (``"In[3]"``), as IPython's tracebacks
        name it; None for a file."""
        format_code_name = getattr(getattr(self.shell, "compile", None), "format_code_name", None)
        try:
            found = format_code_name(filename) if format_code_name else None
        except Exception:
            return None
        return found[1] if found else None

    def last_error(self) -> Failure:
        """The last cell that failed; a ``UsageError`` if none has.

        An error raised before the extension was loaded is found too (IPython keeps it in
        ``sys.last_value``), with its cell's code when its traceback names the cell.
        """
        if self.last_failure is not None:
            return self.last_failure
        exc = getattr(sys, "last_value", None)
        if exc is None or exc is self._own_error or isinstance(exc, AivvmError | UsageError):
            raise UsageError(NO_ERROR)
        return Failure(exc, *self._cell_of(exc))

    def _cell_of(self, exc: BaseException) -> tuple[str | None, int | None]:
        filenames = [getattr(exc, "filename", None) or ""] if isinstance(exc, SyntaxError) else []
        tb = exc.__traceback__
        while tb is not None:
            filenames.append(tb.tb_frame.f_code.co_filename)
            tb = tb.tb_next
        raw = getattr(getattr(self.shell, "history_manager", None), "input_hist_raw", [])
        for filename in reversed(filenames):
            found = re.fullmatch(r"In\[(\d+)\]", self.cell_label(filename) or "")
            if found and int(found.group(1)) < len(raw):
                return raw[int(found.group(1))], int(found.group(1))
        return None, None

    def previous_cells(self, count: int, outputs: bool, output_chars: int) -> list[CellRecord]:
        """The ``count`` code cells that ran before the running one, oldest first; with
        ``outputs``, each with its result described in ``output_chars``. Our own cells and
        empty ones are passed over.

        The cells are the ones seen to run (whatever the frontend keeps in the history);
        when they are fewer than ``count``, those that ran before the extension was loaded
        are taken from the shell's history.
        """
        runs = list(self._cells)[-count:] if count else []
        if len(runs) < count:
            runs[:0] = self._from_history(count - len(runs), runs[0].number if runs else None)

        def record(run: CellRun) -> CellRecord:
            shown = None
            if outputs and run.result is not None:
                shown = describe_safely(run.result, output_chars)
            return CellRecord(run.number or 0, run.code, shown, run.error)

        return [record(run) for run in runs]

    def _from_history(self, count: int, before: int | None) -> list[CellRun]:
        history = getattr(self.shell, "history_manager", None)
        raw: list[str] = list(getattr(history, "input_hist_raw", []))
        results: dict[int, Any] = getattr(history, "output_hist", {})
        # While a cell runs, the shell's count is its number (its input already stored).
        if before is None:
            before = getattr(self.shell, "execution_count", len(raw))
        number = min(before, len(raw)) - 1
        found: list[CellRun] = []
        while number >= 1 and len(found) < count:
            code = raw[number].strip("\n")
            if code.strip() and not is_aivvm_cell(code):
                found.append(CellRun(number, code, results.get(number), None))
            number -= 1
        found.reverse()
        return found

    # -- building a prompt -----------------------------------------------------------------

    def check_options(self, args: Any) -> None:
        """A ``UsageError`` for ``--cells``/``--outputs`` that make no sense, or ``--error``
        with no error, before anything is asked of a server."""
        if args.cells < 0:
            raise UsageError(f"--cells takes a number of cells, 0 or more, not {args.cells}")
        if args.outputs and not args.cells:
            raise UsageError("--outputs goes with --cells N: the results of which cells?")
        if args.error:
            self.last_error()

    def scrubber(self, settings: Settings) -> Scrubber:
        """Takes the configured keys, secret-named environment variables and notebook
        variables, and key-shaped strings out of text (:mod:`aivvm_magic.context.scrub`)."""
        configured = [str(settings.api_key), str(settings.openai_api_key)]
        return Scrubber.for_notebook(configured, getattr(self.shell, "user_ns", None))

    def value_text(self, settings: Settings, scrub: Scrubber) -> Callable[[object], str]:
        """How a ``{name}`` reference becomes text: described within
        ``settings.reference_chars``, scrubbed."""
        limit = settings.reference_chars
        return lambda value: cut(scrub(describe(value, limit)), limit)

    def add_context(
        self,
        prompt: str,
        request: TurnSettings,
        settings: Settings,
        scrub: Scrubber,
        *,
        error: bool = False,
        cells: int = 0,
        outputs: bool = False,
    ) -> tuple[str, list[tuple[str, int]]]:
        """``prompt`` with the context asked for after it (the last error, the ``cells``
        previous cells), each within its budget and all within the model's input; and each
        piece's label and size. A ``UsageError`` when ``error`` is asked and there is none."""
        makers: list[tuple[str, int, PartMaker]] = []
        if error:
            failure = self.last_error()

            def error_text(limit: int) -> str:
                head = f"The last error in the notebook, from {failure.label}:"
                body = describe_error(
                    failure.exc,
                    max(limit - len(head) - 1, 1),
                    cell_label=self.cell_label,
                    code=failure.code,
                    code_label=failure.label,
                )
                return cut(scrub(f"{head}\n{body}"), limit)

            makers.append(("the last error", settings.error_context_chars, error_text))
        if cells:
            found = self.previous_cells(cells, outputs, min(settings.reference_chars, 1_000))

            def cells_text(limit: int) -> str:
                return cut(scrub(cells_section(found, limit)), limit)

            label = f"{len(found)} previous cell{'' if len(found) == 1 else 's'}"
            makers.append((label, settings.cells_context_chars, cells_text))
        if not makers:
            return prompt, []
        room = _input_limit(request) - len(request.system) - len(prompt)
        parts = build_parts(makers, room)
        return add_context(prompt, parts), [(p.label, len(p.text)) for p in parts]


def _input_limit(request: TurnSettings) -> int:
    """The characters of input (system message and messages) the request's model takes."""
    from .providers import get_provider

    return get_provider(request.provider).max_input_chars(request.model)

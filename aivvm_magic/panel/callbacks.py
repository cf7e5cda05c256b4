"""Widget callbacks whose exceptions are shown, not dropped (ipywidgets would drop them)."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["guarded", "report_error"]

logger = logging.getLogger("aivvm_magic.panel.chat_panel")

_F = TypeVar("_F", bound=Callable[..., Any])


def report_error() -> None:
    """Show the exception being handled: in the shell when there is one, else in the log."""
    try:
        from IPython import get_ipython

        shell = get_ipython()
    except Exception:  # noqa: BLE001 - reporting must not raise a second error
        shell = None
    if shell is not None:
        shell.showtraceback()
    else:
        logger.exception("A chat panel callback failed")


def guarded(method: _F) -> _F:
    """Route exceptions of a widget callback to the shell: ipywidgets would drop them."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except Exception:  # noqa: BLE001 - shown by report_error, never swallowed
            report_error()
            return None

    return wrapper  # type: ignore[return-value]

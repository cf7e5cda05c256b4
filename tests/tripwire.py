"""A notebook value that may only be turned into text: for tests that interpolation evaluates
nothing."""

from __future__ import annotations

from typing import Any


class Tripwire:
    """Records ``str()`` of itself in ``calls`` and fails the test on anything else done with
    it (an attribute, a call, an index, a format spec, a comparison...)."""

    def __init__(self, name: str, calls: list[str]) -> None:
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_calls", calls)

    def __str__(self) -> str:
        self._calls.append(self._name)
        return f"<{self._name}>"

    def _forbidden(self, *args: object, **kwargs: object) -> Any:
        self._calls.append(f"FORBIDDEN {self._name}")
        raise AssertionError(f"interpolation did more than str() with {self._name!r}")

    __getattr__ = __call__ = __getitem__ = __format__ = __repr__ = __iter__ = _forbidden
    __setattr__ = __len__ = __bool__ = __eq__ = __hash__ = __add__ = _forbidden
